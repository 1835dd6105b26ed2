"""Transfer-learning strategies on art: off-the-shelf probe, fine-tuning (first k blocks frozen), scratch.

    from artlab.train import TrainConfig, train
    result = train(TrainConfig(data="synthetic", task="style", strategy="fine_tune", freeze=5))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from artlab import models
from artlab.data.collection import ArtCollection, from_manifest, load
from artlab.data.loading import ImageDataset
from artlab.runs import RUNS_DIR, Run, environment, index, load_tensors, write_json
from artlab.train.config import STRATEGIES, TrainConfig
from artlab.train.metrics import evaluate

__all__ = ["STRATEGIES", "RunResult", "TrainConfig", "evaluate_run", "index", "load_network", "prepare_collection",
           "train"]


@dataclass
class RunResult:
    """What a finished run produced."""

    run: Run
    metrics: dict
    history: list[dict]

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


def resolve_device(name: str) -> torch.device:
    return models.default_device() if name == "auto" else torch.device(name)


def prepare_collection(config: TrainConfig) -> ArtCollection:
    """Load, keep images labelled for the task, filter classes, drop unreadable files, split."""
    collection = load(config.data, config.layout, **({"separator": config.separator} if config.separator else {}))
    if config.task not in collection.multi_label:
        raise KeyError(f"{config.data} has no task {config.task!r}; its tasks are {collection.tasks}")
    collection = collection.labelled(config.task).filter(config.task, config.min_images, config.top_n)
    collection = collection.check_images()
    if config.split == "random":
        collection = collection.split(config.val_fraction, config.test_fraction, config.task, config.seed,
                                      keep_existing=False)
    elif config.split in ("auto", "official"):
        if config.split == "official" and collection.table["split"].isna().any():
            raise ValueError(f"{config.data}: {collection.table['split'].isna().sum()} images have no official split")
        collection = collection.split(config.val_fraction, config.test_fraction, config.task, config.seed)
    else:
        raise ValueError(f"split must be 'auto', 'official' or 'random', not {config.split!r}")
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
    for stale in run.path.glob(".*.part"):  # left by a process killed while writing; never read
        stale.unlink()
    run.write_config(config.to_dict())
    return run


def train(config: TrainConfig, runs_dir: str | Path = RUNS_DIR, resume: bool = False) -> RunResult:
    """Run one strategy end to end and write its run folder; with `resume`, continue an interrupted run."""
    from artlab.train.loops import fit
    from artlab.train.probe import fit_probe

    run = _open_run(config, Path(runs_dir), resume)
    if run.finished:
        return RunResult(run, run.metrics(), run.history().to_dict("records"))
    device = resolve_device(config.device)
    write_json(run.file("environment.json"), environment(config.seed, str(device)))
    collection = prepare_collection(config)
    if not run.file("split.csv").is_file():
        collection.to_csv(run.file("split.csv"))
    if len(collection.skipped):
        collection.skipped.to_csv(run.file("skipped.csv"), index=False)
    if config.strategy == "off_the_shelf":
        history = fit_probe(config, run, collection, device)
    else:
        _, history = fit(config, run, collection, device)
    metrics = evaluate_run(run, device=device)
    if run.file("checkpoint.safetensors").is_file():
        run.file("checkpoint.safetensors").unlink()  # the run is complete; model.safetensors holds the result
    return RunResult(run, metrics, history)


def run_collection(run: Run) -> ArtCollection:
    """The exact images, labels and split a run used (from its split.csv)."""
    config = TrainConfig.from_dict(run.config())
    _, meta = load_tensors(run.file("model.safetensors"))
    multi = meta["multi_label"] == "True"
    return from_manifest(run.file("split.csv"), [config.task], path_column="path", separator="|" if multi else None,
                         name=run.name)


def load_network(run: Run | str | Path) -> torch.nn.Module:
    """The trained network of a fine-tune or scratch run (best-on-validation weights), in eval mode."""
    run = run if isinstance(run, Run) else Run(run)
    tensors, meta = load_tensors(run.file("model.safetensors"))
    if meta.get("kind") != "network":
        raise ValueError(f"{run.path} holds a {meta.get('kind')}, not a trained network (off-the-shelf runs "
                         f"keep only a linear classifier on ImageNet features)")
    model = models.build(meta["arch"], pretrained=False, num_classes=len(json.loads(meta["classes"])))
    model.load_state_dict(tensors)
    return model.eval()


def evaluate_run(run: Run | str | Path, part: str = "test", device: torch.device | str | None = None) -> dict:
    """Recompute a run's metrics on one split from its saved model; the test metrics go to metrics.json."""
    from artlab.train.loops import predict
    from artlab.train.probe import features_for, probe_scores

    run = run if isinstance(run, Run) else Run(run)
    config = TrainConfig.from_dict(run.config())
    device = resolve_device(config.device) if device is None else torch.device(device)
    _, meta = load_tensors(run.file("model.safetensors"))
    classes = json.loads(meta["classes"])
    multi = meta["multi_label"] == "True"
    collection = run_collection(run)
    subset = collection.part(part)
    targets = subset.targets(config.task, classes)
    if meta["kind"] == "linear_probe":  # features of the whole collection: the set the training run cached
        in_part = (collection.table["split"] == part).to_numpy()
        scores = probe_scores(run, features_for(config, collection, device)[in_part])
    else:
        model = load_network(run).to(device)
        dataset = ImageDataset(subset.table["path"].tolist(), None, config.image_size, keep=False)
        scores = predict(model, dataset, device, config.batch_size * 2)
    metrics = evaluate(scores, targets, classes, multi) | {"split": part, "run": run.name}
    if part == "test":
        write_json(run.file("metrics.json"), metrics)
    return metrics

