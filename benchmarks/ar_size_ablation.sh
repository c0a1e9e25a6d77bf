#!/usr/bin/env bash
# Width and depth of the text generator at a fixed training budget (one of the levers of the AR stage).
#
# Every variant trains from scratch on the one-pass tokens of the 10,000 training objects with the shipped
# recipe (16 sequences a step as 2 DDP processes x 8, AdamW lr 1e-3 falling linearly to 1e-4, weight decay
# 0.05, clip 2, 10% condition dropout, the world's short prompts), for as many steps as fit the budget of
# the shipped size's 1800 steps (about 13 minutes alone on the 2 cores). The steps per size come from
# `python docs/notes/ar_size_step.py --sizes 128x3 192x3 256x3 128x6` (forward + backward of one process's
# batch: 334 / 510 / 732 / 624 ms), so each variant gets the same compute time.
#   bash benchmarks/ar_size_ablation.sh [STEP ...]   steps: train_WxD (128x3 192x3 256x3 128x6), eval_WxD
#   (sampling seeds 0 and 1000, with meshes: COV/MMD); default: train and eval of 128x3 192x3 256x3.
#   SEED=1 ...: a second training draw (runs and scores named <WxD>_seed1).
# Logs: runs/ar_size/<step>.log; wall times: runs/ar_size/times.txt; scores:
# benchmarks/results/ar_size/text_<WxD>_seed<S>.json; table: python benchmarks/ar_lever_table.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
DATA10K=$C/proc_train_10k
TOKENS=${TOKENS:-$C/ar/train_tokens_lift_10k.npz}
mkdir -p benchmarks/results/ar_size
SEED=${SEED:-0}
TAG=$([ "$SEED" = 0 ] || echo "_seed$SEED")  # the name suffix of a second training draw
declare -A STEPS=([128x3]=1800 [192x3]=1180 [256x3]=820 [128x6]=960)

RUN_DIR=runs/ar_size
source benchmarks/timed_step.sh  # run NAME CMD...: time one step, keep its log

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(train_128x3 train_192x3 train_256x3 eval_128x3 eval_192x3 eval_256x3)
for s in "${steps[@]}"; do
  size=${s#*_}; width=${size%x*}; depth=${size#*x}
  [ -n "${STEPS[$size]:-}" ] || { echo "unknown size in step $s (sizes: ${!STEPS[*]})"; exit 2; }
  case $s in
    train_*) run "$s$TAG" env OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli \
               train ar --cond text --tokens "$TOKENS" --data "$DATA10K" --width "$width" --depth "$depth" \
               --batch-size 8 --lr 1e-3 --threads 1 --steps "${STEPS[$size]}" --seed "$SEED" \
               --out "runs/ar_size/$size$TAG" --export "runs/ar_size/$size${TAG}_export" ;;
    eval_*) for seed in 0 1000; do
              run "$s${TAG}_$seed" $PY benchmarks/eval_text_generator.py \
                  --checkpoint "runs/ar_size/$size${TAG}_export" --data "$C/proc_test_64" --limit 100 \
                  --seed "$seed" --threads 2 --json "benchmarks/results/ar_size/text_$size${TAG}_seed$seed.json"
            done ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
