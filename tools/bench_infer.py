"""Greedy transcription speed and memory: real-time factor at batch 1 and batched, on a manifest.

    python tools/bench_infer.py MODEL MANIFEST [--limit N] [--rounds 3] [--device cpu] [--threads N]

RTF = processing seconds / audio seconds, measured end to end from file to text (audio
decoding, features, model, greedy decoding). Lower is faster; 1/200 means 200x real time.
Each mode runs in a fresh process, so its peak memory is its own: peak resident memory of the
process (the Python interpreter, torch and the loaded model included; "loaded" gives that
baseline) and, on a GPU, the peak of tensors allocated on it. Shared machines drift by tens of
percent from minute to minute, so the modes alternate over ``--rounds`` rounds; the table gives
the median round and the range of the RTF.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import resource
import sys
import time
import subprocess
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
        recognizer.transcribe(paths[:4], timestamps=False)  # warm-up: kernels, allocator, first-touch memory
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if mode == "batch 1":
        for path in paths:
            recognizer.transcribe([path], timestamps=False)
    elif mode == "batched":
        recognizer.transcribe(paths, timestamps=False)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--limit", type=int, default=200, help="utterances to use")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two modes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one mode, in a fresh process
    args = parser.parse_args()
    utts = read_manifest(args.manifest)[: args.limit]
    paths = [str(u.audio_filepath) for u in utts]
    if args.child:
        print(json.dumps(run_mode(args.child, args.model, paths, args.device, args.threads)))
        return
    audio_seconds = sum(u.duration for u in utts)
    runs: dict[str, list[tuple[float, float, float]]] = {"loaded": [], "batch 1": [], "batched": []}
    for round_ in range(args.rounds):
        for mode in runs:
            if mode == "loaded" and round_:
                continue
            child = [sys.executable, __file__, args.model, args.manifest, "--limit", str(args.limit), "--device",
                     args.device, "--threads", str(args.threads), "--child", mode]
            runs[mode].append(tuple(json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)))

    threads = args.threads or torch.get_num_threads()
    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, {threads} threads), "
          f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    params = Recognizer.load(args.model, device="cpu").model.num_parameters()
    print(f"model: {params:,} parameters; {len(utts)} utterances, {audio_seconds:.1f} s of audio")
    print(f"{'mode':<10} {'seconds':>8} {'RTF':>9} {'RTF range':>17} {'x real time':>12} {'peak RSS MiB':>13} "
          f"{'peak GPU MiB':>13}")
    for mode, results in runs.items():
        seconds = statistics.median(r[0] for r in results)
        rss, gpu = max(r[1] for r in results), max(r[2] for r in results)
        if mode == "loaded":
            print(f"{mode:<10} {'':>8} {'':>9} {'':>17} {'':>12} {rss:>13.0f} {gpu:>13.0f}")
            continue
        low, high = min(r[0] for r in results) / audio_seconds, max(r[0] for r in results) / audio_seconds
        print(f"{mode:<10} {seconds:>8.2f} {seconds / audio_seconds:>9.5f} {f'{low:.5f}-{high:.5f}':>17} "
              f"{audio_seconds / seconds:>12.1f} {rss:>13.0f} {gpu:>13.0f}")


if __name__ == "__main__":
    main()
