#!/usr/bin/env bash
# Score the shipped text generator and next-token baseline in full (test captions with COV/MMD on the
# meshes, short prompts) at sampling seeds 0 and 1000, then rerun Table 1: what the README quotes for
# text -> 3D after a retrain of the text models.
#   bash benchmarks/remeasure_text_models.sh   (about 20 minutes alone on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-$HOME/.cache/sar3d/proc_test_64}
OUT=benchmarks/results/text_models
mkdir -p "$OUT"
for seed in 0 1000; do
  $PY benchmarks/eval_text_generator.py --checkpoint data_samples/ar_text_tiny --data "$DATA" --limit 100 \
      --seed "$seed" --json "$OUT/text_seed$seed.json"
  $PY benchmarks/eval_text_generator.py --checkpoint data_samples/ar_text_next_token_tiny --data "$DATA" --limit 100 \
      --seed "$seed" --json "$OUT/next_token_seed$seed.json"
done
$PY -m sar3d_core.cli eval table1 --data "$DATA" --limit 100 --json benchmarks/results/table1.json
