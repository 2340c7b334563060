"""Transcribe files with an exported model where PyTorch is not installed (``pip install asr[onnx]``).

The deployment runtime: audio (soundfile, soxr) -> the front end in numpy -> the exported model
in onnxruntime -> greedy CTC decoding -> text with word times and confidences, in the output
formats of ``asr transcribe``. Its transcripts equal the full toolkit's greedy ones on the
same model (tests/test_export.py); word edges are the CTC spans, without the full toolkit's
move onto the speech around them, each file is transcribed whole (the full toolkit windows long
ones), and beam search, language models, evaluation and streaming need the full toolkit. ``asr``
runs this module's :func:`main` when PyTorch cannot be imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from asr.audio import audio_files, audio_info, read_audio_at
from asr.errors import AsrError, AudioError
from asr.onnx_model import OnnxModel, is_onnx
from asr.tokenizer import BLANK_ID
from asr.transcript import Transcript, WordTiming, word_groups

MAX_BATCH_FRAMES = 40_000  # padded feature frames per batch


class Span(NamedTuple):
    token: int
    start: int  # first output frame
    end: int  # one past the last
    score: float  # mean probability of the token over its frames


class Input(NamedTuple):
    audio_filepath: Path
    duration: float


def greedy_spans(log_probs: np.ndarray) -> list[Span]:
    """(T, V) log-probs -> the best path's tokens, each with its run of frames (blanks and
    repeats merged). The best path is also the best alignment of its own tokens, so these are
    the spans a forced alignment of the greedy result gives."""
    best = log_probs.argmax(axis=1)
    probs = np.exp(log_probs.max(axis=1))
    starts = np.flatnonzero(np.diff(best, prepend=-1) != 0)
    ends = np.append(starts[1:], len(best))
    return [Span(int(best[s]), int(s), int(e), float(probs[s:e].mean())) for s, e in zip(starts, ends)
            if best[s] != BLANK_ID]


class OnnxTranscriber:
    """An exported model transcribing files: length-sorted batches, greedy decoding, word times."""

    def __init__(self, path: str | Path, threads: int = 0, max_frames: int = MAX_BATCH_FRAMES):
        self.model = OnnxModel(path, threads)
        self.max_frames = max_frames

    def transcribe(self, inputs: Sequence[Input | str | Path]) -> Iterator[tuple[int, Transcript]]:
        """(index, transcript) per input (audio files, or :class:`Input` s) as batches finish; an
        unreadable file gets a transcript whose ``error`` says why.

        Raises:
            AudioError: a file that is missing or whose header cannot be read.
        """
        inputs = [i if isinstance(i, Input) else Input(Path(i), audio_info(i)[1]) for i in inputs]
        order = sorted(range(len(inputs)), key=lambda i: inputs[i].duration)
        frames_per_second = 1000 / self.model.feature_config["hop_ms"]
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) + 1) * inputs[i].duration * frames_per_second > self.max_frames:
                yield from self._batch([(j, inputs[j]) for j in batch])
                batch = []
            batch.append(i)
        if batch:
            yield from self._batch([(j, inputs[j]) for j in batch])

    def _batch(self, items: list[tuple[int, Input]]) -> Iterator[tuple[int, Transcript]]:
        features, kept = [], []
        for index, item in items:
            try:
                features.append(self.model.features(self._samples(item.audio_filepath)))
                kept.append((index, item))
            except AudioError as exc:
                yield index, Transcript(str(item.audio_filepath), "", item.duration, 0.0, error=str(exc))
        if not features:
            return
        lengths = np.array([f.shape[0] for f in features])
        padded = np.zeros((len(features), lengths.max(), features[0].shape[1]), np.float32)
        for row, f in enumerate(features):
            padded[row, : len(f)] = f
        log_probs, out_lengths = self.model(padded, lengths)
        for row, (index, item) in enumerate(kept):
            yield index, self._transcript(log_probs[row, : out_lengths[row]], item)

    def _samples(self, path: Path) -> np.ndarray:
        return read_audio_at(path, self.model.sample_rate)

    def _transcript(self, log_probs: np.ndarray, item: Input) -> Transcript:
        tokenizer, seconds = self.model.tokenizer, self.model.seconds_per_frame
        spans = greedy_spans(log_probs)
        words = []
        for group in word_groups(spans, tokenizer):
            text = tokenizer.decode([s.token for s in group]).strip()
            frames = sum(s.end - s.start for s in group)
            confidence = sum(s.score * (s.end - s.start) for s in group) / max(frames, 1)
            if text:
                end = min(round(group[-1].end * seconds, 3), item.duration)
                words.append(WordTiming(text, min(round(group[0].start * seconds, 3), end), end, confidence))
        text = tokenizer.decode([s.token for s in spans]).strip()
        return Transcript(str(item.audio_filepath), text, item.duration, float(log_probs.max(axis=1).sum()),
                          words=tuple(words))


def collect_files(paths: Sequence[str]) -> tuple[list[Input], list[str]]:
    """Audio files and folders of them (searched recursively) as inputs, and why each file whose
    header cannot be read was left out."""
    inputs, failed = [], []
    for path in map(Path, paths):
        for file in audio_files(path) if path.is_dir() else [path]:
            try:
                inputs.append(Input(file, audio_info(file)[1]))
            except AudioError as exc:
                failed.append(str(exc))
    return inputs, failed


FULL_COMMANDS = ("train", "stream", "evaluate", "export", "prepare", "lm")


def main(argv: list[str] | None = None) -> int:
    """``asr transcribe MODEL.onnx AUDIO...`` without PyTorch; the other commands say what to install."""
    from asr.outputs import OutputFormat, TranscriptWriter, report_incomplete, warn_skipped

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="asr", description="Transcribe audio files with a model written by "
                                     "'asr export' (this install has no PyTorch: the other commands need "
                                     "pip install 'asr[torch]').")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("transcribe", help="transcribe audio files with an exported model")
    p.add_argument("model", help="model.onnx written by 'asr export'")
    p.add_argument("audio", nargs="+", help="audio files or folders of audio files")
    p.add_argument("--format", choices=[f.value for f in OutputFormat], default="txt")
    p.add_argument("--output-dir", help="write one <name>.<format> file per input here instead of printing")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: one per core)")
    if argv and argv[0] in FULL_COMMANDS:
        print(f"asr: error: 'asr {argv[0]}' needs PyTorch, which this install does not have "
              "(pip install 'asr[torch]'); here asr transcribes with exported models: "
              "asr transcribe MODEL.onnx AUDIO...", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        if not is_onnx(args.model):
            raise AsrError(f"{args.model}: a PyTorch checkpoint needs pip install 'asr[torch]'; "
                           "'asr export' writes a model.onnx that runs here")
        transcriber = OnnxTranscriber(args.model, args.threads)
        inputs, failed = collect_files(args.audio)
        if not inputs:
            raise AsrError(failed[0] if len(failed) == 1 else "no audio to transcribe in " + " ".join(args.audio))
        writer = TranscriptWriter(inputs, OutputFormat(args.format), args.output_dir)
        for index, transcript in transcriber.transcribe(inputs):
            if transcript.error is None:
                writer.finished(index, transcript)
            elif len(inputs) + len(failed) == 1:
                raise AsrError(transcript.error)
            else:
                failed.append(transcript.error)
        writer.close()
    except AsrError as exc:
        print(f"asr: error: {exc}", file=sys.stderr)
        return 2
    for reason in failed:  # as the full toolkit: the others are transcribed, each failure named
        warn_skipped(reason)
    if failed:
        report_incomplete(len(writer.done), len(writer.done) + len(failed), len(failed))
    return 1 if failed else 0
