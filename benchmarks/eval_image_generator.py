"""Image-to-3D of one image generator: novel-view PSNR on the test split (``ar_eval.evaluate_image``).

    python benchmarks/eval_image_generator.py --checkpoint runs/ar_image_10k_export \
        --data ~/.cache/sar3d/proc_test_64 --limit 100 --json benchmarks/results/image_eval_10k.json

Conditioned on the chunk view the generator was trained with, the sample rendered anti-aliased
(2 x 2 rays per pixel, as the targets) at the ground truth's novel cameras 6-11, at the shipped
sampling settings unless the options say otherwise (``--candidates N [--refine-from K]``: best of
N by agreement with the condition view, ``Pipeline.sample_best_of``; ``--fit-steps S``: then the kept
sample fitted to the condition view, ``Pipeline.fit_condition_view``).
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sar3d_core.ar_eval import evaluate_image
from sar3d_core.generate import Pipeline


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--cfg-schedule", default=None, help="default: linear for cfg > 1, constant for cfg 1")
    p.add_argument("--candidates", type=int, default=1, help="best of N by agreement with the condition view")
    p.add_argument("--refine-from", type=int, default=None, help="the second round of best-of-N from this scale")
    p.add_argument("--fit-steps", type=int, default=0, help="then fit the condition view for this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--vqvae", default=None, help="decode with this VQVAE (default: the one the generator names); "
                                                 "it must carry the generator's token fingerprint")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    out = {"checkpoint": a.checkpoint, "vqvae": a.vqvae,
           "image": evaluate_image(Pipeline.from_pretrained(a.checkpoint, vqvae_folder=a.vqvae),
                                   Path(a.data).expanduser(), a.limit,
                                   progress=False, seed=a.seed, candidates=a.candidates, refine_from=a.refine_from,
                                   fit_steps=a.fit_steps,
                                   cfg=a.cfg, cfg_schedule=a.cfg_schedule or ("constant" if a.cfg == 1 else "linear"))}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
