"""Probe: does keeping the best of N text-to-3D samples by the tiny CLIP's image-text similarity
lift what the feature network reads (category, colour), and what does it cost in COV/MMD?

    python docs/notes/text_rerank_probe.py --candidates 4 --json benchmarks/results/text_rerank_probe_n4.json

Each caption draws N samples (the shipped settings); each is rendered from the first evaluation
camera at 64 px and scored by the cosine of the tiny CLIP's image and text embeddings (its own
projections, ``CLIPModel``); the best one is kept and then evaluated exactly as
``ar_eval.evaluate_text`` does (the function that draws the samples is swapped for this one).
The feature network, the judge, is a separate model trained on labels, not on captions.
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel

import sar3d_core.ar_eval as ar_eval
from sar3d_core.conditioning import CLIP_MEAN, CLIP_STD, TINY_CLIP_FOLDER
from sar3d_core.featnet import load_default
from sar3d_core.generate import Pipeline


def best_of(gen, clip, candidates: int):
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]

    @torch.no_grad()
    def generate_for_captions(gen_, captions, *, batch_size=25, seed=0, progress=True, **sampling):
        c = ar_eval.eval_cameras()
        N, planes, views, t_sample = candidates, [], [], 0.0
        for i in range(0, len(captions), batch_size):
            caps = list(captions[i:i + batch_size])
            cond = gen.condition(text=[p for p in caps for _ in range(N)])
            t0 = time.perf_counter()
            tokens = gen.sample_tokens(cond, seed=seed + i, **sampling)
            p = gen.vqvae.decode_tokens(tokens)
            rgb = gen.vqvae.render(p, c[:1][None].expand(p.shape[0], -1, -1), chunk=8192)["rgb"][:, 0].clamp(0, 1)
            img = clip.get_image_features(pixel_values=(rgb - mean) / std)
            enc = gen.encoder.tokenizer(caps, padding="max_length", truncation=True,
                                        max_length=gen.encoder.max_text_length, return_tensors="pt")
            txt = clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            img = F.normalize(_tensor(img), dim=-1).reshape(len(caps), N, -1)
            txt = F.normalize(_tensor(txt), dim=-1)
            keep = torch.arange(len(caps)) * N + torch.einsum("bnd,bd->bn", img, txt).argmax(1)
            t_sample += time.perf_counter() - t0
            planes.append(p[keep])
            views.append(gen.vqvae.render(p[keep], c[None].expand(len(caps), -1, -1), chunk=8192)["rgb"].clamp(0, 1))
        return {"planes": torch.cat(planes), "views": torch.cat(views), "sample_seconds": t_sample}

    return generate_for_captions


def _tensor(x):
    return x if isinstance(x, torch.Tensor) else x.pooler_output  # transformers may return an output object


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--data", default="~/.cache/sar3d/proc_test_64")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    gen, featnet = Pipeline.from_pretrained(a.checkpoint), load_default()
    clip = CLIPModel.from_pretrained(TINY_CLIP_FOLDER, local_files_only=True).eval()
    if a.candidates > 1:
        ar_eval.generate_for_captions = best_of(gen, clip, a.candidates)
    out = {"checkpoint": a.checkpoint, "candidates": a.candidates, "seed": a.seed,
           "short_prompts": ar_eval.evaluate_short_prompts(gen, 2, featnet=featnet, seed=a.seed, progress=False)}
    print("short prompts", json.dumps(out["short_prompts"]))
    r = ar_eval.evaluate_text(gen, Path(a.data).expanduser(), a.limit, featnet=featnet, seed=a.seed, progress=False)
    out["test_captions"] = {k: v for k, v in r.items() if k != "protocol"}
    print("test captions", json.dumps(out["test_captions"], default=str))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
