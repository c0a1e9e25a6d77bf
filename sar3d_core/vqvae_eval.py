"""Measuring the 3D VQVAE on the test split (paper Sec. 4.1 and 5).

``evaluate_vqvae(model, data)`` encodes each object from its 6 input views
(``data.INPUT_VIEWS``), quantizes it with all K scales (Alg. 1) and renders **all 12 views**
(``EVAL_VIEWS``: the 6 inputs and the 6 novel ones, ``data.TARGET_VIEWS``) at full
resolution; it reports

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

``evaluate_object(model, item)`` gives the per-object numbers of one object (its row of the
report, with the renders); ``codebook_usage`` and ``summarise_objects`` combine several.
Run it as ``python -m sar3d_core.vqvae_eval --data FOLDER [--checkpoint DIR]``; the numbers
of the README come from that command.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import INPUT_VIEWS, TARGET_VIEWS, MultiViewDataset
from .metrics import mask_iou, mesh_chamfer, psnr
from .triplane import render_images
from .views import MultiView
from .world import make_object


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
def oracle_render(obj, c_V25: torch.Tensor, size: int, num_samples: int, bound: float, supersample: int = 2,
                  importance_samples: int = 0) -> dict:
    """The exact object (``OracleField``) through the model's renderer (``triplane.render_images``, the
    same ``num_samples`` and ``importance_samples``) and the same pixel sampling (``supersample``) ->
    ``rgb``, ``mask (1, V, C, H, W)``."""
    from .vqvae import supersampled

    field = OracleField(obj, bound)
    dummy = torch.zeros(1, 3, 1, 1, 1)
    return supersampled(lambda s: render_images(dummy, field, c_V25[None], s, s, num_samples, chunk=16384,
                                                importance_samples=importance_samples),
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
EVAL_VIEWS = INPUT_VIEWS + TARGET_VIEWS  # every view of a chunk, rendered and scored: the inputs, then the novel ones


def novel_views(views: int) -> slice:
    """The novel views among ``views`` rendered in ``EVAL_VIEWS`` order (those after the
    ``len(INPUT_VIEWS)`` inputs), or all of them when there are no more than the inputs."""
    n_in = len(INPUT_VIEWS)
    return slice(n_in, views) if views > n_in else slice(0, views)


def views_item(mv: MultiView, seed: int = -1, object_id: str = "") -> dict:
    """An object's views (``views.MultiView`` in the chunk layout, e.g. ``data.load_views(..., num_views=12)``)
    as an evaluation item: the keys of a ``data.MultiViewDataset`` item, its ``INPUT_VIEWS`` as the
    encoder input and all ``EVAL_VIEWS`` as targets. ``seed``: the procedural seed (-1: none)."""
    if mv.num_views < len(EVAL_VIEWS):
        raise ValueError(f"an evaluation item needs the {len(EVAL_VIEWS)} views of a chunk; got {mv.num_views}")
    src, tgt = mv.select(list(INPUT_VIEWS)), mv.select(list(EVAL_VIEWS))
    return {"encoder_input": src.encoder_input(), "input_c": src.c, "target_rgb": tgt.rgb,
            "target_depth": tgt.depth, "target_mask": tgt.mask, "target_normal": tgt.normal, "target_c": tgt.c,
            "caption": mv.caption or "", "seed": int(seed), "id": object_id or (f"proc:{seed}" if seed >= 0 else "")}


@dataclass
class ObjectReconstruction:
    """One object encoded, quantized with all K scales, decoded and rendered at its target views.

    ``metrics`` is its row of ``evaluate_vqvae``'s ``"objects"``; ``rgb (V, 3, H, W)`` in [0, 1]
    and ``mask (V, 1, H, W)`` the renders, ``oracle_rgb`` the oracle's (or ``None``), ``novel``
    the novel views among them, ``planes`` the decoded feature triplane ``(1, 3, F, H', W')``.
    """

    metrics: dict
    tokens: list
    planes: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor
    oracle_rgb: torch.Tensor | None
    novel: slice

    @property
    def hue_error_deg(self) -> float:
        """The hue error of the mean colour over the novel views (``hue_error``), in degrees."""
        m = self.metrics
        return float(hue_error(np.array([m["colour_true"]]), np.array([m["colour_pred"]]))[0])


def render_tokens(model, tokens: list, c_1V25: torch.Tensor, supersample: int,
                  num_scales: int | None = None) -> tuple[torch.Tensor, dict]:
    """Alg. 2 on the first ``num_scales`` scales (default all), then full renders at the
    cameras, ``supersample^2`` rays per pixel -> ``(planes, {"rgb", "depth", "mask"})``."""
    planes = model.decode_tokens(tokens, num_scales or len(model.cfg.scales))
    return planes, model.render(planes, c_1V25, model.cfg.image_size, chunk=8192, supersample=supersample)


def image_metrics(rgb_V3HW: torch.Tensor, mask_V1HW: torch.Tensor, true_rgb: torch.Tensor,
                  true_mask: torch.Tensor) -> dict:
    """PSNR on white per view, averaged over the input views, all views and the novel views
    (views in ``EVAL_VIEWS`` order), and the mean mask IoU (opacity > 0.5)."""
    p, n_in = psnr(rgb_V3HW, true_rgb), len(INPUT_VIEWS)
    return {"psnr_input": float(p[:n_in].mean()), "psnr": float(p.mean()),
            "psnr_novel": float(p[n_in:].mean()) if len(p) > n_in else float("nan"),
            "mask_iou": float(mask_iou(mask_V1HW, true_mask).mean())}


def mean_colours(rgb_V3HW: torch.Tensor, true_rgb: torch.Tensor, true_mask: torch.Tensor) -> dict:
    """The mean colour inside the true mask, true and rendered: ``colour_true``, ``colour_pred`` (lists of 3)."""
    inside = (true_mask > 0.5).to(true_rgb.dtype)
    area = inside.sum().clamp(min=1.0)
    return {"colour_true": ((true_rgb * inside).sum((0, 2, 3)) / area).tolist(),
            "colour_pred": ((rgb_V3HW * inside).sum((0, 2, 3)) / area).tolist()}


def surface_chamfer(model, planes: torch.Tensor, obj, points: int, resolution: int, seed: int = 0) -> float:
    """Chamfer distance (``metrics.mesh_chamfer``) between the marching-cubes surface of the field
    (``meshing.extract_mesh``) and ``points`` samples of the exact surface; NaN without a surface."""
    from .meshing import extract_mesh

    try:
        mesh = extract_mesh(model.field, planes, model.triplane_settings.num_samples, resolution)
        return mesh_chamfer(mesh, obj.sample_surface(points, seed=seed), seed=seed)
    except ValueError:
        return float("nan")


@torch.no_grad()
def evaluate_object(model, item: dict, *, prefixes: bool = True, supersample: int = 2, oracle: bool = True,
                    chamfer: bool = True, points: int = 2048, mesh_resolution: int = 64,
                    surface_seed: int = 0, refine_steps: int = 0, refine_seed: int = 0) -> ObjectReconstruction:
    """The reconstruction numbers of one object (module doc), from an item with the keys of
    ``data.MultiViewDataset`` and all ``EVAL_VIEWS`` as targets (``views_item`` makes one).

    The metrics: ``psnr_scale_k`` (every prefix with ``prefixes``, else only ``K``),
    ``image_metrics``, ``mean_colours`` over the novel views, and for procedural objects
    (``seed >= 0``) the oracle's ``psnr_oracle`` and ``mask_iou_oracle`` (``oracle``) and
    ``chamfer_x1e3`` (``chamfer``; ``surface_seed`` seeds both surface samplings).
    ``refine_steps > 0`` encodes with ``SAR3DVQVAE.encode_refined`` (fitted to the input views
    only; ``refine_seed`` seeds its rays) instead of the encoder's one pass.
    """
    model.eval()
    K, true_rgb, true_mask = len(model.cfg.scales), item["target_rgb"], item["target_mask"]
    c = item["target_c"][None]
    n_in, start = item["encoder_input"].shape[0], time.perf_counter()
    q = model.encode_refined(item["encoder_input"][None], item["input_c"][None], refine_steps,
                             input_mask=true_mask[None, :n_in], seed=refine_seed)
    row = {"id": item["id"], "seed": int(item["seed"])}
    if refine_steps:
        row["refine_seconds"] = time.perf_counter() - start
    for k in range(1, K if prefixes else 1):
        out = render_tokens(model, q.tokens, c, supersample, k)[1]
        row[f"psnr_scale_{k}"] = float(psnr(out["rgb"][0].clamp(0, 1), true_rgb).mean())
    planes, out = render_tokens(model, q.tokens, c, supersample)
    rgb, mask, novel = out["rgb"][0].clamp(0, 1), out["mask"][0], novel_views(len(true_rgb))
    scores = image_metrics(rgb, mask, true_rgb, true_mask)
    row[f"psnr_scale_{K}"] = scores["psnr"]
    row.update(scores)
    row.update(mean_colours(rgb[novel], true_rgb[novel], true_mask[novel]))
    obj = make_object(row["seed"]) if row["seed"] >= 0 and (oracle or chamfer) else None
    oracle_rgb = None
    if oracle and obj is not None:
        ref = oracle_render(obj, c[0], model.cfg.image_size, model.triplane_settings.num_samples, model.field.bound,
                            supersample, model.triplane_settings.importance_samples)
        oracle_rgb = ref["rgb"][0].clamp(0, 1)
        row["psnr_oracle"] = float(psnr(oracle_rgb, true_rgb).mean())
        row["mask_iou_oracle"] = float(mask_iou(ref["mask"][0], true_mask).mean())
    if chamfer and obj is not None:
        row["chamfer_x1e3"] = surface_chamfer(model, planes, obj, points, mesh_resolution, surface_seed) * 1e3
    return ObjectReconstruction(row, q.tokens, planes, rgb, mask, oracle_rgb, novel)


def codebook_usage(token_lists, codebook_size: int) -> dict:
    """Distinct codebook entries picked by the objects' tokens (one list of K maps per object):
    ``codebook_used`` (a count) and ``codebook_usage`` (a share of ``codebook_size``)."""
    used = torch.zeros(codebook_size, dtype=torch.bool)
    for tokens in token_lists:
        for t in tokens:
            used[t.flatten().cpu()] = True
    return {"codebook_used": int(used.sum()), "codebook_usage": float(used.float().mean())}


def summarise_objects(rows: list, num_scales: int) -> dict:
    """The mean over objects of every per-object number (NaN-skipping; absent keys left out)."""
    keys = ["psnr", "psnr_input", "psnr_novel", "mask_iou", "psnr_oracle", "mask_iou_oracle", "chamfer_x1e3",
            "refine_seconds"]
    keys += [f"psnr_scale_{k}" for k in range(1, num_scales + 1)]
    return {k: float(np.nanmean([r[k] for r in rows])) for k in keys if any(k in r for r in rows)}


@torch.no_grad()
def evaluate_vqvae(model, data, limit: int | None = None, points: int = 2048, mesh_resolution: int = 64,
                   chamfer: bool = True, progress: bool = True, prefixes: bool = True, supersample: int = 2,
                   oracle: bool = True, featnet=None, num_samples: int | None = None, refine_steps: int = 0,
                   refine_seed: int = 0) -> dict:
    """The numbers of the module doc over the objects of ``data`` (a built data set folder or chunks).

    Every render uses ``supersample x supersample`` rays per pixel (the data builder's 2 by
    default, so the model is scored like the targets were made). ``oracle``: the exact object
    through the same renderer and pixel sampling (``oracle_render``), for procedural objects.
    ``featnet`` (a ``featnet.FeatureNet``): its category / colour accuracy on the novel views
    of the reconstructions and of the ground truth. ``num_samples``: samples per ray of every
    render, the oracle's included (default: the model's ``TriplaneSettings.num_samples``); the
    field is continuous (trained with stratified samples), so more samples only resolve thin
    parts that bin midpoints step over. ``refine_steps``: encode each object with that many steps of
    ``SAR3DVQVAE.encode_refined`` on its input views (0: the encoder's one pass), object ``i``'s
    rays drawn with seed ``1000 * refine_seed + i``.
    Returns ``{"summary": ..., "objects": rows}``.
    """
    model.eval()
    trained_samples = model.triplane_settings.num_samples
    if num_samples is not None:
        model.triplane_settings = replace(model.triplane_settings, num_samples=int(num_samples))
    try:
        return _evaluate(model, data, limit, points, mesh_resolution, chamfer, progress, prefixes, supersample,
                         oracle, featnet, refine_steps, refine_seed)
    finally:
        model.triplane_settings = replace(model.triplane_settings, num_samples=trained_samples)


def _evaluate(model, data, limit, points, mesh_resolution, chamfer, progress, prefixes, supersample, oracle,
              featnet, refine_steps=0, refine_seed=0) -> dict:
    """``evaluate_vqvae`` at the model's current samples per ray: ``evaluate_object`` on each item, then the summary."""
    cfg = model.cfg
    dataset = MultiViewDataset(data, size=cfg.image_size, target_views=EVAL_VIEWS)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise ValueError(f"{data} holds no objects to evaluate")
    rows, tokens, inputs, novel_pred, novel_true = [], [], [], [], []
    for i in tqdm(range(n), desc="evaluating", disable=not progress):
        item = dataset[i]
        r = evaluate_object(model, item, prefixes=prefixes, supersample=supersample, oracle=oracle, chamfer=chamfer,
                            points=points, mesh_resolution=mesh_resolution, surface_seed=i, refine_steps=refine_steps,
                            refine_seed=1000 * refine_seed + i)
        rows.append(r.metrics)
        tokens.append(r.tokens)
        inputs.append((item["encoder_input"], item["input_c"]))
        novel_pred.append(r.rgb[r.novel])
        novel_true.append(item["target_rgb"][r.novel])
    summary = summarise_objects(rows, len(cfg.scales))
    summary.update(objects=n, supersample=supersample, num_samples=model.triplane_settings.num_samples,
                   refine_steps=int(refine_steps), **({"refine_seed": int(refine_seed)} if refine_steps else {}))
    summary.update(colour_summary(np.array([r["colour_true"] for r in rows]), np.array([r["colour_pred"] for r in rows])))
    if featnet is not None:
        summary.update(featnet_summary(featnet, torch.cat(novel_pred), torch.cat(novel_true), rows, data))
    summary.update(codebook_usage(tokens, cfg.codebook_size))
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
    from .featnet import attribute_accuracy

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
             f"encoding: {s['encode_objects_per_second']:.1f} objects/s ({s['threads']} threads)"
             + (f"; the tokens refined on the input views for {s['refine_steps']} steps, "
                f"{s['refine_seconds']:.1f} s an object" if s.get("refine_steps") else "")]
    if "category_accuracy" in s:
        lines.append(f"{s['feature_network']}: category {s['category_accuracy']:.1%} of the reconstructions "
                     f"({s['category_accuracy_clean']:.1%} of the true views), colour {s['colour_accuracy']:.1%} "
                     f"({s['colour_accuracy_clean']:.1%})")
    if "chamfer_x1e3" in s:
        lines.append(f"Chamfer distance of the extracted surface (x1e3): {s['chamfer_x1e3']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from .featnet import load_default as load_featnet
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
    p.add_argument("--refine-steps", type=int, default=0,
                   help="refine each object's tokens on its input views for this many steps (default 0: one pass)")
    p.add_argument("--refine-seed", type=int, default=0, help="seed of the refinement's rays (object i: 1000 * seed + i)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write summary and per-object rows here")
    args = p.parse_args(argv)
    if args.refine_steps < 0:
        p.error(f"--refine-steps {args.refine_steps} must be 0 (the one pass) or more")
    torch.set_num_threads(args.threads)
    model = SAR3DVQVAE.from_pretrained(args.checkpoint)
    featnet = None if args.no_featnet else load_featnet()
    result = evaluate_vqvae(model, args.data, args.limit, args.points, chamfer=not args.no_chamfer,
                            prefixes=not args.no_prefixes, supersample=args.supersample, oracle=not args.no_oracle,
                            featnet=featnet, num_samples=args.samples, refine_steps=args.refine_steps,
                            refine_seed=args.refine_seed)
    result["checkpoint"], result["data"] = str(args.checkpoint), str(args.data)
    print(format_summary(result["summary"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
