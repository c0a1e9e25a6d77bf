#!/usr/bin/env bash
# Two training draws of the shipped text recipe side by side (its training noise): each checkpoint scored on the
# 400 further test objects (selection set; category, colour, held-out pairs; no meshes) and on the 100 test
# objects at sampling seeds 0 and 1000 (with COV/MMD), as benchmarks/remeasure_text_models.sh scores the shipped one.
#   bash benchmarks/text_seed_compare.sh NAME CHECKPOINT   (results: benchmarks/results/text_seeds/NAME_*.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NAME=$1; CKPT=$2
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
OUT=benchmarks/results/text_seeds
mkdir -p "$OUT"
[ -f "$OUT/${NAME}_400more_seed0.json" ] || $PY benchmarks/eval_text_generator.py --checkpoint "$CKPT" \
    --data "$C/proc_test_400more" --limit 400 --seed 0 --no-points --json "$OUT/${NAME}_400more_seed0.json"
for seed in 0 1000; do
  [ -f "$OUT/${NAME}_seed$seed.json" ] || $PY benchmarks/eval_text_generator.py --checkpoint "$CKPT" \
      --data "$C/proc_test_64" --limit 100 --seed "$seed" --json "$OUT/${NAME}_seed$seed.json"
done
