"""What a VQVAE training step costs with wider decoder, field and encoder, against the tiny
preset, in one process on the same batches (1 thread, 4 objects, as one of the two DDP ranks of
the shipped command), the variants interleaved step by step so that the machine's drift hits
them alike. Forward + backward + AdamW, the GAN term on, optionally under bf16 autocast.

    python docs/notes/vqvae_width_step_cost.py [--steps 8] [--bf16] [--variants preset wide_dec ...]
"""
import argparse
import json
import time

import torch

from sar3d_core.config import SAR3DConfig
from sar3d_core.data import MultiViewDataset, default_cache_dir
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_train import SUPERVISED_VIEWS, VQVAEObjective, objective_preset

# the same JSON the ablation script passes to `--extra` (benchmarks/vqvae_ablation.sh)
VARIANTS = {
    "preset": {},
    "wide_dec": {"triplane": {"decoder_channels": [64, 64, 64], "colour_decoder_channels": [32, 32, 32],
                              "feature_channels": 32, "colour_channels": 16, "mlp_hidden": 64}},
    "wide_all": {"triplane": {"decoder_channels": [64, 64, 64], "colour_decoder_channels": [32, 32, 32],
                              "feature_channels": 32, "colour_channels": 16, "mlp_hidden": 64},
                 "encoder": {"max_channels": 128, "fused_channels": 128}},
    "wide_field": {"triplane": {"mlp_hidden": 64}},
    "wide_conv": {"triplane": {"decoder_channels": [64, 64, 64], "colour_decoder_channels": [32, 32, 32]}},
    "wide_enc": {"encoder": {"max_channels": 128, "fused_channels": 128}},
    "wide_conv_enc": {"triplane": {"decoder_channels": [64, 64, 64], "colour_decoder_channels": [32, 32, 32]},
                      "encoder": {"max_channels": 128, "fused_channels": 128}},
}

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=8)
p.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU, as --bf16-cpu")
p.add_argument("--variants", nargs="+", default=list(VARIANTS))
a = p.parse_args()
torch.set_num_threads(1)
ds = MultiViewDataset(default_cache_dir() / "proc_train_64", size=64, target_views=SUPERVISED_VIEWS)
batches = [torch.utils.data.default_collate([ds[4 * i + j] for j in range(4)]) for i in range(a.steps + 1)]


def build(extra):
    cfg = SAR3DConfig.tiny()
    cfg.extra = {k: {**cfg.extra.get(k, {}), **extra.get(k, {})} for k in {*cfg.extra, *extra}}
    torch.manual_seed(0)
    obj = VQVAEObjective(SAR3DVQVAE(cfg), objective_preset("tiny", gan_start=0)).train()
    n = sum(p.numel() for p in obj.model.parameters())
    return obj, torch.optim.AdamW(obj.parameters(), lr=1e-4), n


models = {v: build(VARIANTS[v]) for v in a.variants}
times = {v: [] for v in a.variants}
for i, batch in enumerate(batches):
    for v, (obj, opt, _) in models.items():
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            out = obj(batch, 10_000)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if i > 0:  # the first step warms up
            times[v].append(time.perf_counter() - t0)
base = sorted(times[a.variants[0]])[len(times[a.variants[0]]) // 2]
rows = {}
for v in a.variants:
    med = sorted(times[v])[len(times[v]) // 2]
    rows[v] = {"model_parameters": models[v][2], "median_step_s": round(med, 3), "ratio": round(med / base, 2)}
    print(f"{v:10s} {models[v][2] / 1e6:6.2f} M parameters  median step {med:.3f} s  x{med / base:.2f}")
print(json.dumps({"bf16": a.bf16, "steps": a.steps, "variants": rows}))
