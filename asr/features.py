"""Front-end features: log-mel filterbanks, normalization and training-time augmentation.

Pure functions plus one thin module (:class:`FeatureExtractor`) that holds the mel filters and
the normalization statistics, so the exact same front end runs in training, evaluation,
file transcription and streaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, List

import torch
import torchaudio

from asr.audio import resample


# How log-mel features are normalized. "global": mean/variance of the training set, stored with
# the model; "utterance": each utterance to zero mean and unit variance. (Functional form because
# "global" is a Python keyword and hydra matches enum members by name.)
NormMode = Enum("NormMode", [("global", "global"), ("utterance", "utterance"), ("none", "none")], type=str)
GLOBAL_NORM = NormMode["global"]


@dataclass
class FeatureConfig:
    """Log-mel front end. Stored in every checkpoint so transcription needs nothing else."""

    sample_rate: int = 16000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    normalization: NormMode = GLOBAL_NORM

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (centered STFT)."""
        return num_samples // self.hop_length + 1


@dataclass
class AugmentConfig:
    """Training-only augmentation; all zero/[1.0] disables it."""

    speed_factors: List[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_max_ratio: float = 0.05  # widest time mask as a fraction of the utterance


class FeatureExtractor(torch.nn.Module):
    """waveform (T,) at ``cfg.sample_rate`` -> normalized log-mel features (frames, n_mels)."""

    def __init__(self, cfg: FeatureConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        n_fft = 1 << max(0, (cfg.win_length - 1).bit_length())  # next power of two
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            power=2.0,
        )
        self.register_buffer("mean", torch.zeros(cfg.n_mels) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(cfg.n_mels) if std is None else std.float())

    @property
    def dim(self) -> int:
        return self.cfg.n_mels

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(T,) -> (frames, n_mels) un-normalized log-mel energies; ``num_frames(T)`` frames."""
        with torch.no_grad():
            samples = waveform.shape[-1]
            shortest = self.mel.n_fft // 2 + 1  # the centered STFT reflects n_fft / 2 samples at each edge
            if samples < shortest:  # e.g. a one-sample file: zero-extend, then keep its own frames
                waveform = torch.nn.functional.pad(waveform, (0, shortest - samples))
            spec = self.mel(waveform.float())[:, : self.cfg.num_frames(samples)]  # (n_mels, frames)
            return torch.log(spec + 1e-6).transpose(0, 1).contiguous()

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """(frames, n_mels) -> normalized (frames, n_mels) according to ``cfg.normalization``."""
        mode = NormMode(self.cfg.normalization)
        if mode is GLOBAL_NORM:
            return (feats - self.mean) / self.std
        if mode is NormMode.utterance:
            return (feats - feats.mean(0)) / feats.std(0, unbiased=False).clamp_min(1e-5)
        return feats

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.log_mel(waveform))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)


def feature_stats(features: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over all frames of (frames, F) tensors, in float64."""
    total = sq_total = None
    count = 0
    for feats in features:
        f = feats.double()
        s, sq = f.sum(0), (f * f).sum(0)
        total = s if total is None else total + s
        sq_total = sq if sq_total is None else sq_total + sq
        count += f.shape[0]
    if count == 0:
        raise ValueError("no frames to compute feature statistics from")
    mean = total / count
    var = (sq_total / count - mean * mean).clamp_min(1e-10)
    return mean.float(), var.sqrt().float()


def speed_perturb(waveform: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """Play (T,) audio ``factor`` times faster (pitch shifts too, like sox ``speed``)."""
    if factor == 1.0:
        return waveform
    return resample(waveform, int(round(sample_rate * factor)), sample_rate)


def spec_augment(
    feats: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment time and frequency masking of (frames, F) features; returns a new tensor.

    Masked values are set to zero, the mean of normalized features.
    """
    out = feats.clone()
    frames, dims = out.shape
    for _ in range(cfg.freq_masks):
        width = int(torch.randint(0, cfg.freq_mask_width + 1, (1,), generator=generator))
        width = min(width, dims)
        start = int(torch.randint(0, dims - width + 1, (1,), generator=generator))
        out[:, start : start + width] = 0.0
    max_time = int(math.floor(frames * cfg.time_mask_max_ratio))
    for _ in range(cfg.time_masks):
        width = int(torch.randint(0, max_time + 1, (1,), generator=generator))
        start = int(torch.randint(0, frames - width + 1, (1,), generator=generator))
        out[start : start + width, :] = 0.0
    return out


class StreamingFeatures:
    """Incremental :class:`FeatureExtractor`: samples in, finished feature frames out.

    Frame i of the centered STFT covers samples [i·hop − n_fft/2, i·hop + n_fft/2); it is
    computed as soon as those samples have arrived. The start and the end (:meth:`finish`) are
    padded by reflection exactly as the offline transform pads the whole waveform, so the
    concatenated output equals ``extractor(waveform)`` for "global" and "none" normalization.
    "utterance" normalization needs the whole utterance; here it uses the statistics of the
    frames so far (an approximation, logged once)."""

    def __init__(self, extractor: FeatureExtractor):
        self.extractor = extractor
        spectrogram = extractor.mel.spectrogram
        self.n_fft, self.hop, self.win_length = spectrogram.n_fft, spectrogram.hop_length, spectrogram.win_length
        self.window = spectrogram.window
        self.half = self.n_fft // 2
        self.buffer = torch.zeros(0)  # samples not yet fully consumed (padded start included)
        self.started = False  # the reflected start is written once half a window has arrived
        self.frames_out = 0
        self.samples_in = 0
        self._sum = self._sq = None  # running statistics for "utterance" normalization

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        """(N,) float samples at the model's rate -> (frames, n_mels) new feature frames."""
        self.samples_in += samples.numel()
        self.buffer = torch.cat([self.buffer, samples.float().flatten()])
        if not self.started:
            if self.buffer.numel() <= self.half:
                return self._empty()
            # reflect padding as torch.stft(center=True, pad_mode="reflect") does at the start
            self.buffer = torch.cat([self.buffer[1 : self.half + 1].flip(0), self.buffer])
            self.started = True
        return self._frames(final=False)

    def finish(self) -> torch.Tensor:
        """The frames left at the end of the stream (reflect-padded like the offline end)."""
        if self.samples_in == 0:
            return self._empty()
        if not self.started:  # shorter than half a window: pad the whole thing at once
            if self.buffer.numel() <= self.half:  # reflect padding needs more samples than it adds
                padded = torch.nn.functional.pad(self.buffer.view(1, 1, -1), (self.half, self.half), mode="replicate")
                self.buffer = padded.flatten()
            else:
                self.buffer = torch.cat([self.buffer[1 : self.half + 1].flip(0), self.buffer])
            self.started = True
        else:
            self.buffer = torch.cat([self.buffer, self.buffer[-self.half - 1 : -1].flip(0)])
        return self._frames(final=True)

    def _frames(self, final: bool) -> torch.Tensor:
        total = self.samples_in // self.hop + 1  # frames of the offline transform so far (final)
        available = (self.buffer.numel() - self.n_fft) // self.hop + 1 if self.buffer.numel() >= self.n_fft else 0
        count = min(available, total - self.frames_out) if final else available
        if count <= 0:
            return self._empty()
        used = self.buffer[: (count - 1) * self.hop + self.n_fft]
        spec = torch.stft(used, self.n_fft, self.hop, self.win_length, self.window, center=False, return_complex=True)
        mel = self.extractor.mel.mel_scale(spec.abs().pow(2.0))  # (n_mels, count)
        feats = torch.log(mel + 1e-6).transpose(0, 1)
        self.buffer = self.buffer[count * self.hop :]
        self.frames_out += count
        return self._normalize(feats)

    def _normalize(self, feats: torch.Tensor) -> torch.Tensor:
        if NormMode(self.extractor.cfg.normalization) is not NormMode.utterance:
            return self.extractor.normalize(feats)
        f = feats.double()
        self._sum = f.sum(0) if self._sum is None else self._sum + f.sum(0)
        self._sq = (f * f).sum(0) if self._sq is None else self._sq + (f * f).sum(0)
        mean = self._sum / self.frames_out
        std = (self._sq / self.frames_out - mean * mean).clamp_min(1e-10).sqrt()
        return ((f - mean) / std.clamp_min(1e-5)).float()

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, self.extractor.cfg.n_mels)
