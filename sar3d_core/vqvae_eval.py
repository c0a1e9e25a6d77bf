"""Measuring the 3D VQVAE on the test split (paper Sec. 4.1 and 5; the targets of issue 4).

``evaluate_vqvae(model, data)`` encodes each object from its 6 input views, quantizes it
with all K scales (Alg. 1) and renders **all 12 views** (the 6 inputs and 6 novel ones)
at full resolution; it reports

* PSNR of RGB on white (per view, averaged), split into input and novel views, and mask IoU
  (opacity > 0.5 against the ground-truth mask);
* PSNR after decoding only the first k scales (Alg. 2 on a prefix), for every k (``prefixes``;
  ``--no-prefixes`` renders all K scales only, 6x fewer renders for the tiny schedule, for
  following a training run);
* codebook usage: distinct entries picked over the whole split, over V;
* Chamfer distance (x 10^3, squared, summed over both directions, world units) between the
  marching-cubes surface (``meshing.extract_mesh``) and the exact surface of procedural
  objects (``ProceduralObject.sample_surface``), on ``points`` samples each;
* encoding throughput: objects per second through encoder + quantizer (batch 16);
* colour: the mean colour inside the true mask over the novel views, rendered against true,
  per object; across objects, the correlation of each channel (R, G, B) and the mean
  absolute error. PSNR on white is mostly background and silhouette; this says whether
  the objects come back in their own colours.

Run it as ``python -m sar3d_core.vqvae_eval --data FOLDER [--checkpoint DIR]``; the numbers
of the README come from that command.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import chamfer_distance, mask_iou, psnr, sample_mesh_surface


@torch.no_grad()
def encode_throughput(model, encoder_input_BV: torch.Tensor, repeats: int = 3) -> float:
    """Objects per second through the encoder and the quantizer (best of ``repeats``)."""
    model.eval()
    model.encode(encoder_input_BV[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.encode(encoder_input_BV)
        best = min(best, time.perf_counter() - t0)
    return len(encoder_input_BV) / best


@torch.no_grad()
def evaluate_vqvae(model, data, limit: int | None = None, points: int = 2048, mesh_resolution: int = 64,
                   chamfer: bool = True, progress: bool = True, prefixes: bool = True) -> dict:
    """The numbers of the module doc over the objects of ``data`` (a built data set folder or chunks)."""
    from .data import MultiViewDataset
    from .world import make_object

    model.eval()
    cfg = model.cfg
    dataset = MultiViewDataset(data, size=cfg.image_size, target_views=range(12))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    K = len(cfg.scales)
    rows, used = [], torch.zeros(cfg.codebook_size, dtype=torch.bool)
    inputs = []
    for i in tqdm(range(n), desc="evaluating", disable=not progress):
        item = dataset[i]
        x = item["encoder_input"][None]
        inputs.append(item["encoder_input"])
        q = model.encode(x)
        for t in q.tokens:
            used[t.flatten()] = True
        gt_rgb, gt_mask, c = item["target_rgb"], item["target_mask"], item["target_c"][None]
        row = {"id": item["id"], "seed": int(item["seed"])}
        for k in (range(1, K + 1) if prefixes else [K]):
            planes = model.decode_tokens(q.tokens, k)
            out = model.render(planes, c, cfg.image_size, chunk=8192)
            p = psnr(out["rgb"][0].clamp(0, 1), gt_rgb)
            row[f"psnr_scale_{k}"] = float(p.mean())
            if k == K:
                row["psnr_input"], row["psnr_novel"] = float(p[:6].mean()), float(p[6:].mean())
                row["psnr"] = float(p.mean())
                row["mask_iou"] = float(mask_iou(out["mask"][0], gt_mask).mean())
                inside = (gt_mask[6:] > 0.5).to(gt_rgb.dtype)  # (6, 1, H, W), novel views
                area = inside.sum().clamp(min=1.0)
                row["colour_true"] = ((gt_rgb[6:] * inside).sum((0, 2, 3)) / area).tolist()
                row["colour_pred"] = ((out["rgb"][0, 6:].clamp(0, 1) * inside).sum((0, 2, 3)) / area).tolist()
                if chamfer and row["seed"] >= 0:
                    from .meshing import extract_mesh

                    try:
                        mesh = extract_mesh(model.field, planes, model.triplane_settings.num_samples, mesh_resolution)
                        pred = sample_mesh_surface(mesh, points, seed=i)
                        exact = make_object(row["seed"]).sample_surface(points, seed=i).float()
                        row["chamfer_x1e3"] = float(chamfer_distance(pred.float(), exact)) * 1e3
                    except ValueError:
                        row["chamfer_x1e3"] = float("nan")
        rows.append(row)
    keys = ["psnr", "psnr_input", "psnr_novel", "mask_iou"] + [f"psnr_scale_{k}" for k in range(1, K + 1)
                                                                if f"psnr_scale_{k}" in rows[0]]
    if chamfer and any("chamfer_x1e3" in r for r in rows):
        keys.append("chamfer_x1e3")
    summary = {k: float(np.nanmean([r[k] for r in rows if k in r])) for k in keys}
    summary["objects"] = n
    true, pred = np.array([r["colour_true"] for r in rows]), np.array([r["colour_pred"] for r in rows])
    summary["colour_corr_rgb"] = [float(np.corrcoef(true[:, c], pred[:, c])[0, 1]) if n > 1 else float("nan")
                                  for c in range(3)]
    summary["colour_mae"] = float(np.abs(true - pred).mean())
    summary["codebook_used"] = int(used.sum())
    summary["codebook_usage"] = float(used.float().mean())
    summary["encode_objects_per_second"] = encode_throughput(model, torch.stack(inputs[:16]))
    summary["threads"] = torch.get_num_threads()
    return {"summary": summary, "objects": rows}


def format_summary(s: dict) -> str:
    scales = sorted(int(k[len("psnr_scale_"):]) for k in s if k.startswith("psnr_scale_"))
    lines = [f"objects: {s['objects']}",
             f"PSNR (12 views): {s['psnr']:.2f} dB  (input views {s['psnr_input']:.2f}, novel views {s['psnr_novel']:.2f})",
             f"mask IoU: {s['mask_iou']:.4f}",
             "PSNR by scales decoded: " + ", ".join(f"1..{k}: {s[f'psnr_scale_{k}']:.2f}" for k in scales),
             "mean colour on the novel views inside the true mask: correlation R/G/B "
             + " / ".join(f"{v:.3f}" for v in s["colour_corr_rgb"]) + f", mean absolute error {s['colour_mae']:.4f}",
             f"codebook usage: {s['codebook_used']} entries ({s['codebook_usage']:.1%})",
             f"encoding: {s['encode_objects_per_second']:.1f} objects/s ({s['threads']} threads)"]
    if "chamfer_x1e3" in s:
        lines.append(f"Chamfer distance of the extracted surface (x1e3): {s['chamfer_x1e3']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from .vqvae import SAR3DVQVAE
    from .vqvae_train import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(description="Evaluate a 3D VQVAE on a test set (the numbers of issue 4).")
    p.add_argument("--data", required=True, help="a built data set folder (sar3d data build --split test)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--no-chamfer", action="store_true")
    p.add_argument("--no-prefixes", action="store_true", help="render all K scales only, not every prefix 1..k")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write summary and per-object rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = SAR3DVQVAE.from_pretrained(args.checkpoint)
    result = evaluate_vqvae(model, args.data, args.limit, args.points, chamfer=not args.no_chamfer,
                            prefixes=not args.no_prefixes)
    result["checkpoint"], result["data"] = str(args.checkpoint), str(args.data)
    print(format_summary(result["summary"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
