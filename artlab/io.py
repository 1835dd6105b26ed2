"""Files that are never half-written: atomic text, JSON, YAML, CSV and safetensors, and their readers.

Every writer goes through `atomic_path`: the content lands in a temporary file beside the target,
is flushed to disk, and only then replaces the target. A process killed mid-write leaves the old
file (or none) plus a `.<name>.*.part` file that no reader ever opens. This module imports
nothing else from artlab: every layer may use it (and neither pandas nor torch until asked), also for
`usable_cores`, the cores its readers and workers may share.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

#: YAML's safe loader in C where PyYAML was built with libyaml (7x faster on a run's config), else in Python.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

if TYPE_CHECKING:  # pandas and torch load with the first table or tensor written: the command line starts at once
    import pandas as pd
    import torch


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share), not all the machine has."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class DamagedFile(ValueError):
    """A file artlab wrote earlier cannot be read back (truncated, emptied or edited by hand)."""


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_partial_files(folder: str | Path) -> None:
    """Delete the `.*.part` files a killed writer left in `folder` (they are never read)."""
    for stale in Path(folder).glob(".*.part"):
        stale.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def to_json(data: Any) -> str:
    """JSON text for `data`, numpy and torch scalars and arrays included."""
    return json.dumps(data, indent=2, default=_jsonable)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, to_json(data) + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a damaged one raises DamagedFile naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path} is damaged (not valid JSON: {exc})") from None


def write_yaml(path: str | Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a damaged one raises DamagedFile naming it."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path} is damaged (not valid YAML: {exc})") from None


def write_csv(path: str | Path, table: pd.DataFrame, index: bool = False) -> None:
    """Write a DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (contiguous CPU copies, so shared storage is fine)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file, reading only its header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a truncated or empty header
        raise DamagedFile(f"{path} is damaged (not a readable safetensors file: {exc})") from None


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file, in one read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DamagedFile(f"{path} is damaged (not a readable safetensors file: {exc})") from None
