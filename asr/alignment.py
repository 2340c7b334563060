"""Word timestamps and confidences from CTC alignment.

The hypothesis (from any decoder) is force-aligned to the model's frame outputs with
``torchaudio.functional.forced_align`` (Viterbi over CTC paths), giving each token a span of
output frames. A word spans its tokens; output frame ``i`` covers input frames
``[i * f, (i + 1) * f)`` for subsampling factor ``f``, so times are exact in frames of
``hop * f`` seconds. A word's confidence is the mean posterior of its tokens over their spans.

A CTC model is peaky: a token fires on one or two frames somewhere inside its sound, so token
spans alone place a word's edges badly (a whole-word token may fire at the word's end, a last
letter well before it). Given the waveform, :func:`refine_edges` keeps the spans as anchors and
moves each word's edges to where the speech around its anchor starts and stops (10 ms frame
energy against a threshold set per utterance); where two words run together with no pause, the
border goes to the quietest frame between their anchors. On voices the model never heard a
token may fire outside its word: an anchor that fell into a pause is first moved onto the
nearest speech, an anchor that began in the tail of the word before it starts at its own speech
after the pause, and one that began in a pause starts where the pause ends.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF

from asr.audio import block_energy_db
from asr.tokenizer import BLANK_ID, Tokenizer
from asr.transcript import WordTiming, word_groups


def token_spans(log_probs: torch.Tensor, tokens: tuple[int, ...]) -> list[AF.TokenSpan]:
    """Best CTC alignment of ``tokens`` to (T, V) log-probabilities, as one span per token."""
    if not tokens:
        return []
    emissions = log_probs.detach().float().cpu().unsqueeze(0)  # (1, T, V)
    targets = torch.tensor([tokens], dtype=torch.int32)
    aligned, scores = AF.forced_align(emissions, targets, blank=BLANK_ID)
    return AF.merge_tokens(aligned[0], scores[0].exp(), blank=BLANK_ID)


ENERGY_BLOCK_SECONDS = 0.01  # edges are placed on a 10 ms grid
SPEECH_RANGE_DB = 35.0  # frames within this of the utterance's loud frames count as speech
MAX_EDGE_SHIFT_SECONDS = 1.0  # how far an edge may move from its anchor
MIN_WORD_SECONDS = 0.1  # speech between pauses at least this long, reaching within
WORD_RANGE_DB = 20.0  # this of the loud frames, may be a word of its own


def speech_frames(energy_db: torch.Tensor, range_db: float = SPEECH_RANGE_DB) -> torch.Tensor:
    """(N,) energies -> (N,) bool: frames within ``range_db`` of the loud end of the utterance
    (its 95th percentile, so a click does not set the scale), smoothed over 3 frames."""
    smoothed = torch.nn.functional.avg_pool1d(energy_db.view(1, 1, -1), 3, 1, 1, count_include_pad=False).view(-1)
    loud = torch.quantile(smoothed, 0.95)
    return smoothed > loud - range_db


def snap_to_speech(anchors: list[tuple[int, int]], speech: list[bool], max_shift: int) -> list[tuple[int, int]]:
    """Anchors with no speech frame in them (a CTC spike in the pause after its word, which a
    model does on voices it has not heard) moved onto the nearest speech frame, at most
    ``max_shift`` frames away and never past a neighbour's anchor; before the anchor on a tie,
    since a CTC token fires late rather than early."""
    snapped = list(anchors)
    for i, (a, b) in enumerate(anchors):
        if any(speech[a:b]):
            continue
        low = max(snapped[i - 1][1] if i else 0, a - max_shift)
        high = min(anchors[i + 1][0] if i + 1 < len(anchors) else len(speech), b + max_shift)
        before = next((j for j in range(a - 1, low - 1, -1) if speech[j]), None)
        after = next((j for j in range(b, high) if speech[j]), None)
        if before is not None and (after is None or a - before <= after - b + 1):
            snapped[i] = (before, before + 1)
        elif after is not None:
            snapped[i] = (after, after + 1)
    return snapped


def speech_runs(speech: list[bool]) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of consecutive speech frames."""
    runs, start = [], None
    for i, is_speech in enumerate([*speech, False]):
        if is_speech and start is None:
            start = i
        elif not is_speech and start is not None:
            runs.append((start, i))
            start = None
    return runs


def trim_to_own_speech(anchors: list[tuple[int, int]], speech: list[bool], loud: list[bool],
                       min_run: int) -> list[tuple[int, int]]:
    """Anchors whose first token fired in the speech of the word before (the anchor starts in
    the run of speech where the previous anchor ends, then crosses a pause into speech of its
    own) start at that speech instead: a model on an unheard voice fires a word's first letter
    early, in the tail of the word before it."""
    runs = speech_runs(speech)
    words = [(start, end) for start, end in runs if end - start >= min_run and any(loud[start:end])]
    trimmed = list(anchors)
    for i in range(1, len(anchors)):
        a, b = trimmed[i]
        previous_end = trimmed[i - 1][1] - 1
        shared = next((r for r in runs if r[0] <= a < r[1] and r[0] <= previous_end < r[1]), None)
        if shared is None:
            continue
        own = next((start for start, _ in words if shared[1] <= start < b), None)
        if own is not None:
            trimmed[i] = (own, b)
    return trimmed


