"""Backbones: the architecture registry, ImageNet weights, layer taps and model cards.

The builder (and torchvision, 0.3 s to import with its transforms: see models/vision.py) loads on first use of one
of its names: a run that reads cached features, or the registry alone, never needs it.
"""

from typing import TYPE_CHECKING

from artlab.lazy import exports
from artlab.models.card import DEFAULT_IMAGE_SIZE, IMAGENET_IMAGE_SIZE, ModelCard, attach_card, card_of
from artlab.models.device import default_device, resolve_device, side_by_side
from artlab.models.registry import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Arch,
    arch,
    arch_of,
    check_layers,
    imagenet_classes,
)
from artlab.models.taps import POOLINGS, Taps, fold_batchnorm, for_inference, pooling, pools
from artlab.models.weights import (
    OFFLINE_WEIGHTS,
    WeightsUnavailable,
    checkpoint_dir,
    describe,
    model_digest,
    weights_file,
    weights_id,
)

_BUILDER = ("block_modules", "build", "freeze_blocks", "head_module", "input_transform", "is_head_parameter",
            "replace_head")
__getattr__, __dir__ = exports(__name__, {name: "artlab.models.builder" for name in _BUILDER})

if TYPE_CHECKING:  # for editors and type checkers; at run time these load with the builder
    from artlab.models.builder import (
        block_modules,
        build,
        freeze_blocks,
        head_module,
        input_transform,
        is_head_parameter,
        replace_head,
    )

__all__ = ["ARCHS", "Arch", "DEFAULT_IMAGE_SIZE", "IMAGENET_IMAGE_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "ModelCard",
           "OFFLINE_WEIGHTS", "POOLINGS", "Taps", "WeightsUnavailable", "arch", "arch_of", "attach_card",
           "block_modules", "build", "card_of", "check_layers", "checkpoint_dir", "default_device", "describe",
           "fold_batchnorm", "for_inference", "freeze_blocks", "head_module", "imagenet_classes", "input_transform",
           "is_head_parameter", "model_digest", "pooling", "pools", "replace_head", "resolve_device", "side_by_side",
           "weights_file", "weights_id"]
