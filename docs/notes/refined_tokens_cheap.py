"""How cheap can token refinement be and still keep its colour? (one-off diagnosis)

Refines the tokens of the first ``--limit`` objects of a data set in batches, as
``sar3d data tokenize --refine-steps`` does, for several (steps, rays) settings, times each, and
judges the decoded objects from the generators' evaluation cameras (``ar_eval.eval_cameras``) with the
feature network: category and colour accuracy, and PSNR against the exact renders. This is the
number a generator trained on such tokens could at best reach (``ar_eval.reconstruction_reference``
measures the one pass the same way).

    python docs/notes/refined_tokens_cheap.py --data ~/.cache/sar3d/proc_test_64 --limit 48 \
        --settings 0:0 50:512 50:2048 100:2048 --json benchmarks/results/refined_tokens_cheap.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sar3d_core.ar_eval import attribute_accuracy_of_views, eval_cameras, ground_truth_renders, test_records
from sar3d_core.data import MultiViewDataset
from sar3d_core.featnet import load_default as load_featnet
from sar3d_core.metrics import psnr
from sar3d_core.vqvae import SAR3DVQVAE


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default="data_samples/vqvae_tiny_lift")
    p.add_argument("--limit", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--settings", nargs="+", default=["0:0", "50:512", "100:2048"], help="steps:rays (0:0 the one pass)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = SAR3DVQVAE.from_pretrained(args.checkpoint).eval()
    featnet = load_featnet()
    records = test_records(args.data, args.limit)
    ds = MultiViewDataset(args.data, size=model.cfg.image_size)
    truth = ground_truth_renders(records, 64).unflatten(0, (len(records), -1))
    c = eval_cameras()[None]
    rows = []
    for setting in args.settings:
        steps, rays = (int(v) for v in setting.split(":"))
        seconds, views = 0.0, []
        for start in range(0, len(records), args.batch_size):
            items = [ds[i] for i in range(start, min(start + args.batch_size, len(records)))]
            x = torch.stack([it["encoder_input"] for it in items])
            cam = torch.stack([it["input_c"] for it in items])
            t0 = time.perf_counter()
            q = model.encode_refined(x, cam, steps, rays=max(rays, 1), seed=start) if steps else model.encode(x, cam)
            seconds += time.perf_counter() - t0
            with torch.no_grad():
                planes = model.decode_fhat(q.f_hat)
                views.append(model.render(planes, c.expand(len(items), -1, -1), 64, chunk=8192)["rgb"].clamp(0, 1))
        views = torch.cat(views)
        acc = attribute_accuracy_of_views(featnet, views, records)
        row = {"steps": steps, "rays": rays, "seconds_per_object": round(seconds / len(records), 3),
               "category": round(100 * acc["category"], 1), "colour": round(100 * acc["colour"], 1),
               "psnr_eval_views": round(float(psnr(views.flatten(0, 1), truth.flatten(0, 1)).mean()), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"data": args.data, "objects": len(records), "batch_size": args.batch_size, "threads": args.threads,
              "feature_network": featnet.config.name, "rows": rows}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
