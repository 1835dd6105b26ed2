"""Transfer-learning strategies on art: off-the-shelf probe, fine-tuning (first k blocks frozen), scratch.

    from artlab.training import TrainConfig, train
    result = train(TrainConfig(data="synthetic", task="style", strategy="fine_tune", freeze=5))
"""

from artlab.runs import load_network, run_collection
from artlab.training.api import (
    Predictions,
    Reuse,
    RunResult,
    evaluate_run,
    list_runs,
    predictions,
    prepare_collection,
    reusable,
    train,
)
from artlab.training.config import STRATEGIES, TrainConfig
from artlab.training.metrics import HEADLINE_METRICS, headline

__all__ = ["HEADLINE_METRICS", "STRATEGIES", "Predictions", "Reuse", "RunResult", "TrainConfig", "evaluate_run",
           "headline", "list_runs", "load_network", "predictions", "prepare_collection", "reusable", "run_collection",
           "train"]
