"""Benchmark: off-the-shelf vs fine-tuning vs scratch on the 10 largest People-Art styles (Sabatelli et al. 2018).

    python benchmarks/transfer_peopleart.py [--epochs 10] [--image-size 128]

Writes benchmarks/results/strategies-peopleart-style.{csv,md,html} and prints the table. Finished runs
under benchmarks/runs are reused, so an interrupted benchmark resumes where it stopped.
The reference (../shared/data/README.md): off-the-shelf MobileNetV2 at 128 px reaches about 54%.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEOPLEART = HERE.parent.parent / "shared" / "data" / "peopleart"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(PEOPLEART))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    from artlab.experiments import compare_strategies

    start = time.perf_counter()
    table, html = compare_strategies(data=args.data, task="style", top_n=10, epochs=args.epochs,
                                     image_size=args.image_size, runs_dir=HERE / "runs",
                                     reports_dir=HERE / "results")
    print(table.to_string(index=False))
    print(f"\n{time.perf_counter() - start:.0f} s; chart: {html}")


if __name__ == "__main__":
    main()
