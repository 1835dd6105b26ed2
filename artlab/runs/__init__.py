"""The run store: run folders and their life, their splits and checkpoints, the run index, and which network.

    Run (folder.py)        a run folder: open, record the collection, save models, finish; its lock
    split.py               the exact images, labels and split a run trained on
    checkpoint.py          model + optimiser state after the last finished epoch
    index.py               every run under a root as one row
    network.py             Network: "imagenet", "random", a run or a model, named once
"""

from artlab.runs.checkpoint import CHECKPOINT_FILE
from artlab.runs.folder import MODEL_FILE, Run, RunBusy, RunLock, as_run, check_name, environment, runs_root
from artlab.runs.index import index, status
from artlab.runs.network import IMAGENET, RANDOM, Network, load_network, run_collection

__all__ = ["CHECKPOINT_FILE", "IMAGENET", "MODEL_FILE", "RANDOM", "Network", "Run", "RunBusy", "RunLock", "as_run",
           "check_name", "environment", "index", "load_network", "run_collection", "runs_root", "status"]
