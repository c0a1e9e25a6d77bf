#!/usr/bin/env bash
# Retrain every shipped generator on the tokens of the tiny preset's VQVAE
# (data_samples/vqvae_tiny_lift), one after another on the 2-core CPU, each step timed:
#   text-to-3D (next-scale), image-to-3D (next-scale), the single-scale VQVAE of the
#   next-token baseline (fine-tuned from vqvae_tiny_lift), its tokens, the next-token baseline,
#   the captioner (SAR3D-LLM, stages 0-2) on the same tokens; text_long: the text model for 3500
#   steps instead of 2000 (the training-length ablation).
# Usage: benchmarks/retrain_generators.sh [STEP ...]   (steps: tokens text image single next_token
# captioner text_long; default: tokens text image single next_token captioner). Logs: runs/retrain/<step>.log; wall times: runs/retrain/times.txt.
# The "10k" steps use a training set of 10,000 objects (the 2,400 plus 7,600 more of the same split:
# `sar3d data build --count 10000 --split train --out ~/.cache/sar3d/proc_train_10k`, resumable):
#   tokens10k, captioner10k (stage 2 twice as long), text10k (the text model on the 10k tokens),
#   image10k (the image model on them, 3000 steps), image10k_long (the same for 5500 steps),
#   text10k_long (the text model on them for 6500 steps instead of 3500), captioner10k_cw3 (captioner10k with
#   the colour words weighing 3 in the answer loss of stages 1 and 2), captioner10k_cw3_seed1 (the same, seed 1),
#   captioner10k_cw2 (the colour words weighing 2), captioner10k_fhat (captioner10k_cw3 fed f_hat patches:
#   --fhat-input), text10k_twins (text10k_long's command, run with the twin-negative
#   tiny CLIP in data_samples/tiny_clip: runs/tiny_clip_twins_export; shipped), text10k_twins_seed1 (the same, seed 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
DATA=$C/proc_train_64
TOKENS=$C/ar/train_tokens_lift.npz
TOKENS1=$C/ar/train_tokens_single_lift.npz
DATA10K=$C/proc_train_10k
TOKENS10K=$C/ar/train_tokens_lift_10k.npz
TRAIN=(.venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train)
AR=(--data "$DATA" --depth 3 --width 128 --batch-size 8 --lr 1e-3 --threads 1)
CAP10K=(captioner --tokens "$TOKENS10K" --data "$DATA10K" --threads 1 --batch-size 16 --steps 300 300 2400
        --lr 2e-3 2e-3 1e-3 --position-embedding)  # the 10k captioner recipe, shared by its variants
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
    tokens10k) run tokens10k .venv/bin/sar3d data tokenize "$DATA10K" --out "$TOKENS10K" \
                 --checkpoint data_samples/vqvae_tiny_lift ;;
    captioner10k) run captioner10k "${TRAIN[@]}" captioner --tokens "$TOKENS10K" --data "$DATA10K" --threads 1 \
                    --batch-size 16 --steps 300 300 2400 --lr 2e-3 2e-3 1e-3 --position-embedding \
                    --out runs/captioner_10k --export runs/captioner_10k_export ;;
    captioner10k_cw3) run captioner10k_cw3 "${TRAIN[@]}" "${CAP10K[@]}" --colour-word-weight 3 \
                        --out runs/captioner_10k_cw3 --export runs/captioner_10k_cw3_export ;;
    captioner10k_cw3_seed1) run captioner10k_cw3_seed1 "${TRAIN[@]}" "${CAP10K[@]}" --colour-word-weight 3 --seed 1 \
                              --out runs/captioner_10k_cw3_seed1 --export runs/captioner_10k_cw3_seed1_export ;;
    captioner10k_fhat) run captioner10k_fhat "${TRAIN[@]}" "${CAP10K[@]}" --colour-word-weight 3 --fhat-input \
                         --out runs/captioner_10k_fhat --export runs/captioner_10k_fhat_export ;;
    captioner10k_cw2) run captioner10k_cw2 "${TRAIN[@]}" "${CAP10K[@]}" --colour-word-weight 2 \
                        --out runs/captioner_10k_cw2 --export runs/captioner_10k_cw2_export ;;
    text10k) run text10k "${TRAIN[@]}" ar --cond text --tokens "$TOKENS10K" --data "$DATA10K" --depth 3 --width 128 \
               --batch-size 8 --lr 1e-3 --threads 1 --steps 3500 --out runs/ar_text_10k --export runs/ar_text_10k_export ;;
    image10k) run image10k "${TRAIN[@]}" ar --cond image --tokens "$TOKENS10K" --data "$DATA10K" --depth 3 --width 128 \
                --batch-size 8 --lr 1e-3 --threads 1 --steps 3000 --out runs/ar_image_10k --export runs/ar_image_10k_export ;;
    image10k_long) run image10k_long "${TRAIN[@]}" ar --cond image --tokens "$TOKENS10K" --data "$DATA10K" --depth 3 \
                     --width 128 --batch-size 8 --lr 1e-3 --threads 1 --steps 5500 --out runs/ar_image_10k_5500 \
                     --export runs/ar_image_10k_5500_export ;;
    text10k_twins) run text10k_twins "${TRAIN[@]}" ar --cond text --tokens "$TOKENS10K" --data "$DATA10K" --depth 3 \
                     --width 128 --batch-size 8 --lr 1e-3 --threads 1 --steps 6500 --out runs/ar_text_10k_twins \
                     --export runs/ar_text_10k_twins_export ;;
    text10k_twins_seed1) run text10k_twins_seed1 "${TRAIN[@]}" ar --cond text --tokens "$TOKENS10K" --data "$DATA10K" \
                           --depth 3 --width 128 --batch-size 8 --lr 1e-3 --threads 1 --steps 6500 --seed 1 \
                           --out runs/ar_text_10k_twins_seed1 --export runs/ar_text_10k_twins_seed1_export ;;
    text10k_long) run text10k_long "${TRAIN[@]}" ar --cond text --tokens "$TOKENS10K" --data "$DATA10K" --depth 3 \
                    --width 128 --batch-size 8 --lr 1e-3 --threads 1 --steps 6500 --out runs/ar_text_10k_6500 \
                    --export runs/ar_text_10k_6500_export ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
