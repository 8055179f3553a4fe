#!/usr/bin/env bash
# Train the shipped toy CLIP models: stage 1 (image tower on caption-mentioned labels), then stage 2
# (contrastive, from stage 1). Usage: scripts/train_toy_models.sh [toy-rn|toy-vit ...] (default: both, in
# parallel, one thread each). Extra arguments after -- go to both stages (e.g. -- --device cuda --threads 8).
# Killed part-way? Run the same command again: each stage resumes from its checkpoint in the run folder
# ($TAGGER_TRAIN_DIR, default ~/.cache/tagger/toy-train: outside the work tree, so a new checkout keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${TAGGER_TRAIN_DIR:-$HOME/.cache/tagger/toy-train}
models=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do models+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#models[@]} -eq 0 ] && models=(toy-rn toy-vit)

recipe() {  # model -> "labels-stage args|contrastive-stage args"
  case "$1" in
    toy-rn)  echo "--steps 1200 --warmup 100|--steps 1000 --lock-image-steps 300 --image-lr-scale 0.1" ;;
    toy-vit) echo "--steps 3000 --warmup 200|--steps 1500 --lock-image-steps 300 --image-lr-scale 0.1" ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}

train() {
  local m=$1; shift
  local r; r=$(recipe "$m")
  # shellcheck disable=SC2086
  "$PY" scripts/train_toy_clip.py --model "$m" --stage labels ${r%%|*} --n-train 50000 --threads 1 \
      --out-dir "$RUNS/$m-labels" "$@"
  # shellcheck disable=SC2086
  "$PY" scripts/train_toy_clip.py --model "$m" --stage contrastive ${r##*|} --n-train 50000 --threads 1 \
      --init-from "$RUNS/$m-labels/$m.pt" --checkpoint-dir "$RUNS/$m-contrastive" "$@"
}

mkdir -p "$RUNS"
pids=()
for m in "${models[@]}"; do
  train "$m" "$@" > "$RUNS/train-$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
