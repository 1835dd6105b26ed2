"""Benchmark: peak memory and time of the one-pass streaming top-k over 2,000 real images.

    python benchmarks/topk_memory.py [--images 2000] [--k 100]

Each variant runs in its own process and reports its peak resident memory (ru_maxrss):
  idle       import artlab and build MobileNetV2 (the floor every variant pays)
  plain      keep every image's per-channel score for all 18 layers, then sort once at the end
  streaming  artlab.analysis.top_images: merge each batch into running top-k lists
Ratios are streaming / plain, measured in the same run. Requirement: streaming under 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEOPLEART = HERE.parent.parent / "shared" / "data" / "peopleart"


def _paths(n: int) -> list[str]:
    from artlab.data import load

    table = load(PEOPLEART).table
    return table.sample(n=min(n, len(table)), random_state=0)["path"].tolist()


def child(variant: str, n: int, k: int) -> None:
    import torch

    from artlab import models
    from artlab.analysis.topk import top_images
    from artlab.features import extract

    paths = _paths(n)
    model = models.build("mobilenet_v2")
    layers = list(models.arch("mobilenet_v2").layers)
    start = time.perf_counter()
    if variant == "streaming":
        top_images(model, paths, layers, k=k, image_size=128)
    elif variant == "plain":
        scores = extract(model, paths, layers, 128, torch.device("cpu"), batch_size=32, pool="relu_avg")
        for layer in layers:
            torch.from_numpy(scores[layer]).T.topk(k, dim=1)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.k)
        return
    results = {}
    for variant in ("idle", "plain", "streaming"):
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--images", str(args.images),
                              "--k", str(args.k)], check=True, capture_output=True, text=True,
                             env={**os.environ, "TQDM_DISABLE": "1"})
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(results[variant], flush=True)
    s, p = results["streaming"], results["plain"]
    print(f"\n{args.images} images, k={args.k}, 18 layers of MobileNetV2 at 128 px")
    print(f"streaming peak {s['peak_mib']:.0f} MiB ({'under' if s['peak_mib'] < 2048 else 'OVER'} 2 GiB), "
          f"plain {p['peak_mib']:.0f} MiB, idle {results['idle']['peak_mib']:.0f} MiB")
    idle = results["idle"]["peak_mib"]
    print(f"ratios streaming/plain: memory {s['peak_mib'] / p['peak_mib']:.2f}, "
          f"above idle {(s['peak_mib'] - idle) / max(p['peak_mib'] - idle, 1):.2f}, "
          f"time {s['seconds'] / p['seconds']:.2f}")


if __name__ == "__main__":
    main()
