"""Backbones: a registry over torchvision architectures with ordered blocks, analysable layers and inputs.

"Freeze the first k blocks" means the same thing on every architecture because each one lists its
blocks (groups of top-level modules) in forward order. This module only describes architectures
(`Arch`, `ARCHS`) and looks them up; `artlab.models.builder` builds networks from them (as timm
separates `_registry` from `_builder`). A built network carries its registry entry
(`model.artlab_arch`, as timm attaches its config), which `arch_of(model)` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # torchvision is imported where a network is built or an image transformed: 0.3 s, models/vision.py
    from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCH_ATTRIBUTE = "artlab_arch"


@dataclass(frozen=True)
class Arch:
    """What artlab needs to know about one architecture, special cases included."""

    name: str
    weights: str  # torchvision weights enum member used for pretrained=True
    file: str  # its file name (the hash prefix in it): caches are keyed by it without importing torchvision
    blocks: tuple[tuple[str, ...], ...]  # top-level module names, grouped, in forward order
    layers: tuple[str, ...]  # dotted names of the layers worth analysing, shallow to deep
    head: str  # dotted name of the final nn.Linear
    min_size: int = 32  # smallest input side the architecture accepts
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation the weights expect
    std: tuple[float, float, float] = IMAGENET_STD
    build_options: dict = field(default_factory=dict, hash=False)  # extra arguments to torchvision's constructor
    skip_weights: tuple[str, ...] = ()  # prefixes of pretrained tensors the built model lacks (aux heads)
    # attributes set on the model after loading ImageNet weights
    pretrained_attributes: dict = field(default_factory=dict, hash=False)
    # forward = the blocks in order, then pooling and head: skipping the first k blocks and feeding their
    # output gives the same result (training from a cached frozen prefix, artlab.training.prefix)
    chain: bool = True

    @property
    def feature_layer(self) -> str:
        """The deepest analysed layer: its global-average-pooled output feeds the head."""
        return self.layers[-1]

    def weights_enum(self):
        """torchvision's weights entry for pretrained=True."""
        from artlab.models.vision import torchvision

        return torchvision.models.get_model_weights(self.name)[self.weights]

    def transform(self, image_size: int, train: bool = False) -> T.Compose:
        """uint8 CHW image -> normalised float input: random crop and flip to train, resize + centre crop else."""
        from artlab.models.vision import T

        if train:
            steps = [T.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True), T.RandomHorizontalFlip()]
        else:
            steps = [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
        return T.Compose([*steps, T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)])


def _seq(prefix: str, n: int) -> tuple[tuple[str, ...], ...]:
    return tuple((f"{prefix}.{i}",) for i in range(n))


def _resnet(name: str, weights: str, file: str, depths: tuple[int, ...]) -> Arch:
    layers = tuple(f"layer{s + 1}.{b}" for s, d in enumerate(depths) for b in range(d))
    blocks = (("conv1", "bn1", "relu", "maxpool"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
    return Arch(name, weights, file, blocks, layers, "fc")


_VGG16_RELUS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)
_VGG16_STAGES = ((0, 5), (5, 10), (10, 17), (17, 24), (24, 31))
_GOOGLENET_MIXED = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
                    "inception4e", "inception5a", "inception5b")
_INCEPTION_MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                    "Mixed_7a", "Mixed_7b", "Mixed_7c")
# GoogLeNet and Inception v3: no auxiliary heads, and their ImageNet weights expect torchvision's input re-scaling
# (done in forward before the first block, so their forward is not a plain chain of blocks)
_INCEPTION_STYLE = {"build_options": {"aux_logits": False, "init_weights": True}, "skip_weights": ("aux",),
                    "pretrained_attributes": {"transform_input": True}, "chain": False}

ARCHS: dict[str, Arch] = {a.name: a for a in [
    Arch("mobilenet_v2", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", _seq("features", 19),
         tuple(f"features.{i}" for i in range(1, 19)), "classifier.1"),
    _resnet("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", (2, 2, 2, 2)),
    _resnet("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", (3, 4, 6, 3)),
    Arch("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth",
         tuple(tuple(f"features.{i}" for i in range(a, b)) for a, b in _VGG16_STAGES),
         tuple(f"features.{i}" for i in _VGG16_RELUS), "classifier.6"),
    Arch("googlenet", "IMAGENET1K_V1", "googlenet-1378be20.pth",
         (("conv1", "maxpool1"), ("conv2", "conv3", "maxpool2"), *((m,) for m in _GOOGLENET_MIXED)),
         _GOOGLENET_MIXED, "fc", **_INCEPTION_STYLE),
    Arch("inception_v3", "IMAGENET1K_V1", "inception_v3_google-0cc3c7bd.pth",
         (("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1"),
          ("Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"), *((m,) for m in _INCEPTION_MIXED)),
         _INCEPTION_MIXED, "fc", min_size=75, **_INCEPTION_STYLE),
    Arch("efficientnet_b0", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth", _seq("features", 9),
         tuple(f"features.{i}" for i in range(1, 9)), "classifier.1"),
]}


def arch(name: str) -> Arch:
    """The registry entry for `name`, with a clear error listing the known architectures."""
    if name not in ARCHS:
        raise KeyError(f"unknown architecture {name!r}; artlab knows {sorted(ARCHS)}")
    return ARCHS[name]


def arch_of(model: nn.Module) -> Arch:
    """The registry entry a network was built with (see `artlab.models.builder.build`)."""
    spec = getattr(model, ARCH_ATTRIBUTE, None)
    if not isinstance(spec, Arch):
        raise TypeError(f"this {type(model).__name__} was not built by artlab.models.build, so its architecture "
                        f"is unknown; build it with artlab.models.build(name)")
    return spec


def check_layers(spec: Arch, layers: list[str]) -> None:
    """Refuse names that are not analysed layers of `spec`, listing the valid ones."""
    unknown = [layer for layer in layers if layer not in spec.layers]
    if unknown:
        raise KeyError(f"{spec.name} has no analysed layer(s) {unknown}; choose from {list(spec.layers)}")


def imagenet_classes(name: str = "mobilenet_v2") -> list[str]:
    """The 1000 ImageNet class names in the order of the pretrained head's outputs."""
    return list(arch(name).weights_enum().meta["categories"])
