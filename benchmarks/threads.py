"""Benchmark: two torch processes sharing the cores, with torch's default thread count and with their share.

    python benchmarks/threads.py [--repeats 3]

The work is what the test suite does most: fine-tuning steps of MobileNetV2 on small batches (16 images of
64 px, forward and backward, 30 steps). Each case starts fresh processes, lets them import and warm up,
releases them together and times from the first one's first step to the last one's last step (wall clock);
the figure is the median over `--repeats` rounds, the cases alternating:

  alone, default threads     one process, torch's default (one thread per core)
  alone, 1 thread            one process, torch.set_num_threads(1)
  two at once, default       two processes at the same time, each with the default
  two at once, their share   two processes at the same time, each with cores / 2 threads (what a pytest-xdist
                             worker sets, conftest.py)

Results go to benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"
WORK = """
import sys, time, torch, torchvision
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = torchvision.models.mobilenet_v2(num_classes=8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 8, (16,))
def step():
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
step()
print("ready", flush=True)
sys.stdin.readline()  # every process of the case starts its steps together
start = time.time()
for _ in range(30):
    step()
print(start, time.time())
"""


def processes(count: int, threads: int) -> float:
    """Seconds from the first of `count` processes starting its steps to the last finishing them, the processes
    imported and warmed up first, then released together (`threads` 0: torch's default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # as a user has
    started = [subprocess.Popen([sys.executable, "-c", WORK, str(threads)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env) for _ in range(count)]
    for process in started:
        assert process.stdout.readline().strip() == "ready"
    for process in started:
        process.stdin.write("go\n")
        process.stdin.flush()
    spans = [tuple(map(float, process.communicate()[0].split())) for process in started]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--repeats", type=int, default=3)
    repeats = options.parse_args().repeats
    share = max(1, (os.cpu_count() or 1) // 2)
    cases = {"alone, default threads": (1, 0), "alone, 1 thread": (1, 1), "two at once, default": (2, 0),
             f"two at once, their share ({share} thread each)": (2, share)}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (count, threads) in cases.items():
            times[name].append(processes(count, threads))  # the pair is done when both are
    alone = statistics.median(times["alone, default threads"])
    rows = [{"case": name, "median_s": round(statistics.median(t), 2),
             "vs_alone": round(statistics.median(t) / alone, 2)} for name, t in times.items()]
    RESULTS.write_text(json.dumps({"cores": os.cpu_count(), "repeats": repeats, "rows": rows}, indent=2) + "\n")
    for row in rows:
        print(f"{row['case']:<40} {row['median_s']:7.2f} s  {row['vs_alone']:5.2f}x alone")


if __name__ == "__main__":
    main()
