#!/usr/bin/env bash
# Mozilla Common Voice, one language, from a local copy (Common Voice needs an account to download).
#   bash recipes/commonvoice/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests with per-language normalized sentences (data/), 1 tokenizer + model
# (exp/model.pt), 2 trigram LM tuned on dev (exp/lm.arpa), 3 decode + score test greedy and with
# beam + LM. Environment: CV_DIR (the language folder holding clips/ and train/dev/test.tsv;
# required), CV_LANGUAGE (default: the tsv's locale column); LM_TEXT (see pipeline.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
source ../pipeline.sh
: "${CV_DIR:?set CV_DIR to a Common Voice language folder (holding clips/ and train.tsv)}"
config=commonvoice data=data train_set=train dev_set=dev test_sets=(test)

prepare() {
  asr prepare commonvoice "$data" --data-dir "$CV_DIR" ${CV_LANGUAGE:+--language "$CV_LANGUAGE"}
}

run_stage 0 data prepare
run_pipeline
