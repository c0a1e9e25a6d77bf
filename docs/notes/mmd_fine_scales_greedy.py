"""What if the finest scales were not drawn but taken greedily? A diagnosis, not a shipped setting.

    python docs/notes/mmd_fine_scales_greedy.py --data ~/.cache/sar3d/proc_test_64 --limit 100 \
        --json benchmarks/results/mmd_fine_scales_greedy.json

Each caption's sample is drawn at the shipped settings (CFG 4 ramped, top-k 10, top-p 0.5, seed
``--seed`` + the batch's first index, as ``ar_eval.generate_for_captions``); then its scales
``k+1..K`` are drawn again from the same first k scales with top-k 1 (the most likely token at every
position, the guidance unchanged), for each k in ``--from``. Scored as ``ar_eval.evaluate_text``
scores samples: category / colour by the feature network, COV / MMD-CD against the exact surfaces,
and FID against the exact renders (feature network features, 2 views an object).
"""
import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sar3d_core.ar_eval import (_cloud_metrics, attribute_accuracy_of_views, eval_cameras, exact_points,
                                ground_truth_renders, mesh_points, test_records)
from sar3d_core.featnet import load_default
from sar3d_core.generate import Pipeline
from sar3d_core.metrics import fid_from_features


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default="data_samples/ar_text_tiny")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from", dest="starts", type=int, nargs="+", default=[5, 4, 3])
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    records = test_records(Path(a.data).expanduser(), a.limit)
    gen, featnet = Pipeline.from_pretrained(a.checkpoint), load_default()
    ref, cams = exact_points(records), eval_cameras()
    ref_features = featnet.features(ground_truth_renders(records, 64))
    variants = {"drawn (shipped)": None, **{f"scales {k + 1}-6 greedy": k for k in a.starts}}
    planes = {name: [] for name in variants}
    for b in tqdm(range(0, len(records), a.batch_size), desc="sampling"):
        cond = gen.condition(text=[r["caption"] for r in records[b:b + a.batch_size]])
        drawn = gen.sample_tokens(cond, seed=a.seed + b)
        for name, k in variants.items():
            tokens = drawn if k is None else gen.sample_tokens(cond, seed=a.seed + b, top_k=1, prefix=drawn[:k])
            planes[name].append(gen.vqvae.decode_tokens(tokens))
    out = {"data": str(a.data), "checkpoint": a.checkpoint, "seed": a.seed, "rows": {}}
    for name, parts in planes.items():
        pl = torch.cat(parts)
        views = gen.vqvae.render(pl, cams[None].expand(pl.shape[0], -1, -1), chunk=8192)["rgb"].clamp(0, 1)
        acc = attribute_accuracy_of_views(featnet, views, records)
        fid = fid_from_features(featnet.features(views.flatten(0, 1)), ref_features)["FID"]
        row = {"category_accuracy": acc.get("category"), "colour_accuracy": acc.get("colour"), "FID": fid,
               **{k: v for k, v in _cloud_metrics(mesh_points(gen.vqvae, pl), ref).items() if k != "protocol"}}
        out["rows"][name] = row
        print(f"{name:22s} category {row['category_accuracy']:.1%} colour {row['colour_accuracy']:.1%} "
              f"COV {row['COV-CD']:.0%} MMD-CD {row['MMD-CD'] * 1e3:.2f}e-3 FID {fid:.1f}", flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
