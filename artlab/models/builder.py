"""Building networks from the architecture registry, and the helpers that act on a built network.

A network built here carries its registry entry (`model.artlab_arch`), so the helpers take the
model alone: `freeze_blocks(model, k)`, `replace_head(model, n)`, `input_transform(model, size)`.
"""

from __future__ import annotations

from torch import nn

from artlab.models.registry import ARCH_ATTRIBUTE, arch, arch_of
from artlab.models.vision import T, torchvision
from artlab.models.weights import imagenet_state


def build(name: str = "mobilenet_v2", pretrained: bool = True, num_classes: int | None = None) -> nn.Module:
    """A torchvision model carrying its registry entry; ImageNet weights if `pretrained`, a fresh head if asked."""
    spec = arch(name)
    model = torchvision.models.get_model(name, weights=None, **spec.build_options)
    setattr(model, ARCH_ATTRIBUTE, spec)
    if pretrained:
        state = imagenet_state(spec)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(spec.skip_weights)})
        for attribute, value in spec.pretrained_attributes.items():
            setattr(model, attribute, value)
    if num_classes is not None:
        replace_head(model, num_classes)
    return model


def head_module(model: nn.Module) -> nn.Linear:
    """The final linear layer of a network."""
    return model.get_submodule(arch_of(model).head)


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Swap the final linear layer for a freshly initialised one with `num_classes` outputs."""
    head_path = arch_of(model).head
    parent_name, _, leaf = head_path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new = nn.Linear(getattr(parent, leaf).in_features, num_classes)
    setattr(parent, leaf, new)
    return new


def is_head_parameter(model: nn.Module, parameter_name: str) -> bool:
    """Whether a `named_parameters()` name belongs to the head."""
    return parameter_name.startswith(arch_of(model).head + ".")


def block_modules(model: nn.Module, k: int) -> list[nn.Module]:
    """The modules making up the first `k` blocks of the network's architecture."""
    spec = arch_of(model)
    if not 0 <= k <= len(spec.blocks):
        raise ValueError(f"{spec.name} has {len(spec.blocks)} blocks; cannot freeze {k}")
    return [model.get_submodule(m) for block in spec.blocks[:k] for m in block]


def freeze_blocks(model: nn.Module, k: int) -> list[nn.Module]:
    """Stop gradients through the first `k` blocks; returns those modules (to keep their BatchNorm in eval)."""
    modules = block_modules(model, k)
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
    return modules


def input_transform(model: nn.Module, image_size: int, train: bool = False) -> T.Compose:
    """The preprocessing the network expects (its architecture's normalisation), as a torchvision transform."""
    return arch_of(model).transform(image_size, train)


