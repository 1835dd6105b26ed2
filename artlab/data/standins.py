"""Stand-ins: images shrunk for a workshop pack, each answering to the original it was made from.

A pack made with `image_size` carries smaller copies of large images. Beside them, in the collection's
folder, `LINKS_FILE` records for each one the sha1 of its own bytes and the sha1 and signature of its
original. A link holds only while the stand-in's bytes are the recorded ones: an edited or replaced
stand-in is just another image.

The rule for what is computed, one way only:
- a verified stand-in answers to its original: results computed from the original (a run's split, features,
  analyses, attributions) are served for it, so an attendee sees the teacher's results;
- what is computed from a stand-in is keyed by the stand-in's own bytes (`cache.content_id`), so it is never
  served for the original; a run is never resumed on stand-ins, and evaluations say how many they met.
The leak guard counts a stand-in as its original, and a pack made from an unpacked pack links its stand-ins to
their first originals.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from artlab.cache import content_id, file_signature, ids_fingerprint
from artlab.data.images import ImageError, load_rgb
from artlab.io import read_json, write_json

#: The formats a stand-in keeps from its original, and how each is saved (a GIF: its first frame); others become PNG
#: under the original's name (artlab reads images by content).
SHRUNK_FORMATS = {"JPEG": {"quality": 90}, "PNG": {}, "WEBP": {"quality": 90}, "TIFF": {}, "BMP": {}, "GIF": {}}
#: The links of a collection's stand-ins, in the collection's folder.
LINKS_FILE = ".artlab-standins.json"
LINKS_FORMAT = 1

#: A links file's path and signature -> its links (relative path -> Original), for this process.
_LINKS: dict[tuple[str, str], dict[str, Original]] = {}


@dataclass(frozen=True)
class Original:
    """The image a stand-in was made from: its sha1 (`cache.content_id`) and file signature (`cache.file_signature`),
    and the sha1 the stand-in's own bytes must have for the link to hold."""

    sha1: str
    signature: str
    standin_sha1: str


def shrink(source: Path, target: Path, image_size: int) -> bool:
    """Write `source` at most `image_size` pixels on its longer side to `target`, as artlab sees it (upright RGB),
    in its own format (`SHRUNK_FORMATS`). False, writing nothing, for an image already that small or one that cannot
    be read (packed as it is: the image check says why where it is used)."""
    try:
        with Image.open(source) as probe:
            if max(probe.size) <= image_size:
                return False
            kind = probe.format if probe.format in SHRUNK_FORMATS else "PNG"
        img = load_rgb(source, max_side=image_size)
    except (OSError, ImageError, Image.DecompressionBombError):
        return False
    img.thumbnail((image_size, image_size), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    img.save(target, format=kind, **SHRUNK_FORMATS.get(kind, {}))
    return True


def write_links(path: str | Path, links: dict[str, Original]) -> Path:
    """Write a links file (relative path with / -> its Original), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": LINKS_FORMAT,
                      "images": {name: vars(original) for name, original in sorted(links.items())}})
    return path


def merged_links(here: Path, arriving: bytes) -> dict[str, Original]:
    """The links of the links file `here` and of one `arriving` in a pack, together (two packs of one collection
    unpacked into one place); ValueError naming an image the two link to different originals or stand-ins."""
    mine, theirs = _parse_links(read_json(here)), _parse_links(json.loads(arriving))
    clash = next((name for name in mine.keys() & theirs.keys() if mine[name] != theirs[name]), None)
    if clash is not None:
        raise ValueError(f"{here} links {clash} to another original or stand-in than the pack does")
    return mine | theirs


def original_of(path: str | os.PathLike) -> Original | None:
    """The original of a verified stand-in (its bytes are those its link records); None for any other file."""
    return originals([path])[0]


def originals(paths: Iterable[str | os.PathLike]) -> list[Original | None]:
    """`original_of` each path, each folder's links looked up once."""
    near: dict[str, tuple[Path, dict[str, Original]] | None] = {}
    found = []
    for path in paths:
        absolute = os.path.abspath(path)
        folder = os.path.dirname(absolute)
        if folder not in near:
            near[folder] = _links_near(Path(folder))
        found.append(_verified(absolute, near[folder]))
    return found


def original_id(path: str | os.PathLike) -> str:
    """What a file stands for: its original's sha1 for a verified stand-in, else its own (`cache.content_id`)."""
    original = original_of(path)
    return original.sha1 if original is not None else content_id(path)


def fingerprints(paths: list[str]) -> list[str]:
    """The fingerprints under which results over `paths` are served, best first: their originals' when some of them
    are stand-ins, then their own (`cache.fingerprint`). Results computed here are stored under the last."""
    own = [content_id(path) for path in paths]
    stood_for = [original.sha1 if original else mine for original, mine in zip(originals(paths), own)]
    return [ids_fingerprint(stood_for), ids_fingerprint(own)] if stood_for != own else [ids_fingerprint(own)]


def _verified(path: str, found: tuple[Path, dict[str, Original]] | None) -> Original | None:
    """`path`'s (absolute) original in the links `found` (folder, links), if its bytes are the recorded stand-in's."""
    if found is None:
        return None
    root, links = found
    try:
        original = links.get(Path(path).relative_to(root).as_posix())
        return original if original is not None and content_id(path) == original.standin_sha1 else None
    except (OSError, ValueError):
        return None


def _links_near(folder: Path) -> tuple[Path, dict[str, Original]] | None:
    """The links file in `folder` or the nearest folder above it that has one, with the folder it is in."""
    for place in (folder, *folder.parents):
        candidate = place / LINKS_FILE
        try:
            key = (str(candidate), file_signature(candidate))
        except OSError:
            continue
        if key not in _LINKS:
            _LINKS[key] = _read_links(candidate)
        return place, _LINKS[key]
    return None


def _read_links(path: Path) -> dict[str, Original]:
    """A links file's links. A damaged or unreadable one says so in one warning line and links nothing: its
    stand-ins count as images of their own (runs then call them changed), and nothing else is stopped."""
    try:
        return _parse_links(read_json(path))
    except (OSError, ValueError) as exc:  # DamagedFile is a ValueError
        warnings.warn(f"{path} is damaged or unreadable ({exc}): the stand-ins it links count as images of their "
                      f"own; unpack the workshop pack again to restore it", RuntimeWarning, stacklevel=2)
        return {}


def _parse_links(record: Any) -> dict[str, Original]:
    """The links of a links file's JSON; ValueError saying what is wrong with it."""
    try:
        if record.get("format", LINKS_FORMAT) > LINKS_FORMAT:
            raise ValueError(f"written by a later artlab (format {record['format']}): update artlab")
        links = {name: Original(**fields) for name, fields in record["images"].items()}
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if not all(isinstance(v, str) for link in links.values() for v in vars(link).values()):
        raise ValueError("a link whose fields are not text")
    return links
