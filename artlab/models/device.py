"""Where networks run: the best device here, or the one a user named (no torchvision: every command asks)."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when present, else CPU (Apple's MPS when available)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' -> the best device here; anything else as torch reads it (a clear ValueError otherwise)."""
    if str(name) == "auto":
        return default_device()
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:1', 'mps', ..., not {name!r}") from None
