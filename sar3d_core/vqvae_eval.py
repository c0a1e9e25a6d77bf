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
from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import chamfer_distance, mask_iou, psnr, sample_mesh_surface


@torch.no_grad()
def encode_throughput(model, encoder_input_BV: torch.Tensor, input_c_BV: torch.Tensor, repeats: int = 3) -> float:
    """Objects per second through the encoder and the quantizer (best of ``repeats``)."""
    model.eval()
    model.encode(encoder_input_BV[:2], input_c_BV[:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.encode(encoder_input_BV, input_c_BV)
        best = min(best, time.perf_counter() - t0)
    return len(encoder_input_BV) / best


class OracleField:
    """The exact procedural object as a field the volume renderer can read: the best any
    view-independent field could render. Density ``S [sdf < 0]`` (a hard step at the surface,
    opaque within one ray bin), colour the diffuse shading of the albedo under the world's
    fixed lights (``vqvae_train.surface_colour``: what the targets show, less the
    view-dependent highlight) at inside points within ``shell`` of the surface (the first
    sample a ray takes inside lies within one bin of it), white elsewhere (never seen)."""

    def __init__(self, obj, bound: float, density: float = 1e3, shell: float = 0.07):
        self.obj, self.bound, self.density, self.shell = obj, bound, density, shell

    def query(self, _planes, points_BN3: torch.Tensor):
        from .vqvae_train import surface_colour

        p = points_BN3.reshape(-1, 3)
        sdf = self.obj.sdf(p).float().reshape(-1)
        inside = (sdf < 0) & (p.abs() <= self.bound + 1e-4).all(-1)
        sigma = self.density * inside
        rgb = torch.ones_like(p)
        near = inside & (sdf > -self.shell)
        if near.any():
            rgb[near] = surface_colour(self.obj, p[near])
        return sigma.reshape(points_BN3.shape[:2]), rgb.reshape(points_BN3.shape)


@torch.no_grad()
def oracle_render(obj, c_V25: torch.Tensor, size: int, num_samples: int, bound: float, supersample: int = 2) -> dict:
    """The exact object (``OracleField``) through the model's renderer (``render_views``, the same
    ``num_samples``) and the same pixel sampling (``supersample``) -> ``rgb``, ``mask (1, V, C, H, W)``."""
    from .triplane import render_views
    from .vqvae import supersampled

    field = OracleField(obj, bound)
    dummy = torch.zeros(1, 3, 1, 1, 1)
    return supersampled(lambda s: render_views(dummy, field, c_V25[None], s, s, num_samples, chunk=16384),
                        size, supersample)


def hue_saturation(rgb_N3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees and saturation ``(max - min) / max`` of RGB rows in [0, 1] (HSV)."""
    import matplotlib.colors

    hsv = matplotlib.colors.rgb_to_hsv(np.clip(np.asarray(rgb_N3, dtype=float), 0, 1))
    return hsv[:, 0] * 360.0, hsv[:, 1]


def hue_error(true_N3, pred_N3) -> np.ndarray:
    """The angle between the hues of two colours, in degrees (0-180) per row."""
    d = np.abs(hue_saturation(true_N3)[0] - hue_saturation(pred_N3)[0]) % 360.0
    return np.minimum(d, 360.0 - d)


SATURATED = 0.3  # saturation of the true mean colour above which an object counts as saturated (hue error)


@torch.no_grad()
def evaluate_vqvae(model, data, limit: int | None = None, points: int = 2048, mesh_resolution: int = 64,
                   chamfer: bool = True, progress: bool = True, prefixes: bool = True, supersample: int = 2,
                   oracle: bool = True, featnet=None, num_samples: int | None = None) -> dict:
    """The numbers of the module doc over the objects of ``data`` (a built data set folder or chunks).

    Every render uses ``supersample x supersample`` rays per pixel (the data builder's 2 by
    default, so the model is scored like the targets were made). ``oracle``: the exact object
    through the same renderer and pixel sampling (``oracle_render``), for procedural objects.
    ``featnet`` (a ``features.FeatureNet``): its category / colour accuracy on the novel views
    of the reconstructions and of the ground truth. ``num_samples``: samples per ray of every
    render, the oracle's included (default: the model's ``TriplaneSettings.num_samples``); the
    field is continuous (trained with stratified samples), so more samples only resolve thin
    parts that bin midpoints step over.
    """
    from .data import MultiViewDataset
    from .world import make_object

    model.eval()
    cfg = model.cfg
    trained_samples = model.triplane_settings.num_samples
    if num_samples is not None:
        model.triplane_settings = replace(model.triplane_settings, num_samples=int(num_samples))
    try:
        return _evaluate(model, data, limit, points, mesh_resolution, chamfer, progress, prefixes, supersample,
                         oracle, featnet)
    finally:
        model.triplane_settings = replace(model.triplane_settings, num_samples=trained_samples)


def _evaluate(model, data, limit, points, mesh_resolution, chamfer, progress, prefixes, supersample, oracle,
              featnet) -> dict:
    from .data import MultiViewDataset
    from .world import make_object

    cfg = model.cfg
    dataset = MultiViewDataset(data, size=cfg.image_size, target_views=range(12))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise ValueError(f"{data} holds no objects to evaluate")
    K, n_in = len(cfg.scales), cfg.num_input_views
    rows, used = [], torch.zeros(cfg.codebook_size, dtype=torch.bool)
    inputs, novel_pred, novel_true = [], [], []
    for i in tqdm(range(n), desc="evaluating", disable=not progress):
        item = dataset[i]
        x, xc = item["encoder_input"][None], item["input_c"][None]
        inputs.append((item["encoder_input"], item["input_c"]))
        q = model.encode(x, xc)
        for t in q.tokens:
            used[t.flatten()] = True
        gt_rgb, gt_mask, c = item["target_rgb"], item["target_mask"], item["target_c"][None]
        views = gt_rgb.shape[0]
        row = {"id": item["id"], "seed": int(item["seed"])}
        for k in (range(1, K + 1) if prefixes else [K]):
            planes = model.decode_tokens(q.tokens, k)
            out = model.render(planes, c, cfg.image_size, chunk=8192, supersample=supersample)
            p = psnr(out["rgb"][0].clamp(0, 1), gt_rgb)
            row[f"psnr_scale_{k}"] = float(p.mean())
            if k < K:
                continue
            row["psnr_input"], row["psnr"] = float(p[:n_in].mean()), float(p.mean())
            row["psnr_novel"] = float(p[n_in:].mean()) if views > n_in else float("nan")
            row["mask_iou"] = float(mask_iou(out["mask"][0], gt_mask).mean())
            seen = slice(n_in, views) if views > n_in else slice(0, views)  # the novel views, if any
            inside = (gt_mask[seen] > 0.5).to(gt_rgb.dtype)
            area = inside.sum().clamp(min=1.0)
            row["colour_true"] = ((gt_rgb[seen] * inside).sum((0, 2, 3)) / area).tolist()
            row["colour_pred"] = ((out["rgb"][0, seen].clamp(0, 1) * inside).sum((0, 2, 3)) / area).tolist()
            novel_pred.append(out["rgb"][0, seen].clamp(0, 1))
            novel_true.append(gt_rgb[seen])
            if oracle and row["seed"] >= 0:
                ref = oracle_render(make_object(row["seed"]), c[0], cfg.image_size,
                                    model.triplane_settings.num_samples, model.field.bound, supersample)
                row["psnr_oracle"] = float(psnr(ref["rgb"][0].clamp(0, 1), gt_rgb).mean())
                row["mask_iou_oracle"] = float(mask_iou(ref["mask"][0], gt_mask).mean())
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
    keys = ["psnr", "psnr_input", "psnr_novel", "mask_iou", "psnr_oracle", "mask_iou_oracle", "chamfer_x1e3"]
    keys += [f"psnr_scale_{k}" for k in range(1, K + 1)]
    summary = {k: float(np.nanmean([r[k] for r in rows])) for k in keys if any(k in r for r in rows)}
    summary.update(objects=n, supersample=supersample, num_samples=model.triplane_settings.num_samples)
    summary.update(colour_summary(np.array([r["colour_true"] for r in rows]), np.array([r["colour_pred"] for r in rows])))
    if featnet is not None:
        summary.update(featnet_summary(featnet, torch.cat(novel_pred), torch.cat(novel_true), rows, data))
    summary["codebook_used"] = int(used.sum())
    summary["codebook_usage"] = float(used.float().mean())
    summary["encode_objects_per_second"] = encode_throughput(
        model, torch.stack([a for a, _ in inputs[:16]]), torch.stack([b for _, b in inputs[:16]]))
    summary["threads"] = torch.get_num_threads()
    return {"summary": summary, "objects": rows}


def colour_summary(true_N3: np.ndarray, pred_N3: np.ndarray) -> dict:
    """Per-object mean colours, true against rendered: the correlation of each channel, the mean
    absolute error, and the hue error (degrees) over the objects whose true colour is saturated."""
    n = len(true_N3)
    err = hue_error(true_N3, pred_N3)
    saturated = hue_saturation(true_N3)[1] >= SATURATED
    return {"colour_corr_rgb": [float(np.corrcoef(true_N3[:, c], pred_N3[:, c])[0, 1]) if n > 1 else float("nan")
                                for c in range(3)],
            "colour_mae": float(np.abs(true_N3 - pred_N3).mean()),
            "hue_error_deg": float(err[saturated].mean()) if saturated.any() else float("nan"),
            "hue_error_median_deg": float(np.median(err[saturated])) if saturated.any() else float("nan"),
            "saturated_objects": int(saturated.sum())}


def featnet_summary(featnet, pred_NCHW: torch.Tensor, true_NCHW: torch.Tensor, rows: list, data) -> dict:
    """Category and colour accuracy of ``featnet`` on the rendered and on the true views (same views)."""
    from .ar_eval import labels_of_record, test_records
    from .features import attribute_accuracy

    by_seed = {int(r["seed"]): r for r in test_records(data)}
    if not all(r["seed"] in by_seed for r in rows):
        return {}
    per_object = len(pred_NCHW) // len(rows)
    labels = [labels_of_record(by_seed[r["seed"]]) for r in rows for _ in range(per_object)]
    rec, clean = attribute_accuracy(featnet, pred_NCHW, labels), attribute_accuracy(featnet, true_NCHW, labels)
    return {"feature_network": featnet.name, "category_accuracy": rec.get("category"),
            "colour_accuracy": rec.get("colour"), "category_accuracy_clean": clean.get("category"),
            "colour_accuracy_clean": clean.get("colour")}


def format_summary(s: dict) -> str:
    scales = sorted(int(k[len("psnr_scale_"):]) for k in s if k.startswith("psnr_scale_"))
    ss = s.get("supersample", 1)
    lines = [f"objects: {s['objects']}; every render with {ss}x{ss} rays per pixel, as the targets, "
             f"and {s.get('num_samples', '?')} samples per ray",
             f"PSNR (all views): {s['psnr']:.2f} dB  (input views {s['psnr_input']:.2f}, novel views {s['psnr_novel']:.2f})"
             + (f"; the exact object through the same renderer (oracle): {s['psnr_oracle']:.2f} dB"
                if "psnr_oracle" in s else ""),
             f"mask IoU: {s['mask_iou']:.4f}" + (f" (oracle {s['mask_iou_oracle']:.4f})" if "mask_iou_oracle" in s else ""),
             "PSNR by scales decoded: " + ", ".join(f"1..{k}: {s[f'psnr_scale_{k}']:.2f}" for k in scales),
             "mean colour inside the true mask (novel views): correlation R/G/B "
             + " / ".join(f"{v:.3f}" for v in s["colour_corr_rgb"]) + f", mean absolute error {s['colour_mae']:.4f}",
             f"hue error on the {s['saturated_objects']} saturated objects (saturation >= {SATURATED}): "
             f"mean {s['hue_error_deg']:.1f} deg, median {s['hue_error_median_deg']:.1f} deg",
             f"codebook usage: {s['codebook_used']} entries ({s['codebook_usage']:.1%})",
             f"encoding: {s['encode_objects_per_second']:.1f} objects/s ({s['threads']} threads)"]
    if "category_accuracy" in s:
        lines.append(f"{s['feature_network']}: category {s['category_accuracy']:.1%} of the reconstructions "
                     f"({s['category_accuracy_clean']:.1%} of the true views), colour {s['colour_accuracy']:.1%} "
                     f"({s['colour_accuracy_clean']:.1%})")
    if "chamfer_x1e3" in s:
        lines.append(f"Chamfer distance of the extracted surface (x1e3): {s['chamfer_x1e3']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from .features import load_default as load_featnet
    from .vqvae import SAR3DVQVAE
    from .vqvae_train import DEFAULT_CHECKPOINT

    p = argparse.ArgumentParser(description="Evaluate a 3D VQVAE on a test set (PSNR, IoU, colour, hue, codebook).")
    p.add_argument("--data", required=True, help="a built data set folder (sar3d data build --split test)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--no-chamfer", action="store_true")
    p.add_argument("--no-prefixes", action="store_true", help="render all K scales only, not every prefix 1..k")
    p.add_argument("--no-oracle", action="store_true", help="skip the exact object through the same renderer")
    p.add_argument("--no-featnet", action="store_true", help="skip the feature network's category/colour accuracy")
    p.add_argument("--supersample", type=int, default=2,
                   help="rays per pixel along each side (default 2, as the data builder renders the targets)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per ray of every render, the oracle's too (default: the model's own)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write summary and per-object rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = SAR3DVQVAE.from_pretrained(args.checkpoint)
    featnet = None if args.no_featnet else load_featnet()
    result = evaluate_vqvae(model, args.data, args.limit, args.points, chamfer=not args.no_chamfer,
                            prefixes=not args.no_prefixes, supersample=args.supersample, oracle=not args.no_oracle,
                            featnet=featnet, num_samples=args.samples)
    result["checkpoint"], result["data"] = str(args.checkpoint), str(args.data)
    print(format_summary(result["summary"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
