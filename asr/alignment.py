"""Word timestamps and confidences from CTC alignment.

The hypothesis (from any decoder) is force-aligned to the model's frame outputs with
``torchaudio.functional.forced_align`` (Viterbi over CTC paths), giving each token a span of
output frames. A word spans its tokens; output frame ``i`` covers input frames
``[i * f, (i + 1) * f)`` for subsampling factor ``f``, so times are exact in frames of
``hop * f`` seconds. A word's confidence is the mean posterior of its tokens over their spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF

from asr.tokenizer import BLANK_ID, CharTokenizer, Tokenizer


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float  # seconds from the start of the audio
    end: float
    confidence: float  # in [0, 1]


def token_spans(log_probs: torch.Tensor, tokens: tuple[int, ...]) -> list[AF.TokenSpan]:
    """Best CTC alignment of ``tokens`` to (T, V) log-probabilities, as one span per token."""
    if not tokens:
        return []
    emissions = log_probs.detach().float().cpu().unsqueeze(0)  # (1, T, V)
    targets = torch.tensor([tokens], dtype=torch.int32)
    aligned, scores = AF.forced_align(emissions, targets, blank=BLANK_ID)
    return AF.merge_tokens(aligned[0], scores[0].exp(), blank=BLANK_ID)


def _word_groups(spans: list[AF.TokenSpan], tokenizer: Tokenizer) -> list[list[AF.TokenSpan]]:
    """Split token spans into words: at space tokens (characters) or at pieces that start a
    word with sentencepiece's '▁'."""
    groups: list[list[AF.TokenSpan]] = []
    current: list[AF.TokenSpan] = []
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


def word_timings(
    log_probs: torch.Tensor,
    tokens: tuple[int, ...],
    tokenizer: Tokenizer,
    seconds_per_frame: float,
    offset: float = 0.0,
    end: float | None = None,
) -> list[WordTiming]:
    """Per-word start/end (seconds, shifted by ``offset``) and confidence for a hypothesis.

    Args:
        log_probs: (T, V) model log-probabilities of one utterance (valid frames only).
        tokens: the hypothesis' token ids (blanks and repeats removed).
        seconds_per_frame: duration of one model output frame (hop * subsampling factor).
        end: the audio's end in seconds; times are clipped to it (the last output frame covers
            padding past the last sample).
    """
    end = float("inf") if end is None else end
    words = []
    for group in _word_groups(token_spans(log_probs, tokens), tokenizer):
        text = tokenizer.decode([s.token for s in group]).strip()
        if not text:
            continue
        frames = sum(s.end - s.start for s in group)
        confidence = sum(s.score * (s.end - s.start) for s in group) / max(frames, 1)
        words.append(
            WordTiming(
                text,
                min(round(offset + group[0].start * seconds_per_frame, 3), end),
                min(round(offset + group[-1].end * seconds_per_frame, 3), end),
                float(min(max(confidence, 0.0), 1.0)),
            )
        )
    return words
