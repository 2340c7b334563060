#!/usr/bin/env bash
# LibriSpeech (or Mini LibriSpeech) from a local copy; DeepSpeech2-sized model for GPUs.
#   bash recipes/librispeech/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests (data/<subset>.jsonl), 1 tokenizer + model (exp/model.pt), 2 trigram LM tuned
# on dev (exp/lm.arpa), 3 decode + score each test subset greedy and with beam + LM.
# Environment: LIBRISPEECH_DIR (the folder holding LibriSpeech/<subset>/, default data/download);
# LIBRISPEECH_DOWNLOAD=1 downloads (SHA-256 checked) the missing subsets from OpenSLR;
# TRAIN_SET (train-clean-100 | train-960 | train-clean-5 ..., default train-clean-100),
# DEV_SET (default dev-clean), TEST_SETS (default "test-clean test-other"); LM_TEXT (see pipeline.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
source ../pipeline.sh
LIBRISPEECH_DIR="${LIBRISPEECH_DIR:-data/download}"
config=librispeech data=data train_set="${TRAIN_SET:-train-clean-100}" dev_set="${DEV_SET:-dev-clean}"
read -r -a test_sets <<< "${TEST_SETS:-test-clean test-other}"

prepare() {
  local subsets
  subsets=$(IFS=,; echo "$train_set,$dev_set,${test_sets[*]}")
  asr prepare librispeech "$data" --data-dir "$LIBRISPEECH_DIR" --subsets "$subsets" ${LIBRISPEECH_DOWNLOAD:+--download}
}

run_stage 0 data prepare
run_pipeline
