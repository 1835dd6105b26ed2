"""Images as tensors for torch: small pre-resized copies kept in memory, augmentation for training."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from artlab.data.images import load_rgb
from artlab.models import IMAGENET_MEAN, IMAGENET_STD

#: Training images are stored a little larger than the crop, so random crops differ.
TRAIN_MARGIN = 1.15


def transform(image_size: int, train: bool) -> T.Compose:
    """Random crop and flip for training; resize-and-centre-crop for evaluation. Input: uint8 CHW."""
    if train:
        steps = [T.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(image_size, antialias=True), T.CenterCrop(image_size)]
    return T.Compose([*steps, T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageDataset(Dataset):
    """(image tensor, target) pairs. Each image is decoded once, shrunk and kept in memory as uint8.

    Decoding and shrinking dominate CPU time on small networks; keeping a 128-160 px copy makes
    every later epoch cost only the crop. Set `keep=False` for collections too large for memory.
    """

    def __init__(self, paths: list[str], targets: np.ndarray | None, image_size: int, train: bool = False,
                 keep: bool = True):
        self.paths = list(paths)
        self.targets = targets
        self.image_size = image_size
        self.stored_side = round(image_size * TRAIN_MARGIN) if train else image_size
        self.transform = transform(image_size, train)
        self.keep = keep
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
        x = self.transform(self.image(index))
        if self.targets is None:
            return x, index
        return x, torch.as_tensor(self.targets[index])
