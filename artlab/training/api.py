"""Train one strategy end to end into a run folder, and evaluate a run from its saved model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.data.layouts import load
from artlab.data.loading import ImageDataset
from artlab.io import remove_partial_files, write_json
from artlab.runs import CHECKPOINT_FILE, RUNS_DIR, Run, as_run, environment, load_network, run_collection
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
    """Keep images labelled for the task, filter classes, drop unreadable files, split."""
    collection = load_collection(config) if collection is None else collection
    if config.task not in collection.multi_label:
        raise KeyError(f"{config.data} has no task {config.task!r}; its tasks are {collection.tasks}")
    collection = collection.labelled(config.task).filter(config.task, config.min_images, config.top_n)
    collection = collection.check_images()
    if config.split == "random":
        collection = collection.split(config.val_fraction, config.test_fraction, config.task, config.seed,
                                      keep_existing=False)
    else:
        if config.split == "official" and collection.table["split"].isna().any():
            raise ValueError(f"{config.data}: {collection.table['split'].isna().sum()} images have no official split")
        collection = collection.split(config.val_fraction, config.test_fraction, config.task, config.seed)
    empty = [part for part in ("train", "val", "test") if not (collection.table["split"] == part).any()]
    if empty:
        raise ValueError(f"{config.data}: no {' or '.join(empty)} images after splitting "
                         f"({len(collection)} images); use --split random or add images")
    return collection


def _open_run(config: TrainConfig, runs_dir: Path, resume: bool) -> Run:
    run = Run.named(config.name, runs_dir)
    if run.file("config.yaml").is_file():
        if not resume:
            raise FileExistsError(f"run {run.path} already exists; pass resume=True (--resume) to continue it "
                                  f"or choose another name")
        saved = run.config()
        if saved != config.to_dict():
            changed = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
            raise ValueError(f"run {run.path} was started with a different config (differs in {changed})")
    run.path.mkdir(parents=True, exist_ok=True)
    remove_partial_files(run.path)  # left by a process killed while writing; never read
    run.write_config(config.to_dict())
    return run


def train(config: TrainConfig, runs_dir: str | Path = RUNS_DIR, resume: bool = False) -> RunResult:
    """Run one strategy end to end and write its run folder; with `resume`, continue an interrupted run."""
    from artlab.training.loops import fit
    from artlab.training.probe import fit_probe

    loaded = load_collection(config)
    config = config.resolved(loaded.tasks)
    run = _open_run(config, Path(runs_dir), resume)
    if run.finished:
        return RunResult(run, run.metrics(), run.history().to_dict("records"))
    device = models.resolve_device(config.device)
    write_json(run.file("environment.json"), environment(config.seed, str(device)))
    collection = prepare_collection(config, loaded)
    if not run.file("split.csv").is_file():
        collection.to_csv(run.file("split.csv"))
    if len(collection.skipped):
        collection.skipped.to_csv(run.file("skipped.csv"), index=False)
    if config.strategy == "off_the_shelf":
        history = fit_probe(config, run, collection, device)
    else:
        _, history = fit(config, run, collection, device)
    metrics = evaluate_run(run, device=device)
    run.file(CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is complete; model.safetensors holds the result
    return RunResult(run, metrics, history)


def evaluate_run(run: Run | str | Path, part: str = "test", device: torch.device | str | None = None) -> dict:
    """Recompute a run's metrics on one split from its saved model; the test metrics go to metrics.json."""
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
        scores = probe_scores(run, features_for(config, collection, device)[in_part])
    else:
        model = load_network(run).to(device)
        dataset = ImageDataset(subset.table["path"].tolist(), None, card.image_size,
                               models.input_transform(model, card.image_size), keep=False)
        scores = predict(model, dataset, device, config.batch_size * 2)
    metrics = evaluate(scores, targets, classes, multi) | {"split": part, "run": run.name}
    if part == "test":
        write_json(run.file("metrics.json"), metrics)
    return metrics
