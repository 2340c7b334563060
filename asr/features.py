"""Front-end features: log-mel filterbanks and their normalization.

Pure functions plus one thin module (:class:`FeatureExtractor`) that holds the mel filters and
the normalization statistics, so the exact same front end runs in training, evaluation,
file transcription and streaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

import torch
import torchaudio

from asr.audio import loud_span
from asr.augment import warp_filters
from asr.errors import ConfigError


# How log-mel features are normalized. "global": mean/variance of the training set, stored with
# the model; "utterance": each utterance to zero mean and unit variance. (Functional form because
# "global" is a Python keyword and hydra matches enum members by name.)
NormMode = Enum("NormMode", [("global", "global"), ("utterance", "utterance"), ("none", "none")], type=str)
GLOBAL_NORM = NormMode["global"]
STD_FLOOR = 1e-5  # normalization divides by at least this: a constant band (digital silence) stays finite


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

    def log_mel(self, waveform: torch.Tensor, warp: float = 1.0) -> torch.Tensor:
        """(T,) -> (frames, n_mels) un-normalized log-mel energies; ``num_frames(T)`` frames.
        ``warp`` scales the spectrum's frequencies first (vocal-tract-length perturbation)."""
        with torch.no_grad():
            samples = waveform.shape[-1]
            shortest = self.mel.n_fft // 2 + 1  # the centered STFT reflects n_fft / 2 samples at each edge
            if samples < shortest:  # e.g. a one-sample file: zero-extend, then keep its own frames
                waveform = torch.nn.functional.pad(waveform, (0, shortest - samples))
            power = self.mel.spectrogram(waveform.float())  # (n_freqs, frames)
            filters = self.mel.mel_scale.fb  # (n_freqs, n_mels)
            filters = warp_filters(filters, warp)
            spec = (power.T @ filters)[: self.cfg.num_frames(samples)]  # (frames, n_mels)
            return torch.log(spec + 1e-6).contiguous()

    def check_speaker_norm(self, what: str = "speaker normalization") -> None:
        """Per-speaker statistics replace per-utterance ones; a model normalized otherwise was
        trained on other features. ``what`` names the feature that needs them."""
        mode = NormMode(self.cfg.normalization)
        if mode is not NormMode.utterance:
            raise ConfigError(f"{what} needs a model trained with features.normalization=utterance; "
                              f"this one uses {mode.value}")

    def normalize(self, feats: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(frames, n_mels) -> normalized (frames, n_mels) according to ``cfg.normalization``;
        ``stats`` (mean, std), each (n_mels,), replace an "utterance" model's per-utterance
        statistics (e.g. those of all the speaker's utterances)."""
        mode = NormMode(self.cfg.normalization)
        if stats is not None and mode is NormMode.utterance:
            return (feats - stats[0]) / stats[1].clamp_min(STD_FLOOR)
        if mode is GLOBAL_NORM:
            return (feats - self.mean) / self.std
        if mode is NormMode.utterance:
            mean, std = utterance_stats(feats)
            return (feats - mean) / std
        return feats

    def forward(self, waveform: torch.Tensor, warp: float = 1.0) -> torch.Tensor:
        return self.normalize(self.log_mel(waveform, warp))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std)


def utterance_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames, F) -> the (mean, std), each (F,), that "utterance" normalization takes from the
    frames themselves; the std floored at ``STD_FLOOR``."""
    return feats.mean(0), feats.std(0, unbiased=False).clamp_min(STD_FLOOR)


def sound_span(log_mel: torch.Tensor, floor_db: float) -> slice:
    """(frames, n_mels) log-mel -> the frames from the first to the last whose power is within
    ``floor_db`` dB of the loudest frame's: the segment cut to its sound, as an energy-threshold
    segmenter cuts (and as ``augment.trim_prob`` cuts training utterances). All of them for a
    ``floor_db`` of 0 (no trimming) or no frames."""
    if floor_db <= 0 or log_mel.shape[0] == 0:
        return slice(0, log_mel.shape[0])
    return loud_span(torch.logsumexp(log_mel.double(), dim=1) * (10 / math.log(10)), floor_db)


def feature_stats(features: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over all frames of (frames, F) tensors, in float64."""
    stats = RunningStats()
    for feats in features:
        stats.add(feats)
    mean, std = stats.mean_std()
    return mean.float(), std.float()


