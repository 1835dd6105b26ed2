"""A run's checkpoint: model, optimiser and scheduler state after the last finished epoch, in one safetensors file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artlab.io import load_tensors, save_tensors, to_json

CHECKPOINT_FILE = "checkpoint.safetensors"


def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
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
    save_tensors(folder / CHECKPOINT_FILE, tensors, meta)


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict | None:
    """Restore what save_checkpoint wrote; returns its `state`, or None when there is no checkpoint."""
    path = folder / CHECKPOINT_FILE
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
