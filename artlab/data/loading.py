"""Images as tensors for torch: small pre-resized copies kept in memory or on disk, the model's transform applied.

The dataset does not know which network it feeds: callers pass the transform (normalisation
belongs to the architecture, `artlab.models.input_transform`).

Evaluation datasets (`train=False`: evaluation, features, analyses) read their decoded images
from the on-disk decoded-image cache (artlab.data.decoded) and decode only the missing ones,
which `loader` then adds to the cache. Training datasets decode as they always did.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from artlab.data import decoded as decoded_cache
from artlab.data.images import ImageError, load_rgb
from artlab.io import usable_cores

T = TypeVar("T")

#: Training images are stored a little larger than the crop, so random crops differ.
TRAIN_MARGIN = 1.15


class Fetched(list):
    """The items of one batch as a dataset returns them, with what the loader must hear about:
    `fresh` (index -> image decoded just now, for the disk cache) and `failures` (path -> reason)."""

    def __init__(self, items: list, fresh: dict[int, torch.Tensor], failures: dict[str, str]):
        super().__init__(items)
        self.fresh = fresh
        self.failures = failures


class ImageDataset(Dataset):
    """(image tensor, target) pairs; without targets, (image tensor, index). Images are decoded once.

    Each image is shrunk so its shorter side is `image_size` (x TRAIN_MARGIN when `train`) and kept
    in memory as uint8 (`keep`; set `keep=False` for collections too large for memory): decoding
    dominates CPU time on small networks, so later epochs cost only the transform. Without `train`,
    the decoded copies also come from and go to the on-disk decoded-image cache (`cache=False`
    turns that off), so a second layer, network or analysis of the same images decodes nothing.

    An image that has become unreadable since the collection was checked is skipped, not fatal:
    its item is None (`loader` drops it from the batch) and `failures` records why (with worker
    processes too: `loader` brings their failures back to this object).
    """

    def __init__(self, paths: list[str], targets: np.ndarray | None, image_size: int,
                 transform: Callable[[torch.Tensor], torch.Tensor], train: bool = False, keep: bool = True,
                 cache: bool | None = None):
        self.paths = list(paths)
        self.targets = targets
        self.image_size = image_size
        self.train = train
        self.stored_side = round(image_size * TRAIN_MARGIN) if train else image_size
        self.transform = transform
        self.keep = keep
        self.failures: dict[str, str] = {}
        self._store: dict[int, torch.Tensor] = {}
        use_cache = not train and cache is not False and decoded_cache.enabled()
        self.decoded = decoded_cache.DecodedImages(self.paths, self.stored_side) if use_cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        """The stored uint8 CHW copy of image `index` (shorter side = stored_side)."""
        return self._load(index)[0]

    def decode(self, index: int) -> torch.Tensor:
        """Decode image `index` from its file (never from a cache), shrunk so its shorter side is stored_side."""
        img = load_rgb(self.paths[index], max_side=2 * self.stored_side)
        scale = self.stored_side / min(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample=3)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)

    def _load(self, index: int) -> tuple[torch.Tensor, bool]:
        """The stored copy of image `index`, and whether it was decoded just now (found in no cache)."""
        if index in self._store:
            return self._store[index], False
        tensor = self.decoded.get(index) if self.decoded is not None else None
        fresh = tensor is None
        if fresh:
            tensor = self.decode(index)
        if self.keep:
            self._store[index] = tensor
        return tensor, fresh

    def _item(self, index: int, fresh: dict[int, torch.Tensor] | None = None, failures: dict[str, str] | None = None):
        try:
            image, decoded_now = self._load(index)
            x = self.transform(image)
        except ImageError as exc:
            self.failures[self.paths[index]] = exc.reason
            if failures is not None:
                failures[self.paths[index]] = exc.reason
            return None
        if decoded_now and fresh is not None:
            fresh[index] = image
        if self.targets is None:
            return x, index
        return x, torch.as_tensor(self.targets[index])

    def __getitem__(self, index: int):
        return self._item(index)

    def __getitems__(self, indices: list[int]) -> Fetched:
        """A batch's items (DataLoader calls this), with the images decoded for it and its failures."""
        fresh: dict[int, torch.Tensor] = {}
        failures: dict[str, str] = {}
        items = [self._item(index, fresh if self.decoded is not None else None, failures) for index in indices]
        return Fetched(items, fresh, failures)

    def cached_fraction(self) -> float:
        """The share of the images already decoded, in memory or in the decoded-image cache."""
        if not self.paths:
            return 1.0
        on_disk = set(self.decoded.entries) if self.decoded is not None else set()
        return len(on_disk | set(self._store)) / len(self.paths)


def collate_present(items: list):
    """Batch the items that could be read (None marks an unreadable image); None if none could."""
    present = [item for item in items if item is not None]
    return default_collate(present) if present else None


