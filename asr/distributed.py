"""Data-parallel training across processes (torchrun): who am I, and the few collectives the
training loop needs. With one process every function is a cheap no-op, so the loop has one path.

Launch: ``torchrun --nproc_per_node=N -m asr train ...`` on one machine, or with ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint`` on several. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections.abc import Callable
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


def _on_device(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def _references(tensors: tuple[torch.Tensor, ...]) -> list[int]:
    return [sys.getrefcount(t) for t in tensors]


def _collective(start: Callable[[], Any], *tensors: torch.Tensor) -> None:
    """Run the collective ``start()`` launches (``async_op=True``) on ``tensors``, and return once
    gloo has let go of them, not merely once the result is in.

    A gloo worker thread drops its reference to a collective's tensors a moment after the
    collective completes, and that drop takes the GIL (the tensors' Python objects are released
    with it). A rank that leaves right after its last collective, as rank 1 does while rank 0
    still writes the checkpoints, can reach interpreter shutdown before a descheduled worker gets
    there: Python then ends the worker thread inside C++ code that cannot unwind, and
    std::terminate aborts the process (rank 1 killed by SIGABRT under load). Gloo holds a Python
    reference to each tensor while its C++ side does, and gives it back under the GIL as it
    lets go, so the references falling back to their count before the collective say the
    worker is done with Python."""
    before = _references(tensors)
    work = start()
    work.wait()
    del work  # the worker's reference may now be the last one to the work and its tensors
    if dist.get_backend() != "gloo":
        return
    deadline = time.monotonic() + 10.0  # microseconds in practice; a bound in case torch changes
    while any(now > then for now, then in zip(_references(tensors), before)):
        if time.monotonic() > deadline:
            log.debug("gloo still holds a collective's tensors after 10 s; going on")
            return
        time.sleep(0.0002)  # lets the worker take the GIL


def mean_over_ranks(value: float, info: Distributed) -> float:
    """The mean of a scalar over all ranks (the loss every rank logs the same way)."""
    if not info.enabled:
        return value
    tensor = _on_device(torch.tensor([value], dtype=torch.float64))
    _collective(lambda: dist.all_reduce(tensor, async_op=True), tensor)
    return float(tensor.item()) / info.world_size


def any_rank(flag: bool, info: Distributed) -> bool:
    """True on every rank if it is true on any (e.g. one of them got Ctrl-C)."""
    if not info.enabled:
        return flag
    tensor = _on_device(torch.tensor([int(flag)]))
    _collective(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.MAX, async_op=True), tensor)
    return bool(tensor.item())


def _bytes(value: Any, size: int | None = None) -> torch.Tensor:
    """``value`` pickled into a uint8 tensor (zero-padded to ``size``)."""
    payload = pickle.dumps(value)
    tensor = torch.zeros(size or len(payload), dtype=torch.uint8)
    tensor[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    return _on_device(tensor)


def _object(tensor: torch.Tensor, size: int) -> Any:
    return pickle.loads(tensor[:size].cpu().numpy().tobytes())


def from_main(value: Any, info: Distributed) -> Any:
    """Rank 0's ``value`` on every rank (dev scores: rank 0 evaluates, all decide alike)."""
    if not info.enabled:
        return value
    # torch's broadcast_object_list, over tensors whose release _collective waits for
    data = _bytes(value) if info.is_main else None
    size = _on_device(torch.tensor([data.numel() if data is not None else 0], dtype=torch.int64))
    _collective(lambda: dist.broadcast(size, src=0, async_op=True), size)
    if data is None:
        data = _on_device(torch.zeros(int(size.item()), dtype=torch.uint8))
    _collective(lambda: dist.broadcast(data, src=0, async_op=True), data)
    return value if info.is_main else _object(data, int(size.item()))


def check_same_on_all_ranks(value: Any, what: str, info: Distributed) -> None:
    """Raise the same TrainingError on every rank when the ranks' ``value`` differ (e.g. a
    manifest whose audio one node cannot see): ranks that disagree would otherwise fall out of
    step in their collectives and hang until the timeout."""
    if not info.enabled:
        return
    # torch's all_gather_object, over tensors whose release _collective waits for
    size = _on_device(torch.tensor([len(pickle.dumps(value))], dtype=torch.int64))
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    _collective(lambda: dist.all_gather(sizes, size, async_op=True), size, *sizes)
    lengths = [int(s.item()) for s in sizes]
    data = _bytes(value, max(lengths))
    gathered = [torch.zeros_like(data) for _ in range(info.world_size)]
    _collective(lambda: dist.all_gather(gathered, data, async_op=True), data, *gathered)
    values = [_object(tensor, length) for tensor, length in zip(gathered, lengths)]
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
