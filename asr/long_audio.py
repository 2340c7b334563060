"""Long files in bounded memory: overlapping windows read straight from the file, stitched back
into one transcript; and keeping a long run's resident memory at its live size."""

from __future__ import annotations

import ctypes
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from asr.transcript import Transcript

LONG_AUDIO_SECONDS = 40.0  # longer inputs are transcribed in overlapping windows
WINDOW_SECONDS = 30.0
OVERLAP_SECONDS = 4.0


def windows(duration: float, window: float, overlap: float) -> list[tuple[float, float, float, float]]:
    """Cover [0, duration] with windows of ``window`` seconds overlapping by ``overlap``.

    Returns (start, length, keep_from, keep_to) per window: a word belongs to the window whose
    keep range [keep_from, keep_to) holds its start; keep ranges tile the audio exactly, and
    each border sits in the middle of an overlap, where both windows have context."""
    if overlap < 0 or window <= 2 * overlap:
        raise ValueError(f"window ({window}s) must be longer than twice the overlap ({overlap}s)")
    step = window - overlap
    starts = [0.0]
    while starts[-1] + window < duration:
        starts.append(starts[-1] + step)
    result = []
    for i, start in enumerate(starts):
        keep_from = 0.0 if i == 0 else start + overlap / 2
        keep_to = duration + 1.0 if i == len(starts) - 1 else start + step + overlap / 2
        result.append((start, min(window, duration - start), keep_from, keep_to))
    return result


def stitch(pieces: Sequence[tuple[Transcript, float, float]], key: str, duration: float) -> Transcript:
    """Join window transcripts (each with its keep range) into one: a word belongs to the window
    whose keep range holds its start. (Starts, the first token's onset, are what CTC places well;
    ends stretch over the frames a peaky model leaves to its last token.) The score is the sum of
    the windows' scores (overlaps counted twice)."""
    from asr.transcript import Transcript

    words = [w for t, keep_from, keep_to in pieces for w in t.words if keep_from <= w.start < keep_to]
    return Transcript(key, " ".join(w.word for w in words), duration, sum(t.score for t, _, _ in pieces), (), tuple(words))


def release_free_memory() -> None:
    """Keep a long run's resident memory at its live size (glibc only; elsewhere a no-op).

    Batch after batch of large tensors, glibc's allocator raises its mmap threshold to the
    largest block freed so far and then serves such blocks from the heap, where freed memory
    mostly stays resident, so a long file's peak memory crept up with its length. Blocks of 4 MiB
    and more get their own mapping again (returned to the OS when freed), and the heap's free
    pages are handed back."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.malloc_trim(0)


_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


@lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
