"""Reading artwork images safely: by content, EXIF-rotated, any mode to RGB, never crashing a run."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from artlab.cache import cache_dir, content_id, fingerprint
from artlab.io import usable_cores, write_csv
from artlab.progress import progress

#: Threads that check a collection's files at once (at most one per core), and the size of image that only one of
#: them decodes at a time: memory holds at most one such image and a few smaller ones.
SCAN_THREADS = 4
LARGE_PIXELS = 25_000_000
_LARGE = threading.Lock()


class ImageError(Exception):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What a scan learns about one file: its real format, size and mode, and how it looks (`dhash`)."""

    format: str
    width: int
    height: int
    mode: str
    dhash: str = ""  # perceptual hash: 16 hex digits, near for the same picture at another size


def difference_hash(img: Image.Image) -> str:
    """The 64-bit difference hash of a picture (brighter than its right neighbour, on a 9 x 8 grey thumbnail), as
    16 hex digits: the same artwork saved at another size or quality differs in a few bits at most."""
    grey = img.convert("L") if img.mode in ("RGB", "L") else to_rgb(img).convert("L")  # the same grey, one copy less
    grey = np.asarray(grey.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    return np.packbits(grey[:, 1:] > grey[:, :-1]).tobytes().hex()


def _open_checked(path: str | Path, max_pixels: int | None) -> Image.Image:
    """Open by content (whatever the extension says) and refuse empty files and bombs: images above `max_pixels`,
    by default PIL's own limit as it is now (`PIL.Image.MAX_IMAGE_PIXELS`, 89 M; None there: no limit).

    No warnings filter turns PIL's bomb warning into an error here: the filters are the whole process's, and
    images are opened on several threads while other code runs. PIL prints its warning, artlab refuses the file."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        img = Image.open(path)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except PermissionError:
        raise ImageError(path, "unreadable: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unknown format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning: where warnings raise
        raise ImageError(path, f"decompression bomb: {exc}") from None
    except OSError as exc:
        raise ImageError(path, f"corrupt or truncated: {exc}") from None
    width, height = img.size
    if limit is not None and width * height > limit:
        img.close()
        raise ImageError(path, f"decompression bomb: {width}x{height} pixels exceeds {limit}")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency is laid onto white, 16-bit and float are rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # P, L, CMYK (PIL undoes Adobe's inverted JPEG CMYK), YCbCr, ...


def load_rgb(path: str | Path, max_side: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode an image fully as upright RGB, or raise ImageError naming the file and why.

    With `max_side`, large JPEGs are decoded at a reduced scale (draft mode), which is much
    faster than decoding at full size and then shrinking.
    """
    img = _open_checked(path, max_pixels)
    try:
        with img:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if max_side is not None and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"corrupt or truncated: {exc}") from None


def inspect(path: str | Path, max_pixels: int | None = None) -> ImageInfo:
    """Fully decode an image (to catch truncation) and report its real format, size and mode."""
    img = _open_checked(path, max_pixels)
    fmt, mode = img.format or "unknown", img.mode
    try:
        with img, _LARGE if img.width * img.height > LARGE_PIXELS else nullcontext():
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            width, height = img.size
            dhash = difference_hash(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"corrupt or truncated: {exc}") from None
    return ImageInfo(fmt, width, height, mode, dhash)


def content_hash(path: str | Path) -> str:
    """sha1 of the whole file: byte-identical images under two names share it."""
    return content_id(path)


SCAN_COLUMNS = ["path", "format", "width", "height", "mode", "sha1", "dhash", "error"]


def scan(paths: list[str], cache: bool = True) -> pd.DataFrame:
    """Inspect every file; one row per path with format, width, height, mode and `error` (None if usable).

    `sha1` is the whole file's hash (to find byte-identical duplicates). The result is cached per
    set of files (their content, `artlab.cache.fingerprint`; the paths must match too), so checking
    the same collection again, e.g. for another run, reads one CSV instead of decoding every image.
    """
    try:
        stored = cache_dir() / "scans" / f"{fingerprint(paths)[:32]}.csv"
    except OSError:  # a file gone since the collection was listed: checked (and reported) without the cache
        stored, cache = None, False
    if cache and stored.is_file():
        try:
            text = {column: str for column in ("path", "format", "mode", "sha1", "dhash", "error")}
            table = pd.read_csv(stored, dtype=text, keep_default_na=False, na_values=[""])  # missing: NaN
        except (ValueError, UnicodeDecodeError):  # a damaged cache entry is recomputed, never trusted
            table = pd.DataFrame(columns=SCAN_COLUMNS)
        if list(table.columns) == SCAN_COLUMNS and table["path"].tolist() == list(paths):
            return table
    table = _scan(paths)
    if cache:
        write_csv(stored, table)
    return table


def _scan(paths: list[str]) -> pd.DataFrame:
    """One row per path, in order; the files are decoded on one thread per core (PIL releases the GIL)."""
    with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, usable_cores())) as pool:
        rows = list(progress(pool.map(_scan_one, paths), total=len(paths), desc="checking images", unit="img",
                             leave=False))
    return pd.DataFrame(rows, columns=SCAN_COLUMNS)


def _scan_one(path: str) -> dict:
    try:
        info = inspect(path)
        return {"path": path, **info.__dict__, "sha1": content_hash(path), "error": None}
    except ImageError as exc:
        return {"path": path, "format": None, "width": None, "height": None, "mode": None, "sha1": None,
                "dhash": None, "error": exc.reason}
