"""Benchmark: double fine-tuning, ImageNet -> People-Art styles -> genres (Gonthier et al. 2020).

    python benchmarks/double_finetune_genres.py      # after benchmarks/transfer_peopleart.py

The small target is ../shared/data/genres (5 genres, a different task from styles). Three ways to
get there with MobileNetV2 at 128 px, on one deterministic stratified split:
  off-the-shelf   ImageNet features + logistic regression
  fine-tune       ImageNet -> genres
  double          ImageNet -> 10 People-Art styles (the strategies benchmark's run) -> genres
Writes benchmarks/results/double-finetune-genres.{csv,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENRES = HERE.parent.parent / "shared" / "data" / "genres"
STAGE1 = HERE / "runs" / "peopleart-style-fine_tune-mobilenet_v2-128px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    import pandas as pd

    from artlab.experiments.strategies import results_table
    from artlab.plots import markdown_table
    from artlab.training import TrainConfig, train

    if not STAGE1.is_dir():
        raise SystemExit(f"{STAGE1} not found: run benchmarks/transfer_peopleart.py first")
    common = dict(data=str(GENRES), task="label", image_size=128, epochs=args.epochs, lr=0.01)
    configs = {"off-the-shelf (ImageNet)": TrainConfig(name="genres-off_the_shelf", strategy="off_the_shelf", **common),
               "fine-tune (ImageNet -> genres)": TrainConfig(name="genres-fine_tune", strategy="fine_tune", **common),
               "double fine-tune (ImageNet -> styles -> genres)": TrainConfig(
                   name="genres-double_fine_tune", strategy="fine_tune", init_from=str(STAGE1), **common)}
    start = time.perf_counter()
    results = {label: train(config, runs_dir=HERE / "runs", resume=True) for label, config in configs.items()}
    table = results_table(results)
    out = HERE / "results" / "double-finetune-genres"
    table.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(markdown_table(table))
    with pd.option_context("display.width", 160):
        print(table.to_string(index=False))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
