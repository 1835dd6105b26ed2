"""Stand-ins: images shrunk for a workshop pack, each answering to the original it was made from.

A pack made with `image_size` carries smaller copies of large images. Beside them, in the collection's
folder, `LINKS_FILE` records for each one the sha1 of its own bytes and the sha1 and signature of its
original. A link holds only while the stand-in's bytes are the recorded ones: an edited or replaced
stand-in is just another image.

The rule for what is computed, one way only:
- a verified stand-in answers to its original: results computed from the original (a run's split, features,
  analyses, attributions) are served for it, so an attendee sees the teacher's results;
- what is computed from a stand-in is keyed by the stand-in's own bytes (`cache.content_id`), so it is never
  served for the original.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from artlab.cache import content_id, file_signature, fingerprint, ids_fingerprint
from artlab.data.images import ImageError, load_rgb
from artlab.io import DamagedFile, read_json, write_json

#: The formats a stand-in keeps from its original, and how each is saved; others become PNG.
SHRUNK_FORMATS = {"JPEG": {"quality": 90}, "PNG": {}, "WEBP": {"quality": 90}}
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
    in its own format where that is JPEG, PNG or WebP (else PNG). False, writing nothing, for an image already that
    small or one that cannot be read (packed as it is: the image check says why where it is used)."""
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


def write_links(root: str | Path, originals: dict[str, Original], image_size: int) -> Path:
    """Write the links of the stand-ins under `root` (relative path with / -> its Original), atomically."""
    path = Path(root) / LINKS_FILE
    write_json(path, {"format": LINKS_FORMAT, "image_size": image_size,
                      "images": {name: vars(original) for name, original in sorted(originals.items())}})
    return path


def original_of(path: str | os.PathLike) -> Original | None:
    """The original of a verified stand-in (its bytes are those its link records); None for any other file."""
    return _verified(path, _links_near(Path(os.path.abspath(path)).parent))


def original_id(path: str | os.PathLike) -> str:
    """What a file stands for: its original's sha1 for a verified stand-in, else its own (`cache.content_id`)."""
    original = original_of(path)
    return original.sha1 if original is not None else content_id(path)


def original_fingerprint(paths: list[str]) -> str | None:
    """`cache.fingerprint` of the originals that `paths` stand for; None when none of them is a stand-in (the
    caller then has only its own fingerprint to look up)."""
    near: dict[str, tuple[Path, dict[str, Original]] | None] = {}  # each folder's links looked up once
    originals = []
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in near:
            near[folder] = _links_near(Path(folder))
        originals.append(_verified(path, near[folder]))
    if not any(originals):
        return None
    return ids_fingerprint(original.sha1 if original else content_id(path) for path, original in zip(paths, originals))


def fingerprints(paths: list[str]) -> list[str]:
    """The fingerprints under which results over `paths` are served, best first: their originals' when some of them
    are stand-ins, then their own (`cache.fingerprint`). Results computed here are stored under the last."""
    own = fingerprint(paths)
    original = original_fingerprint(paths)
    return [original, own] if original is not None and original != own else [own]


def _verified(path: str | os.PathLike, found: tuple[Path, dict[str, Original]] | None) -> Original | None:
    """`path`'s original in the links `found` (folder, links), if its bytes are the recorded stand-in's."""
    if found is None:
        return None
    root, links = found
    try:
        original = links.get(Path(os.path.abspath(path)).relative_to(root).as_posix())
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
    """A links file's links, or DamagedFile naming it (remove it and the stand-ins count as images of their own)."""
    record = read_json(path)
    try:
        if record.get("format", LINKS_FORMAT) > LINKS_FORMAT:
            raise DamagedFile(f"{path} was written by a later artlab (format {record['format']}): update artlab")
        return {name: Original(**fields) for name, fields in record["images"].items()}
    except (AttributeError, KeyError, TypeError) as exc:
        raise DamagedFile(f"{path} is damaged ({type(exc).__name__}: {exc}); remove it, and its images count as "
                          f"images of their own") from None
