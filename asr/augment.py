"""Training-time augmentation: what makes a model trained on few voices hear many.

Pure functions on (T,) waveforms (speed, noise at a signal-to-noise ratio, room reverberation,
band-limiting and equalisation), a frequency warp of the spectrum for vocal-tract-length and
pitch perturbation (folded into the mel filters), SpecAugment masks on features, and
:class:`WaveformAugmenter`, which draws one random chain of them (with tight or silent edges and
a gain) from a generator. The dataset seeds that generator from (seed, epoch, utterance), so
augmentation is reproducible and a resumed run sees exactly the audio an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torchaudio.functional as AF

from asr import fft
from asr.audio import AUDIO_SUFFIXES, audio_files, audio_info, block_energy_db, load_audio, loud_span, resample
from asr.errors import AudioError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class AugmentConfig:
    """Training-only augmentation. Each waveform effect is applied to an utterance with its
    probability (``*_prob``); with every probability 0, ``speed_factors`` [1.0] and no masks
    the training audio is used as it is."""

    speed_factors: List[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # tempo and pitch together
    # pitch alone: resampled by a factor in 1 ± pitch_range (pitch, formants and tempo move), then
    # the spectrum warped back by its inverse (the formants return): a new voice pitch, formants kept
    pitch_prob: float = 0.0
    pitch_range: float = 0.15
    # vocal-tract-length perturbation: the spectrum's frequency axis scaled by 1 ± vtlp_range
    vtlp_prob: float = 0.0
    vtlp_range: float = 0.1
    # silence at the edges: up to edge_silence seconds of digital silence before and after the
    # speech (then covered by the noise, when noise is drawn), as a voice-activity detector leaves
    # around each segment it hands to the recognizer
    edge_silence_prob: float = 0.0
    edge_silence: float = 0.6
    # tight edges: the utterance cut to its 10 ms frames within a floor (dB under its loudest, drawn
    # from trim_db_range) of the loudest, as an energy-threshold segmenter cuts (and corpora cut with
    # one, such as FSDD): the silence goes, and weak onsets and endings (f, th, s) with it
    trim_prob: float = 0.0
    trim_db_range: List[float] = field(default_factory=lambda: [10.0, 35.0])
    # words after a pause: the utterance and a short other one (under join_partner_seconds), each
    # cut to tight edges, joined by join_pause seconds of digital silence (then covered by the noise,
    # when noise is drawn), their transcripts joined too: people pause between words, and a model
    # that heard pauses only at an utterance's edges garbles the word after one (docs/RESULTS.md, 5yd).
    # A joined utterance is longer than its manifest says: its batch passes data.max_frames_per_batch
    # by up to join_pause + join_partner_seconds of frames for each one
    join_prob: float = 0.0
    join_pause: List[float] = field(default_factory=lambda: [0.1, 1.0])
    join_partner_seconds: float = 1.2
    # room reverberation: simulated rooms (exponentially decaying noise after the direct sound) with
    # a reverberation time in rt60_range seconds, or, with rir_dir, half the time a real impulse response
    reverb_prob: float = 0.0
    rt60_range: List[float] = field(default_factory=lambda: [0.15, 0.7])
    rir_dir: Optional[str] = None
    # additive noise at an SNR (dB) in snr_range: coloured noise (white to brown), babble of 3-6 other
    # training utterances (babble_share of the noises), or, with noise_dir, half the time the user's noise files
    noise_prob: float = 0.0
    snr_range: List[float] = field(default_factory=lambda: [5.0, 35.0])
    babble_share: float = 0.3
    noise_dir: Optional[str] = None
    # the channel: random band-limiting (half of it the telephone band, else a random low-pass) and a
    # random equaliser curve (cheap microphones), then a gain of up to ± gain_db
    band_prob: float = 0.0
    eq_prob: float = 0.0
    eq_db: float = 8.0
    gain_prob: float = 0.0
    gain_db: float = 12.0
    # the probabilities above grow linearly over the first warmup_epochs epochs (from 1/(n+1) of
    # theirs): a model learns the clean task first, then is made robust (speed and masks from the start)
    warmup_epochs: int = 0
    # SpecAugment masks on the normalized features
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_max_ratio: float = 0.05  # widest time mask as a fraction of the utterance

    def max_speedup(self) -> float:
        """The most an utterance can be shortened (for the CTC feasibility check)."""
        pitch = 1 + self.pitch_range if self.pitch_prob > 0 else 1.0
        return max(self.speed_factors or [1.0]) * pitch


# ---- the effects, pure functions --------------------------------------------------------------


def speed_perturb(waveform: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """Play (T,) audio ``factor`` times faster (pitch shifts too, like sox ``speed``): the samples
    taken as recorded at ``factor`` times the rate and resampled to it (:func:`resample`), which
    removes what a speed-up lifts above the Nyquist frequency."""
    if factor == 1.0:
        return waveform
    return resample(waveform, sample_rate * factor, sample_rate)


def add_noise(speech: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """(T,) speech plus (any length) noise, looped or cut to T, scaled to ``snr_db``."""
    if noise.numel() < speech.numel():
        noise = noise.repeat(math.ceil(speech.numel() / noise.numel()))
    noise = noise[: speech.numel()]
    if float(noise.pow(2).sum()) == 0 or float(speech.pow(2).sum()) == 0:
        return speech
    return AF.add_noise(speech.unsqueeze(0), noise.unsqueeze(0), torch.tensor([float(snr_db)]))[0]


def fast_fft_length(n: int) -> int:
    """The smallest length >= ``n`` whose only prime factors are 2, 3 and 5 (an FFT of a length
    with a large prime factor is many times slower)."""
    best = 1 << max(0, (n - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            length = power35
            while length < n:
                length *= 2
            best = min(best, length)
            power35 *= 3
        power5 *= 5
    return best


def coloured_noise(length: int, exponent: float, generator: torch.Generator) -> torch.Tensor:
    """(length,) Gaussian noise whose power falls as 1/f^exponent (0 white, 1 pink, 2 brown)."""
    n = fast_fft_length(length)  # a length with small prime factors: many times faster
    bins = n // 2 + 1  # white Gaussian noise's spectrum is complex Gaussian: drawn there directly
    spectrum = torch.complex(torch.randn(bins, generator=generator), torch.randn(bins, generator=generator))
    f = torch.arange(bins, dtype=torch.float32).clamp_min(1.0)
    noise = fft.irfft(spectrum / f.pow(exponent / 2), n=n)[:length]
    return noise / noise.std().clamp_min(1e-8)


def simulated_rir(sample_rate: int, rt60: float, drr_db: float, generator: torch.Generator) -> torch.Tensor:
    """A room impulse response: the direct sound, then after a few milliseconds Gaussian noise
    decaying by 60 dB in ``rt60`` seconds, at ``drr_db`` direct-to-reverberant energy ratio."""
    length = max(2, int(rt60 * sample_rate))
    t = torch.arange(length, dtype=torch.float32) / sample_rate
    tail = torch.randn(length, generator=generator) * torch.exp(-3 * math.log(10) * t / rt60)
    delay = int(sample_rate * (0.002 + 0.008 * float(torch.rand(1, generator=generator))))
    tail[:delay] = 0
    tail *= math.sqrt(10 ** (-drr_db / 10) / max(float(tail.pow(2).sum()), 1e-12))
    tail[0] = 1.0
    return tail


def reverberate(waveform: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """(T,) audio convolved with an impulse response (aligned at its strongest tap, cut to T,
    same energy as the dry audio)."""
    peak = int(rir.abs().argmax())
    n = fast_fft_length(waveform.numel() + rir.numel() - 1)  # long enough that nothing wraps around
    wet = fft.irfft(fft.rfft(waveform, n) * fft.rfft(rir, n), n)[peak : peak + waveform.numel()]
    return wet * (waveform.norm() / wet.norm().clamp_min(1e-8))


def filter_response(waveform: torch.Tensor, sample_rate: int, *gains: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(T,) audio through zero-phase filters whose amplitudes ``gain(frequencies_hz)`` give
    (several filters in one pass: one transform there and back)."""
    n = fast_fft_length(waveform.numel())  # zero-padded to a length with small prime factors
    spectrum = fft.rfft(waveform, n)
    frequencies = torch.fft.rfftfreq(n, 1 / sample_rate)
    for gain in gains:
        spectrum = spectrum * gain(frequencies)
    return fft.irfft(spectrum, n)[: waveform.numel()]


