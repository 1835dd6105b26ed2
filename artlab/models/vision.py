"""torchvision and its v2 transforms, imported without torch's compiler.

Importing torchvision loads torch's compiler (`torch._dynamo`) twice over: its RoI-align op takes a function from
`torch._dynamo.utils`, and its v2 transforms mark `tv_tensors.wrap` with `@torch.compiler.disable`. That is 1.2 s
of the 3 s a command or a notebook kernel spends starting, for code that artlab never runs (RoI-align; `wrap` is
called on TVTensors, not on the plain tensors artlab transforms). While torchvision is imported, both entry points
are stand-ins that load the compiler on their first real use and then do exactly what the originals do; once it
is imported, they are torch's own again, so `torch.compile` and every later import get the real compiler.

Import torchvision through this module: `from artlab.models.vision import T, torchvision`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.compiler

from artlab.lazy import stand_in
from artlab.models.optim import COMPILER

#: torch's own `torch.compiler.disable`, which the deferred one applies (never itself, should a call come while
#: a `compiler_deferred` block has swapped them).
TORCH_DISABLE = torch.compiler.disable


@contextmanager
def compiler_deferred() -> Iterator[None]:
    """Within the block, `torch._dynamo.utils` (its `is_compile_supported`) and `torch.compiler.disable` are
    stand-ins that import nothing until used (nothing changes when the compiler is already loaded)."""
    if COMPILER in sys.modules:
        yield
        return
    torch.compiler.disable = _deferred_disable
    try:
        with stand_in(f"{COMPILER}.utils", "is_compile_supported"):
            yield
    finally:
        if torch.compiler.disable is _deferred_disable:
            torch.compiler.disable = TORCH_DISABLE


def _deferred_disable(fn: Callable | None = None, recursive: bool = True, *, reason: str | None = None) -> Any:
    """`torch.compiler.disable`, applied on the function's first call (the compiler is imported then)."""
    if fn is None:
        return functools.partial(_deferred_disable, recursive=recursive, reason=reason)
    disabled: Callable | None = None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if disabled is None:
            disabled = TORCH_DISABLE(fn, recursive, reason=reason)
        return disabled(*args, **kwargs)

    return call


with compiler_deferred():
    import torchvision
    from torchvision.transforms import v2 as T

__all__ = ["T", "compiler_deferred", "torchvision"]
