"""The configuration of a training run: everything needed to reproduce it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

STRATEGIES = ("off_the_shelf", "fine_tune", "scratch")


@dataclass
class TrainConfig:
    """One run. Defaults suit a 2-core CPU: MobileNetV2, 128 px images, a few epochs."""

    name: str = ""
    data: str = "synthetic"
    layout: str = "auto"
    task: str = "style"
    separator: str | None = None  # manifests: the separator of multi-label cells, e.g. ";"
    strategy: str = "fine_tune"
    arch: str = "mobilenet_v2"
    image_size: int = 128
    # collection preparation
    min_images: int = 0
    top_n: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split: str = "auto"  # "auto": the collection's own split when complete, else a random stratified one
    # off-the-shelf
    layer: str | None = None  # analysed layer whose pooled output is the feature; default: the last
    classifier: str = "logreg"  # "logreg" (scikit-learn) or "linear" (a torch linear head)
    # fine-tuning and scratch
    freeze: int = 0  # the first `freeze` blocks are frozen (0 trains everything)
    init_from: str | None = None  # a run folder whose backbone starts this one (double fine-tuning)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    backbone_lr_mult: float = 0.1  # discriminative learning rate: backbone lr = lr * mult
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    schedule: str = "cosine"  # "cosine", "step" or "none"
    weight_decay: float = 1e-4
    patience: int | None = None  # early stopping: epochs without validation improvement
    label_smoothing: float = 0.0
    # execution
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', not {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "none"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'none', not {self.schedule!r}")
        if self.classifier not in ("logreg", "linear"):
            raise ValueError(f"classifier must be 'logreg' or 'linear', not {self.classifier!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, not {self.image_size}")
        if self.epochs < 1 and self.strategy != "off_the_shelf":
            raise ValueError(f"epochs must be at least 1, not {self.epochs}")
        if not self.name:
            data = Path(self.data).stem or "data"
            self.name = f"{data}-{self.task}-{self.strategy}-{self.arch}-{self.image_size}px-seed{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        return cls(**data)
