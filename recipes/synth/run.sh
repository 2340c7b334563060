#!/usr/bin/env bash
# The embedded default recipe: multi-voice English speech from espeak-ng, no download.
#   bash recipes/synth/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 generate the corpus (data/), 1 train (exp/model.pt), 2 build a trigram LM from the
# training text and tune its weights on dev (exp/lm.arpa, exp/lm.arpa.params.json), 3 score dev
# and test greedy (exp/<set>.wer) and with beam search + LM (exp/<set>.lm.wer), per-utterance
# errors in exp/<set>[.lm].errors.jsonl, 4 transcribe an example file with word timestamps.
# Stage 5 runs only when asked (--stage 5 --stop-stage 5): train a character-RNN LM on the training
# text (exp/charlm.pt), tune its weights on dev, score test with it (exp/test.charlm.wer).
# Stage 3 also scores real people saying digits when the Free Spoken Digit Dataset is beside the
# project (FSDD_DIR, default ../shared/data/fsdd): all its clips, voices the model never heard
# (exp/fsdd_clips[.lm].wer), and again with each speaker's clips normalized by the statistics of all
# of them (exp/fsdd_clips.spk[.lm].wer), and with the clips nearest in voice, no labels needed
# (exp/fsdd_clips.near[.lm].wer), each of these two also with two-pass speaker adaptation
# (exp/fsdd_clips.{spk,near}.adapt.lm.wer); they never enter training.
# Environment: SYNTH_SIZE (utterances to generate, default: asr prepare synth's); SYNTH_CONFIG (the conf/ file to
# train with, default synth; synth_stream trains chunk-aware for `asr stream`, use a fresh exp/).
set -euo pipefail
cd "$(dirname "$0")"
DEFAULT_STOP_STAGE=4
source ../stages.sh
source ../pipeline.sh
config="${SYNTH_CONFIG:-synth}" data=data train_set=train dev_set=dev test_sets=(dev test)
FSDD_DIR="${FSDD_DIR:-../../../shared/data/fsdd}"
fsdd_present=false
if [ -d "$FSDD_DIR/recordings" ]; then fsdd_present=true test_sets+=(fsdd_clips) speaker_sets=(fsdd_clips); fi

generate() {
  asr prepare synth data ${SYNTH_SIZE:+--size "$SYNTH_SIZE"}
  if $fsdd_present; then asr prepare fsdd-clips data --data-dir "$FSDD_DIR"; fi
}

example() {
  echo "example: data/wav/test-00000.wav, reference: $(head -n 1 data/test.jsonl)"
  asr transcribe exp/model.pt data/wav/test-00000.wav --lm exp/lm.arpa --format json
}

charlm() {
  asr lm train data/train.jsonl --model exp/model.pt -o exp/charlm.pt
  asr lm tune exp/model.pt data/dev.jsonl --lm exp/charlm.pt --lm-weights 0.25,0.5,1 --word-scores 0,1
  asr evaluate exp/model.pt data/test.jsonl --skip-bad --lm exp/charlm.pt --report exp/test.charlm.errors.jsonl \
    | tee exp/test.charlm.wer
}

run_stage 0 data generate
run_stage 1 train train_model
run_stage 2 lm language_model
run_stage 3 score score_sets
run_stage 4 example example
run_stage 5 charlm charlm
result_line "held-out-voice test set, greedy" test
result_line "held-out-voice test set, beam + LM" test.lm
if [ -f exp/fsdd_clips.wer ]; then
  result_line "real people saying digits (FSDD, never heard), greedy" fsdd_clips
  result_line "real people saying digits (FSDD, never heard), beam + LM" fsdd_clips.lm
  result_line "the same, each speaker normalized by all their clips, greedy" fsdd_clips.spk
  result_line "the same, each speaker normalized by all their clips, beam + LM" fsdd_clips.spk.lm
  result_line "the same, each clip normalized with the clips nearest it in voice (no labels), greedy" fsdd_clips.near
  result_line "the same, each clip normalized with the clips nearest it in voice (no labels), beam + LM" fsdd_clips.near.lm
  result_line "the same, each speaker normalized by all their clips and adapted in two passes, beam + LM" fsdd_clips.spk.adapt.lm
  result_line "the same, nearest-voice normalization and all clips adapted as one (no labels), beam + LM" fsdd_clips.near.adapt.lm
fi
[ -f exp/test.charlm.wer ] && echo "held-out-voice test set, beam + char-RNN LM: $(tail -n 1 exp/test.charlm.wer)"
true
