"""The tasks a network learns at once: one block of output rows per task, a masked loss and per-task metrics.

A multi-task network is an ordinary network whose last layer has every task's classes, task after
task (rows `[start, stop)` are that task's head: mathematically one linear head per task on the
shared features). An image without a label for a task is left out of that task's loss and metrics
and still serves the others. A single-task run is the special case of one task with weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from artlab.data.collection import ArtCollection
from artlab.models import ModelCard
from artlab.training.metrics import evaluate, headline, loss_function

MISSING = -1  # single-label target of an image without a label for the task


@dataclass(frozen=True)
class Task:
    """One task's head: its classes, type, loss weight and place in the network's output."""

    name: str
    classes: list[str]
    multi_label: bool
    weight: float
    start: int

    @property
    def outputs(self) -> slice:
        return slice(self.start, self.start + len(self.classes))


class Tasks:
    """The heads of one run, in order; targets, loss and metrics for all of them."""

    def __init__(self, tasks: list[Task], label_smoothing: float = 0.0):
        self.tasks, self.label_smoothing = tasks, label_smoothing
        self._losses = [loss_function(task.multi_label, label_smoothing) for task in tasks]

    @classmethod
    def of(cls, collection: ArtCollection, names: list[str], weights: list[float] | None = None,
           label_smoothing: float = 0.0, classes: dict[str, list[str]] | None = None) -> Tasks:
        """The heads for `names` on `collection` (classes sorted, or as given, e.g. a trained model's)."""
        tasks, start = [], 0
        for name, weight in zip(names, weights or [1.0] * len(names)):
            task_classes = list(classes[name]) if classes else collection.classes(name)
            tasks.append(Task(name, task_classes, collection.multi_label[name], float(weight), start))
            start += len(task_classes)
        return cls(tasks, label_smoothing)

    @classmethod
    def of_card(cls, card: ModelCard) -> Tasks:
        """The heads a saved network was trained with (weights do not matter for scoring)."""
        slices = card.output_slices()
        return cls([Task(t, list(card.classes[t]), card.multi_label[t], 1.0, slices[t].start) for t in card.tasks])

    def __iter__(self):
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def num_outputs(self) -> int:
        return sum(len(t.classes) for t in self.tasks)

    def card(self, **fields) -> ModelCard:
        """The model card of a network with these heads (other card fields given by the caller)."""
        return ModelCard(tasks=tuple(self.names), classes={t.name: t.classes for t in self.tasks},
                         multi_label={t.name: t.multi_label for t in self.tasks}, **fields)

    def targets(self, collection: ArtCollection) -> dict[str, np.ndarray]:
        """Each task's targets for every row: class indices (MISSING when unlabelled) or a 0/1 matrix (NaN rows)."""
        out = {}
        for task in self.tasks:
            column = collection.table[task.name]
            index = {c: i for i, c in enumerate(task.classes)}
            if task.multi_label:
                matrix = np.full((len(column), len(task.classes)), np.nan, dtype=np.float32)
                for row, labels in enumerate(column):
                    known = [index[c] for c in (labels if isinstance(labels, tuple) else ()) if c in index]
                    if known:
                        matrix[row] = 0.0
                        matrix[row, known] = 1.0
                out[task.name] = matrix
            else:
                out[task.name] = pd.Series(column).map(index).fillna(MISSING).to_numpy(dtype=np.int64, copy=True)
        return out

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of each task's loss over the images labelled for it (a task absent from the batch adds 0)."""
        total = logits.new_zeros(())
        for task, loss in zip(self.tasks, self._losses):
            scores, target = logits[:, task.outputs], targets[task.name]
            labelled = ~torch.isnan(target[:, 0]) if task.multi_label else target != MISSING
            if not labelled.any():
                continue
            total = total + task.weight * loss(scores[labelled], target[labelled])
        return total

    def evaluate(self, scores: np.ndarray, targets: dict[str, np.ndarray]) -> dict[str, dict]:
        """Each task's metrics over the images labelled for it."""
        out = {}
        for task in self.tasks:
            target = targets[task.name]
            labelled = ~np.isnan(target[:, 0]) if task.multi_label else target != MISSING
            out[task.name] = evaluate(scores[labelled][:, task.outputs], target[labelled], task.classes,
                                      task.multi_label)
        return out

    def validation_row(self, per_task: dict[str, dict]) -> dict[str, float]:
        """The score that picks the best epoch (the mean of the tasks' headline metrics), and each task's."""
        scores = {task: headline(metrics) for task, metrics in per_task.items()}
        row = {"val_score": float(np.mean(list(scores.values())))}
        if len(scores) > 1:
            row |= {f"val_score_{task}": score for task, score in scores.items()}
        return row
