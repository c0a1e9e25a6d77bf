#!/usr/bin/env bash
# Ablation of the VQVAE's additions at a fixed budget (same data, steps, batch and seed):
#   base (the tiny preset without them) -> + lifting -> + colour fix (readout, decoder skip) -> + l2 codes
#   -> + official loss weights and rays near the object (= the tiny preset), and the preset with one
#   thing removed at a time; preset_fp32 (the preset again, a same-session baseline) against preset_bf16
#   (bf16 autocast on the CPU); preset_concat / preset_attn: the planes concatenated (official) instead of
#   summed, two DiT-like blocks in the decoder (within / across planes);
#   preset_up64: one more upsampling stage in both decoder streams, 64 x 64 feature planes instead of 32 x 32;
#   preset_s48: 48 samples per ray instead of 24, in training and in the evaluation;
#   preset_ss2: every supervised pixel rendered as the mean of its 2 x 2 sub-pixel rays, as the targets were;
#   preset_is12 / preset_is24: hierarchical sampling (TriplaneSettings.importance_samples), 12 + 12 samples per
#   ray (as many field queries as the preset's 24) and 24 + 24.
#   (Variants at the full budget: benchmarks/vqvae_full_variant.sh.)
#   Each run is scored with vqvae_eval (anti-aliased, oracle, hue, featnet).
# Usage: benchmarks/vqvae_ablation.sh STEPS SEED [VARIANT ...]   (results: runs/ablation/*/eval.json)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-500}; SEED=${2:-0}; shift 2 || true
DATA=${DATA:-$HOME/.cache/sar3d/proc_train_64_first1000}
TEST=${TEST:-$HOME/.cache/sar3d/proc_test_64}
LIMIT=${LIMIT:-30}
PY=.venv/bin/python
mkdir -p runs/ablation
if [ ! -f "$DATA/index.json" ]; then  # the first 1000 objects of the training set, linked
  $PY - "$HOME/.cache/sar3d/proc_train_64" "$DATA" 1000 <<'PYEOF'
import json, os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
index = json.load(open(os.path.join(src, "index.json")))
index["objects"] = index["objects"][:n]
os.makedirs(dst, exist_ok=True)
for o in index["objects"]:
    link = os.path.join(dst, o["folder"])
    if not os.path.exists(link):
        os.symlink(os.path.join(src, o["folder"]), link)
json.dump(index, open(os.path.join(dst, "index.json"), "w"))
PYEOF
fi
OLD_LOSS='"loss": {"rgb": 2.0, "mask": 0.5}'
declare -A EXTRA=(
  [base]="{\"encoder\": {\"lift_resolution\": 0}, \"triplane\": {\"colour_skip\": false}, \"quantizer\": {\"l2_codes\": false}, $OLD_LOSS}"
  [lift]="{\"triplane\": {\"colour_skip\": false}, \"quantizer\": {\"l2_codes\": false}, $OLD_LOSS}"
  [lift_colour]="{\"quantizer\": {\"l2_codes\": false}, $OLD_LOSS}"
  [lift_colour_l2]="{$OLD_LOSS}"
  [preset]="{}"
  [preset_no_lift]="{\"encoder\": {\"lift_resolution\": 0}}"
  [preset_no_colour_fix]="{\"triplane\": {\"colour_skip\": false}}"
  [preset_concat]="{\"triplane\": {\"plane_merge\": \"concat\"}}"
  [preset_attn]="{\"triplane\": {\"attention_blocks\": 2}}"
  [preset_up64]="{\"triplane\": {\"decoder_channels\": [32, 32, 32, 16], \"colour_decoder_channels\": [16, 16, 16, 16]}}"
  [preset_s48]="{\"triplane\": {\"num_samples\": 48}}"
  [preset_fp32]="{}"
  [preset_bf16]="{}"
  [preset_ss2]="{}"
  [preset_is12]="{\"triplane\": {\"num_samples\": 12, \"importance_samples\": 12}}"
  [preset_is24]="{\"triplane\": {\"importance_samples\": 24}}"
)
declare -A OPTS=(
  [base]="--readout-weight 0 --object-ray-share 0"
  [lift]="--readout-weight 0 --object-ray-share 0"
  [lift_colour]="--object-ray-share 0"
  [lift_colour_l2]="--object-ray-share 0"
  [preset]=""
  [preset_no_lift]=""
  [preset_no_colour_fix]="--readout-weight 0"
  [preset_concat]=""
  [preset_attn]=""
  [preset_up64]=""
  [preset_s48]=""
  [preset_fp32]=""
  [preset_bf16]="--bf16-cpu"
  [preset_ss2]="--supersample 2"
  [preset_is12]=""
  [preset_is24]=""
)
VARIANTS=("$@"); [ ${#VARIANTS[@]} -eq 0 ] && VARIANTS=(base lift lift_colour lift_colour_l2 preset)
for v in "${VARIANTS[@]}"; do
  out=runs/ablation/${v}_s${SEED}_${STEPS}
  if [ ! -f "$out/eval.json" ]; then
    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train vqvae --preset tiny \
      --data "$DATA" --threads 1 --batch-size 4 --steps "$STEPS" --gan-start $((STEPS * 2 / 3)) --seed "$SEED" \
      --extra "${EXTRA[$v]}" ${OPTS[$v]} --out "$out" --export "$out/export" --ckpt-every "$STEPS" > "$out.log" 2>&1
    $PY -m sar3d_core.vqvae_eval --data "$TEST" --checkpoint "$out/export" --limit "$LIMIT" --no-chamfer --no-prefixes \
      --json "$out/eval.json" > "$out/eval.txt" 2>/dev/null
  fi
  echo "== $v (seed $SEED, $STEPS steps)"; cat "$out/eval.txt"
done
