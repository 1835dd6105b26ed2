"""Train one strategy end to end into a run folder, and evaluate a run from its saved model."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from artlab import models
from artlab.data.collection import SPLITS, ArtCollection
from artlab.data.layouts import load
from artlab.data.loading import ImageDataset
from artlab.features import unreadable_rows
from artlab.io import remove_partial_files, write_csv, write_json
from artlab.runs import (
    CHECKPOINT_FILE,
    Run,
    as_run,
    environment,
    load_network,
    read_split,
    run_collection,
    runs_root,
    write_evaluation,
)
from artlab.training.config import TrainConfig
from artlab.training.metrics import evaluate


@dataclass
class RunResult:
    """What a finished run produced."""

    run: Run
    metrics: dict
    history: list[dict]

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


def load_collection(config: TrainConfig) -> ArtCollection:
    """The collection a config names, as loaded (before filtering and splitting)."""
    return load(config.data, config.layout, **({"separator": config.separator} if config.separator else {}))


def prepare_collection(config: TrainConfig, collection: ArtCollection | None = None) -> ArtCollection:
    """Keep images labelled for the task, filter classes, drop unreadable files, split.

    Refuses what would give wrong science: fewer than two classes, or a split without training,
    validation or test images; warns about classes the split leaves out of a part.
    """
    collection = load_collection(config) if collection is None else collection
    if config.task not in collection.multi_label:
        raise KeyError(f"{config.data} has no task {config.task!r}; its tasks are {collection.tasks}")
    collection = collection.labelled(config.task).filter(config.task, config.min_images, config.top_n)
    collection = collection.check_images()
    classes = collection.classes(config.task)
    if len(classes) < 2:
        raise ValueError(f"{config.data}: task {config.task!r} has {len(classes)} class(es) {classes} after "
                         f"filtering: classification needs at least two")
    if config.split == "random":
        collection = collection.split(config.val_fraction, config.test_fraction, config.task, config.seed,
                                      keep_existing=False)
    else:
        if config.split == "official" and collection.table["split"].isna().any():
            raise ValueError(f"{config.data}: {collection.table['split'].isna().sum()} images have no official split")
        collection = collection.split(config.val_fraction, config.test_fraction, config.task, config.seed)
    empty = [part for part in SPLITS if not (collection.table["split"] == part).any()]
    if empty:
        raise ValueError(f"{config.data}: no {' or '.join(empty)} images after splitting "
                         f"({len(collection)} images); use --split random or add images")
    for problem in collection.split_problems(config.task):
        warnings.warn(f"{config.data}: {problem}", stacklevel=2)
    return collection


def check_config(config: TrainConfig) -> None:
    """Refuse options that cannot work before anything is written (a failed start leaves no folder)."""
    spec = models.arch(config.arch)
    if config.strategy == "off_the_shelf":
        models.check_layers(spec, [config.layer or spec.feature_layer])
    if config.freeze > len(spec.blocks):
        raise ValueError(f"freeze must be at most {len(spec.blocks)} ({spec.name} has {len(spec.blocks)} blocks), "
                         f"not {config.freeze}")
    if config.init_from:
        source = Run(config.init_from)
        if not source.finished:
            raise ValueError(f"--init-from {source.path} has not finished training (no metrics.json): finish it "
                             f"with --resume first, so the next stage starts from its best model")
        card = source.card()
        if card.kind != "network" or card.arch != spec.name:
            raise ValueError(f"--init-from {source.path} holds a {card.kind} of {card.arch}, not a {spec.name} "
                             f"network to start from")


def _open_run(config: TrainConfig, runs_dir: Path, resume: bool) -> Run:
    """The run folder for `config`: new, resumed (same config), or taken over when nothing was trained in it."""
    run = Run.named(config.name, runs_dir)
    if run.file("config.yaml").is_file() and run.started:
        if not resume:
            raise FileExistsError(f"run {run.path} already exists; pass resume=True (--resume) to continue it "
                                  f"or choose another name")
        saved = run.config()
        if saved != config.to_dict():
            changed = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
            raise ValueError(f"run {run.path} was started with a different config (differs in {changed})")
    elif run.file("config.yaml").is_file():  # a start that failed before training: nothing to keep
        for stale in ("split.csv", "split.json", "skipped.csv", "history.csv"):
            run.file(stale).unlink(missing_ok=True)
    run.path.mkdir(parents=True, exist_ok=True)
    remove_partial_files(run.path)  # left by a process killed while writing; never read
    run.write_config(config.to_dict())
    return run


def _recorded_split(run: Run, config: TrainConfig, collection: ArtCollection) -> ArtCollection:
    """On resume, the split the run recorded, exactly: refused if any of its images is missing or changed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the differences are raised below, in one message
        recorded = read_split(run, {config.task: collection.multi_label[config.task]})
    if len(recorded.skipped) or recorded.changed:
        examples = (recorded.skipped["path"].tolist() + recorded.changed)[:3]
        raise ValueError(f"cannot resume {run.path}: since it recorded its split, {len(recorded.skipped)} image(s) "
                         f"went missing and {len(recorded.changed)} changed (e.g. {examples}); restore them, or "
                         f"start a new run (another --name)")
    added = len(set(collection.table["path"]) - set(recorded.table["path"]))
    if added:
        warnings.warn(f"{run.path}: {added} image(s) added to {config.data} since the run started are not used "
                      f"(a resumed run keeps its recorded split)", stacklevel=3)
    return recorded


