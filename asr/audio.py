"""Audio input: any file libsndfile reads -> mono float32 at the requested sample rate.

:func:`read_audio` needs no PyTorch (the runtime of exported models reads audio with it);
:func:`load_audio` gives a tensor at the model's rate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from asr.errors import AudioError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

RATE_RANGE = (1000, 1_000_000)  # sample rates accepted as audio (Hz)
RESAMPLE_QUALITY = "HQ"  # soxr's high quality: 20-bit precision, the same in files, streams and the runtime
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".nist", ".aif", ".aiff", ".au", ".caf",
                  ".w64"}


def audio_files(folder: str | Path) -> list[Path]:
    """The audio files (by suffix) in ``folder`` and its subfolders, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def audio_info(path: str | Path) -> tuple[int, float]:
    """Return (sample_rate, duration in seconds) of an audio file without decoding it."""
    if not Path(path).is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio ({_first_line(exc)})") from None
    _check_rate(path, info.samplerate)
    return info.samplerate, info.frames / info.samplerate


def _check_rate(path: str | Path, rate: int) -> None:
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise AudioError(f"{path}: sample rate {rate} Hz is not audio (expected {RATE_RANGE[0]:,}-{RATE_RANGE[1]:,} Hz)")


def load_audio(
    path: str | Path,
    sample_rate: int,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Read a segment of an audio file as mono float32 at ``sample_rate``.

    Args:
        path: any file libsndfile reads (wav, flac, ogg, mp3, NIST sphere, ...).
        sample_rate: the rate of the returned samples; the file is resampled if it differs.
        offset: start of the segment in seconds.
        duration: length of the segment in seconds; ``None`` reads to the end.

    Returns:
        waveform: (T,) float32 in [-1, 1].

    Raises:
        AudioError: naming the file, if it is missing, unreadable, empty or non-finite.
    """
    import torch

    return torch.from_numpy(read_audio_at(path, sample_rate, offset, duration))


def read_audio_at(path: str | Path, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """:func:`load_audio` without PyTorch: (T,) float32 samples at ``sample_rate``."""
    samples, file_rate = read_audio(path, offset, duration)
    if file_rate == sample_rate:
        return samples
    resampled = resample_samples(samples, file_rate, sample_rate)
    if resampled.size == 0:  # e.g. one sample at 48 kHz: none at 16 kHz
        raise AudioError(f"{path}: audio too short ({samples.size} samples at {file_rate} Hz are none at {sample_rate} Hz)")
    return resampled


def read_audio(path: str | Path, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """A segment of an audio file as it is stored: (T,) float32 mono samples and their rate.
    Raises AudioError as :func:`load_audio` does."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            file_rate = f.samplerate
            _check_rate(path, file_rate)
            start = int(round(offset * file_rate))
            if start > 0:
                if start >= f.frames:
                    raise AudioError(f"{path}: offset {offset}s is past the end ({f.frames / file_rate:.3f}s)")
                f.seek(start)
            frames = -1 if duration is None else int(round(duration * file_rate))
            data = f.read(frames=frames, dtype="float32", always_2d=True)  # (T, C)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{path}: cannot read audio ({_first_line(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono), file_rate


def resample(waveform: torch.Tensor, orig_rate: float, new_rate: float) -> torch.Tensor:
    """(T,) audio at ``orig_rate`` -> (T',) float32 at ``new_rate`` (:func:`resample_samples`);
    a no-op when the rates agree."""
    if orig_rate == new_rate:
        return waveform
    import torch

    return torch.from_numpy(resample_samples(waveform.detach().cpu().numpy(), orig_rate, new_rate))


def resample_samples(samples: np.ndarray, orig_rate: float, new_rate: float) -> np.ndarray:
    """(T,) samples -> (T',) float32, T' = round(T · new / orig), by soxr at RESAMPLE_QUALITY:
    any ratio in little memory, and images and aliases far under the quietest speech. A looser
    filter matters: 8 kHz speech upsampled by a short sinc kernel mirrors its formants into
    4-5 kHz at -34 dB, which per-utterance normalization raises to full scale (docs/RESULTS.md)."""
    import soxr

    out = soxr.resample(np.asarray(samples, dtype=np.float32), orig_rate, new_rate, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out, dtype=np.float32)


def block_energy_db(waveform: torch.Tensor, block: int) -> torch.Tensor:
    """(T,) samples -> (ceil(T / block),) mean energy in dB of consecutive ``block``-sample blocks
    (the last one zero-padded)."""
    import torch

    padded = torch.nn.functional.pad(waveform.float(), (0, -waveform.numel() % block))
    power = padded.view(-1, block).pow(2).mean(1)
    return 10 * torch.log10(power + 1e-10)


def loud_span(energy_db: torch.Tensor, floor_db: float) -> slice:
    """(N,) block or frame energies in dB -> the blocks from the first to the last within
    ``floor_db`` of the loudest, as an energy-threshold segmenter cuts (all of them when none
    compares, as with NaN)."""
    import torch

    loud = torch.nonzero(energy_db >= energy_db.max() - floor_db).flatten()
    return slice(int(loud[0]), int(loud[-1]) + 1) if loud.numel() else slice(0, energy_db.numel())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
