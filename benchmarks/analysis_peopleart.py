"""Benchmark: what fine-tuning on 10 People-Art styles changed in MobileNetV2 (Gonthier et al. 2020).

    python benchmarks/analysis_peopleart.py      # after benchmarks/transfer_peopleart.py

Compares the fine-tuned network of the strategies benchmark with its ImageNet weights on the
run's 2,288 images: relative weight change per layer, linear CKA per layer (and a random-network
baseline), top-100 overlap and class-concentration entropy per layer for both networks. The full
tables and the HTML report (with thumbnails of the artworks) stay in benchmarks/runs/; the
per-layer summaries are copied to benchmarks/results/analysis-peopleart/.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE / "runs" / "peopleart-style-fine_tune-mobilenet_v2-128px"
SUMMARIES = ("params_blocks", "params_most_changed", "cka", "topk_overlap_layers", "topk_entropy_layers",
             "dead_kernels")


def main() -> None:
    from artlab.analysis import Comparison, analyze

    if not RUN.is_dir():
        raise SystemExit(f"{RUN} not found: run benchmarks/transfer_peopleart.py first")
    start = time.perf_counter()
    result = analyze(Comparison(RUN, k=100), out_dir=HERE / "runs" / "analysis-peopleart")
    results = HERE / "results" / "analysis-peopleart"
    results.mkdir(parents=True, exist_ok=True)
    for name in SUMMARIES:
        shutil.copyfile(result.report.parent / f"{name}.csv", results / f"{name}.csv")
    cka = result.tables["cka"]
    tuned = cka[~cka["comparison"].str.endswith("random init")]
    print(tuned[["layer", "cka", "cka_debiased"]].to_string(index=False))
    print(f"\n{time.perf_counter() - start:.0f} s; report: {result.report}")


if __name__ == "__main__":
    main()
