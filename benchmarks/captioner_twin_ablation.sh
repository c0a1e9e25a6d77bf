#!/usr/bin/env bash
# The twin ranking loss for the captioner, as an ablation at a fixed budget: the shipped captioner
# (data_samples/captioner_tiny) trained 800 more stage-2 steps with the twin loss (weight 1) and,
# as the control, the same 800 steps without it; each scored on the targets' 100 test objects and
# on 400 more.   Usage: benchmarks/captioner_twin_ablation.sh [ARM ...]   (arms: twin control)
# Needs ~/.cache/sar3d/proc_train_10k with its tokens (see retrain_generators.sh) and the two test
# token files (test_tokens_lift.npz, test400more_tokens_lift.npz; see docs/RESULTS.md#captioning).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
OUT=benchmarks/results/caption_twin
mkdir -p "$OUT" runs/retrain
arms=("$@"); [ ${#arms[@]} -eq 0 ] && arms=(twin control)
for arm in "${arms[@]}"; do
  case $arm in
    twin) weight=1 ;;
    control) weight=0 ;;
    *) echo "unknown arm $arm"; exit 2 ;;
  esac
  /usr/bin/time -f "captioner_$arm wall %e s" -a -o runs/retrain/times.txt \
    .venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train captioner \
      --tokens "$C/ar/train_tokens_lift_10k.npz" --data "$C/proc_train_10k" --threads 1 --batch-size 16 \
      --steps 0 0 800 --lr 2e-3 2e-3 5e-4 --colour-word-weight 3 --twin-weight "$weight" \
      --init data_samples/captioner_tiny --out "runs/captioner_$arm" --export "runs/captioner_${arm}_export" \
      > "runs/retrain/captioner_$arm.log" 2>&1
  tail -1 runs/retrain/times.txt
  .venv/bin/python -m sar3d_core.cli eval captions "$C/ar/test_tokens_lift.npz" --checkpoint "runs/captioner_${arm}_export" \
      --threads 2 --no-ablation --json "$OUT/${arm}_100.json"
  .venv/bin/python -m sar3d_core.cli eval captions "$C/ar/test400more_tokens_lift.npz" --checkpoint "runs/captioner_${arm}_export" \
      --threads 2 --limit 400 --no-ablation --no-blind --json "$OUT/${arm}_400more.json"
done