def train(config: TrainConfig, runs_dir: str | Path | None = None, resume: bool = False) -> RunResult:
    """Run one strategy end to end and write its run folder; with `resume`, continue an interrupted run.

    Runs go under `runs_dir` (default: $ARTLAB_RUNS, else ./runs). The folder is locked while
    training (a second process on the same run is refused), the split is recorded once and reused
    exactly on resume, and metrics.json is written last.
    """
    from artlab.training.loops import fit
    from artlab.training.probe import fit_probe

    check_config(config)
    loaded = load_collection(config)
    config = config.resolved(loaded.tasks)
    run = Run.named(config.name, runs_dir)  # a bad name is refused before the images are checked
    collection = prepare_collection(config, loaded)
    with run.lock():
        run = _open_run(config, runs_root(runs_dir), resume)
        if run.finished:
            return RunResult(run, run.metrics(), run.history().to_dict("records"))
        device = models.resolve_device(config.device)
        write_json(run.file("environment.json"), environment(config.seed, str(device)))
        if run.file("split.csv").is_file():
            collection = replace(_recorded_split(run, config, collection), skipped=collection.skipped)
        else:
            run.write_split(collection)
        _write_skipped(run, collection.skipped)
        with torch.random.fork_rng():  # training reseeds torch per epoch; the caller's random state is kept
            if config.strategy == "off_the_shelf":
                history, failures = fit_probe(config, run, collection, device)
            else:
                _, history, failures = fit(config, run, collection, device)
        if failures:
            gone = pd.DataFrame({"path": list(failures), "reason": [f"became unreadable during training: {r}"
                                                                    for r in failures.values()]})
            _write_skipped(run, pd.concat([collection.skipped, gone], ignore_index=True))
        metrics = _evaluate(run, "test", device)
        write_json(run.file("metrics.json"), metrics)
        run.file(CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete; model.safetensors holds the result
    return RunResult(run, metrics, history)


def _write_skipped(run: Run, skipped: pd.DataFrame) -> None:
    if len(skipped):
        write_csv(run.file("skipped.csv"), skipped)


def evaluate_run(run: Run | str | Path, part: str = "test", device: torch.device | str | None = None) -> dict:
    """Recompute a run's metrics on one split from its saved model.

    Never touches the training-time metrics.json: an evaluation of a finished run is written to
    `evaluations/<time>-<split>.json`; an unfinished run's is only returned. Images missing or
    changed since training are counted in the result (and warned about).
    """
    run = as_run(run)
    metrics = _evaluate(run, part, device)
    if run.finished:
        metrics["file"] = str(write_evaluation(run, metrics))
    return metrics


@dataclass
class Predictions:
    """A run's scores on the images of one split: `paths[i]` got `scores[i]` (probabilities or logits)
    and carries `targets[i]`; images that could not be read are left out and counted."""

    paths: list[str]
    scores: np.ndarray
    targets: np.ndarray
    classes: list[str]
    multi_label: bool
    missing: int = 0
    changed: int = 0
    unreadable: int = 0


def predictions(run: Run | str | Path, part: str = "test", device: torch.device | str | None = None) -> Predictions:
    """Recompute a run's per-image scores on one split from its saved model (the ground of every metric)."""
    from artlab.training.loops import predict
    from artlab.training.probe import features_for, probe_scores

    run = as_run(run)
    config = TrainConfig.from_dict(run.config())
    device = models.resolve_device(config.device if device is None else device)
    card = run.card()
    classes, multi = card.task_classes(), card.is_multi_label()
    collection = run_collection(run, card)
    subset = collection.part(part)
    targets = subset.targets(card.task, classes)
    if card.kind == "linear_probe":  # features of the whole collection: the set the training run cached
        in_part = (collection.table["split"] == part).to_numpy()
        features = features_for(config, collection, device)[in_part]
        seen = np.flatnonzero(~unreadable_rows(features))
        scores = probe_scores(run, features[seen])
    else:
        model = load_network(run).to(device)
        dataset = ImageDataset(subset.table["path"].tolist(), None, card.image_size,
                               models.input_transform(model, card.image_size), keep=False)
        scores, seen = predict(model, dataset, device, config.batch_size * 2)
    paths = subset.table["path"].to_numpy()[seen].tolist()
    return Predictions(paths, scores, targets[seen], classes, multi, missing=int(len(collection.skipped)),
                       changed=len(collection.changed), unreadable=int(len(subset) - len(seen)))


def _evaluate(run: Run, part: str, device: torch.device | str | None) -> dict:
    scored = predictions(run, part, device)
    metrics = evaluate(scored.scores, scored.targets, scored.classes, scored.multi_label)
    return metrics | {"split": part, "run": run.name, "images_missing_since_training": scored.missing,
                      "images_changed_since_training": scored.changed, "images_unreadable_now": scored.unreadable}
