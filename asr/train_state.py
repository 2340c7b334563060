"""What a training run has done so far: the counters a checkpoint saves to resume exactly."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    loss: float
    frames_per_second: float
    data_wait: float  # share of the epoch's training time spent waiting for batches
    dev_wer: float
    dev_cer: float


@dataclass
class TrainState:
    """Progress of one run. The running sums of the current epoch are part of it, so a resumed
    epoch reports the same averages as an uninterrupted one."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # micro-batches of the current epoch trained on
    best: tuple[float, float] = (math.inf, math.inf)  # dev (WER, CER) of the kept model
    bad_epochs: int = 0  # epochs in a row without a better dev WER
    skipped_steps: int = 0  # non-finite steps skipped in all
    nonfinite_in_row: int = 0
    epoch_loss: float = 0.0  # summed over the epoch's finite steps
    epoch_steps: int = 0  # finite steps of the epoch
    epoch_frames: int = 0
    epoch_seconds: float = 0.0
    epoch_data_wait: float = 0.0  # seconds the loop waited for the loader (input pipeline too slow if large)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"best": list(self.best)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        return cls(**data | {"best": tuple(data["best"])})

    def finish_epoch(self, dev_wer: float, dev_cer: float, world_size: int) -> tuple[EpochResult, bool]:
        """Close the epoch with its dev scores: its result, and whether its model is the one to
        keep (on a tie, the model trained longer is kept)."""
        seconds = max(self.epoch_seconds, 1e-9)
        result = EpochResult(self.epoch_loss / max(1, self.epoch_steps), self.epoch_frames / seconds * world_size,
                             self.epoch_data_wait / seconds, dev_wer, dev_cer)
        score = (dev_wer, dev_cer)
        self.bad_epochs = 0 if score < self.best else self.bad_epochs + 1
        keep = score <= self.best
        if keep:
            self.best = score
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.epoch_loss, self.epoch_steps, self.epoch_frames, self.epoch_seconds, self.epoch_data_wait = 0.0, 0, 0, 0.0, 0.0
        return result, keep

    def move_to_world(self, saved_world: int, saved_accumulate: int, world: int, accumulate: int) -> None:
        """Resuming with another number of processes or accumulation steps: the same place in the
        epoch's shared batch order, counted in this run's micro-batches."""
        if (saved_world, saved_accumulate) == (world, accumulate):
            return
        steps_done = self.batch_in_epoch // saved_accumulate  # optimizer steps into the epoch
        self.batch_in_epoch = steps_done * saved_world * saved_accumulate // (world * accumulate) * accumulate
        log.warning("resuming %d process(es) x %d accumulation from a run of %d x %d: same position in the "
                    "epoch, no longer bit-identical to an uninterrupted run", world, accumulate, saved_world,
                    saved_accumulate)
        if saved_world * saved_accumulate != world * accumulate:
            keep = saved_world * saved_accumulate / world
            log.warning("the global batch changes from %d to %d batches per step, and with it the steps per epoch "
                        "and the learning-rate schedule%s", saved_world * saved_accumulate, world * accumulate,
                        f" (trainer.grad_accum_steps={keep:.0f} keeps it)" if keep == int(keep) else "")


def rng_state(device: torch.device) -> dict:
    """The random state to checkpoint: the CPU generator's and this process's GPU generator's."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng_state(saved: dict, device: torch.device, rank: int, seed: int, step: int) -> None:
    """Continue rank 0's random streams from the checkpoint; the other ranks derive theirs from
    the seed, their rank and the step (each rank has its own dropout masks)."""
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    if rank:
        torch.manual_seed(seed + 7919 * rank + step)  # CPU and every GPU generator
