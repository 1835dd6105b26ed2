"""artlab: how convolutional networks pretrained on photographs transfer to artworks.

The names a notebook needs, importable from the top (each loads its module on first use, so
`import artlab` stays light):

    from artlab import load, TrainConfig, train, run_strategies, Comparison, analyze, topk_browser
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from artlab.lazy import exports
from artlab.version import __version__

#: public name -> (module, attribute in that module)
_API = {
    # collections
    "load": ("artlab.data", "load"),
    "load_synthetic": ("artlab.data", "load_synthetic"),
    "ArtCollection": ("artlab.data", "ArtCollection"),
    "collection_summary": ("artlab.data", "collection_summary"),
    # networks
    "build_model": ("artlab.models", "build"),
    "list_models": ("artlab.models", "describe"),
    # runs
    "TrainConfig": ("artlab.training", "TrainConfig"),
    "train": ("artlab.training", "train"),
    "evaluate_run": ("artlab.training", "evaluate_run"),
    "Run": ("artlab.runs", "Run"),
    "Network": ("artlab.runs", "Network"),
    "list_runs": ("artlab.training", "list_runs"),
    "load_network": ("artlab.runs", "load_network"),
    # experiments
    "run_strategies": ("artlab.experiments", "run_strategies"),
    "compare_strategies": ("artlab.experiments", "compare_strategies"),
    "audit": ("artlab.experiments", "audit"),
    "double_finetune": ("artlab.experiments", "double_finetune"),
    "multitask_study": ("artlab.experiments", "multitask_study"),
    "notebook_settings": ("artlab.experiments", "notebook_settings"),
    "sweep": ("artlab.experiments", "sweep"),
    # what fine-tuning changed
    "Comparison": ("artlab.analysis", "Comparison"),
    "analyze": ("artlab.analysis", "analyze"),
    "several": ("artlab.analysis", "several"),
    "collection_distance": ("artlab.analysis", "collection_distance"),
    # widgets
    "topk_browser": ("artlab.widgets", "topk_browser"),
}

__all__ = ["ArtCollection", "Comparison", "Network", "Run", "TrainConfig", "__version__", "analyze", "audit",
           "build_model", "collection_distance", "collection_summary", "compare_strategies", "double_finetune",
           "evaluate_run", "list_models", "list_runs", "load", "load_network", "load_synthetic", "multitask_study",
           "notebook_settings", "run_strategies", "several", "sweep", "topk_browser", "train"]


__getattr__, __dir__ = exports(__name__, {name: f"{module}:{attribute}" for name, (module, attribute) in _API.items()})


if TYPE_CHECKING:  # for editors and type checkers; at run time the names load lazily
    from artlab.analysis import Comparison, analyze, collection_distance, several
    from artlab.data import ArtCollection, collection_summary, load, load_synthetic
    from artlab.experiments import (
        audit,
        compare_strategies,
        double_finetune,
        multitask_study,
        notebook_settings,
        run_strategies,
        sweep,
    )
    from artlab.models import build as build_model
    from artlab.models import describe as list_models
    from artlab.runs import Network, Run, load_network
    from artlab.training import TrainConfig, evaluate_run, list_runs, train
    from artlab.widgets import topk_browser
