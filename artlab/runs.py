"""Run folders: config, environment, history, metrics, model and split, written atomically.

A run lives in `runs/<name>/`:
    config.yaml      the exact configuration
    environment.json versions, device and seed
    split.csv        the images, labels and split used
    history.csv      one row per finished epoch
    checkpoint.safetensors  model + optimiser + scheduler state after the last finished epoch
    model.safetensors       the final (best-on-validation) model, its ModelCard in the header
    metrics.json     final test metrics (present only once the run has finished)
Nothing here is unpickled: tensors are safetensors, everything else JSON/YAML/CSV. This is the
layer that turns a run folder back into a network and a collection, for training and analyses alike.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.data.layouts import from_manifest
from artlab.io import load_tensors, read_json, read_yaml, save_tensors, to_json, write_csv, write_yaml
from artlab.models import ModelCard

RUNS_DIR = Path("runs")
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Separator of multi-label cells in split.csv.
LABEL_SEPARATOR = "|"


def environment(seed: int, device: str) -> dict:
    """Versions and settings that a result depends on."""
    import numpy
    import sklearn
    import torchvision

    from artlab.version import __version__

    return {"artlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__,
            "platform": platform.platform(), "device": device, "seed": seed,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


class Run:
    """One run folder and the files in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def named(cls, name: str, root: str | Path | None = None) -> Run:
        return cls(Path(root or RUNS_DIR) / name)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def finished(self) -> bool:
        return self.file("metrics.json").is_file()

    def config(self) -> dict:
        path = self.file("config.yaml")
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} is not a run folder: no config.yaml")
        return read_yaml(path)

    def write_config(self, config: dict) -> None:
        write_yaml(self.file("config.yaml"), config)

    def metrics(self) -> dict:
        return read_json(self.file("metrics.json"))

    def history(self) -> pd.DataFrame:
        path = self.file("history.csv")
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def write_history(self, rows: list[dict]) -> None:
        write_csv(self.file("history.csv"), pd.DataFrame(rows))

    def card(self) -> ModelCard:
        """What the run's saved model is (read from the file header only)."""
        path = self.file(MODEL_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no {MODEL_FILE} yet: the run has not saved a model")
        return ModelCard.read(path)

    def save_model(self, tensors: dict[str, torch.Tensor], card: ModelCard) -> None:
        save_tensors(self.file(MODEL_FILE), tensors, card.to_metadata())

    def load_model(self) -> tuple[dict[str, torch.Tensor], ModelCard]:
        """The saved tensors and card, in one read of the file."""
        tensors, meta = load_tensors(self.file(MODEL_FILE))
        return tensors, ModelCard.from_metadata(meta, self.file(MODEL_FILE))


def as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


def load_network(run: Run | str | Path) -> nn.Module:
    """The trained network of a fine-tune or scratch run (best-on-validation weights), in eval mode.

    The model carries its card as `model.artlab_card` (tasks, classes, image size).
    """
    run = as_run(run)
    tensors, card = run.load_model()
    if card.kind != "network":
        raise ValueError(f"{run.path} holds a {card.kind}, not a trained network (off-the-shelf runs "
                         f"keep only a linear classifier on ImageNet features)")
    model = models.build(card.arch, pretrained=False, num_classes=len(card.task_classes(card.tasks[0])))
    model.load_state_dict(tensors)
    model.artlab_card = card
    return model.eval()


def run_collection(run: Run | str | Path, card: ModelCard | None = None) -> ArtCollection:
    """The exact images, labels and split a run used (from its split.csv)."""
    run = as_run(run)
    card = card or run.card()
    multi = [t for t in card.tasks if card.multi_label[t]]
    single = [t for t in card.tasks if not card.multi_label[t]]
    collection = from_manifest(run.file("split.csv"), single, path_column="path", name=run.name)
    if multi:
        tagged = from_manifest(run.file("split.csv"), multi, path_column="path", separator=LABEL_SEPARATOR)
        for task in multi:
            collection.table[task] = tagged.table[task]
        collection.multi_label = {t: card.multi_label[t] for t in card.tasks}
    return collection


def save_checkpoint(run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: dict) -> None:
    """Model, optimiser and scheduler state plus a JSON `state` (epoch, history, ...) in one atomic file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
    meta = {"state": to_json(state),
            "param_groups": json.dumps(opt["param_groups"]),
            "optim_scalars": json.dumps({f"{i}.{k}": v for i, vs in opt["state"].items()
                                         for k, v in vs.items() if not isinstance(v, torch.Tensor)}),
            "scheduler": to_json(scheduler.state_dict() if scheduler is not None else None)}
    save_tensors(run.file(CHECKPOINT_FILE), tensors, meta)


def load_checkpoint(run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict | None:
    """Restore what save_checkpoint wrote; returns its `state`, or None when there is no checkpoint."""
    path = run.file(CHECKPOINT_FILE)
    if not path.is_file():
        return None
    tensors, meta = load_tensors(path)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    for key, value in json.loads(meta["optim_scalars"]).items():
        index, name = key.split(".", 1)
        optim_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": json.loads(meta["param_groups"])})
    scheduler_state = json.loads(meta["scheduler"])
    if scheduler is not None and scheduler_state is not None:
        scheduler.load_state_dict(scheduler_state)
    return json.loads(meta["state"])


#: The test metrics shown wherever runs are compared (run index, CLI, strategy tables).
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "top3_accuracy", "top5_accuracy", "mAP")


def index(root: str | Path | None = None) -> pd.DataFrame:
    """Every run under `root` as one row: name, strategy, data, task, status, epochs and test metrics."""
    root = Path(root or RUNS_DIR)
    rows = []
    for config_path in sorted(root.glob("*/config.yaml")):
        run = Run(config_path.parent)
        config = run.config()
        row = {"run": run.name, "strategy": config.get("strategy"), "arch": config.get("arch"),
               "data": config.get("data"), "task": config.get("task"), "freeze": config.get("freeze"),
               "status": "finished" if run.finished else "incomplete",
               "epochs": len(run.history()) if config.get("strategy") != "off_the_shelf" else None}
        if run.finished:
            metrics = run.metrics()
            row.update({k: metrics.get(k) for k in HEADLINE_METRICS if k in metrics})
        rows.append(row)
    return pd.DataFrame(rows)
