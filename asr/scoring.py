"""Word and character error rates by edit distance, and the per-utterance error report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from torchaudio.functional import edit_distance

from asr.atomic import atomic_write


@dataclass(frozen=True)
class UtteranceScore:
    key: str
    reference: str
    hypothesis: str
    word_errors: int
    words: int
    char_errors: int
    chars: int
    speaker: str | None = None


@dataclass
class ErrorRates:
    """Accumulates edit distances; ``wer``/``cer`` are percentages."""

    utterances: list[UtteranceScore] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason): left out of the rates

    def skip(self, key: str, reason: str) -> None:
        self.skipped.append((key, reason))

    def add(self, key: str, reference: str, hypothesis: str, speaker: str | None = None) -> UtteranceScore:
        ref_words, hyp_words = reference.split(), hypothesis.split()
        ref_chars, hyp_chars = " ".join(ref_words), " ".join(hyp_words)
        score = UtteranceScore(
            key,
            reference,
            hypothesis,
            edit_distance(ref_words, hyp_words),
            len(ref_words),
            edit_distance(ref_chars, hyp_chars),
            len(ref_chars),
            speaker,
        )
        self.utterances.append(score)
        return score

    @property
    def wer(self) -> float:
        return _percent(sum(u.word_errors for u in self.utterances), sum(u.words for u in self.utterances))

    @property
    def cer(self) -> float:
        return _percent(sum(u.char_errors for u in self.utterances), sum(u.chars for u in self.utterances))

    def by_speaker(self) -> dict[str, ErrorRates]:
        """The rates of each speaker's utterances (those with a speaker), by speaker name."""
        groups: dict[str, ErrorRates] = {}
        for u in self.utterances:
            if u.speaker is not None:
                groups.setdefault(u.speaker, ErrorRates()).utterances.append(u)
        return dict(sorted(groups.items()))

    def summary(self) -> str:
        """The contract's final line: ``WER <percent> CER <percent>``."""
        return f"WER {self.wer:.2f} CER {self.cer:.2f}"

    def write_report(self, path: str | Path) -> Path:
        """One JSON line per utterance (reference, hypothesis, errors), worst first."""
        ordered = sorted(self.utterances, key=lambda u: (-u.word_errors, u.key))
        with atomic_write(path) as f:
            for u in ordered:
                record = {k: v for k, v in u.__dict__.items() if not (k == "speaker" and v is None)}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return Path(path)


def score(references: Sequence[str], hypotheses: Sequence[str], keys: Sequence[str] | None = None,
          speakers: Sequence[str | None] | None = None) -> ErrorRates:
    """Word and character error rates of ``hypotheses`` against ``references`` (both already
    normalized), utterance by utterance; ``keys`` name the utterances (default: their positions),
    ``speakers`` (optional) their speakers."""
    rates = ErrorRates()
    keys = keys if keys is not None else [str(i) for i in range(len(references))]
    speakers = speakers if speakers is not None else [None] * len(references)
    for key, ref, hyp, speaker in zip(keys, references, hypotheses, speakers, strict=True):
        rates.add(key, ref, hyp, speaker)
    return rates


def _percent(errors: int, total: int) -> float:
    return 100.0 * errors / total if total else 0.0
