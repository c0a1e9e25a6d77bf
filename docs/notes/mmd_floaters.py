"""Do small loose pieces of the meshes inflate the text generator's MMD-CD?

    python docs/notes/mmd_floaters.py --data ~/.cache/sar3d/proc_test_64 --checkpoint data_samples/ar_text_tiny \
        --limit 100 --json benchmarks/results/mmd_floaters.json

The evaluation normalises every cloud to its bounding box, so a loose speck far from the object
shrinks the object itself. For the generator's samples (shipped settings, seed ``--seed``) and the
VQVAE's reconstructions of the same test objects: how many connected pieces each marching-cubes mesh
has, the area share outside the largest, and COV / MMD-CD again after dropping every piece under
``--keep`` of the mesh's area (the exact surfaces are one piece or several large ones).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sar3d_core.ar_eval import (EVAL_POINTS, _cloud_metrics, exact_points, generate_for_captions, test_records)
from sar3d_core.data import MultiViewDataset
from sar3d_core.generate import Pipeline
from sar3d_core.meshing import extract_mesh
from sar3d_core.metrics import sample_mesh_surface


def meshes_of(vqvae, planes) -> list:
    out = []
    for b in range(planes.shape[0]):
        try:
            out.append(extract_mesh(vqvae.field, planes[b:b + 1], vqvae.triplane_settings.num_samples, 48))
        except ValueError:
            out.append(None)
    return out


def pieces(mesh, keep: float):
    """(number of pieces, area share outside the largest, the mesh without pieces under ``keep`` of the area)."""
    parts = mesh.split(only_watertight=False)
    areas = np.array([p.area for p in parts])
    share = 1 - areas.max() / areas.sum()
    import trimesh

    kept = trimesh.util.concatenate([p for p, a in zip(parts, areas) if a >= keep * areas.sum()])
    return len(parts), float(share), kept


def score(meshes, ref, keep: float) -> dict:
    counts, shares, raw, cleaned = [], [], [], []
    for i, m in enumerate(meshes):
        if m is None:
            raw.append(None)
            cleaned.append(None)
            continue
        n, s, kept = pieces(m, keep)
        counts.append(n)
        shares.append(s)
        raw.append(sample_mesh_surface(m, EVAL_POINTS, seed=i).float())
        cleaned.append(sample_mesh_surface(kept, EVAL_POINTS, seed=i).float())
    drop = lambda r: {k: v for k, v in r.items() if k != "protocol"}  # noqa: E731
    return {"pieces_mean": float(np.mean(counts)), "objects_with_several_pieces": int(np.sum(np.array(counts) > 1)),
            "area_share_outside_largest_mean": float(np.mean(shares)),
            "objects_with_over_1pct_outside_largest": int(np.sum(np.array(shares) > 0.01)),
            "as_evaluated": drop(_cloud_metrics(raw, ref)), f"pieces_over_{keep:g}_of_area": drop(_cloud_metrics(cleaned, ref))}


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    data = Path(a.data).expanduser()
    test = test_records(data, a.limit)
    ref = exact_points(test)
    gen = Pipeline.from_pretrained(a.checkpoint)
    ds = MultiViewDataset(data, size=gen.vqvae.cfg.image_size)
    recon = torch.cat([gen.vqvae.decode_fhat(gen.vqvae.encode(ds[i]["encoder_input"][None],
                                                              ds[i]["input_c"][None]).f_hat) for i in range(len(test))])
    sampled = generate_for_captions(gen, [r["caption"] for r in test], seed=a.seed)["planes"]
    out = {"data": str(a.data), "checkpoint": a.checkpoint, "seed": a.seed, "keep": a.keep}
    for name, planes in (("reconstructions", recon), ("generated", sampled)):
        out[name] = score(meshes_of(gen.vqvae, planes), ref, a.keep)
        print(name, json.dumps(out[name]), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
