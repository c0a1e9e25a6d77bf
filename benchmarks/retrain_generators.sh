#!/usr/bin/env bash
# Retrain every shipped generator on the tokens of the tiny preset's VQVAE
# (data_samples/vqvae_tiny_lift), one after another on the 2-core CPU, each step timed:
#   text-to-3D (next-scale), image-to-3D (next-scale), the single-scale VQVAE of the
#   next-token baseline (fine-tuned from vqvae_tiny_lift), its tokens, the next-token baseline,
#   the captioner (SAR3D-LLM, stages 0-2) on the same tokens; text_long: the text model for 3500
#   steps instead of 2000 (the training-length ablation).
# Usage: benchmarks/retrain_generators.sh [STEP ...]   (steps: tokens text image single next_token
# captioner text_long; default: tokens text image single next_token captioner). Logs: runs/retrain/<step>.log; wall times: runs/retrain/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
DATA=$C/proc_train_64
TOKENS=$C/ar/train_tokens_lift.npz
TOKENS1=$C/ar/train_tokens_single_lift.npz
TRAIN=(.venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train)
AR=(--data "$DATA" --depth 3 --width 128 --batch-size 8 --lr 1e-3 --threads 1)
mkdir -p runs/retrain

run() {  # run NAME CMD...: time one step, keep its log
  local name=$1; shift
  echo "== $name $(date -u +%T): $*" | tee -a runs/retrain/times.txt
  /usr/bin/time -f "$name wall %e s" -a -o runs/retrain/times.txt "$@" > "runs/retrain/$name.log" 2>&1
  tail -1 runs/retrain/times.txt
}

steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(tokens text image single next_token captioner)
for s in "${steps[@]}"; do
  case $s in
    tokens) run tokens .venv/bin/sar3d data tokenize "$DATA" --out "$TOKENS" --checkpoint data_samples/vqvae_tiny_lift ;;
    text) run text "${TRAIN[@]}" ar --cond text --tokens "$TOKENS" "${AR[@]}" --steps 2000 \
            --out runs/ar_text_lift --export runs/ar_text_lift_export ;;
    image) run image "${TRAIN[@]}" ar --cond image --tokens "$TOKENS" "${AR[@]}" --steps 1500 \
             --out runs/ar_image_lift --export runs/ar_image_lift_export ;;
    single) run single "${TRAIN[@]}" vqvae --preset tiny --single-scale --init data_samples/vqvae_tiny_lift \
              --data "$DATA" --threads 1 --batch-size 4 --steps 400 --gan-start 200 --lr 3e-4 \
              --out runs/vqvae_single_lift --export data_samples/vqvae_single_scale_lift ;;
    next_token) run tokens1 .venv/bin/sar3d data tokenize "$DATA" --out "$TOKENS1" \
                  --checkpoint data_samples/vqvae_single_scale_lift
                run next_token "${TRAIN[@]}" ar --cond text --next-token --tokens "$TOKENS1" "${AR[@]}" --steps 2000 \
                  --out runs/ar_text_next_token_lift --export runs/ar_text_next_token_lift_export ;;
    captioner) run captioner "${TRAIN[@]}" captioner --tokens "$TOKENS" --data "$DATA" --threads 1 --batch-size 16 \
                 --steps 300 300 1200 --lr 2e-3 2e-3 1e-3 --position-embedding \
                 --out runs/captioner_tiny --export data_samples/captioner_tiny ;;
    text_long) run text_long "${TRAIN[@]}" ar --cond text --tokens "$TOKENS" "${AR[@]}" --steps 3500 \
                 --out runs/ar_text_lift_3500 --export runs/ar_text_lift_3500_export ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
