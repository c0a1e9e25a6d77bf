"""Does bf16 autocast pay on this CPU (AMX)? Times a training step of the shipped VQVAE preset
(forward + backward of the whole objective, 4 objects, 1 thread, as one DDP rank of the shipped
command) in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``, alternated on the
same batches, and compares the two losses and gradients of the same weights.

    python docs/notes/vqvae_step_bf16_probe.py [--steps 6]
"""
import argparse
import time

import torch

from sar3d_core.config import SAR3DConfig
from sar3d_core.data import MultiViewDataset, default_cache_dir
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_train import SUPERVISED_VIEWS, VQVAEObjective, objective_preset

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=6)
p.add_argument("--checkpoint", default="data_samples/vqvae_tiny_lift", help="weights to run (trained ones: "
               "realistic activations)")
a = p.parse_args()
torch.set_num_threads(1)
ds = MultiViewDataset(default_cache_dir() / "proc_train_64", size=64, target_views=SUPERVISED_VIEWS)
batches = [torch.utils.data.default_collate([ds[4 * i + j] for j in range(4)]) for i in range(a.steps)]
objective = VQVAEObjective(SAR3DVQVAE.from_pretrained(a.checkpoint), objective_preset("tiny", gan_start=3000)).train()
params = [q for q in objective.model.parameters() if q.requires_grad]


def run(batch, bf16: bool):
    objective.zero_grad(set_to_none=True)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = objective(batch, 3500)
    out["loss"].backward()
    dt = time.perf_counter() - t
    grad = torch.cat([q.grad.flatten() for q in params if q.grad is not None])
    return dt, float(out["loss"]), grad


times = {False: [], True: []}
for i, batch in enumerate(batches):
    r32, r16 = run(batch, False), run(batch, True)
    times[False].append(r32[0])
    times[True].append(r16[0])
    cos = float(torch.nn.functional.cosine_similarity(r32[2], r16[2], 0))
    print(f"batch {i}: loss fp32 {r32[1]:.4f} bf16 {r16[1]:.4f}; gradient cosine {cos:.4f}; "
          f"step {r32[0]:.3f} s / {r16[0]:.3f} s")
for bf16, ts in times.items():
    ts = sorted(ts[1:])
    print(f"{'bf16 autocast' if bf16 else 'float32':14s} median {ts[len(ts) // 2]:.3f} s a step of 4 objects")
