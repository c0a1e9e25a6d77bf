"""Where a VQVAE training step of the shipped preset spends its time (1 thread, 4 objects, as one
of the two DDP ranks of the shipped command): forward, backward, clip and AdamW, before and after
the GAN term starts, with the top operators by self CPU time.

    python docs/notes/vqvae_step_profile.py [--steps 6] [--top 25]
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
p.add_argument("--top", type=int, default=25)
p.add_argument("--profile", action="store_true", help="also print torch.profiler's operator table")
a = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
ds = MultiViewDataset(default_cache_dir() / "proc_train_64", size=64, target_views=SUPERVISED_VIEWS)
batches = [torch.utils.data.default_collate([ds[4 * i + j] for j in range(4)]) for i in range(a.steps)]
objective = VQVAEObjective(SAR3DVQVAE(SAR3DConfig.tiny()), objective_preset("tiny", gan_start=3000)).train()
opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)


def step(batch, n):
    t0 = time.perf_counter()
    out = objective(batch, n)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(objective.clip_parameters(), 2.0)
    opt.step()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


for n in (100, 3500):
    rows = [step(b, n) for b in batches]
    rows = sorted(rows[1:], key=sum)  # the first step warms up
    f, b, o = rows[len(rows) // 2]
    print(f"step {n}: median {f + b + o:.3f} s = forward {f:.3f} + backward {b:.3f} + clip/AdamW {o:.3f} "
          f"(totals {[round(sum(r), 3) for r in rows]})")
    if a.profile:
        with torch.profiler.profile() as prof:
            for bt in batches[1:3]:
                step(bt, n)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.top))
