"""One optimizer step of CTC training: the step ``asr train`` runs, as a plain function, so that
tools/bench_train.py times exactly this step rather than a copy of it."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from asr.data import Batch
from asr.distributed import Distributed, mean_over_ranks
from asr.model import AcousticModel, ctc_loss


@dataclass(frozen=True)
class StepOutcome:
    loss: float  # mean over micro-batches and ranks
    grad_norm: float  # before clipping
    # loss and gradient finite; if not, the optimizer was left alone (with loss scaling: the scaler decides)
    finite: bool


def train_step(
    model: AcousticModel,
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    micro: Sequence[Batch],
    amp_dtype: torch.dtype = torch.float32,
    clip_grad_norm: float = 5.0,
    dist: Distributed = Distributed(),
) -> StepOutcome:
    """Forward, CTC loss and backward over the ``micro``-batches (gradients accumulate; with
    several ranks they are exchanged once, on the last micro-batch), then gradient clipping and
    the optimizer step, skipped when the loss or gradient is not finite.

    ``model`` holds the parameters; ``train_model`` is what the batches go through (``model``
    itself, or its DistributedDataParallel wrapper). The loss and gradient norm are read back to
    the host together, once per step.
    """
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)  # summed on the device, not read per micro-batch
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with nullcontext() if last or not dist.enabled else train_model.no_sync():
            if batch.indices:
                features = batch.features.to(device, non_blocking=True)
                autocast = nullcontext() if amp_dtype == torch.float32 else torch.autocast(device.type, dtype=amp_dtype)
                with autocast:
                    log_probs, _ = train_model(features, batch.lengths)
                # lengths from the CPU: CTC reads them on the host, and GPU copies would make it wait
                targets = batch.targets.to(device, non_blocking=True)
                loss = ctc_loss(log_probs, model.output_lengths(batch.lengths), targets, batch.target_lengths) / len(micro)
            else:  # every utterance unusable
                loss = _zero_loss(model, train_model, device)
            scaler.scale(loss).backward()
        total += loss.detach().float()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    loss_value, norm_value = torch.stack([total, grad_norm.float().to(device)]).tolist()
    loss_value = mean_over_ranks(loss_value, dist)
    finite = math.isfinite(loss_value) and math.isfinite(norm_value)
    if finite or scaler.is_enabled():
        scaler.step(optimizer)  # the scaler itself skips non-finite fp16 steps
        scaler.update()
    return StepOutcome(loss_value, norm_value, finite)


def _zero_loss(model: AcousticModel, train_model: nn.Module, device: torch.device) -> torch.Tensor:
    """A zero loss that still goes through ``train_model``: with several ranks its backward pass
    must run DDP's gradient exchange like the other ranks' do (a loss made from the parameters
    alone would skip it, and the ranks' collectives would fall out of step). Two output frames
    of silence, in training mode (cuDNN has no backward pass for an evaluating RNN) but with
    batch norm evaluating, so its running statistics stay untouched."""
    frames = 1
    while int(model.output_lengths(torch.tensor([frames]))) < 2:
        frames += 1
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.eval()
    try:
        log_probs, _ = train_model(torch.zeros(1, frames, model.input_dim, device=device), torch.tensor([frames]))
    finally:
        for norm in norms:
            norm.train()
    return log_probs.sum() * 0.0
