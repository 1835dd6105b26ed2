"""Benchmark: fine-tuning epochs of artlab against a plain PyTorch loop, on 1,000 People-Art images.

    python benchmarks/finetune_speed.py [--images 1000] [--repeats 3] [--levers]

The baseline is the loop a notebook would write: torchvision's MobileNetV2 (ImageNet weights, new
head) in train mode, PIL + torchvision transforms, DataLoaders with batch 64, SGD with momentum
(head lr 0.01, backbone lr 0.001), cosine schedule, the best validation epoch kept. artlab trains
the same network with the same settings through `artlab.training.train` (batch 64). Both see the
same images at 128 px with one fixed 70/15/15 split (10 largest styles), and an epoch is a pass
over the training images plus one over the validation images.

  (a) the whole network, usual augmentation (random resized crops and flips)      target: 1.5x
  (b) the first 14 blocks frozen (features.0-13), no augmentation (centre crops):   target: 3x
      the plain loop with the same freezing against artlab's frozen-prefix cache; artlab's first
      epoch includes computing and storing the cache, so first and later epochs are shown apart
  (c) the test accuracy of (b) both ways; the repetitions use seeds 0, 1, 2 (the noise)

Each figure is the median of `--repeats` repetitions, baseline and artlab alternating, each
artlab run with an empty ARTLAB_CACHE (nothing decoded, nothing cached). `--levers` measures what
each change contributes (channels_last, a decoding worker, augmenting flips and normalisation per
batch; `--lever-repeats` times). Results go to benchmarks/results/finetune-speed.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

HERE = Path(__file__).resolve().parent
PEOPLEART = HERE.parent.parent / "shared" / "data" / "peopleart"
SIZE, BATCH, FREEZE, LR, MULT = 128, 64, 14, 0.01, 0.1
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EPOCHS = {"a": 2, "b": 3}


def sample_manifest(n: int, folder: Path) -> Path:
    """`n` JPEGs of the 10 largest People-Art styles (a fixed sample), with a fixed stratified 70/15/15 split."""
    from sklearn.model_selection import train_test_split

    from artlab.data import load

    table = load(PEOPLEART).table
    table = table[table["path"].str.lower().str.endswith((".jpg", ".jpeg"))]
    table = table[table["style"].isin(table["style"].value_counts().index[:10])]
    table = table.sample(n=min(n, len(table)), random_state=0).reset_index(drop=True)
    train, rest = train_test_split(table.index, test_size=0.3, stratify=table["style"], random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=table.loc[rest, "style"], random_state=0)
    table["split"] = ""
    for part, rows in (("train", train), ("val", val), ("test", test)):
        table.loc[rows, "split"] = part
    folder.mkdir(parents=True, exist_ok=True)
    table[["path", "style", "split"]].to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


# ---- the plain baseline -------------------------------------------------------------------------------------
class PlainImages(Dataset):
    """What a notebook writes: PIL open, convert to RGB, torchvision's classic transforms, every epoch."""

    def __init__(self, paths: list[str], labels: np.ndarray, augment: bool):
        self.paths, self.labels = paths, labels
        crops = ([T.RandomResizedCrop(SIZE, scale=(0.5, 1.0)), T.RandomHorizontalFlip()] if augment
                 else [T.Resize(SIZE), T.CenterCrop(SIZE)])
        self.transform = T.Compose([*crops, T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.open(self.paths[index]).convert("RGB")), int(self.labels[index])


@torch.no_grad()
def plain_accuracy(model: nn.Module, data: DataLoader) -> float:
    model.eval()
    hits = total = 0
    for x, y in data:
        hits += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return hits / total


def plain_run(manifest: Path, freeze: int, augment: bool, epochs: int, seed: int) -> dict:
    """Train as a notebook would; seconds per epoch (train + validation), total, test accuracy of the best epoch."""
    from artlab import models

    start = time.perf_counter()
    table = pd.read_csv(manifest)
    classes = sorted(table["style"].unique())
    part = {p: table[table["split"] == p] for p in ("train", "val", "test")}
    labels = {p: frame["style"].map(classes.index).to_numpy() for p, frame in part.items()}
    torch.manual_seed(seed)
    models.build("mobilenet_v2")  # puts the offline ImageNet file into torch's hub cache
    model = torchvision.models.mobilenet_v2(weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    model.classifier[1] = nn.Linear(model.last_channel, len(classes))
    frozen = model.features[:freeze]
    for param in frozen.parameters():
        param.requires_grad_(False)
    head = list(model.classifier.parameters())
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier")]
    optimizer = torch.optim.SGD([{"params": head, "lr": LR}, {"params": body, "lr": LR * MULT}], lr=LR,
                                momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    train = DataLoader(PlainImages(part["train"]["path"].tolist(), labels["train"], augment), batch_size=BATCH,
                       shuffle=True)
    val, test = (DataLoader(PlainImages(part[p]["path"].tolist(), labels[p], False), batch_size=BATCH)
                 for p in ("val", "test"))
    seconds, best = [], (-1.0, None)
    for _ in range(epochs):
        epoch_start = time.perf_counter()
        model.train()
        frozen.eval()  # frozen blocks keep their ImageNet BatchNorm statistics, as in artlab
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        score = plain_accuracy(model, val)
        scheduler.step()
        if score > best[0]:
            best = (score, copy.deepcopy(model.state_dict()))
        seconds.append(time.perf_counter() - epoch_start)
    model.load_state_dict(best[1])
    accuracy = plain_accuracy(model, test)
    return {"epochs": seconds, "total": time.perf_counter() - start, "accuracy": accuracy}


# ---- artlab -------------------------------------------------------------------------------------------------
_SPANS: list[tuple[str, float]] = []
_CACHES: list[str] = []  # each artlab run's ARTLAB_CACHE, newest last


def _timed(name: str, function: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            label = kwargs.get("desc", name) if name == "predict" else name
            _SPANS.append((label, time.perf_counter() - start))
    return wrapper


def instrument() -> None:
    """Record how long artlab's epochs, validations and input preparation (the prefix cache) take."""
    from artlab.training import loops

    for name in ("_train_epoch", "predict", "training_inputs"):
        setattr(loops, name, _timed(name, getattr(loops, name)))


def artlab_run(manifest: Path, freeze: int, augment: bool, epochs: int, seed: int, runs: Path,
               cache: str | None = None, **overrides) -> dict:
    """artlab.training.train on the same images and split (a fresh ARTLAB_CACHE unless `cache` is given)."""
    from artlab.training import TrainConfig, train

    os.environ["ARTLAB_CACHE"] = cache or tempfile.mkdtemp(prefix="artlab-bench-", dir=runs)
    _CACHES.append(os.environ["ARTLAB_CACHE"])
    config = TrainConfig(data=str(manifest), task="style", image_size=SIZE, epochs=epochs, batch_size=BATCH,
                         freeze=freeze, augment=augment, seed=seed, lr=LR, backbone_lr_mult=MULT, device="cpu",
                         name=f"r{len(list(runs.iterdir()))}", **overrides)
    _SPANS.clear()
    start = time.perf_counter()
    result = train(config, runs_dir=runs)
    total = time.perf_counter() - start
    trains = [s for name, s in _SPANS if name == "_train_epoch"]
    validations = [s for name, s in _SPANS if name == "validating"]
    inputs = sum(s for name, s in _SPANS if name == "training_inputs")
    seconds = [t + v for t, v in zip(trains, validations)]
    seconds[0] += inputs  # the first epoch pays for preparing its inputs (the frozen-prefix cache)
    return {"epochs": seconds, "inputs": inputs, "total": total, "accuracy": result.metrics["accuracy"]}


# ---- the comparisons ----------------------------------------------------------------------------------------
def later(seconds: list[float]) -> float:
    """Mean seconds of the epochs after the first."""
    return statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]


def summary(runs: list[dict]) -> dict:
    return {"first_epoch_s": statistics.median(r["epochs"][0] for r in runs),
            "later_epoch_s": statistics.median(later(r["epochs"]) for r in runs),
            "total_s": statistics.median(r["total"] for r in runs),
            "accuracy": [r["accuracy"] for r in runs]}


def compare(label: str, manifest: Path, runs: Path, repeats: int, freeze: int, augment: bool, epochs: int,
            n_train: int) -> dict:
    """Plain loop and artlab alternating, seeds 0..repeats-1; medians, ratios and accuracies."""
    results: dict[str, list[dict]] = {"baseline": [], "artlab": []}
    for seed in range(repeats):
        results["baseline"].append(plain_run(manifest, freeze, augment, epochs, seed))
        results["artlab"].append(artlab_run(manifest, freeze, augment, epochs, seed, runs))
        print(f"  repetition {seed + 1}: baseline {results['baseline'][-1]['epochs']}, "
              f"artlab {results['artlab'][-1]['epochs']} s per epoch", flush=True)
    base, ours = summary(results["baseline"]), summary(results["artlab"])
    print(f"\n{label} (median of {repeats}, {epochs} epochs, {n_train} training images):")
    for name, key in (("first epoch", "first_epoch_s"), ("later epochs", "later_epoch_s"), ("whole run", "total_s")):
        print(f"  {name:13s} baseline {base[key]:6.1f} s ({n_train / base[key]:5.1f} img/s)   artlab "
              f"{ours[key]:6.1f} s ({n_train / ours[key]:5.1f} img/s)   = {base[key] / ours[key]:5.2f}x")
    for name, figures in (("baseline", base), ("artlab", ours)):
        accuracy = figures["accuracy"]
        spread = np.std(accuracy, ddof=1) if len(accuracy) > 1 else 0.0
        print(f"  test accuracy {name:8s} {np.mean(accuracy):.3f} +- {spread:.3f} "
              f"(seeds: {', '.join(f'{a:.3f}' for a in accuracy)})")
    return {"baseline": base, "artlab": ours, "runs": results,
            "ratios": {k: base[k] / ours[k] for k in ("first_epoch_s", "later_epoch_s", "total_s")}}


def warm_start(manifest: Path, runs: Path, cache: str, epochs: int) -> dict:
    """(b) again with the cache the last repetition left: a second run (another seed, lr...) reuses it."""
    run = artlab_run(manifest, FREEZE, False, epochs, 7, runs, cache=cache)
    print(f"  artlab, frozen-prefix cache already on disk: first epoch {run['epochs'][0]:.1f} s "
          f"(loading the cache {run['inputs']:.2f} s), whole run {run['total']:.1f} s")
    return run


# ---- levers, one at a time ----------------------------------------------------------------------------------
def levers(manifest: Path, runs: Path, repeats: int) -> dict:
    """What each change contributes: artlab with it and without it, same seed, alternating."""
    from artlab.training import loops

    keep = loops.CHANNELS_LAST

    def without_channels_last(augment: bool, freeze: int, epochs: int) -> dict:
        loops.CHANNELS_LAST = ()
        try:
            return artlab_run(manifest, freeze, augment, epochs, 0, runs)
        finally:
            loops.CHANNELS_LAST = keep

    variants = {
        "(a) artlab": lambda: artlab_run(manifest, 0, True, 2, 0, runs),
        "(a) without channels_last": lambda: without_channels_last(True, 0, 2),
        "(a) one decoding worker": lambda: artlab_run(manifest, 0, True, 2, 0, runs, num_workers=1),
        "(b) artlab": lambda: artlab_run(manifest, FREEZE, False, 3, 0, runs),
        "(b) without channels_last": lambda: without_channels_last(False, FREEZE, 3),
    }
    seconds: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, function in variants.items():
            seconds[name].append(function())
    report = {}
    print(f"\nlevers (median of {repeats}; seconds per epoch after the first, whole run):")
    for name, results in seconds.items():
        report[name] = summary(results)
        print(f"  {name:28s} later epochs {report[name]['later_epoch_s']:6.2f} s   whole run "
              f"{report[name]['total_s']:6.1f} s")
    report["augmentation"] = augmentation_lever(manifest, repeats)
    return report


def augmentation_lever(manifest: Path, repeats: int) -> dict:
    """ms per image: artlab's per-image transform vs crops per image with flips and normalisation per batch."""
    from artlab import models
    from artlab.data import ImageDataset

    paths = pd.read_csv(manifest).query("split == 'train'")["path"].tolist()[:512]
    model = models.build("mobilenet_v2")
    dataset = ImageDataset(paths, None, SIZE, models.input_transform(model, SIZE, train=True), train=True)
    images = [dataset.image(i) for i in range(len(paths))]
    per_image = models.input_transform(model, SIZE, train=True)
    crop = T.RandomResizedCrop(SIZE, scale=(0.5, 1.0), antialias=True)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1) * 255, torch.tensor(STD).view(1, 3, 1, 1) * 255

    def per_image_pass():
        for start in range(0, len(images), BATCH):
            torch.stack([per_image(image) for image in images[start:start + BATCH]])

    def batched_pass():
        for start in range(0, len(images), BATCH):
            batch = torch.stack([crop(image) for image in images[start:start + BATCH]])
            flip = torch.rand(len(batch)) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
            batch.float().sub_(mean).div_(std)

    ms = {}
    for name, function in (("per image (artlab)", per_image_pass), ("flips + normalisation per batch", batched_pass)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        ms[name] = 1000 * statistics.median(times) / len(images)
    print("  augmentation of decoded images: " + ", ".join(f"{k} {v:.3f} ms/image" for k, v in ms.items()))
    return {"ms_per_image": ms}


def main() -> None:
    from artlab.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levers", action="store_true", help="also measure what each change contributes")
    parser.add_argument("--lever-repeats", type=int, default=1, help="repetitions of each lever (default 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="artlab-finetune-speed-"))
    runs = work / "runs"
    runs.mkdir()
    try:
        manifest = sample_manifest(args.images, work / "data")
        table = pd.read_csv(manifest)
        n_train = int((table["split"] == "train").sum())
        for path in table["path"]:  # read every file once, so the OS file cache favours neither side
            Path(path).read_bytes()
        print(f"{len(table)} People-Art JPEGs (10 styles; {n_train} train, {int((table['split'] == 'val').sum())} "
              f"val, {int((table['split'] == 'test').sum())} test), MobileNetV2 at {SIZE} px, batch {BATCH}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores", flush=True)
        instrument()
        report = {"images": len(table), "repeats": args.repeats, "torch": torch.__version__,
                  "threads": torch.get_num_threads(), "epochs": EPOCHS}
        print("\n(a) the whole network, random crops and flips", flush=True)
        report["a_full_network_augmented"] = compare("(a) full network with augmentation", manifest, runs,
                                                     args.repeats, 0, True, EPOCHS["a"], n_train)
        print(f"\n(b) first {FREEZE} blocks frozen, centre crops", flush=True)
        report["b_freeze14_no_augmentation"] = compare(f"(b) freeze {FREEZE}, no augmentation", manifest, runs,
                                                       args.repeats, FREEZE, False, EPOCHS["b"], n_train)
        report["b_warm_cache"] = warm_start(manifest, runs, _CACHES[-1], EPOCHS["b"])
        if args.levers:
            report["levers"] = levers(manifest, runs, args.lever_repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = HERE / "results" / "finetune-speed.json"
    write_json(out, report)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
