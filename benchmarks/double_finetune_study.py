"""Benchmark: double fine-tuning as a study, ImageNet -> 10 People-Art styles -> genres, over seeds.

    python benchmarks/double_finetune_study.py [--epochs 10] [--seeds 0,1,2]

Five routes on the genres target (off-the-shelf on ImageNet features, off-the-shelf on the style
network's features, fine-tuning, double fine-tuning, scratch), MobileNetV2 at 128 px, each seed
its own source stage and target split. Writes results/double-finetune-study-*.{csv,md} and the
HTML report; finished runs under benchmarks/runs are reused.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    from artlab.experiments import Stage, double_finetune

    start = time.perf_counter()
    study = double_finetune(Stage(str(SHARED / "peopleart"), "style", epochs=args.epochs, top_n=10),
                            Stage(str(SHARED / "genres"), "label", epochs=args.epochs),
                            seeds=tuple(int(s) for s in args.seeds.split(",")), runs_dir=HERE / "runs",
                            reports_dir=HERE / "runs" / "reports", name=f"double-styles-to-genres-{args.epochs}ep")
    results = HERE / "results"
    for suffix in ("-summary.csv", "-difference.csv", "-cells.csv"):
        source = study.report.with_name(study.report.stem + suffix)
        shutil.copyfile(source, results / f"double-finetune-study-{args.epochs}ep{suffix}")
    print(study.summary.to_string(index=False))
    print(study.difference.to_string(index=False))
    print(f"\n{time.perf_counter() - start:.0f} s; report: {study.report}")


if __name__ == "__main__":
    main()
