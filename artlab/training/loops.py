"""Fine-tuning and training from scratch: resumable epochs with atomic checkpoints and early stopping."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.data.loading import ImageDataset, loader
from artlab.models import ModelCard
from artlab.runs import Run, load_checkpoint, save_checkpoint
from artlab.training.config import TrainConfig
from artlab.training.metrics import evaluate, headline, loss_function
from artlab.training.networks import build_network


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in trainable if models.is_head_parameter(model, n)]
    body = [p for n, p in trainable if not models.is_head_parameter(model, n)]
    mult = config.backbone_lr_mult if config.strategy == "fine_tune" else 1.0
    groups = [{"params": head, "lr": config.lr}, {"params": body, "lr": config.lr * mult}]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    return None


@torch.no_grad()
def predict(model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int,
            desc: str = "evaluating") -> tuple[np.ndarray, np.ndarray]:
    """Raw scores (logits) for the images of a target-less `dataset`, and their indices.

    An image that could not be read has no row: compare the scores with `targets[indices]`.
    """
    if dataset.targets is not None:
        raise ValueError("predict needs a dataset without targets (it yields image indices)")
    model.eval()
    scores, indices = [], []
    for batch in tqdm(loader(dataset, batch_size), desc=desc, unit="batch", leave=False):
        if batch is not None:
            scores.append(model(batch[0].to(device)).float().cpu())
            indices.append(batch[1])
    if not scores:
        raise ValueError(f"none of the {len(dataset)} images could be read: {dict(list(dataset.failures.items())[:3])}")
    return torch.cat(scores).numpy(), torch.cat(indices).numpy()


def _train_epoch(model: nn.Module, frozen: list[nn.Module], data: torch.utils.data.DataLoader,
                 optimizer: torch.optim.Optimizer, loss_fn: nn.Module, device: torch.device, desc: str) -> float:
    """One pass over the training data; returns the mean loss."""
    model.train()
    for module in frozen:  # frozen blocks keep their ImageNet BatchNorm statistics
        module.eval()
    total, count = 0.0, 0
    for batch in tqdm(data, desc=desc, unit="batch", leave=False):
        if batch is None:  # every image of the batch became unreadable
            continue
        x, y = batch[0].to(device), batch[1].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()}; lower the learning rate (--lr)")
        loss.backward()
        optimizer.step()
        _check_finite(model, desc)
        total += loss.item() * len(x)
        count += len(x)
    return total / max(count, 1)


def _check_finite(model: nn.Module, desc: str) -> None:
    """Stop at the first step whose update made a weight NaN or infinite (never save such a model)."""
    for name, param in model.named_parameters():
        if param.requires_grad and not torch.isfinite(param).all():
            raise FloatingPointError(f"{desc}: weight {name} became NaN or infinite; lower the learning rate (--lr)")


def network_card(config: TrainConfig, model: nn.Module, classes: list[str], multi: bool,
                 epoch: int | None = None) -> ModelCard:
    """What is stored beside a network's weights: enough to rebuild it (attributes included) and read its outputs."""
    attributes = {name: getattr(model, name) for name in models.arch_of(model).pretrained_attributes}
    return ModelCard(kind="network", arch=config.arch, tasks=(config.task,), classes={config.task: classes},
                     multi_label={config.task: multi}, image_size=config.image_size, epoch=epoch,
                     attributes=attributes)


def fit(config: TrainConfig, run: Run, collection: ArtCollection,
        device: torch.device) -> tuple[nn.Module, list[dict], dict[str, str]]:
    """Train for `config.epochs` (or until early stopping), resuming from the run's checkpoint if present.

    Each epoch reseeds torch from (seed, epoch), so a resumed run repeats exactly what an
    uninterrupted one would have done. The best-on-validation weights go to model.safetensors.
    Returns the best model, the history and the images that became unreadable (path -> reason).
    """
    task, multi = config.task, collection.multi_label[config.task]
    classes = collection.classes(task)
    train, val = collection.part("train"), collection.part("val")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{config.data}: need training and validation images (have {len(train)} and {len(val)})")
    torch.manual_seed(config.seed)
    model, frozen = build_network(config, len(classes))
    model.to(device)
    optimizer, loss_fn = _optimizer(config, model), loss_function(multi, config.label_smoothing)
    scheduler = _scheduler(config, optimizer)
    train_set = ImageDataset(train.table["path"].tolist(), train.targets(task), config.image_size,
                             models.input_transform(model, config.image_size, train=True), train=True)
    val_set = ImageDataset(val.table["path"].tolist(), None, config.image_size,
                           models.input_transform(model, config.image_size))
    val_targets = val.targets(task)
    state = load_checkpoint(run, model, optimizer, scheduler)
    if state is None:
        state = {"epoch": 0, "history": [], "best": -math.inf, "best_epoch": 0, "stale": 0}
    else:  # the checkpoint is the one source of the history: a kill before history.csv was written loses nothing
        run.write_history(state["history"])
    epochs = tqdm(range(state["epoch"] + 1, config.epochs + 1), desc=run.name, unit="epoch",
                  initial=state["epoch"], total=config.epochs)
    for epoch in epochs:
        if config.patience is not None and state["stale"] >= config.patience:
            break
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        torch.manual_seed(config.seed * 100_003 + epoch)
        data = loader(train_set, config.batch_size, shuffle=True, num_workers=config.num_workers, generator=generator)
        train_loss = _train_epoch(model, frozen, data, optimizer, loss_fn, device, f"epoch {epoch}")
        scores, seen = predict(model, val_set, device, config.batch_size * 2, desc="validating")
        val_loss = float(loss_fn(torch.from_numpy(scores), torch.tensor(val_targets[seen])))
        val_metrics = evaluate(scores, val_targets[seen], classes, multi)
        score = headline(val_metrics)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_score": score,
               "lr": optimizer.param_groups[0]["lr"]}
        if scheduler is not None:
            scheduler.step()
        if score > state["best"]:
            state.update(best=score, best_epoch=epoch, stale=0)
            run.save_model(model.state_dict(), network_card(config, model, classes, multi, epoch))
        else:
            state["stale"] += 1
        state["history"].append(row)
        state["epoch"] = epoch
        save_checkpoint(run, model, optimizer, scheduler, state)
        run.write_history(state["history"])
        epochs.set_postfix(loss=f"{train_loss:.3f}", val=f"{score:.3f}")
    best, _ = run.load_model()
    model.load_state_dict(best)
    return model, state["history"], train_set.failures | val_set.failures
