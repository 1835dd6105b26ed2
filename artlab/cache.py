"""Where artlab keeps what it can recompute: generated data, image checks, features; and file signatures."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Bytes read from each end of a file for its signature.
SIGNATURE_BYTES = 8192


def cache_dir() -> Path:
    """The cache root: $ARTLAB_CACHE, else ~/.cache/artlab."""
    return Path(os.environ.get("ARTLAB_CACHE", Path.home() / ".cache" / "artlab"))


def file_signature(path: str | os.PathLike) -> str:
    """Size, modification time and a hash of the first and last 8 KiB: changes when the content does.

    Size and time alone miss an edit that keeps both (a copy with `cp -p`, a file rewritten within
    the clock's resolution); the two ends catch those without reading whole images.
    """
    stat = os.stat(path)
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as handle:
            digest.update(handle.read(SIGNATURE_BYTES))
            if stat.st_size > SIGNATURE_BYTES:
                handle.seek(max(SIGNATURE_BYTES, stat.st_size - SIGNATURE_BYTES))
                digest.update(handle.read(SIGNATURE_BYTES))
    except PermissionError:
        digest.update(b"unreadable")
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()[:16]}"


def fingerprint(paths: list[str]) -> str:
    """Identifies a list of files by path and signature: an edited, replaced or truncated file changes it."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path}\0{file_signature(path)}\n".encode())
    return digest.hexdigest()
