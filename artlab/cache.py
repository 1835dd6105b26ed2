"""Where artlab keeps what it can recompute, and the one way it names things: file signatures and digests.

Every cache key in artlab is `digest(spec)` of a JSON-able description of what was computed; every
network's weights are named by `tensors_digest`; whole files by `file_digest`. One home each, so two
caches can never hash the same thing two ways.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: Bytes read from each end of a file for its signature.
SIGNATURE_BYTES = 8192
#: Hex digits of a cache key or weights digest.
DIGEST_LENGTH = 24


def cache_dir() -> Path:
    """The cache root: $ARTLAB_CACHE, else ~/.cache/artlab."""
    return Path(os.environ.get("ARTLAB_CACHE", Path.home() / ".cache" / "artlab"))


def digest(spec: Any, length: int = DIGEST_LENGTH) -> str:
    """The key of a cache entry: sha256 of `spec` as canonical JSON (sorted keys; str() for other values)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensors_digest(tensors: Mapping[str, torch.Tensor], length: int = DIGEST_LENGTH) -> str:
    """The identity of a set of weights: every tensor's name, shape, dtype and bytes (BatchNorm statistics too)."""
    hasher = hashlib.sha256()
    for name, tensor in tensors.items():
        hasher.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode())
        hasher.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:length]


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a whole file, read in 1 MiB chunks."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_signature(path: str | os.PathLike) -> str:
    """Size, modification time and a hash of the first and last 8 KiB: changes when the content does.

    Size and time alone miss an edit that keeps both (a copy with `cp -p`, a file rewritten within
    the clock's resolution); the two ends catch those without reading whole images.
    """
    stat = os.stat(path)
    hasher = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            hasher.update(handle.read(SIGNATURE_BYTES))
            if stat.st_size > SIGNATURE_BYTES:
                handle.seek(max(SIGNATURE_BYTES, stat.st_size - SIGNATURE_BYTES))
                hasher.update(handle.read(SIGNATURE_BYTES))
    except PermissionError:
        hasher.update(b"unreadable")
    return f"{stat.st_size}:{stat.st_mtime_ns}:{hasher.hexdigest()[:16]}"


def fingerprint(paths: list[str]) -> str:
    """Identifies a list of files by path and signature: an edited, replaced or truncated file changes it."""
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(f"{path}\0{file_signature(path)}\n".encode())
    return hasher.hexdigest()
