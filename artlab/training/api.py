"""Train one strategy end to end into a run folder, and evaluate a run from its saved model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
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
from artlab.runs import MODEL_FILE, Run, as_run, index, load_network, run_collection, status
from artlab.runs.split import content_keys, recorded_root, remember_move
from artlab.training import distributed
from artlab.training.config import TrainConfig, check_device
from artlab.training.holdout import KEPT, Holdout, shares_images
from artlab.training.loops import fit, predict
from artlab.training.metrics import HEADLINE_METRICS, evaluate, headline
from artlab.training.probe import features_for, fit_probe, probe_scores
from artlab.training.tasks import MISSING, Tasks


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
    options = {"separator": config.separator} if config.separator else {}
    if config.multi_label:
        options["multi_label"] = config.multi_label
    return load(config.data, config.layout, **options)


def prepare_collection(config: TrainConfig, collection: ArtCollection | None = None) -> ArtCollection:
    """Keep images labelled for the task, filter classes, drop unreadable files, split.

    Refuses what would give wrong science: fewer than two classes, or a split without training,
    validation or test images; warns about classes the split leaves out of a part.
    """
    collection = load_collection(config) if collection is None else collection
    tasks = config.tasks
    for task in tasks:
        if task not in collection.multi_label:
            raise KeyError(f"{config.data} has no task {task!r}; its tasks are {collection.tasks}")
    several = len(tasks) > 1  # an image without one task's label still serves the others
    collection = collection.labelled_any(tasks)
    for task in tasks:
        collection = collection.filter(task, config.min_images, config.top_n, drop_rows=not several)
    collection = collection.labelled_any(tasks).check_images()
    for settings in config.keep_out or ():
        collection = _keep_out(collection, TrainConfig(**{"seed": config.seed, **settings}))
    for task in tasks:
        classes = collection.classes(task)
        if len(classes) < 2:
            raise ValueError(f"{config.data}: task {task!r} has {len(classes)} class(es) {classes} after "
                             f"filtering: classification needs at least two")
    if config.split_from:
        collection = Run(config.split_from).split_like(collection)
    elif config.split == "random":
        collection = collection.split(config.val_fraction, config.test_fraction, tasks[0], config.seed,
                                      keep_existing=False)
    else:
        if config.split == "official" and collection.table["split"].isna().any():
            raise ValueError(f"{config.data}: {collection.table['split'].isna().sum()} images have no official split")
        collection = collection.split(config.val_fraction, config.test_fraction, tasks[0], config.seed)
    empty = [part for part in SPLITS if not (collection.table["split"] == part).any()]
    if empty:
        raise ValueError(f"{config.data}: no {' or '.join(empty)} images after splitting "
                         f"({len(collection)} images); use --split random or add images")
    for task in tasks:
        for part in ("train", "val") if several else ():
            if not len(collection.part(part).labelled(task)):
                raise ValueError(f"{config.data}: no {part} image carries a {task!r} label; this task cannot be "
                                 f"learned or validated (check its column, or drop it from --task)")
        for problem in collection.split_problems(task):
            warnings.warn(f"{config.data}: {task}: {problem}" if several else f"{config.data}: {problem}",
                          stacklevel=2)
    return collection


def _keep_out(collection: ArtCollection, target: TrainConfig) -> ArtCollection:
    """`collection` without the validation and test images of a later stage's `target` and their look-alikes (the
    same artwork at another size or quality), each listed in `skipped` with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # about the target's own collection: its runs say them
        loaded = load_collection(target)
        held = Holdout.of(prepare_collection(target.resolved(loaded.tasks), loaded))
    return held.keep_out(collection)


def keep_apart(source: TrainConfig, targets: list[TrainConfig], seeds: Sequence[int] | None = None) -> TrainConfig:
    """`source` set to keep out the validation and test images of each target whose collection shares files or
    look-alike images with its own; unchanged when none does, so its runs stay those trained before.

    By default each target is split with the source run's own seed; `seeds`: with each of these seeds, so that
    one source stage can serve the target splits of several seeds.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # about the collections themselves: their runs say them
        mine = load_collection(source).check_images()
        sharing = [target for target in targets if shares_images(mine, load_collection(target).check_images())]
    settings = [target.held_out_settings() | ({"seed": seed} if seeds is not None else {})
                for target in sharing for seed in (seeds if seeds is not None else [None])]
    unique = [s for i, s in enumerate(settings) if s not in settings[:i]]
    return replace(source, keep_out=unique) if unique else source


def kept_out(run: Run) -> int:
    """How many images a run kept out because a later stage's target holds them for validation or testing."""
    path = run.file("skipped.csv")
    if not path.is_file():
        return 0
    return int(pd.read_csv(path, dtype=str)["reason"].str.startswith(KEPT).sum())


