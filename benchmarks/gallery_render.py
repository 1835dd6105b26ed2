"""Benchmark: how long chromium takes to draw an explorer's gallery, artlab's PNG images against pixels as `z`.

    python benchmarks/gallery_render.py [--data ../shared/data/genres] [--repeats 5]

A click on an explorer ends when the browser has drawn the new view: for the collection browser (its overview, 5
thumbnails of 96 px per class, and a class, 20), a top-k gallery (10) and the channel explorer's renders (2 of
128 px), that is drawing images. Each gallery is built by `artlab.plots`, whose image traces carry a PNG of the
pixels (`plots.picture`), and again by the same code with `picture` giving plotly's own `go.Image(z=pixels)`, the
baseline (the galleries before). The renders are stood in for by noise, which compresses as little as renders
do. Each figure's draw is timed in headless chromium (Debian's, as the browser test) from `Plotly.newPlot` to the
second animation frame after it, the median of `--repeats` runs, the two alternating; also the figure's JSON
size (what the kernel sends and a page or notebook keeps) and the time to build it in Python (images read
included, warm). Results go to benchmarks/results/gallery-render-<collection>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest.mock import patch

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from artlab import plots
from artlab.data import load, load_synthetic

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"
DRAW = """async spec => {
    const start = performance.now();
    await Plotly.newPlot('figure', spec.data, spec.layout);
    await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
    return performance.now() - start;
}"""


def as_pixels(pixels: np.ndarray, **trace: object) -> go.Image:
    """The baseline's image trace: the pixels as numbers, as plotly's own Image takes them."""
    return go.Image(z=pixels, **trace)


def both_ways(draw) -> tuple[go.Figure, go.Figure, float, float]:
    """`draw()` as artlab draws it and with its images as `z`, and the seconds each took (after one warm-up)."""
    figures, seconds = [], []
    for picture in (plots.picture, as_pixels):
        with patch.object(plots, "picture", picture):
            draw()  # the files read once, untimed: both builds then read them warm
            start = time.perf_counter()
            figures.append(draw())
            seconds.append(time.perf_counter() - start)
    return figures[0], figures[1], seconds[0], seconds[1]


def galleries(collection) -> dict:
    """Each gallery measured, as a function drawing it the way the explorers do."""
    paths = list(collection.table["path"])
    task = collection.tasks[0]
    classes = collection.table[task].nunique()
    overview = [p for _, rows in collection.table.groupby(task) for p in rows["path"][:5]]
    noise = [np.random.default_rng(i).integers(0, 256, (128, 128, 3), dtype=np.uint8) for i in range(2)]
    return {
        f"collection browser, the overview: {len(overview)} thumbnails ({classes} classes)":
            lambda: plots.gallery(overview, [""] * len(overview), "overview", columns=5),
        "collection browser, a class: 20 thumbnails": lambda: plots.gallery(paths[:20], [""] * 20, "a class"),
        "top-k gallery: 10 artworks": lambda: plots.gallery(paths[20:30], [""] * 10, "top-k"),
        "channel renders: 2 of 128 px (noise: renders compress as little)":
            lambda: plots.image_grid(noise, ["ImageNet", "fine-tuned"], "renders", columns=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a collection (default: the generated synthetic one)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    collection = load(args.data) if args.data else load_synthetic()
    from playwright.sync_api import sync_playwright

    results = {"data": args.data or "synthetic", "repeats": args.repeats, "galleries": {}}
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        page_path = Path(scratch) / "page.html"
        page_path.write_text(f"<html><head><script>{get_plotlyjs()}</script></head>"
                             "<body><div id='figure'></div></body></html>")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_path.as_uri())
        for name, draw in galleries(collection).items():
            figure, baseline, built, built_plain = both_ways(draw)
            specs = {"artlab (PNG)": json.loads(figure.to_json()), "baseline (z)": json.loads(baseline.to_json())}
            draws: dict[str, list[float]] = {case: [] for case in specs}
            for _ in range(args.repeats + 1):  # the first pair warms the page up, untimed
                for case, spec in specs.items():
                    page.evaluate("() => Plotly.purge('figure')")
                    draws[case].append(page.evaluate(DRAW, spec))
            row = {case: {"draw_ms": round(statistics.median(times[1:]), 1),
                          "json_kib": round(len(json.dumps(specs[case])) / 1024, 1)} for case, times in draws.items()}
            row["artlab (PNG)"]["build_ms"], row["baseline (z)"]["build_ms"] = round(built * 1000, 1), round(
                built_plain * 1000, 1)
            row["draw ratio"] = round(row["artlab (PNG)"]["draw_ms"] / row["baseline (z)"]["draw_ms"], 2)
            results["galleries"][name] = row
            mine, plain = row["artlab (PNG)"], row["baseline (z)"]
            print(f"{name}: draw {mine['draw_ms']:.0f} ms against {plain['draw_ms']:.0f} ms ({row['draw ratio']}x), "
                  f"{mine['json_kib']:.0f} KiB against {plain['json_kib']:.0f} KiB; built in {mine['build_ms']:.0f} "
                  f"ms against {plain['build_ms']:.0f} ms")
        browser.close()
    target = RESULTS / f"gallery-render-{Path(args.data).name if args.data else 'synthetic'}.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {target}")


if __name__ == "__main__":
    main()
