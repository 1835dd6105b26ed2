"""Benchmark: a workshop pack with its images as they are and at a chosen size (stand-ins), on a real series.

    ARTLAB_CACHE=<the teacher's cache> python benchmarks/standin_pack.py --runs-dir RUNS [--image-size 128]

Packs every finished run under RUNS twice, with `--images` and with `--image-size`, and times each. Then, as
an attendee's laptop (an empty place, an empty cache), unpacks the second and on the stand-ins:
- evaluates each off-the-shelf run with forward passes refused (its features must come from the pack);
- evaluates the first fine-tuned run (a forward pass over the stand-ins), beside its recorded test accuracy.
Results go to benchmarks/results/standin-pack.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "standin-pack.json"


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--runs-dir", required=True)
    options.add_argument("--image-size", type=int, default=128)
    args = options.parse_args()

    from artlab.data.standins import LINKS_FILE, original_of
    from artlab.runs import Run
    from artlab.runs.pack import pack, read_pack, unpack
    runs = sorted(p for p in Path(args.runs_dir).iterdir() if Run(p).finished)
    record: dict = {"runs": len(runs), "image_size": args.image_size}
    with tempfile.TemporaryDirectory(prefix="standin-pack-") as scratch:
        scratch = Path(scratch)
        for name, size in (("as_they_are", None), ("stand_ins", args.image_size)):
            start = time.perf_counter()
            out = pack(scratch / f"{name}.zip", runs_dir=args.runs_dir, images=True, image_size=size)
            record[name] = {"seconds": round(time.perf_counter() - start, 1),
                            "mib": round(out.stat().st_size / 2**20, 1),
                            "collections": read_pack(out).collections}
        os.environ["ARTLAB_CACHE"] = str(scratch / "laptop-cache")
        done = unpack(scratch / "stand_ins.zip", scratch / "laptop")
        folders = [done.data_dir / name for name in done.pack.collections]
        on_stand_ins = [(run, data) for run in map(Run, runs) for data in folders
                        if Path(str(run.config().get("data"))).name == data.name]
        probes = [(run, data) for run, data in on_stand_ins if run.config().get("strategy") == "off_the_shelf"]
        tuned = [(run, data) for run, data in on_stand_ins if run.config().get("strategy") != "off_the_shelf"][:1]
        shown = [_evaluate(run, data, done.runs_dir) for run, data in probes + tuned]
        record["evaluated_on_stand_ins"] = shown
        linked = [(folder, json.loads((folder / LINKS_FILE).read_text())["images"]) for folder in folders
                  if (folder / LINKS_FILE).is_file()]
        record["stand_ins_verified"] = sum(original_of(folder / name) is not None
                                           for folder, images in linked for name in images)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def _evaluate(run, data: Path, runs_dir: Path) -> dict:
    """Evaluate the unpacked copy of `run` on the stand-ins in `data`; off-the-shelf runs with forward passes
    refused (their features are the teacher's)."""
    import artlab.features as features
    from artlab.training import evaluate_run

    unpacked, strategy = runs_dir / run.path.name, run.config().get("strategy")
    real = features.forward_pass
    if strategy == "off_the_shelf":
        def refuse(*args, **kwargs):
            raise SystemExit(f"{run.name}: a forward pass on the laptop; the pack should have served its features")
        features.forward_pass = refuse
    start = time.perf_counter()
    try:
        metrics = evaluate_run(unpacked, data=data)
    finally:
        features.forward_pass = real
    recorded = json.loads(run.file("metrics.json").read_text())
    return {"run": run.name, "strategy": strategy, "seconds": round(time.perf_counter() - start, 1),
            "accuracy_on_stand_ins": metrics.get("accuracy"), "accuracy_recorded": recorded.get("accuracy")}


if __name__ == "__main__":
    sys.exit(main())
