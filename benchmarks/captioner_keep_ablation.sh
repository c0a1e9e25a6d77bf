#!/usr/bin/env bash
# Does K-2 suffice (paper Sec. 4.3)? One captioner trained per `keep` (scales fed), at a fixed,
# shorter budget than the shipped one, each scored on the 100 test objects.
# All share the shipped run's stage 0 (the LLM on the captions alone, which never sees 3D tokens),
# copied from runs/captioner_10k/stage0; stages 1 and 2 then train per keep:
#   --steps 300 300 S2 --lr 2e-3 2e-3 1e-3 --position-embedding, 16 captions a step and process (as the shipped run).
# Usage: benchmarks/captioner_keep_ablation.sh S2 KEEP [KEEP ...]
#   e.g. benchmarks/captioner_keep_ablation.sh 600 2 4 6
# Logs and exports: runs/caption_keep/k<KEEP>_<S2>/, scores: benchmarks/results/caption_keep/k<KEEP>_<S2>.json,
# wall times: runs/caption_keep/times.txt. Table: python benchmarks/captioner_keep_table.py benchmarks/results/caption_keep/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
C=${SAR3D_CACHE:-$HOME/.cache/sar3d}
S2=$1; shift
mkdir -p runs/caption_keep benchmarks/results/caption_keep
[ -d runs/captioner_10k/stage0/checkpoint ] || { echo "runs/captioner_10k/stage0 is missing: run benchmarks/retrain_generators.sh captioner10k first"; exit 2; }
for K in "$@"; do
  run=runs/caption_keep/k${K}_${S2}
  mkdir -p "$run"
  [ -d "$run/stage0" ] || cp -r runs/captioner_10k/stage0 "$run/stage0"
  echo "== keep $K, stage 2 $S2 steps, $(date -u +%T)" | tee -a runs/caption_keep/times.txt
  /usr/bin/time -f "keep $K train wall %e s" -a -o runs/caption_keep/times.txt \
    .venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train captioner \
      --tokens "$C/ar/train_tokens_lift_10k.npz" --data "$C/proc_train_10k" --threads 1 --batch-size 16 \
      --steps 300 300 "$S2" --lr 2e-3 2e-3 1e-3 --position-embedding --keep "$K" --resume \
      --out "$run" --export "$run/export" > "$run/train.log" 2>&1
  .venv/bin/sar3d eval captions "$C/ar/test_tokens_lift.npz" --checkpoint "$run/export" --threads 2 --no-ablation \
    --json "benchmarks/results/caption_keep/k${K}_${S2}.json" > "$run/eval.log" 2>&1
  tail -1 runs/caption_keep/times.txt
done
