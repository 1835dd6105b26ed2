"""Benchmark: the whole analysis (params + CKA + top-k) against one plain forward pass of both networks.

    python benchmarks/analysis_onepass.py [--images 1400] [--repeats 3]     # after transfer_peopleart.py

The fine-tuned network of the strategies benchmark against its ImageNet weights, on a fixed
sample of the run's People-Art images (k = 100, the 18 layers of MobileNetV2, 128 px).

  baseline        the plain loop over the same images for each of the two networks: torchvision's
                  MobileNetV2 in eval mode under no_grad, PIL + torchvision transforms, DataLoader batch 64
  cold            artlab.analysis.analyze with no decoded image cached (tables and report written)
  decoded cached  the same once the decoded images are cached (a second analysis of the collection)

Target: the analysis costs at most 1.5x the baseline. Before the one-pass design it ran the
ImageNet network three times and the fine-tuned one twice. Peak resident memory is measured in a
child process for half and all of the images: the streaming design keeps it flat.
Results go to benchmarks/results/analysis-onepass.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
RUN = HERE / "runs" / "peopleart-style-fine_tune-mobilenet_v2-128px"
sys.path.insert(0, str(HERE))

from forward_speed import BATCH, PlainImages, plain_network  # noqa: E402


def analysed_paths(n: int) -> list[str]:
    """The images `analyze(Comparison(RUN, max_images=n))` analyses."""
    from artlab.analysis import Comparison
    from artlab.analysis.compare import Context

    return Context(Comparison(RUN, max_images=n)).images[0]


def plain_both(paths: list[str]) -> None:
    """One plain forward pass of each network over the images (each pass decodes, as a plain loop does)."""
    from torch.utils.data import DataLoader

    from artlab.runs import load_network

    for model in (plain_network(), load_network(RUN).eval()):
        with torch.no_grad():
            for x in DataLoader(PlainImages(paths), batch_size=BATCH):
                model(x)


def artlab_analysis(n: int, out: Path) -> None:
    from artlab.analysis import Comparison, analyze

    analyze(Comparison(RUN, k=100, max_images=n), out_dir=out)


def cache_with_checks_only(source: Path) -> str:
    """A fresh cache holding only the image checks (scans) of `source`: nothing decoded, no features."""
    cache = tempfile.mkdtemp(prefix="artlab-bench-")
    if (source / "scans").is_dir():
        shutil.copytree(source / "scans", Path(cache) / "scans")
    return cache


def child(n: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="analysis-"))
    start = time.perf_counter()
    artlab_analysis(n, out)
    print(json.dumps({"images": n, "seconds": time.perf_counter() - start,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    from artlab.cache import cache_dir
    from artlab.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if not RUN.is_dir():
        raise SystemExit(f"{RUN} not found: run benchmarks/transfer_peopleart.py first")
    paths = analysed_paths(args.images)
    n = len(paths)
    for path in paths:  # read every file once, so the OS file cache favours neither side
        Path(path).read_bytes()
    checks = cache_dir()
    warm = cache_with_checks_only(checks)
    os.environ["ARTLAB_CACHE"] = warm
    out = Path(tempfile.mkdtemp(prefix="analysis-"))
    artlab_analysis(n, out)  # fills the decoded-image cache of `decoded cached`
    seconds: dict[str, list[float]] = {"baseline": [], "cold": [], "decoded cached": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        plain_both(paths)
        seconds["baseline"].append(time.perf_counter() - start)
        os.environ["ARTLAB_CACHE"] = cold = cache_with_checks_only(checks)
        start = time.perf_counter()
        artlab_analysis(n, out)
        seconds["cold"].append(time.perf_counter() - start)
        shutil.rmtree(cold, ignore_errors=True)
        os.environ["ARTLAB_CACHE"] = warm
        start = time.perf_counter()
        artlab_analysis(n, out)
        seconds["decoded cached"].append(time.perf_counter() - start)
    base = statistics.median(seconds["baseline"])
    report = {"images": n, "repeats": args.repeats, "seconds": seconds, "baseline_seconds": base}
    print(f"{n} images, params + CKA + top-100 over 18 layers, 128 px (median of {args.repeats}):")
    print(f"  plain baseline: one forward pass of each network  {base:6.1f} s")
    for name in ("cold", "decoded cached"):
        median = statistics.median(seconds[name])
        report[name] = {"seconds": median, "ratio": median / base}
        print(f"  artlab analyze, {name:15s}                   {median:6.1f} s  = {median / base:5.2f}x baseline "
              f"(target <= 1.5x)")
    memory = []
    for size in (n // 2, n):
        done = subprocess.run([sys.executable, __file__, "--child", str(size)], check=True, capture_output=True,
                              text=True, env={**os.environ, "ARTLAB_CACHE": warm})
        memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  peak resident memory, {size} images: {memory[-1]['peak_mib']:.0f} MiB", flush=True)
    report["memory"] = memory
    shutil.rmtree(warm, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    write_json(HERE / "results" / "analysis-onepass.json", report)


if __name__ == "__main__":
    main()