class RunningStats:
    """Per-bin mean and standard deviation of every frame added so far (float64 sums): a
    training set's, one speaker's built up over a stream, a stream segment's so far."""

    def __init__(self, total: torch.Tensor | float = 0.0, sq_total: torch.Tensor | float = 0.0, count: int = 0):
        self.sum, self.sq, self.count = total, sq_total, count

    @classmethod
    def prior(cls, mean: torch.Tensor, std: torch.Tensor, frames: int) -> RunningStats:
        """Statistics ``mean``, ``std`` (each (dim,)) weighing as much as ``frames`` frames."""
        mean, var = mean.double(), std.double().pow(2)
        return cls(frames * mean, frames * (var + mean * mean), frames)

    def copy(self) -> RunningStats:
        return RunningStats(self.sum, self.sq, self.count)  # add() replaces the sums, never changes them

    def add(self, feats: torch.Tensor) -> None:
        """Take in (frames, dim) un-normalized features."""
        f = feats.double()
        self.sum, self.sq, self.count = self.sum + f.sum(0), self.sq + (f * f).sum(0), self.count + f.shape[0]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (dim,), in float64."""
        if self.count == 0:
            raise ValueError("no frames to compute feature statistics from")
        mean = self.sum / self.count
        return mean, (self.sq / self.count - mean * mean).clamp_min(1e-10).sqrt()

    def pooled(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each (dim,), of the frames added so far together with (frames, dim) ``feats``."""
        both = self.copy()
        both.add(feats)
        mean, std = both.mean_std()
        return mean.float(), std.float()


class StreamingFeatures:
    """Incremental :class:`FeatureExtractor`: samples in, finished feature frames out.

    Frame i of the centered STFT covers samples [i·hop − n_fft/2, i·hop + n_fft/2); it is
    computed as soon as those samples have arrived. The start and the end (:meth:`finish`) are
    padded by reflection exactly as the offline transform pads the whole waveform, so the
    concatenated output equals ``extractor(waveform)`` for "global" and "none" normalization.
    "utterance" normalization needs the whole utterance: frames as they come are normalized with
    the statistics of the frames so far, blended with the training set's (the extractor's global
    statistics, worth ``PRIOR_FRAMES`` frames) so the first frames are not normalized by
    themselves alone; :meth:`utterance` gives the whole stream normalized exactly as offline.
    Given a ``speaker``'s statistics (the earlier segments of a stream of one speaker), both use
    them pooled with this segment's frames instead."""

    PRIOR_FRAMES = 100  # one second of 10 ms frames

    def __init__(self, extractor: FeatureExtractor, speaker: RunningStats | None = None):
        self.extractor = extractor
        spectrogram = extractor.mel.spectrogram
        self.n_fft, self.hop, self.win_length = spectrogram.n_fft, spectrogram.hop_length, spectrogram.win_length
        self.window = spectrogram.window
        self.half = self.n_fft // 2
        self.buffer = torch.zeros(0)  # samples not yet fully consumed (padded start included)
        self.started = False  # the reflected start is written once half a window has arrived
        self.frames_out = 0
        self.samples_in = 0
        self.raw: list[torch.Tensor] = []  # every frame so far, un-normalized
        self.speaker = speaker
        # running statistics for "utterance" normalization, from the speaker's or the training set's
        self.running = speaker.copy() if speaker is not None and speaker.count else RunningStats.prior(
            extractor.mean, extractor.std, self.PRIOR_FRAMES)

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

    def segment(self, trim_db: float = 0.0) -> torch.Tensor:
        """(frames, n_mels) un-normalized: every frame so far, with ``trim_db`` (dB, 0 for none)
        only those of :func:`sound_span`."""
        raw = torch.cat(self.raw) if self.raw else self._empty()
        return raw[sound_span(raw, trim_db)]

    def utterance(self, trim_db: float = 0.0) -> torch.Tensor:
        """(frames, n_mels): :meth:`segment` normalized as the offline front end normalizes the
        same samples (for "utterance" normalization, with the statistics of all of them, or of all
        of them and the speaker's)."""
        if not self.raw:
            return self._empty()
        raw = self.segment(trim_db)
        return self.extractor.normalize(raw, None if self.speaker is None else self.speaker.pooled(raw))

    def _normalize(self, feats: torch.Tensor) -> torch.Tensor:
        self.raw.append(feats)
        if NormMode(self.extractor.cfg.normalization) is not NormMode.utterance:
            return self.extractor.normalize(feats)
        self.running.add(feats)
        mean, std = self.running.mean_std()
        return ((feats.double() - mean) / std.clamp_min(STD_FLOOR)).float()

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, self.extractor.cfg.n_mels)
