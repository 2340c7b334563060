"""Chunk-by-chunk execution of a bidirectional model: streaming and chunk-aware training.

The latency-controlled BLSTM scheme (Zhang et al. 2016): the audio is committed ``chunk`` (C)
output frames at a time; in every layer the forward direction continues from the state it had
at the end of the previous chunk, and the backward direction starts afresh at the end of R frames
of right context. :func:`forward_chunk` runs one chunk (``asr stream``); :func:`training_forward`
gives a whole batch exactly what chunk after chunk would (``model.train_chunk_frames``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from asr.kernels import between_layers, run_direction

if TYPE_CHECKING:
    from asr.model import AcousticModel


def forward_chunk(model: AcousticModel, frames: torch.Tensor, chunk: int,
                  state: list | None = None) -> tuple[torch.Tensor, list]:
    """One chunk of latency-controlled streaming.

    Args:
        frames: (1, C + R, D) subsampled frames: ``chunk`` (C) frames, then R frames of right context.
        chunk: C.
        state: each layer's forward-direction state after the previous chunk (None: start).

    Returns:
        log_probs (1, C + R, V) — the last R are provisional: the next chunk recomputes them —
        and the forward states after frame C, for the next chunk. With C + R covering the input
        this is the model's whole-utterance forward.
    """
    h, carried = frames, []
    for layer, rnn in enumerate(model.rnns):
        h, layer_state = _layer_chunk(rnn, h, chunk, state[layer] if state is not None else None)
        carried.append(layer_state)
        if layer < len(model.between):
            h = between_layers(model.between[layer], model.dropout, h, None)
    return model.classifier(h).float().log_softmax(-1), carried


def training_forward(model: AcousticModel, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-aware training: (B, T, D) subsampled frames and (B,) CPU lengths -> the (B, T, H *
    directions) top-layer outputs :func:`forward_chunk` gives chunk after chunk (the committed
    frames) and the (B, T) mask of real frames. Each window k is chunk k plus the right context;
    all layers run on the windows, so a right-context frame's input at layer l + 1 is what layer
    l computed inside that window."""
    chunk, right = model.cfg.train_chunk_frames, model.cfg.train_right_context_frames
    batch, frames, _ = x.shape
    windows = math.ceil(frames / chunk)
    starts = torch.arange(windows) * chunk
    real = (lengths.unsqueeze(1) - starts.unsqueeze(0)).clamp(0, chunk + right).reshape(-1)  # (B * K,)
    steps = torch.arange(chunk + right).unsqueeze(0)
    tile_valid = (steps < real.unsqueeze(1)).to(x.device)  # (B * K, C + R)
    flip = torch.where(steps < real.unsqueeze(1), real.unsqueeze(1) - 1 - steps, steps).to(x.device)  # reverses in place
    tiles = _tiles(x, chunk, right, windows)  # (B * K, C + R, D)
    for layer, rnn in enumerate(model.rnns):
        forward = _carried_forward(rnn, tiles, chunk, batch, windows)
        reversed_tiles = tiles.gather(1, flip.unsqueeze(-1).expand(-1, -1, tiles.shape[-1]))
        backward, _ = run_direction(rnn, reversed_tiles, None, reverse=True)
        backward = backward.gather(1, flip.unsqueeze(-1).expand(-1, -1, backward.shape[-1]))
        tiles = torch.cat([forward, backward], dim=-1)
        if layer < len(model.between):
            tiles = between_layers(model.between[layer], model.dropout, tiles, tile_valid)
    committed = tiles[:, :chunk].reshape(batch, windows * chunk, -1)[:, :frames]
    valid = (torch.arange(frames).unsqueeze(0) < lengths.unsqueeze(1)).to(x.device)
    return committed, valid


def _carried_forward(rnn: nn.RNNBase, tiles: torch.Tensor, chunk: int, batch: int, windows: int) -> torch.Tensor:
    """The forward direction over (B * K, C + R, D) windows: through the committed chunks in
    order, carrying the state, and over each right context from the state at its chunk's end."""
    committed = tiles[:, :chunk].reshape(batch, windows * chunk, -1)  # (B, K * C, D)
    outputs, states, state = [], [], None
    for k in range(windows):
        out, state = run_direction(rnn, committed[:, k * chunk : (k + 1) * chunk], state, reverse=False)
        outputs.append(out)
        states.append(state)
    forward = torch.stack(outputs, dim=1).reshape(batch * windows, chunk, -1)
    if tiles.shape[1] == chunk:
        return forward
    right, _ = run_direction(rnn, tiles[:, chunk:], _stack_states(states, batch, windows), reverse=False)
    return torch.cat([forward, right], dim=1)


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
    outputs, state = run_direction(rnn, x[:, :chunk], carried, reverse=False)
    if x.shape[1] > chunk:
        right, _ = run_direction(rnn, x[:, chunk:], state, reverse=False)
        outputs = torch.cat([outputs, right], dim=1)
    if rnn.bidirectional:
        backward, _ = run_direction(rnn, x.flip(1), None, reverse=True)
        outputs = torch.cat([outputs, backward.flip(1)], dim=-1)
    return outputs, state
