"""Backbones: the architecture registry, ImageNet weights, layer taps and model cards."""

from artlab.models.card import ModelCard
from artlab.models.registry import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Arch,
    arch,
    arch_of,
    block_modules,
    build,
    check_layers,
    default_device,
    freeze_blocks,
    head_module,
    imagenet_classes,
    input_transform,
    is_head_parameter,
    replace_head,
    resolve_device,
)
from artlab.models.taps import POOLINGS, Taps, fold_batchnorm, for_inference, pooling, several
from artlab.models.weights import (
    OFFLINE_WEIGHTS,
    WeightsUnavailable,
    checkpoint_dir,
    describe,
    weights_file,
    weights_id,
)

__all__ = ["ARCHS", "IMAGENET_MEAN", "IMAGENET_STD", "OFFLINE_WEIGHTS", "POOLINGS", "Arch", "ModelCard", "Taps",
           "WeightsUnavailable", "arch", "arch_of", "block_modules", "build", "check_layers", "checkpoint_dir",
           "default_device", "describe", "freeze_blocks", "head_module", "imagenet_classes", "input_transform",
           "is_head_parameter", "pooling", "replace_head", "resolve_device", "weights_file", "weights_id",
           "fold_batchnorm", "for_inference", "several"]
