#!/usr/bin/env bash
# Score a decoder-only fine-tune of the shipped VQVAE (train vqvae --init ... --decoder-only) beside the
# shipped decoder: reconstructions of 30 test objects, and the shipped text generator's samples (the same
# tokens: same seeds, same fingerprint) decoded by it, sampling seeds 0 and 1000.
#   benchmarks/decoder_ft_eval.sh EXPORT_FOLDER NAME
set -euo pipefail
export_dir=$1 name=$2
out=benchmarks/results/decoder_ft
data=~/.cache/sar3d/proc_test_64
mkdir -p "$out"
python -m sar3d_core.vqvae_eval --data $data --checkpoint "$export_dir" --limit 30 --no-prefixes --no-chamfer \
  --no-oracle --threads 2 --json "$out/vqvae_${name}_30.json"
for seed in 0 1000; do
  python benchmarks/eval_text_generator.py --checkpoint data_samples/ar_text_tiny --vqvae "$export_dir" --data $data \
    --limit 100 --threads 2 --seed $seed --json "$out/text_eval_${name}_seed${seed}.json"
done
