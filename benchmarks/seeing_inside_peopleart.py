"""Benchmark: seeing inside the MobileNetV2 fine-tuned on the 10 largest People-Art styles.

    python benchmarks/seeing_inside_peopleart.py      # after benchmarks/transfer_peopleart.py

Writes to benchmarks/results/seeing-inside-peopleart/ what holds no artwork: the renders of the 8
most changed channels of features.17 (ImageNet vs fine-tuned, PNG and HTML), the separation of the
style classes in both networks' features (CSV), and the timings. What shows artworks (Grad-CAM and
IG overlays of 4 test artworks, the PCA and t-SNE maps with thumbnails) goes to benchmarks/runs/,
which is not committed: the images are for research use only.

Timings (2 CPU cores): one channel, 256 steps at 128 px; 16 channels of one layer in one batch;
each measured three times, the median reported, beside a plain forward+backward baseline.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE / "runs" / "peopleart-style-fine_tune-mobilenet_v2-128px"
RESULTS = HERE / "results" / "seeing-inside-peopleart"
PRIVATE = HERE / "runs" / "seeing-inside-peopleart"


def _median_seconds(task, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        task()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(model) -> dict:
    """Render time of one channel and of 16 channels in one batch, and a plain baseline of the same work."""
    import torch

    from artlab import models
    from artlab.interpret import featurevis as fv

    settings = fv.RenderSettings(steps=256, size=128)
    one = _median_seconds(lambda: fv.optimise(model, fv.channel("features.17", [0]), 1, settings, progress=False))
    sixteen = _median_seconds(lambda: fv.optimise(model, fv.channel("features.17", list(range(16))), 16, settings,
                                                  progress=False))

    def plain() -> None:  # the same number of forward+backward passes through the whole network, no extras
        x = torch.rand(1, 3, 152, 152, requires_grad=True)
        optimizer = torch.optim.Adam([x], lr=0.05)
        with fv.frozen_eval(model):
            for _ in range(256):
                optimizer.zero_grad()
                (-model(x)[0, 0]).backward()
                optimizer.step()

    baseline = _median_seconds(plain)
    return {"one_channel_256_steps_128px_s": round(one, 2), "sixteen_channels_one_batch_s": round(sixteen, 2),
            "sixteen_over_one": round(sixteen / one, 2), "plain_forward_backward_256_steps_s": round(baseline, 2),
            "one_channel_over_plain": round(one / baseline, 2), "threads": torch.get_num_threads(),
            "arch": models.arch_of(model).name}


def main() -> None:
    import pandas as pd

    from artlab import models
    from artlab.interpret import attribution, featurevis, projection
    from artlab.plots import write_figure
    from artlab.runs import load_network, run_collection

    if not RUN.is_dir():
        raise SystemExit(f"{RUN} not found: run benchmarks/transfer_peopleart.py first")
    RESULTS.mkdir(parents=True, exist_ok=True)
    PRIVATE.mkdir(parents=True, exist_ok=True)
    before, after = models.build("mobilenet_v2"), load_network(RUN)

    start = time.perf_counter()
    shown = featurevis.before_after(before, after, "features.17", n=8)
    figure = shown.figure("features.17: the 8 most changed channels, ImageNet (top) vs fine-tuned on 10 styles")
    write_figure(figure, RESULTS / "renders-features17.html")
    _save_png(shown, RESULTS / "renders-features17.png")
    render_seconds = time.perf_counter() - start

    collection = run_collection(RUN)
    test = collection.part("test").table.head(4)
    for i, path in enumerate(test["path"]):
        for method in ("gradcam", "ig"):
            maps = {"ImageNet": attribution.attribute(before, path, method, image_size=128),
                    "fine-tuned": attribution.attribute(after, path, method, image_size=128)}
            write_figure(attribution.compare_figure(maps, title=f"{Path(path).name}: {method}"),
                         PRIVATE / f"attribution-{i}-{method}.html")

    paths = collection.table["path"].tolist()
    styles = collection.table["style"]
    features = {"ImageNet": projection.layer_features("imagenet", paths, image_size=128),
                "fine-tuned": projection.layer_features(RUN, paths)}
    separation = projection.separation_table(features, styles)
    separation.to_csv(RESULTS / "separation-styles.csv", index=False)
    for method in ("pca", "tsne"):
        maps = {name: projection.collection_map(collection, x, method, "style") for name, x in features.items()}
        projection.write_map_html(projection.compare_maps(maps, "style", thumbnails=True),
                                  PRIVATE / f"map-{method}.html")

    timing = timings(before) | {"before_after_8_channels_both_networks_s": round(render_seconds, 1)}
    (RESULTS / "timings.json").write_text(json.dumps(timing, indent=2) + "\n")
    with pd.option_context("display.width", 160):
        print(separation.to_string(index=False))
    print(json.dumps(timing, indent=2))
    print(f"results: {RESULTS}\nartwork pages (not committed): {PRIVATE}")


def _save_png(shown, path: Path) -> None:
    """The renders as one PNG: a row per network, a column per channel."""
    import numpy as np
    from PIL import Image

    rows = [np.concatenate(list(images), axis=1) for images in shown.images.values()]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


if __name__ == "__main__":
    main()
