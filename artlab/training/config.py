"""The configuration of a training run: everything needed to reproduce it, and the CLI's options.

Each field's type, default and help text live here once; `artlab train`'s options, choices and
help are generated from them (`add_arguments`), and `Literal` types are checked on creation.
"""

from __future__ import annotations

import argparse
import contextvars
import math
import numbers
import os
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from artlab.io import DamagedFile

Strategy = Literal["off_the_shelf", "fine_tune", "scratch"]
Layout = Literal["auto", "folders", "wikiart", "manifest", "peopleart", "synthetic"]
Classifier = Literal["logreg", "linear"]
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["cosine", "step", "none"]
Split = Literal["auto", "official", "random"]
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
MAX_RATE = 1e6  # learning rates, multipliers and decays beyond this are typos (and overflow float32 steps)
MAX_IMAGE_SIZE = 1024  # beyond this a CPU run would take hours and a GPU run run out of memory
MIN_IMAGE_SIZE = 32  # below this the last blocks of the networks pool maps of less than a pixel
#: Augmented views cached per training image when the first blocks are frozen: the frozen blocks run 4 times an
#: image instead of once an epoch; on genres (3 seeds, benchmarks/README "Augmentation with a frozen prefix") a run
#: takes 0.67x the time for 1.0 point less accuracy than a new crop at every step, within the test set's noise.
AUGMENT_VIEWS = 4
MAX_AUGMENT_VIEWS = 64


def _option(default: Any, help: str, cli: bool = True) -> Any:
    return field(default=default, metadata={"help": help, "cli": cli})


#: The config fields that decide a run's images, labels and split (see `training.api.prepare_collection`).
COLLECTION_FIELDS = ("data", "layout", "separator", "multi_label", "task", "min_images", "top_n", "val_fraction",
                     "test_fraction", "split", "split_from", "keep_out", "seed")


