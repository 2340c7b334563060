"""Data-parallel training across processes (torchrun): who am I, and the few collectives the
training loop needs. With one process every function is a cheap no-op, so the loop has one path.

Launch: ``torchrun --nproc_per_node=N -m asr train ...`` on one machine, or with ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint`` on several. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, TensorBoard scalars and the final model."""
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=60))
    return Distributed(rank, world, local)


def mean_over_ranks(value: float, info: Distributed) -> float:
    """The mean of a scalar over all ranks (the loss every rank logs the same way)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def any_rank(flag: bool, info: Distributed) -> bool:
    """True on every rank if it is true on any (e.g. one of them got Ctrl-C)."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([int(flag)])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def from_main(value: Any, info: Distributed) -> Any:
    """Rank 0's ``value`` on every rank (dev scores: rank 0 evaluates, all decide alike)."""
    if not info.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def cleanup(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