def refine_edges(
    anchors: list[tuple[int, int]], energy_db: torch.Tensor, max_shift: int
) -> list[tuple[int, int]]:
    """Move word edges from their anchor spans ``[a, b)`` (in energy frames, ordered, not
    overlapping) to the edges of the speech around them.

    Between two words, a pause (non-speech frames) ends the first at its start and starts the
    second at its end; with no pause, both share the quietest frame between the anchors. An edge
    moves at most ``max_shift`` frames and never past a neighbour's anchor."""
    speech = speech_frames(energy_db).tolist()
    n = len(speech)
    anchors = snap_to_speech(anchors, speech, max_shift)
    loud = speech_frames(energy_db, WORD_RANGE_DB).tolist()
    min_run = round(MIN_WORD_SECONDS / ENERGY_BLOCK_SECONDS)
    anchors = trim_to_own_speech(anchors, speech, loud, min_run)
    edges = [[a, b] for a, b in anchors]
    for i, (a, b) in enumerate(anchors):
        if i == 0:  # the first word starts where the speech around its anchor starts
            j = a
            while j > max(0, a - max_shift) and speech[j - 1]:
                j -= 1
            edges[i][0] = j
        nxt = anchors[i + 1][0] if i + 1 < len(anchors) else None
        limit = min(n, b + max_shift) if nxt is None else min(nxt, b + max_shift)
        j = b
        while j < limit and speech[j]:
            j += 1
        if nxt is None:
            edges[i][1] = j
            continue
        if j < nxt and not speech[j]:  # a pause: the next word starts where it ends
            k = nxt
            while k > max(j, nxt - max_shift) and speech[k - 1]:
                k -= 1
            while k < anchors[i + 1][1] - 1 and not speech[k]:  # its anchor began in the pause
                k += 1
            edges[i][1], edges[i + 1][0] = j, k
        else:  # no pause: split at the quietest frame between the anchors
            gap = energy_db[b:nxt]
            split = b + int(gap.argmin()) if len(gap) else b
            edges[i][1], edges[i + 1][0] = split, split
    return [(a, max(a, b)) for a, b in edges]


def word_timings(
    log_probs: torch.Tensor,
    tokens: tuple[int, ...],
    tokenizer: Tokenizer,
    seconds_per_frame: float,
    offset: float = 0.0,
    end: float | None = None,
    waveform: torch.Tensor | None = None,
    sample_rate: int = 16000,
) -> list[WordTiming]:
    """Per-word start/end (seconds, shifted by ``offset``) and confidence for a hypothesis.

    Args:
        log_probs: (T, V) model log-probabilities of one utterance (valid frames only).
        tokens: the hypothesis' token ids (blanks and repeats removed).
        seconds_per_frame: duration of one model output frame (hop * subsampling factor).
        end: the audio's end in seconds; times are clipped to it (the last output frame covers
            padding past the last sample).
        waveform: (T,) samples of the same audio at ``sample_rate``; when given, word edges are
            moved to the speech around each word (:func:`refine_edges`).
    """
    end = float("inf") if end is None else end
    groups, texts, confidences = [], [], []
    for group in word_groups(token_spans(log_probs, tokens), tokenizer):
        text = tokenizer.decode([s.token for s in group]).strip()
        if text:
            frames = sum(s.end - s.start for s in group)
            groups.append(group)
            texts.append(text)
            confidences.append(sum(s.score * (s.end - s.start) for s in group) / max(frames, 1))
    spans = [(g[0].start * seconds_per_frame, g[-1].end * seconds_per_frame) for g in groups]
    if waveform is not None and spans:
        block = max(1, round(ENERGY_BLOCK_SECONDS * sample_rate))
        step = block / sample_rate
        energy = block_energy_db(waveform, block)
        n = len(energy)  # the last model frame may reach past the last sample: clamp to the audio
        anchors = [(min(int(s / step), n - 1), min(max(int(s / step) + 1, round(e / step)), n)) for s, e in spans]
        edges = refine_edges(anchors, energy, round(MAX_EDGE_SHIFT_SECONDS / step))
        spans = [(a * step, b * step) for a, b in edges]
    return [
        WordTiming(text, min(round(offset + s, 3), end), min(round(offset + e, 3), end), float(min(max(c, 0.0), 1.0)))
        for text, (s, e), c in zip(texts, spans, confidences)
    ]
