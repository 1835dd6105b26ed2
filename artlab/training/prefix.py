"""Fine-tuning the last blocks from a cached output of the frozen first ones.

With the first k blocks frozen (in eval mode), what those blocks compute from a given crop of an
image never changes. `fit` then computes it once, keeps it on disk and trains only the later
blocks on it: the network skips its first k blocks (`Suffix`) and takes their cached output as
input. Validation images, and training images without augmentation, have one entry (the centre
crop). With augmentation, each training image has `TrainConfig.cached_views` entries, random
crops and flips drawn once (each image's own seeded draws, so a view never depends on which other
images were computed with it); each epoch draws one of them per image.

Entries are stored per image (keyed by its path and file signature) in one store per frozen
network (its weights, k, image size, views), so another split, seed or subset of the same
collection reuses what was computed. Exact for architectures whose forward is a plain chain of
their blocks (`Arch.chain`); the network trained and saved is the whole one.
benchmarks/finetune_speed.py measures what it saves; benchmarks/README ("Augmentation with a frozen
prefix") compares cached views with a new crop at every step.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from artlab import models
from artlab.cache import cache_dir, content_id, digest, load_checked, save_checked, tensors_digest
from artlab.data import decoded
from artlab.data.images import ImageError
from artlab.data.loading import ImageDataset, loader
from artlab.io import load_tensors, save_tensors
from artlab.progress import progress
from artlab.training.config import TrainConfig

#: Cached outputs (training views and validation images together) beyond this take the normal path.
MAX_BYTES = 3 << 30
#: Images per forward pass of the frozen blocks: on 2 CPU cores 32 runs 1.5-2x faster per image than 128
#: (the activations stay in the processor's cache).
BATCH = 32
VERSION = 2  # 2: one store per frozen network, entries per image, augmented views


def prefix_names(model: nn.Module, k: int) -> list[str]:
    """The top-level module names of the network's first `k` blocks, in forward order."""
    return [name for block in models.arch_of(model).blocks[:k] for name in block]


def why_not_cached(config: TrainConfig, model: nn.Module, n_train: int, n_val: int) -> str | None:
    """Why the frozen blocks of this run must run at every step (one line for the log); None when their output
    can be cached. Only asked when `config.freeze >= 1`."""
    spec = models.arch_of(model)
    if config.augment and not config.cached_views:
        return (f"frozen-prefix cache off: augment_views=0 asks for a new random crop of every training image at "
                f"every step, so the {config.freeze} frozen blocks run at every step; --augment-views N caches N "
                f"crops of each image, --no-augment its centre crop")
    if not spec.chain:
        return (f"frozen-prefix cache off: {spec.name}'s forward is not a plain chain of its blocks (it re-scales its "
                f"input first), so its {config.freeze} frozen blocks run at every step")
    entries = n_train * max(config.cached_views, 1) + n_val
    size = entries * math.prod(output_shape(model, config.freeze, config.image_size)) * 4
    if size > MAX_BYTES:
        return (f"frozen-prefix cache off: the output of the {config.freeze} frozen blocks would take "
                f"{size / 2**30:.1f} GiB for {entries} crops (limit {MAX_BYTES / 2**30:.0f} GiB); freeze more "
                f"blocks, use smaller images or fewer --augment-views")
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
    without targets; None for an image that could not be read (listed in `failures`). With views (`outputs` of
    shape [images, views, ...]), each item is one view drawn with torch's random generator (seeded per epoch)."""

    def __init__(self, outputs: torch.Tensor, present: np.ndarray, targets: np.ndarray | None,
                 failures: dict[str, str], views: int = 0):
        self.outputs, self.present, self.targets, self.failures = outputs, present, targets, failures
        self.views = views

    def __len__(self) -> int:
        return len(self.outputs)

    def __getitem__(self, index: int):
        if not self.present[index]:
            return None
        output = self.outputs[index, int(torch.randint(self.views, ()))] if self.views else self.outputs[index]
        return output, torch.as_tensor(index if self.targets is None else self.targets[index])


