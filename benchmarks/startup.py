"""Benchmark: how long the command line takes to answer before any work, against the imports it used to pay.

    python benchmarks/startup.py [--repeats 7]

Each case is a fresh `python -m artlab ...` process, timed from start to exit; each figure is the median of
`--repeats` runs, the cases alternating. The baseline is a process that imports what every command
imported before its arguments were parsed (torch, torchvision, scikit-learn, pandas): the floor of the old
start-up. Goal (issue 22): `artlab --help` and an argument error within 0.5 s on 2 cores. The paired cases time
a command's or a kernel's first work through artlab against plain code doing the same (see PAIRED).
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
_IMAGE = "torch.zeros(3, 80, 80, dtype=torch.uint8)"
_STEP = ("model = torch.nn.Linear(8, 2)\nstep = {optimizer}(model.parameters(), lr=0.1, momentum=0.9)\n"
         "model(torch.ones(4, 8)).sum().backward()\nstep.step()")  # what a training or a channel render starts with
_FIGURE = "go.Figure(go.Bar(y=[1]))._repr_mimebundle_({}, {})"  # what a notebook does to show a figure
#: The first work of a command or a kernel, through artlab and as plain code does it (the plain imports and
#: optimisers pull in torch's compiler and jsonschema's IRI grammars, artlab's do not: artlab.models.vision,
#: artlab.models.optim, artlab.lazy).
PAIRED = {
    "a network built, an image transformed": (
        "import torch\nfrom artlab.models import build, input_transform\n"
        f"input_transform(build('mobilenet_v2', pretrained=False), 64)({_IMAGE})",
        "import torch, torchvision\nfrom torchvision.transforms import v2\ntorchvision.models.mobilenet_v2()\n"
        f"v2.Compose([v2.Resize(64), v2.CenterCrop(64), v2.ToDtype(torch.float32, scale=True)])({_IMAGE})"),
    "a first training step": (
        f"import torch\nfrom artlab.models.optim import SGD\n{_STEP.format(optimizer='SGD')}",
        f"import torch\n{_STEP.format(optimizer='torch.optim.SGD')}"),
    "a first figure shown as a notebook shows it": (
        f"from artlab.lazy import import_jsonschema\nimport_jsonschema()\nimport plotly.graph_objects as go\n{_FIGURE}",
        f"import plotly.graph_objects as go\n{_FIGURE}"),
}
for _name, (_artlab, _plain) in PAIRED.items():
    CASES[f"artlab: {_name}"] = [sys.executable, "-c", _artlab]
    CASES[f"plain: {_name}"] = [sys.executable, "-c", _plain]


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
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = [{"case": name, "median_s": round(median[name], 3), "runs": len(t),
             "vs_baseline": round(median[name] / baseline, 3),
             "vs_plain": round(median[name] / median["plain: " + name.removeprefix("artlab: ")], 3)
             if name.startswith("artlab: ") else None,
             "goal_s": GOAL_S if name.startswith(("artlab ", "argument")) else None} for name, t in times.items()]
    RESULTS.write_text(json.dumps({"repeats": repeats, "rows": rows}, indent=2) + "\n")
    for row in rows:
        goal = "" if row["goal_s"] is None else (" (goal met)" if row["median_s"] <= GOAL_S else " (goal missed)")
        plain = "" if row["vs_plain"] is None else f", {row['vs_plain']:.2f}x the plain code's time"
        print(f"{row['case']:<62} {row['median_s']:6.3f} s  {row['vs_baseline']:5.2f}x baseline{goal}{plain}")


if __name__ == "__main__":
    main()
