"""Pooled activations of named layers, with an on-disk cache (off-the-shelf probes, collection maps).

The cache key is (weights, layer, image size, pooling, image set); an image set is identified by
each file's path, size and modification time, so an edited image invalidates its entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from artlab import models
from artlab.cache import cache_dir, fingerprint
from artlab.data.loading import ImageDataset, loader
from artlab.io import DamagedFile, load_tensors, save_tensors


@torch.no_grad()
def extract(model: nn.Module, paths: list[str], layers: list[str], image_size: int, device: torch.device,
            batch_size: int = 64, pool: str = "avg", desc: str = "features") -> dict[str, np.ndarray]:
    """Pooled activations of `layers` for every image, as float32 arrays (n_images, channels).

    The row of an image that could not be read is NaN (see `unreadable_rows`).
    """
    model.eval().to(device)
    dataset = ImageDataset(paths, None, image_size, models.input_transform(model, image_size), keep=False)
    out: dict[str, np.ndarray] = {}
    with models.Taps(model, layers, pool) as taps:
        for batch in tqdm(loader(dataset, batch_size), desc=desc, unit="batch", leave=False):
            if batch is None:
                continue
            x, rows = batch
            for name, output in taps(x.to(device)).items():
                values = output.float().cpu().numpy()
                if name not in out:
                    out[name] = np.full((len(paths), values.shape[1]), np.nan, dtype=np.float32)
                out[name][rows.numpy()] = values
    if not out:
        raise ValueError(f"none of the {len(paths)} images could be read: {dict(list(dataset.failures.items())[:3])}")
    return out


def unreadable_rows(features: np.ndarray) -> np.ndarray:
    """Rows of `extract`'s output whose image could not be read (all NaN)."""
    return np.isnan(features).all(axis=1) if features.size else np.zeros(len(features), dtype=bool)


def cache_key(weights_id: str, layer: str, image_size: int, paths: list[str], pooling: str = "avg") -> str:
    """A stable key for one (weights, layer, image size, pooling, image set) combination."""
    spec = json.dumps({"weights": weights_id, "layer": layer, "size": image_size, "pool": pooling,
                       "images": fingerprint(paths), "version": 1}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def features_dir() -> Path:
    return cache_dir() / "features"


def cached_features(build_model: Callable[[], nn.Module], weights_id: str, layer: str, paths: list[str],
                    image_size: int, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Features of `layer` for `paths`: from the cache when present, else computed once and stored.

    `build_model` is only called on a cache miss, so a cached probe never builds or runs the network.
    """
    path = features_dir() / f"{cache_key(weights_id, layer, image_size, paths)}.safetensors"
    if path.is_file():
        try:
            features = load_tensors(path)[0]["features"].numpy()
            if features.shape[0] == len(paths):
                return features
        except (DamagedFile, KeyError):  # a damaged cache entry is recomputed, never trusted
            pass
    features = extract(build_model(), paths, [layer], image_size, device, batch_size, desc=f"features {layer}")[layer]
    if not unreadable_rows(features).any():  # only complete feature sets are cached
        save_tensors(path, {"features": torch.from_numpy(features)},
                     {"weights": weights_id, "layer": layer, "image_size": str(image_size),
                      "n_images": str(len(paths))})
    return features
