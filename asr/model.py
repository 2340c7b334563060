"""The recurrent acoustic model: subsampling -> N recurrent layers -> token log-probabilities.

On CPUs each recurrent layer runs as two one-directional passes over the padded batch: forward
as it is, backward over every utterance reversed within its own length (padding stays at the
end), so neither direction ever reads padding before real frames and padded and unpadded inputs
give the same outputs. That keeps the fused oneDNN kernel: on 2 CPU cores a packed sequence runs
the LSTM about 4x slower. On GPUs cuDNN runs packed sequences natively, with both directions in
one call and no work on padding, so there each layer takes a packed sequence. Both give the same
outputs. Batch norm between layers sees real frames only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from asr.tokenizer import BLANK_ID


class CellType(str, Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"  # vanilla tanh RNN


class NormKind(str, Enum):
    none = "none"
    batch = "batch"  # sequence-wise batch norm over all valid frames (DeepSpeech2)
    layer = "layer"


class Subsampling(str, Enum):
    stack = "stack"  # concatenate `factor` consecutive frames
    conv = "conv"  # one strided 2-D convolution over (time, frequency)


@dataclass
class ModelConfig:
    """Architecture; stored in every checkpoint so loading needs nothing else."""

    cell: CellType = CellType.lstm
    num_layers: int = 3
    hidden_size: int = 256
    bidirectional: bool = True
    projection_size: int = 0  # 0: no projection between layers
    dropout: float = 0.1  # between recurrent layers
    norm: NormKind = NormKind.none
    subsampling: Subsampling = Subsampling.stack
    subsampling_factor: int = 3
    conv_channels: int = 32
    # chunk-aware training for streaming (bidirectional models): in training, each layer's backward
    # direction sees only its chunk plus this many right-context frames, as `asr stream` runs it
    # (output frames; 0: whole utterances)
    train_chunk_frames: int = 0
    train_right_context_frames: int = 0


_RNN = {CellType.lstm: nn.LSTM, CellType.gru: nn.GRU, CellType.rnn: nn.RNN}


def conv_output_length(lengths: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Output lengths of a convolution along one axis (the standard conv arithmetic)."""
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


