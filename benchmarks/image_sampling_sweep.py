"""Image-to-3D novel-view PSNR of one image generator under several sampling settings.

    python benchmarks/image_sampling_sweep.py --checkpoint data_samples/ar_image_tiny \
        --data ~/.cache/sar3d/proc_test_64 --limit 100 --json benchmarks/results/image_sampling_sweep.json

Each row is ``ar_eval.evaluate_image`` (100 test objects, conditioned on the generator's chunk
view, the sample rendered anti-aliased at the novel cameras 6-11) with one sampling setting; the
first row is the shipped setting of the text generators (CFG 4 with the linear ramp, top-k 10,
top-p 0.5). PSNR rewards the most likely object, so settings that sample less widely are
expected to score higher; the table shows how much.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sar3d_core.ar_eval import evaluate_image
from sar3d_core.generate import Pipeline

SETTINGS = {
    "cfg 4 ramp, top-k 10, top-p 0.5 (shipped)": dict(cfg=4.0, cfg_schedule="linear", top_k=10, top_p=0.5),
    "cfg 1 (no guidance), top-k 10, top-p 0.5": dict(cfg=1.0, cfg_schedule="constant", top_k=10, top_p=0.5),
    "cfg 2 ramp, top-k 10, top-p 0.5": dict(cfg=2.0, cfg_schedule="linear", top_k=10, top_p=0.5),
    "cfg 4 constant, top-k 10, top-p 0.5": dict(cfg=4.0, cfg_schedule="constant", top_k=10, top_p=0.5),
    "cfg 4 ramp, top-k 1 (greedy)": dict(cfg=4.0, cfg_schedule="linear", top_k=1, top_p=1.0),
    "cfg 2 ramp, top-k 1 (greedy)": dict(cfg=2.0, cfg_schedule="linear", top_k=1, top_p=1.0),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", type=int, default=None, help="row numbers of SETTINGS to run (default all)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    gen = Pipeline.from_pretrained(a.checkpoint)
    rows = []
    for n, (name, kw) in enumerate(SETTINGS.items()):
        if a.only is not None and n not in a.only:
            continue
        t0 = time.perf_counter()
        r = evaluate_image(gen, Path(a.data).expanduser(), a.limit, progress=False, **kw)
        rows.append({"setting": name, **r, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{name:<45} PSNR {r['psnr_novel']:.2f} dB (std {r['psnr_std']:.2f})", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps({"checkpoint": a.checkpoint, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
