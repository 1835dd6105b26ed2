"""Benchmark: how long chromium takes to draw an explorer's gallery, artlab's PNG images against pixels as `z`.

    python benchmarks/gallery_render.py [--data ../shared/data/genres] [--repeats 5]

A click on an explorer ends when the browser has drawn the new view: for the collection browser (40
thumbnails of 96 px), a top-k gallery (10) and the channel explorer's renders (2), that is drawing images. The
figures are built by `artlab.plots.gallery`, whose image traces carry a PNG of the pixels (`plots.picture`), and
again as plotly's own `go.Image(z=pixels)`, the baseline: the same grid, the pixels given as numbers. Each
figure's draw is timed in headless chromium (Debian's, as the browser test) from `Plotly.newPlot` to the second
animation frame after it, the median of `--repeats` runs, the two alternating. Also the figure's JSON size (what
the kernel sends and a page or notebook keeps) and the time to build it in Python (images read included). Results go to
benchmarks/results/gallery-render.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from artlab import plots
from artlab.data import load, load_synthetic
from artlab.data.images import load_rgb

RESULTS = Path(__file__).resolve().parent / "results" / "gallery-render.json"
CHROMIUM = "/usr/bin/chromium"
#: The galleries measured: (name, number of images, thumbnail size, columns), as the explorers draw them.
GALLERIES = [("collection browser: 40 thumbnails", 40, 96, 10), ("top-k gallery: 10 artworks", 10, 96, 5),
             ("channel renders: 2 networks", 2, 128, 2)]
DRAW = """async spec => {
    const start = performance.now();
    await Plotly.newPlot('figure', spec.data, spec.layout);
    await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
    return performance.now() - start;
}"""


def as_pixels(figure: go.Figure, pixels: list) -> go.Figure:
    """The baseline: the same figure with each image given as its pixels (`z`), as plotly's own Image does."""
    plain = go.Figure(figure)
    for trace, image in zip(plain.data, pixels, strict=True):
        trace.source, trace.z = None, image
    return plain


def build(paths: list[str], thumb: int, columns: int) -> tuple[go.Figure, go.Figure, float, float]:
    """artlab's gallery of `paths` and the baseline, and the seconds each took to build (images read included)."""
    start = time.perf_counter()
    figure = plots.gallery(paths, [Path(p).stem[:20] for p in paths], "a gallery", columns=columns, thumb=thumb)
    middle = time.perf_counter()
    pixels = []
    for path in paths:
        image = load_rgb(path, max_side=thumb * 2)
        image.thumbnail((thumb, thumb))
        pixels.append(np.asarray(image))
    baseline = as_pixels(figure, pixels)
    return figure, baseline, middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a collection (default: the generated synthetic one)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    collection = load(args.data) if args.data else load_synthetic()
    paths = list(collection.table["path"])
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
        for name, count, thumb, columns in GALLERIES:
            build(paths[:count], thumb, columns)  # the files read once, untimed: both builds then read them warm
            figure, baseline, built, built_plain = build(paths[:count], thumb, columns)
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
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
