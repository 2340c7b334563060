"""What recognition returns: a transcript and its words. Plain data, no PyTorch, so the torch-free
runtime of exported models (:mod:`asr.onnx_model`) and the output formats share them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, TypeVar

from asr.tokenizer import CharTokenizer, Tokenizer


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float  # seconds from the start of the audio
    end: float
    confidence: float  # in [0, 1]


@dataclass(frozen=True)
class Transcript:
    key: str  # the audio file
    text: str
    duration: float  # seconds
    score: float
    alternatives: tuple[tuple[str, float], ...] = ()  # n-best (text, score), best first, when asked for
    words: tuple[WordTiming, ...] = ()  # with timestamps=True
    error: str | None = None  # why this input could not be transcribed (then text is empty)
    log_probs: Any = field(default=None, repr=False, compare=False)  # (T', V) tensor, with keep_log_probs


class TokenSpan(Protocol):
    token: int
    start: int  # first output frame
    end: int  # one past the last


Span = TypeVar("Span", bound=TokenSpan)


def word_groups(spans: Sequence[Span], tokenizer: Tokenizer) -> list[list[Span]]:
    """Split token spans into words: at space tokens (characters) or at pieces that start a
    word with sentencepiece's '\u2581'."""
    groups: list[list[Span]] = []
    current: list[Span] = []
    for span in spans:
        if isinstance(tokenizer, CharTokenizer):
            if tokenizer.symbols[span.token] == " ":
                if current:
                    groups.append(current)
                current = []
                continue
        elif tokenizer.sp.id_to_piece(span.token - 1).startswith("\u2581") and current:
            groups.append(current)
            current = []
        current.append(span)
    if current:
        groups.append(current)
    return groups
