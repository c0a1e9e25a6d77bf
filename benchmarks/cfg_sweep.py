"""Guidance sweep of the shipped text generator: does classifier-free guidance improve alignment?

    python benchmarks/cfg_sweep.py --data ~/.cache/sar3d/proc_test_64 --prompts 40 --seeds 2 \
        --json benchmarks/results/cfg_sweep.json --plot benchmarks/results/cfg_sweep.png

For each guidance scale s (0-6) and schedule (the official linear ramp over the scales, or
constant), one sample per prompt and seed: category and colour accuracy judged by the offline
feature network from two views, and diversity, the mean feature distance between two samples
of the same prompt. The prompts: the first ``--prompts`` test captions and the 15 plain
short prompts of ``ar_eval.short_prompts(1)``.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sar3d_core.ar_eval import EVAL_AZIMUTHS, generate_for_captions, labels_of_record, short_prompts, test_records
from sar3d_core.featnet import attribute_accuracy, load_default
from sar3d_core.generate import DEFAULT_TEXT, Pipeline


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default=str(DEFAULT_TEXT))
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    gen, featnet = Pipeline.from_pretrained(a.checkpoint), load_default()
    records = test_records(a.data, a.prompts)
    short = short_prompts(1)
    prompts = [r["caption"] for r in records] + [q for q, _, _ in short]
    labels = [labels_of_record(r) for r in records] + [{"category": c, "colour": k} for _, c, k in short]
    V = len(EVAL_AZIMUTHS)
    rows, t0 = [], time.perf_counter()
    for schedule in ("linear", "constant"):
        for s in a.scales:
            if s == 0.0 and schedule == "constant":
                continue  # no guidance: the schedule does not matter
            n = len(records)
            accs = {"all": [], "captions": [], "short": []}
            feats = []
            for seed in range(a.seeds):
                views = generate_for_captions(gen, prompts, seed=1000 * seed, progress=False, cfg=s,
                                              cfg_schedule=schedule)["views"]
                imgs = views.flatten(0, 1)  # (prompts * V, 3, H, W), prompt-major
                per_image = [l for l in labels for _ in range(V)]
                for name, lo, hi in (("all", 0, len(prompts)), ("captions", 0, n), ("short", n, len(prompts))):
                    accs[name].append(attribute_accuracy(featnet, imgs[lo * V:hi * V], per_image[lo * V:hi * V]))
                feats.append(featnet.features(imgs).view(len(prompts), V, -1).mean(1))
            div = float((feats[0] - feats[1]).norm(dim=-1).mean()) if a.seeds > 1 else float("nan")
            row = {"schedule": schedule, "cfg": s, "diversity": div}
            for name, got in accs.items():
                suffix = "" if name == "all" else f"_{name}"
                row["category" + suffix] = float(np.mean([x["category"] for x in got]))
                row["colour" + suffix] = float(np.mean([x["colour"] for x in got]))
            rows.append(row)
            print(json.dumps(row))
    out = {"checkpoint": a.checkpoint, "prompts": len(prompts), "test_captions": len(records),
           "short_prompts": len(short), "seeds": a.seeds, "feature_network": featnet.config.name,
           "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for schedule, ls in (("linear", "-"), ("constant", "--")):
            rs = [r for r in rows if r["schedule"] == schedule or r["cfg"] == 0.0]
            x = [r["cfg"] for r in rs]
            axes[0].plot(x, [r["category"] for r in rs], "o" + ls, color="C0", label=f"category ({schedule})")
            axes[0].plot(x, [r["colour"] for r in rs], "s" + ls, color="C1", label=f"colour ({schedule})")
            axes[1].plot(x, [r["diversity"] for r in rs], "o" + ls, color="C2", label=schedule)
        axes[0].set(xlabel="guidance scale s", ylabel="accuracy", ylim=(0, 1))
        axes[1].set(xlabel="guidance scale s", ylabel="diversity (feature distance, 2 seeds)")
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=7)
        fig.suptitle(f"{gen.name}: {len(prompts)} prompts x {a.seeds} seeds", fontsize=9)
        plt.tight_layout()
        fig.savefig(a.plot, dpi=110)
    return out


if __name__ == "__main__":
    main()
