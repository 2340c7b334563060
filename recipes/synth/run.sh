#!/usr/bin/env bash
# The embedded default recipe: multi-voice English speech from espeak-ng, no download.
#   bash recipes/synth/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 generate the corpus (data/), 1 train (exp/model.pt), 2 score dev and test
# (exp/<set>.wer, exp/<set>.errors.jsonl), 3 transcribe an example file.
# Environment: SYNTH_SIZE (utterances to generate, default 3000).
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh

generate() {
  asr prepare synth data --size "${SYNTH_SIZE:-3000}"
}

train() {
  asr train --config-name synth data.train_manifest=data/train.jsonl data.dev_manifest=data/dev.jsonl \
    trainer.output_dir=exp "${overrides[@]}"
}

score() {
  for set in dev test; do
    asr evaluate exp/model.pt "data/$set.jsonl" --report "exp/$set.errors.jsonl" | tee "exp/$set.wer"
  done
}

example() {
  echo "example: data/wav/test-00000.wav, reference: $(head -n 1 data/test.jsonl)"
  asr transcribe exp/model.pt data/wav/test-00000.wav --format json
}

run_stage 0 data generate
run_stage 1 train train
run_stage 2 score score
run_stage 3 example example
echo "held-out-voice test set: $(tail -n 1 exp/test.wer 2>/dev/null || echo 'not scored yet')"
