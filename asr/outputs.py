"""Transcript output formats: txt, json, srt, vtt, tsv; one file per input, written atomically.

Words (with times and confidences) are grouped into subtitle segments that break at pauses,
at a maximum line length and at a maximum duration, the conventions subtitle players expect.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from asr.atomic import write_text
from asr.transcript import WordTiming

if TYPE_CHECKING:
    from asr.transcript import Transcript

log = logging.getLogger(__name__)


class OutputFormat(str, Enum):
    txt = "txt"
    json = "json"
    srt = "srt"
    vtt = "vtt"
    tsv = "tsv"


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[WordTiming, ...]


def segment_words(
    words: Sequence[WordTiming], max_gap: float = 0.8, max_chars: int = 42, max_seconds: float = 6.0
) -> list[Segment]:
    """Group words into segments: a new one after a pause longer than ``max_gap`` seconds, or
    when the text would pass ``max_chars`` characters or the span ``max_seconds``."""
    segments: list[Segment] = []
    current: list[WordTiming] = []

    def flush() -> None:
        if current:
            text = " ".join(w.word for w in current)
            segments.append(Segment(current[0].start, current[-1].end, text, tuple(current)))
            current.clear()

    for word in words:
        if current:
            text_len = sum(len(w.word) + 1 for w in current) + len(word.word)
            if word.start - current[-1].end > max_gap or text_len > max_chars or word.end - current[0].start > max_seconds:
                flush()
        current.append(word)
    flush()
    return segments


def timestamp(seconds: float, decimal: str) -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt)."""
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def to_json(t: Transcript) -> dict:
    record: dict = {"audio_filepath": t.key, "text": t.text, "duration": round(t.duration, 3)}
    if t.words:
        record["segments"] = [
            {
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "words": [
                    {"word": w.word, "start": w.start, "end": w.end, "confidence": round(w.confidence, 4)}
                    for w in s.words
                ],
            }
            for s in segment_words(t.words)
        ]
    if t.alternatives:
        record["nbest"] = [{"text": text, "score": round(score, 4)} for text, score in t.alternatives]
    return record


def render(t: Transcript, fmt: OutputFormat) -> str:
    """One transcript as a complete document in ``fmt``."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.txt:
        return t.text + "\n"
    if fmt is OutputFormat.json:
        return json.dumps(to_json(t), ensure_ascii=False) + "\n"
    segments = segment_words(t.words)
    if fmt is OutputFormat.tsv:
        rows = ["start\tend\ttext"] + [f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text}" for s in segments]
        return "\n".join(rows) + "\n"
    if fmt is OutputFormat.srt:
        cues = [
            f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text}\n" for i, s in enumerate(segments, 1)
        ]
        return "\n".join(cues)
    cues = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def output_paths(keys: Sequence[str], output_dir: str | Path, fmt: OutputFormat) -> list[Path]:
    """``<output_dir>/<stem>.<fmt>`` per input; inputs sharing a stem get their parent folder's
    name in front (``<parent>_<stem>``) so no output overwrites another."""
    output_dir = Path(output_dir)
    stems = [Path(k).stem for k in keys]
    paths = []
    for key, stem in zip(keys, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(key).parent.name}_{stem}"
        paths.append(output_dir / f"{name}.{OutputFormat(fmt).value}")
    counts = Counter(paths)
    return [output_dir / f"{i:05d}_{p.name}" if counts[p] > 1 else p for i, p in enumerate(paths)]


class TranscriptWriter:
    """Writes each transcript as soon as it is done (with ``output_dir``: one file per input,
    atomically, so an interrupted batch keeps what finished), or prints them all in input order
    on :meth:`close` (stdout)."""

    def __init__(self, utts: Sequence, fmt: OutputFormat, output_dir: str | Path | None, stream=None):
        self.utts, self.fmt, self.output_dir = utts, OutputFormat(fmt), output_dir
        self.paths = output_paths([str(u.audio_filepath) for u in utts], output_dir, fmt) if output_dir else []
        self.stream = stream
        self.done: dict = {}  # input index -> Transcript

    def finished(self, index: int, transcript) -> None:
        self.done[index] = transcript
        if self.output_dir:
            write_text(self.paths[index], render(transcript, self.fmt))

    def close(self) -> None:
        if self.output_dir:
            log.info("wrote %d %s files to %s", len(self.done), self.fmt.value, self.output_dir)
            return
        stream = self.stream or sys.stdout
        several = len(self.utts) > 1
        for index in sorted(self.done):
            transcript = self.done[index]
            if self.fmt is OutputFormat.txt and several:
                stream.write(f"{transcript.key}\t{transcript.text}\n")
            else:
                stream.write(render(transcript, self.fmt))


def warn_skipped(reason: str) -> None:
    """``asr transcribe``'s line for an input it could not transcribe (the others go on)."""
    print(f"asr: warning: {reason}; skipped", file=sys.stderr)


def report_incomplete(done: int, total: int, failed: int, missing: int | None = None) -> None:
    """``asr transcribe``'s last line when inputs failed, or (``missing``) were not reached
    because it was interrupted."""
    print(f"asr: transcribed {done} of {total} inputs; {failed} failed"
          + (f", {missing} not transcribed (interrupted)" if missing is not None else ""), file=sys.stderr)
