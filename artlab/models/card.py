"""ModelCard: what a saved model is (kind, architecture, tasks, classes, image size, layer).

The card is stored as the string metadata of the model's safetensors file and read back from
the file's header alone, so learning what a run holds never loads its weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from artlab.io import DamagedFile, read_metadata

Kind = Literal["network", "linear_probe"]
CARD_VERSION = "2"
#: The side artlab trains and analyses at by default (small enough for a laptop CPU).
DEFAULT_IMAGE_SIZE = 128
#: The side ImageNet weights were trained at: the size for a network that has no card.
IMAGENET_IMAGE_SIZE = 224
#: The attribute of a model that carries its card (as `artlab_arch` carries its registry entry).
CARD_ATTRIBUTE = "artlab_card"


@dataclass(frozen=True)
class ModelCard:
    """Identity of a saved model. `classes[task]` lists the outputs of that task's head, in order."""

    kind: Kind
    arch: str
    tasks: tuple[str, ...]
    classes: dict[str, list[str]] = field(hash=False)
    multi_label: dict[str, bool] = field(hash=False)
    image_size: int = DEFAULT_IMAGE_SIZE
    layer: str | None = None  # linear probes: the layer whose pooled features they read
    epoch: int | None = None  # networks: the training epoch these weights come from
    attributes: dict = field(default_factory=dict, hash=False)  # set on the rebuilt model (e.g. transform_input)

    @property
    def task(self) -> str:
        """The task of a single-task model."""
        if len(self.tasks) != 1:
            raise ValueError(f"this model has {len(self.tasks)} tasks {list(self.tasks)}; name one")
        return self.tasks[0]

    def task_classes(self, task: str | None = None) -> list[str]:
        return self.classes[task or self.task]

    def is_multi_label(self, task: str | None = None) -> bool:
        return self.multi_label[task or self.task]

    @property
    def num_outputs(self) -> int:
        """The width of the network's output: every task's classes, task after task."""
        return sum(len(self.classes[t]) for t in self.tasks)

    def output_slices(self) -> dict[str, slice]:
        """Where each task's scores lie in the output (a multi-task head is one block of rows per task)."""
        slices, start = {}, 0
        for task in self.tasks:
            slices[task] = slice(start, start + len(self.classes[task]))
            start += len(self.classes[task])
        return slices

    def output_names(self) -> list[str]:
        """A name per output: the class (one task), or "task: class" (several)."""
        if len(self.tasks) == 1:
            return list(self.classes[self.tasks[0]])
        return [f"{task}: {name}" for task in self.tasks for name in self.classes[task]]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores -> probabilities along the last axis, task by task: softmax, or sigmoid for multi-label."""
        parts = [logits[..., sl].sigmoid() if self.multi_label[task] else logits[..., sl].softmax(-1)
                 for task, sl in self.output_slices().items()]
        return torch.cat(parts, -1)

    def to_metadata(self) -> dict[str, str]:
        """safetensors metadata: a flat str -> str mapping."""
        meta = {"card_version": CARD_VERSION, "kind": self.kind, "arch": self.arch, "tasks": json.dumps(self.tasks),
                "classes": json.dumps(self.classes), "multi_label": json.dumps(self.multi_label),
                "image_size": str(self.image_size)}
        if self.layer is not None:
            meta["layer"] = self.layer
        if self.epoch is not None:
            meta["epoch"] = str(self.epoch)
        if self.attributes:
            meta["attributes"] = json.dumps(self.attributes)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str | Path = "model file") -> ModelCard:
        """Parse metadata written by `to_metadata` (or by artlab 0.1's single-task format)."""
        try:
            if meta.get("card_version") is None:  # artlab 0.1: one task, classes as a list, "True"/"False"
                task = meta["task"]
                classes = {task: json.loads(meta["classes"])}
                multi = {task: meta["multi_label"] == "True"}
                tasks = (task,)
            else:
                tasks = tuple(json.loads(meta["tasks"]))
                classes, multi = json.loads(meta["classes"]), json.loads(meta["multi_label"])
            return cls(kind=meta["kind"], arch=meta["arch"], tasks=tasks, classes=classes, multi_label=multi,
                       image_size=int(meta.get("image_size", DEFAULT_IMAGE_SIZE)), layer=meta.get("layer"),
                       epoch=int(meta["epoch"]) if meta.get("epoch") else None,
                       attributes=json.loads(meta.get("attributes", "{}")))
        except (KeyError, ValueError, TypeError) as exc:
            raise DamagedFile(f"{source} has no valid model card in its metadata ({exc!r})") from None

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """The card of a saved model, from the safetensors header only."""
        return cls.from_metadata(read_metadata(path), path)


def card_of(model: nn.Module) -> ModelCard | None:
    """The card a model carries (a run's network), or None (a network built from the registry)."""
    return getattr(model, CARD_ATTRIBUTE, None)


def attach_card(model: nn.Module, card: ModelCard) -> nn.Module:
    """Give `model` its card (what its outputs are, the size it was trained at); returns the model."""
    setattr(model, CARD_ATTRIBUTE, card)
    return model
