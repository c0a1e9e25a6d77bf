#!/usr/bin/env bash
# Training length past the 60-minute CPU budget: does MMD keep falling with steps?
#
# The shipped text generator (6500 steps from scratch + 1600 steps on refined tokens, 55 min 50 s on the
# 2 cores) is trained further with the recipe of its last stage (refined tokens, lr 3e-4 falling to 3e-5),
# in two legs of STEPS steps each, so that two more points of the curve come out of one chain:
#   more1: the shipped model + STEPS        (8100 + STEPS steps in all)
#   more2: more1 + STEPS                     (8100 + 2 x STEPS)
# Neither is shipped: both exceed the budget. They show what more compute (a GPU) buys.
#   bash benchmarks/ar_length_beyond_budget.sh [STEP ...]   (more1 eval_more1 more2 eval_more2; default all)
# Logs and wall times: runs/ar_length/; scores: benchmarks/results/ar_length/ (100 test captions, sampling
# seeds 0 / 1000, shipped settings, with meshes for COV/MMD), tabled and plotted by
# benchmarks/ar_length_curve.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
STEPS=${STEPS:-3200}
REFINED=$C/ar/train_tokens_lift_10k_refined20.npz
RUN_DIR=runs/ar_length
source benchmarks/timed_step.sh
mkdir -p benchmarks/results/ar_length
train() {  # train NAME INIT
  run "$1" env OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train ar \
      --cond text --data "$C/proc_train_10k" --init "$2" --batch-size 8 --threads 1 --steps "$STEPS" --lr 3e-4 \
      --tokens "$REFINED" --out "runs/ar_length/$1" --export "runs/ar_length/$1_export"
}
score() {  # score NAME: two sampling seeds, with meshes
  for seed in 0 1000; do
    run "eval_$1_$seed" $PY benchmarks/eval_text_generator.py --checkpoint "runs/ar_length/$1_export" \
        --data "$C/proc_test_64" --limit 100 --seed "$seed" --json "benchmarks/results/ar_length/$1_seed$seed.json"
  done
}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(more1 eval_more1 more2 eval_more2)
for s in "${steps[@]}"; do
  case $s in
    more1) train more1 data_samples/ar_text_tiny ;;
    more2) train more2 runs/ar_length/more1_export ;;
    eval_more1) score more1 ;;
    eval_more2) score more2 ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
