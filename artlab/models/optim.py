"""torch's SGD and Adam, built and stepped without importing torch's compiler.

torch's optimisers import the compiler (`torch._dynamo`, 1.3 s) the first time one is built, for `disable` marks
and graph breaks that only matter inside `torch.compile`: every training, every probe and every channel render
paid for it, in every notebook kernel and command. Until the compiler is loaded (by compiling, or any other use),
these classes call torch's own methods without those wrappers, which then do nothing but set the grad mode;
once it is loaded, they go through the wrappers, as torch's classes do. Everything else is torch's.

Build optimisers from here: `from artlab.models.optim import SGD, Adam`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable

COMPILER = "torch._dynamo"
#: Optimizer's methods that torch marks `torch._disable_dynamo` (the mark imports the compiler on first call).
MARKED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _unmarked(marked: Callable) -> Callable:
    """`marked` (a method wrapped by `torch._disable_dynamo`), calling the bare method while the compiler is
    not loaded."""
    bare = inspect.unwrap(marked)

    @functools.wraps(bare)
    def call(*args: Any, **kwargs: Any) -> Any:
        return (marked if COMPILER in sys.modules else bare)(*args, **kwargs)

    return call


def _plain_step(step: Callable) -> Callable:
    """An optimiser's `step`, in the grad mode torch's wrapper sets, without the wrapper's graph breaks (and the
    compiler's import) while the compiler is not loaded."""
    bare = inspect.unwrap(step)  # under torch's grad-mode wrapper (and the step hooks, once a torch one was built)
    with_breaks = _use_grad_for_differentiable(bare)

    @functools.wraps(bare)
    def call(self: Optimizer, closure: Callable[[], float] | None = None) -> Any:
        if COMPILER in sys.modules:
            return with_breaks(self, closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return bare(self, closure)

    return call


def _without_compiler(optimizer: type[Optimizer]) -> type[Optimizer]:
    """`optimizer` (a torch class), as a subclass of the same name whose methods skip the compiler's wrappers
    until the compiler is loaded."""
    methods = {name: _unmarked(getattr(Optimizer, name)) for name in MARKED}
    return type(optimizer.__name__, (optimizer,), {
        **methods, "step": _plain_step(optimizer.step), "__module__": __name__,
        "__doc__": f"torch's {optimizer.__name__}, built and stepped without importing torch's compiler."})


SGD = _without_compiler(torch.optim.SGD)
Adam = _without_compiler(torch.optim.Adam)

__all__ = ["Adam", "SGD"]