@dataclass
class Batch:
    """One evaluation batch: inputs (channels_last), targets or indices, and what the main process must record:
    images decoded for it (flattened HWC uint8, to add to the disk cache) and the images that failed."""

    x: torch.Tensor | None
    y: torch.Tensor | None
    fresh: list[int] = field(default_factory=list)
    shapes: list[tuple[int, int]] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    failures: dict[str, str] = field(default_factory=dict)

    def images(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(index, uint8 CHW image) for each image decoded for this batch."""
        start = 0
        for index, (height, width) in zip(self.fresh, self.shapes):
            size = height * width * 3
            yield index, self.pixels[start:start + size].view(height, width, 3).permute(2, 0, 1)
            start += size

    def pin_memory(self) -> Batch:
        """DataLoader's pin_memory hook: only the inputs and targets go to the GPU."""
        return replace(self, x=None if self.x is None else self.x.pin_memory(),
                       y=None if self.y is None else self.y.pin_memory())


def collate_eval(items: list) -> Batch:
    """Batch the readable items in channels_last (faster convolutions on CPU and GPU), carrying the side records."""
    present = [item for item in items if item is not None]
    x = y = None
    if present:
        x, y = default_collate(present)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    fresh: dict[int, torch.Tensor] = getattr(items, "fresh", {})
    hwc = [image.permute(1, 2, 0).reshape(-1) for image in fresh.values()]
    return Batch(x, y, list(fresh), [tuple(image.shape[1:]) for image in fresh.values()],
                 torch.cat(hwc) if hwc else None, dict(getattr(items, "failures", {})))


class Batches:
    """An evaluation DataLoader as artlab iterates it: yields `[inputs, targets or indices]` (None when a whole
    batch was unreadable), records failures on the dataset and adds newly decoded images to the disk cache.

    Without worker processes the batches are read ahead on a thread (`read_ahead`), which also records those
    failures and cache entries: read the dataset's `failures` once the iteration is over, and iterate one
    dataset in one loop at a time."""

    def __init__(self, dataset: ImageDataset, data_loader: DataLoader):
        self.dataset = dataset
        self.data_loader = data_loader

    def __len__(self) -> int:
        return len(self.data_loader)

    def __iter__(self) -> Iterator[list[torch.Tensor] | None]:
        """The batches; without worker processes the next one is decoded on a thread while the caller computes."""
        batches = self._batches()
        return batches if self.data_loader.num_workers else read_ahead(batches)

    def _batches(self) -> Iterator[list[torch.Tensor] | None]:
        cache = self.dataset.decoded
        writer = decoded_cache.PackWriter(cache.side, cache.folder) if cache is not None else None
        try:
            for batch in self.data_loader:
                self.dataset.failures |= batch.failures
                if writer is not None:
                    for index, image in batch.images():
                        if cache.keys[index] is not None and index not in cache:
                            writer.add(cache.keys[index], image)
                yield None if batch.x is None else [batch.x, batch.y]
        finally:
            if writer is not None:
                cache.refresh(writer.close())
                cache.close()


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, produced on a thread ahead of the caller (one waiting, the next in the making): decoding and the
    transform release the GIL, so a batch is decoded while the network runs on the one before. An error reaches
    the caller in its place; a caller that stops early (break, an interrupt) stops the thread, which closes
    `items`."""
    slot: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def offer(value: tuple) -> bool:
        """Hand `value` to the caller, unless it has stopped listening."""
        while not stop.is_set():
            try:
                slot.put(value, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    break
            else:
                offer((end, None))
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            offer((end, error))
        finally:
            if stop.is_set() and hasattr(items, "close"):
                items.close()

    thread = threading.Thread(target=produce, name="artlab-read-ahead", daemon=True)
    with _READERS_LOCK:
        _READING_AHEAD[thread] = stop
    thread.start()
    try:
        while True:
            item, error = slot.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()  # the producer ends within a batch and a tenth of a second
        if threading.current_thread() is not thread and not sys.is_finalizing():
            thread.join()
        with _READERS_LOCK:
            _READING_AHEAD.pop(thread, None)


#: The threads reading ahead now, and how to stop each.
_READING_AHEAD: dict[threading.Thread, threading.Event] = {}
_READERS_LOCK = threading.RLock()  # a reader finalised by the garbage collector may remove itself meanwhile
#: At exit, how long the threads reading ahead may take to finish their batch, all together.
EXIT_WAIT_S = 60


@atexit.register
def _stop_reading_ahead() -> None:
    """At exit, stop the threads of readers never finished (an iterator left half-read): a daemon thread killed
    inside torch's code at shutdown aborts the whole process. Each finishes the batch it is decoding first."""
    with _READERS_LOCK:
        readers = list(_READING_AHEAD.items())
    for _, stop in readers:
        stop.set()
    deadline = time.monotonic() + EXIT_WAIT_S
    for thread, _ in readers:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


def default_workers(dataset: Dataset) -> int:
    """Decoding worker processes: one per core beside the main process's, none when there is nothing to decode.

    On two cores the main process's two compute threads already use both, so no worker is started
    (benchmarks/forward_speed.py measures it).
    """
    if isinstance(dataset, ImageDataset) and dataset.cached_fraction() == 1.0:
        return 0
    cores = usable_cores()
    return 0 if cores <= 2 else min(cores - 1, 8)


def loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int | None = None,
           generator: torch.Generator | None = None, pin_memory: bool | None = None) -> DataLoader | Batches:
    """A DataLoader with artlab's conventions: unreadable images dropped, persistent workers when there are some.

    A batch whose every image failed comes out as None: skip it. `num_workers=None` sizes the
    decoding workers to the cores (`default_workers`); `pin_memory=None` pins evaluation batches when
    CUDA is present.
    An evaluation ImageDataset (`train=False`) gives channels_last inputs and fills the
    decoded-image cache as it goes.
    """
    evaluation = isinstance(dataset, ImageDataset) and not dataset.train
    workers = default_workers(dataset) if num_workers is None else num_workers
    pin = evaluation and torch.cuda.is_available() if pin_memory is None else pin_memory
    options = {"batch_size": batch_size, "shuffle": shuffle, "num_workers": workers, "generator": generator,
               "persistent_workers": workers > 0, "pin_memory": pin}
    if evaluation:
        return Batches(dataset, DataLoader(dataset, collate_fn=collate_eval, **options))
    return DataLoader(dataset, collate_fn=collate_present, **options)
