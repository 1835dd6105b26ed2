"""The options of the analyses' forward passes and of CKA, as small frozen values passed whole.

    linear_cka(a, b, paths, layers)                                           # the defaults
    linear_cka(a, b, paths, layers, cka=CkaOptions(pool="grid"), options=PassOptions(image_size=64))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from artlab import models


@dataclass(frozen=True)
class PassOptions:
    """How a forward pass runs over the images: their side, batch size, device, loader workers, torch.compile."""

    image_size: int = models.DEFAULT_IMAGE_SIZE
    batch_size: int = 32
    device: torch.device | str = "cpu"
    num_workers: int | None = None  # None: the loader's default
    compile: bool = False  # torch.compile the networks (pays only on large collections)


@dataclass(frozen=True)
class CkaOptions:
    """How CKA turns an activation map into features: 'avg', 'grid' (`grid` x `grid` cells) or 'flatten'."""

    pool: str = "avg"
    grid: int = 2

    @property
    def pool_options(self) -> dict:
        """The options of the pooling function (the grid size, for 'grid')."""
        return {"grid": self.grid} if self.pool == "grid" else {}

    def pooling(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The pooling function itself."""
        return models.pooling(self.pool, **self.pool_options)
