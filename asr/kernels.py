"""How the model's recurrent layers run: the speed kernels behind :class:`asr.model.AcousticModel`.

On CPUs each recurrent layer runs as two one-directional passes over the padded batch: forward
as it is, backward over every utterance reversed within its own length (padding stays at the
end), so neither direction ever reads padding before real frames and padded and unpadded inputs
give the same outputs. That keeps the fused oneDNN kernel: on 2 CPU cores a packed sequence runs
the LSTM about 4x slower. On GPUs cuDNN runs packed sequences natively, with both directions in
one call and no work on padding, so there each layer takes a packed sequence. Both give the same
outputs. The blocks between layers (projection, normalization) see real frames only
(:func:`between_layers`, shared with :mod:`asr.chunked`).
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from asr.model import AcousticModel


class Kernel(str, Enum):
    auto = "auto"  # packed on GPUs, padded on CPUs
    padded = "padded"  # each direction over the padded batch (oneDNN's fused kernel)
    packed = "packed"  # packed sequences (cuDNN: no work on padding)


# A padded CPU batch is padded further, to a multiple of this many steps: oneDNN builds and keeps
# a kernel (1-3 MB each, measured) for every new (batch, steps) shape, so with every length its
# own shape a training run's memory grows without bound.
SHAPE_STEPS = 8


def recurrent_stack(model: AcousticModel, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All recurrent layers and the blocks between them over subsampled frames.

    Args:
        x: (B, T, D) padded batch.
        lengths: (B,) valid frames per utterance, on the CPU.

    Returns:
        (B, T2, H * directions) top-layer outputs (zeros on padding) and the (B, T2) mask of real
        frames, T2 >= T (a padded CPU batch is rounded up to :data:`SHAPE_STEPS`).
    """
    packed = model.kernel is Kernel.packed or (model.kernel is Kernel.auto and x.is_cuda)
    given = x.shape[1]
    if not x.is_cuda and not packed and not bool((lengths >= given).all()):
        x = F.pad(x, (0, 0, 0, -given % SHAPE_STEPS))
    batch, frames, _ = x.shape
    steps = torch.arange(frames)
    lengths = lengths.clamp(max=frames)
    valid = steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T2)
    unpadded = frames > 0 and bool((lengths == frames).all())  # e.g. one file at a time
    if packed and not unpadded:
        return _packed_stack(model, x, lengths), valid.to(x.device, non_blocking=True)
    if not unpadded:
        # reversal within each utterance's length as rows of the flattened (B * T2, D) batch;
        # padded positions map to themselves
        reverse = torch.where(valid, lengths.unsqueeze(1) - 1 - steps.unsqueeze(0), steps.unsqueeze(0))
        reverse_rows = (reverse + frames * torch.arange(batch).unsqueeze(1)).reshape(-1).to(x.device)
    valid = valid.to(x.device, non_blocking=True)  # a pageable source: no wait for the GPU
    for layer, rnn in enumerate(model.rnns):
        x = rnn(x)[0] if unpadded else _bidirectional_layer(rnn, x, reverse_rows)
        if layer < len(model.between):
            x = between_layers(model.between[layer], model.dropout, x, None if unpadded else valid)
    return x, valid


