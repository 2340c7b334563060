"""Greedy transcription speed, memory and accuracy per backend: RTF at batch 1 and batched.

    python tools/bench_infer.py MODEL MANIFEST [--backends torch,onnx,onnx-int8,deploy-int8]
                                [--limit N] [--rounds 3] [--device cpu] [--threads N]

Backends: ``torch`` (the checkpoint), ``onnx`` / ``onnx-int8`` (``asr export`` of it, float32 /
int8, run by the toolkit's Recognizer: torch front end, onnxruntime model) and ``deploy-int8``
(the int8 export in the torch-free runtime, :mod:`asr.deploy`, in a process that never imports
torch). RTF = processing seconds / audio seconds, end to end from file to text (audio decoding,
features, model, greedy decoding); 1/300 means 300x real time. Each (backend, mode) runs in a
fresh process, so its peak memory is its own: peak resident memory of the process (interpreter,
libraries and model included; "loaded" gives that baseline). Shared machines drift by tens of
percent from minute to minute, so all runs alternate over ``--rounds`` rounds; the table gives
the median round and the range. WER/CER come from the batched run's transcripts.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("loaded", "batch 1", "batched")


def transcriber(backend: str, model: str, device: str, threads: int):
    """A function: list of audio paths -> their texts, with the backend's model loaded."""
    if backend == "deploy-int8":
        from asr.deploy import OnnxTranscriber

        deploy = OnnxTranscriber(model, threads)
        return lambda paths: [t.text for _, t in sorted(deploy.transcribe(paths), key=lambda item: item[0])]
    import torch

    from asr.transcribe import Recognizer

    if threads:
        torch.set_num_threads(threads)
    recognizer = Recognizer.load(model, device=device)
    return lambda paths: [t.text for t in recognizer.transcribe(paths, timestamps=False)]


def run_mode(backend: str, mode: str, model: str, paths: list[str], device: str, threads: int) -> dict:
    """Seconds, peak RSS MiB and (batched) the texts of one mode in this (fresh) process."""
    transcribe = transcriber(backend, model, device, threads)
    if mode != "loaded":
        transcribe(paths[:4])  # warm-up: kernels, allocator, first-touch memory
    start, texts = time.perf_counter(), []
    if mode == "batch 1":
        for path in paths:
            transcribe([path])
    elif mode == "batched":
        texts = transcribe(paths)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss": peak_rss_mib(), "texts": texts,
            "torch_loaded": sys.modules.get("torch") is not None}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's maxrss, not inherited
    from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_models(model: str, backends: list[str], folder: Path) -> dict[str, str]:
    """The model file each backend runs (exports written into ``folder``)."""
    files = {"torch": model}
    if any(b != "torch" for b in backends):
        from asr.export import export_onnx

        files["onnx"] = str(export_onnx(model, folder / "model.onnx"))
        files["onnx-int8"] = files["deploy-int8"] = str(export_onnx(model, folder / "model.int8.onnx", int8=True))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model.pt (the ONNX backends export it)")
    parser.add_argument("manifest")
    parser.add_argument("--backends", default="torch", help="comma-separated: torch, onnx, onnx-int8, deploy-int8")
    parser.add_argument("--limit", type=int, default=200, help="utterances to use")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of all runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads and the torch-free runtime's "
                        "onnxruntime threads (0: their defaults, one per core)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # backend, mode: one run in a fresh process
    args = parser.parse_args()
    lines = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()][: args.limit]
    base = Path(args.manifest).parent
    paths = [str(Path(u["audio_filepath"]) if Path(u["audio_filepath"]).is_absolute() else base / u["audio_filepath"])
             for u in lines]
    if args.child:
        print(json.dumps(run_mode(*args.child, args.model, paths, args.device, args.threads)))
        return
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as folder:
        files = export_models(args.model, backends, Path(folder))
        runs = {(b, m): [] for b in backends for m in MODES}
        for round_ in range(args.rounds):
            for backend, mode in runs:
                if mode == "loaded" and round_:
                    continue
                child = [sys.executable, __file__, files[backend], args.manifest, "--limit", str(args.limit),
                         "--device", args.device, "--threads", str(args.threads), "--child", backend, mode]
                result = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                runs[backend, mode].append(json.loads(result.splitlines()[-1]))
        sizes = {b: Path(files[b]).stat().st_size / 1e6 for b in backends}
        report(args, lines, runs, sizes)


def report(args: argparse.Namespace, lines: list[dict], runs: dict, sizes: dict) -> None:
    import torch

    from asr.checkpoint import load_checkpoint
    from asr.scoring import score
    from asr.tokenizer import tokenizer_from_dict

    normalize = tokenizer_from_dict(load_checkpoint(args.model)["tokenizer"]).normalize
    refs = [normalize(u["text"]) for u in lines]
    audio_seconds = sum(u["duration"] for u in lines)
    print(f"command: {' '.join(sys.argv)}")
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, threads {args.threads or 'default'}), "
          f"torch {torch.__version__}; {len(lines)} utterances, {audio_seconds:.1f} s of audio")
    print(f"{'backend':<12} {'mode':<8} {'seconds':>8} {'RTF':>9} {'RTF range':>17} {'x real time':>12} "
          f"{'peak RSS MiB':>13} {'file MB':>8} {'WER':>6} {'CER':>6} {'torch':>6}")
    for (backend, mode), results in runs.items():
        rss = max(r["rss"] for r in results)
        loaded = "yes" if any(r["torch_loaded"] for r in results) else "no"
        if mode == "loaded":
            print(f"{backend:<12} {mode:<8} {'':>8} {'':>9} {'':>17} {'':>12} {rss:>13.0f} {sizes[backend]:>8.1f} "
                  f"{'':>6} {'':>6} {loaded:>6}")
            continue
        seconds = statistics.median(r["seconds"] for r in results)
        low, high = (f(r["seconds"] for r in results) / audio_seconds for f in (min, max))
        accuracy = f"{'':>6} {'':>6}"
        if mode == "batched":
            rates = score(refs, results[0]["texts"])
            accuracy = f"{rates.wer:>6.2f} {rates.cer:>6.2f}"
        print(f"{backend:<12} {mode:<8} {seconds:>8.2f} {seconds / audio_seconds:>9.5f} {f'{low:.5f}-{high:.5f}':>17} "
              f"{audio_seconds / seconds:>12.1f} {rss:>13.0f} {sizes[backend]:>8.1f} {accuracy} {loaded:>6}")


if __name__ == "__main__":
    main()
