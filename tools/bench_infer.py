"""Greedy transcription speed: real-time factor at batch 1 and batched, on a manifest.

    python tools/bench_infer.py MODEL MANIFEST [--limit N] [--device cpu] [--threads N]

RTF = processing seconds / audio seconds, measured end to end from file to text (audio
decoding, features, model, greedy decoding). Lower is faster; 1/200 means 200x real time.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.data import read_manifest  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--limit", type=int, default=200, help="utterances to use")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recognizer = Recognizer.load(args.model, device=args.device)
    utts = read_manifest(args.manifest)[: args.limit]
    paths = [u.audio_filepath for u in utts]
    audio_seconds = sum(u.duration for u in utts)
    recognizer.transcribe_files(paths[:4])  # warm-up

    rows = []
    start = time.perf_counter()
    for path in paths:
        recognizer.transcribe_files([path])
    rows.append(("batch 1", time.perf_counter() - start))
    start = time.perf_counter()
    recognizer.transcribe_files(paths)
    rows.append(("batched", time.perf_counter() - start))

    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    print(f"model: {recognizer.model.num_parameters():,} parameters; {len(utts)} utterances, {audio_seconds:.1f} s of audio")
    print(f"{'mode':<10} {'seconds':>8} {'RTF':>10} {'x real time':>12}")
    for name, seconds in rows:
        print(f"{name:<10} {seconds:>8.2f} {seconds / audio_seconds:>10.5f} {audio_seconds / seconds:>12.1f}")


if __name__ == "__main__":
    main()
