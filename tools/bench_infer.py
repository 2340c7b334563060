"""Greedy transcription speed and memory: real-time factor at batch 1 and batched, on a manifest.

    python tools/bench_infer.py MODEL MANIFEST [--limit N] [--device cpu] [--threads N]

RTF = processing seconds / audio seconds, measured end to end from file to text (audio
decoding, features, model, greedy decoding). Lower is faster; 1/200 means 200x real time.
Each mode runs in a fresh process, so its peak memory is its own: peak resident memory of the
process (the Python interpreter, torch and the loaded model included; "loaded" gives that
baseline) and, on a GPU, the peak of tensors allocated on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.data import read_manifest  # noqa: E402
from asr.transcribe import Recognizer  # noqa: E402


def run_mode(mode: str, model: str, paths: list[str], device: str, threads: int) -> tuple[float, float, float]:
    """(seconds, peak RSS MiB, peak GPU MiB) of one mode in this (fresh) process."""
    if threads:
        torch.set_num_threads(threads)
    recognizer = Recognizer.load(model, device=device)
    if mode != "loaded":
        recognizer.transcribe_files(paths[:4])  # warm-up: kernels, allocator, first-touch memory
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if mode == "batch 1":
        for path in paths:
            recognizer.transcribe_files([path])
    elif mode == "batched":
        recognizer.transcribe_files(paths)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--limit", type=int, default=200, help="utterances to use")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    utts = read_manifest(args.manifest)[: args.limit]
    paths = [str(u.audio_filepath) for u in utts]
    audio_seconds = sum(u.duration for u in utts)
    rows = []
    for mode in ("loaded", "batch 1", "batched"):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append((mode, *pool.submit(run_mode, mode, args.model, paths, args.device, args.threads).result()))

    threads = args.threads or torch.get_num_threads()
    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, {threads} threads), "
          f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    params = sum(p.numel() for p in Recognizer.load(args.model, device="cpu").model.parameters())
    print(f"model: {params:,} parameters; {len(utts)} utterances, {audio_seconds:.1f} s of audio")
    print(f"{'mode':<10} {'seconds':>8} {'RTF':>10} {'x real time':>12} {'peak RSS MiB':>13} {'peak GPU MiB':>13}")
    for mode, seconds, rss, gpu in rows:
        if mode == "loaded":
            print(f"{mode:<10} {'':>8} {'':>10} {'':>12} {rss:>13.0f} {gpu:>13.0f}")
            continue
        print(f"{mode:<10} {seconds:>8.2f} {seconds / audio_seconds:>10.5f} {audio_seconds / seconds:>12.1f} "
              f"{rss:>13.0f} {gpu:>13.0f}")


if __name__ == "__main__":
    main()
