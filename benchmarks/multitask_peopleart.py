"""Benchmark: multi-task (style + artist) against one single-task network per task, on People-Art.

    python benchmarks/multitask_peopleart.py [--epochs 4] [--freeze 12] [--seeds 0,1,2]

The images of People-Art's artists with at least 20 images (a manifest of their paths, styles and
artists is written under benchmarks/runs; no image is copied), MobileNetV2 at 128 px, ImageNet
start. Each seed trains one network on both tasks and one per task on the multi-task run's split,
same epochs and freezing. Writes results/multitask-peopleart-*.csv; finished runs are reused, so
the seeds can be run one by one.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def artist_manifest(min_images: int) -> Path:
    """People-Art restricted to artists with at least `min_images` images, as a CSV manifest."""
    from artlab import load

    collection = load(SHARED / "peopleart")
    counts = collection.counts("artist")
    kept = collection.table[collection.table["artist"].isin(counts[counts >= min_images].index)]
    path = HERE / "runs" / f"peopleart-artists{min_images}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        kept[["path", "style", "artist"]].to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--freeze", type=int, default=12)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--min-images", type=int, default=20)
    args = parser.parse_args()
    from artlab.experiments import multitask_study
    from artlab.training import TrainConfig

    start = time.perf_counter()
    base = TrainConfig(data=str(artist_manifest(args.min_images)), epochs=args.epochs, freeze=args.freeze,
                       image_size=128)
    name = f"multitask-peopleart-{args.epochs}ep-freeze{args.freeze}"
    study = multitask_study(base, ["style", "artist"], seeds=tuple(int(s) for s in args.seeds.split(",")),
                            runs_dir=HERE / "runs", reports_dir=HERE / "runs" / "reports", name=name)
    for part in ("summary", "difference", "cells"):
        shutil.copyfile(study.report.with_name(f"{study.report.stem}-{part}.csv"),
                        HERE / "results" / f"{name}-{part}.csv")
    print(study.summary.to_string(index=False))
    print(study.difference.to_string(index=False))
    print(f"\n{time.perf_counter() - start:.0f} s; report: {study.report}")


if __name__ == "__main__":
    main()
