"""Streaming benchmark: per-word emission latency, real-time factor, CPU use, and streaming WER
against offline WER of the same model on the same files.

    python tools/bench_stream.py MODEL MANIFEST [--limit N] [--realtime N] [--chunk-ms 240]
        [--right-context-ms 120]

WER: every utterance (first --limit) goes through `asr stream`'s StreamingRecognizer as fast as
it runs, once with each final pass ("full": the whole bidirectional model over each finished
segment; "chunked": the chunked outputs themselves), and offline through `asr transcribe`'s
Recognizer. RTF: streaming seconds / audio seconds of the "full" run.

Latency: the first --realtime utterances are fed at real-time pace in 20 ms blocks. A word's
latency is the wall time from the delivery of the block holding its last sample (its end from
the offline word timestamps) to the first event whose text has that word at that position.
CPU use is process CPU time / wall time during those real-time runs (100 % = one core).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.data import read_manifest  # noqa: E402
from asr.scoring import ErrorRates  # noqa: E402
from asr.sources import BLOCK_MS, file_blocks  # noqa: E402
from asr.stream import StreamingRecognizer, StreamOptions, model_stream_options  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402


def streaming_text(recognizer: Recognizer, options: StreamOptions, path: str) -> str:
    streamer = StreamingRecognizer(recognizer, options)
    finals = []
    for block in file_blocks(path, recognizer.sample_rate, realtime=False):
        finals += [e.text for e in streamer.accept(block) if e.type == "final"]
    finals += [e.text for e in streamer.finish() if e.type == "final"]
    return " ".join(t for t in finals if t)


def word_latencies(recognizer: Recognizer, options: StreamOptions, path: str, words) -> tuple[list[float], int]:
    """Feed ``path`` at real-time pace; latency (s) of each offline word found at its position."""
    streamer = StreamingRecognizer(recognizer, options)
    rate = recognizer.sample_rate
    delivered, events, samples = [], [], 0  # (samples so far, wall time) per block
    for block in file_blocks(path, rate, realtime=True):
        samples += len(block)
        delivered.append((samples, time.monotonic()))
        events += [(time.monotonic(), e.text.split()) for e in streamer.accept(block)]
    events += [(time.monotonic(), e.text.split()) for e in streamer.finish()]
    latencies, missed = [], 0
    for i, word in enumerate(words):
        last_sample = min(int(word.end * rate), samples - 1)
        given = next(t for n, t in delivered if n > last_sample)
        seen = next((t for t, said in events if len(said) > i and said[i] == word.word), None)
        if seen is None:
            missed += 1
        else:
            latencies.append(max(0.0, seen - given))
    return latencies, missed


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--limit", type=int, default=0, help="utterances for WER (0: all)")
    parser.add_argument("--realtime", type=int, default=30, help="utterances fed at real-time pace for latency")
    parser.add_argument("--chunk-ms", type=float, help="default: as `asr stream` (the model's training chunks)")
    parser.add_argument("--right-context-ms", type=float)
    args = parser.parse_args()

    recognizer = Recognizer.load(args.model, "cpu")
    utts = read_manifest(args.manifest)
    utts = utts[: args.limit] if args.limit else utts
    options = model_stream_options(recognizer, chunk_ms=args.chunk_ms, right_context_ms=args.right_context_ms)
    references = [recognizer.tokenizer.normalize(u.text) for u in utts]
    offline = recognizer.transcribe(utts, timestamps=True)
    audio_seconds = sum(u.duration for u in utts)

    rows = [("offline (asr transcribe)", [t.text for t in offline], None)]
    for final_pass in ("full", "chunked"):
        started = time.perf_counter()
        texts = [streaming_text(recognizer, dataclasses.replace(options, final_pass=final_pass), str(u.audio_filepath))
                 for u in utts]
        rows.append((f"streaming, final pass {final_pass}", texts, (time.perf_counter() - started) / audio_seconds))

    latencies, missed, wall, cpu = [], 0, 0.0, 0.0
    for utt, transcript in zip(utts[: args.realtime], offline):
        wall_start, cpu_start = time.perf_counter(), cpu_seconds()
        found, lost = word_latencies(recognizer, options, str(utt.audio_filepath), transcript.words)
        wall, cpu = wall + time.perf_counter() - wall_start, cpu + cpu_seconds() - cpu_start
        latencies += found
        missed += lost

    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"{len(utts)} utterances, {audio_seconds:.1f} s; chunk {options.chunk_ms:g} ms, right context "
          f"{options.right_context_ms:g} ms, endpoint {options.endpoint_silence_ms:g} ms, {BLOCK_MS} ms blocks")
    offline_wer = None
    print(f"{'':<34} {'WER':>6} {'CER':>6} {'x offline':>10} {'RTF':>7}")
    for name, texts, rtf in rows:
        rates = ErrorRates()
        for i, (ref, hyp) in enumerate(zip(references, texts)):
            rates.add(str(i), ref, hyp)
        offline_wer = rates.wer if offline_wer is None else offline_wer
        ratio = rates.wer / offline_wer if offline_wer else float("nan")
        print(f"{name:<34} {rates.wer:>6.2f} {rates.cer:>6.2f} {ratio:>10.2f} {'' if rtf is None else f'{rtf:.4f}':>7}")
    if latencies:
        p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
        print(f"word emission latency over {len(latencies)} words of {min(args.realtime, len(utts))} utterances fed "
              f"at real-time pace: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({missed} words never shown at their "
              f"position); CPU {100 * cpu / wall:.0f} % of one core")


if __name__ == "__main__":
    main()
