"""Where artlab keeps what it can recompute, and the one way it names things: file signatures and digests.

Every cache key in artlab is `digest(spec)` of a JSON-able description of what was computed; every
network's weights are named by `tensors_digest`; whole files by `file_digest`. One home each, so two
caches can never hash the same thing two ways.

Every cache entry also carries the checksum of its payload (`payload_checksum`, in the entry's
metadata, written by `sealed`) and is checked on every read (`load_checked`): an entry whose
checksum is missing or does not match, that holds non-finite values, or that cannot be read is
never served; it is computed again, and a damaged one says so in one warning line. Non-finite
values are never written (`save_checked`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

#: Bytes read from each end of a file for its signature.
SIGNATURE_BYTES = 8192
#: Hex digits of a cache key or weights digest.
DIGEST_LENGTH = 24
#: The metadata field of a cache entry that holds its payload's checksum.
CHECKSUM_FIELD = "artlab_payload_sha256"
#: Why an entry is not served when it has no checksum (written by an older artlab): recomputed without a warning.
UNCHECKED = "no checksum"

Tensors = dict[str, torch.Tensor]


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


#: A file's signature (path, size, time, ends) -> the sha1 of its bytes, for this process (see `content_id`).
_CONTENT: dict[str, str] = {}


def content_id(path: str | os.PathLike) -> str:
    """What a file holds, wherever it lies: the sha1 of its bytes. A file seen again in this process with the same
    signature is not read again; an edited one is."""
    signature = f"{os.fspath(path)}\0{file_signature(path)}"
    if signature not in _CONTENT:
        try:
            _CONTENT[signature] = file_digest(path, "sha1")
        except PermissionError:  # named by where it is until it can be read (the image check says why)
            return f"unreadable\0{signature}"
    return _CONTENT[signature]


def fingerprint(paths: list[str]) -> str:
    """Identifies a list of files by content and order, wherever they lie: the same images moved to another folder
    or machine keep it (a cache made there serves here); an edited, replaced or truncated file changes it."""
    return ids_fingerprint(content_id(path) for path in paths)


def ids_fingerprint(ids: Iterable[str]) -> str:
    """`fingerprint` of files known by their content ids."""
    hasher = hashlib.sha256()
    for content in ids:
        hasher.update(f"{content}\n".encode())
    return hasher.hexdigest()


# ---- checked cache entries -------------------------------------------------------------------------------
def payload_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """The checksum of a cache entry's payload: `tensors_digest` of its tensors in name order (sha256 of every
    name, shape, dtype and byte), so the order they were stored or read in does not matter."""
    return tensors_digest({name: tensors[name] for name in sorted(tensors)})


def json_tensor(data: Any) -> torch.Tensor:
    """`data` as JSON bytes in a uint8 tensor, so that a cache entry's checksum covers it too."""
    text = json.dumps(data, default=lambda value: value.item() if hasattr(value, "item") else str(value))
    return torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)


def tensor_json(tensor: torch.Tensor) -> Any:
    """What `json_tensor` stored."""
    return json.loads(bytes(tensor.tolist()).decode())


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity."""
    return [name for name, tensor in tensors.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def sealed(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> dict[str, str]:
    """`metadata` plus the payload's checksum, to write with a cache entry; non-finite values are refused."""
    if bad := non_finite(tensors):
        raise ValueError(f"{', '.join(bad)} hold non-finite values (NaN or infinity): not written to the cache")
    return {**(metadata or {}), CHECKSUM_FIELD: payload_checksum(tensors)}


def payload_problem(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str | None:
    """Why a cache entry read back must not be served (None when it may): `UNCHECKED`, a checksum mismatch or
    non-finite values."""
    if CHECKSUM_FIELD not in metadata:
        return UNCHECKED
    if payload_checksum(tensors) != metadata[CHECKSUM_FIELD]:
        return "checksum mismatch"
    if non_finite(tensors):
        return "non-finite values"
    return None


def damaged_entry(what: str, problem: str, path: str | os.PathLike, again: str = "computed again") -> None:
    """Say, in one warning line, that a damaged cache entry is not used and its content is `again`."""
    warnings.warn(f"the cached {what} were damaged ({problem}) and are {again} (cache entry {path})",
                  RuntimeWarning, stacklevel=3)


def load_checked(path: str | os.PathLike, what: str,
                 load: Callable[[Path], tuple[Tensors, dict[str, str]]]) -> Tensors | None:
    """The tensors of the cache entry at `path`, read by `load` (artlab.io.load_tensors); None when there is none
    or it fails its check: the caller then computes it again. A damaged entry (checksum mismatch, non-finite
    values, unreadable file) says so in one warning line naming `what` (plural: "features of ..."); an entry
    written before checksums is recomputed quietly."""
    path = Path(path)
    try:
        tensors, metadata = load(path)
    except FileNotFoundError:
        return None
    except ValueError:  # artlab.io.DamagedFile: truncated, emptied, not safetensors
        problem: str | None = "unreadable file"
    except OSError:  # unreadable now (permissions, removed meanwhile): recomputed, not damaged
        return None
    else:
        problem = payload_problem(tensors, metadata)
    if problem is None:
        return tensors
    if problem != UNCHECKED:
        damaged_entry(what, problem, path)
    return None


def load_first_checked(paths: Iterable[str | os.PathLike], what: str,
                       load: Callable[[Path], tuple[Tensors, dict[str, str]]]) -> Tensors | None:
    """`load_checked` of the first of `paths` (the best key first: a stand-in's original's, then its own) that is
    cached and passes its check; None when none does."""
    for path in paths:
        tensors = load_checked(path, what, load)
        if tensors is not None:
            return tensors
    return None


def save_checked(path: str | os.PathLike, tensors: Tensors, metadata: Mapping[str, str], what: str,
                 save: Callable[[Path, Tensors, dict[str, str]], None]) -> bool:
    """Write a cache entry with `save` (artlab.io.save_tensors: atomically) and its payload checksum; an entry
    with non-finite values is refused, in one warning line. Whether it was written."""
    if non_finite(tensors):
        warnings.warn(f"the {what} hold non-finite values (NaN or infinity) and are not cached", RuntimeWarning,
                      stacklevel=2)
        return False
    save(Path(path), tensors, sealed(tensors, metadata))
    return True
