"""Where artlab keeps what it can recompute: generated data, image checks, features."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: $ARTLAB_CACHE, else ~/.cache/artlab."""
    return Path(os.environ.get("ARTLAB_CACHE", Path.home() / ".cache" / "artlab"))


def fingerprint(paths: list[str]) -> str:
    """Identifies a list of files by path, size and modification time: an edited file changes it."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
