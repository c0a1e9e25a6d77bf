"""Prompt following of one text generator: the test captions and the plain short prompts.

    python benchmarks/eval_text_generator.py --checkpoint runs/ar_text_lift_export \
        --data ~/.cache/sar3d/proc_test_64 --limit 100 --json benchmarks/results/text_eval.json

Category and colour accuracy (judged by the offline feature network from two views), FID and
COV/MMD-CD on ``limit`` test captions (``ar_eval.evaluate_text``), and category/colour accuracy
on ``short_prompts(rounds)`` ("a red table", ...; ``ar_eval.evaluate_short_prompts``), both at
the shipped sampling settings unless --cfg says otherwise.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sar3d_core.ar_eval import evaluate_short_prompts, evaluate_text
from sar3d_core.featnet import load_default
from sar3d_core.generate import Pipeline


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2, help="short prompts: 15 per round")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0, help="first sampling seed (object i draws with seed + i)")
    p.add_argument("--no-points", action="store_true", help="skip COV/MMD (mesh extraction)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--vqvae", default=None, help="decode with this VQVAE (default: the one the generator names); "
                                                 "it must carry the generator's token fingerprint")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    gen, featnet = Pipeline.from_pretrained(a.checkpoint, vqvae_folder=a.vqvae), load_default()
    out = {"checkpoint": a.checkpoint, "vqvae": a.vqvae, "cfg": a.cfg, "seed": a.seed,
           "short_prompts": evaluate_short_prompts(gen, a.rounds, featnet=featnet, seed=a.seed, cfg=a.cfg,
                                                   progress=False)}
    print("short prompts", json.dumps(out["short_prompts"]))
    if a.limit:
        r = evaluate_text(gen, a.data, a.limit, featnet=featnet, seed=a.seed, points=not a.no_points, cfg=a.cfg,
                          progress=False)
        out["test_captions"] = {k: v for k, v in r.items() if k != "protocol"}
        print("test captions", json.dumps(out["test_captions"], default=str))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
