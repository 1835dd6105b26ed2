"""Benchmark: images per second of artlab's forward passes against a plain PyTorch loop, on 1,000 real artworks.

    python benchmarks/forward_speed.py [--images 1000] [--repeats 3] [--levers]

The baseline is the plain loop a notebook would write: torchvision's MobileNetV2 in eval mode
under torch.no_grad, PIL + torchvision transforms (Resize, CenterCrop, ToTensor, Normalize), a
DataLoader with batch 64. Both sides compute the same thing at 128 px: the global-average-pooled
`features.18` (feature extraction), or the logits (evaluation). Each figure is the median of
`--repeats` runs, baseline and artlab alternating, so a busy machine slows both alike.

  cold            artlab with nothing cached (a fresh ARTLAB_CACHE: images decoded, the cache filled)
  decoded cached  the same pass once the decoded images are cached (a second layer, network or analysis)
  warm            cached_features when the features themselves are cached (target: 100x)

Evaluation runs artlab.training's `predict` as it is, and again on the inference copy
(`models.for_inference`: BatchNorm folded), which features and analyses use ("BN folded").

`--levers` also measures each lever alone: channels_last, inference_mode, BatchNorm folding,
torch.compile (with its compile time, from an empty compile cache), decoding workers, JPEG draft.
Accuracy: artlab's features are compared with the plain network's on the same decoded images.
Results go to benchmarks/results/forward-speed.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from plain_offtheshelf import Images as PlainImages  # noqa: E402  (the plain script's dataset)
from torch.utils.data import DataLoader  # noqa: E402

HERE = Path(__file__).resolve().parent
PEOPLEART = HERE.parent.parent / "shared" / "data" / "peopleart"
SIZE, LAYER, BATCH = 128, "features.18", 64
CPU = torch.device("cpu")


def sample_paths(n: int) -> list[str]:
    """`n` People-Art JPEGs, a fixed random sample."""
    from artlab.data import load

    table = load(PEOPLEART).table
    table = table[table["path"].str.lower().str.endswith((".jpg", ".jpeg"))]
    return table.sample(n=min(n, len(table)), random_state=0)["path"].tolist()


# ---- the plain baseline -------------------------------------------------------------------------------------
def plain_network() -> torch.nn.Module:
    from artlab import models

    models.build("mobilenet_v2")  # puts the offline ImageNet file into torch's hub cache
    return torchvision.models.mobilenet_v2(weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1).eval()


def plain_pass(paths: list[str], logits: bool = False) -> np.ndarray:
    model = plain_network()
    out = []
    with torch.no_grad():
        for x in DataLoader(PlainImages(paths), batch_size=BATCH):
            out.append(model(x) if logits else model.features(x).mean(dim=(2, 3)))
    return torch.cat(out).numpy()


# ---- artlab -------------------------------------------------------------------------------------------------
_EMPTIED: list[str] = []


def fresh_cache() -> None:
    """Point artlab at an empty cache: nothing decoded, no features (the previous empty one is removed)."""
    while _EMPTIED:
        shutil.rmtree(_EMPTIED.pop(), ignore_errors=True)
    os.environ["ARTLAB_CACHE"] = tempfile.mkdtemp(prefix="artlab-bench-")
    _EMPTIED.append(os.environ["ARTLAB_CACHE"])


def artlab_features(paths: list[str], layer: str = LAYER, num_workers: int | None = None) -> np.ndarray:
    from artlab import models
    from artlab.features import extract

    return extract(models.build("mobilenet_v2"), paths, [layer], SIZE, CPU, batch_size=BATCH,
                   num_workers=num_workers)[layer]


def artlab_cached_features(paths: list[str]) -> np.ndarray:
    from artlab.features import cached_features
    from artlab.runs import IMAGENET, Network

    return cached_features(Network.of(IMAGENET), LAYER, paths, SIZE, CPU, batch_size=BATCH)


def artlab_evaluation(paths: list[str], folded: bool = False) -> np.ndarray:
    """The evaluation forward pass: artlab.training's `predict` over an evaluation ImageDataset.

    `folded` hands predict the inference copy (`models.for_inference`), as features and analyses use.
    """
    from artlab import models
    from artlab.data import ImageDataset
    from artlab.training.loops import predict

    model = models.build("mobilenet_v2")
    model = models.for_inference(model, CPU) if folded else model
    dataset = ImageDataset(paths, None, SIZE, models.input_transform(model, SIZE), keep=False)
    return predict(model, dataset, CPU, BATCH)[0]


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def alternate(variants: dict[str, Callable[[], object]], repeats: int, before: dict[str, Callable] | None = None,
              ) -> dict[str, list[float]]:
    """Seconds of each variant, `repeats` rounds, the variants alternating within a round."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, function in variants.items():
            if before and name in before:
                before[name]()
            seconds[name].append(timed(function)[0])
    return seconds


