#!/usr/bin/env bash
# CMU AN4 from a local copy: the CMU release (sphere or raw) or deepspeech.pytorch's wav + txt layout.
#   bash recipes/an4/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests (data/), 1 tokenizer + model (exp/model.pt), 2 trigram LM tuned on dev
# (exp/lm.arpa), 3 decode + score test greedy and with beam + LM (exp/test[.lm].wer, .errors.jsonl).
# Environment: AN4_DIR (the folder holding an4/ or train/ val/ test/, default data/an4-download);
# AN4_DOWNLOAD=1 downloads an4_sphere.tar.gz from CMU into AN4_DIR when it is missing.
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
source ../pipeline.sh
AN4_DIR="${AN4_DIR:-data/an4-download}"
config=an4 data=data train_set=train dev_set=dev test_sets=(test)

prepare() {
  asr prepare an4 "$data" --data-dir "$AN4_DIR" ${AN4_DOWNLOAD:+--download}
}

run_stage 0 data prepare
run_pipeline
