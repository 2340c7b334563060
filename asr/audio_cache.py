"""Decoded training audio kept in memory, so that epochs after the first read no files.

Every training utterance is read once per epoch, and with babble noise 3-6 other utterances
besides for most of them: on 2 cores, where the loader works in turn with the training step,
reading was a fifth of the loader's time (docs/PERFORMANCE.md). The cache holds the samples
exactly as read (float32 at the features' rate), so training sees the same audio either way.
It fills up to its budget and then keeps what it holds: past the budget the rest is read from
the files as before. Training keeps one only where its own process loads the batches (no loader
workers: the default on a CPU of 4 cores or fewer), since loader workers start afresh each epoch.
"""

from __future__ import annotations

from typing import Callable

import torch


class AudioCache:
    """``read(index)`` -> (T,) samples, remembered while they fit in ``budget_mb`` megabytes.

    Callers must not change the returned tensors in place: they are the cached samples."""

    def __init__(self, read: Callable[[int], torch.Tensor], budget_mb: float):
        self.read = read
        self.budget_bytes = int(budget_mb * 2**20)
        self.used_bytes = 0
        self.samples: dict[int, torch.Tensor] = {}

    def __call__(self, index: int) -> torch.Tensor:
        found = self.samples.get(index)
        if found is not None:
            return found
        samples = self.read(index)  # an unreadable file raises here, every time, as without the cache
        size = samples.numel() * samples.element_size()
        if self.used_bytes + size <= self.budget_bytes:
            self.samples[index] = samples
            self.used_bytes += size
        return samples
