"""Speaker normalization: utterances of one voice share the statistics of all of them.

A model trained with per-utterance normalization takes each utterance's own mean and variance
off its features. For a one-word utterance that mean is mostly the word, and taking it off erases
part of what tells "nine" from "one". Pooled over many utterances of the same voice and channel,
the statistics describe the voice and the channel instead, as Kaldi recipes apply CMVN per
speaker. Which utterances pool together:

- ``labels``: those with the same speaker label (the manifest's ``speaker`` field);
- ``nearest``: no labels needed. Each utterance pools with the utterances nearest to it in voice
  and channel (the mean and spread of their log-mel features), nearest first, until they hold
  ``seconds`` of audio. Utterances of one speaker and microphone lie close together, so with
  enough of them the pool is mostly the utterance's own speaker, over many words.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable, NamedTuple, Sequence

import torch

from asr.errors import ConfigError

# Two minutes of audio: enough one-word clips (about 300 FSDD digits) that their mean is the
# voice's, not a word's; docs/RESULTS.md measures 30 s to 200 s.
POOL_SECONDS = 120.0
_BLOCK = 256  # rows of the distance matrix at a time: memory stays O(block × utterances)


class SpeakerNorm(str, Enum):
    """Which utterances share normalization statistics (see the module docstring)."""

    labels = "labels"
    nearest = "nearest"

    @classmethod
    def parse(cls, value: bool | str | SpeakerNorm | None) -> SpeakerNorm | None:
        """False/None: none; True: ``labels``; otherwise the mode named."""
        if value is None or value is False:
            return None
        if value is True:
            return cls.labels
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"speaker normalization {value!r}: use one of {[m.value for m in cls]}") from None


class FrameSums(NamedTuple):
    """Per-utterance sufficient statistics of un-normalized features, in float64."""

    sum: torch.Tensor  # (N, F) sum of frames
    sq: torch.Tensor  # (N, F) sum of squared frames
    count: torch.Tensor  # (N,) frames

    @classmethod
    def of(cls, features: Iterable[torch.Tensor]) -> FrameSums:
        """From N (frames, F) feature tensors, taken one at a time (none of them is kept)."""
        sums, squares, counts = [], [], []
        for x in features:
            x = x.double()
            sums.append(x.sum(0))
            squares.append((x * x).sum(0))
            counts.append(x.shape[0])
        if not counts:  # none: no utterance to pool
            empty = torch.zeros(0, 0, dtype=torch.float64)
            return cls(empty, empty, torch.zeros(0, dtype=torch.float64))
        return cls(torch.stack(sums), torch.stack(squares), torch.tensor(counts, dtype=torch.float64))

    def pooled(self, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (F,) float32, of all frames of the utterances ``members`` (indices)."""
        count = self.count[members].sum()
        mean = self.sum[members].sum(0) / count
        var = self.sq[members].sum(0) / count - mean * mean
        return mean.float(), var.clamp_min(1e-10).sqrt().float()


def pool_by_label(speakers: Sequence[str | None], sums: FrameSums) -> list[torch.Tensor | None]:
    """Indices each utterance pools with: every utterance of its speaker (one tensor, shared by
    all of them); None without a speaker."""
    by_speaker: dict[str, list[int]] = {}
    for index, speaker in enumerate(speakers):
        if speaker is not None:
            by_speaker.setdefault(speaker, []).append(index)
    groups = {speaker: torch.tensor(indices) for speaker, indices in by_speaker.items()}
    return [None if speaker is None else groups[speaker] for speaker in speakers]


def pooled_stats(sums: FrameSums, pools: Sequence[torch.Tensor | None]) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """(mean, std) of each utterance's pool (None stays None). A pool that several utterances
    share (a speaker's, from :func:`pool_by_label`) is summed once, not once per utterance:
    with one label over many inputs, that would be quadratic."""
    done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for pool in pools:
        if pool is not None and id(pool) not in done:
            done[id(pool)] = sums.pooled(pool)
    return [None if pool is None else done[id(pool)] for pool in pools]


def voice_vectors(sums: FrameSums) -> torch.Tensor:
    """(N, 2F): each utterance's feature mean and standard deviation, each dimension standardized
    over the N utterances, so that every band counts alike in a distance."""
    mean = sums.sum / sums.count[:, None]
    std = (sums.sq / sums.count[:, None] - mean * mean).clamp_min(0).sqrt()
    vectors = torch.cat([mean, std], dim=1)
    spread = vectors.std(0, unbiased=False) if len(vectors) > 1 else torch.ones(vectors.shape[1])
    return (vectors - vectors.mean(0)) / spread.clamp_min(1e-6)


def pool_by_nearest(sums: FrameSums, frames: float) -> list[torch.Tensor]:
    """Indices each utterance pools with: itself, then the others nearest in voice
    (:func:`voice_vectors`), until they hold at least ``frames`` frames (or all of them)."""
    vectors = voice_vectors(sums)
    pools = []
    for start in range(0, len(vectors), _BLOCK):
        distances = torch.cdist(vectors[start : start + _BLOCK], vectors)  # (block, N)
        rows = torch.arange(distances.shape[0])
        distances[rows, rows + start] = -1.0  # itself first, even beside an identical recording
        order = distances.argsort(dim=1, stable=True)
        held = sums.count[order].cumsum(dim=1)
        sizes = (held < frames).sum(dim=1) + 1  # up to and including the one that reaches ``frames``
        pools += [row[: min(int(size), len(row))] for row, size in zip(order, sizes)]
    return pools
