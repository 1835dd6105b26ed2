"""Fine-tuning and training from scratch: resumable epochs with atomic checkpoints and early stopping."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.data.loading import ImageDataset, collate_present, loader
from artlab.models import ModelCard
from artlab.models.optim import SGD, Adam
from artlab.progress import progress, tqdm
from artlab.runs import Run
from artlab.training import distributed, prefix
from artlab.training.config import TrainConfig
from artlab.training.networks import build_network
from artlab.training.tasks import Tasks

#: Devices on which the network trains in channels_last (on 2 CPU cores a MobileNetV2 step is 1.4-1.8x faster).
CHANNELS_LAST = ("cpu", "cuda")


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in trainable if models.is_head_parameter(model, n)]
    body = [p for n, p in trainable if not models.is_head_parameter(model, n)]
    mult = config.backbone_lr_mult if config.strategy == "fine_tune" else 1.0
    groups = [{"params": head, "lr": config.lr}, {"params": body, "lr": config.lr * mult}]
    if config.optimizer == "adam":
        return Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    return None


def fast_layout(model: nn.Module, device: torch.device) -> nn.Module:
    """The network in channels_last where that speeds its convolutions up (CHANNELS_LAST), in place."""
    return model.to(memory_format=torch.channels_last) if device.type in CHANNELS_LAST else model


def _as_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device`, channels_last where the network is (see fast_layout)."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and device.type in CHANNELS_LAST else x


def _progress(data, desc: str) -> tqdm:
    """A progress bar over `data` that starts it once: tqdm.auto calls iter() on what it wraps, which would
    start a DataLoader twice (drawing its shuffling seed twice, and a different number of times for a plain
    DataLoader than for artlab's evaluation loader)."""
    return progress((batch for batch in data), total=len(data), desc=desc, unit="batch", leave=False)


@torch.no_grad()
def predict(model: nn.Module, dataset: ImageDataset | Dataset, device: torch.device, batch_size: int,
            desc: str = "evaluating", num_workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores (logits) for the images of a target-less `dataset`, and their indices.

    An image that could not be read has no row: compare the scores with `targets[indices]`.
    """
    if dataset.targets is not None:
        raise ValueError("predict needs a dataset without targets (it yields image indices)")
    model = models.for_inference(model, device)  # a copy: BatchNorm folded, channels_last, eval mode
    scores, indices = [], []
    for batch in _progress(loader(dataset, batch_size, num_workers=num_workers), desc):
        if batch is not None:
            scores.append(model(_as_input(batch[0], device)).float().cpu())
            indices.append(batch[1])
    if not scores:
        raise ValueError(f"none of the {len(dataset)} images could be read: {dict(list(dataset.failures.items())[:3])}")
    return torch.cat(scores).numpy(), torch.cat(indices).numpy()


def _train_epoch(model: nn.Module, frozen: list[nn.Module], data: torch.utils.data.DataLoader,
                 optimizer: torch.optim.Optimizer, heads: Tasks, targets: dict[str, torch.Tensor],
                 device: torch.device, desc: str) -> tuple[float, int]:
    """One pass over the training data (which yields row indices into `targets`); the summed loss and count."""
    model.train()
    for module in frozen:  # frozen blocks keep their ImageNet BatchNorm statistics
        module.eval()
    total, count = 0.0, 0
    for batch in _progress(data, desc):
        if batch is None:  # every image of the batch became unreadable
            continue
        x, rows = _as_input(batch[0], device), batch[1]
        optimizer.zero_grad(set_to_none=True)
        loss = heads.loss(model(x), {task: target[rows].to(device) for task, target in targets.items()})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()}; lower the learning rate (--lr)")
        loss.backward()
        optimizer.step()
        _check_finite(model, desc)
        total += loss.item() * len(x)
        count += len(x)
    return total, count


def _check_finite(model: nn.Module, desc: str) -> None:
    """Stop at the first step whose update made a weight NaN or infinite (never save such a model).

    One check of all trainable weights at once (one device synchronisation per step, not one per tensor).
    """
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    finite = torch.stack([torch.isfinite(param).all() for _, param in trainable]) if trainable else None
    if finite is not None and not bool(finite.all()):
        name = trainable[int(torch.nonzero(~finite)[0, 0])][0]
        raise FloatingPointError(f"{desc}: weight {name} became NaN or infinite; lower the learning rate (--lr)")


def network_card(config: TrainConfig, model: nn.Module, heads: Tasks, epoch: int | None = None) -> ModelCard:
    """What is stored beside a network's weights: enough to rebuild it (attributes included) and read its outputs."""
    attributes = {name: getattr(model, name) for name in models.arch_of(model).pretrained_attributes}
    return heads.card(kind="network", arch=config.arch, image_size=config.image_size, epoch=epoch,
                      attributes=attributes)


def training_inputs(config: TrainConfig, model: nn.Module, train: ArtCollection, val: ArtCollection,
                    device: torch.device) -> tuple[Dataset, Dataset, nn.Module]:
    """The training and validation sets and the module that runs on them: the network on images, or, with
    the first blocks frozen, its later blocks on the frozen blocks' cached output (of each training image's
    cached augmented views, or of its centre crop without augmentation)."""
    size, rows = config.image_size, np.arange(len(train))
    paths = train.table["path"].tolist(), val.table["path"].tolist()
    if config.freeze >= 1:
        reason = prefix.why_not_cached(config, model, len(train), len(val))
        if reason is None:
            return (prefix.cached_outputs(model, config.freeze, paths[0], rows, size, device,
                                          views=config.cached_views),
                    prefix.cached_outputs(model, config.freeze, paths[1], None, size, device),
                    prefix.Suffix(model, config.freeze))
        tqdm.write(f"{config.name}: {reason}", file=sys.stderr)
    train_set = ImageDataset(paths[0], rows, size, models.input_transform(model, size, train=config.augment),
                             train=config.augment)
    return train_set, ImageDataset(paths[1], None, size, models.input_transform(model, size)), model


@dataclass
class TrainingState:
    """Where a run's training stands after its last finished epoch; stored in the checkpoint as a JSON dict."""

    epoch: int = 0  # the last finished epoch
    history: list[dict] = field(default_factory=list)  # one row per epoch: losses, validation scores, lr
    best: float = -math.inf  # the best validation score so far
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one (early stopping)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> TrainingState:
        """The state a checkpoint stored (keys it lacks take their defaults, others are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in state.items() if name in known})


@dataclass(frozen=True, eq=False)
class Training:
    """What stays the same over a run's epochs: its settings and folder, the network and the module that runs on
    the inputs (the network, or its later blocks on the frozen blocks' cached output), the heads, the optimiser
    and scheduler, and the validation images with their targets."""

    config: TrainConfig
    run: Run
    model: nn.Module
    net: nn.Module
    heads: Tasks
    optimizer: torch.optim.Optimizer
    scheduler: Any
    val_set: Dataset
    val_targets: dict[str, np.ndarray]
    device: torch.device
    in_memory: bool  # cached outputs of the frozen blocks: nothing to decode, no worker processes


def fit(config: TrainConfig, run: Run, collection: ArtCollection, device: torch.device,
        where: distributed.Group | None = None) -> tuple[nn.Module, list[dict], dict[str, str]]:
    """Train for `config.epochs` (or until early stopping), resuming from the run's checkpoint if present.

    Each epoch reseeds torch from (seed, epoch), so a resumed run repeats exactly what an
    uninterrupted one would have done. The best-on-validation weights go to model.safetensors.
    Returns the best model, the history and the images that became unreadable (path -> reason).
    Under torchrun (`where`), every process trains on its share of the images and rank 0 alone
    validates and writes; the others follow its state.
    """
    where = where or distributed.Group()
    heads = Tasks.of(collection, config.tasks, config.task_weights, config.label_smoothing)
    train, val = collection.part("train"), collection.part("val")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{config.data}: need training and validation images (have {len(train)} and {len(val)})")
    torch.manual_seed(config.seed)
    model, frozen = build_network(config, heads.num_outputs)
    fast_layout(model.to(device), device)
    optimizer = _optimizer(config, model)
    scheduler = _scheduler(config, optimizer)
    train_targets = {task: torch.from_numpy(t) for task, t in heads.targets(train).items()}
    val_targets = heads.targets(val)
    stored = run.load_checkpoint(model, optimizer, scheduler)
    train_set, val_set, net = training_inputs(config, model, train, val, device)
    in_memory = net is not model  # cached outputs of the frozen blocks: nothing to decode, no worker processes
    trained = distributed.wrap(net, where, device)  # DistributedDataParallel under torchrun
    state = TrainingState() if stored is None else TrainingState.from_dict(stored)
    # the checkpoint is the one source of the history (a kill before history.csv loses nothing)
    if stored is not None and where.main:
        run.write_history(state.history)
    training = Training(config, run, model, net, heads, optimizer, scheduler, val_set, val_targets, device, in_memory)
    epochs = progress(range(state.epoch + 1, config.epochs + 1), desc=run.name, unit="epoch",
                      initial=state.epoch, total=config.epochs, disable=True if not where.main else None)
    for epoch in epochs:
        if config.patience is not None and state.stale >= config.patience:
            break
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        torch.manual_seed(config.seed * 100_003 + epoch)
        workers = 0 if in_memory else config.num_workers
        data = distributed.shard_loader(train_set, config.batch_size, where, config.seed, epoch, workers,
                                        collate_present) if where.active else \
            loader(train_set, config.batch_size, shuffle=True, generator=generator, num_workers=workers)
        total, count = _train_epoch(trained, frozen, data, optimizer, heads, train_targets, device, f"epoch {epoch}")
        train_loss = distributed.mean_over_processes(total, count, where)
        if where.main:
            state = _validate_and_save(training, state, epoch, train_loss)
        elif scheduler is not None:
            scheduler.step()
        state = distributed.share(state, where)  # rank 0 decided: best epoch, early stopping
        epochs.set_postfix(loss=f"{train_loss:.3f}", val=f"{state.history[-1]['val_score']:.3f}")
    best, _ = run.load_model()
    model.load_state_dict(best)
    return model, state.history, train_set.failures | val_set.failures


def _validate_and_save(training: Training, state: TrainingState, epoch: int, train_loss: float) -> TrainingState:
    """Score the epoch on the validation images, keep the best model, write the checkpoint and the history."""
    t = training
    scores, seen = predict(t.net, t.val_set, t.device, t.config.batch_size * 2, desc="validating",
                           num_workers=0 if t.in_memory else None)
    seen_targets = {task: target[seen] for task, target in t.val_targets.items()}
    val_loss = float(t.heads.loss(torch.from_numpy(scores),
                                  {k: torch.from_numpy(v) for k, v in seen_targets.items()}))
    validation = t.heads.validation_row(t.heads.evaluate(scores, seen_targets))
    score = validation["val_score"]
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **validation,
           "lr": t.optimizer.param_groups[0]["lr"]}
    if t.scheduler is not None:
        t.scheduler.step()
    if score > state.best:
        state.best, state.best_epoch, state.stale = score, epoch, 0
        t.run.save_model(t.model.state_dict(), network_card(t.config, t.model, t.heads, epoch))
    else:
        state.stale += 1
    state.history.append(row)
    state.epoch = epoch
    t.run.save_checkpoint(t.model, t.optimizer, t.scheduler, state.to_dict())
    t.run.write_history(state.history)
    return state
