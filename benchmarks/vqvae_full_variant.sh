#!/usr/bin/env bash
# A VQVAE variant at the shipped command's full budget (4500 steps, GAN from step 3000, the same
# learning-rate decay, DDP over 2 processes of one thread, 4 objects each), under bf16 autocast on the
# CPU so that it fits the hour, timed by /usr/bin/time -v, then scored on the 100 test objects with the
# shipped checkpoint's protocol.
# Usage: benchmarks/vqvae_full_variant.sh NAME 'EXTRA_JSON'   (runs/NAME, runs/NAME_export,
#        benchmarks/results/vqvae_full_variants/NAME_eval100.json)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1; EXTRA=${2:-"{}"}
TEST=${TEST:-$HOME/.cache/sar3d/proc_test_64}
export PATH=$PWD/.venv/bin:$PATH
mkdir -p runs benchmarks/results/vqvae_full_variants
if [ ! -f "runs/${NAME}_export/model.safetensors" ]; then
  OMP_NUM_THREADS=1 /usr/bin/time -v torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train vqvae \
    --preset tiny --threads 1 --batch-size 4 --steps 4500 --gan-start 3000 --lr-decay-from 0.6 --lr-final 0.1 \
    --bf16-cpu --extra "$EXTRA" --out "runs/$NAME" --export "runs/${NAME}_export" > "runs/$NAME.log" 2>&1
fi
python -m sar3d_core.vqvae_eval --data "$TEST" --checkpoint "runs/${NAME}_export" --threads 2 --no-prefixes \
  --json "benchmarks/results/vqvae_full_variants/${NAME}_eval100.json" \
  | tee "benchmarks/results/vqvae_full_variants/${NAME}_eval100.txt"
