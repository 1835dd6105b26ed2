"""Images as tensors for torch: small pre-resized copies kept in memory, the model's transform applied.

The dataset does not know which network it feeds: callers pass the transform (normalisation
belongs to the architecture, `artlab.models.input_transform`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from artlab.data.images import ImageError, load_rgb

#: Training images are stored a little larger than the crop, so random crops differ.
TRAIN_MARGIN = 1.15


class ImageDataset(Dataset):
    """(image tensor, target) pairs; without targets, (image tensor, index). Images are decoded once.

    Each image is shrunk so its shorter side is `image_size` (x TRAIN_MARGIN when `train`) and kept
    in memory as uint8: decoding dominates CPU time on small networks, so later epochs cost only
    the transform. Set `keep=False` for collections too large for memory.

    An image that has become unreadable since the collection was checked is skipped, not fatal:
    its item is None (`loader` drops it from the batch) and `failures` records why (in the
    process that read it: with worker processes, the main process sees only the gap).
    """

    def __init__(self, paths: list[str], targets: np.ndarray | None, image_size: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], train: bool = False, keep: bool = True):
        self.paths = list(paths)
        self.targets = targets
        self.image_size = image_size
        self.stored_side = round(image_size * TRAIN_MARGIN) if train else image_size
        self.transform = transform
        self.keep = keep
        self.failures: dict[str, str] = {}
        self._store: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        """The stored uint8 CHW copy of image `index` (shorter side = stored_side)."""
        if index in self._store:
            return self._store[index]
        img = load_rgb(self.paths[index], max_side=2 * self.stored_side)
        scale = self.stored_side / min(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample=3)
        tensor = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        if self.keep:
            self._store[index] = tensor
        return tensor

    def __getitem__(self, index: int):
        try:
            x = self.transform(self.image(index))
        except ImageError as exc:
            self.failures[self.paths[index]] = exc.reason
            return None
        if self.targets is None:
            return x, index
        return x, torch.as_tensor(self.targets[index])


def collate_present(items: list):
    """Batch the items that could be read (None marks an unreadable image); None if none could."""
    present = [item for item in items if item is not None]
    return default_collate(present) if present else None


def loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
           generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader with artlab's conventions: unreadable images dropped, persistent workers when there are some.

    A batch whose every image failed comes out as None: skip it.
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, persistent_workers=num_workers > 0, collate_fn=collate_present)
