"""Fine-tuning the last blocks from a cached output of the frozen first ones.

With the first k blocks frozen (in eval mode) and no random augmentation, what those blocks
compute from an image never changes between epochs. `fit` then computes it once per training and
validation image, keeps it on disk (keyed like the feature cache: the frozen blocks' weights, k,
image size and each file's signature) and trains only the later blocks on it: the network skips
its first k blocks (`Suffix`) and takes their cached output as input. Exact for architectures whose
forward is a plain chain of their blocks (`Arch.chain`); the network trained and saved is the
whole one. benchmarks/finetune_speed.py measures what it saves.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from artlab import models
from artlab.cache import cache_dir, digest, fingerprint, load_checked, save_checked, tensors_digest
from artlab.data import decoded
from artlab.data.loading import ImageDataset, loader
from artlab.io import load_tensors, save_tensors
from artlab.progress import progress
from artlab.training.config import TrainConfig

#: Cached outputs (training and validation images together) beyond this take the normal path.
MAX_BYTES = 2 << 30
#: Images per forward pass of the frozen blocks: on 2 CPU cores 32 runs 1.5-2x faster per image than 128
#: (the activations stay in the processor's cache).
BATCH = 32
VERSION = 1


def prefix_names(model: nn.Module, k: int) -> list[str]:
    """The top-level module names of the network's first `k` blocks, in forward order."""
    return [name for block in models.arch_of(model).blocks[:k] for name in block]


def why_not_cached(config: TrainConfig, model: nn.Module, n_images: int) -> str | None:
    """Why the frozen blocks of this run must run at every step (one line for the log); None when their output
    can be cached. Only asked when `config.freeze >= 1`."""
    spec = models.arch_of(model)
    if config.augment:
        return (f"frozen-prefix cache off: random crops and flips change the output of the {config.freeze} frozen "
                f"blocks every epoch, so they run at every step; --no-augment (augment=False) computes it once "
                f"and trains only the later blocks")
    if not spec.chain:
        return (f"frozen-prefix cache off: {spec.name}'s forward is not a plain chain of its blocks (it re-scales its "
                f"input first), so its {config.freeze} frozen blocks run at every step")
    size = n_images * math.prod(output_shape(model, config.freeze, config.image_size)) * 4
    if size > MAX_BYTES:
        return (f"frozen-prefix cache off: the output of the {config.freeze} frozen blocks would take "
                f"{size / 2**30:.1f} GiB for {n_images} images (limit {MAX_BYTES / 2**30:.0f} GiB); freeze more "
                f"blocks or use smaller images")
    return None


def prefix_network(model: nn.Module, k: int) -> nn.Sequential:
    """The first `k` blocks as one module, in eval mode (the network's own modules, not copies)."""
    return nn.Sequential(*(model.get_submodule(name) for name in prefix_names(model, k))).eval()


@torch.no_grad()
def output_shape(model: nn.Module, k: int, image_size: int) -> torch.Size:
    """The shape of one image's output of the first `k` blocks."""
    device = next(model.parameters()).device
    return prefix_network(model, k)(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1:]


