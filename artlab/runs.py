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

import hashlib
import json
import os
import platform
import re
import socket
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from artlab import models
from artlab.cache import file_signature
from artlab.data.collection import ArtCollection
from artlab.io import (
    DamagedFile,
    load_tensors,
    read_json,
    read_yaml,
    save_tensors,
    to_json,
    write_csv,
    write_json,
    write_yaml,
)
from artlab.models import ModelCard

RUNS_DIR = Path("runs")  # relative to the working folder; $ARTLAB_RUNS moves it (see `runs_root`)
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
LOCK_FILE = "run.lock"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,199}$")
#: Separator of multi-label cells in split.csv files written by artlab 0.1 (JSON lists since).
LEGACY_LABEL_SEPARATOR = "|"


def runs_root(root: str | Path | None = None) -> Path:
    """Where run folders live: `root` if given, else $ARTLAB_RUNS, else ./runs."""
    return Path(root) if root is not None else Path(os.environ.get("ARTLAB_RUNS") or RUNS_DIR)


class RunBusy(RuntimeError):
    """Another live process holds the run."""


def check_name(name: str) -> str:
    """A run name is one plain folder name: letters, digits and `_ . + = -`, no path, not `.` or `..`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", "..") or ".." in name:
        raise ValueError(f"run name {name!r} is not a plain name: use letters, digits and _ . + = - "
                         f"(no '/', no '..', at most 200 characters)")
    return name


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
        """The run `name` under `root` (default runs/); the name must be a plain folder name."""
        return cls(runs_root(root) / check_name(name))

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

    @property
    def started(self) -> bool:
        """Whether training has saved anything (a checkpoint or a model): a run folder without either is empty."""
        return self.file(CHECKPOINT_FILE).is_file() or self.file(MODEL_FILE).is_file()

    def lock(self) -> RunLock:
        return RunLock(self)

    def config(self) -> dict:
        path = self.file("config.yaml")
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} is not a run folder: no config.yaml")
        config = read_yaml(path)
        if not isinstance(config, dict):
            raise DamagedFile(f"{path} is damaged (not a mapping of options)")
        return config

    def write_config(self, config: dict) -> None:
        write_yaml(self.file("config.yaml"), config)

    def metrics(self) -> dict:
        return read_json(self.file("metrics.json"))

    def write_split(self, collection: ArtCollection) -> None:
        """split.csv (with each file's signature) and split.json (its row count and sha256), atomically."""
        table = collection.table.assign(signature=[_signature_or_none(p) for p in collection.table["path"]])
        collection = ArtCollection(table, collection.multi_label, collection.name)
        collection.to_csv(self.file("split.csv"))
        digest = hashlib.sha256(self.file("split.csv").read_bytes()).hexdigest()
        write_json(self.file("split.json"), {"rows": len(table), "sha256": digest})

    def check_split(self) -> None:
        """Refuse a split.csv that is not the one written (truncated or edited), when split.json vouches for it."""
        path, record = self.file("split.csv"), self.file("split.json")
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no split.csv: the run never got as far as splitting")
        if record.is_file():
            expected = read_json(record)
            if hashlib.sha256(path.read_bytes()).hexdigest() != expected.get("sha256"):
                raise DamagedFile(f"{path} is damaged: it differs from the split this run recorded "
                                  f"({expected.get('rows')} rows); the run cannot be trusted or resumed")

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

    def weights_id(self) -> str:
        """Cache id of the run's saved model: "run:" + the first 16 hex of its file's sha256."""
        digest = hashlib.sha256()
        with open(self.file(MODEL_FILE), "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return "run:" + digest.hexdigest()[:16]

    def save_model(self, tensors: dict[str, torch.Tensor], card: ModelCard) -> None:
        save_tensors(self.file(MODEL_FILE), tensors, card.to_metadata())

    def load_model(self) -> tuple[dict[str, torch.Tensor], ModelCard]:
        """The saved tensors and card, in one read of the file."""
        tensors, meta = load_tensors(self.file(MODEL_FILE))
        return tensors, ModelCard.from_metadata(meta, self.file(MODEL_FILE))


def _same_content(recorded: str, current: str | None) -> bool:
    """Two file signatures agree on size and end bytes (a touch or a copy that resets the time is no change)."""
    if current is None:
        return False
    size, _, digest = recorded.split(":")
    now_size, _, now_digest = current.split(":")
    return size == now_size and digest == now_digest


def as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


def _signature_or_none(path: str) -> str | None:
    try:
        return file_signature(path)
    except OSError:
        return None


class RunLock:
    """An exclusive `flock` on `run.lock` while a process trains the run; a second process is refused.

    The operating system drops the lock when its process ends, however it ends (killed, crashed),
    so there are no stale locks to detect; the file only holds the owner's pid and host for the
    message. It stays in the folder, unlocked, after training.
    """

    def __init__(self, run: Run):
        self.run = run
        self.path = run.file(LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.run.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise RunBusy(f"run {self.run.path} is being trained by process {owner.get('pid', '?')} on "
                          f"{owner.get('host', '?')}; wait for it to finish or stop it (choose another --name to "
                          f"train in parallel)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (the run is being trained)."""
        import fcntl

        if not self.path.is_file():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return {}


def load_network(run: Run | str | Path) -> nn.Module:
    """The trained network of a fine-tune or scratch run (best-on-validation weights), in eval mode.

    The model carries its card as `model.artlab_card` (tasks, classes, image size).
    """
    run = as_run(run)
    tensors, card = run.load_model()
    if card.kind != "network":
        raise ValueError(f"{run.path} holds a {card.kind}, not a trained network (off-the-shelf runs "
                         f"keep only a linear classifier on ImageNet features)")
    model = models.build(card.arch, pretrained=False, num_classes=card.num_outputs)
    model.load_state_dict(tensors)
    for attribute, value in card.attributes.items():  # e.g. GoogLeNet's input re-scaling when it came from ImageNet
        setattr(model, attribute, value)
    model.artlab_card = card
    return model.eval()


def _labels(cell: str) -> tuple[str, ...]:
    """A multi-label cell of split.csv: a JSON list (or, from artlab 0.1, names joined by '|')."""
    if cell.startswith("["):
        return tuple(json.loads(cell))
    return tuple(c for c in cell.split(LEGACY_LABEL_SEPARATOR) if c)


def read_split(run: Run | str | Path, multi_label: dict[str, bool]) -> ArtCollection:
    """The exact images, labels and split recorded in a run's split.csv.

    Images missing since the run was written are left out and listed in `skipped`; images whose
    content changed are kept and listed in `changed`; either case is also warned about.
    """
    run = as_run(run)
    run.check_split()
    try:
        frame = pd.read_csv(run.file("split.csv"), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{run.file('split.csv')} is damaged ({exc})") from None
    missing_columns = [c for c in ("path", "split", *multi_label) if c not in frame]
    if missing_columns:
        raise DamagedFile(f"{run.file('split.csv')} has no column(s) {missing_columns}")
    exists = frame["path"].map(os.path.isfile).to_numpy()
    table = pd.DataFrame({"path": frame["path"], "split": frame["split"].replace("", None)})
    for task, multi in multi_label.items():
        table[task] = frame[task].map(_labels) if multi else frame[task].replace("", None)
    collection = ArtCollection(table[exists].reset_index(drop=True), dict(multi_label), run.name)
    collection.skipped = pd.DataFrame({"path": frame["path"][~exists],
                                       "reason": "missing since the run recorded its split"})
    if "signature" in frame:
        recorded = frame["signature"][exists].tolist()
        collection.changed = [p for p, s in zip(collection.table["path"], recorded)
                              if s and not _same_content(s, _signature_or_none(p))]
    if (~exists).any() or collection.changed:
        warnings.warn(f"run {run.name}: {int((~exists).sum())} of its {len(frame)} images are missing and "
                      f"{len(collection.changed)} changed since it recorded its split; results on them differ "
                      f"from the run's", stacklevel=2)
    return collection


def run_collection(run: Run | str | Path, card: ModelCard | None = None) -> ArtCollection:
    """The exact images, labels and split a run used (from its split.csv); see `read_split`."""
    run = as_run(run)
    card = card or run.card()
    return read_split(run, {t: card.multi_label[t] for t in card.tasks})


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
    """Every run under `root` as one row: name, strategy, data, task, status, epochs and test metrics.

    A folder whose files cannot be read is listed with status "damaged" and the reason, never
    hiding the other runs.
    """
    root = runs_root(root)
    rows = []
    for config_path in sorted(root.glob("*/config.yaml")):
        run = Run(config_path.parent)
        try:
            rows.append(_index_row(run))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            rows.append({"run": run.name, "status": "damaged", "problem": str(exc)})
    return pd.DataFrame(rows)


def _index_row(run: Run) -> dict:
    config = run.config()
    if not isinstance(config, dict):
        raise DamagedFile(f"{run.file('config.yaml')} is damaged (not a mapping)")
    busy = run.lock().held_elsewhere()
    status = "finished" if run.finished else ("training" if busy else "incomplete")
    row = {"run": run.name, "strategy": config.get("strategy"), "arch": config.get("arch"),
           "data": config.get("data"), "task": config.get("task"), "freeze": config.get("freeze"), "status": status,
           "epochs": len(run.history()) if config.get("strategy") != "off_the_shelf" else None}
    if run.finished:
        metrics = run.metrics()
        row.update({k: metrics.get(k) for k in HEADLINE_METRICS if k in metrics})
        for task, task_metrics in metrics.get("tasks", {}).items():  # a multi-task run: each task's headline
            row.update({f"{task} {k}": task_metrics[k] for k in HEADLINE_METRICS[:1] + ("mAP",) if k in task_metrics})
    return row


def write_evaluation(run: Run, metrics: dict) -> Path:
    """An evaluation of a finished run, beside (never over) its training-time metrics.json."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = run.file("evaluations") / f"{stamp}-{metrics.get('split', 'test')}.json"
    write_json(path, metrics)
    return path
