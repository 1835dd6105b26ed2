"""Run folders: config, environment, history, metrics, model and split, written atomically.

A run lives in `runs/<name>/`:
    config.yaml      the exact configuration
    environment.json versions, device and seed
    split.csv        the images, labels and split used
    history.csv      one row per finished epoch
    checkpoint.safetensors  model + optimiser + scheduler state after the last finished epoch
    model.safetensors       the final (best-on-validation) model
    metrics.json     final test metrics (present only once the run has finished)
Nothing here is unpickled: tensors are safetensors, everything else JSON/YAML/CSV.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from safetensors.torch import load_file, save_file

RUNS_DIR = Path("runs")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (contiguous CPU copies, so shared storage is fine)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), metadata


def environment(seed: int, device: str) -> dict:
    """Versions and settings that a result depends on."""
    import numpy
    import sklearn
    import torchvision

    import artlab

    return {"artlab": artlab.__version__, "python": platform.python_version(), "torch": torch.__version__,
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
        return yaml.safe_load(path.read_text())

    def write_config(self, config: dict) -> None:
        write_text(self.file("config.yaml"), yaml.safe_dump(config, sort_keys=False))

    def metrics(self) -> dict:
        return json.loads(self.file("metrics.json").read_text())

    def history(self) -> pd.DataFrame:
        path = self.file("history.csv")
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def write_history(self, rows: list[dict]) -> None:
        with atomic_path(self.file("history.csv")) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)


def save_checkpoint(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    state: dict) -> None:
    """Model, optimiser and scheduler state plus a JSON `state` (epoch, history, ...) in one atomic file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
    meta = {"state": json.dumps(state, default=_jsonable),
            "param_groups": json.dumps(opt["param_groups"]),
            "optim_scalars": json.dumps({f"{i}.{k}": v for i, vs in opt["state"].items()
                                         for k, v in vs.items() if not isinstance(v, torch.Tensor)}),
            "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None, default=_jsonable)}
    save_tensors(run.file("checkpoint.safetensors"), tensors, meta)


def load_checkpoint(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict | None:
    """Restore what save_checkpoint wrote; returns its `state`, or None when there is no checkpoint."""
    path = run.file("checkpoint.safetensors")
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
            row.update({k: metrics.get(k) for k in ("accuracy", "balanced_accuracy", "top5_accuracy", "mAP")
                        if k in metrics})
        rows.append(row)
    return pd.DataFrame(rows)
