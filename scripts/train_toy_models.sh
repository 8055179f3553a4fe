#!/usr/bin/env bash
# Train the shipped toy CLIP models.
#   toy-rn:  stage 1, its image tower on the labels its captions mention (1,200 steps, then a second
#            cosine cycle of 1,500 at half the rate); stage 2, contrastive from there.
#   toy-vit: stage 1 distils the shipped toy-rn's image tower, global and dense (patch) features, while
#            learning the same labels, from a sine-cosine start of its position table (3,000 steps, then a
#            second cosine cycle of 2,500 at half the rate and a third at a quarter); stage 2, contrastive.
# Usage: scripts/train_toy_models.sh [toy-rn|toy-vit ...] (default: both, side by side; toy-vit's teacher
# is the toy-rn in tagger/models/weights, so ship toy-rn first when retraining both).
# Extra arguments after -- go to every stage
# (e.g. -- --device cuda --threads 8). Killed part-way? Run the same command again: each stage resumes
# from its checkpoint in the run folder ($TAGGER_TRAIN_DIR, default ~/.cache/tagger/toy-train: outside
# the work tree, so a new checkout keeps it); a finished stage is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${TAGGER_TRAIN_DIR:-$HOME/.cache/tagger/toy-train}
models=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do models+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#models[@]} -eq 0 ] && models=(toy-rn toy-vit)
COMMON=(--n-train 50000 --threads 1)

stage() {  # model stage out-dir args... ; skipped when its weights exist
  local m=$1 st=$2 out=$3; shift 3
  if [ -f "$out/$m.json" ]; then echo "$m $st: done ($out)"; return; fi
  "$PY" scripts/train_toy_clip.py --model "$m" --stage "$st" "${COMMON[@]}" --out-dir "$out" "$@" \
      >> "$RUNS/train-$m.log" 2>&1
}

rn_labels()       { stage toy-rn labels "$RUNS/toy-rn-labels" --steps 1200 --warmup 100 "$@" &&
                    stage toy-rn labels "$RUNS/toy-rn-labels2" --steps 1500 --warmup 50 --lr 5e-4 \
                        --init-from "$RUNS/toy-rn-labels/toy-rn.pt" "$@"; }  # a second cosine cycle
rn_contrastive()  { stage toy-rn contrastive "$RUNS/toy-rn-contrastive2" --steps 1000 --lock-image-steps 300 \
                        --image-lr-scale 0.1 --init-from "$RUNS/toy-rn-labels2/toy-rn.pt" "$@"; }
vit_labels()      { stage toy-vit labels "$RUNS/toy-vit-distill2" --steps 3000 --warmup 150 --teacher-model toy-rn \
                        --teacher-weights tagger/models/weights/toy-rn.pt --dense-distill-weight 1 \
                        --pos-init sincos "$@" &&
                    stage toy-vit labels "$RUNS/toy-vit-distill3" --steps 2500 --warmup 50 --lr 5e-4 \
                        --teacher-model toy-rn --teacher-weights tagger/models/weights/toy-rn.pt \
                        --dense-distill-weight 1 --init-from "$RUNS/toy-vit-distill2/toy-vit.pt" "$@" &&
                    stage toy-vit labels "$RUNS/toy-vit-distill4" --steps 2500 --warmup 50 --lr 2.5e-4 \
                        --teacher-model toy-rn --teacher-weights tagger/models/weights/toy-rn.pt \
                        --dense-distill-weight 1 --init-from "$RUNS/toy-vit-distill3/toy-vit.pt" "$@"; }
vit_contrastive() { stage toy-vit contrastive "$RUNS/toy-vit-contrastive3" --steps 1200 --lock-image-steps 300 \
                        --image-lr-scale 0.1 --init-from "$RUNS/toy-vit-distill4/toy-vit.pt" "$@"; }

mkdir -p "$RUNS"
want() { [[ " ${models[*]} " == *" $1 "* ]]; }
pids=()
if want toy-rn; then (rn_labels "$@" && rn_contrastive "$@") & pids+=($!); fi
if want toy-vit; then (vit_labels "$@" && vit_contrastive "$@") & pids+=($!); fi
for p in "${pids[@]}"; do wait "$p"; done
for m in "${models[@]}"; do
  d=$RUNS/$m-contrastive2; [ "$m" = toy-vit ] && d=$RUNS/$m-contrastive3
  echo "$m: weights in $d; ship with: cp $d/$m.{pt,json} tagger/models/weights/"
done
