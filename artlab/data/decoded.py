"""Decoded images on disk: each image is decoded once at a working size and shared by every later reader.

Evaluations, feature extractions and analyses read the same images at the same size again and
again, and decoding plus shrinking is a large part of a small network's forward pass on a CPU.
Their decoded uint8 copies (shorter side = the working size, exactly what `ImageDataset.image`
returns) are packed into files under `<cache>/decoded/<size>px/`:

- each image is keyed by its content (`artlab.cache.content_id`, wherever the file lies) and
  the working size, so a changed file is decoded again and a moved one is not;
- packs are written atomically (artlab.io), so a half-written pack is never read;
- each image carries a CRC-32 of its pixel bytes, checked on every read, and the pack's index (keys,
  offsets, shapes, CRCs) carries `artlab.cache.payload_checksum`, checked when the pack is opened: a
  damaged or truncated pack is dropped and its images decoded again, with one warning line (a pack
  written before index checksums is dropped quietly).

A pack is a safetensors file (so it can be memory-mapped by any reader); artlab reads one image at
a time with positioned reads, so resident memory does not grow with the number of images. Delete
`<cache>/decoded` to reclaim the space; set ARTLAB_DECODED_CACHE=0 to turn the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from artlab.cache import CHECKSUM_FIELD, cache_dir, content_id, damaged_entry, payload_checksum, sealed
from artlab.io import save_tensors

#: Bumped whenever the decoding itself changes, so older packs are never mixed with newer decodes.
DECODE_VERSION = 1
#: A pack is written once it holds this many bytes of pixels (and at the end of every pass).
PACK_BYTES = 32 << 20
#: `.part` files older than this were left by a killed writer (younger ones may still be being written).
STALE_PART_SECONDS = 24 * 3600
#: Pack files one reader keeps open at once (the least recently read is closed first), well below the usual
#: limit of 1024 open files per process, whatever the number of packs.
MAX_OPEN_PACKS = 16


def enabled() -> bool:
    """False when ARTLAB_DECODED_CACHE is set to 0, false or no."""
    return os.environ.get("ARTLAB_DECODED_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def decoded_dir(side: int) -> Path:
    return cache_dir() / "decoded" / f"{side}px"


def image_key(path: str, side: int) -> bytes | None:
    """16 bytes naming (the file's content, working size, decoder version); None for a file that cannot be read."""
    try:
        file_print = content_id(path)
    except OSError:
        return None
    return hashlib.sha256(f"{file_print}\0{side}\0{DECODE_VERSION}".encode()).digest()[:16]


@dataclass(frozen=True)
class Entry:
    """Where one decoded image lies: pack file, byte offset, height, width and CRC-32 of its HWC bytes."""

    pack: str
    offset: int
    height: int
    width: int
    crc: int

    @property
    def nbytes(self) -> int:
        return self.height * self.width * 3


#: The tensors of a pack's index, covered by its checksum (each image's pixels by its own CRC-32).
INDEX = ("keys", "offsets", "shapes", "crc")


class DamagedPack(ValueError):
    """A pack whose header, size or index checksum does not add up."""


class UncheckedPack(DamagedPack):
    """A pack written before index checksums: not trusted, dropped without a warning."""


def _read_header(handle) -> tuple[dict, int]:
    """The safetensors JSON header and where its data starts."""
    raw = handle.read(8)
    if len(raw) != 8:
        raise DamagedPack("shorter than a header")
    (length,) = struct.unpack("<Q", raw)
    if length > 1 << 26:
        raise DamagedPack("implausible header length")
    text = handle.read(length)
    if len(text) != length:
        raise DamagedPack("truncated header")
    try:
        return json.loads(text), 8 + length
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedPack(f"unreadable header: {exc}") from None


_DTYPES = {"U8": np.uint8, "I64": np.int64, "I32": np.int32}


def read_pack_index(path: Path) -> dict[bytes, Entry]:
    """Every image a pack holds, checking that the file is as long as its header says."""
    with open(path, "rb") as handle:
        header, start = _read_header(handle)
        size = os.fstat(handle.fileno()).st_size
        tensors = {}
        try:
            spans = {name: header[name] for name in ("keys", "offsets", "shapes", "crc", "pixels")}
            if start + max(spec["data_offsets"][1] for spec in spans.values()) != size:
                raise DamagedPack(f"truncated or extended: {size} bytes, the header describes another length")
            for name in INDEX:
                begin, end = spans[name]["data_offsets"]
                handle.seek(start + begin)
                tensors[name] = np.frombuffer(handle.read(end - begin), dtype=_DTYPES[spans[name]["dtype"]]).reshape(
                    spans[name]["shape"])
            pixels_at = start + spans["pixels"]["data_offsets"][0]
            pixels_end = start + spans["pixels"]["data_offsets"][1]
            checksum = (header.get("__metadata__") or {}).get(CHECKSUM_FIELD)
        except DamagedPack:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DamagedPack(f"unexpected layout: {exc}") from None
    if checksum is None:
        raise UncheckedPack("no checksum")
    if payload_checksum({name: torch.from_numpy(tensors[name].copy()) for name in INDEX}) != checksum:
        raise DamagedPack("checksum mismatch")
    entries = {}
    for key, offset, (height, width), crc in zip(tensors["keys"], tensors["offsets"], tensors["shapes"],
                                                 tensors["crc"]):
        entry = Entry(str(path), pixels_at + int(offset), int(height), int(width), int(crc))
        if entry.offset + entry.nbytes > pixels_end:
            raise DamagedPack("an image lies outside the pixel data")
        entries[key.tobytes()] = entry
    return entries


def drop_pack(path: str | Path) -> None:
    """Remove a damaged pack (best effort: another process may have removed it first)."""
    try:
        Path(path).unlink()
    except OSError:
        pass


class DecodedImages:
    """The decoded-image cache seen from one list of files at one working size.

    `get(i)` is image i as a uint8 CHW tensor (None when it is not cached or its bytes are
    damaged); `keys[i]` is what a writer stores it under. The index of the packs is read once,
    here; each process opens the pack files it reads by itself (DataLoader workers included).
    """

    def __init__(self, paths: list[str], side: int, folder: Path | None = None):
        self.side = side
        self.folder = Path(folder) if folder is not None else decoded_dir(side)
        self.keys = [image_key(path, side) for path in paths]
        self.entries: dict[int, Entry] = {}
        self._handles: dict[str, object] = {}
        self._pid = os.getpid()
        self.refresh()

    def refresh(self, known: dict[bytes, Entry] | None = None) -> None:
        """Look the images up in every pack of the folder (or only in `known`, entries just written)."""
        found = known if known is not None else _all_entries(self.folder)
        for index, key in enumerate(self.keys):
            if key is not None and key in found:
                self.entries[index] = found[key]

    def __contains__(self, index: int) -> bool:
        return index in self.entries

    @property
    def missing(self) -> int:
        """How many of the images are not cached yet."""
        return len(self.keys) - len(self.entries)

    def get(self, index: int) -> torch.Tensor | None:
        """Image `index` as uint8 CHW; None when it is not cached, or its bytes fail their checksum (the pack
        is then dropped and its images decoded again)."""
        entry = self.entries.get(index)
        if entry is None:
            return None
        pixels = np.empty(entry.nbytes, dtype=np.uint8)
        try:
            handle = self._handle(entry.pack)
            handle.seek(entry.offset)
            complete = handle.readinto(memoryview(pixels)) == entry.nbytes
        except FileNotFoundError:  # another process dropped it: its images are decoded again
            self._forget(entry.pack)
            return None
        except OSError:  # not the pack's fault (too many open files, permissions): decode, keep the pack
            return None
        if not complete or zlib.crc32(pixels) != entry.crc:
            self._forget(entry.pack)
            drop_pack(entry.pack)
            damaged_entry("decoded images", "checksum mismatch" if complete else "truncated", entry.pack,
                          "decoded again")
            return None
        return torch.from_numpy(pixels.reshape(entry.height, entry.width, 3)).permute(2, 0, 1)

    def _handle(self, pack: str):
        if os.getpid() != self._pid:  # a forked worker: never share a file position with the parent
            self._handles, self._pid = {}, os.getpid()
        if pack in self._handles:
            self._handles[pack] = self._handles.pop(pack)  # now the most recently read
        else:
            while len(self._handles) >= MAX_OPEN_PACKS:
                self._handles.pop(next(iter(self._handles))).close()
            self._handles[pack] = open(pack, "rb")  # kept open for the pass (at most MAX_OPEN_PACKS); see close()
        return self._handles[pack]

    def _forget(self, pack: str) -> None:
        """Stop using a pack found damaged: its images are decoded again."""
        self.entries = {i: e for i, e in self.entries.items() if e.pack != pack}
        handle = self._handles.pop(pack, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """Close the pack files this process opened (they reopen on the next read)."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict:  # worker processes open their own files
        return {**self.__dict__, "_handles": {}}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter shutdown the file objects may be gone already
            pass


def _all_entries(folder: Path) -> dict[bytes, Entry]:
    """The images of every readable pack in `folder`; damaged packs are removed, newer packs win."""
    found: dict[bytes, Entry] = {}
    if not folder.is_dir():
        return found
    _remove_stale_parts(folder)
    for pack in sorted(folder.glob("*.safetensors")):
        try:
            found |= read_pack_index(pack)
        except UncheckedPack:
            drop_pack(pack)
        except DamagedPack as exc:
            drop_pack(pack)
            damaged_entry("decoded images", str(exc), pack, "decoded again")
        except OSError:  # unreadable now (too many open files, permissions, removed meanwhile): not damaged
            pass
    return found


def _remove_stale_parts(folder: Path) -> None:
    """`.part` files a killed writer left long ago (a younger one may belong to a writer still at work)."""
    now = time.time()
    for part in folder.glob(".*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass


class PackWriter:
    """Collects freshly decoded images and writes them as packs (atomically) every PACK_BYTES and at `close`."""

    def __init__(self, side: int, folder: Path | None = None, pack_bytes: int = PACK_BYTES):
        self.side = side
        self.folder = Path(folder) if folder is not None else decoded_dir(side)
        self.pack_bytes = pack_bytes
        self.written: dict[bytes, Entry] = {}
        self._keys: list[bytes] = []
        self._images: list[np.ndarray] = []
        self._bytes = 0
        self._failed = False

    def add(self, key: bytes, image: torch.Tensor) -> None:
        """Queue one decoded uint8 CHW image under `key`."""
        if self._failed or key in self.written or key in self._keys:
            return
        self._keys.append(key)
        self._images.append(np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        self._bytes += self._images[-1].nbytes
        if self._bytes >= self.pack_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the queued images as one pack; a write that fails only warns (the cache is an optimisation)."""
        if not self._keys:
            return
        keys, images = self._keys, self._images
        self._keys, self._images, self._bytes = [], [], 0
        sizes = np.array([image.nbytes for image in images], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        flat = np.concatenate([image.reshape(-1) for image in images])
        key_bytes = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16).copy()
        index = {"keys": torch.from_numpy(key_bytes),
                 "offsets": torch.from_numpy(offsets),
                 "shapes": torch.tensor([image.shape[:2] for image in images], dtype=torch.int32),
                 "crc": torch.tensor([zlib.crc32(image) for image in images], dtype=torch.int64)}
        path = self.folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.safetensors"
        try:
            save_tensors(path, index | {"pixels": torch.from_numpy(flat)},
                         sealed(index, {"side": str(self.side), "decode_version": str(DECODE_VERSION)}))
            self.written |= read_pack_index(path)
        except (OSError, DamagedPack) as exc:
            self._failed = True
            warnings.warn(f"the decoded-image cache could not be written to {self.folder} ({exc}); images will be "
                          f"decoded again next time", RuntimeWarning, stacklevel=2)

    def close(self) -> dict[bytes, Entry]:
        """Write what is left; returns every entry written."""
        self.flush()
        return self.written
