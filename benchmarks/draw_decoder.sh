#!/usr/bin/env bash
# A decoder that reads generated token maps: decoder-only fine-tunes of the shipped VQVAE, with and
# without teacher-forced draws of the shipped text generator (sar3d data token-draws), the same
# budget; then each decoder scored on reconstructions and on the text generator's samples.
#   bash benchmarks/draw_decoder.sh [draws] [ft_draws] [ft_control] [eval]
# STEPS (default 800), SHARE (default 0.5), NAME (default draws_s${SHARE}) and DRAWS (the draws file of
# ft_draws; default the teacher-forced draws of the first stage) vary the runs. The free-sample draws:
#   sar3d data token-draws ... --keep 3 4 --out ~/.cache/sar3d/ar/token_draws_train64_keep34.npz
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
steps=${STEPS:-800} share=${SHARE:-0.5} name=${NAME:-draws_s${SHARE:-0.5}}
draws=${DRAWS:-$HOME/.cache/sar3d/ar/token_draws_train64_refined20.npz}
common=(--preset tiny --init data_samples/vqvae_tiny_lift --decoder-only --threads 1 --batch-size 4
        --steps "$steps" --gan-start 200 --lr 3e-4 --lr-decay-from 0.5 --lr-final 0.1 --ckpt-every 200)
run() { /usr/bin/time -f "$1 %e s" -a -o runs/draw_decoder/times.txt "${@:2}"; }
mkdir -p runs/draw_decoder
for stage in "$@"; do
  case $stage in
    draws)
      run draws python -m sar3d_core.cli data token-draws --generator data_samples/ar_text_tiny \
        --tokens ~/.cache/sar3d/ar/train_tokens_lift_10k_refined20.npz --data ~/.cache/sar3d/proc_train_64 \
        --out $draws --draws 2 ;;
    ft_draws)
      OMP_NUM_THREADS=1 run "$name" torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train vqvae "${common[@]}" \
        --token-draws $draws --token-draw-share "$share" --out "runs/draw_decoder/$name" \
        --export "runs/draw_decoder/${name}_export" ;;
    ft_control)
      OMP_NUM_THREADS=1 run control torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train vqvae "${common[@]}" \
        --out runs/draw_decoder/control --export runs/draw_decoder/control_export ;;
    eval)
      for n in ${EVAL:-$name control}; do bash benchmarks/decoder_ft_eval.sh "runs/draw_decoder/${n}_export" "draw_$n"; done ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
