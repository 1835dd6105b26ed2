"""A run folder and its life: open (new or resumed), record the collection, save models, finish.

A run lives in `runs/<name>/`:
    config.yaml      the exact configuration
    environment.json versions, device and seed
    split.csv        the images, labels and split used (split.json vouches for it)
    skipped.csv      images left out, and why
    history.csv      one row per finished epoch
    checkpoint.safetensors  model + optimiser + scheduler state after the last finished epoch
    model.safetensors       the final (best-on-validation) model, its ModelCard in the header
    metrics.json     final test metrics (present only once the run has finished)
    evaluations/     later evaluations, beside (never over) metrics.json
Nothing here is unpickled: tensors are safetensors, everything else JSON/YAML/CSV, all written atomically.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import platform
import re
import socket
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch import nn

from artlab.cache import file_digest, file_signature
from artlab.data.collection import ArtCollection
from artlab.io import (
    DamagedFile,
    load_tensors,
    read_json,
    read_yaml,
    remove_partial_files,
    save_tensors,
    write_csv,
    write_json,
    write_text,
)
from artlab.models import ModelCard
from artlab.runs import checkpoint, split
from artlab.runs.checkpoint import CHECKPOINT_FILE
from artlab.version import __version__

RUNS_DIR = Path("runs")  # relative to the working folder; $ARTLAB_RUNS moves it (see `runs_root`)
MODEL_FILE = "model.safetensors"
LOCK_FILE = "run.lock"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,199}$")
#: The last line of every config.yaml (since artlab 0.2): a file without it was cut short.
CONFIG_END = "# end of config (artlab writes this line last)"
CONFIG_END_SINCE = (0, 2)
#: Files any run folder holds once started: a folder with one of them is a run, whatever else it lacks.
RUN_FILES = ("config.yaml", "split.csv", "checkpoint.safetensors", "model.safetensors", "metrics.json")
#: Files of a start that failed before training: removed when the folder is taken over.
STALE_FILES = ("split.csv", "split.json", "skipped.csv", "history.csv")


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


def environment(seed: int, device: str, started_from: str | None = None) -> dict:
    """Versions and settings that a result depends on; `started_from`: the weights id of the earlier run it
    started from (`init_from`), so that a reuse can tell that run retrained since from the one it started from."""
    return {"artlab": __version__, "python": platform.python_version(), "torch": torch.__version__,
            **{name: _version(name) for name in ("torchvision", "numpy", "scikit-learn")},
            "platform": platform.platform(), "device": device, "seed": seed,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            **({"started_from": started_from} if started_from else {})}


#: Each model file's weights id by its signature, so that a run's earlier stage is hashed once per process.
_WEIGHTS_IDS: dict[str, str] = {}


def _version(distribution: str) -> str | None:
    """An installed package's version, read without importing it (torchvision and scikit-learn take seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class Run:
    """One run folder: its files, and the steps of its life (`open`, `record`, `finish`)."""

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

    # ---- life ------------------------------------------------------------------------------------
    def open(self, config: dict, resume: bool = False,
             as_saved: Callable[[dict], dict] = dict) -> Run:
        """Make the folder ready to train `config` and write config.yaml; call it holding the lock.

        A started run continues only with `resume` and the same config (`as_saved` turns the saved
        config into the form `config` has, e.g. filling in fields added since); a folder whose start
        failed before training is taken over.
        """
        if self.file("config.yaml").is_file() and self.started:
            if not resume:
                raise FileExistsError(f"run {self.path} already exists; pass resume=True (--resume) to continue it "
                                      f"or choose another name")
            saved = as_saved(self.config())
            if saved != config:
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise ValueError(f"run {self.path} was started with a different config (differs in {changed})")
        elif self.file("config.yaml").is_file():  # a start that failed before training: nothing to keep
            for stale in STALE_FILES:
                self.file(stale).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_partial_files(self.path)  # left by a process killed while writing; never read
        self.write_config(config)
        return self

    def record(self, collection: ArtCollection, tasks: tuple[str, ...], seed: int, device: str,
               started_from: str | None = None) -> ArtCollection:
        """Write the environment, the split (or take the recorded one, exactly, on resume) and the skipped files;
        returns the collection to train on. `started_from`: see `environment`."""
        write_json(self.file("environment.json"), environment(seed, device, started_from))
        if self.file(split.SPLIT_FILE).is_file():
            collection = self.exact_split(collection, tasks)
        else:
            split.write_split(self.path, collection)
        self.write_skipped(collection.skipped)
        return collection

    def finish(self, metrics: dict, skipped: pd.DataFrame | None = None) -> dict:
        """Write the final skipped list and metrics.json (last: it marks the run finished); drop the checkpoint."""
        if skipped is not None:
            self.write_skipped(skipped)
        write_json(self.file("metrics.json"), metrics)
        self.file(CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete; model.safetensors holds the result
        return metrics

    # ---- files -----------------------------------------------------------------------------------
    def config(self) -> dict:
        """The run's config.yaml; refused when damaged or cut short (its last line missing, since artlab 0.2)."""
        path = self.file("config.yaml")
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} is not a run folder: no config.yaml")
        config = read_yaml(path)
        if not isinstance(config, dict):
            raise DamagedFile(f"{path} is damaged (not a mapping of options)")
        if not path.read_text(encoding="utf-8").rstrip().endswith(CONFIG_END) and self._ends_configs():
            raise DamagedFile(f"{path} is damaged: it was cut short (its last line is missing), so its options "
                              f"cannot be trusted; train the run again under another name")
        return config

    def write_config(self, config: dict) -> None:
        write_text(self.file("config.yaml"), yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
                   + CONFIG_END + "\n")

    def _ends_configs(self) -> bool:
        """Whether the artlab that recorded this run ends config.yaml with CONFIG_END (older ones did not)."""
        try:
            version = str(read_json(self.file("environment.json")).get("artlab", "0"))
            return tuple(int(part) for part in version.split(".")[:2]) >= CONFIG_END_SINCE
        except (OSError, ValueError, AttributeError):
            return True  # a run that recorded no readable environment: only this version writes its config

    def metrics(self) -> dict:
        return read_json(self.file("metrics.json"))

    def history(self) -> pd.DataFrame:
        path = self.file("history.csv")
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def write_history(self, rows: list[dict]) -> None:
        write_csv(self.file("history.csv"), pd.DataFrame(rows))

    def write_skipped(self, skipped: pd.DataFrame) -> None:
        if len(skipped):
            write_csv(self.file("skipped.csv"), skipped)

    def write_evaluation(self, metrics: dict) -> Path:
        """An evaluation of a finished run, beside (never over) its training-time metrics.json."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.file("evaluations") / f"{stamp}-{metrics.get('split', 'test')}.json"
        write_json(path, metrics)
        return path

    # ---- split -----------------------------------------------------------------------------------
    def check_split(self) -> None:
        """Refuse a split.csv that is not the one written (truncated or edited)."""
        split.check_split(self.path)

    def read_split(self, multi_label: dict[str, bool], quiet: bool = False,
                   data: str | Path | None = None) -> ArtCollection:
        """The exact images, labels and split the run recorded (missing images in `skipped`, changed in `changed`),
        found in `data` when given, else where the collection is now (`split.locate`)."""
        return split.read_split(self.path, multi_label, self.name, quiet, data, self._data_then())

    def split_table(self, data: str | Path | None = None) -> pd.DataFrame:
        """split.csv as recorded, every column as text, its paths where the images are now (after checking it is
        the file the run wrote)."""
        return split.recorded_frame(self.path, data, self._data_then())

    def content_key(self, tasks: dict[str, bool]) -> str:
        """What the run trained on, wherever its collection lies now (`split.content_key`): its images, their
        labels for `tasks` (task -> multi-label) and split."""
        frame = split.recorded_text(self.path)
        return split.content_key(frame, split.recorded_root(self.path, self._data_then()), tasks)

    def changes_since(self, collection: ArtCollection, tasks: tuple[str, ...]) -> str:
        """How `collection`, prepared now, differs from what the run recorded, in words ("" when it does not)."""
        recorded = self.read_split({task: collection.multi_label[task] for task in tasks}, quiet=True,
                                   data=self._moved_to(collection))
        return split.changes(recorded, collection, tasks)

    def warn_if_changed(self, collection: ArtCollection, tasks: tuple[str, ...]) -> None:
        """A finished run is reused as trained: warn when its collection has changed since."""
        changes = self.changes_since(collection, tasks)
        if changes:
            warnings.warn(f"{self.path} is reused as trained, on {collection.name} as it was: since then {changes}; "
                          f"to train on the collection as it is now, give another name (--name) or remove the run "
                          f"folder", stacklevel=3)

    def exact_split(self, collection: ArtCollection, tasks: tuple[str, ...]) -> ArtCollection:
        """On resume, the recorded split exactly: refused if any of its images is missing or changed."""
        recorded = self.read_split({task: collection.multi_label[task] for task in tasks}, quiet=True,
                                   data=self._moved_to(collection))
        return split.exact(recorded, collection, tuple(tasks), str(self.path))

    def split_like(self, collection: ArtCollection) -> ArtCollection:
        """`collection` split image by image as this run recorded it (images it did not use left out)."""
        return split.split_like(collection, self.path, self._data_then())

    def _data_then(self) -> str | None:
        """The `data` the run was trained with (its config's), or None when unreadable."""
        try:
            data = self.config().get("data")
        except (OSError, ValueError):
            return None
        return str(data) if data is not None else None

    def _moved_to(self, collection: ArtCollection) -> Path | None:
        """`collection`'s folder when it is not where the run recorded its images, else None."""
        then = split.recorded_root(self.path, self._data_then())
        return collection.root if collection.root is not None and collection.root != then else None

    # ---- model and checkpoint --------------------------------------------------------------------
    def card(self) -> ModelCard:
        """What the run's saved model is (read from the file header only)."""
        path = self.file(MODEL_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no {MODEL_FILE} yet: the run has not saved a model")
        return ModelCard.read(path)

    def started_from(self) -> str | None:
        """The weights id of the run this one started from, as it was when this one trained; None when it started
        from ImageNet or from scratch, or was trained before artlab recorded it."""
        try:
            return read_json(self.file("environment.json")).get("started_from")
        except (OSError, ValueError, AttributeError):
            return None

    def weights_id(self) -> str:
        """Cache id of the run's saved model: "run:" + the first 16 hex of its file's sha256 (read once per file
        signature in this process, as `cache.content_id` does)."""
        path = self.file(MODEL_FILE)
        signature = f"{path.resolve()}:{file_signature(path)}"
        if signature not in _WEIGHTS_IDS:
            _WEIGHTS_IDS[signature] = "run:" + file_digest(path)[:16]
        return _WEIGHTS_IDS[signature]

    def save_model(self, tensors: dict[str, torch.Tensor], card: ModelCard) -> None:
        save_tensors(self.file(MODEL_FILE), tensors, card.to_metadata())

    def load_model(self) -> tuple[dict[str, torch.Tensor], ModelCard]:
        """The saved tensors and card, in one read of the file."""
        tensors, meta = load_tensors(self.file(MODEL_FILE))
        return tensors, ModelCard.from_metadata(meta, self.file(MODEL_FILE))

    def save_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        state: dict) -> None:
        """Model, optimiser and scheduler state plus a JSON `state`, in one atomic file."""
        checkpoint.save_checkpoint(self.path, model, optimizer, scheduler, state)

    def load_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict | None:
        """Restore the last checkpoint into the given objects; its `state`, or None when there is none."""
        return checkpoint.load_checkpoint(self.path, model, optimizer, scheduler)


def as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run(run)


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
