"""The acoustic model: subsampling -> N recurrent layers -> linear -> log-softmax, trained with CTC.

How the recurrent layers run (padded batches on CPUs, packed sequences on GPUs) lives in
:mod:`asr.kernels`; chunk-by-chunk execution for streaming and chunk-aware training in
:mod:`asr.chunked`. Every path gives the same outputs on real frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from asr import chunked, kernels
from asr.kernels import FastDropout, Kernel
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
            self.conv = nn.Conv2d(1, channels, (2 * factor - 1, 3), (factor, 2), (factor - 1, 1))
            self.out_dim = channels * ((input_dim - 1) // 2 + 1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + self.factor - 1, self.factor, rounding_mode="floor")  # ceil(T / f), both kinds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        if self.kind is Subsampling.stack:
            pad = (-frames) % self.factor
            return F.pad(x, (0, 0, 0, pad)).reshape(batch, (frames + pad) // self.factor, dim * self.factor)
        y = F.gelu(self.conv(x.unsqueeze(1)))  # (B, C, T', F')
        return y.permute(0, 2, 1, 3).flatten(2)  # (B, T', C * F')


class AcousticModel(nn.Module):
    """Features (B, T, F) -> log-probabilities (B, T', V) over blank (id 0) and the tokens.

    ``kernel`` says how the recurrent layers run (:class:`asr.kernels.Kernel`; ``auto``: packed
    sequences on GPUs, the padded batch on CPUs); it changes speed, never the outputs."""

    def __init__(self, cfg: ModelConfig, input_dim: int, vocab_size: int, kernel: Kernel = Kernel.auto):
        super().__init__()
        self.cfg, self.input_dim, self.vocab_size, self.kernel = cfg, input_dim, vocab_size, Kernel(kernel)
        self.subsample = Subsampler(cfg.subsampling, cfg.subsampling_factor, input_dim, cfg.conv_channels)
        rnn_cls = _RNN[CellType(cfg.cell)]
        self.rnns, self.between = nn.ModuleList(), nn.ModuleList()  # `between`: after each layer but the last
        dim = self.subsample.out_dim
        for layer in range(cfg.num_layers):
            self.rnns.append(rnn_cls(dim, cfg.hidden_size, batch_first=True, bidirectional=cfg.bidirectional))
            dim = cfg.hidden_size * (2 if cfg.bidirectional else 1)
            if layer < cfg.num_layers - 1:
                block, dim = self._between_block(dim)
                self.between.append(block)
        self.dropout = FastDropout(cfg.dropout)
        self.classifier = nn.Linear(dim, vocab_size)
        self.scores = kernels.scores  # classifier + log-softmax; kernels.compile_non_recurrent swaps in a compiled one

    def _between_block(self, dim: int) -> tuple[nn.Module, int]:
        """Optional projection, then optional normalization, applied to real frames only."""
        layers: list[nn.Module] = []
        if self.cfg.projection_size:
            layers.append(nn.Linear(dim, self.cfg.projection_size))
            dim = self.cfg.projection_size
        norm = NormKind(self.cfg.norm)
        if norm is not NormKind.none:
            layers.append(nn.BatchNorm1d(dim) if norm is NormKind.batch else nn.LayerNorm(dim))
        return nn.Sequential(*layers), dim

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after subsampling for ``lengths`` input frames (exact)."""
        return self.subsample.output_lengths(lengths)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, F), lengths (B,) -> log_probs (B, T', V) (zeros on padding), out_lengths (B,)."""
        x = self.subsample(features)
        out_lengths = self.output_lengths(lengths.cpu())
        if self.training and self.cfg.train_chunk_frames > 0 and self.cfg.bidirectional:
            hidden, valid = chunked.training_forward(self, x, out_lengths)
        else:
            hidden, valid = kernels.recurrent_stack(self, x, out_lengths)
        log_probs = self.scores(self.classifier, self.dropout(hidden), valid)[:, : x.shape[1]]
        return log_probs, out_lengths.to(log_probs.device, non_blocking=True)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor) -> torch.Tensor:
    """CTC loss averaged over the batch after dividing each utterance's loss by its target
    length; impossible alignments contribute zero (``zero_infinity``)."""
    return F.ctc_loss(log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths,  # (T', B, V)
                      blank=BLANK_ID, reduction="mean", zero_infinity=True)
