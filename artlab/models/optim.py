"""torch's SGD and Adam, built and stepped without importing torch's compiler.

torch's optimisers import the compiler (`torch._dynamo`, 1.3 s) when the first one is built and when it first
steps, for `disable` marks and graph breaks that only matter inside `torch.compile`: every training, every
linear head and every channel render paid for it, in every notebook kernel and command. Until the compiler is
loaded (by compiling, or any other use), these classes call torch's own methods under those wrappers, which
then do nothing but set the grad mode; once it is loaded, or while compiling, they go through the wrappers, as
torch's classes do. A method whose wrappers are not the ones known here (another torch) is left as torch has it.

Build optimisers from here: `from artlab.models.optim import SGD, Adam`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable

#: torch's compiler, the module whose presence says it is in use (artlab.models.vision defers it too).
COMPILER = "torch._dynamo"
#: Optimizer's methods that torch marks `torch._disable_dynamo` (the mark imports the compiler on first call).
MARKED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
#: The code of torch's wrappers that may sit over those methods and `step`: the `disable` mark, the grad-mode
#: wrapper with its graph breaks, and the step hooks (put over `step` when the first optimiser of a class is built).
KNOWN_WRAPPERS = frozenset(wrapper(lambda *a: None).__code__ for wrapper in
                           (torch._disable_dynamo, _use_grad_for_differentiable, Optimizer.profile_hook_step))
_Class = TypeVar("_Class", bound=type[Optimizer])


def _compiling() -> bool:
    """Whether torch's wrappers matter: while compiling, or once the compiler is loaded."""
    return torch.compiler.is_compiling() or COMPILER in sys.modules


def bare(method: Callable) -> Callable | None:
    """The function under `method`'s wrappers when every one of them is a known torch wrapper, else None."""
    while hasattr(method, "__wrapped__"):
        if getattr(method, "__code__", None) not in KNOWN_WRAPPERS:
            return None
        method = method.__wrapped__
    return method


def _unmarked(marked: Callable) -> Callable:
    """`marked` (a method under `torch._disable_dynamo`), calling the bare method until the compiler is loaded."""
    plain = bare(marked)
    if plain is None or plain is marked:
        return marked

    @functools.wraps(plain)
    def call(*args: Any, **kwargs: Any) -> Any:
        return (marked if _compiling() else plain)(*args, **kwargs)

    return call


def _plain_step(step: Callable) -> Callable:
    """An optimiser's `step` in the grad mode torch's wrapper sets, without the wrapper's graph breaks (and the
    compiler's import) until the compiler is loaded. The step hooks are put over it as over torch's."""
    plain = bare(step)
    if plain is None or plain is step:
        return step
    with_breaks = _use_grad_for_differentiable(plain)

    @functools.wraps(plain)
    def call(self: Optimizer, closure: Callable[[], float] | None = None) -> Any:
        if _compiling():
            return with_breaks(self, closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, closure)

    return call


def _without_compiler(optimizer: _Class) -> _Class:
    """`optimizer` (a torch class), as a subclass of the same name and documentation whose methods skip the
    compiler's wrappers until the compiler is loaded."""
    methods = {name: _unmarked(getattr(optimizer, name)) for name in MARKED}
    return type(optimizer.__name__, (optimizer,), {
        **methods, "step": _plain_step(optimizer.step), "__module__": __name__, "__doc__": optimizer.__doc__})


SGD = _without_compiler(torch.optim.SGD)
Adam = _without_compiler(torch.optim.Adam)

__all__ = ["Adam", "SGD", "bare"]
