"""The network a run trains: ImageNet or random weights, optionally another run's backbone, frozen blocks."""

from __future__ import annotations

from torch import nn

from artlab import models
from artlab.runs import Run
from artlab.training.config import TrainConfig


def build_network(config: TrainConfig, num_classes: int) -> tuple[nn.Module, list[nn.Module]]:
    """The network for a run, with its first `freeze` blocks frozen; returns (model, frozen modules)."""
    model = models.build(config.arch, pretrained=config.strategy == "fine_tune", num_classes=num_classes)
    if config.init_from:
        load_backbone(model, Run(config.init_from))
    frozen = models.freeze_blocks(model, config.freeze)
    return model, frozen


def load_backbone(model: nn.Module, source: Run) -> None:
    """Start from another run's network, all but its head (double fine-tuning: ImageNet -> art -> target)."""
    spec = models.arch_of(model)
    tensors, card = source.load_model()
    if card.kind != "network" or card.arch != spec.name:
        raise ValueError(f"{source.path} holds a {card.kind} of {card.arch}, not a {spec.name} network to start from")
    backbone = {k: v for k, v in tensors.items() if not models.is_head_parameter(model, k)}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or any(not models.is_head_parameter(model, k) for k in missing):
        raise ValueError(f"{source.path}: weights do not fit {spec.name} (missing {missing}, unexpected {unexpected})")
