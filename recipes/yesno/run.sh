#!/usr/bin/env bash
# Kaldi yesno: one speaker, eight yes/no words per file; the smoke test of the whole pipeline.
#   bash recipes/yesno/run.sh [--stage N] [--stop-stage N] [--force] [hydra overrides...]
# Stages: 0 manifests (data/), 1 train (exp/model.pt), 2 score test greedy (exp/test.wer,
# per-utterance errors in exp/test.errors.jsonl), 3 score test with beam search held to the two
# words (a bigram of the training text as lexicon, LM weight 0: exp/lm.arpa, exp/test.lm.wer).
# Environment: YESNO_DIR (local copy holding the 60 .wav files, default ../../../shared/data/yesno);
# YESNO_DOWNLOAD=1 downloads and checksums waves_yesno.tar.gz into YESNO_DIR when it is missing.
set -euo pipefail
cd "$(dirname "$0")"
source ../stages.sh
YESNO_DIR="${YESNO_DIR:-../../../shared/data/yesno}"

prepare() {
  asr prepare yesno data --data-dir "$YESNO_DIR" ${YESNO_DOWNLOAD:+--download}
}

train() {
  asr train --config-name yesno data.train_manifest=data/train.jsonl data.dev_manifest=data/dev.jsonl \
    trainer.output_dir=exp "${overrides[@]}"
}

score() {
  asr evaluate exp/model.pt data/test.jsonl --skip-bad --report exp/test.errors.jsonl | tee exp/test.wer
}

# beam search that can only spell "yes" or "no": misspellings ("neo", "yeso") become words
score_lexicon() {
  asr lm build data/train.jsonl -o exp/lm.arpa --order 2 --model exp/model.pt
  asr evaluate exp/model.pt data/test.jsonl --skip-bad --lm exp/lm.arpa --lm-weight 0 \
    --report exp/test.lm.errors.jsonl | tee exp/test.lm.wer
}

run_stage 0 data prepare
run_stage 1 train train
run_stage 2 score score
run_stage 3 score_lexicon score_lexicon
echo "test greedy: $(tail -n 1 exp/test.wer 2>/dev/null || echo 'not scored yet')"
echo "test, beam held to yes/no: $(tail -n 1 exp/test.lm.wer 2>/dev/null || echo 'not scored yet')"
