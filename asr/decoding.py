"""Turn frame-level log-probabilities into token sequences.

Greedy CTC decoding is fully vectorized: one argmax, one mask, one transfer to Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asr.tokenizer import BLANK_ID


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # token ids, blanks and repeats removed
    frames: tuple[int, ...]  # output frame at which each token was emitted
    score: float  # sum of the chosen frames' log-probabilities


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
    """Best-path CTC decoding.

    Args:
        log_probs: (B, T, V) log-probabilities.
        lengths: (B,) valid frames per row.

    Returns:
        One :class:`Hypothesis` per row: the argmax path with repeats merged and blanks removed.
    """
    best_scores, best = log_probs.max(dim=-1)  # (B, T)
    batch, frames = best.shape
    positions = torch.arange(frames, device=best.device)
    valid = positions.unsqueeze(0) < lengths.to(best.device).unsqueeze(1)  # (B, T)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=BLANK_ID)
    keep = valid & (best != BLANK_ID) & (best != previous)
    scores = (best_scores * valid).sum(dim=1).tolist()
    rows, cols = keep.nonzero(as_tuple=True)
    tokens = best[rows, cols].tolist()
    counts = keep.sum(dim=1).tolist()
    cols_list = cols.tolist()
    hyps, start = [], 0
    for row in range(batch):
        end = start + counts[row]
        hyps.append(Hypothesis(tuple(tokens[start:end]), tuple(cols_list[start:end]), scores[row]))
        start = end
    return hyps
