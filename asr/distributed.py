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
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from asr.checkpoint import load_checkpoint, load_latest_training_checkpoint
from asr.errors import TrainingError

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


def check_same_on_all_ranks(value: Any, what: str, info: Distributed) -> None:
    """Raise the same TrainingError on every rank when the ranks' ``value`` differ (e.g. a
    manifest whose audio one node cannot see): ranks that disagree would otherwise fall out of
    step in their collectives and hang until the timeout."""
    if not info.enabled:
        return
    values: list[Any] = [None] * info.world_size
    dist.all_gather_object(values, value)
    other = next((rank for rank, v in enumerate(values) if v != values[0]), None)
    if other is not None:
        raise TrainingError(f"the processes disagree on {what} (rank 0: {values[0]}, rank {other}: {values[other]}): "
                            "do all nodes see the same files?")


def latest_checkpoint_on_all_ranks(directory: Path, info: Distributed) -> tuple[Path, dict] | None:
    """The checkpoint to resume from, chosen by rank 0 (the newest that loads) and loaded by every
    rank, so all resume from the same step even if a node's view of ``directory`` lags."""
    found = load_latest_training_checkpoint(directory) if info.is_main else None
    path = from_main(str(found[0]) if found else None, info)
    if found or path is None:
        return found
    return Path(path), load_checkpoint(path)


def cleanup(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
