"""Imports paid for when used: packages whose names load their module on first use (PEP 562), so that importing one
light module of a package, e.g. `artlab.training.config` for the command line's options, does not import torch
through its siblings; and stand-ins for modules that other packages import and almost never use."""

from __future__ import annotations

import atexit
import gc
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: each public name (name -> "module" or "module:attribute") is
    imported from its module the first time it is asked for, then kept in the package."""
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = names[name].partition(":")
        loaded = len(sys.modules)
        with collector_paused():
            value = getattr(importlib.import_module(module), attribute or name)
        setattr(importlib.import_module(package), name, value)  # later look-ups skip this function
        if len(sys.modules) > loaded and "torch" in sys.modules:
            settle_imports()
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(names))

    return __getattr__, __dir__


@contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage collection while the block runs (the collector is on again after it, if it was): importing torch,
    pandas and scikit-learn makes some 300,000 objects that live as long as the process, and the collector's passes
    over them as they are made find no garbage (0.2 s of `import torch` alone); `settle_imports` collects once
    afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_settled = False


def settle_imports() -> None:
    """Once per process, at the first use of artlab's API that loaded torch: collect the garbage there is, then leave
    every object still alive out of later collections (`gc.freeze`). torch, pandas and plotly bring 230,000 objects that
    live as long as the process, and each full collection, the last one at exit too, would walk them all for nothing: a
    process ends 0.48 s sooner, a notebook's kernel showing finished runs spends 1 s less CPU. Later calls do nothing,
    so what a notebook or a test makes afterwards is collected as usual while it runs. What it costs: an object alive at
    that moment (made before the first artlab import) and later dropped in a reference cycle is never collected, and
    `gc.get_referrers` no longer sees it (IPython's %autoreload leaves its class as it was). The collector's passes at
    exit are left out too (`collect_nothing_at_exit`)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    collect_nothing_at_exit()


_exit_handled = False


def collect_nothing_at_exit() -> None:
    """Once per process: the garbage collector leaves out what is alive when the process exits (`gc.freeze` as an exit
    handler). Its last passes would walk every object alive that `settle_imports` did not leave out (all of them where
    it did not run), only to free memory that the system frees at once: a notebook's kernel or a training command ends
    0.1 s sooner (0.27 s against 0.40 s after a fine-tuning, benchmarks/exit_speed.py). Exit handlers registered before
    this call run after it, and objects still drop with their last reference (an unclosed file is flushed so). What it
    costs: an object left in a reference cycle at exit is not finalised (a half-read generator's `finally` does not
    run), which Python does not promise anyway."""
    global _exit_handled
    if not _exit_handled:
        _exit_handled = True
        atexit.register(gc.freeze)


@contextmanager
def stand_in(module: str, *names: str) -> Iterator[None]:
    """While the block runs, `module` (not yet imported) is a stand-in whose `names` are functions that import the
    real module when first called and return what its own would: code imported in the block that takes them
    (`from module import name`) gets the real behaviour, later, without paying for the import now. Any other name
    asked of the stand-in (not a dunder such as `__version__`) imports the real module at once. After the block,
    `module` imports as usual.

    For optional imports that third-party packages make at import time and almost never use (see
    `import_jsonschema`, `artlab.models.vision`). A top-level module that is not installed is left absent. The
    functions taken are plain forwarders: they take any arguments, and they do not pickle by reference.
    """
    if module in sys.modules or ("." not in module and importlib.util.find_spec(module) is None):
        yield
        return
    placeholder = types.ModuleType(module, f"artlab's stand-in for {module} (artlab.lazy.stand_in)")

    def real() -> types.ModuleType:
        if sys.modules.get(module) is placeholder:
            del sys.modules[module]
        return importlib.import_module(module)

    def deferred(name: str) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(real(), name)(*args, **kwargs)
        call.__name__ = call.__qualname__ = name
        return call

    def __getattr__(name: str) -> Any:  # not what `inspect` asks of every module (`__file__`, ...)
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    for name in names:
        setattr(placeholder, name, deferred(name))
    placeholder.__getattr__ = __getattr__
    sys.modules[module] = placeholder
    try:
        yield
    finally:
        if sys.modules.get(module) is placeholder:
            del sys.modules[module]


def import_jsonschema() -> None:
    """Import jsonschema (nbformat imports it, and so plotly's notebook renderer and papermill) without the 1 s its
    optional IRI checker, `rfc3987_syntax`, spends compiling 39 grammars on import; they are compiled if an IRI is
    ever validated. Nothing happens where jsonschema is not installed or already imported."""
    if "jsonschema" in sys.modules or importlib.util.find_spec("jsonschema") is None:
        return
    with stand_in("rfc3987_syntax", "is_valid_syntax"):
        importlib.import_module("jsonschema")
