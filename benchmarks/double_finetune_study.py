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

import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--changes", action="store_true", help="also analyse what each stage changed (seed 0)")
    args = parser.parse_args()
    from artlab.experiments import double_finetune
    from artlab.training import TrainConfig

    start = time.perf_counter()
    study = double_finetune(TrainConfig(data=str(SHARED / "peopleart"), task="style", epochs=args.epochs, top_n=10),
                            TrainConfig(data=str(SHARED / "genres"), task="label", epochs=args.epochs),
                            seeds=tuple(int(s) for s in args.seeds.split(",")), runs_dir=HERE / "runs",
                            reports_dir=HERE / "runs" / "reports", name=f"double-styles-to-genres-{args.epochs}ep")
    results = HERE / "results"
    for suffix in ("-summary.csv", "-difference.csv", "-cells.csv"):
        source = study.report.with_name(study.report.stem + suffix)
        shutil.copyfile(source, results / f"double-finetune-study-{args.epochs}ep{suffix}")
    print(study.summary.to_string(index=False))
    print(study.difference.to_string(index=False))
    print(f"\n{time.perf_counter() - start:.0f} s; report: {study.report}")
    if args.changes:
        what_changed(study, args.epochs)


def stage_table(stage: str, tables: dict) -> pd.DataFrame:
    """Per layer: the relative weight change, the CKA with the starting network, the top-k class entropy after."""
    blocks = tables["params_blocks"].set_index("layer")["relative_change"]
    cka = tables["cka"]
    cka = cka[~cka["comparison"].str.endswith("random init")].set_index("layer")["cka"]
    entropy = tables["topk_entropy_layers"]
    tuned = entropy[entropy["model"] == entropy["model"].iloc[-1]].set_index("layer")["mean"]
    return pd.DataFrame({"stage": stage, "layer": cka.index, "relative_change": blocks.reindex(cka.index).to_numpy(),
                         "cka": cka.to_numpy(), "topk_entropy_after": tuned.reindex(cka.index).to_numpy()})


def what_changed(study, epochs: int) -> None:
    """What each stage changed, seed 0: relative weight change and CKA per layer, one line per stage."""
    from artlab.analysis import several
    from artlab.experiments import stage_changes

    start = time.perf_counter()
    changes = stage_changes(study, seed=0, max_images=500)
    table = pd.concat([stage_table(stage, analysis.tables) for stage, analysis in changes.items()])
    out = HERE / "results" / f"double-finetune-study-{epochs}ep-stage-changes.csv"
    table.to_csv(out, index=False)
    several(changes, "cka", "cka", "CKA per layer: what each stage changed").write_html(
        out.with_suffix(".html"), include_plotlyjs="directory")
    print(table.pivot(index="layer", columns="stage", values="cka").round(3).to_string())
    print(f"{time.perf_counter() - start:.0f} s for the stage analyses; {out}")


if __name__ == "__main__":
    main()
