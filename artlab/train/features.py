"""Activations of named layers, pooled, with an on-disk cache for off-the-shelf features.

The cache key is (weights, layer, image size, pooling, image set); an image set is identified by
each file's path, size and modification time, so an edited image invalidates its entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from artlab.cache import cache_dir, fingerprint
from artlab.data.loading import ImageDataset


class _Enough(Exception):
    """Raised by a hook once every requested layer has fired: the rest of the network is skipped."""


@contextmanager
def tapped(model: nn.Module, layers: list[str], reduce: Callable[[torch.Tensor], torch.Tensor],
           stop_early: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Collect `reduce(output)` of each named layer into the yielded dict on every forward pass."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    missing = [name for name in layers if name not in dict(model.named_modules())]
    if missing:
        raise KeyError(f"no layer(s) {missing} in this model")

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            outputs[name] = reduce(output)
            if stop_early and len(outputs) == len(layers):
                raise _Enough

        return hook

    for name in layers:
        handles.append(model.get_submodule(name).register_forward_hook(hook_for(name)))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def forward_taps(model: nn.Module, x: torch.Tensor, outputs: dict) -> dict[str, torch.Tensor]:
    """Run `model` on `x` inside `tapped`, stopping after the last wanted layer; returns the taps."""
    outputs.clear()
    try:
        model(x)
    except _Enough:
        pass
    return dict(outputs)


def global_average(output: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C); already-flat outputs pass through."""
    return output.mean(dim=(2, 3)) if output.dim() == 4 else output


def loader(dataset: ImageDataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
           generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, persistent_workers=num_workers > 0)


@torch.no_grad()
def extract(model: nn.Module, paths: list[str], layers: list[str], image_size: int, device: torch.device,
            batch_size: int = 64, reduce: Callable = global_average, desc: str = "features") -> dict[str, np.ndarray]:
    """Pooled activations of `layers` for every image, as float32 arrays (n_images, channels)."""
    model.eval().to(device)
    dataset = ImageDataset(paths, None, image_size, train=False, keep=False)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with tapped(model, layers, reduce) as outputs:
        for x, _ in tqdm(loader(dataset, batch_size), desc=desc, unit="batch", leave=False):
            taps = forward_taps(model, x.to(device), outputs)
            for name in layers:
                chunks[name].append(taps[name].float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


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
    from artlab.runs import load_tensors, save_tensors

    path = features_dir() / f"{cache_key(weights_id, layer, image_size, paths)}.safetensors"
    if path.is_file():
        return load_tensors(path)[0]["features"].numpy()
    features = extract(build_model(), paths, [layer], image_size, device, batch_size, desc=f"features {layer}")[layer]
    save_tensors(path, {"features": torch.from_numpy(features)},
                 {"weights": weights_id, "layer": layer, "image_size": str(image_size), "n_images": str(len(paths))})
    return features
