"""Audio input: any file libsndfile reads -> mono float32 at the requested sample rate.

:func:`read_audio` needs no PyTorch (the runtime of exported models reads audio with it);
:func:`load_audio` gives a tensor at the model's rate."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from asr.errors import AudioError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

RATE_RANGE = (1000, 1_000_000)  # sample rates accepted as audio (Hz)
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

    samples, file_rate = read_audio(path, offset, duration)
    return resample(torch.from_numpy(samples), file_rate, sample_rate)


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


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of (..., T) audio; a no-op when the rates agree."""
    if orig_rate == new_rate:
        return waveform
    import torch
    import torchaudio.functional as AF

    up, down = _reduced_ratio(int(orig_rate), int(new_rate))
    if up * down > 2_000_000:
        # torchaudio's polyphase kernel has down x (up + width) taps: for a rate like 44,101 Hz that
        # is gigabytes; soxr (through librosa) resamples any ratio in little memory
        import librosa

        resampled = librosa.resample(waveform.numpy(), orig_sr=orig_rate, target_sr=new_rate, res_type="soxr_hq")
        return torch.from_numpy(np.ascontiguousarray(resampled, dtype=np.float32))
    return AF.resample(waveform, up, down)


@lru_cache(maxsize=64)
def _reduced_ratio(orig: int, new: int) -> tuple[int, int]:
    g = np.gcd(orig, new)
    return orig // g, new // g


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
