#!/usr/bin/env bash
# Codebook size for the AR stage (256 / 512 against the shipped 1024), at the size ablation's budget.
#
# For each K: merge the shipped VQVAE's codebook into K entries (benchmarks/codebook_merge.py merge:
# usage-weighted spherical k-means; encoder and decoder kept), tokenize the 10,000 training objects with
# it, train the text
# generator at the shipped size for the control's 1800 steps (benchmarks/ar_size_ablation.sh train_128x3 is
# the 1024-code row), and score it as that ablation does (sampling seeds 0 and 1000, with meshes). The
# generator's ceiling, the VQVAE's own reconstructions of the 100 test objects, is scored for the merged
# VQVAE (`ref_Km`; the shipped one: `ref_1024`). `ft_K` then `ref_K`: the merged VQVAE fine-tuned whole for
# 400 steps (the recipe of the next-token baseline's single-scale VQVAE) and its reconstructions; with
# FROM=ft the tokens and generator steps read that one instead of the merged one.
#   bash benchmarks/ar_codebook_ablation.sh [STEP ...]   steps: merge_K ref_Km ft_K ref_K tokens_K train_K eval_K
#   eval30_K (K: 256 or 512; ref_1024 scores the shipped VQVAE; eval30_K: reconstruction PSNR of 30 test
#   objects, eval30_1024 the shipped VQVAE's); default: merge, ref, tokens, train and eval for 256, then 512.
#   SEED=1 ... train_K eval_K: a second training draw (runs and scores named ..._seed1); STEPS=6500 ...: the
#   shipped generator's training length instead of the budget's 1800 steps (named ..._6500).
# Logs: runs/codebook/<step>.log; wall times: runs/codebook/times.txt; scores: benchmarks/results/codebook/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
DATA10K=$C/proc_train_10k
FROM=${FROM:-merged}  # which VQVAE of K codes writes the tokens: merged, or ft (fine-tuned)
SEED=${SEED:-0}
STEPS=${STEPS:-1800}
TAG=$([ "$SEED" = 0 ] || echo "_seed$SEED")$([ "$STEPS" = 1800 ] || echo "_$STEPS")  # names of other runs
TORCHRUN=(env OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli)
mkdir -p benchmarks/results/codebook

RUN_DIR=runs/codebook
source benchmarks/timed_step.sh  # run NAME CMD...: time one step, keep its log

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
  for K in 256 512; do steps+=(merge_$K ref_${K}m tokens_$K train_$K eval_$K); done
fi
for s in "${steps[@]}"; do
  K=${s#*_}
  case $s in
    merge_*) run "$s" $PY benchmarks/codebook_merge.py merge --vqvae data_samples/vqvae_tiny_lift \
               --tokens "$C/ar/train_tokens_lift_10k.npz" --codes "$K" --out "runs/codebook/k${K}_merged" ;;
    ref_1024) run "$s" $PY benchmarks/codebook_merge.py reference --vqvae data_samples/vqvae_tiny_lift \
                --data "$C/proc_test_64" --json benchmarks/results/codebook/k1024_shipped_reference.json ;;
    ref_*m) K=${K%m}; run "$s" $PY benchmarks/codebook_merge.py reference --vqvae "runs/codebook/k${K}_merged" \
              --data "$C/proc_test_64" --json "benchmarks/results/codebook/k${K}_merged_reference.json" ;;
    eval30_*) ckpt=runs/codebook/k${K}_$FROM name=k${K}_$FROM
              [ "$K" = 1024 ] && ckpt=data_samples/vqvae_tiny_lift name=k1024_shipped
              run "$s" $PY -m sar3d_core.vqvae_eval --data "$C/proc_test_64" --checkpoint "$ckpt" \
                --limit 30 --no-chamfer --no-prefixes --json "benchmarks/results/codebook/${name}_eval30.json" ;;
    ref_*) run "$s" $PY benchmarks/codebook_merge.py reference --vqvae "runs/codebook/k${K}_ft" \
             --data "$C/proc_test_64" --json "benchmarks/results/codebook/k${K}_ft_reference.json" ;;
    ft_*) run "$s" "${TORCHRUN[@]}" train vqvae --preset tiny --init "runs/codebook/k${K}_merged" \
            --data "$C/proc_train_64" --threads 1 --batch-size 4 --steps 400 --gan-start 200 --lr 3e-4 \
            --out "runs/codebook/k${K}_ft_run" --export "runs/codebook/k${K}_ft" ;;
    tokens_*) run "$s" .venv/bin/sar3d data tokenize "$DATA10K" --out "$C/ar/train_tokens_k${K}_${FROM}_10k.npz" \
                --checkpoint "runs/codebook/k${K}_$FROM" ;;
    train_*) run "$s$TAG" "${TORCHRUN[@]}" train ar --cond text --tokens "$C/ar/train_tokens_k${K}_${FROM}_10k.npz" \
               --data "$DATA10K" --width 128 --depth 3 --batch-size 8 --lr 1e-3 --threads 1 --steps "$STEPS" \
               --seed "$SEED" --out "runs/codebook/ar_k${K}_$FROM$TAG" \
               --export "runs/codebook/ar_k${K}_$FROM${TAG}_export" ;;
    eval_*) for seed in 0 1000; do
              run "$s${TAG}_$seed" $PY benchmarks/eval_text_generator.py \
                  --checkpoint "runs/codebook/ar_k${K}_$FROM${TAG}_export" --data "$C/proc_test_64" --limit 100 \
                  --seed "$seed" --threads 2 --json "benchmarks/results/codebook/text_k${K}_$FROM${TAG}_seed$seed.json"
            done ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
