"""CUDA check and paper-preset timing of the 3D VQVAE (run on a GPU machine; not part of CI).

    PYTHONPATH=. python3 benchmarks/gpu_vqvae.py [--out result.json]

1. The CUDA path agrees with the CPU: the same tiny VQVAE on the same batch gives the same
   tokens and (to float tolerance) the same renders and losses on both devices.
2. The training loop (`training.train`) runs on CUDA with bf16 autocast for a few steps of
   the VQVAE objective (Eq. 8) and its checkpoint reloads.
3. The paper preset (256 px, 16x16x8 latent, 10 scales, V = 16384): parameter counts,
   one training step (batch 4, 4096 rays + one 64x64 patch per object, bf16) time and peak
   memory, encoding throughput, and a full 12-view 256 px render.
Only synthetic inputs are used (random views at the chunk cameras): it times compute, it
does not train a model.
"""
from __future__ import annotations

import argparse
from functools import partial
import tempfile
import time

import torch
from gpu_common import run_parts, sync  # benchmarks/ is the script's folder

from sar3d_core.cameras import chunk_cameras, plucker_embedding
from sar3d_core.config import SAR3DConfig
from sar3d_core.training import TrainConfig, train
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_train import ObjectiveSettings, VQVAEObjective


def synthetic_batch(cfg: SAR3DConfig, B: int, device, seeds: bool = False) -> dict:
    H = cfg.image_size
    g = torch.Generator().manual_seed(0)
    c = chunk_cameras(0)[None].expand(B, -1, -1).contiguous()  # (B, 12, 25)
    rgb = torch.rand(B, 12, 3, H, H, generator=g)
    depth = 1.5 + torch.rand(B, 12, 1, H, H, generator=g)
    mask = (torch.rand(B, 12, 1, H, H, generator=g) > 0.5).float()
    pl = torch.stack([plucker_embedding(c[b, :6], H, H) for b in range(B)])  # (B, 6, 6, H, W)
    x = torch.cat([rgb[:, :6], depth[:, :6], pl.to(rgb.dtype)], 2)
    batch = {"encoder_input": x, "input_c": c[:, :6].contiguous(), "target_rgb": rgb, "target_depth": depth, "target_mask": mask, "target_c": c,
             "seed": torch.arange(B) if seeds else torch.full((B,), -1)}  # seeds: the 3D aids run
    return {k: v.to(device) for k, v in batch.items()}


def cpu_vs_cuda(result: dict, checkpoint: str | None = None) -> None:
    """Same weights, same batch on both devices; TF32 is turned off for the comparison (cuDNN
    convolutions use it by default, and a 1e-3 change can flip a near-tie between two codes)."""
    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = (SAR3DVQVAE.from_pretrained(checkpoint) if checkpoint else SAR3DVQVAE(SAR3DConfig.tiny())).eval()
    cfg = model.cfg
    batch = synthetic_batch(cfg, 2, "cpu")
    with torch.no_grad():
        a = model(batch)
        model_gpu = model.to("cuda")
        b = model_gpu({k: v.cuda() for k, v in batch.items()})
    same_tokens = all(bool((x == y.cpu()).all()) for x, y in zip(a["tokens"], b["tokens"]))
    torch.backends.cudnn.allow_tf32 = True
    result["cuda_vs_cpu"] = {
        "weights": checkpoint or "random (seed 0)",
        "tokens_identical": same_tokens,
        "token_agreement": float(torch.cat([(x == y.cpu()).flatten().float() for x, y in zip(a["tokens"], b["tokens"])]).mean()),
        "max_abs_rgb": float((a["rgb"] - b["rgb"].cpu()).abs().max()),
        "max_abs_fhat": float((a["f_hat"] - b["f_hat"].cpu()).abs().max()),
    }
    print("cuda vs cpu", result["cuda_vs_cpu"])


def training_loop_on_cuda(result: dict) -> None:
    """A few steps of the loop on CUDA, with procedural seeds so that both 3D aids (occupancy
    and colour) run, and with the colour stream of the default checkpoint (split colour field,
    colour decoder and colour encoder: ``colour_channels``, ``colour_latent_channels``)."""
    cfg = SAR3DConfig.tiny()
    cfg.extra = {"triplane": {"colour_channels": 8, "colour_latent_channels": 4},
                 "encoder": {"colour_latent_channels": 4}}
    batch = synthetic_batch(cfg, 8, "cpu", seeds=True)
    items = [{k: v[i] for k, v in batch.items()} for i in range(8)]
    model = SAR3DVQVAE(cfg)
    objective = VQVAEObjective(model, ObjectiveSettings(gan_start=2, colour_weight=1.0))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = train(objective, items, lambda net, b, step: net(b, step),
                     TrainConfig(steps=6, batch_size=4, log_every=1, out_dir=tmp, device="cuda"))
        sync()
        result["cuda_training_loop"] = {"steps": 6, "seconds": round(time.perf_counter() - t0, 2),
                                        "losses": [round(r["loss"], 4) for r in rows],
                                        "colour_aid": [round(r["colour"], 4) for r in rows if "colour" in r],
                                        "occupancy_aid": [round(r["occupancy"], 4) for r in rows if "occupancy" in r]}
    print("training loop on cuda", result["cuda_training_loop"])


def paper_preset(result: dict, batch_size: int = 4) -> None:
    cfg = SAR3DConfig.paper()
    model = SAR3DVQVAE(cfg).cuda()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    objective = VQVAEObjective(model, ObjectiveSettings(rays=4096, patch=64, gan_start=0)).cuda()
    info = {"params": {"encoder": count(model.encoder), "quantizer": count(model.quantizer),
                       "decoder": count(model.decoder), "field": count(model.field),
                       "discriminator": count(objective.discriminator)}}
    batch = synthetic_batch(cfg, batch_size, "cuda")
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(1, 8):
        sync()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = objective(batch, step)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    info["train_step_seconds_median"] = sorted(times[2:])[len(times[2:]) // 2]
    info["train_step_batch"] = batch_size
    info["train_step_rays_per_object"] = 4096 + 64 * 64
    info["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    model.eval()
    with torch.no_grad():
        sb = synthetic_batch(cfg, 16, "cuda")
        x, xc = sb["encoder_input"], sb["input_c"]
        model.encode(x, xc)
        sync()
        t0 = time.perf_counter()
        for _ in range(5):
            model.encode(x, xc)
        sync()
        info["encode_objects_per_second"] = round(16 * 5 / (time.perf_counter() - t0), 1)
        planes = model.decode_fhat(model.encode(x[:1], xc[:1]).f_hat)
        sync()
        t0 = time.perf_counter()
        model.render(planes, batch["target_c"][:1], 256, chunk=65536)
        sync()
        info["render_12_views_256px_seconds"] = round(time.perf_counter() - t0, 3)
    result["paper_preset"] = info
    print("paper preset", info)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--checkpoint", default=None, help="compare CPU and CUDA with these VQVAE weights")
    args = p.parse_args()
    run_parts((partial(cpu_vs_cuda, checkpoint=args.checkpoint), training_loop_on_cuda, paper_preset), args.out)


if __name__ == "__main__":
    main()
