"""CUDA check and paper-preset timing of the AR transformer (run on a GPU machine; not part of CI).

    PYTHONPATH=. python3 benchmarks/gpu_ar.py [--out result.json]

1. The CUDA path agrees with the CPU: the shipped text generator gives the same
   teacher-forced logits (to float tolerance, TF32 off) on both devices for the same tokens
   and condition, and samples and decodes on CUDA.
2. The training loop (`training.train`) runs `ar_train.ARObjective` on CUDA with bf16
   autocast for a few steps.
3. The paper preset (Sec. 5: depth 24 / width 1536 for images, depth 16 / width 1024 for
   text, L = 2040, V = 16384): parameters, one training step (batch 8, bf16, AdamW) time and
   peak memory, and next-scale sampling with CFG (10 cached passes) for 1 and 8 objects.
Condition features of the paper preset are random tensors of the official shapes (DINOv2:
257 x 1024, CLIP text: 77 x 768): it times compute, it does not train a model.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from gpu_common import run_parts, sync  # benchmarks/ is the script's folder

from sar3d_core.ar_train import ARObjective
from sar3d_core.config import SAR3DConfig
from sar3d_core.quantizer import sequence_to_tokens
from sar3d_core.sampling import sample_next_scale
from sar3d_core.training import TrainConfig, train
from sar3d_core.transformer import SAR3DTransformer


def cpu_vs_cuda(result: dict) -> None:
    from sar3d_core.generate import DEFAULT_TEXT, Pipeline

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = Pipeline.from_pretrained(DEFAULT_TEXT)
    cond = gen.condition(text=["a 3D model of a chair coloured red", "a tall green vase"])
    tokens = gen.sample_tokens(cond, seed=0)
    model, quantizer = gen.transformer, gen.vqvae.quantizer
    with torch.no_grad():
        teacher = model.teacher_input(quantizer, tokens)
        a = model(teacher, cond.pooled, cond.tokens, cond.mask)
        model.cuda(), quantizer.cuda()
        b = model(teacher.cuda(), cond.pooled.cuda(), cond.tokens.cuda(),
                  None if cond.mask is None else cond.mask.cuda()).cpu()
        args = (cond.pooled.cuda(), cond.tokens.cuda(), None if cond.mask is None else cond.mask.cuda())
        sample_next_scale(model, quantizer, *args, seed=1)  # warm-up
        sync()
        t0 = time.perf_counter()
        cuda_tokens = sample_next_scale(model, quantizer, *args, seed=0)
        sync()
        t_sample = time.perf_counter() - t0
        gen.vqvae.cuda()
        planes = gen.vqvae.decode_tokens(cuda_tokens)
    torch.backends.cuda.matmul.allow_tf32 = True
    result["cuda_vs_cpu"] = {
        "weights": str(DEFAULT_TEXT),
        "max_abs_logit": float((a - b).abs().max()),
        "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "cuda_sample_seconds_2_objects": round(t_sample, 4),
        "cuda_tokens_in_range": all(int(t.min()) >= 0 and int(t.max()) < quantizer.codebook_size for t in cuda_tokens),
        "decoded_planes": list(planes.shape),
    }
    print("cuda vs cpu", result["cuda_vs_cpu"])


def _synthetic_items(model: SAR3DTransformer, quantizer, n: int, cond_tokens: int, cond_dim: int, device="cpu"):
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, model.codebook_size, (n, model.seq_len), generator=g).to(device)
    with torch.no_grad():
        teacher = model.teacher_input(quantizer, sequence_to_tokens(seq, model.scales)).float()
    pooled = torch.randn(n, cond_dim, generator=g)
    tokens = torch.randn(n, cond_tokens, cond_dim, generator=g)
    mask = torch.ones(n, cond_tokens, dtype=torch.bool)
    return {k: v.to(device) for k, v in {"seq": seq, "teacher": teacher, "pooled": pooled, "tokens": tokens,
                                         "mask": mask}.items()}


def training_loop_on_cuda(result: dict) -> None:
    from sar3d_core.vqvae import SAR3DVQVAE

    cfg = SAR3DConfig.tiny()
    quantizer = SAR3DVQVAE(cfg).quantizer
    model = SAR3DTransformer.from_config(cfg, 64, 64, "text")
    batch = _synthetic_items(model, quantizer, 16, 8, 64)
    items = [{k: v[i] for k, v in batch.items()} for i in range(16)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = train(ARObjective(model), items, lambda net, b, step: net(b, step),
                     TrainConfig(steps=6, batch_size=8, log_every=1, out_dir=tmp, device="cuda"))
        sync()
    result["cuda_training_loop"] = {"steps": 6, "seconds": round(time.perf_counter() - t0, 2),
                                    "losses": [round(r["loss"], 4) for r in rows]}
    print("training loop on cuda", result["cuda_training_loop"])


def paper_preset(result: dict, batch_size: int = 8) -> None:
    from sar3d_core.quantizer import MultiScaleTriplaneQuantizer

    cfg = SAR3DConfig.paper()
    quantizer = MultiScaleTriplaneQuantizer.from_config(cfg).cuda()
    out = {}
    for condition, (T, D) in (("text", (77, 768)), ("image", (257, 1024))):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = SAR3DTransformer.from_config(cfg, D, D, condition).cuda()
        info = {"parameters_M": round(model.num_parameters() / 1e6, 1), "seq_len": model.seq_len,
                "depth": model.settings.depth, "width": model.settings.width}
        batch = _synthetic_items(model, quantizer, batch_size, T, D, "cuda")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
        objective = ARObjective(model)
        times = []
        for step in range(1, 7):
            sync()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = objective(batch, step)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            times.append(time.perf_counter() - t0)
        info["train_step_seconds_median"] = round(sorted(times[2:])[len(times[2:]) // 2], 4)
        info["train_step_batch"] = batch_size
        info["train_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        del opt
        model.eval()
        for n in (1, 8):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                args = (batch["pooled"][:1].expand(n, -1), batch["tokens"][:1].expand(n, -1, -1),
                        batch["mask"][:1].expand(n, -1))
                sample_next_scale(model, quantizer, *args, seed=0)  # warm-up
                sync()
                t0 = time.perf_counter()
                for r in range(3):
                    sample_next_scale(model, quantizer, *args, seed=r)
                sync()
            info[f"sample_seconds_batch_{n}"] = round((time.perf_counter() - t0) / 3, 4)
        out[condition] = info
        print("paper preset", condition, info)
        del model, batch
    result["paper_preset"] = out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    args = p.parse_args()
    run_parts((cpu_vs_cuda, training_loop_on_cuda, paper_preset), args.out)


if __name__ == "__main__":
    main()
