#!/usr/bin/env bash
# Every GPU figure of docs/PERFORMANCE.md in one run, on a CUDA machine without network access
# whose Python already has torch, torchaudio, sentencepiece, tensorboard, tqdm and pytest (the
# device machines some sessions are lent). Two steps:
#
#   here:  bash tools/gpu_check.sh prepare [SYNTH_DATA] [MODEL]
#          stages .gpu_kit/ (ignored by git, ~40 MB): wheels of the pure dependencies the GPU
#          machine lacks (soundfile, hydra-core, omegaconf, ...; for its Python 3.12), 8 yes/no
#          recordings for tests/test_cuda.py, 600 training and 200 test utterances of the synth
#          corpus as FLAC with manifests, and a trained synth model for bench_infer.
#          SYNTH_DATA defaults to recipes/synth/data, MODEL to recipes/synth/exp/model.pt.
#   there: bash tools/gpu_check.sh run OUT_DIR      (with .gpu_kit carried along)
#          the CUDA tests, bench_train (default model fp32 against the reference, bf16; 5 x 1024
#          bf16 with nvidia-smi dmon beside it), three epochs of `asr train` on the GPU (data-wait
#          share), bench_infer on the GPU; each step's log in OUT_DIR, a summary in OUT_DIR/summary.txt.
#          Each step has its own time limit (520 s in all), so one that hangs cannot take the whole run.
set -uo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$CALLER/$1" ;; esac; }  # paths given by the caller
KIT=.gpu_kit
PY=python3 && [ -x .venv/bin/python ] && PY=.venv/bin/python  # here: the project's environment
BINARY_WHEELS="soundfile cffi"  # built for the GPU machine's platform and Python (3.12)
PURE_WHEELS="pycparser hydra-core omegaconf antlr4-python3-runtime"  # any Python (antlr4 4.9 is an sdist: built here)

prepare() {
  local synth=recipes/synth/data model=recipes/synth/exp/model.pt yesno="${ASR_SHARED_DATA:-../shared/data}/yesno"
  [ -n "${1:-}" ] && synth=$(absolute "$1")
  [ -n "${2:-}" ] && model=$(absolute "$2")
  [ "$(ls "$yesno"/*.wav 2>/dev/null | wc -l)" -ge 8 ] || { echo "no yes/no recordings at $yesno (set ASR_SHARED_DATA)" >&2; exit 1; }
  [ -f "$synth/train.jsonl" ] || { echo "no synth corpus at $synth (bash recipes/synth/run.sh --stop-stage 0)" >&2; exit 1; }
  [ -f "$model" ] || { echo "no trained model at $model" >&2; exit 1; }
  rm -rf "$KIT" && mkdir -p "$KIT/whl"
  pin() {  # NAME==VERSION as installed here
    local name version
    for name in "$@"; do
      version=$($PY -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
      [ -n "$version" ] || { echo "$name is not installed here (bash tools/setup.sh)" >&2; return 1; }
      echo "$name==$version"
    done
  }
  pin $BINARY_WHEELS $PURE_WHEELS >/dev/null || exit 1
  # shellcheck disable=SC2046  # one pin per word
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/whl" $(pin $BINARY_WHEELS) || exit 1
  # shellcheck disable=SC2046
  $PY -m pip wheel -q --no-deps -w "$KIT/whl" $(pin $PURE_WHEELS) || exit 1
  cp "$model" "$KIT/model.pt"
  $PY - "$synth" "$KIT" "$yesno" <<'EOF' || exit 1
import json, shutil, sys
from pathlib import Path
import soundfile as sf
synth, kit, yesno = (Path(a) for a in sys.argv[1:4])
for name, count in (("train", 600), ("test", 200)):
    lines = (synth / f"{name}.jsonl").read_text().splitlines()[:count]
    (kit / "synth" / "flac").mkdir(parents=True, exist_ok=True)
    out = []
    for line in lines:
        item = json.loads(line)
        audio, rate = sf.read(synth / item["audio_filepath"], dtype="int16")
        target = Path("flac") / (Path(item["audio_filepath"]).stem + ".flac")
        sf.write(kit / "synth" / target, audio, rate)
        out.append(json.dumps({**item, "audio_filepath": str(target)}))
    (kit / "synth" / f"{name}.jsonl").write_text("\n".join(out) + "\n")
(kit / "data" / "yesno").mkdir(parents=True)
for wav in sorted(yesno.glob("*.wav"))[:8]:
    shutil.copy(wav, kit / "data" / "yesno")
EOF
  du -sh "$KIT"
  echo "then, on the GPU machine: bash tools/gpu_check.sh run \$OUT   (carry: $KIT)"
}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, note the outcome
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "$(date +%T) $name" >>"$OUT/timeline.txt"
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

run() {
  OUT=$(absolute "${1:?usage: gpu_check.sh run OUT_DIR}")
  mkdir -p "$OUT"
  python3 -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
    || { echo "the staged binary wheels (cffi) are for Python 3.12: change --python-version in prepare" >&2; exit 1; }
  python3 -c 'import torch; assert torch.cuda.is_available()' || { echo "torch sees no CUDA GPU here" >&2; exit 1; }
  rm -rf /tmp/site /tmp/gpu_exp  # a rerun on the same machine starts clean
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$KIT"/whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 ASR_SHARED_DATA="$PWD/$KIT/data"
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" >"$OUT/summary.txt" 2>&1
  local train="$KIT/synth/train.jsonl" test="$KIT/synth/test.jsonl"
  step tests 170 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_train_step.py tests/test_beam.py
  step bench_default_fp32 65 python3 tools/bench_train.py "$train" --device cuda --rounds 5
  step bench_default_bf16 35 python3 tools/bench_train.py "$train" --device cuda --precision bf16 --no-reference --rounds 5
  # GPU utilization each second (the first seconds are bench_train's feature extraction, on the CPU)
  nvidia-smi dmon -s u -d 1 -o T >"$OUT/dmon_5x1024.txt" 2>&1 &
  local dmon=$!
  trap 'kill $dmon 2>/dev/null' EXIT
  step bench_5x1024_bf16 80 python3 tools/bench_train.py "$train" --device cuda --precision bf16 --no-reference \
    --rounds 5 model=ds2_5x1024 model.hidden_size=1024
  kill "$dmon" 2>/dev/null
  step train_gpu 80 python3 -m asr train --config-name synth "data.train_manifest=$train" "data.dev_manifest=$test" \
    trainer.device=cuda trainer.precision=bf16 trainer.epochs=3 data.num_workers=8 trainer.output_dir=/tmp/gpu_exp
  cp /tmp/gpu_exp/train.log "$OUT/train_gpu_train.log" 2>/dev/null
  step bench_infer 90 python3 tools/bench_infer.py "$KIT/model.pt" "$test" --device cuda --rounds 2
  for log in "$OUT"/*.log; do echo "== $log"; tail -n 12 "$log"; done >>"$OUT/summary.txt"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash tools/gpu_check.sh prepare [SYNTH_DATA] [MODEL] | run OUT_DIR" >&2; exit 2 ;;
esac
