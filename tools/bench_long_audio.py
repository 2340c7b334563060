"""Long-file transcription: peak memory against file length, and speed.

    python tools/bench_long_audio.py MODEL MANIFEST [--minutes 5 30]

Builds one long WAV per length by concatenating the manifest's audio (cycled) with 0.3 s
pauses, then transcribes each with ``asr transcribe`` in a fresh process and reports that
process's own peak resident memory (its ru_maxrss), wall time and real-time factor. Peak
memory should not grow with the length: windows are read from the file one batch at a time.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.audio import load_audio  # noqa: E402
from asr.data import read_manifest  # noqa: E402


# runs `asr transcribe MODEL FILE` in this process, then prints its own peak RSS (KiB) to stderr
CHILD = (
    "import resource, sys; from asr.cli import main; "
    "rc = main(['transcribe', sys.argv[1], sys.argv[2], '--device', 'cpu']); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def build_long_file(manifest: str, minutes: float, path: Path, rate: int = 16000) -> float:
    """Write ``minutes`` of speech to ``path`` block by block (never all in memory)."""
    pause = np.zeros(int(0.3 * rate), dtype=np.float32)
    target = int(minutes * 60 * rate)
    written = 0
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for utt in itertools.cycle(read_manifest(manifest)):
            if written >= target:
                break
            samples = load_audio(utt.audio_filepath, rate).numpy()
            block = np.concatenate([samples, pause])[: target - written]
            out.write(block)
            written += len(block)
    return written / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 30.0])
    args = parser.parse_args()
    print(f"command: {' '.join(sys.argv)}")
    print(f"{'minutes':>8} {'peak RSS MiB':>13} {'seconds':>8} {'RTF':>8} {'words':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            path = Path(tmp) / f"long-{minutes:g}min.wav"
            seconds = build_long_file(args.manifest, minutes, path)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, args.model, str(path)],
                                  capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - start
            peak_kib = int(done.stderr.strip().splitlines()[-1])  # the child's own ru_maxrss
            print(f"{minutes:>8g} {peak_kib / 1024:>13.0f} {elapsed:>8.1f} {elapsed / seconds:>8.4f} "
                  f"{len(done.stdout.split()):>7}")


if __name__ == "__main__":
    main()
