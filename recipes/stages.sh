# Shared stage handling for recipes/<corpus>/run.sh (sourced, not run).
#   --stage N       first stage to run (default 0)
#   --stop-stage N  last stage to run (default: the recipe's DEFAULT_STOP_STAGE, else 100;
#                   later stages are optional extras run only when asked for)
#   --force         redo stages even if their done-marker exists
# Arguments after the options (or after --) are hydra overrides for the train stage.
# A stage is skipped when $exp/.done.<name> exists; the marker is written only after the
# stage's command succeeded, so a half-finished stage is redone on the next run.
# A recipe may set exp (default exp) before sourcing this file, for variants kept side by side.
stage=0
stop_stage="${DEFAULT_STOP_STAGE:-100}"
force=0
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage="$2"; shift 2 ;;
    --stop-stage) stop_stage="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --) shift; overrides+=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$(basename "$0")"; exit 0 ;;
    *) overrides+=("$1"); shift ;;
  esac
done
if ! command -v asr >/dev/null 2>&1; then
  echo "run.sh: the 'asr' command is not on PATH; run 'bash tools/setup.sh' and '. .venv/bin/activate' first" >&2
  exit 1
fi
exp="${exp:-exp}"
mkdir -p "$exp"

# run_stage N NAME COMMAND...: run COMMAND as stage N unless out of range or already done.
run_stage() {
  local number="$1" name="$2"
  shift 2
  if [ "$number" -lt "$stage" ] || [ "$number" -gt "$stop_stage" ]; then
    return 0
  fi
  if [ -f "$exp/.done.$name" ] && [ "$force" -eq 0 ]; then
    echo "== stage $number ($name): done already, skipped ($exp/.done.$name)"
    return 0
  fi
  echo "== stage $number ($name)"
  local start=$SECONDS
  "$@"
  touch "$exp/.done.$name"
  echo "== stage $number ($name) finished in $((SECONDS - start)) s"
}
