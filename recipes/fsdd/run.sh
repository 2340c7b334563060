#!/usr/bin/env bash
# Free Spoken Digit Dataset: isolated digits and connected digit strings (3-7 digits).
#   bash recipes/fsdd/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests + connected strings (data/), 1 tokenizer + model (exp/model.pt), 2 trigram LM
# from the training text, weights tuned on dev (exp/lm.arpa), 3 score isolated and connected test
# sets greedy (exp/<set>.wer) and with beam search + LM (exp/<set>.lm.wer); fine-tuned (FSDD_INIT), both
# again with each speaker's utterances normalized by the statistics of all of them (exp/<set>.spk[.lm].wer)
# and with those of the utterances nearest in voice, no labels needed (exp/<set>.near[.lm].wer), each
# of these two also with two-pass speaker adaptation and beam + LM (exp/<set>.{spk,near}.adapt.lm.wer).
# Environment: FSDD_DIR (local copy holding recordings/, default ../../../shared/data/fsdd),
# FSDD_SPLIT=speaker for the speaker-held-out split (train on four speakers, test on the fifth;
# kept apart in data-speaker/ and exp-speaker/); FSDD_SIZE (connected training strings, default
# 2000; dev and test scale with it); FSDD_CONFIG (the conf/ file to train with, default fsdd;
# fsdd_stream trains chunk-aware for `asr stream`, use a fresh exp/); FSDD_INIT=MODEL fine-tunes MODEL
# (e.g. ../synth/exp/model.pt, the default job's model of many synthetic voices) instead of training
# from scratch (config fsdd_finetune, in exp-ft/ or exp-speaker-ft/).
set -euo pipefail
cd "$(dirname "$0")"
FSDD_DIR="${FSDD_DIR:-../../../shared/data/fsdd}"
corpus=fsdd data=data exp=exp
if [ "${FSDD_SPLIT:-take}" = speaker ]; then
  corpus=fsdd-speaker data=data-speaker exp=exp-speaker
fi
config="${FSDD_CONFIG:-fsdd}"
if [ -n "${FSDD_INIT:-}" ]; then
  [ -f "$FSDD_INIT" ] || { echo "run.sh: FSDD_INIT=$FSDD_INIT: model not found" >&2; exit 1; }
  init="$(realpath "$FSDD_INIT")" exp=$exp-ft config="${FSDD_CONFIG:-fsdd_finetune}"
fi
source ../stages.sh
source ../pipeline.sh
train_set=train dev_set=dev test_sets=(isolated_test connected_test)
if [ -n "${init:-}" ]; then
  # the synthetic model's per-utterance normalization comes with it, so its speakers can share statistics
  overrides+=("trainer.init_from=$init") speaker_sets=(isolated_test connected_test)
fi

prepare() {
  asr prepare "$corpus" "$data" --data-dir "$FSDD_DIR" ${FSDD_SIZE:+--size "$FSDD_SIZE"}
}

run_stage 0 data prepare
run_pipeline
