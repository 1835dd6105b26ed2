"""Off-the-shelf transfer: frozen pretrained features from a named layer plus a linear classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.features import cached_features, unreadable_rows
from artlab.models import ModelCard
from artlab.models.optim import Adam
from artlab.runs import IMAGENET, Network, Run
from artlab.training.config import TrainConfig
from artlab.training.metrics import evaluate, headline, loss_function

if TYPE_CHECKING:  # scikit-learn is imported where a probe is fitted: a finished run opens without it
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

C_GRID = (0.01, 0.1, 1.0)


def probe_network(config: TrainConfig) -> Network:
    """The frozen network whose features the probe reads: ImageNet's, or the `init_from` run's."""
    return Network.of(config.init_from or IMAGENET, config.arch)


def probe_layer(config: TrainConfig) -> str:
    """The analysed layer whose pooled features the probe reads (checked against the architecture)."""
    spec = models.arch(config.arch)
    layer = config.layer or spec.feature_layer
    models.check_layers(spec, [layer])
    return layer


def features_for(config: TrainConfig, collection: ArtCollection, device: torch.device) -> np.ndarray:
    """Pooled features of the configured layer for every image of `collection` (cached on disk)."""
    return cached_features(probe_network(config), probe_layer(config), collection.table["path"].tolist(),
                           config.image_size, device, config.batch_size * 2)


def _logreg(c: float, multi: bool, seed: int) -> LogisticRegression | OneVsRestClassifier:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    base = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    return OneVsRestClassifier(base) if multi else base


def _scores(clf: LogisticRegression | OneVsRestClassifier, x: np.ndarray, multi: bool) -> np.ndarray:
    return clf.predict_proba(x) if not multi else np.stack([e.predict_proba(x)[:, 1] for e in clf.estimators_], 1)


def fit_probe(config: TrainConfig, run: Run, collection: ArtCollection,
              device: torch.device) -> tuple[list[dict], dict[str, str]]:
    """Choose the regularisation on validation, fit on train, save the linear layer as safetensors.

    Returns the history and the images that became unreadable since they were checked (left out).
    """
    from sklearn.preprocessing import StandardScaler

    task, multi = config.task, collection.multi_label[config.task]
    classes = collection.classes(task)
    feats = features_for(config, collection, device)
    unreadable = unreadable_rows(feats)
    split = np.where(unreadable, "unreadable", collection.table["split"].to_numpy())
    targets = collection.targets(task)
    scaler = StandardScaler().fit(feats[split == "train"])
    x = scaler.transform(feats).astype(np.float64)
    history, best = [], None
    if config.classifier == "linear":
        weight, bias, history = _torch_head(config, x, targets, split, multi, len(classes))
    else:
        for c in C_GRID:
            clf = _logreg(c, multi, config.seed).fit(x[split == "train"], targets[split == "train"])
            score = headline(evaluate(_scores(clf, x[split == "val"], multi), targets[split == "val"], classes, multi))
            history.append({"C": c, "val_score": score})
            if best is None or score > best[0]:
                best = (score, clf)
        clf = best[1]
        estimators = clf.estimators_ if multi else [clf]
        weight = np.concatenate([e.coef_ for e in estimators])
        bias = np.concatenate([e.intercept_ for e in estimators])
        if not multi and len(classes) == 2:  # scikit-learn keeps one row for two classes
            weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    card = ModelCard(kind="linear_probe", arch=config.arch, tasks=(task,), classes={task: classes},
                     multi_label={task: multi}, image_size=config.image_size, layer=probe_layer(config))
    tensors = {"weight": weight, "bias": bias, "scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_}
    run.save_model({k: torch.as_tensor(v, dtype=torch.float32) for k, v in tensors.items()}, card)
    run.write_history(history)
    failures = {p: "became unreadable during feature extraction" for p in collection.table["path"][unreadable]}
    return history, failures


def _torch_head(config: TrainConfig, x: np.ndarray, targets: np.ndarray, split: np.ndarray, multi: bool,
                n_classes: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """A linear layer trained with Adam on the cached features; keeps the best epoch on validation."""
    torch.manual_seed(config.seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.tensor(targets)
    train, val = torch.as_tensor(split == "train"), split == "val"
    head = torch.nn.Linear(xt.shape[1], n_classes)
    optimizer = Adam(head.parameters(), lr=1e-3, weight_decay=config.weight_decay)
    loss_fn = loss_function(multi, config.label_smoothing)
    history, best = [], (-np.inf, None, None)
    for epoch in range(1, max(config.epochs, 1) * 20 + 1):
        optimizer.zero_grad()
        loss = loss_fn(head(xt[train]), yt[train])
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            scores = head(xt[val]).numpy()
        score = headline(evaluate(scores, targets[val], list(map(str, range(n_classes))), multi))
        history.append({"epoch": epoch, "train_loss": loss.item(), "val_score": score})
        if score > best[0]:
            best = (score, head.weight.detach().clone().numpy(), head.bias.detach().clone().numpy())
    return best[1], best[2], history


def probe_scores(run: Run, features: np.ndarray) -> np.ndarray:
    """Apply a saved probe to raw features: class probabilities (softmax or per-class sigmoid)."""
    tensors, card = run.load_model()
    x = (torch.as_tensor(features) - tensors["scaler_mean"]) / tensors["scaler_scale"]
    logits = x @ tensors["weight"].T + tensors["bias"]
    return (torch.sigmoid(logits) if card.is_multi_label() else torch.softmax(logits, 1)).numpy()