def band_gain(low_hz: float, high_hz: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The amplitude of a band-pass from ``low_hz`` to ``high_hz`` whose edges roll off (raised
    cosine) over 10 % of each cutoff; ``low_hz`` 0 makes it a low-pass."""

    def gain(f: torch.Tensor) -> torch.Tensor:
        rise = ((f - 0.9 * low_hz) / (0.1 * low_hz)).clamp(0, 1) if low_hz > 0 else torch.ones_like(f)
        fall = ((1.1 * high_hz - f) / (0.1 * high_hz)).clamp(0, 1)
        return (0.5 - 0.5 * torch.cos(math.pi * rise)) * (0.5 - 0.5 * torch.cos(math.pi * fall))

    return gain


def equalizer_gain(gains_db: torch.Tensor, sample_rate: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The amplitude of an equaliser: ``gains_db`` at log-spaced frequencies from 100 Hz to
    Nyquist, interpolated linearly in log-frequency."""
    points = torch.logspace(math.log10(100), math.log10(sample_rate / 2), gains_db.numel())

    def gain(f: torch.Tensor) -> torch.Tensor:
        position = torch.log(f.clamp(points[0], points[-1]) / points[0]) / math.log(points[-1] / points[0])
        return 10 ** (_interpolate(gains_db, position * (gains_db.numel() - 1)) / 20)

    return gain


def band_limit(waveform: torch.Tensor, sample_rate: int, low_hz: float, high_hz: float) -> torch.Tensor:
    """Keep ``low_hz``-``high_hz`` of (T,) audio (:func:`band_gain`)."""
    return filter_response(waveform, sample_rate, band_gain(low_hz, high_hz))


def equalize(waveform: torch.Tensor, sample_rate: int, gains_db: torch.Tensor) -> torch.Tensor:
    """(T,) audio through an equaliser (:func:`equalizer_gain`)."""
    return filter_response(waveform, sample_rate, equalizer_gain(gains_db, sample_rate))


def _interpolate(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    left = x.floor().long().clamp(0, values.numel() - 1)
    right = (left + 1).clamp(max=values.numel() - 1)
    w = x - left
    return values[left] * (1 - w) + values[right] * w


def warp_filters(filters: torch.Tensor, alpha: float, boundary: float = 0.8) -> torch.Tensor:
    """(n_freqs, n_mels) filters over bins 0..n_freqs-1 (0 to Nyquist) -> the filters that read the
    spectrum with its frequencies scaled by ``alpha`` (Jaitly & Hinton's piecewise-linear VTLP warp:
    linear up to ``boundary`` of Nyquist, then bent to keep Nyquist in place). Each warped bin is
    the spectrum interpolated at its source frequency, between two bins: folded into the filters,
    two scatter-adds."""
    if alpha == 1.0:
        return filters
    top = filters.shape[0] - 1
    knee = boundary * top * min(alpha, 1.0) / alpha  # source frequency where the straight part ends
    out = torch.arange(top + 1, dtype=torch.float64)
    warped_knee = knee * alpha
    # invert the warp: the source frequency of each output bin
    source = torch.where(out <= warped_knee, out / alpha, top - (top - out) * (top - knee) / (top - warped_knee))
    left = source.floor().long().clamp(0, top)
    right = (left + 1).clamp(max=top)
    w = (source - left).to(filters.dtype).unsqueeze(1)
    return torch.zeros_like(filters).index_add_(0, left, (1 - w) * filters).index_add_(0, right, w * filters)


def spec_augment(feats: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment time and frequency masking of (frames, F) features; returns a new tensor.

    Masked values are set to zero, the mean of normalized features.
    """
    out = feats.clone()
    frames, dims = out.shape
    for _ in range(cfg.freq_masks):
        width = min(int(torch.randint(0, cfg.freq_mask_width + 1, (1,), generator=generator)), dims)
        start = int(torch.randint(0, dims - width + 1, (1,), generator=generator))
        out[:, start : start + width] = 0.0
    max_time = int(math.floor(frames * cfg.time_mask_max_ratio))
    for _ in range(cfg.time_masks):
        width = int(torch.randint(0, max_time + 1, (1,), generator=generator))
        start = int(torch.randint(0, frames - width + 1, (1,), generator=generator))
        out[start : start + width, :] = 0.0
    return out


# ---- drawing a random chain ---------------------------------------------------------------------


class AudioFolder:
    """The audio files under a folder (noises, or room impulse responses), all checked at start
    so that a bad folder stops a run before training, with the config field in the message."""

    def __init__(self, path: str, field_name: str):
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ConfigError(f"{field_name}={path!r}: not a folder")
        self.files = audio_files(root)
        if not self.files:
            raise ConfigError(f"{field_name}={path!r}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in it")
        try:
            self.durations = [audio_info(p)[1] for p in self.files]
        except AudioError as exc:
            raise ConfigError(f"{field_name}: {exc}") from None
        log.info("%s: %d audio files, %.1f minutes", field_name, len(self.files), sum(self.durations) / 60)

    def pick(self, sample_rate: int, seconds: float, generator: torch.Generator) -> torch.Tensor:
        """A random file, or a random ``seconds``-long piece of a longer one, at ``sample_rate``."""
        i = int(torch.randint(len(self.files), (1,), generator=generator))
        spare = max(0.0, self.durations[i] - seconds)
        offset = spare * float(torch.rand(1, generator=generator))
        return load_audio(self.files[i], sample_rate, offset, min(seconds, self.durations[i]) if spare else None)


def trim_to_loudness(waveform: torch.Tensor, sample_rate: int, floor_db: float) -> torch.Tensor:
    """(T,) -> (T',): from the first to the last 10 ms frame whose energy is within ``floor_db``
    of the loudest frame's."""
    hop = sample_rate // 100
    if waveform.numel() < 2 * hop:
        return waveform
    span = loud_span(block_energy_db(waveform, hop), floor_db)
    return waveform[span.start * hop: span.stop * hop]


def join_with_pause(first: torch.Tensor, second: torch.Tensor, sample_rate: int, pause_seconds: float,
                    floor_db: tuple[float, float]) -> torch.Tensor:
    """(T1,), (T2,) -> (T,): each cut to tight edges (:func:`trim_to_loudness` at its floor), then
    joined by ``pause_seconds`` of digital silence."""
    pause = torch.zeros(int(pause_seconds * sample_rate), dtype=first.dtype)
    return torch.cat([trim_to_loudness(first, sample_rate, floor_db[0]), pause,
                      trim_to_loudness(second, sample_rate, floor_db[1])])


class WaveformAugmenter:
    """Draws one chain of effects per utterance: speed, pitch, edges (trimmed or padded),
    reverberation, noise, band and equaliser, gain (in that order: the segment a segmenter hands
    on, a room, then the noise around the speaker, then the microphone and line). Returns the audio and the spectral warp (VTLP and the pitch's
    formant correction) for the feature extractor to apply.

    Args:
        others: (index) -> waveform of another training utterance, for babble; ``num_others`` of them.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int, others: Callable[[int], torch.Tensor] | None = None,
                 num_others: int = 0):
        self.cfg, self.sample_rate = cfg, sample_rate
        self.others, self.num_others = others, num_others
        self.noises = AudioFolder(cfg.noise_dir, "augment.noise_dir") if cfg.noise_dir else None
        self.rirs = AudioFolder(cfg.rir_dir, "augment.rir_dir") if cfg.rir_dir else None

    def ramp(self, epoch: int) -> float:
        """The share of their probabilities the effects have in ``epoch`` (growing to 1 over warmup_epochs)."""
        return min(1.0, (epoch + 1) / (self.cfg.warmup_epochs + 1))

    def draws_join(self, g: torch.Generator, epoch: int) -> bool:
        """Whether this utterance is joined with another (``join_prob``); the dataset picks the other."""
        return _happens(self.ramp(epoch) * self.cfg.join_prob, g)

    def join(self, first: torch.Tensor, second: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The two utterances at tight edges with a pause between (:func:`join_with_pause`)."""
        floors = (_uniform(*self.cfg.trim_db_range, g), _uniform(*self.cfg.trim_db_range, g))
        return join_with_pause(first, second, self.sample_rate, _uniform(*self.cfg.join_pause, g), floors)

    def __call__(self, waveform: torch.Tensor, g: torch.Generator, epoch: int = 0) -> tuple[torch.Tensor, float]:
        cfg, rate = self.cfg, self.sample_rate
        ramp = self.ramp(epoch)
        speed = cfg.speed_factors[int(torch.randint(len(cfg.speed_factors), (1,), generator=g))] if cfg.speed_factors else 1.0
        warp = 1.0
        if _happens(ramp * cfg.pitch_prob, g):
            pitch = _uniform(1 - cfg.pitch_range, 1 + cfg.pitch_range, g)
            speed, warp = speed * pitch, 1 / pitch
        waveform = speed_perturb(waveform, speed, rate)  # one resampling for both
        if _happens(ramp * cfg.vtlp_prob, g):
            warp *= _uniform(1 - cfg.vtlp_range, 1 + cfg.vtlp_range, g)
        if _happens(ramp * cfg.trim_prob, g):
            waveform = trim_to_loudness(waveform, rate, _uniform(*cfg.trim_db_range, g))
        if _happens(ramp * cfg.edge_silence_prob, g):
            before, after = (int(_uniform(0, cfg.edge_silence, g) * rate) for _ in range(2))
            waveform = torch.nn.functional.pad(waveform, (before, after))
        if _happens(ramp * cfg.reverb_prob, g):
            waveform = reverberate(waveform, self._rir(g))
        if _happens(ramp * cfg.noise_prob, g):
            waveform = add_noise(waveform, self._noise(waveform.numel(), g), _uniform(*cfg.snr_range, g))
        channel = []
        if _happens(ramp * cfg.band_prob, g):
            telephone = _happens(0.5, g)
            low = _uniform(100, 400, g) if telephone else _uniform(0, 150, g)
            high = _uniform(3000, 3700, g) if telephone else _uniform(3500, 0.45 * rate, g)
            channel.append(band_gain(low, min(high, 0.45 * rate)))
        if _happens(ramp * cfg.eq_prob, g):
            channel.append(equalizer_gain((2 * torch.rand(6, generator=g) - 1) * cfg.eq_db, rate))
        if channel:
            waveform = filter_response(waveform, rate, *channel)
        if _happens(ramp * cfg.gain_prob, g):
            waveform = waveform * 10 ** (_uniform(-cfg.gain_db, cfg.gain_db, g) / 20)
        return waveform, warp

    def _rir(self, g: torch.Generator) -> torch.Tensor:
        if self.rirs is not None and _happens(0.5, g):
            return self.rirs.pick(self.sample_rate, 2.0, g)
        return simulated_rir(self.sample_rate, _uniform(*self.cfg.rt60_range, g), _uniform(-3, 12, g), g)

    def _noise(self, length: int, g: torch.Generator) -> torch.Tensor:
        if self.noises is not None and _happens(0.5, g):
            return self.noises.pick(self.sample_rate, length / self.sample_rate, g)
        if self.others is not None and self.num_others > 1 and _happens(self.cfg.babble_share, g):
            return self._babble(length, g)
        return coloured_noise(length, _uniform(0, 2, g), g)

    def _babble(self, length: int, g: torch.Generator) -> torch.Tensor:
        """3-6 other training utterances at equal loudness, each starting at a random point."""
        mix = torch.zeros(length)
        for i in torch.randint(self.num_others, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist():
            try:
                voice = self.others(i)
            except AudioError:
                continue  # an unusable utterance is reported where it is trained on, not here
            voice = voice.roll(int(torch.randint(voice.numel(), (1,), generator=g)))
            voice = voice.repeat(math.ceil(length / voice.numel()))[:length]
            mix += voice / voice.std().clamp_min(1e-8)
        return mix


def _happens(probability: float, g: torch.Generator) -> bool:
    return probability > 0 and float(torch.rand(1, generator=g)) < probability


def _uniform(low: float, high: float, g: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand(1, generator=g))
