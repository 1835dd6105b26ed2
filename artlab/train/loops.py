"""Fine-tuning and training from scratch: resumable epochs with atomic checkpoints and early stopping."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from artlab import models
from artlab.data.collection import ArtCollection
from artlab.data.loading import ImageDataset
from artlab.runs import Run, load_checkpoint, load_tensors, save_checkpoint, save_tensors
from artlab.train.config import TrainConfig
from artlab.train.features import loader
from artlab.train.metrics import evaluate, headline


def build_network(config: TrainConfig, num_classes: int) -> tuple[nn.Module, list[nn.Module]]:
    """The network for a run, with its first `freeze` blocks frozen; returns (model, frozen modules)."""
    model = models.build(config.arch, pretrained=config.strategy == "fine_tune", num_classes=num_classes)
    if config.init_from:
        load_backbone(model, Run(config.init_from), config.arch)
    frozen = models.freeze_blocks(model, config.arch, config.freeze)
    return model, frozen


def load_backbone(model: nn.Module, source: Run, arch_name: str) -> None:
    """Start from another run's network, all but its head (double fine-tuning: ImageNet -> art -> target)."""
    tensors, meta = load_tensors(source.file("model.safetensors"))
    if meta.get("kind") != "network" or meta.get("arch") != arch_name:
        raise ValueError(f"{source.path} holds a {meta.get('kind')} of {meta.get('arch')}, "
                         f"not a {arch_name} network to start from")
    head = models.arch(arch_name).head
    backbone = {k: v for k, v in tensors.items() if not k.startswith(head + ".")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or any(not k.startswith(head + ".") for k in missing):
        raise ValueError(f"{source.path}: weights do not fit {arch_name} (missing {missing}, unexpected {unexpected})")


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    head_name = models.arch(config.arch).head
    head = [p for n, p in model.named_parameters() if n.startswith(head_name + ".") and p.requires_grad]
    body = [p for n, p in model.named_parameters() if not n.startswith(head_name + ".") and p.requires_grad]
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


def _loss(multi: bool, label_smoothing: float) -> nn.Module:
    return nn.BCEWithLogitsLoss() if multi else nn.CrossEntropyLoss(label_smoothing=label_smoothing)


@torch.no_grad()
def predict(model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int,
            desc: str = "evaluating") -> np.ndarray:
    """Raw scores (logits) for every image of `dataset`, in order."""
    model.eval()
    scores = [model(x.to(device)).float().cpu() for x, _ in tqdm(loader(dataset, batch_size), desc=desc,
                                                                 unit="batch", leave=False)]
    return torch.cat(scores).numpy()


def _train_epoch(model: nn.Module, frozen: list[nn.Module], data: torch.utils.data.DataLoader,
                 optimizer: torch.optim.Optimizer, loss_fn: nn.Module, device: torch.device, desc: str) -> float:
    """One pass over the training data; returns the mean loss."""
    model.train()
    for module in frozen:  # frozen blocks keep their ImageNet BatchNorm statistics
        module.eval()
    total, count = 0.0, 0
    for x, y in tqdm(data, desc=desc, unit="batch", leave=False):
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()}; lower the learning rate (--lr)")
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / max(count, 1)


def model_metadata(config: TrainConfig, classes: list[str], multi: bool) -> dict[str, str]:
    """What is stored beside a network's weights: enough to rebuild it and read its outputs."""
    return {"kind": "network", "arch": config.arch, "task": config.task, "multi_label": str(multi),
            "classes": json.dumps(classes), "image_size": str(config.image_size)}


def fit(config: TrainConfig, run: Run, collection: ArtCollection, device: torch.device) -> tuple[nn.Module, list[dict]]:
    """Train for `config.epochs` (or until early stopping), resuming from the run's checkpoint if present.

    Each epoch reseeds torch from (seed, epoch), so a resumed run repeats exactly what an
    uninterrupted one would have done. The best-on-validation weights go to model.safetensors.
    """
    task, multi = config.task, collection.multi_label[config.task]
    classes = collection.classes(task)
    train, val = collection.part("train"), collection.part("val")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{config.data}: need training and validation images (have {len(train)} and {len(val)})")
    torch.manual_seed(config.seed)
    model, frozen = build_network(config, len(classes))
    model.to(device)
    optimizer, loss_fn = _optimizer(config, model), _loss(multi, config.label_smoothing)
    scheduler = _scheduler(config, optimizer)
    train_set = ImageDataset(train.table["path"].tolist(), train.targets(task), config.image_size, train=True)
    val_set = ImageDataset(val.table["path"].tolist(), val.targets(task), config.image_size)
    state = load_checkpoint(run, model, optimizer, scheduler) or {
        "epoch": 0, "history": [], "best": -math.inf, "best_epoch": 0, "stale": 0}
    meta = model_metadata(config, classes, multi)
    epochs = tqdm(range(state["epoch"] + 1, config.epochs + 1), desc=run.name, unit="epoch",
                  initial=state["epoch"], total=config.epochs)
    for epoch in epochs:
        if config.patience is not None and state["stale"] >= config.patience:
            break
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        torch.manual_seed(config.seed * 100_003 + epoch)
        data = loader(train_set, config.batch_size, shuffle=True, num_workers=config.num_workers, generator=generator)
        train_loss = _train_epoch(model, frozen, data, optimizer, loss_fn, device, f"epoch {epoch}")
        scores = predict(model, val_set, device, config.batch_size * 2, desc="validating")
        val_loss = float(loss_fn(torch.from_numpy(scores), torch.tensor(val_set.targets)))
        val_metrics = evaluate(scores, val_set.targets, classes, multi)
        score = headline(val_metrics)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_score": score,
               "lr": optimizer.param_groups[0]["lr"]}
        if scheduler is not None:
            scheduler.step()
        if score > state["best"]:
            state.update(best=score, best_epoch=epoch, stale=0)
            save_tensors(run.file("model.safetensors"), model.state_dict(), meta | {"epoch": str(epoch)})
        else:
            state["stale"] += 1
        state["history"].append(row)
        state["epoch"] = epoch
        save_checkpoint(run, model, optimizer, scheduler, state)
        run.write_history(state["history"])
        epochs.set_postfix(loss=f"{train_loss:.3f}", val=f"{score:.3f}")
    best, _ = load_tensors(run.file("model.safetensors"))
    model.load_state_dict(best)
    return model, state["history"]