def store_key(model: nn.Module, k: int, image_size: int, views: int) -> str:
    """The name of one frozen network's store: its weights, k, image size, input normalisation, views, decoder."""
    spec = models.arch_of(model)
    return digest({"arch": spec.name, "weights": tensors_digest(prefix_network(model, k).state_dict()), "blocks": k,
                   "size": image_size, "mean": spec.mean, "std": spec.std, "views": views,
                   "crops": VIEW_CROPS if views else None, "version": VERSION, "decode": decoded.DECODE_VERSION})


#: What an augmented view is (part of the store's key): torchvision's RandomResizedCrop and flip of
#: `models.input_transform(train=True)`, from the image stored `loading.TRAIN_MARGIN` larger than the crop.
VIEW_CROPS = "random-resized-crop(0.5-1)+hflip, margin 1.15"


def image_keys(paths: list[str]) -> list[bytes]:
    """Each image's key in a store: its content (`cache.content_id`), wherever it lies; an edited file gets a new
    key, a moved or copied one keeps its own."""
    keys = []
    for path in paths:
        try:
            content = content_id(path)
        except OSError:
            content = f"unreadable\0{path}"
        keys.append(hashlib.sha1(content.encode()).digest())
    return keys


def prefix_dir() -> Path:
    return cache_dir() / "prefix"


def cached_outputs(model: nn.Module, k: int, paths: list[str], targets: np.ndarray | None, image_size: int,
                   device: torch.device, views: int = 0, batch_size: int = BATCH) -> PrefixOutputs:
    """The first `k` blocks' output for `paths`: centre crops, or `views` augmented crops of each; the images
    already in the store are read from it, the others computed and added.

    A store is a folder of SHARDS files (an image's shard: the first byte of its key), read and written
    one at a time, so memory holds this run's outputs and one shard, never the whole store twice.
    A shard is served only when its checksum matches and its values are finite; a damaged one is
    computed again, with one warning line. An image that cannot be read gets no entry: this run
    trains without it (listed in `failures`), the next tries it again.
    """
    folder = prefix_dir() / store_key(model, k, image_size, views)
    what = f"outputs of frozen blocks 1-{k}" + (f" ({views} views an image)" if views else "")
    keys = image_keys(paths)
    outputs = torch.empty(len(paths), *((views,) if views else ()), *output_shape(model, k, image_size))
    present = np.zeros(len(paths), dtype=bool)
    unusable: set[int] = set()  # shards on disk that failed their check: rewritten, not merged
    for shard, indices in _by_shard(keys).items():
        stored_keys, stored = _read_store(folder / f"{shard:02x}.safetensors", what)
        if not stored_keys and (folder / f"{shard:02x}.safetensors").is_file():
            unusable.add(shard)
        row_of = {key: row for row, key in enumerate(stored_keys)}
        rows = np.array([row_of.get(keys[i], -1) for i in indices], dtype=np.int64)
        found = rows >= 0
        if found.any():
            outputs[torch.from_numpy(indices[found])] = stored[torch.from_numpy(rows[found])]
            present[indices[found]] = True
    missing = np.flatnonzero(~present)
    failures: dict[str, str] = {}
    if len(missing):
        new, done, failures = compute_outputs(model, k, [paths[i] for i in missing], image_size, device, batch_size,
                                              views, [keys[i] for i in missing])
        outputs[torch.from_numpy(missing)] = new
        present[missing] = done
        added = missing[done]
        metadata = {"arch": models.arch_of(model).name, "blocks": str(k), "image_size": str(image_size),
                    "views": str(views)}
        for shard, indices in _by_shard([keys[i] for i in added]).items():
            if not _add_to_store(folder / f"{shard:02x}.safetensors", [keys[i] for i in added[indices]],
                                 outputs[torch.from_numpy(added[indices])], what, metadata, shard not in unusable):
                break  # one warning is enough: the disk refuses
    return PrefixOutputs(outputs, present, targets, failures, views)


#: Files a store is split into (by the first byte of each image's key).
SHARDS = 16


def _by_shard(keys: list[bytes]) -> dict[int, np.ndarray]:
    """The positions of `keys` in each shard they fall in."""
    shards = np.array([key[0] % SHARDS for key in keys], dtype=np.int64)
    return {int(shard): np.flatnonzero(shards == shard) for shard in np.unique(shards)}


