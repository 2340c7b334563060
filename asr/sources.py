"""Audio sources for streaming: the microphone (PortAudio via sounddevice), a file fed at
real-time pace, or raw 16-bit PCM on stdin. Each yields (N,) float32 mono blocks at the rate it
was asked for, resampled on the fly (:class:`StreamResampler`) when the input differs.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

import numpy as np

from asr.audio import RESAMPLE_QUALITY, load_audio
from asr.errors import AudioError

log = logging.getLogger(__name__)

BLOCK_MS = 20  # audio per block delivered to the recognizer


class StreamResampler:
    """Block-wise resampling whose concatenated output equals :func:`asr.audio.resample_samples`
    of the whole signal (soxr's stream, flushed by ``final``)."""

    def __init__(self, orig_rate: int, new_rate: int):
        import soxr

        self.same = orig_rate == new_rate
        self.stream = None if self.same else soxr.ResampleStream(orig_rate, new_rate, 1, dtype="float32",
                                                                 quality=RESAMPLE_QUALITY)

    def accept(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        if self.same:
            return samples.astype(np.float32, copy=False)
        return self.stream.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32), last=final)


def file_blocks(path: str | Path, rate: int, realtime: bool = True, block_ms: int = BLOCK_MS) -> Iterator[np.ndarray]:
    """A file's audio at ``rate`` in blocks, one block per ``block_ms`` of wall time with
    ``realtime`` (as a microphone would deliver it), else as fast as they are taken."""
    audio = load_audio(path, rate).numpy()
    step = rate * block_ms // 1000
    started = time.monotonic()
    for i, start in enumerate(range(0, len(audio), step)):
        if realtime:
            delay = started + (i + 1) * block_ms / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the block is "recorded" once its last sample has been spoken
        yield audio[start : start + step]


def resample_blocks(blocks: Iterable[np.ndarray], orig_rate: int, new_rate: int) -> Iterator[np.ndarray]:
    """Blocks of samples at ``orig_rate`` as float32 blocks at ``new_rate``, resampled as one
    signal (:class:`StreamResampler`); the tail is flushed when ``blocks`` ends."""
    resampler = StreamResampler(orig_rate, new_rate)
    for block in blocks:
        out = resampler.accept(np.asarray(block, dtype=np.float32))
        if len(out):
            yield out
    tail = resampler.accept(np.zeros(0, dtype=np.float32), final=True)
    if len(tail):
        yield tail


def pcm_blocks(stream: BinaryIO, input_rate: int, rate: int, block_ms: int = BLOCK_MS) -> Iterator[np.ndarray]:
    """Raw little-endian 16-bit mono PCM at ``input_rate`` from a binary stream, as float32
    blocks at ``rate``; ends at end of stream."""
    return resample_blocks(_pcm_samples(stream, input_rate * block_ms // 1000 * 2), input_rate, rate)


def _pcm_samples(stream: BinaryIO, size: int) -> Iterator[np.ndarray]:
    """16-bit PCM read ``size`` bytes at a time, as float32 samples."""
    pcm = Pcm16()
    while data := stream.read(size):
        yield pcm.decode(data)


class Pcm16:
    """Pieces of 16-bit little-endian mono PCM -> float32 samples; an odd byte at the end of a
    piece waits for its pair in the next."""

    def __init__(self) -> None:
        self.leftover = b""

    def decode(self, data: bytes) -> np.ndarray:
        data = self.leftover + data
        whole = len(data) // 2 * 2
        self.leftover = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.float32) / 32768.0


def list_devices() -> str:
    """The input devices PortAudio sees, one per line: index, name, channels, default rate."""
    import sounddevice as sd

    lines = []
    for index, device in enumerate(sd.query_devices()):
        if device["max_input_channels"] > 0:
            lines.append(f"{index}: {device['name']} ({device['max_input_channels']} ch, "
                         f"{device['default_samplerate']:.0f} Hz)")
    return "\n".join(lines) if lines else "(no input devices)"


class Microphone:
    """Blocks from a PortAudio input device at ``rate``: the device is opened at its own default
    rate and resampled here (a sound server's resampler is built for speed: PulseAudio's default,
    speex at quality 1, leaves images and aliases that per-utterance normalization raises to full
    scale), else at ``rate`` if it refuses its own. Input overflows (blocks the system dropped
    because we fell behind) are counted in :attr:`overflows`, not fatal."""

    def __init__(self, rate: int, device: Optional[str | int] = None, block_ms: int = BLOCK_MS):
        import sounddevice as sd

        self.rate, self.overflows = rate, 0
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        device = int(device) if isinstance(device, str) and device.isdigit() else device
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            raise AudioError(f"input device {device!r} not found ({exc}); input devices:\n{list_devices()}") from None
        device_rate = int(info["default_samplerate"])
        try:
            sd.check_input_settings(device, channels=1, samplerate=device_rate, dtype="float32")
        except (ValueError, sd.PortAudioError):
            device_rate = rate
        self.resampler = StreamResampler(device_rate, rate)
        self.name = info["name"]
        self._stream = sd.InputStream(device=device, channels=1, samplerate=device_rate, dtype="float32",
                                      blocksize=device_rate * block_ms // 1000, callback=self._callback)
        log.info("recording from %s at %d Hz", self.name, device_rate)

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        self._queue.put(indata[:, 0].copy())

    def blocks(self) -> Iterator[np.ndarray]:
        """Blocks until the caller stops iterating (Ctrl-C)."""
        with self._stream:
            while True:
                out = self.resampler.accept(self._queue.get())
                if len(out):
                    yield out


def stdin_blocks(input_rate: int, rate: int) -> Iterator[np.ndarray]:
    return pcm_blocks(sys.stdin.buffer, input_rate, rate)
