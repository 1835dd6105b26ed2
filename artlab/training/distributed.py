"""Training on several processes with PyTorch's DistributedDataParallel, when started by `torchrun`.

    torchrun --nproc-per-node 2 -m artlab train --data ... --strategy fine_tune

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; artlab then joins the process group (gloo on CPU,
nccl on CUDA, one GPU per local rank), gives each process its share of the training images
(DistributedSampler, reshuffled per epoch), averages the gradients (DDP) and the training loss, and
lets only rank 0 write the run folder, checkpoints and metrics. Without torchrun nothing changes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (rank 0 of 1 when not started by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0


def group(device: torch.device) -> Group:
    """Join torchrun's process group if this process was started by it (idempotent); else a group of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Group(rank, world, local_rank)


def process_device(device: torch.device, where: Group) -> torch.device:
    """One GPU per local rank under torchrun; the device as given otherwise."""
    if where.active and device.type == "cuda":
        return torch.device("cuda", where.local_rank)
    return device


def wrap(model: nn.Module, where: Group, device: torch.device) -> nn.Module:
    """The model under DistributedDataParallel when several processes train it (gradients averaged)."""
    if not where.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (its state_dict has the plain keys a saved run uses)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard_loader(dataset: Dataset, batch_size: int, where: Group, seed: int, epoch: int, num_workers: int,
                 collate: Any) -> DataLoader:
    """This process's share of the training images for one epoch; the global batch stays `batch_size`."""
    sampler = DistributedSampler(dataset, num_replicas=where.world, rank=where.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=math.ceil(batch_size / where.world), sampler=sampler,
                      num_workers=num_workers, collate_fn=collate)


def mean_over_processes(total: float, count: int, where: Group) -> float:
    """A mean over every process's items (e.g. the epoch's training loss)."""
    if not where.active:
        return total / max(count, 1)
    sums = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(sums)
    return float(sums[0] / max(sums[1].item(), 1.0))


def share(value: Any, where: Group) -> Any:
    """Rank 0's `value`, on every process (e.g. whether to stop early)."""
    if not where.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_all(where: Group) -> None:
    """Hold every process here until all arrive (e.g. until rank 0 has written the run folder)."""
    if where.active:
        dist.barrier()
