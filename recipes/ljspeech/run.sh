#!/usr/bin/env bash
# LJSpeech 1.1 from a local copy (or downloaded, SHA-256 checked, 2.6 GB): one reader, split by chapter.
#   bash recipes/ljspeech/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests (data/), 1 tokenizer + model (exp/model.pt), 2 trigram LM tuned on dev
# (exp/lm.arpa), 3 decode + score test greedy and with beam + LM.
# Environment: LJSPEECH_DIR (the LJSpeech-1.1 folder or its parent, default data/download);
# LJSPEECH_DOWNLOAD=1 downloads it when missing; LM_TEXT (see pipeline.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
source ../pipeline.sh
LJSPEECH_DIR="${LJSPEECH_DIR:-data/download}"
config=ljspeech data=data train_set=train dev_set=dev test_sets=(test)

prepare() {
  asr prepare ljspeech "$data" --data-dir "$LJSPEECH_DIR" ${LJSPEECH_DOWNLOAD:+--download}
}

run_stage 0 data prepare
run_pipeline