def rate(n: int, seconds: list[float]) -> float:
    return n / statistics.median(seconds)


def headline(paths: list[str], repeats: int) -> dict:
    n = len(paths)
    warm_cache = tempfile.mkdtemp(prefix="artlab-bench-warm-")
    os.environ["ARTLAB_CACHE"] = warm_cache
    artlab_cached_features(paths)  # fills the decoded cache of `decoded cached` and the feature cache of `warm`

    def use_warm():
        os.environ["ARTLAB_CACHE"] = warm_cache

    features = alternate({"baseline": lambda: plain_pass(paths),
                          "cold": lambda: artlab_features(paths),
                          "decoded cached": lambda: artlab_features(paths),
                          "warm": lambda: artlab_cached_features(paths)}, repeats,
                         before={"cold": fresh_cache, "decoded cached": use_warm, "warm": use_warm})
    evaluation = alternate({"baseline": lambda: plain_pass(paths, logits=True),
                            "cold": lambda: artlab_evaluation(paths),
                            "decoded cached": lambda: artlab_evaluation(paths),
                            "cold, BN folded": lambda: artlab_evaluation(paths, folded=True),
                            "cached, BN folded": lambda: artlab_evaluation(paths, folded=True)}, repeats,
                           before={"cold": fresh_cache, "decoded cached": use_warm, "cold, BN folded": fresh_cache,
                                   "cached, BN folded": use_warm})
    report = {}
    for task, seconds in (("feature extraction", features), ("evaluation", evaluation)):
        base = rate(n, seconds["baseline"])
        report[task] = {"baseline_images_per_s": base, "seconds": seconds}
        print(f"\n{task}, {n} images at {SIZE} px (median of {repeats}):")
        print(f"  plain PyTorch baseline        {base:8.1f} images/s")
        for name in seconds:
            if name != "baseline":
                images_per_s = rate(n, seconds[name])
                report[task][name] = {"images_per_s": images_per_s, "ratio": images_per_s / base}
                print(f"  artlab {name:22s} {images_per_s:8.1f} images/s  = {images_per_s / base:6.2f}x baseline")
    report["accuracy"] = accuracy(paths)
    shutil.rmtree(warm_cache, ignore_errors=True)
    return report


def accuracy(paths: list[str]) -> dict:
    """artlab's fast features against the plain network on the very same decoded images."""
    from artlab import models
    from artlab.data import ImageDataset
    from artlab.data.loading import collate_present

    model = models.build("mobilenet_v2").eval()
    dataset = ImageDataset(paths, None, SIZE, models.input_transform(model, SIZE), keep=False, cache=False)
    reference = []
    with torch.no_grad():
        for x, _ in DataLoader(dataset, batch_size=BATCH, collate_fn=collate_present):
            reference.append(model.features(x).mean(dim=(2, 3)))
    reference = torch.cat(reference).numpy()
    fast = artlab_features(paths)
    scale = np.abs(reference).max()
    cosine = (fast * reference).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(reference, axis=1)
    result = {"max_abs_difference": float(np.abs(fast - reference).max()), "feature_scale": float(scale),
              "min_cosine": float(cosine.min())}
    print(f"\naccuracy: largest feature difference {result['max_abs_difference']:.2e} (features up to "
          f"{scale:.1f}); lowest cosine similarity {result['min_cosine']:.8f}")
    return result


# ---- levers, one at a time ----------------------------------------------------------------------------------
def network_levers(paths: list[str], repeats: int) -> dict:
    """ms per image of the network alone on decoded, transformed images in memory."""
    from artlab import models
    from artlab.data import ImageDataset

    model = models.build("mobilenet_v2").eval()
    dataset = ImageDataset(paths[:256], None, SIZE, models.input_transform(model, SIZE), keep=False, cache=False)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    batches = list(x.split(BATCH))
    last = [batch.contiguous(memory_format=torch.channels_last) for batch in batches]

    def run(net, inputs, inference: bool):
        def go():
            with torch.inference_mode() if inference else torch.no_grad():
                for batch in inputs:
                    net(batch)
        return go

    variants = {
        "plain (no_grad)": run(model, batches, False),
        "inference_mode": run(model, batches, True),
        "channels_last": run(models.for_inference(model, CPU, fold=False), last, False),
        "BatchNorm folded": run(models.for_inference(model, CPU, channels_last=False), batches, False),
        "all three (artlab)": run(models.for_inference(model, CPU), last, True),
    }
    for function in variants.values():
        function()  # warm-up
    seconds = alternate(variants, repeats)
    ms = {name: 1000 * statistics.median(s) / len(x) for name, s in seconds.items()}
    print(f"\nnetwork alone, {len(x)} decoded images in memory, batch {BATCH} (median of {repeats}):")
    for name, value in ms.items():
        print(f"  {name:22s} {value:6.2f} ms/image  = {ms['plain (no_grad)'] / value:5.2f}x plain")
    return {"ms_per_image": ms}


