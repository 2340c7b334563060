"""Evaluating a large manifest: peak memory against its number of lines, and speed.

    python tools/bench_manifest_memory.py MODEL MANIFEST [--lines 300 10000]

Writes manifests of the given lengths by cycling MANIFEST's lines (absolute audio paths), runs
``asr evaluate`` on each in a fresh process and reports that process's own peak resident memory
(ru_maxrss), wall time and real-time factor. Peak memory should stay nearly flat: audio is read
batch by batch and only the per-utterance scores are kept.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asr.data import read_manifest  # noqa: E402

# runs `asr evaluate MODEL MANIFEST` in this process, then prints its own peak RSS (KiB) to stderr
CHILD = (
    "import resource, sys; from asr.cli import main; "
    "rc = main(['evaluate', sys.argv[1], sys.argv[2], '--device', 'cpu']); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--lines", type=int, nargs="+", default=[300, 10000])
    args = parser.parse_args()
    source = read_manifest(args.manifest)
    print(f"{'lines':>7} {'audio h':>8} {'peak RSS MiB':>13} {'wall s':>8} {'RTF':>7}  result")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.lines:
            path = Path(tmp) / f"m{count}.jsonl"
            utts = list(itertools.islice(itertools.cycle(source), count))
            with open(path, "w") as f:
                for utt in utts:
                    f.write(json.dumps(utt.to_json()) + "\n")
            audio = sum(u.duration for u in utts)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, args.model, str(path)], capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            peak_mib = int(done.stderr.strip().splitlines()[-1]) / 1024
            result = done.stdout.strip().splitlines()[-1]
            print(f"{count:>7} {audio / 3600:>8.2f} {peak_mib:>13.0f} {wall:>8.1f} {wall / audio:>7.4f}  {result}")


if __name__ == "__main__":
    main()
