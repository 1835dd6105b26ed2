"""Benchmark: a factor sweep on genres — test accuracy against frozen depth x learning rate, and what freezing
keeps of the ImageNet representations (per-layer linear CKA).

    python benchmarks/sweep_genres.py [--epochs 3] [--cka-images 400]

MobileNetV2 at 128 px fine-tuned on ../shared/data/genres (5 genres, 1,088 images; one deterministic
stratified 70/15/15 split, seed 0) with the first 0, 5, 10, 15 or 18 of its 19 blocks frozen and a
head learning rate of 0.01 or 0.001 (backbone x 0.1), one seed, a few epochs: 10 cells, each an
ordinary run under benchmarks/runs/ (reused when the script runs again). Then, for the 0.01 column,
linear CKA per layer between the ImageNet network and each fine-tuned one, and the distance between
genres and People-Art in ImageNet feature space (with half of genres as the near baseline).
Writes benchmarks/results/sweep-genres-{cells,summary,cka,distance}.csv and -{sweep,cka}.html.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
FREEZE = [0, 5, 10, 15, 18]
LEARNING_RATES = [0.01, 0.001]
CKA_LR = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cka-images", dest="cka_images", type=int, default=400,
                        help="images (a fixed random sample of the collection) the CKA is computed on")
    parser.add_argument("--workers", type=int, default=None, help="sweep worker processes (default: half the cores)")
    args = parser.parse_args()
    from artlab import Comparison, TrainConfig, analyze, collection_distance, load, sweep
    from artlab.plots import layer_curves, markdown_table, write_figure

    results, runs = HERE / "results", HERE / "runs"
    genres = DATA / "genres"
    if not genres.is_dir():
        raise SystemExit(f"{genres} not found")
    start = time.perf_counter()
    base = TrainConfig(data=str(genres), task="label", strategy="fine_tune", image_size=128, epochs=args.epochs)
    result = sweep(base, {"freeze": FREEZE, "lr": LEARNING_RATES}, seeds=(0,), workers=args.workers, runs_dir=runs,
                   name=f"sweep-genres-{args.epochs}ep")
    sweep_seconds = time.perf_counter() - start
    result.cells.to_csv(results / "sweep-genres-cells.csv", index=False)
    result.table.to_csv(results / "sweep-genres-summary.csv", index=False)
    write_figure(result.chart(x="freeze"), results / "sweep-genres-sweep.html")
    accuracy = result.table.pivot(index="freeze", columns="lr", values="accuracy mean")
    print(f"test accuracy, {args.epochs} epochs (rows: blocks frozen; columns: head learning rate)")
    print(accuracy.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"sweep: {sweep_seconds:.0f} s")

    start = time.perf_counter()
    curves = []
    for row in result.cells[result.cells["lr"] == CKA_LR].itertuples(index=False):
        analysis = analyze(Comparison(runs / row.run, what=("cka",), max_images=args.cka_images))
        cka = analysis.tables["cka"]
        cka = cka[cka["comparison"].str.startswith("ImageNet vs") & ~cka["comparison"].str.endswith("random init")]
        curves.append(cka[["layer", "depth_a", "cka", "cka_debiased"]].assign(freeze=row.freeze))
    cka = pd.concat(curves, ignore_index=True).rename(columns={"depth_a": "depth"})
    cka.to_csv(results / "sweep-genres-cka.csv", index=False)
    figure = layer_curves(cka.assign(frozen=cka["freeze"].map(lambda k: f"{k} blocks frozen")), "cka",
                          f"Linear CKA per layer, ImageNet MobileNetV2 vs fine-tuned on genres (lr {CKA_LR}, "
                          f"{args.epochs} epochs), one line per frozen depth", color="frozen", y_label="linear CKA")
    write_figure(figure, results / "sweep-genres-cka.html")
    print("\nlinear CKA with the ImageNet network (rows: layer; columns: blocks frozen)")
    table = cka.pivot(index="layer", columns="freeze", values="cka").reindex(cka["layer"].unique())
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"CKA: {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    collection = load(genres)
    half = collection.subset(np.random.default_rng(0).permutation(len(collection)) < len(collection) // 2)
    distances = pd.DataFrame([{"a": "genres", "b": b, **d.as_dict()} for b, d in (
        ("half of genres", collection_distance(collection, half)),
        ("peopleart", collection_distance(collection, DATA / "peopleart")))])
    distances.to_csv(results / "sweep-genres-distance.csv", index=False)
    print("\n" + markdown_table(distances.round(3)))
    print(f"distance: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
