"""Main-colour accuracy per pattern under one or more feature networks (judges).

The same 100 test objects (``proc_test_64``), seen from ``ar_eval.eval_cameras``, as:
clean renders (exact objects), the shipped VQVAE's reconstructions, and the shipped text
generator's samples for their captions (two sampling seeds, the shipped settings: CFG 4 with the
ramp, top-k 10, top-p 0.5). The views are computed once and cached; each judge then reads them.

    python docs/notes/judge_colour_by_pattern.py --judge data_samples/feature_net runs/feature_net_v11_export \
        --json benchmarks/results/judge_colour_by_pattern.json
"""
import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

from sar3d_core import ar_eval
from sar3d_core.data import MultiViewDataset, default_cache_dir
from sar3d_core.featnet import FeatureNet
from sar3d_core.generate import DEFAULT_TEXT, Pipeline


def views_of(data: str, limit: int, seeds, cache: Path) -> dict:
    if cache.is_file():
        return torch.load(cache, weights_only=False)
    records = ar_eval.test_records(data, limit)
    gen = Pipeline.from_pretrained(DEFAULT_TEXT)
    out = {"records": records, "clean": ar_eval.ground_truth_renders(records, 64).unflatten(0, (len(records), -1))}
    ds, c, recon = MultiViewDataset(data, size=gen.vqvae.cfg.image_size), ar_eval.eval_cameras()[None], []
    with torch.no_grad():
        for i in range(len(records)):
            planes = gen.vqvae.decode_fhat(gen.vqvae.encode(ds[i]["encoder_input"][None], ds[i]["input_c"][None]).f_hat)
            recon.append(gen.vqvae.render(planes, c, 64, chunk=8192)["rgb"].clamp(0, 1))
    out["reconstruction"] = torch.cat(recon)
    for seed in seeds:
        out[f"generated (seed {seed})"] = ar_eval.generate_for_captions(
            gen, [r["caption"] for r in records], seed=seed, progress=False, cfg=4.0)["views"]
    out["generator"] = gen.name
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--judge", nargs="+", required=True, help="feature network checkpoint folders")
    ap.add_argument("--data", default=str(Path("~/.cache/sar3d/proc_test_64").expanduser()))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1000])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    v = views_of(a.data, a.limit, a.seeds, default_cache_dir() / "judge_views" / f"test{a.limit}_seeds{'-'.join(map(str, a.seeds))}.pt")
    records = v["records"]
    sets = [k for k in v if k not in ("records", "generator")]
    out = {"objects": len(records), "views_per_object": 2, "generator": v.get("generator"), "judges": {}}
    for folder in a.judge:
        net = FeatureNet.from_pretrained(folder)
        rows = {}
        for name in sets:
            views = v[name]
            pred = net.predict(views.flatten(0, 1))["colour"]
            by = collections.defaultdict(list)
            for i, r in enumerate(records):
                for j in range(views.shape[1]):
                    by[r["attributes"]["pattern"]].append(pred[i * views.shape[1] + j] == r["attributes"]["colour"])
            rows[name] = {"colour": round(100 * float(np.mean([x for xs in by.values() for x in xs])), 1),
                          **{p: round(100 * float(np.mean(xs)), 1) for p, xs in sorted(by.items())}}
        out["judges"][net.name] = {"folder": folder, "rows": rows}
        patterns = [p for p in rows[sets[0]] if p != "colour"]
        print(f"\n{net.name} ({folder})")
        print(f"| renders | colour | " + " | ".join(f"{p} ({sum(r['attributes']['pattern'] == p for r in records)})"
                                                   for p in patterns) + " |")
        print("|---" * (len(patterns) + 2) + "|")
        for name, row in rows.items():
            print(f"| {name} | {row['colour']:.1f}% | " + " | ".join(f"{row[p]:.1f}" for p in patterns) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
