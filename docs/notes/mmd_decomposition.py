"""Where the text generator's MMD-CD comes from: per-category MMD of four sets against the exact test surfaces.

    python docs/notes/mmd_decomposition.py --data ~/.cache/sar3d/proc_test_64 \
        --train ~/.cache/sar3d/proc_train_10k --checkpoint data_samples/ar_text_tiny --limit 100 \
        --json benchmarks/results/mmd_decomposition.json

The sets (each 100 clouds of ``EVAL_POINTS`` on a surface, Chamfer after the bbox normalisation of
``ar_eval.evaluate_text``):

- ``reconstructions``: the VQVAE's one-pass reconstructions of the test objects themselves (the
  issue's yardstick; marching cubes at 48^3 as for samples);
- ``oracle_exact``: for each test caption, the training object that fits it best
  (``mmd_caption_oracle.matches``), its exact surface;
- ``oracle_vqvae``: the same training objects through the VQVAE (one pass, marching cubes), i.e. a
  caption follower that is perfect up to the tokens and the meshing the generator must go through;
- ``generated``: the generator's samples at the shipped settings (seed ``--seed``).

For each set: MMD-CD (mean over reference objects of the distance to the nearest cloud of the set),
the same per category, and the "own" distance (sample i to test object i), which says whether a set's
nearest clouds are its own captions' objects.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sar3d_core.ar_eval import EVAL_POINTS, exact_points, generate_for_captions, mesh_points, test_records
from sar3d_core.data import MultiViewDataset
from sar3d_core.generate import Pipeline
from sar3d_core.metrics import normalize_point_clouds, pairwise_chamfer_distance

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from mmd_caption_oracle import matches, words  # noqa: E402


@torch.no_grad()
def reconstruct(vqvae, folders: list) -> list:
    ds = MultiViewDataset([Path(f) for f in folders], size=vqvae.cfg.image_size)
    clouds = []
    for i in range(len(ds)):
        item = ds[i]
        planes = vqvae.decode_fhat(vqvae.encode(item["encoder_input"][None], item["input_c"][None]).f_hat)
        clouds += mesh_points(vqvae, planes, seed=i)
    return clouds


def distances(clouds: list, ref: torch.Tensor) -> np.ndarray:
    """(G, R) Chamfer of each cloud to each reference; an empty cloud is infinitely far."""
    ok = [i for i, c in enumerate(clouds) if c is not None]
    D = np.full((len(clouds), ref.shape[0]), np.inf)
    g = normalize_point_clouds(torch.stack([clouds[i] for i in ok]))
    D[ok] = pairwise_chamfer_distance(g, normalize_point_clouds(ref), progress=False).numpy()
    return D


def summarise(D: np.ndarray, cats: list) -> dict:
    nearest = D.min(0)
    own = np.diag(D)
    out = {"MMD-CD": float(nearest.mean()), "own_CD": float(own[np.isfinite(own)].mean()),
           "nearest_is_own": float((D.argmin(0) == np.arange(D.shape[1])).mean()),
           "nearest_same_category": float(np.mean([cats[g] == cats[r] for r, g in enumerate(D.argmin(0))])),
           "per_category": {}}
    for c in sorted(set(cats)):
        idx = [i for i, x in enumerate(cats) if x == c]
        out["per_category"][c] = {"objects": len(idx), "MMD-CD": float(nearest[idx].mean())}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    data, train_dir = Path(a.data).expanduser(), Path(a.train).expanduser()
    test = test_records(data, a.limit)
    train = test_records(train_dir)
    train_words = [words(r["caption"]) for r in train]
    oracle = [matches(r, train, train_words, 1)[0][0] for r in test]
    cats = [r["category"] for r in test]
    ref = exact_points(test)
    gen = Pipeline.from_pretrained(a.checkpoint)
    sets = {
        "reconstructions": reconstruct(gen.vqvae, [data / r["folder"] for r in test]),
        "oracle_exact": list(exact_points(oracle)),
        "oracle_vqvae": reconstruct(gen.vqvae, [train_dir / r["folder"] for r in oracle]),
        "generated": mesh_points(gen.vqvae, generate_for_captions(gen, [r["caption"] for r in test],
                                                                  seed=a.seed)["planes"]),
    }
    out = {"data": str(a.data), "train": str(a.train), "checkpoint": a.checkpoint, "seed": a.seed,
           "points": EVAL_POINTS, "sets": {}}
    for name, clouds in sets.items():
        out["sets"][name] = summarise(distances(clouds, ref), cats)
        s = out["sets"][name]
        print(f"{name:16s} MMD-CD {s['MMD-CD'] * 1e3:.2f}e-3  own {s['own_CD'] * 1e3:.2f}e-3  nearest is own "
              f"{s['nearest_is_own']:.0%}  nearest same category {s['nearest_same_category']:.0%}", flush=True)
    print("per category MMD-CD x10^3 (objects): " + "; ".join(
        f"{c} ({v['objects']}): " + " / ".join(f"{out['sets'][n]['per_category'][c]['MMD-CD'] * 1e3:.2f}"
                                              for n in sets)
        for c, v in out["sets"]["generated"]["per_category"].items()))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{out['seconds']} s")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
