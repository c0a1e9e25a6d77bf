"""What MMD-CD a caption allows, with the caption read exactly: samplers that know every shape word.

    python docs/notes/mmd_attribute_oracle.py --data ~/.cache/sar3d/proc_test_64 \
        --train ~/.cache/sar3d/proc_train_10k --limit 100 --json benchmarks/results/mmd_attribute_oracle.json

``benchmarks/mmd_caption_oracle.py`` matches captions by shared words, and paraphrases ("couch",
"padded arms") blur that match. Here a test object's *class* is the training objects with its
category and every shape attribute the caption states (all attributes but colour, second colour,
pattern, finish and the unstated yaw). Every test object has at least 25 such training objects.

- ``draw_k``: one random member of the class per caption (seed k): a perfect caption follower, which
  samples the world's own distribution of shapes given the words;
- ``medoid``: the member closest on average to the others (Chamfer on ``--medoid-points`` points,
  at most ``--medoid-members`` members): the best *single* shape per caption, a mode-seeking sampler;
- ``draw_0_vqvae`` (with ``--vqvae``): draw 0's objects through that VQVAE (one pass, marching cubes at
  48^3, as ``ar_eval`` meshes samples): a perfect caption follower that must go through the tokens.

Each set's exact surfaces against the exact test surfaces, as ``ar_eval.evaluate_text`` scores them.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sar3d_core.ar_eval import _cloud_metrics, exact_points, test_records
from sar3d_core.metrics import normalize_point_clouds, pairwise_chamfer_distance

UNSTATED = {"colour", "secondary_colour", "pattern", "finish", "yaw_deg"}


def shape_class(record) -> tuple:
    return (record["category"],) + tuple(sorted((k, str(v)) for k, v in record["attributes"].items()
                                                if k not in UNSTATED))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--medoid-points", type=int, default=512)
    p.add_argument("--medoid-members", type=int, default=40)
    p.add_argument("--vqvae", default=None, help="also score draw 0 through this VQVAE folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    test = test_records(Path(a.data).expanduser(), a.limit)
    train = test_records(Path(a.train).expanduser())
    classes = {}
    for r in train:
        classes.setdefault(shape_class(r), []).append(r)
    members = [classes[shape_class(r)] for r in test]
    ref = exact_points(test)
    out = {"data": a.data, "train": a.train, "objects": len(test),
           "class_size_min": min(map(len, members)), "class_size_median": float(np.median(list(map(len, members)))),
           "sets": {}}
    for d in range(a.draws):
        rng = np.random.default_rng(d)
        picked = [m[rng.integers(len(m))] for m in members]
        out["sets"][f"draw_{d}"] = {k: v for k, v in _cloud_metrics(list(exact_points(picked)), ref).items()
                                    if k != "protocol"}
        print(f"draw {d}: {out['sets'][f'draw_{d}']}", flush=True)
    medoids = {}
    for key in {shape_class(r) for r in test}:
        group = classes[key][:a.medoid_members]
        pts = normalize_point_clouds(exact_points(group, a.medoid_points))
        D = pairwise_chamfer_distance(pts, None, progress=False).numpy()
        medoids[key] = group[int(D.sum(1).argmin())]
    picked = [medoids[shape_class(r)] for r in test]
    out["sets"]["medoid"] = {k: v for k, v in _cloud_metrics(list(exact_points(picked)), ref).items() if k != "protocol"}
    print(f"medoid: {out['sets']['medoid']}", flush=True)
    if a.vqvae:
        import sys

        from sar3d_core.vqvae import SAR3DVQVAE

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from mmd_decomposition import reconstruct

        vq = SAR3DVQVAE.from_pretrained(a.vqvae).eval()
        rng = np.random.default_rng(0)  # draw 0's picks again
        picked = [m[rng.integers(len(m))] for m in members]
        clouds = reconstruct(vq, [Path(a.train).expanduser() / r["folder"] for r in picked])
        out["sets"]["draw_0_vqvae"] = {k: v for k, v in _cloud_metrics(clouds, ref).items() if k != "protocol"}
        print(f"draw 0 through {a.vqvae}: {out['sets']['draw_0_vqvae']}", flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{out['seconds']} s")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
