"""Benchmark: how long the command line takes to answer before any work, against the imports it used to pay.

    python benchmarks/startup.py [--repeats 7]

Each case is a fresh `python -m artlab ...` process, timed from start to exit; each figure is the median of
`--repeats` runs, the cases alternating. The baseline is a process that imports what every command
imported before its arguments were parsed (torch, torchvision, scikit-learn, pandas): the floor of the old
start-up. Goal (issue 22): `artlab --help` and an argument error within 0.5 s on 2 cores.
Results go to benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
GOAL_S = 0.5
CASES = {
    "artlab --help": [sys.executable, "-m", "artlab", "--help"],
    "artlab train --help": [sys.executable, "-m", "artlab", "train", "--help"],
    "argument error (train --epochs x)": [sys.executable, "-m", "artlab", "train", "--epochs", "x"],
    "baseline: import torch, torchvision, sklearn, pandas": [
        sys.executable, "-c", "import torch, torchvision, sklearn, pandas"],
    "python alone": [sys.executable, "-c", "pass"],
}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--repeats", type=int, default=7)
    repeats = options.parse_args().repeats
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, command in CASES.items():
            times[name].append(timed(command))
    baseline = statistics.median(times["baseline: import torch, torchvision, sklearn, pandas"])
    rows = [{"case": name, "median_s": round(statistics.median(t), 3), "runs": len(t),
             "vs_baseline": round(statistics.median(t) / baseline, 3),
             "goal_s": GOAL_S if name.startswith(("artlab", "argument")) else None} for name, t in times.items()]
    RESULTS.write_text(json.dumps({"repeats": repeats, "rows": rows}, indent=2) + "\n")
    for row in rows:
        goal = "" if row["goal_s"] is None else (" (goal met)" if row["median_s"] <= GOAL_S else " (goal missed)")
        print(f"{row['case']:<55} {row['median_s']:6.3f} s  {row['vs_baseline']:5.2f}x baseline{goal}")


if __name__ == "__main__":
    main()