def _read_store(path: Path, what: str) -> tuple[list[bytes], torch.Tensor]:
    """The keys and outputs of a store's shard (none when it is absent or fails its check)."""
    entry = load_checked(path, what, load_tensors) if path.is_file() else None
    if entry is None or "keys" not in entry or "outputs" not in entry or len(entry["keys"]) != len(entry["outputs"]):
        return [], torch.empty(0)
    return [bytes(row) for row in entry["keys"].numpy()], entry["outputs"]


def _add_to_store(path: Path, keys: list[bytes], outputs: torch.Tensor, what: str, metadata: dict[str, str],
                  merge: bool = True) -> bool:
    """Add entries to a store's shard (`merge`; else replace what it held), atomically; whether the disk took it
    (one that refuses only costs the next run a recomputation)."""
    stored_keys, stored = _read_store(path, what) if merge else ([], torch.empty(0))
    if stored_keys:
        keys, outputs = stored_keys + keys, torch.cat([stored, outputs])
    key_tensor = torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1).copy())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checked(path, {"keys": key_tensor, "outputs": outputs}, metadata | {"n_images": str(len(keys))},
                     what, save_tensors)
    except OSError as exc:  # the cache is an optimisation: a full or read-only disk does not stop training
        warnings.warn(f"the frozen-prefix cache could not be written to {path} ({exc}); this run trains on "
                      f"the outputs computed now, the next computes them again", RuntimeWarning, stacklevel=3)
        return False
    return True


@torch.no_grad()
def compute_outputs(model: nn.Module, k: int, paths: list[str], image_size: int, device: torch.device,
                    batch_size: int, views: int = 0, keys: list[bytes] | None = None,
                    ) -> tuple[torch.Tensor, np.ndarray, dict[str, str]]:
    """Run the first `k` blocks (eval mode) on every image's centre crop, or on `views` augmented crops of each
    (drawn from a generator seeded by the image's key and the view); (outputs, readable mask, failures)."""
    prefix = prefix_network(model, k)
    train = views > 0
    dataset = ImageDataset(paths, None, image_size, models.input_transform(model, image_size, train=train),
                           train=train, keep=False)
    shape = output_shape(model, k, image_size)
    outputs = torch.zeros(len(paths), *((views,) if train else ()), *shape)
    present = np.zeros(len(paths), dtype=bool)
    if not train:
        for batch in progress(loader(dataset, batch_size), desc=f"frozen blocks 1-{k}", unit="batch", leave=False):
            if batch is not None:
                x, rows = batch
                outputs[rows] = prefix(x.to(device, non_blocking=True)).float().cpu()
                present[rows.numpy()] = True
        return outputs, present, dict(dataset.failures)
    keys = keys if keys is not None else image_keys(paths)
    crops, where = [], []
    for index in progress(range(len(paths)), desc=f"frozen blocks 1-{k}, {views} views", unit="img", leave=False):
        for view, crop in enumerate(_views(dataset, index, views, keys[index])):
            crops.append(crop)
            where.append((index, view))
            present[index] = True
        if len(crops) >= batch_size or (index == len(paths) - 1 and crops):
            x = torch.stack(crops).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            out = prefix(x).float().cpu()
            for (row, view), value in zip(where, out):
                outputs[row, view] = value
            crops, where = [], []
    return outputs, present, dict(dataset.failures)


def _views(dataset: ImageDataset, index: int, views: int, key: bytes) -> list[torch.Tensor]:
    """`views` augmented crops of one image, each from a generator seeded by the image's key and the view (torch's
    global generator is left as it was); none when the image cannot be read."""
    try:
        image = dataset.image(index)
    except ImageError as exc:
        dataset.failures[dataset.paths[index]] = exc.reason
        return []
    crops = []
    with torch.random.fork_rng(devices=[]):
        for view in range(views):
            torch.manual_seed(int.from_bytes(key[:7], "little") * 64 + view)
            crops.append(dataset.transform(image))
    return crops
