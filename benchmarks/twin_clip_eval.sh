#!/usr/bin/env bash
# The text generator trained on the twin-negative tiny CLIP (benchmarks/retrain_generators.sh text10k_twins,
# with runs/tiny_clip_twins_export in data_samples/tiny_clip) against the shipped one: the 100 test captions
# at two sampling seeds and the short prompts (benchmarks/eval_text_generator.py, as judge_v11_remeasure.sh
# measures the shipped one), then which colour comes first (docs/notes/colour_order_probe.py).
#   bash benchmarks/twin_clip_eval.sh [GENERATOR]   (default runs/ar_text_10k_twins_export)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GEN=${1:-runs/ar_text_10k_twins_export}
DATA=${DATA:-$HOME/.cache/sar3d/proc_test_64}
OUT=benchmarks/results/twin_clip
mkdir -p "$OUT"
for seed in 0 1000; do
  $PY benchmarks/eval_text_generator.py --checkpoint "$GEN" --data "$DATA" --limit 100 --seed "$seed" --no-points \
      --json "$OUT/text_seed$seed.json"
done
$PY docs/notes/colour_order_probe.py --pairs 30 --checkpoint "$GEN" --json "$OUT/colour_order_probe.json"