class Subsampler(nn.Module):
    """(B, T, F) -> (B, ceil(T / factor), out_dim), with exactly computable output lengths."""

    def __init__(self, kind: Subsampling, factor: int, input_dim: int, channels: int):
        super().__init__()
        self.kind, self.factor = Subsampling(kind), factor
        if self.kind is Subsampling.stack:
            self.out_dim = input_dim * factor
        else:
            # time kernel 2f-1 with padding f-1 and stride f gives ceil(T / f) frames; zero padding
            # equals the batch's zero padding, so batched and single results agree.
            self.time_kernel, self.time_pad = 2 * factor - 1, factor - 1
            self.conv = nn.Conv2d(1, channels, (self.time_kernel, 3), (factor, 2), (self.time_pad, 1))
            self.out_dim = channels * ((input_dim - 1) // 2 + 1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.kind is Subsampling.stack:
            return torch.div(lengths + self.factor - 1, self.factor, rounding_mode="floor")
        return conv_output_length(lengths, self.time_kernel, self.factor, self.time_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        if self.kind is Subsampling.stack:
            pad = (-frames) % self.factor
            x = F.pad(x, (0, 0, 0, pad))
            return x.reshape(batch, (frames + pad) // self.factor, dim * self.factor)
        y = F.gelu(self.conv(x.unsqueeze(1)))  # (B, C, T', F')
        return y.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')


class AcousticModel(nn.Module):
    """Features (B, T, F) -> log-probabilities (B, T', V) over blank (id 0) and the tokens."""

    def __init__(self, cfg: ModelConfig, input_dim: int, vocab_size: int):
        super().__init__()
        self.cfg, self.input_dim, self.vocab_size = cfg, input_dim, vocab_size
        self.subsample = Subsampler(cfg.subsampling, cfg.subsampling_factor, input_dim, cfg.conv_channels)
        rnn_cls = _RNN[CellType(cfg.cell)]
        directions = 2 if cfg.bidirectional else 1
        self.rnns = nn.ModuleList()
        self.between = nn.ModuleList()  # projection + norm after each layer but the last
        dim = self.subsample.out_dim
        for layer in range(cfg.num_layers):
            self.rnns.append(rnn_cls(dim, cfg.hidden_size, batch_first=True, bidirectional=cfg.bidirectional))
            dim = cfg.hidden_size * directions
            if layer < cfg.num_layers - 1:
                block, dim = self._between_block(dim)
                self.between.append(block)
        self.dropout = FastDropout(cfg.dropout)
        self.classifier = nn.Linear(dim, vocab_size)
        self.packed: bool | None = None  # recurrent layers on packed sequences; None: on CUDA only
        self.compiled = False  # classifier + log-softmax through torch.compile (compile_non_recurrent)

    def _between_block(self, dim: int) -> tuple[nn.Module, int]:
        layers: list[nn.Module] = []
        if self.cfg.projection_size:
            layers.append(nn.Linear(dim, self.cfg.projection_size))
            dim = self.cfg.projection_size
        norm = NormKind(self.cfg.norm)
        if norm is NormKind.batch:
            layers.append(nn.BatchNorm1d(dim))
        elif norm is NormKind.layer:
            layers.append(nn.LayerNorm(dim))
        return nn.Sequential(*layers), dim

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after subsampling for ``lengths`` input frames (exact)."""
        return self.subsample.output_lengths(lengths)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V), out_lengths (B,)."""
        x = self.subsample(features)
        out_lengths = self.output_lengths(lengths.cpu())
        if self.training and self.cfg.train_chunk_frames > 0 and self.cfg.bidirectional:
            return self._chunked_forward(x, out_lengths), out_lengths.to(x.device)
        given = x.shape[1]
        if not x.is_cuda and self.packed is not True and not bool((out_lengths >= given).all()):
            x = F.pad(x, (0, 0, 0, -given % SHAPE_STEPS))  # see SHAPE_STEPS
        batch, frames, _ = x.shape
        steps = torch.arange(frames)
        lengths = out_lengths.clamp(max=frames)
        valid = steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T')
        packed = x.is_cuda if self.packed is None else self.packed
        unpadded = frames > 0 and bool((lengths == frames).all())  # e.g. one file at a time
        if not (packed or unpadded):
            # reversal within each utterance's length as rows of the flattened (B * T', D) batch;
            # padded positions map to themselves
            reverse = torch.where(valid, lengths.unsqueeze(1) - 1 - steps.unsqueeze(0), steps.unsqueeze(0))
            reverse_rows = (reverse + frames * torch.arange(batch).unsqueeze(1)).reshape(-1).to(x.device)
        valid = valid.to(x.device, non_blocking=True)  # a pageable source: no wait for the GPU
        if packed and not unpadded:
            x = self._packed_stack(x, lengths)
        else:
            for layer, rnn in enumerate(self.rnns):
                x = rnn(x)[0] if unpadded else _bidirectional_layer(rnn, x, reverse_rows)
                if layer < len(self.between):
                    x = self._between_valid(layer, x, None if unpadded else valid)
        scores = _compiled_scores() if self.compiled else _scores
        log_probs = scores(self.classifier, self.dropout(x), valid)[:, :given]
        return log_probs, out_lengths.to(log_probs.device, non_blocking=True)

    def compile_non_recurrent(self) -> None:
        """``torch.compile`` the parts around the recurrent layers, in place: subsampling, the
        blocks between layers, and the classifier with its log-softmax (each recurrent layer is
        already one fused oneDNN/cuDNN kernel). Shapes vary from batch to batch, so the graphs are
        dynamic. Parameters, state dicts and checkpoints are unchanged; a copy of the model
        (``copy.deepcopy``) keeps compiling its scores but runs its other parts uncompiled."""
        self.subsample.compile(dynamic=True)
        for block in self.between:
            if len(block):
                block.compile(dynamic=True)
        self.compiled = True

    def _between_valid(self, layer: int, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Projection / normalization and dropout after ``layer``, on real frames only (batch
        statistics must not count padding); padded frames become zeros. ``valid`` None: no padding."""
        block = self.between[layer]
        if len(block) == 0:
            return self.dropout(x)
        if valid is None:
            return self.dropout(block(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1))
        frames = block(x[valid])  # (N, D')
        out = frames.new_zeros(*x.shape[:2], frames.shape[-1])  # the block's dtype: it may differ under autocast
        out[valid] = frames
        return self.dropout(out)

    def _packed_stack(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """All recurrent layers on one packed sequence (on GPUs: cuDNN, no work on padding):
        (B, T, D) padded batch and (B,) CPU lengths -> (B, T, H * directions). The blocks between
        layers and dropout act on the packed (N, D) frames, exactly the real ones, so the batch is
        packed and padded once rather than at every layer (each costs a wait for the GPU)."""
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.classifier.in_features)
        seq = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
        for layer, rnn in enumerate(self.rnns):
            seq, _ = rnn(seq)
            if layer < len(self.between):
                data = self.dropout(self.between[layer](seq.data))
                seq = nn.utils.rnn.PackedSequence(data, seq.batch_sizes, seq.sorted_indices, seq.unsorted_indices)
        return nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, total_length=x.shape[1])[0]

    def _chunked_forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Chunk-aware training: (B, T', D) subsampled frames -> (B, T', V) log-probs exactly as
        :meth:`forward_chunk` gives them chunk after chunk (the committed frames), for a whole
        batch. Each window k is chunk k plus the right context; all layers run on the windows, so
        a right-context frame's input at layer l + 1 is what layer l computed inside that window."""
        chunk, right = self.cfg.train_chunk_frames, self.cfg.train_right_context_frames
        batch, frames, _ = x.shape
        windows = math.ceil(frames / chunk)
        starts = torch.arange(windows) * chunk
        valid = (lengths.cpu().unsqueeze(1) - starts.unsqueeze(0)).clamp(0, chunk + right).reshape(-1)  # (B * K,)
        steps = torch.arange(chunk + right).unsqueeze(0)  # reverses each window's valid part in place
        flip = torch.where(steps < valid.unsqueeze(1), valid.unsqueeze(1) - 1 - steps, steps).to(x.device)
        tiles = _tiles(x, chunk, right, windows)  # (B * K, C + R, D)
        for layer, rnn in enumerate(self.rnns):
            committed = tiles[:, :chunk].reshape(batch, windows * chunk, -1)  # (B, K * C, D)
            forward_chunks, states = [], []
            state = None
            for k in range(windows):  # the carried state at every chunk end
                out, state = _run_direction(rnn, committed[:, k * chunk : (k + 1) * chunk], state, "")
                forward_chunks.append(out)
                states.append(state)
            forward = torch.stack(forward_chunks, dim=1).reshape(batch * windows, chunk, -1)
            if right:
                carried = _stack_states(states, batch, windows)
                forward_right, _ = _run_direction(rnn, tiles[:, chunk:], carried, "")
                forward = torch.cat([forward, forward_right], dim=1)
            reversed_tiles = tiles.gather(1, flip.unsqueeze(-1).expand(-1, -1, tiles.shape[-1]))
            backward, _ = _run_direction(rnn, reversed_tiles, None, "_reverse")
            backward = backward.gather(1, flip.unsqueeze(-1).expand(-1, -1, backward.shape[-1]))
            tiles = torch.cat([forward, backward], dim=-1)
            if layer < len(self.between):
                flat = self.dropout(self.between[layer](tiles.reshape(-1, tiles.shape[-1])))
                tiles = flat.reshape(batch * windows, chunk + right, -1)
        committed = tiles[:, :chunk].reshape(batch, windows * chunk, -1)[:, :frames]
        return self.classifier(self.dropout(committed)).float().log_softmax(-1)

    def forward_chunk(
        self, frames: torch.Tensor, chunk: int, state: list | None = None
    ) -> tuple[torch.Tensor, list]:
        """Latency-controlled forward of one chunk (the LC-BLSTM scheme of Zhang et al. 2016).

        Args:
            frames: (1, C + R, D) subsampled frames: ``chunk`` (C) frames, then R frames of
                right context.
            chunk: C.
            state: each layer's forward-direction state after the previous chunk (None: start).

        Returns:
            log_probs (1, C + R, V) — the last R are provisional: the next chunk recomputes them —
            and the forward states after frame C, for the next chunk. In every layer the forward
            direction continues from the carried state; the backward direction starts afresh at
            the end of the right context. With C + R covering the input this is :meth:`forward`.
        """
        h, carried = frames, []
        for layer, rnn in enumerate(self.rnns):
            h, layer_state = _layer_chunk(rnn, h, chunk, state[layer] if state is not None else None)
            carried.append(layer_state)
            if layer < len(self.between):
                h = self.between[layer](h.squeeze(0)).unsqueeze(0)  # (frames, D) like the packed path
        return self.classifier(h).float().log_softmax(-1), carried

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# A padded CPU batch is padded further, to a multiple of this many steps: oneDNN builds and keeps
# a kernel (1-3 MB each, measured) for every new (batch, steps) shape, so with every length its
# own shape a training run's memory grows without bound.
SHAPE_STEPS = 8


def _scores(classifier: nn.Linear, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T', D) top-layer outputs -> (B, T', V) float32 log-probabilities, zeros on padding."""
    return classifier(x).float().log_softmax(-1).masked_fill(~valid.unsqueeze(-1), 0.0)


@functools.cache
def _compiled_scores():
    """:func:`_scores` compiled once per process (a function of its arguments only, so models,
    their copies and pickles can share it)."""
    return torch.compile(_scores, dynamic=True)


def _bidirectional_layer(rnn: nn.RNNBase, x: torch.Tensor, reverse_rows: torch.Tensor) -> torch.Tensor:
    """One recurrent layer over a padded (B, T, D) batch -> (B, T, H * directions): the backward
    direction runs on each utterance reversed within its length (``reverse_rows``: (B * T,) row
    indices of the flattened batch), so its outputs on real frames equal those of a packed sequence."""
    forward, _ = _run_direction(rnn, x, None, "")
    if not rnn.bidirectional:
        return forward
    backward, _ = _run_direction(rnn, _PermuteRows.apply(x, reverse_rows), None, "_reverse")
    return torch.cat([forward, _PermuteRows.apply(backward, reverse_rows)], dim=-1)


class _PermuteRows(torch.autograd.Function):
    """(B, T, D) -> the rows of its (B * T, D) flattening taken in ``rows`` order, for a
    permutation that is its own inverse (a reversal): the gradient is the same row selection.
    A row copy costs a fraction of ``torch.gather`` with an expanded index and of its
    scatter-add backward (3.5 % of a CPU training step before)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return x.reshape(-1, x.shape[-1]).index_select(0, rows).view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        return grad.reshape(-1, grad.shape[-1]).index_select(0, rows).view(grad.shape), None


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


def _tiles(x: torch.Tensor, chunk: int, right: int, windows: int) -> torch.Tensor:
    """(B, T, D) -> (B * K, C + R, D): window k holds frames [k·C, k·C + C + R), zero-padded."""
    batch, frames, dim = x.shape
    padded = F.pad(x, (0, 0, 0, windows * chunk + right - frames))
    tiles = padded.unfold(1, chunk + right, chunk).permute(0, 1, 3, 2)  # (B, K, C + R, D)
    return tiles.reshape(batch * windows, chunk + right, dim)


def _stack_states(states: list, batch: int, windows: int):
    """K per-chunk states of (1, B, H) tensors -> one (1, B * K, H) state in tile order (b, k)."""
    def stack(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(parts, dim=2).reshape(1, batch * windows, -1)

    if isinstance(states[0], tuple):
        return tuple(stack([s[i] for s in states]) for i in range(len(states[0])))
    return stack(states)


def _layer_chunk(rnn: nn.RNNBase, x: torch.Tensor, chunk: int, carried) -> tuple[torch.Tensor, object]:
    """One recurrent layer over (1, C + R, D): forward from ``carried`` (its state after frame C is
    returned), backward (if any) from zero over all C + R frames."""
    forward_chunk, state = _run_direction(rnn, x[:, :chunk], carried, "")
    outputs = forward_chunk
    if x.shape[1] > chunk:
        forward_right, _ = _run_direction(rnn, x[:, chunk:], state, "")
        outputs = torch.cat([forward_chunk, forward_right], dim=1)
    if rnn.bidirectional:
        backward, _ = _run_direction(rnn, x.flip(1), None, "_reverse")
        outputs = torch.cat([outputs, backward.flip(1)], dim=-1)
    return outputs, state


def _run_direction(rnn: nn.RNNBase, x: torch.Tensor, state, suffix: str) -> tuple[torch.Tensor, object]:
    """One direction of a one-layer ``rnn`` over (B, T, D) from ``state`` (None: zeros), through
    the same kernels as the module itself; returns (B, T, H) outputs and the final state."""
    if x.shape[1] == 0:
        return x.new_zeros(x.shape[0], 0, rnn.hidden_size), state
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


def ctc_loss(
    log_probs: torch.Tensor,
    out_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
) -> torch.Tensor:
    """CTC loss averaged over the batch after dividing each utterance's loss by its target
    length; impossible alignments contribute zero (``zero_infinity``)."""
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),  # (T', B, V)
        targets,
        out_lengths,
        target_lengths,
        blank=BLANK_ID,
        reduction="mean",
        zero_infinity=True,
    )
