"""Benchmark: two networks' renders side by side (`models.side_by_side`) against one after the other.

    python benchmarks/side_by_side.py [--steps 64] [--rounds 3]

A render of one image for one network (MobileNetV2, features.17, 128 px) on this machine's torch threads: on the
main thread with all of them and with one, on another thread with all of them (how renders ahead ran before), and
the two networks (ImageNet and a copy with changed weights) one after the other on the main thread (the plain
way) against side by side. Fresh channels each time (no render cache), alternating, median of `--rounds`; CPU
time and voluntary context switches of the process alongside. Results go to benchmarks/results/side-by-side.json.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["ARTLAB_CACHE"] = tempfile.mkdtemp(prefix="artlab-side-by-side-")  # nothing rendered before
RESULTS = Path(__file__).resolve().parent / "results" / "side-by-side.json"


def timed(work) -> dict:
    """Wall seconds, CPU seconds and voluntary context switches of the process while `work()` runs."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "switches": after.ru_nvcsw - before.ru_nvcsw}


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--steps", type=int, default=64)
    options.add_argument("--rounds", type=int, default=3)
    args = options.parse_args()

    import torch

    from artlab import models
    from artlab.interpret import RenderSettings
    from artlab.interpret import featurevis as fv

    imagenet = models.build("mobilenet_v2")
    tuned = copy.deepcopy(imagenet)
    with torch.no_grad():
        fv.last_convolution(tuned, "features.17").weight.mul_(1.5)
    settings, channels, threads = RenderSettings(steps=args.steps, size=128), itertools.count(), torch.get_num_threads()

    def render(model, one_thread: bool = False) -> None:
        if one_thread:
            torch.set_num_threads(1)
        try:
            fv.render_channels(model, "features.17", [next(channels)], settings=settings, progress=False)
        finally:
            if one_thread:
                torch.set_num_threads(threads)

    def elsewhere(work) -> None:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()

    cases = {
        "one network, main thread, all threads": lambda: render(imagenet),
        "one network, main thread, one thread": lambda: render(imagenet, one_thread=True),
        "one network, another thread, all threads": lambda: elsewhere(lambda: render(imagenet)),
        "two networks one after the other (plain)": lambda: (render(imagenet), render(tuned)),
        "two networks side by side (artlab)": lambda: models.side_by_side([partial(render, imagenet),
                                                                           partial(render, tuned)]),
    }
    render(imagenet)  # warm: the first render pays for loading
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, work in cases.items():
            runs[name].append(timed(work))
    rows = {name: {key: statistics.median(r[key] for r in found) for key in found[0]} for name, found in runs.items()}
    plain = rows["two networks one after the other (plain)"]["wall_s"]
    for name, row in rows.items():
        print(f"{name:45s} {row['wall_s']:6.2f} s  cpu {row['cpu_s']:5.2f} s  switches {row['switches']:7.0f}")
    result = {"code": os.popen("git rev-parse --short HEAD").read().strip(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "torch": torch.__version__, "steps": args.steps, "size": 128, "layer": "features.17",
              "torch_threads": threads,
              "rounds": args.rounds, "median": rows, "runs": runs,
              "side_by_side_vs_plain": rows["two networks side by side (artlab)"]["wall_s"] / plain}
    print(f"side by side / plain: {result['side_by_side_vs_plain']:.2f}x")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
