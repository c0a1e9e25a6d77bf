"""Does the VQVAE lose PSNR to its 24 samples per ray? The 64-sample run against the shipped
model's own 24-sample metrics, on the same objects.

    python docs/notes/vqvae_samples_per_ray.py

Reads data_samples/vqvae_tiny_lift/metrics.json (100 objects, 24 samples) and
benchmarks/results/vqvae_tiny_lift_64samples.json (the first 15 of them, 64 samples, made by
`python -m sar3d_core.vqvae_eval ... --limit 15 --samples 64 --no-prefixes --no-chamfer --no-featnet`).
"""
import json

import numpy as np

at24 = {o["id"]: o for o in json.load(open("data_samples/vqvae_tiny_lift/metrics.json"))["objects"]}
at64 = json.load(open("benchmarks/results/vqvae_tiny_lift_64samples.json"))["objects"]
print(f"{len(at64)} objects         24 samples   64 samples")
for key in ("psnr", "mask_iou", "psnr_oracle", "mask_iou_oracle"):
    print(f"{key:<16} {np.mean([at24[o['id']][key] for o in at64]):>10.3f}   {np.mean([o[key] for o in at64]):>10.3f}")
