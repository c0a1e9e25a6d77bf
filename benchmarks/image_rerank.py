"""Image to 3D, best of N: draw N samples per condition image, keep the one whose render at the
condition view agrees best with the image, and score novel views as ``ar_eval.evaluate_image``.

    python benchmarks/image_rerank.py --checkpoint data_samples/ar_image_tiny \
        --data ~/.cache/sar3d/proc_test_64 --limit 100 --candidates 8 --cfg 1 \
        --json benchmarks/results/image_rerank_cfg1.json

The selection reads only the condition image and its camera (the chunk layout's view the
generator was trained with); the novel views 6-11 are used for the score alone. The candidates
of one object are nested: "best of n" for n < N picks among the first n, so one run gives the
whole curve, and "best of 1" is the plain single sample of the same seed.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sar3d_core.data import MultiViewDataset
from sar3d_core.generate import Pipeline
from sar3d_core.metrics import psnr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--cfg-schedule", default=None, help="default: linear for cfg > 1, constant for cfg 1")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--top-p", type=float, default=0.5)
    p.add_argument("--rank-supersample", type=int, default=1)
    p.add_argument("--refine-from", type=int, default=0,
                   help="then keep scales 1..K-1 of the best of N, draw scales K.. N times more, and keep the best "
                        "of those and it (0: no second round)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    schedule = a.cfg_schedule or ("constant" if a.cfg == 1 else "linear")
    sampling = dict(cfg=a.cfg, cfg_schedule=schedule, top_k=a.top_k, top_p=a.top_p)
    gen = Pipeline.from_pretrained(a.checkpoint)
    view = gen.meta.get("condition_view", 0)
    ds = MultiViewDataset(Path(a.data).expanduser(), size=gen.vqvae.cfg.image_size)
    n, N = min(a.limit, len(ds)), a.candidates
    sizes = sorted({1, *[s for s in (2, 4, 8, 16, 32) if s <= N], N})
    novel = list(range(6, 12))
    t0 = time.perf_counter()
    scores = {s: [] for s in sizes}
    input_scores = {s: [] for s in sizes}
    refined, refined_input = [], []
    for i in tqdm(range(n), desc=f"best of {N}"):
        mv = ds.read(i)
        cond = gen.condition(image=mv.rgb[view][None].expand(N, -1, -1, -1))
        tokens = gen.sample_tokens(cond, seed=a.seed + i, **sampling)
        planes = gen.vqvae.decode_tokens(tokens)
        agree = gen.condition_agreement(planes, mv.rgb[view][None].expand(N, -1, -1, -1), mv.c[view],
                                        supersample=a.rank_supersample)  # (N,)
        chosen = {s: int(torch.argmax(agree[:s])) for s in sizes}
        novel_psnr = {}
        for j in sorted(set(chosen.values())):
            c = mv.c[novel][None]
            rgb = gen.vqvae.render(planes[j:j + 1], c, chunk=8192, supersample=2)["rgb"].clamp(0, 1)
            novel_psnr[j] = float(psnr(rgb[0], mv.rgb[novel]).mean())
        for s in sizes:
            scores[s].append(novel_psnr[chosen[s]])
            input_scores[s].append(float(agree[chosen[s]]))
        if a.refine_from:
            best = chosen[N]
            prefix = [t[best:best + 1].expand(N, *t.shape[1:]).long() for t in tokens[:a.refine_from - 1]]
            tokens2 = gen.sample_tokens(cond, seed=a.seed + 10_000 + i, prefix=prefix, **sampling)
            planes2 = torch.cat([planes[best:best + 1], gen.vqvae.decode_tokens(tokens2)])
            agree2 = gen.condition_agreement(planes2, mv.rgb[view][None].expand(N + 1, -1, -1, -1), mv.c[view],
                                             supersample=a.rank_supersample)
            j = int(torch.argmax(agree2))
            if j == 0:
                refined.append(novel_psnr[best])
            else:
                rgb = gen.vqvae.render(planes2[j:j + 1], mv.c[novel][None], chunk=8192, supersample=2)["rgb"]
                refined.append(float(psnr(rgb[0].clamp(0, 1), mv.rgb[novel]).mean()))
            refined_input.append(float(agree2[j]))
    rows = [{"best_of": s, "psnr_novel": float(np.mean(scores[s])), "psnr_std": float(np.std(scores[s])),
             "psnr_condition_view": float(np.mean(input_scores[s]))} for s in sizes]
    if a.refine_from:
        rows.append({"best_of": N, "refined_from_scale": a.refine_from, "second_round": N,
                     "psnr_novel": float(np.mean(refined)), "psnr_std": float(np.std(refined)),
                     "psnr_condition_view": float(np.mean(refined_input))})
    out = {"checkpoint": a.checkpoint, "generator": gen.name, "objects": n, "condition_view": view,
           "sampling": sampling, "rank_supersample": a.rank_supersample, "score_supersample": 2,
           "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    for r in rows:
        extra = f", then {r['second_round']} more from scale {r['refined_from_scale']}" if "second_round" in r else ""
        print(f"best of {r['best_of']:>2}{extra}: novel-view PSNR {r['psnr_novel']:.2f} dB (std {r['psnr_std']:.2f}), "
              f"condition view {r['psnr_condition_view']:.2f} dB")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
