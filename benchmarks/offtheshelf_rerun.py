"""Benchmark: an off-the-shelf run on genres with artlab's command line against the plain script, whole processes.

    python benchmarks/offtheshelf_rerun.py [--data ../shared/data/genres] [--repeats 3]

Each case is a fresh process timed from start to exit (imports included), the cases alternating, and each
figure the median of `--repeats` rounds:

  plain    benchmarks/plain_offtheshelf.py: computes everything again, as a plain script does
  cold     `artlab train --strategy off_the_shelf` with an empty cache and runs folder
  warm     the same command again with the cache kept and a new runs folder: the features come from the cache,
           the classifier is fitted again (a new seed, split or classifier option does this)
  reused   the same command again with --resume, cache and runs folder kept: the finished run is checked and
           reused

Goals (issue 22): warm at least 3x faster than plain, cold at least 1.5x. Results go to
benchmarks/results/offtheshelf-rerun.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "offtheshelf-rerun.json"
GOALS = {"warm": 3.0, "cold": 1.5}


def timed(command: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of `command`; a failure stops the benchmark with its output."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return took


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "genres"))
    options.add_argument("--repeats", type=int, default=3)
    args = options.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="artlab-rerun-"))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run([sys.executable, "-c", "from artlab import models; models.build('mobilenet_v2')"], check=True,
                   env=env)  # ImageNet weights into torch's hub cache, for the plain script
    train = [sys.executable, "-m", "artlab", "train", "--data", args.data, "--strategy", "off_the_shelf"]
    times: dict[str, list[float]] = {"plain": [], "cold": [], "warm": [], "reused": []}
    try:
        for round_ in range(args.repeats):
            times["plain"].append(timed([sys.executable, str(HERE / "plain_offtheshelf.py"), args.data], env))
            cache, runs = scratch / f"cache{round_}", scratch / f"runs{round_}"
            here = {**env, "ARTLAB_CACHE": str(cache)}
            times["cold"].append(timed([*train, "--runs-dir", str(runs)], here))
            times["warm"].append(timed([*train, "--runs-dir", str(scratch / f"warm{round_}")], here))
            times["reused"].append(timed([*train, "--runs-dir", str(runs), "--resume"], here))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    plain = statistics.median(times["plain"])
    rows = [{"case": case, "median_s": round(statistics.median(t), 2), "runs_s": [round(x, 2) for x in t],
             "speed_up_vs_plain": round(plain / statistics.median(t), 2), "goal_speed_up": GOALS.get(case)}
            for case, t in times.items()]
    RESULTS.write_text(json.dumps({"data": Path(args.data).name, "repeats": args.repeats, "rows": rows}, indent=2)
                       + "\n")
    for row in rows:
        goal = row["goal_speed_up"]
        verdict = "" if goal is None else (" (goal met)" if row["speed_up_vs_plain"] >= goal else " (goal missed)")
        print(f"{row['case']:<8} {row['median_s']:7.2f} s  {row['speed_up_vs_plain']:5.2f}x faster than plain{verdict}")


if __name__ == "__main__":
    main()
