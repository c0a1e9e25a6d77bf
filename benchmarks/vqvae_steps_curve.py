"""Reconstruction PSNR and mask IoU against training steps (issue 4, "what would lift it").

A training run keeps only its newest checkpoint (``training.py``), so copies of
``RUN/checkpoint`` taken while it trained (each a folder with ``model.safetensors`` and
``state.json``) are passed here; each is scored by ``vqvae_eval.evaluate_vqvae`` with all K
scales on the first ``--limit`` test objects (no prefix renders, no Chamfer):

    PYTHONPATH=. .venv/bin/python benchmarks/vqvae_steps_curve.py --run runs/vqvae_retime \\
        --data ~/.cache/sar3d/test64 --limit 30 --json benchmarks/results/vqvae_steps_curve.json \\
        /tmp/retime_ckpts/step_*
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sar3d_core.vqvae_eval import evaluate_vqvae
from sar3d_core.vqvae_train import load_run_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="the training run's folder (its objective.json)")
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", required=True)
    p.add_argument("--png", default=None, help="the curve as a figure (default: beside --json)")
    p.add_argument("checkpoints", nargs="+", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for folder in args.checkpoints:
        model, state = load_run_checkpoint(args.run, folder)
        step = int(state["step"])
        s = evaluate_vqvae(model, args.data, args.limit, chamfer=False, prefixes=False)["summary"]
        rows.append({"step": step, "psnr": s["psnr"], "psnr_novel": s["psnr_novel"], "mask_iou": s["mask_iou"],
                     "codebook_usage": s["codebook_usage"], "colour_mae": s["colour_mae"]})
        print(f"step {step}: PSNR {s['psnr']:.2f} dB, IoU {s['mask_iou']:.3f}, usage {s['codebook_usage']:.1%}")
    rows.sort(key=lambda r: r["step"])
    out = {"run": str(args.run), "data": str(args.data), "objects": args.limit, "threads": args.threads, "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    steps = [r["step"] for r in rows]
    a.plot(steps, [r["psnr"] for r in rows], "o-")
    a.set(xlabel="training step", ylabel="PSNR, 12 views (dB)", title=f"{args.run.name}: {args.limit} test objects")
    b.plot(steps, [r["mask_iou"] for r in rows], "o-", color="C1")
    b.set(xlabel="training step", ylabel="mask IoU")
    fig.tight_layout()
    fig.savefig(args.png or str(Path(args.json).with_suffix(".png")), dpi=100)


if __name__ == "__main__":
    main()