def check_earlier_stage(earlier: Run, collection: ArtCollection) -> None:
    """Refuse to start from a run that trained on images of this run's validation or test split: matched by
    content, from the split the earlier run recorded."""
    recorded = earlier.split_table()
    paths = recorded.loc[recorded["split"] == "train", "path"]
    missing = int((~paths.map(os.path.isfile)).sum())
    if missing:
        raise ValueError(f"--init-from {earlier.path}: {missing} of its {len(paths)} training images cannot be found "
                         f"(moved? set ARTLAB_DATA to the folder holding its collection), so nothing shows it never "
                         f"trained on this run's validation or test images")
    leaked = Holdout.of(collection).matching(paths)
    if leaked:
        raise ValueError(f"--init-from {earlier.path} trained on {len(leaked)} image(s) of this run's validation or "
                         f"test split (the same files, or stand-ins of them): scores here would be inflated; train "
                         f"the earlier stage with them kept out (double_finetune and sweeps with a source do so) or "
                         f"draw another split")


def check_config(config: TrainConfig) -> None:
    """Refuse options that cannot work before anything is written (a failed start leaves no folder)."""
    spec = models.arch(config.arch)
    if config.strategy == "off_the_shelf":
        models.check_layers(spec, [config.layer or spec.feature_layer])
    if config.freeze > len(spec.blocks):
        raise ValueError(f"freeze must be at most {len(spec.blocks)} ({spec.name} has {len(spec.blocks)} blocks), "
                         f"not {config.freeze}")
    if config.split_from and not Run(config.split_from).file("split.csv").is_file():
        raise ValueError(f"--split-from {config.split_from} has recorded no split (no split.csv)")
    if config.init_from:
        source = Run(config.init_from)
        if not source.finished:
            raise ValueError(f"--init-from {source.path} has not finished training (no metrics.json): finish it "
                             f"with --resume first, so the next stage starts from its best model")
        card = source.card()
        if card.kind != "network" or card.arch != spec.name:
            raise ValueError(f"--init-from {source.path} holds a {card.kind} of {card.arch}, not a {spec.name} "
                             f"network to start from")


def as_saved_today(saved: dict) -> dict:
    """A run's saved config as TrainConfig reads it today: fields added since it was written take their defaults."""
    return TrainConfig.from_dict(saved).to_dict()


@dataclass(frozen=True)
class Reuse:
    """A finished run trained with the very config asked for: what `train` would return without training."""

    run: Run
    config: TrainConfig  # as saved, its task resolved

    def changes(self, collection: ArtCollection) -> str:
        """How `collection`, prepared now for this config, differs from what the run trained on ("" if not)."""
        return self.run.changes_since(collection, self.config.tasks)


def reusable(config: TrainConfig, runs_dir: str | Path | None = None,
             collection: ArtCollection | None = None) -> Reuse | None:
    """The finished run that `train(config)` would reuse as it is, else None (train decides: resume or refuse).

    A run trained on the same images elsewhere (its collection moved, or copied from another machine) is
    reused when its images, labels and split match by content (`collection`: `config`'s, prepared, if at hand).
    """
    run = Run.named(config.name, runs_dir)
    if not run.finished:
        return None
    try:
        saved = TrainConfig.from_dict(run.config())
        wanted = config if config.task is not None else replace(config, task=saved.task)
        started_alike = same_start(run, wanted)
        if started_alike is False:  # its earlier stage was trained again since: train() says so
            return None
        if saved.to_dict() == wanted.to_dict():
            return Reuse(run, saved)
        if not only_places_differ(saved, wanted, started_alike):
            return None
        if collection is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # about the collection itself: train() says them
                loaded = load_collection(wanted)
                collection = prepare_collection(wanted.resolved(loaded.tasks), loaded)
        multi = {task: collection.multi_label[task] for task in saved.tasks}
        if run.content_key(multi) not in content_keys(collection.table, collection.root, multi):
            return None
        remember_move(recorded_root(run.path, saved.data), collection.root)  # its analyses find the images here
        return Reuse(run, replace(saved, **{f: getattr(wanted, f) for f in PLACE_FIELDS}))
    except (OSError, ValueError, TypeError, KeyError):  # a damaged folder: train() says what is wrong with it
        return None


