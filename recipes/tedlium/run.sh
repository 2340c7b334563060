#!/usr/bin/env bash
# TED-LIUM release 3 from a local copy (or downloaded, SHA-256 checked, 51 GB).
#   bash recipes/tedlium/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests of stm segments (data/; offsets into each talk's sph), 1 tokenizer + model
# (exp/model.pt), 2 trigram LM tuned on dev (exp/lm.arpa), 3 decode + score dev and test greedy and
# with beam + LM. Environment: TEDLIUM_DIR (the TEDLIUM_release-3 folder or its parent, default
# data/download); TEDLIUM_DOWNLOAD=1 downloads it when missing; LM_TEXT (see pipeline.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
source ../pipeline.sh
TEDLIUM_DIR="${TEDLIUM_DIR:-data/download}"
config=tedlium data=data train_set=train dev_set=dev test_sets=(dev test)

prepare() {
  asr prepare tedlium "$data" --data-dir "$TEDLIUM_DIR" ${TEDLIUM_DOWNLOAD:+--download}
}

run_stage 0 data prepare
run_pipeline
