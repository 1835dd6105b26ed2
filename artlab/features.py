"""Pooled activations of named layers, with an on-disk cache (off-the-shelf probes, collection maps).

The cache key is (weights, layer, image size, pooling, image set); an image set is identified by
its files' contents in order (`artlab.data.standins.fingerprints`), so an edited image invalidates its entry
and a collection moved to another folder or machine keeps it (a workshop pack's shrunk stand-ins are served
their originals' features, `artlab.data.standins`). Each entry
carries a checksum of its values, checked on every read (a damaged entry is computed again).
`forward_pass` is the one loop every forward-only pass runs (features here, CKA and top-k in
artlab.analysis): images decoded once per batch (or read from the decoded-image cache), each
network as its fast inference copy, several networks and poolings fed from one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from artlab import models
from artlab.cache import cache_dir, digest, load_first_checked, save_checked
from artlab.data.loading import ImageDataset, loader
from artlab.data.standins import fingerprints
from artlab.io import load_tensors, save_tensors
from artlab.progress import progress


@dataclass
class Feed:
    """One network of a shared forward pass: the layers it taps and how their maps are pooled.

    `pool` is a registered pooling name, a function, or `models.pools(...)` to pool each map
    several ways at once (then each layer gives a dict of tensors).
    """

    name: str
    model: nn.Module
    layers: list[str]
    pool: str | Callable = "avg"
    pool_options: dict = field(default_factory=dict)


Outputs = dict[str, dict[str, Any]]  # feed name -> layer -> pooled tensor (or dict of them)


def forward_pass(feeds: list[Feed], paths: list[str], image_size: int, device: torch.device | str,
                 each: Callable[[torch.Tensor, Outputs], None], batch_size: int = 64, desc: str = "forward pass",
                 num_workers: int | None = None, compile: bool = False) -> ImageDataset:
    """Decode every batch of `paths` once and run each feed's network on it; `each(rows, outputs)` gets the
    batch's image indices and `{feed: {layer: pooled}}`. Returns the dataset (its `failures`).

    Each network runs as its fast inference copy (`models.for_inference`: BatchNorm folded,
    channels_last, optionally compiled) in inference mode, stopping after its last tapped layer;
    decoded images come from, and go to, the decoded-image cache. Unreadable images are left out.
    """
    device = torch.device(device)
    if len({id(feed.model) for feed in feeds}) != len(feeds):
        raise ValueError("each feed needs its own network (tap several layers of one network in one feed)")
    norms = {(tuple(models.arch_of(feed.model).mean), tuple(models.arch_of(feed.model).std)) for feed in feeds}
    if len(norms) != 1:
        raise ValueError("networks sharing a forward pass must expect the same input normalisation")
    dataset = ImageDataset(paths, None, image_size, models.input_transform(feeds[0].model, image_size), keep=False)
    batches = loader(dataset, batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    with ExitStack() as stack, torch.inference_mode():
        taps = {feed.name: stack.enter_context(models.Taps(
            models.for_inference(feed.model, device, keep=feed.layers, compile=compile), feed.layers, feed.pool,
            **feed.pool_options)) for feed in feeds}
        for batch in progress(batches, desc=desc, unit="batch", leave=False):
            if batch is None:
                continue
            x, rows = batch
            x = x.to(device, non_blocking=True)
            each(rows, {name: tap(x) for name, tap in taps.items()})
    return dataset


def extract(model: nn.Module, paths: list[str], layers: list[str], image_size: int, device: torch.device,
            batch_size: int = 64, pool: str = "avg", desc: str = "features", num_workers: int | None = None,
            compile: bool = False) -> dict[str, np.ndarray]:
    """Pooled activations of `layers` for every image, as float32 arrays (n_images, channels).

    The row of an image that could not be read is NaN (see `unreadable_rows`).
    """
    model.eval()
    out: dict[str, np.ndarray] = {}

    def store(rows: torch.Tensor, outputs: Outputs) -> None:
        for name, output in outputs["model"].items():
            values = output.float().cpu().numpy()
            if name not in out:
                out[name] = np.full((len(paths), values.shape[1]), np.nan, dtype=np.float32)
            out[name][rows.numpy()] = values

    dataset = forward_pass([Feed("model", model, layers, pool)], paths, image_size, device, store, batch_size, desc,
                           num_workers, compile)
    if not out:
        raise ValueError(f"none of the {len(paths)} images could be read: {dict(list(dataset.failures.items())[:3])}")
    return out


def unreadable_rows(features: np.ndarray) -> np.ndarray:
    """Rows of `extract`'s output whose image could not be read (all NaN)."""
    return np.isnan(features).all(axis=1) if features.size else np.zeros(len(features), dtype=bool)


def cache_key(weights_id: str, layer: str, image_size: int, images: str, pooling: str = "avg") -> str:
    """A stable key for one (weights, layer, image size, pooling, image set) combination; `images` is the image
    set's fingerprint (`standins.fingerprints`)."""
    return digest({"weights": weights_id, "layer": layer, "size": image_size, "pool": pooling,
                   "images": images, "version": 1})


def features_dir() -> Path:
    return cache_dir() / "features"


class NamedNetwork(Protocol):
    """A network known by its weights before it is built (`artlab.runs.Network` is one)."""

    weights_id: str

    def build(self) -> nn.Module: ...


def cached_features(network: NamedNetwork, layer: str, paths: list[str], image_size: int, device: torch.device,
                    batch_size: int = 64) -> np.ndarray:
    """Features of `layer` for `paths`: from the cache when present, else computed once and stored.

    The network is only built on a cache miss, so a cached probe never builds or runs it. An entry is
    served only when its checksum matches and its values are finite (`artlab.cache.load_checked`); a
    damaged one is computed again, with one warning line.
    """
    weights_id = network.weights_id
    entries = [features_dir() / f"{cache_key(weights_id, layer, image_size, images)}.safetensors"
               for images in fingerprints(paths)]  # stand-ins: their originals' features first
    what = f"features of {layer} for {len(paths)} images"
    entry = load_first_checked(entries, what, load_tensors)
    stored = entry.get("features") if entry is not None else None
    if stored is not None and stored.ndim == 2 and stored.shape[0] == len(paths):
        return stored.numpy()
    features = extract(network.build(), paths, [layer], image_size, device, batch_size, desc=f"features {layer}")[layer]
    if not unreadable_rows(features).any():  # only complete feature sets are cached (unreadable images are NaN rows)
        save_checked(entries[-1], {"features": torch.from_numpy(features)},
                     {"weights": weights_id, "layer": layer, "image_size": str(image_size),
                      "n_images": str(len(paths))}, what, save_tensors)
    return features
