"""Transfer-learning strategies on art: off-the-shelf probe, fine-tuning (first k blocks frozen), scratch.

    from artlab.training import TrainConfig, train
    result = train(TrainConfig(data="synthetic", task="style", strategy="fine_tune", freeze=5))
"""

from artlab.lazy import exports

_API = "artlab.training.api"
__getattr__, __dir__ = exports(__name__, {
    "load_network": "artlab.runs", "run_collection": "artlab.runs",
    **dict.fromkeys(["Predictions", "Reuse", "RunResult", "evaluate_run", "list_runs", "predictions",
                     "prepare_collection", "reusable", "train"], _API),
    "STRATEGIES": "artlab.training.config", "TrainConfig": "artlab.training.config",
    "HEADLINE_METRICS": "artlab.training.metrics", "headline": "artlab.training.metrics"})

__all__ = ["HEADLINE_METRICS", "STRATEGIES", "Predictions", "Reuse", "RunResult", "TrainConfig", "evaluate_run",
           "headline", "list_runs", "load_network", "predictions", "prepare_collection", "reusable", "run_collection",
           "train"]