#: Config fields that say where rather than what: a run's collection, earlier runs, held-out targets' collections.
PLACE_FIELDS = ("data", "init_from", "split_from", "keep_out")


def only_places_differ(saved: TrainConfig, wanted: TrainConfig, started_alike: bool | None = None) -> bool:
    """Whether two configs differ at most in where things are: collections (to be matched by content), earlier
    runs or held-out collections of the same folder names. `started_alike`: whether the earlier run is the one
    started from, by its weights (None: not recorded, so by folder name)."""
    then, now = saved.to_dict(), wanted.to_dict()
    differing = {k for k in then.keys() | now.keys() if then.get(k) != now.get(k)}
    if differing - set(PLACE_FIELDS):
        return False
    named = [_folder_name(then.get(k)) == _folder_name(now.get(k)) for k in ("init_from", "split_from")]
    if started_alike is not None:
        named[0] = started_alike
    held = [[{**s, "data": _folder_name(s.get("data"))} for s in (c.get("keep_out") or [])] for c in (then, now)]
    return all(named) and held[0] == held[1]


def same_start(run: Run, config: TrainConfig) -> bool | None:
    """Whether `config.init_from` holds the very network `run` started from (its weights as recorded then); None
    when it cannot be told: `run` not started, nothing recorded (older runs), or no earlier stage there (a pack
    without it). An earlier stage being trained again (its folder there, its model not yet) is not the same."""
    recorded = run.started_from() if run.started else None
    earlier = Run(config.init_from) if config.init_from else None
    if recorded is None or earlier is None or not earlier.path.is_dir():
        return None
    return earlier.file(MODEL_FILE).is_file() and earlier.weights_id() == recorded


def check_same_start(run: Run, config: TrainConfig) -> None:
    """Refuse to reuse or resume a run whose earlier stage (`init_from`) was trained again since it started from
    it: its results would no longer follow from that run."""
    if same_start(run, config) is False:
        raise ValueError(f"run {run.path} started from {config.init_from} before it was trained again (its "
                         f"network has changed since), so its results no longer follow from it; delete the run "
                         f"to train it again, or choose another name")


def _folder_name(path: object) -> str | None:
    return Path(str(path).rstrip("/")).name if path else None


#: The config fields the run index shows for each run.
INDEX_FIELDS = ("strategy", "arch", "data", "task", "freeze")


def describe_run(run: Run) -> dict:
    """A run's row of the run index: what it trained, its status and epochs, and its headline test metrics
    (each task's accuracy or mAP for a multi-task run)."""
    config = run.config()
    row = {key: config.get(key) for key in INDEX_FIELDS} | {"status": status(run)}
    row["epochs"] = len(run.history()) if config.get("strategy") != "off_the_shelf" else None
    if run.finished:
        metrics = run.metrics()
        row.update({k: metrics[k] for k in HEADLINE_METRICS if k in metrics})
        for task, task_metrics in metrics.get("tasks", {}).items():
            row.update({f"{task} {k}": task_metrics[k] for k in ("accuracy", "mAP") if k in task_metrics})
    return row


def list_runs(root: str | Path | None = None) -> pd.DataFrame:
    """Every run under `root` (default: $ARTLAB_RUNS, else ./runs) as one row; unreadable ones as "damaged"."""
    return index(root, describe_run)


