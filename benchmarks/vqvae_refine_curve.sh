#!/usr/bin/env bash
# Token refinement on the input views (SAR3DVQVAE.encode_refined): reconstruction numbers against
# the number of refinement steps, on the first LIMIT test objects, one thread per run.
#   bash benchmarks/vqvae_refine_curve.sh LIMIT STEPS...     e.g.  bash benchmarks/vqvae_refine_curve.sh 30 0 50 100 200
# Writes benchmarks/results/vqvae_refine/steps{N}_{LIMIT}.json (summary + per-object rows) and the
# wall-clock time of each run to benchmarks/results/vqvae_refine/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-$HOME/.cache/sar3d/proc_test_64}
CKPT=${CKPT:-data_samples/vqvae_tiny_lift}
SEED=${SEED:-0}  # the refinement's seed (SEED=1 for a second draw; its files end in _seed1)
TAG=$([ "$SEED" = 0 ] && echo "" || echo "_seed$SEED")
LIMIT=$1; shift
OUT=benchmarks/results/vqvae_refine
mkdir -p "$OUT"
for STEPS in "$@"; do
  start=$(date +%s)
  "$PY" -m sar3d_core.vqvae_eval --data "$DATA" --checkpoint "$CKPT" --limit "$LIMIT" --no-chamfer --no-prefixes \
    --threads 1 --refine-steps "$STEPS" --refine-seed "$SEED" --json "$OUT/steps${STEPS}_${LIMIT}${TAG}.json"
  echo "steps=$STEPS limit=$LIMIT seed=$SEED checkpoint=$CKPT wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/times.txt"
done