def compile_lever(paths: list[str], repeats: int) -> dict:
    """torch.compile on top of artlab's copy: compile time from an empty compile cache, then its speed.

    Two networks of one architecture are compiled (ImageNet and random weights) and each checked
    against its eager copy: compiled code must not mix up their weights.
    """
    from artlab import models
    from artlab.data import ImageDataset

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    model = models.build("mobilenet_v2").eval()
    other = models.build("mobilenet_v2", pretrained=False).eval()
    dataset = ImageDataset(paths[:256], None, SIZE, models.input_transform(model, SIZE), keep=False, cache=False)
    batches = [b.contiguous(memory_format=torch.channels_last)
               for b in torch.stack([dataset[i][0] for i in range(len(dataset))]).split(BATCH)]
    eager, eager_other = models.for_inference(model, CPU), models.for_inference(other, CPU)
    compiled = models.for_inference(model, CPU, compile=True)
    compiled_other = models.for_inference(other, CPU, compile=True)
    with torch.inference_mode():
        compile_seconds, _ = timed(lambda: compiled(batches[0]))
        difference = max(float((compiled(batches[1]) - eager(batches[1])).abs().max()),
                         float((compiled_other(batches[1]) - eager_other(batches[1])).abs().max()))

    def run(net):
        def go():
            with torch.inference_mode():
                for batch in batches:
                    net(batch)
        return go

    run(eager)()
    seconds = alternate({"eager": run(eager), "compiled": run(compiled)}, repeats)
    ms = {name: 1000 * statistics.median(s) / (BATCH * len(batches)) for name, s in seconds.items()}
    saved = (ms["eager"] - ms["compiled"]) / 1000
    break_even = compile_seconds / saved if saved > 0 else float("inf")
    print(f"\ntorch.compile (inductor) over artlab's copy: compile {compile_seconds:.1f} s; {ms['compiled']:.2f} vs "
          f"{ms['eager']:.2f} ms/image eager; pays after {break_even:,.0f} images; largest output difference "
          f"{difference:.1e}")
    return {"compile_seconds": compile_seconds, "ms_per_image": ms, "break_even_images": break_even,
            "max_output_difference": difference}


def worker_lever(paths: list[str], repeats: int) -> dict:
    """A cold feature pass with 0, 1 and 2 decoding worker processes."""
    n = len(paths)
    variants = {f"{w} workers": (lambda w=w: artlab_features(paths, num_workers=w)) for w in (0, 1, 2)}
    seconds = alternate(variants, repeats, before={name: fresh_cache for name in variants})
    print(f"\ncold feature pass by decoding workers ({os.cpu_count()} cores, median of {repeats}):")
    for name, s in seconds.items():
        print(f"  {name:10s} {rate(n, s):7.1f} images/s")
    return {name: rate(n, s) for name, s in seconds.items()}


def draft_lever(paths: list[str], repeats: int) -> dict:
    """Decoding time per image: full decode, artlab's draft (2x the working size), a draft at the working size."""
    from artlab.data.images import load_rgb

    def decode(max_side):
        def go():
            for path in paths[:300]:
                load_rgb(path, max_side=max_side)
        return go

    seconds = alternate({"full decode": decode(None), f"draft {2 * SIZE} (artlab)": decode(2 * SIZE),
                         f"draft {SIZE}": decode(SIZE)}, repeats)
    reduced = sum(min(Image.open(p).size) >= 2 * SIZE for p in paths)
    ms = {name: 1000 * statistics.median(s) / 300 for name, s in seconds.items()}
    print("\nJPEG decoding (300 images): " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
          + f"; {reduced} of {len(paths)} images have a shorter side >= {2 * SIZE} px, the only ones a draft at "
            f"{SIZE} px can shrink")
    return {"ms_per_image": ms, "images_a_draft_can_shrink": reduced}


def main() -> None:
    from artlab.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levers", action="store_true", help="also measure each lever alone")
    args = parser.parse_args()
    paths = sample_paths(args.images)
    print(f"{len(paths)} People-Art JPEGs, MobileNetV2 at {SIZE} px, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")
    for path in paths:  # read every file once, so the OS file cache favours neither side
        Path(path).read_bytes()
    report = {"images": len(paths), "repeats": args.repeats, "torch": torch.__version__,
              "threads": torch.get_num_threads(), **headline(paths, args.repeats)}
    if args.levers:
        report["levers"] = {"network": network_levers(paths, args.repeats),
                            "workers": worker_lever(paths, args.repeats), "draft": draft_lever(paths, args.repeats),
                            "compile": compile_lever(paths, args.repeats)}
    fresh_cache()  # removes the last empty cache
    shutil.rmtree(os.environ["ARTLAB_CACHE"], ignore_errors=True)
    out = HERE / "results" / "forward-speed.json"
    write_json(out, report)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
