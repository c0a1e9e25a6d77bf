"""Which scales cost the text generator its MMD: keep a test object's true first k scales, draw the rest.

    python docs/notes/mmd_by_drawn_scales.py --data ~/.cache/sar3d/proc_test_64 --checkpoint data_samples/ar_text_tiny \
        --limit 100 --json benchmarks/results/mmd_by_drawn_scales.json

For each test object: its one-pass tokens (the VQVAE's encoding of its input views); the shipped
text generator then redraws scales k+1..K given the true scales 1..k and the object's caption
(``Pipeline.sample_tokens(prefix=...)``, shipped settings, seed ``--seed``). k = K is the
reconstruction, k = 0 the plain sample. For each k: COV / MMD-CD against the exact test surfaces
(as ``ar_eval.evaluate_text``) and the mean Chamfer of each object to its own test object. If the
coarse scales fix an object's shape, the MMD gap opens at the scale where drawing starts to lose it.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sar3d_core.ar_eval import _cloud_metrics, exact_points, mesh_points, test_records
from sar3d_core.data import MultiViewDataset
from sar3d_core.generate import Pipeline
from sar3d_core.metrics import chamfer_distance, normalize_point_clouds


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    data = Path(a.data).expanduser()
    test = test_records(data, a.limit)
    ref = exact_points(test)
    gen = Pipeline.from_pretrained(a.checkpoint)
    vq = gen.vqvae
    ds = MultiViewDataset(data, size=vq.cfg.image_size)
    truth = [vq.encode(ds[i]["encoder_input"][None], ds[i]["input_c"][None]).tokens for i in range(len(test))]
    truth = [torch.cat([t[k] for t in truth]) for k in range(len(truth[0]))]  # per scale (N, 3, s, s)
    K = len(truth)
    out = {"data": str(a.data), "checkpoint": a.checkpoint, "seed": a.seed, "rows": []}
    for k in tqdm(range(K, -1, -1), desc="kept scales"):
        planes = []
        for b in range(0, len(test), a.batch_size):
            part = slice(b, b + a.batch_size)
            if k == K:
                tokens = [t[part] for t in truth]
            else:
                cond = gen.condition(text=[r["caption"] for r in test[part]])
                tokens = gen.sample_tokens(cond, seed=a.seed + b, prefix=[t[part] for t in truth[:k]])
            planes.append(vq.decode_tokens(tokens))
        clouds = mesh_points(vq, torch.cat(planes))
        own = [float(chamfer_distance(normalize_point_clouds(c[None]), normalize_point_clouds(ref[i:i + 1]))[0])
               for i, c in enumerate(clouds) if c is not None]
        row = {"kept_scales": k, "own_CD": float(np.mean(own)),
               **{key: v for key, v in _cloud_metrics(clouds, ref).items() if key != "protocol"}}
        out["rows"].append(row)
        print(f"kept {k}: MMD-CD {row['MMD-CD'] * 1e3:.2f}e-3  COV {row['COV-CD']:.0%}  own CD {row['own_CD'] * 1e3:.2f}e-3",
              flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
