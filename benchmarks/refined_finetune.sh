#!/usr/bin/env bash
# The text generator fine-tuned on refined tokens, against the same fine-tune on one-pass tokens.
#
# Token refinement (SAR3DVQVAE.encode_refined) keeps more of each object's colour than the encoder's one
# pass (docs/notes/refined_tokens_cheap.py: 100 test objects judged from the evaluation cameras, colour
# 71.5% one pass, 76.0% after 20 steps of 256 rays, 78.0% after 50 steps of 512 rays), and the text
# generator's colour sits near the one pass's. So: refine the 10,000 training objects' tokens cheaply
# (20 steps, 256 rays: 0.21 s an object on 2 threads), fine-tune the shipped text generator on them, and
# run the same fine-tune on the one-pass tokens as the control (more steps alone).
#   bash benchmarks/refined_finetune.sh [STEP ...]   (tokens ft_refined ft_onepass eval eval400; default: all
#   but eval400; ft_refined_lr1e-4: the refined fine-tune at a third of the learning rate, scored with
#   GENS=ft_refined_lr1e-4 ... eval eval400)
# Logs: runs/refined_ft/<step>.log; wall times: runs/refined_ft/times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
DATA10K=$C/proc_train_10k
ONEPASS=$C/ar/train_tokens_lift_10k.npz
REFINED=$C/ar/train_tokens_lift_10k_refined20.npz
INIT=${INIT:-data_samples/ar_text_tiny}
STEPS=${STEPS:-1600}
TRAIN=(.venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train ar --cond text --data "$DATA10K"
       --init "$INIT" --batch-size 8 --threads 1 --steps "$STEPS")
GENS=${GENS:-ft_refined ft_onepass}  # the generators the eval steps score
mkdir -p runs/refined_ft benchmarks/results/refined_ft

run() {  # run NAME CMD...: time one step, keep its log
  local name=$1; shift
  echo "== $name $(date -u +%T): $*" | tee -a runs/refined_ft/times.txt
  /usr/bin/time -f "$name wall %e s" -a -o runs/refined_ft/times.txt "$@" > "runs/refined_ft/$name.log" 2>&1
  tail -1 runs/refined_ft/times.txt
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tokens ft_refined ft_onepass eval)
# ft_refined's three sampling seeds and meshes (COV/MMD), as the README's row:
#   python benchmarks/eval_text_generator.py --checkpoint runs/ar_text_ft_refined_export --data ~/.cache/sar3d/proc_test_64 \
#     --limit 100 --seed S [--no-points] --json benchmarks/results/refined_ft/text_ft_refined_{points_seed0,points_seed1000,seed2000}.json
for s in "${steps[@]}"; do
  case $s in
    tokens) run tokens .venv/bin/sar3d data tokenize "$DATA10K" --out "$REFINED" --refine-steps 20 --refine-rays 256 ;;
    ft_refined) run ft_refined env OMP_NUM_THREADS=1 "${TRAIN[@]}" --lr 3e-4 --tokens "$REFINED" \
                  --out runs/ar_text_ft_refined --export runs/ar_text_ft_refined_export ;;
    ft_onepass) run ft_onepass env OMP_NUM_THREADS=1 "${TRAIN[@]}" --lr 3e-4 --tokens "$ONEPASS" \
                  --out runs/ar_text_ft_onepass --export runs/ar_text_ft_onepass_export ;;
    ft_refined_lr1e-4) run ft_refined_lr1e-4 env OMP_NUM_THREADS=1 "${TRAIN[@]}" --lr 1e-4 --tokens "$REFINED" \
                         --out runs/ar_text_ft_refined_lr1e-4 --export runs/ar_text_ft_refined_lr1e-4_export ;;
    eval400) for gen in $GENS; do  # the 400 further test objects (118 held-out pairs), no meshes
               run "eval400_$gen" $PY benchmarks/eval_text_generator.py --checkpoint "runs/ar_text_${gen}_export" \
                   --data "$C/proc_test_400more" --limit 400 --seed 0 --no-points \
                   --json "benchmarks/results/refined_ft/text_${gen}_400more_seed0.json"
             done ;;
    eval) for gen in $GENS; do
            for seed in 0 1000; do
              run "eval_${gen}_$seed" $PY benchmarks/eval_text_generator.py --checkpoint "runs/ar_text_${gen}_export" \
                  --data "$C/proc_test_64" --limit 100 --seed "$seed" --no-points \
                  --json "benchmarks/results/refined_ft/text_${gen}_seed$seed.json"
            done
          done ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
