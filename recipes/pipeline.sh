# The stages every corpus shares after its own preparation (sourced by recipes/<corpus>/run.sh
# after stages.sh). The recipe sets: config (conf/<config>.yaml), data (manifest folder), train_set,
# dev_set, test_sets (manifest names without .jsonl), optionally speaker_sets (test sets whose
# manifests name each utterance's speaker: also scored with per-speaker normalization, and with
# normalization pooled over the nearest utterances in voice, which needs no labels; each of the two
# also with two-pass speaker adaptation, beam + LM); LM_TEXT
# (environment, optional) replaces the training transcripts as LM text (a text file, one sentence
# per line, or a manifest).

speaker_sets=()

# Tokenizer and acoustic model: the tokenizer is trained from the training transcripts at the start
# of training and stored in the checkpoint with the model (exp/model.pt).
train_model() {
  asr train --config-name "$config" "data.train_manifest=$data/$train_set.jsonl" \
    "data.dev_manifest=$data/$dev_set.jsonl" "trainer.output_dir=$exp" "${overrides[@]}"
}

# Word trigram (modified Kneser-Ney, normalized as the model's tokenizer normalizes) and its
# weights tuned on dev (exp/lm.arpa, exp/lm.arpa.params.json).
language_model() {
  asr lm build "${LM_TEXT:-$data/$train_set.jsonl}" --order 3 --model "$exp/model.pt" -o "$exp/lm.arpa"
  asr lm tune "$exp/model.pt" "$data/$dev_set.jsonl" --lm "$exp/lm.arpa"
}

# Decode and score each test set greedy and with beam search + LM: exp/<set>.wer (the summary, last
# line "WER x CER y") and exp/<set>.errors.jsonl (per utterance); .lm. in the names for beam + LM.
score_sets() {
  local set
  for set in "${test_sets[@]}"; do
    score_set "$set" ""
    score_set "$set" .lm --lm "$exp/lm.arpa"
  done
  for set in "${speaker_sets[@]}"; do  # each speaker normalized by all their utterances (asr evaluate --speaker-norm)
    score_set "$set" .spk --speaker-norm
    score_set "$set" .spk.lm --speaker-norm --lm "$exp/lm.arpa"
    # no labels: each utterance with those nearest it in voice (asr evaluate --speaker-norm nearest)
    score_set "$set" .near --speaker-norm nearest
    score_set "$set" .near.lm --speaker-norm nearest --lm "$exp/lm.arpa"
    # two passes: each speaker's features fitted to the first pass's transcripts (asr evaluate --adapt)
    score_set "$set" .spk.adapt.lm --speaker-norm --adapt --lm "$exp/lm.arpa"
    score_set "$set" .near.adapt.lm --speaker-norm nearest --adapt --lm "$exp/lm.arpa"
  done
}

# score_set SET SUFFIX [asr evaluate options...]: exp/<set><suffix>.wer and exp/<set><suffix>.errors.jsonl
score_set() {
  local set="$1" suffix="$2"
  shift 2
  asr evaluate "$exp/model.pt" "$data/$set.jsonl" --skip-bad "$@" --report "$exp/$set$suffix.errors.jsonl" \
    | tee "$exp/$set$suffix.wer"
}

print_results() {
  local set
  for set in "${test_sets[@]}"; do
    result_line "$set greedy" "$set"
    result_line "$set beam + LM" "$set.lm"
  done
  for set in "${speaker_sets[@]}"; do
    result_line "$set per-speaker normalization, greedy" "$set.spk"
    result_line "$set per-speaker normalization, beam + LM" "$set.spk.lm"
    result_line "$set nearest-voice normalization (no labels), greedy" "$set.near"
    result_line "$set nearest-voice normalization (no labels), beam + LM" "$set.near.lm"
    result_line "$set per-speaker normalization and adaptation, beam + LM" "$set.spk.adapt.lm"
    result_line "$set nearest-voice normalization and adaptation (no labels), beam + LM" "$set.near.adapt.lm"
  done
}

# result_line LABEL NAME: "LABEL: <the last line of exp/NAME.wer>"
result_line() {
  echo "$1: $(tail -n 1 "$exp/$2.wer" 2>/dev/null || echo 'not scored yet')"
}

# The standard stage list after a recipe's own stage 0 (prepare).
run_pipeline() {
  run_stage 1 train train_model
  run_stage 2 lm language_model
  run_stage 3 score score_sets
  print_results
}
