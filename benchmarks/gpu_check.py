"""GPU check: the same training and analyses on CUDA and on the CPU, compared in one run.

    python benchmarks/gpu_check.py [--epochs 4]

Trains the fine-tuning strategy on the synthetic collection (task: artist, 128 px) on each
device, then runs the CKA and top-k analyses of the CUDA-trained network on each device. Prints
per-device time (ratio CUDA / CPU), test accuracies, and the largest differences between the
devices' CKA values and top-k lists. Needs a CUDA GPU; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: nothing to check")
    from artlab.analysis import PassOptions, linear_cka, top_images
    from artlab.analysis.topk import overlap
    from artlab.training import TrainConfig, load_network, run_collection, train

    runs = tempfile.mkdtemp(prefix="artlab-gpu-")
    timings, results = {}, {}
    for device in ("cuda", "cpu"):
        config = TrainConfig(name=f"ft-{device}", task="artist", epochs=args.epochs, device=device, image_size=128)
        start = time.perf_counter()
        results[device] = train(config, runs_dir=runs)
        timings[device] = time.perf_counter() - start
        print(f"{device}: fine-tune {args.epochs} epochs in {timings[device]:.1f} s, "
              f"test accuracy {results[device].accuracy:.3f}", flush=True)
    print(f"time ratio cuda / cpu: {timings['cuda'] / timings['cpu']:.2f} ({torch.cuda.get_device_name()})")

    run = results["cuda"].run
    paths = run_collection(run).table["path"].tolist()
    layers = ["features.2", "features.6", "features.10", "features.14", "features.18"]
    tuned, base = load_network(run), load_network(results["cpu"].run)
    cka = {d: linear_cka(base, tuned, paths, layers, options=PassOptions(device=d)) for d in ("cuda", "cpu")}
    print("CKA per layer (cuda):", [round(v, 4) for v in cka["cuda"]["cka"]])
    print("largest |CKA cuda - CKA cpu|:", float((cka["cuda"]["cka"] - cka["cpu"]["cka"]).abs().max()))
    tops = {d: top_images(tuned, paths, layers, k=20, device=d) for d in ("cuda", "cpu")}
    agreement = overlap(tops["cuda"], tops["cpu"])["overlap_pct"]
    print(f"top-20 lists, cuda vs cpu: mean overlap {agreement.mean():.2f}%, min {agreement.min():.0f}%")


if __name__ == "__main__":
    main()
