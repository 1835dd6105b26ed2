"""Benchmark: augmentation with a frozen prefix, cached views against a new crop at every step, on genres.

    python benchmarks/augment_views.py [--epochs 10] [--seeds 0,1,2] [--freeze 10] [--views 0,4,8]

MobileNetV2 at 128 px from its ImageNet weights, the first `--freeze` blocks frozen, fine-tuned on
`../shared/data/genres` (one stratified split per seed). For each seed: a new random crop and flip
at every step (augment_views=0: the frozen blocks run at every step), N cached views per training
image (the frozen blocks' output of N crops computed once, one drawn per image each epoch), and
centre crops only (--no-augment). Reports test accuracy per seed and the run's wall time; writes
results/augment-views.{csv,md}. Run alone: two torch processes on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--freeze", type=int, default=10)
    parser.add_argument("--views", default="0,4", help="augment_views values to compare (0: a new crop every step)")
    args = parser.parse_args()
    from artlab.plots import markdown_table
    from artlab.training import TrainConfig, train

    runs = HERE / "runs" / "augment-views"
    earlier = HERE / "results" / "augment-views-cells.csv"  # the times of runs trained by an earlier call
    timed = pd.read_csv(earlier).set_index("run")["seconds"].to_dict() if earlier.is_file() else {}
    rows = []
    views = [int(v) for v in args.views.split(",")]
    variants = [(f"{v} cached views" if v else "new crop every step", {"augment_views": v}) for v in views] + [
        ("centre crops (no augmentation)", {"augment": False})]
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, change in variants:
            config = TrainConfig(data=str(SHARED / "genres"), task="label", freeze=args.freeze, epochs=args.epochs,
                                 seed=seed, **change)
            start = time.perf_counter()
            result = train(config, runs_dir=runs, resume=True)
            seconds = round(time.perf_counter() - start, 1)
            rows.append({"variant": label, "seed": seed, "accuracy": result.metrics["accuracy"],
                         "seconds": timed.get(result.run.name, seconds) if seconds < 5 else seconds,
                         "run": result.run.name})
            print(rows[-1], flush=True)
    cells = pd.DataFrame(rows)
    summary = cells.groupby("variant", sort=False).agg(mean=("accuracy", "mean"), sd=("accuracy", "std"),
                                                        seconds=("seconds", "median")).reset_index()
    reference = cells[cells["variant"] == "new crop every step"].set_index("seed")["accuracy"]
    summary["minus new crop, per seed"] = [
        ", ".join(f"{100 * d:+.1f}" for d in (cells[cells["variant"] == v].set_index("seed")["accuracy"]
                                                 - reference).tolist()) for v in summary["variant"]]
    results = HERE / "results"
    cells.to_csv(results / "augment-views-cells.csv", index=False)
    summary.to_csv(results / "augment-views.csv", index=False)
    (results / "augment-views.md").write_text(markdown_table(summary.round(4)) + "\n")
    print(summary.to_string(index=False))


if __name__ == "__main__":
    main()
