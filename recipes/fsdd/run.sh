#!/usr/bin/env bash
# Free Spoken Digit Dataset: isolated digits and connected digit strings (3-7 digits).
#   bash recipes/fsdd/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests + connected strings (data/), 1 train (exp/model.pt), 2 build a trigram LM
# from the training text and tune its weights on dev (exp/lm.arpa), 3 score isolated and connected
# test sets greedy (exp/<set>.wer) and with beam search + LM (exp/<set>.lm.wer).
# Environment: FSDD_DIR (local copy holding recordings/, default ../../../shared/data/fsdd),
# FSDD_SPLIT=speaker for the speaker-held-out split (train on four speakers, test on the fifth);
# FSDD_CONFIG (the conf/ file to train with, default fsdd; fsdd_stream trains chunk-aware for
# `asr stream`, use a fresh exp/).
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
FSDD_DIR="${FSDD_DIR:-../../../shared/data/fsdd}"
corpus=fsdd
[ "${FSDD_SPLIT:-take}" = speaker ] && corpus=fsdd-speaker

prepare() {
  asr prepare "$corpus" data --data-dir "$FSDD_DIR"
}

train() {
  asr train --config-name "${FSDD_CONFIG:-fsdd}" data.train_manifest=data/train.jsonl data.dev_manifest=data/dev.jsonl \
    trainer.output_dir=exp "${overrides[@]}"
}

language_model() {
  asr lm build data/train.jsonl --order 3 --model exp/model.pt -o exp/lm.arpa
  asr lm tune exp/model.pt data/dev.jsonl --lm exp/lm.arpa
}

score() {
  for set in isolated_test connected_test; do
    asr evaluate exp/model.pt "data/$set.jsonl" --report "exp/$set.errors.jsonl" | tee "exp/$set.wer"
    asr evaluate exp/model.pt "data/$set.jsonl" --lm exp/lm.arpa --report "exp/$set.lm.errors.jsonl" \
      | tee "exp/$set.lm.wer"
  done
}

run_stage 0 data prepare
run_stage 1 train train
run_stage 2 lm language_model
run_stage 3 score score
for set in isolated_test connected_test; do
  echo "$set greedy: $(tail -n 1 "exp/$set.wer" 2>/dev/null || echo 'not scored yet')"
  echo "$set beam + LM: $(tail -n 1 "exp/$set.lm.wer" 2>/dev/null || echo 'not scored yet')"
done