class Suffix(nn.Module):
    """The network without its first `k` blocks: its input is their output. Every call skips them (they are
    swapped for identities during the call only), so the network itself stays whole (state_dict, saving)."""

    def __init__(self, network: nn.Module, k: int):
        super().__init__()
        self.network = network
        self.slots = [_slot(network, name) for name in prefix_names(network, k)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _skipped(self.slots):
            return self.network(x)


def _slot(network: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, leaf = name.rpartition(".")
    return (network.get_submodule(parent) if parent else network), leaf


@contextmanager
def _skipped(slots: list[tuple[nn.Module, str]]):
    """Replace the modules at `slots` by identities for the duration of the block."""
    originals = [parent._modules[leaf] for parent, leaf in slots]
    identity = nn.Identity()
    for parent, leaf in slots:
        parent._modules[leaf] = identity
    try:
        yield
    finally:
        for (parent, leaf), module in zip(slots, originals):
            parent._modules[leaf] = module


class PrefixOutputs(Dataset):
    """The frozen blocks' output per image, as ImageDataset gives images: (output, target), or (output, index)
    without targets; None for an image that could not be read (listed in `failures`)."""

    def __init__(self, outputs: torch.Tensor, present: np.ndarray, targets: np.ndarray | None,
                 failures: dict[str, str]):
        self.outputs, self.present, self.targets, self.failures = outputs, present, targets, failures

    def __len__(self) -> int:
        return len(self.outputs)

    def __getitem__(self, index: int):
        if not self.present[index]:
            return None
        return self.outputs[index], torch.as_tensor(index if self.targets is None else self.targets[index])


def cache_key(model: nn.Module, k: int, paths: list[str], image_size: int) -> str:
    """A stable key for one (frozen weights, k, image size, input normalisation, image set, decoder) combination."""
    spec = models.arch_of(model)
    return digest({"arch": spec.name, "weights": tensors_digest(prefix_network(model, k).state_dict()), "blocks": k,
                   "size": image_size, "mean": spec.mean, "std": spec.std, "images": fingerprint(paths),
                   "version": VERSION, "decode": decoded.DECODE_VERSION})


def prefix_dir() -> Path:
    return cache_dir() / "prefix"


def cached_outputs(model: nn.Module, k: int, paths: list[str], targets: np.ndarray | None, image_size: int,
                   device: torch.device, batch_size: int = BATCH) -> PrefixOutputs:
    """The first `k` blocks' output for `paths` (centre crops): from the disk cache, else computed once and stored.

    Only complete sets are stored: when an image cannot be read, this run gets the others' outputs and
    the failure, and the next run computes them again. A stored set is served only when its checksum
    matches and its values are finite; a damaged one is computed again, with one warning line.
    """
    path = prefix_dir() / f"{cache_key(model, k, paths, image_size)}.safetensors"
    what = f"outputs of frozen blocks 1-{k} for {len(paths)} images"
    if path.is_file():
        entry = load_checked(path, what, load_tensors)
        outputs = entry.get("outputs") if entry is not None else None
        if outputs is not None and len(outputs) == len(paths):
            return PrefixOutputs(outputs, np.ones(len(paths), dtype=bool), targets, {})
    outputs, present, failures = compute_outputs(model, k, paths, image_size, device, batch_size)
    if present.all():
        try:
            save_checked(path, {"outputs": outputs}, {"arch": models.arch_of(model).name, "blocks": str(k),
                                                      "image_size": str(image_size), "n_images": str(len(paths))},
                         what, save_tensors)
        except OSError as exc:  # the cache is an optimisation: a full or read-only disk does not stop training
            warnings.warn(f"the frozen-prefix cache could not be written to {path} ({exc}); this run trains on "
                          f"the outputs computed now, the next computes them again", RuntimeWarning, stacklevel=2)
    return PrefixOutputs(outputs, present, targets, failures)


@torch.no_grad()
def compute_outputs(model: nn.Module, k: int, paths: list[str], image_size: int, device: torch.device,
                    batch_size: int) -> tuple[torch.Tensor, np.ndarray, dict[str, str]]:
    """Run the first `k` blocks (eval mode) on every image's centre crop; (outputs, readable mask, failures)."""
    prefix = prefix_network(model, k)
    dataset = ImageDataset(paths, None, image_size, models.input_transform(model, image_size), keep=False)
    outputs = torch.zeros(len(paths), *output_shape(model, k, image_size))
    present = np.zeros(len(paths), dtype=bool)
    for batch in progress(loader(dataset, batch_size), desc=f"frozen blocks 1-{k}", unit="batch", leave=False):
        if batch is not None:
            x, rows = batch
            outputs[rows] = prefix(x.to(device, non_blocking=True)).float().cpu()
            present[rows.numpy()] = True
    return outputs, present, dict(dataset.failures)
