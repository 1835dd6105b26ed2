"""Evaluation and the training loss.

Single-label: accuracy, balanced accuracy, per-class recall, top-k and confusion; multi-label: AP.
"""

from __future__ import annotations

from collections.abc import Container

import numpy as np
from torch import nn


def single_label(scores: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """Metrics from per-class scores (n, C) and integer targets (n,)."""
    from sklearn import metrics as skm  # here, not at the top: a notebook showing finished runs never needs it

    labels = np.arange(len(classes))
    predicted = scores.argmax(axis=1)
    recall = skm.recall_score(targets, predicted, labels=labels, average=None, zero_division=0)
    out = {"n_images": int(len(targets)),
           "accuracy": float(skm.accuracy_score(targets, predicted)),
           "balanced_accuracy": float(skm.balanced_accuracy_score(targets, predicted)) if len(targets) else 0.0,
           "per_class_recall": {c: float(r) for c, r in zip(classes, recall)},
           "confusion_matrix": skm.confusion_matrix(targets, predicted, labels=labels).tolist(),
           "classes": list(classes)}
    for k in (3, 5):
        if len(classes) > k:
            out[f"top{k}_accuracy"] = float(skm.top_k_accuracy_score(targets, scores, k=k, labels=labels))
    return out


def multi_label(scores: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """Mean average precision and per-class AP from scores (n, C) and a 0/1 matrix (n, C).

    Classes with no positive test image have no defined AP and are left out of the mean.
    """
    from sklearn import metrics as skm

    per_class = {}
    for i, name in enumerate(classes):
        if targets[:, i].sum() > 0:
            per_class[name] = float(skm.average_precision_score(targets[:, i], scores[:, i]))
    return {"n_images": int(len(targets)), "mAP": float(np.mean(list(per_class.values()))) if per_class else 0.0,
            "per_class_AP": per_class, "classes": list(classes)}


def evaluate(scores: np.ndarray, targets: np.ndarray, classes: list[str], multi: bool) -> dict:
    """The metrics suited to the task type."""
    return multi_label(scores, targets, classes) if multi else single_label(scores, targets, classes)


#: The test metrics shown wherever runs are compared (run index, CLI, strategy tables), headline first.
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "top3_accuracy", "top5_accuracy", "mAP")


def headline_name(metrics: Container[str]) -> str:
    """The key of `headline` in a run's metrics (or a column of a table of them): mAP for multi-label tasks, else
    accuracy."""
    return "mAP" if "mAP" in metrics else "accuracy"


def headline(metrics: dict) -> float:
    """The one number to compare runs by: accuracy, or mAP for multi-label tasks."""
    return metrics[headline_name(metrics)]


def loss_function(multi: bool, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss of every strategy (the probe's, each task's in `Tasks.loss`): cross-entropy
    (single-label) or per-class BCE (multi-label)."""
    return nn.BCEWithLogitsLoss() if multi else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
