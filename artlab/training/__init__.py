"""Transfer-learning strategies on art: off-the-shelf probe, fine-tuning (first k blocks frozen), scratch.

    from artlab.training import TrainConfig, train
    result = train(TrainConfig(data="synthetic", task="style", strategy="fine_tune", freeze=5))
"""

from artlab.runs import index, load_network, run_collection
from artlab.training.api import Predictions, RunResult, evaluate_run, predictions, prepare_collection, train
from artlab.training.config import STRATEGIES, TrainConfig

__all__ = ["STRATEGIES", "Predictions", "RunResult", "TrainConfig", "evaluate_run", "index", "load_network",
           "predictions", "prepare_collection", "run_collection", "train"]