def train(config: TrainConfig, runs_dir: str | Path | None = None, resume: bool = False) -> RunResult:
    """Run one strategy end to end and write its run folder; with `resume`, continue an interrupted run.

    Runs go under `runs_dir` (default: $ARTLAB_RUNS, else ./runs). The folder is locked while
    training (a second process on the same run is refused), the split is recorded once and reused
    exactly on resume, and metrics.json is written last. Started by torchrun, fine-tuning and
    scratch runs train on every process (see `artlab.training.distributed`).
    """
    check_config(config)
    loaded = load_collection(config)
    config = config.resolved(loaded.tasks)
    run = Run.named(config.name, runs_dir)  # a bad name is refused before the images are checked
    collection = prepare_collection(config, loaded)
    check_same_start(run, config)
    reused = reusable(config, runs_dir, collection) if resume else None
    if reused is not None:  # read, never written: the folder may be a read-only copy from another machine
        run.warn_if_changed(collection, config.tasks)
        return RunResult(run, run.metrics(), run.history().to_dict("records"))
    if config.init_from:  # a run to train (a finished one was checked when it trained)
        check_earlier_stage(Run(config.init_from), collection)
    device = models.resolve_device(config.device)
    if config.strategy != "off_the_shelf":
        where = distributed.group(device)
        if where.active:
            return _train_together(config, run, collection, distributed.process_device(device, where), where,
                                   resume)
    with run.lock():
        run.open(config.to_dict(), resume, as_saved_today)
        if run.finished:
            run.warn_if_changed(collection, config.tasks)
            return RunResult(run, run.metrics(), run.history().to_dict("records"))
        collection = run.record(collection, config.tasks, config.seed, str(device), _started_from(config, run))
        with torch.random.fork_rng():  # training reseeds torch per epoch; the caller's random state is kept
            if config.strategy == "off_the_shelf":
                history, failures = fit_probe(config, run, collection, device)
            else:
                history, failures = _fit(config, run, collection, device)
        metrics = _finish(run, collection, failures, device)
    return RunResult(run, metrics, history)


def _started_from(config: TrainConfig, run: Run) -> str | None:
    """The weights id of the run `config` starts from, to record beside `run` (None: none). A resumed run keeps
    what it recorded when it started (None for one started before artlab recorded it): its checkpoint came from
    those weights, whatever the earlier stage holds now."""
    if run.started:
        return run.started_from()
    return Run(config.init_from).weights_id() if config.init_from else None


def _fit(config: TrainConfig, run: Run, collection: ArtCollection, device: torch.device,
         where: distributed.Group | None = None) -> tuple[list[dict], dict[str, str]]:
    _, history, failures = fit(config, run, collection, device, **({"where": where} if where else {}))
    return history, failures


def _finish(run: Run, collection: ArtCollection, failures: dict[str, str], device: torch.device) -> dict:
    """Evaluate on the test split and finish the run, listing the images lost during training."""
    gone = pd.DataFrame({"path": list(failures), "reason": [f"became unreadable during training: {r}"
                                                            for r in failures.values()]})
    return run.finish(_evaluate(run, "test", device),
                      pd.concat([collection.skipped, gone], ignore_index=True) if failures else None)


def _train_together(config: TrainConfig, run: Run, collection: ArtCollection, device: torch.device,
                    where: distributed.Group, resume: bool) -> RunResult:
    """Under torchrun: rank 0 opens and writes the run folder, every process trains its share of the
    images, rank 0 evaluates; the others read the split rank 0 recorded and never write."""
    with run.lock() if where.main else nullcontext():
        problem: Exception | None = None
        if where.main:
            try:
                run.open(config.to_dict(), resume, as_saved_today)
                if not run.finished:
                    collection = run.record(collection, config.tasks, config.seed, str(device),
                                            _started_from(config, run))
            except Exception as exc:  # every process must learn of it, or the others wait forever
                problem = exc
        failed = distributed.share(None if problem is None else f"{type(problem).__name__}: {problem}", where)
        if problem is not None:
            raise problem
        if failed:
            raise RuntimeError(f"rank 0 could not start run {run.name}: {failed}")
        if run.finished:
            if where.main:
                run.warn_if_changed(collection, config.tasks)
            return RunResult(run, run.metrics(), run.history().to_dict("records"))
        if not where.main:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # rank 0 reports them
                collection = run.exact_split(collection, config.tasks)
        with torch.random.fork_rng():
            history, failures = _fit(config, run, collection, device, where)
        if where.main:
            _finish(run, collection, failures, device)
        distributed.wait_for_all(where)
    return RunResult(run, run.metrics(), history)


