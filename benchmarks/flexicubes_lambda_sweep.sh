#!/usr/bin/env bash
# A small sweep of the FlexiCubes fine-tune's Eq. 9 weights (lambda_normal, lambda_reg) at a fixed budget.
# Each run starts from the base VQVAE, trains STEPS steps (batch 4, one torch thread, lowest priority) and is
# scored by benchmarks/flexicubes_eval.py on the first COUNT test objects at grid 32; the table is printed by
# benchmarks/flexicubes_sweep_table.py.
#   benchmarks/flexicubes_lambda_sweep.sh [STEPS] [COUNT]
set -euo pipefail
STEPS=${1:-200}
COUNT=${2:-30}
DATA=${DATA:-$HOME/.cache/sar3d/proc_test_64}
TRAIN=${TRAIN:-$HOME/.cache/sar3d/proc_train_64}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
for pair in "0 0.5" "0.5 0.5" "2 0.5" "0.5 0.1" "0.5 2"; do
  set -- $pair
  name="n${1}_r${2}_${STEPS}"
  run="runs/fc_sweep/${name}"
  if [ ! -f "${run}/export/model.safetensors" ]; then
    nice -n 19 $PY -m sar3d_core.cli train flexicubes --init data_samples/vqvae_tiny_lift --data "$TRAIN" \
      --steps "$STEPS" --batch-size 4 --lr 0.0001 --seed 0 --normal-weight "$1" --reg-weight "$2" \
      --out "$run" --ckpt-every 50 --export "${run}/export" --threads 1 --resume > "${run}.log" 2>&1 || \
    nice -n 19 $PY -m sar3d_core.cli train flexicubes --init data_samples/vqvae_tiny_lift --data "$TRAIN" \
      --steps "$STEPS" --batch-size 4 --lr 0.0001 --seed 0 --normal-weight "$1" --reg-weight "$2" \
      --out "$run" --ckpt-every 50 --export "${run}/export" --threads 1 >> "${run}.log" 2>&1
  fi
  if [ ! -f "${run}/eval.json" ]; then
    nice -n 19 $PY benchmarks/flexicubes_eval.py --model "${run}/export" --data "$DATA" --count "$COUNT" \
      --resolutions 32 --json "${run}/eval.json" >> "${run}.log" 2>&1
  fi
done
$PY benchmarks/flexicubes_sweep_table.py runs/fc_sweep/*_"${STEPS}"/eval.json
