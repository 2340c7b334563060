"""Real FFTs of whole utterances, for the augmentation's channel filters, rooms and noise.

numpy's pocketfft rather than ``torch.fft``: on CPUs torch's transform of one long 1-D signal
takes 2-4x as long at the lengths :mod:`asr.augment` uses (an utterance padded to small prime
factors: 28,125 samples there and back in 0.84 ms against 0.22, one thread or two), and the
loader runs these on every training utterance (docs/PERFORMANCE.md measures what it saves).
Inputs and outputs are torch tensors.
"""

from __future__ import annotations

import numpy as np
import torch


def rfft(signal: torch.Tensor, n: int) -> torch.Tensor:
    """(T,) float32 signal, zero-padded or cut to ``n`` samples -> (n // 2 + 1,) complex64 spectrum."""
    spectrum = np.fft.rfft(signal.detach().numpy(), n=n)
    return torch.from_numpy(spectrum.astype(np.complex64, copy=False))


def irfft(spectrum: torch.Tensor, n: int) -> torch.Tensor:
    """(n // 2 + 1,) complex spectrum -> (n,) float32 signal (the inverse of :func:`rfft`)."""
    signal = np.fft.irfft(spectrum.detach().numpy(), n=n)
    return torch.from_numpy(signal.astype(np.float32, copy=False))