@dataclass
class TrainConfig:
    """One run. Defaults suit a 2-core CPU: MobileNetV2, 128 px images, a few epochs."""

    name: str = _option("", "run name (default: derived from data, task, strategy, arch, size, seed)")
    data: str = _option("synthetic", "collection folder, CSV/TSV manifest or 'synthetic'")
    layout: Layout = _option("auto", "how the collection is laid out")
    task: str | list[str] | None = _option(None, "label task (default: the collection's first); several, "
                                                 "comma-separated (style,artist): one backbone, one head each")
    task_weights: list[float] | None = _option(None, "multi-task: each task's weight in the loss, comma-separated "
                                                     "(default: 1 each)")
    separator: str | None = _option(None, "manifests: separator of multi-label cells, e.g. ';'")
    multi_label: list[str] | None = _option(None, "manifests: the columns the separator splits, comma-separated "
                                                  "(default: all)")
    strategy: Strategy = _option("fine_tune", "what trains")
    arch: str = _option("mobilenet_v2", "architecture; see `artlab models list`")
    image_size: int = _option(128, "input side in pixels")
    # collection preparation
    min_images: int = _option(0, "drop classes with fewer images")
    top_n: int | None = _option(None, "keep only the N largest classes")
    val_fraction: float = _option(0.15, "share of images for validation when artlab draws the split")
    test_fraction: float = _option(0.15, "share of images for testing when artlab draws the split")
    split: Split = _option("auto", "auto: the collection's own split when complete, else a random stratified one")
    split_from: str | None = _option(None, "use the train/val/test split this run recorded (paired comparisons)")
    keep_out: list[dict] | None = _option(None, "the collection settings (COLLECTION_FIELDS) of later stages' "
                                                "targets: their validation and test images, as split with the "
                                                "entry's seed (default: this run's), are kept out of this run (set "
                                                "by studies)",
                                          cli=False)
    # off-the-shelf
    layer: str | None = _option(None, "off-the-shelf: analysed layer whose pooled output is the feature "
                                      "(default: the last)")
    classifier: Classifier = _option("logreg", "off-the-shelf: scikit-learn logistic regression or a torch linear head")
    # fine-tuning and scratch
    freeze: int = _option(0, "freeze the first K blocks (0 trains everything)")
    init_from: str | None = _option(None, "start from this run's network (double fine-tuning)")
    epochs: int = _option(10, "training epochs")
    batch_size: int = _option(32, "images per training step")
    lr: float = _option(0.01, "learning rate of the head")
    backbone_lr_mult: float = _option(0.1, "fine-tuning: backbone learning rate = lr x this")
    optimizer: Optimizer = _option("sgd", "sgd (momentum 0.9) or adam")
    schedule: Schedule = _option("cosine", "learning-rate schedule")
    weight_decay: float = _option(1e-4, "L2 weight decay")
    patience: int | None = _option(None, "early stopping after this many epochs without improvement")
    label_smoothing: float = _option(0.0, "single-label tasks: label smoothing of the cross-entropy")
    augment: bool = _option(True, "random crops and flips of the training images; off (--no-augment): centre crops, "
                                  "and with --freeze K the frozen blocks' output is computed once, cached on disk, "
                                  "and only the later blocks run while training")
    augment_views: int = _option(AUGMENT_VIEWS, "with --freeze K and augmentation: random crops and flips of each "
                                                "training image whose frozen-block output is computed once and "
                                                "cached (1 for a 1-epoch run); each epoch draws one of them (0: a "
                                                "new crop at every step, the K frozen blocks run every time)")
    # execution
    seed: int = _option(0, "random seed (same seed and config on CPU: same metrics)")
    device: str = _option("auto", "auto (cuda when present), cpu, cuda, ...")
    num_workers: int = _option(0, "image-decoding worker processes")

    def __post_init__(self) -> None:
        self.task = _task_list(self.task)
        self.task_weights = _weights(self.task_weights, self.task)
        if isinstance(self.multi_label, str):
            self.multi_label = [c.strip() for c in self.multi_label.split(",") if c.strip()]
        if isinstance(self.task, list) and self.strategy == "off_the_shelf":
            raise ValueError(f"off_the_shelf trains one linear classifier per task on frozen features: run one per "
                             f"task instead of task={self.task}")
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):
            choices = typing.get_args(hints[f.name])
            value = getattr(self, f.name)
            if typing.get_origin(hints[f.name]) is Literal:
                if isinstance(value, str) and value in choices:
                    continue
                raise ValueError(f"{f.name} must be one of {list(choices)}, not {value!r}")
            setattr(self, f.name, _typed(f.name, hints[f.name], value))
        for key, top in (("lr", MAX_RATE), ("backbone_lr_mult", MAX_RATE), ("weight_decay", MAX_RATE),
                         ("label_smoothing", 0.99), ("val_fraction", 0.9), ("test_fraction", 0.9)):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= top:
                raise ValueError(f"{key} must be a finite number between 0 and {top:g}, not {value!r}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must leave images to train on (got "
                             f"{self.val_fraction} + {self.test_fraction})")
        check_device(self.device, here=not _SAVED.get())
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} px, not "
                             f"{self.image_size}")
        if self.epochs < 1 and self.strategy != "off_the_shelf":
            raise ValueError(f"epochs must be at least 1, not {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.freeze < 0:
            raise ValueError(f"freeze must be 0 or more, not {self.freeze}")
        if not 0 <= self.augment_views <= MAX_AUGMENT_VIEWS:
            raise ValueError(f"augment_views must be between 0 (a new crop at every step) and {MAX_AUGMENT_VIEWS}, "
                             f"not {self.augment_views}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch (or unset: no early stopping), not {self.patience}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 (decode in the training process) or more, not {self.num_workers}")
        if self.name:
            from artlab.runs.folder import check_name  # the run store loads torch: only when a name is given

            check_name(self.name)
        self.keep_out = _keep_out(self.keep_out)

    @property
    def tasks(self) -> list[str]:
        """The tasks this run learns (one for a single-task run); empty until resolved against a collection."""
        return list(self.task) if isinstance(self.task, list) else [self.task] if self.task else []

    def to_dict(self) -> dict:
        return asdict(self)

    def collection_settings(self) -> dict:
        """The fields that decide a run's images, labels and split: two configs that agree on them train on
        the same prepared collection."""
        return {name: getattr(self, name) for name in COLLECTION_FIELDS}

    def held_out_settings(self) -> dict:
        """What a source stage needs to keep this run's validation and test images out (`keep_out`): the fields
        that decide its collection and split but the seed (by default the source stage's own seed draws the
        split; an entry may name another)."""
        return {k: v for k, v in self.collection_settings().items() if k not in ("seed", "keep_out")}

    @classmethod
    def from_dict(cls, data: dict, saved: bool = True) -> TrainConfig:
        """A config from its fields as a run saved them (`saved`: a device this machine lacks is kept, so a run
        trained elsewhere can be read) or as a user wrote them (`saved=False`: checked like any new config)."""
        if not isinstance(data, dict):
            raise DamagedFile(f"a run's config must be a mapping of options, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        if saved and "augment_views" not in data and _views_mattered(data):
            data = {**data, "augment_views": 0}  # saved before augment_views existed: a new crop at every step
        token = _SAVED.set(saved)
        try:
            return cls(**data)
        finally:
            _SAVED.reset(token)

    @classmethod
    def coerce_field(cls, name: str, value: Any) -> Any:
        """A value as the field `name` expects it: YAML reads `1e-3` as a string, a float field wants the number."""
        hint = typing.get_type_hints(cls).get(name)
        if isinstance(value, str) and hint is not None and float in (hint, *typing.get_args(hint)):
            try:
                return float(value)
            except ValueError:
                return value
        return value

    @classmethod
    def coerce(cls, value: TrainConfig | dict | str | Path, what: str = "config") -> TrainConfig:
        """A config from a config, a mapping of its fields (YAML; values coerced) or a collection path; a
        ValueError naming `what` otherwise."""
        if isinstance(value, TrainConfig):
            return value
        if isinstance(value, str | Path):
            return cls(data=str(value))
        if not isinstance(value, dict):
            raise ValueError(f"{what} must be a TrainConfig or a mapping of its fields, not {type(value).__name__}")
        try:
            return cls.from_dict({k: cls.coerce_field(k, v) for k, v in value.items()}, saved=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {exc}") from None

    @property
    def cached_views(self) -> int:
        """How many augmented views of each training image the frozen-prefix cache holds (0: none, a new crop at
        every step or, without augmentation, the centre crop): `augment_views`, and 1 for a 1-epoch run, which draws
        one view of each image (it would compute 4 and use 1; longer runs draw with replacement, so they keep all)."""
        if not _views_mattered(asdict(self)):
            return 0
        return min(self.augment_views, 1) if self.epochs == 1 else self.augment_views

    def resolved(self, tasks: list[str]) -> TrainConfig:
        """This config with the task chosen (the collection's first when unset) and the name filled in."""
        task = self.task or tasks[0]
        resolved = replace(self, task=task)
        return resolved if self.name else replace(resolved, name=default_name(resolved))


def _views_mattered(fields_: dict) -> bool:
    """Whether `augment_views` changes what a run with these fields trains: frozen blocks and augmentation."""
    return (fields_.get("strategy", "fine_tune") != "off_the_shelf" and (fields_.get("freeze") or 0) >= 1
            and fields_.get("augment", True) is not False)


def _task_list(task: str | list[str] | tuple | None) -> str | list[str] | None:
    """One task as a string, several as a list: "style,artist" and ["style", "artist"] mean the same."""
    if isinstance(task, str):
        task = [t.strip() for t in task.split(",")] if "," in task else task
    if isinstance(task, list | tuple):
        names = [str(t).strip() for t in task]
        if not names or not all(names):
            raise ValueError(f"task must name one or more tasks, not {task!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"task names a task twice: {names}")
        return names[0] if len(names) == 1 else names
    return task


def _weights(weights: str | list | tuple | None, task: str | list[str] | None) -> list[float] | None:
    """Per-task loss weights as floats, as many as tasks, finite, non-negative and not all zero."""
    if weights is None:
        return None
    if isinstance(weights, str):
        weights = weights.split(",")
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"task_weights must be numbers, e.g. 1,0.5, not {weights!r}") from None
    tasks = task if isinstance(task, list) else [task] if task else []
    if len(values) != len(tasks):
        raise ValueError(f"task_weights gives {len(values)} weight(s) for {len(tasks)} task(s) {tasks}")
    if not all(math.isfinite(w) and 0 <= w <= MAX_RATE for w in values) or not any(values):
        raise ValueError(f"task_weights must be finite, between 0 and {MAX_RATE:g}, and not all 0: {values}")
    return values


def _keep_out(value: list[dict] | dict | None) -> list[dict] | None:
    """Later stages' collection settings, each a mapping of COLLECTION_FIELDS (None: none); an entry without a seed
    is split with the run's own seed."""
    if value is None or value == []:
        return None
    value = [value] if isinstance(value, dict) else value
    allowed = set(COLLECTION_FIELDS) - {"keep_out"}
    for settings in value:
        if not isinstance(settings, dict) or not set(settings) <= allowed or "data" not in settings:
            raise ValueError(f"keep_out holds the collection settings of later stages ({sorted(allowed)}, with "
                             f"data), not {settings!r}")
    return [dict(settings) for settings in value]


#: Set while `TrainConfig.from_dict` reads a saved config: its device need not exist on this machine.
_SAVED: contextvars.ContextVar[bool] = contextvars.ContextVar("artlab_saved_config", default=False)
_KINDS = {int: "an integer", float: "a number", bool: "True or False", str: "a string", list: "a list",
          type(None): "None"}


def _kinds(hint: Any) -> list[type]:
    """The Python types a field's annotation admits (`int | None` -> [int, NoneType]; `list[str]` -> [list])."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [kind for arg in typing.get_args(hint) for kind in _kinds(arg)]
    return [typing.get_origin(hint) or hint]


def _typed(name: str, hint: Any, value: Any) -> Any:
    """`value` as field `name` holds it, or a ValueError naming the field and the type it wants: an int field
    takes integers only (not True, 3.0 or "3"), a float field any real number, a str field a path too."""
    kinds = _kinds(hint)
    if value is None and type(None) in kinds or isinstance(value, bool) and bool in kinds:
        return value
    if not isinstance(value, bool):
        if int in kinds and isinstance(value, numbers.Integral):
            return int(value)  # numpy integers too
        if float in kinds and isinstance(value, numbers.Real):
            return value if isinstance(value, int | float) else float(value)
        if str in kinds and isinstance(value, os.PathLike):
            return os.fspath(value)
        if list in kinds and isinstance(value, tuple):
            return list(value)
        if isinstance(value, tuple(k for k in kinds if k not in (int, float, bool))):
            return value
    wanted = " or ".join(dict.fromkeys(_KINDS.get(k, k.__name__) for k in kinds))
    raise ValueError(f"{name} must be {wanted}, not {value!r} ({type(value).__name__})")


def check_device(device: str, here: bool = True) -> None:
    """Refuse a device torch cannot name ("gpu", "cuda:x") and, with `here`, one this machine lacks ("cuda"
    without CUDA), before anything is written."""
    import torch

    if device == "auto":
        return
    try:
        where = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:1', 'mps', ..., not {device!r}") from None
    if not here or where.type == "cpu":
        return
    if where.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (where.index or 0) >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(f"device {device!r} is not available: this machine has {have} (use --device cpu or "
                             f"auto)")
    elif where.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available: this machine has no MPS device (use --device cpu "
                         f"or auto)")


def default_name(config: TrainConfig) -> str:
    """`<data>-<task>-<strategy>-<arch>-<size>px`, plus `-freeze<k>`, `-noaug` and `-seed<s>` as they apply.

    Characters a run name may not hold (accents, spaces, a leading dot) become `_` or are dropped.
    """
    data = Path(str(config.data).rstrip("/")).stem
    name = f"{data}-{'+'.join(config.tasks)}-{config.strategy}-{config.arch}-{config.image_size}px"
    if config.freeze and config.strategy != "off_the_shelf":
        name += f"-freeze{config.freeze}"
    if config.layer and config.strategy == "off_the_shelf":  # probes of two layers are two runs
        name += f"-{config.layer}"
    if not config.augment and config.strategy != "off_the_shelf":
        name += "-noaug"
    if config.cached_views:
        name += f"-views{config.cached_views}"
    if config.seed:
        name += f"-seed{config.seed}"
    return plain_name(name)


def plain_name(text: str) -> str:
    """`text` as a plain run name: characters a name may not hold become `_`, no leading dot, no `..`."""
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)).lstrip("_.+=-")
    return name[:200] if name and name[0].isalnum() else f"data{name}"[:200]


def _argument_type(hint: Any) -> type:
    """The scalar type argparse should parse for a field (Optional and Literal unwrapped)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:  # comma-separated on the command line, parsed by TrainConfig
        return str
    if typing.get_origin(hint) is Literal:
        return type(args[0])
    if args:
        return _argument_type(args[0])
    return hint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--option` per TrainConfig field, with its type, choices, default and help."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        hint = hints[f.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        default = f.default if f.default is not MISSING else None
        shown = "" if default in (None, "") else f" (default {default})"
        if hint is bool:  # --augment / --no-augment
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=f.metadata.get("help", "") + shown)
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_argument_type(hint), choices=choices,
                            default=None, help=f.metadata.get("help", "") + shown)


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from parsed options: the ones given, defaults for the rest."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                          if getattr(args, f.name, None) is not None})
