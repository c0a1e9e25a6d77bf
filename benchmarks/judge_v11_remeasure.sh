#!/usr/bin/env bash
# Re-measure every colour accuracy the README quotes under the shipped feature network (v1.1):
# the text generator at two sampling seeds, the next-token baseline, the VQVAE's reconstructions
# and Table 1. Features (FID / KID) and category heads are v1's, so those numbers do not move.
#   bash benchmarks/judge_v11_remeasure.sh   (about 20 minutes alone on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-$HOME/.cache/sar3d/proc_test_64}
OUT=benchmarks/results/judge_v11
mkdir -p "$OUT"
for seed in 0 1000; do
  $PY benchmarks/eval_text_generator.py --checkpoint data_samples/ar_text_tiny --data "$DATA" --limit 100 \
      --seed "$seed" --no-points --json "$OUT/text_seed$seed.json"
done
$PY benchmarks/eval_text_generator.py --checkpoint data_samples/ar_text_next_token_tiny --data "$DATA" --limit 100 \
    --no-points --json "$OUT/next_token_seed0.json"
$PY -m sar3d_core.vqvae_eval --data "$DATA" --checkpoint data_samples/vqvae_tiny_lift --limit 100 --threads 2 \
    --no-prefixes --no-chamfer --json "$OUT/vqvae_tiny_lift.json"
$PY -m sar3d_core.cli eval table1 --data "$DATA" --limit 100 --json benchmarks/results/table1.json
