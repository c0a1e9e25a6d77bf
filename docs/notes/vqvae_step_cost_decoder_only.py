"""Time VQVAE training steps (forward + backward of the whole objective, 4 objects, 1 thread)
with everything trainable against the decoder-only fine-tune (encoder and quantizer frozen),
the two alternated in one process on the same batches.

    python docs/notes/vqvae_step_cost_decoder_only.py [--steps 6] [--gan]
"""
import argparse
import time

import torch

from sar3d_core.data import MultiViewDataset, default_cache_dir
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_train import (SUPERVISED_VIEWS, VQVAEObjective, decoder_only_settings, freeze_tokens,
                                    objective_preset)

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=6)
p.add_argument("--gan", action="store_true", help="the generator's GAN term on (step >= gan_start)")
a = p.parse_args()
torch.set_num_threads(1)
ckpt = "data_samples/vqvae_tiny_lift"
ds = MultiViewDataset(default_cache_dir() / "proc_train_64", size=64, target_views=SUPERVISED_VIEWS)
batches = [torch.utils.data.default_collate([ds[4 * i + j] for j in range(4)]) for i in range(a.steps)]
objectives = {}
for name in ("full", "decoder_only"):
    model = SAR3DVQVAE.from_pretrained(ckpt)
    settings = objective_preset("tiny", gan_start=0 if a.gan else 10**9)
    if name == "decoder_only":
        freeze_tokens(model, ckpt)
        settings = decoder_only_settings(settings)
    objectives[name] = VQVAEObjective(model, settings).train()
times = {k: [] for k in objectives}
for i, batch in enumerate(batches):
    for name, obj in objectives.items():
        t = time.perf_counter()
        obj(batch, 5000)["loss"].backward()
        times[name].append(time.perf_counter() - t)
        obj.zero_grad(set_to_none=True)
for name, ts in times.items():
    ts = sorted(ts[1:])  # the first step warms up
    print(f"{name:13s} median {ts[len(ts) // 2]:.3f} s a step of 4 objects (steps {[round(t, 3) for t in ts]})")