def between_layers(block: nn.Module, dropout: nn.Module, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Projection / normalization, then dropout, after a recurrent layer, on real frames only
    (batch statistics must not count padding); padded frames become zeros.

    Args:
        x: (B, T, D) layer outputs, or (N, D) frames that are all real.
        valid: (B, T) mask of real frames; None when every frame is real.
    """
    if len(block) == 0:
        return dropout(x)
    if valid is None:
        return dropout(block(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1))
    frames = block(x[valid])  # (N, D')
    out = frames.new_zeros(*x.shape[:2], frames.shape[-1])  # the block's dtype: it may differ under autocast
    out[valid] = frames
    return dropout(out)


def _packed_stack(model: AcousticModel, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """All recurrent layers on one packed sequence: (B, T, D) and (B,) CPU lengths -> (B, T, H *
    directions). The blocks between layers act on the packed (N, D) frames, exactly the real ones,
    so the batch is packed and padded once rather than at every layer (each costs a GPU wait)."""
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, model.classifier.in_features)
    seq = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    for layer, rnn in enumerate(model.rnns):
        seq, _ = rnn(seq)
        if layer < len(model.between):
            data = between_layers(model.between[layer], model.dropout, seq.data, None)
            seq = nn.utils.rnn.PackedSequence(data, seq.batch_sizes, seq.sorted_indices, seq.unsorted_indices)
    return nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, total_length=x.shape[1])[0]


def _bidirectional_layer(rnn: nn.RNNBase, x: torch.Tensor, reverse_rows: torch.Tensor) -> torch.Tensor:
    """One recurrent layer over a padded (B, T, D) batch -> (B, T, H * directions): the backward
    direction runs on each utterance reversed within its length (``reverse_rows``: (B * T,) row
    indices of the flattened batch), so its outputs on real frames equal those of a packed sequence."""
    forward, _ = run_direction(rnn, x, None, reverse=False)
    if not rnn.bidirectional:
        return forward
    backward, _ = run_direction(rnn, _PermuteRows.apply(x, reverse_rows), None, reverse=True)
    return torch.cat([forward, _PermuteRows.apply(backward, reverse_rows)], dim=-1)


def run_direction(rnn: nn.RNNBase, x: torch.Tensor, state, reverse: bool) -> tuple[torch.Tensor, object]:
    """One direction (the module's forward or ``reverse`` weights) of a one-layer ``rnn`` over
    (B, T, D) from ``state`` (None: zeros), through the module's own kernels; returns (B, T, H)
    outputs and the final state."""
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, rnn.hidden_size), state
    suffix = "_reverse" if reverse else ""
    weights = [getattr(rnn, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    zeros = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    train = rnn.training and torch.is_grad_enabled()  # cuDNN keeps what backward needs only then
    if isinstance(rnn, nn.LSTM):
        state = state if state is not None else (zeros, zeros)
        out, h, c = torch.lstm(x, state, weights, True, 1, 0.0, train, False, True)
        return out, (h, c)
    run = torch.gru if isinstance(rnn, nn.GRU) else torch.rnn_tanh
    out, h = run(x, state if state is not None else zeros, weights, True, 1, 0.0, train, False, True)
    return out, h


class _PermuteRows(torch.autograd.Function):
    """(B, T, D) -> the rows of its (B * T, D) flattening taken in ``rows`` order, for a
    permutation that is its own inverse (a reversal): the gradient is the same row selection.
    A row copy costs a fraction of ``torch.gather`` with an expanded index and of its
    scatter-add backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return x.reshape(-1, x.shape[-1]).index_select(0, rows).view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        return grad.reshape(-1, grad.shape[-1]).index_select(0, rows).view(grad.shape), None


def scores(classifier: nn.Linear, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, D) top-layer outputs -> (B, T, V) float32 log-probabilities, zeros on padding."""
    return classifier(x).float().log_softmax(-1).masked_fill(~valid.unsqueeze(-1), 0.0)


@functools.cache
def compiled_scores():
    """:func:`scores` compiled once per process (a function of its arguments only, so models and
    their copies can share it)."""
    return torch.compile(scores, dynamic=True)


def compile_non_recurrent(model: AcousticModel) -> None:
    """``torch.compile`` the parts around the recurrent layers, in place: subsampling, the blocks
    between layers, and the classifier with its log-softmax (each recurrent layer is already one
    fused oneDNN/cuDNN kernel). Shapes vary from batch to batch, so the graphs are dynamic.
    Parameters, state dicts and checkpoints are unchanged; a copy of the model
    (``copy.deepcopy``) keeps compiling its scores but runs its other parts uncompiled."""
    model.subsample.compile(dynamic=True)
    for block in model.between:
        if len(block):
            block.compile(dynamic=True)
    model.scores = compiled_scores()


class FastDropout(nn.Module):
    """Dropout whose CPU mask costs about a third of ``nn.Dropout``'s: PyTorch's CPU generator
    is serial and draws one number per element, so this draws one 32-bit integer per two elements
    and compares 15-bit halves against ``p`` (quantized to 1/32768, so p < 1/65536 drops nothing;
    the scale matches the quantized rate, keeping the mean). Same seeded generator, so
    runs stay reproducible; on other devices it is ``nn.functional.dropout``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = min(round(p * 32768), 32767)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        count = x.numel()
        bits = torch.empty((count + 1) // 2, dtype=torch.int32).random_()  # 31 random bits each
        halves = bits.view(torch.int16)[:count].bitwise_and(0x7FFF)  # uniform on [0, 32768)
        keep = (halves >= self.threshold).view(x.shape)
        return x * keep * (32768 / (32768 - self.threshold))

    def extra_repr(self) -> str:
        return f"p={self.p}"