def evaluate_run(run: Run | str | Path, part: str = "test", device: torch.device | str | None = None,
                 data: str | Path | None = None) -> dict:
    """Recompute a run's metrics on one split from its saved model.

    Never touches the training-time metrics.json: an evaluation of a finished run is written to
    `evaluations/<time>-<split>.json`; an unfinished run's is only returned. Images missing or
    changed since training are counted in the result (and warned about), and so are a workshop pack's
    stand-ins of them. `data`: the run's collection at another place (moved, or copied to another machine);
    its files' signatures must match the run's (a stand-in's: its original's, `artlab.data.standins`).
    """
    run = as_run(run)
    metrics = _evaluate(run, part, device, data)
    if run.finished:
        metrics["file"] = str(run.write_evaluation(metrics))
    return metrics


@dataclass
class Predictions:
    """A run's scores for one task on the images of one split: `paths[i]` got `scores[i]` (probabilities or
    logits) and carries `targets[i]`; images that could not be read, or have no label for the task, are left out
    (the unreadable ones counted)."""

    paths: list[str]
    scores: np.ndarray
    targets: np.ndarray
    classes: list[str]
    multi_label: bool
    missing: int = 0
    changed: int = 0
    unreadable: int = 0
    task: str = ""
    stand_ins: int = 0  # of `paths`, those that are a workshop pack's shrunk stand-ins of the run's images


def predictions(run: Run | str | Path, part: str = "test", device: torch.device | str | None = None,
                task: str | None = None, data: str | Path | None = None) -> Predictions:
    """Recompute a run's per-image scores on one split from its saved model (the ground of every metric).

    `task` picks one task of a multi-task run (default: its first); `data`: its collection moved elsewhere.
    """
    return _predict_tasks(run, part, device, [task] if task else None, data)[0]  # all tasks in order: the first


def _predict_tasks(run: Run | str | Path, part: str, device: torch.device | str | None,
                   tasks: list[str] | None = None, data: str | Path | None = None) -> list[Predictions]:
    """One forward pass over a split, read out per task (`tasks`, default all of the run's, in its order)."""
    run = as_run(run)
    config = TrainConfig.from_dict(run.config())
    device = models.resolve_device(_here(config.device) if device is None else device)
    card = run.card()
    for task in tasks or ():
        if task not in card.tasks:
            raise KeyError(f"{run.name} has no task {task!r}; it was trained on {list(card.tasks)}")
    collection = run_collection(run, card, data)
    subset = collection.part(part)
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
    heads = Tasks.of_card(card)
    targets = heads.targets(subset)
    paths = subset.table["path"].to_numpy()[seen]
    shrunk = int(np.isin(paths, collection.stand_ins).sum())
    out = []
    for head in heads:
        if tasks is not None and head.name not in tasks:
            continue
        target = targets[head.name][seen]
        labelled = ~np.isnan(target[:, 0]) if head.multi_label else target != MISSING
        out.append(Predictions(paths[labelled].tolist(), scores[labelled][:, head.outputs], target[labelled],
                               head.classes, head.multi_label, missing=int(len(collection.skipped)),
                               changed=len(collection.changed), unreadable=int(len(subset) - len(seen)),
                               task=head.name, stand_ins=shrunk))
    return out


def _here(device: str) -> str:
    """A saved run's device if this machine has it, else "auto" (a run trained on a GPU opens on a laptop)."""
    try:
        check_device(device)
    except ValueError:
        return "auto"
    return device


def _evaluate(run: Run, part: str, device: torch.device | str | None, data: str | Path | None = None) -> dict:
    """Test (or any split's) metrics of every task of a run: flat for one task, under "tasks" for several."""
    scored = _predict_tasks(run, part, device, data=data)
    per_task = {p.task: evaluate(p.scores, p.targets, p.classes, p.multi_label) for p in scored}
    first = scored[0]
    metrics = per_task[first.task] if len(per_task) == 1 else {
        "tasks": per_task, "mean_score": float(np.mean([headline(m) for m in per_task.values()]))}
    return metrics | {"split": part, "run": run.name, "images_missing_since_training": first.missing,
                      "images_changed_since_training": first.changed, "images_unreadable_now": first.unreadable,
                      "images_shrunk_stand_ins": first.stand_ins}
