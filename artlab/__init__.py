"""artlab: how convolutional networks pretrained on photographs transfer to artworks.

The names a notebook needs, importable from the top (each loads its module on first use, so
`import artlab` stays light):

    from artlab import load, TrainConfig, train, run_strategies, Comparison, analyze, topk_browser
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from artlab.version import __version__

#: public name -> (module, attribute in that module)
_API = {
    # collections
    "load": ("artlab.data", "load"),
    "load_synthetic": ("artlab.data", "load_synthetic"),
    "ArtCollection": ("artlab.data", "ArtCollection"),
    # networks
    "build_model": ("artlab.models", "build"),
    "list_models": ("artlab.models", "describe"),
    # runs
    "TrainConfig": ("artlab.training", "TrainConfig"),
    "train": ("artlab.training", "train"),
    "evaluate_run": ("artlab.training", "evaluate_run"),
    "Run": ("artlab.runs", "Run"),
    "list_runs": ("artlab.runs", "index"),
    "load_network": ("artlab.runs", "load_network"),
    # experiments
    "run_strategies": ("artlab.experiments", "run_strategies"),
    "compare_strategies": ("artlab.experiments", "compare_strategies"),
    "audit": ("artlab.experiments", "audit"),
    "double_finetune": ("artlab.experiments", "double_finetune"),
    # what fine-tuning changed
    "Comparison": ("artlab.analysis", "Comparison"),
    "analyze": ("artlab.analysis", "analyze"),
    "several": ("artlab.analysis", "several"),
    # widgets
    "topk_browser": ("artlab.widgets", "topk_browser"),
}

__all__ = ["ArtCollection", "Comparison", "Run", "TrainConfig", "__version__", "analyze", "audit", "build_model",
           "compare_strategies", "double_finetune", "evaluate_run", "list_models", "list_runs", "load", "load_network",
           "load_synthetic", "run_strategies", "several", "topk_browser", "train"]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'artlab' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # for editors and type checkers; at run time the names load lazily
    from artlab.analysis import Comparison, analyze, several
    from artlab.data import ArtCollection, load, load_synthetic
    from artlab.experiments import audit, compare_strategies, double_finetune, run_strategies
    from artlab.models import build as build_model
    from artlab.models import describe as list_models
    from artlab.runs import Run, load_network
    from artlab.runs import index as list_runs
    from artlab.training import TrainConfig, evaluate_run, train
    from artlab.widgets import topk_browser
