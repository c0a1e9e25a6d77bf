"""Where a VQVAE's reconstruction error sits in the image: at the silhouette or on the surface.

For each test object, the reconstruction is rendered like ``vqvae_eval`` (12 views, 2 x 2 rays per
pixel, the model's samples per ray) and so is the exact object through the same renderer (the
oracle). Each view's pixels are split by the true mask into three regions: the *edge* band (pixels
within ``--band`` px of the silhouette, 2 by default: a 5 x 5 dilation of the mask minus its erosion), the *surface*
(inside the mask, off the band) and the *background* (the rest). Printed per region: its share of
the pixels, its share of the squared error, and the PSNR the views would have if that region's
error were zero. Also split by the object's pattern (plain against patterned).

    python docs/notes/vqvae_error_where.py --checkpoint data_samples/vqvae_tiny_lift --limit 20 [--band 2]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sar3d_core.data import MultiViewDataset
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import EVAL_VIEWS, oracle_render, render_tokens
from sar3d_core.world.objects import make_object

REGIONS = ("edge", "surface", "background")


def regions(mask_V1HW: torch.Tensor, band: int = 2) -> dict:
    """Boolean ``(V, 1, H, W)`` maps of the three regions of a true mask (module doc)."""
    m = (mask_V1HW > 0.5).float()
    k = 2 * band + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=band)
    eroded = -F.max_pool2d(-m, k, stride=1, padding=band)
    edge = dilated != eroded
    return {"edge": edge, "surface": (m > 0) & ~edge, "background": (m == 0) & ~edge}


def split_error(rgb_V3HW, true_V3HW, masks: dict) -> dict:
    """Per region: summed squared error over the views' pixels and channels, and the pixel count."""
    se = ((rgb_V3HW - true_V3HW) ** 2).sum(1, keepdim=True)  # (V, 1, H, W)
    return {r: (float(se[m].sum()), int(m.sum())) for r, m in masks.items()}


def summarise(rows: list) -> dict:
    """Shares of pixels and of squared error per region, and the PSNR without each region's error."""
    out = {}
    for who in ("model", "oracle"):
        total_se = sum(sum(r[who][g][0] for g in REGIONS) for r in rows)
        total_px = sum(sum(r[who][g][1] for g in REGIONS) for r in rows)
        mse = total_se / (3 * total_px)
        out[who] = {"psnr_pooled": 10 * np.log10(1 / mse)}
        for g in REGIONS:
            se = sum(r[who][g][0] for r in rows)
            px = sum(r[who][g][1] for r in rows)
            rest = (total_se - se) / (3 * total_px)
            out[who][g] = {"pixel_share": px / total_px, "error_share": se / total_se,
                           "psnr_without": 10 * np.log10(1 / rest)}
    return out


@torch.no_grad()
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="data_samples/vqvae_tiny_lift")
    ap.add_argument("--data", default=str(Path.home() / ".cache/sar3d/proc_test_64"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--band", type=int, default=2, help="half-width in pixels of the edge band")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = SAR3DVQVAE.from_pretrained(a.checkpoint).eval()
    ds = MultiViewDataset(a.data, size=model.cfg.image_size, target_views=EVAL_VIEWS)
    rows = []
    for i in tqdm(range(min(a.limit, len(ds))), desc="objects"):
        item = ds[i]
        obj = make_object(int(item["seed"]))
        q = model.encode(item["encoder_input"][None], item["input_c"][None])
        out = render_tokens(model, q.tokens, item["target_c"][None], supersample=2)[1]
        ref = oracle_render(obj, item["target_c"], model.cfg.image_size, model.triplane_settings.num_samples,
                            model.field.bound, 2)
        masks = regions(item["target_mask"], a.band)
        rows.append({"seed": obj.seed, "pattern": obj.attributes["pattern"],
                     "model": split_error(out["rgb"][0].clamp(0, 1), item["target_rgb"], masks),
                     "oracle": split_error(ref["rgb"][0].clamp(0, 1), item["target_rgb"], masks)})
    groups = {"all": rows, "plain": [r for r in rows if r["pattern"] == "plain"],
              "patterned": [r for r in rows if r["pattern"] != "plain"]}
    summary = {name: {"objects": len(g), **summarise(g)} for name, g in groups.items() if g}
    print(f"{len(rows)} objects, {a.checkpoint}; regions of the true mask: edge = within {a.band} px of the silhouette")
    for name, s in summary.items():
        for who in ("model", "oracle"):
            r = s[who]
            parts = ", ".join(f"{g} {100 * r[g]['pixel_share']:.0f}% of pixels / {100 * r[g]['error_share']:.0f}% "
                              f"of error / {r[g]['psnr_without']:.2f} dB without" for g in REGIONS)
            print(f"{name:9s} ({s['objects']:3d}) {who:6s} pooled {r['psnr_pooled']:.2f} dB: {parts}")
    if a.json:
        record = {"checkpoint": a.checkpoint, "band": a.band, "summary": summary, "objects": rows}
        json.dump(record, open(a.json, "w"), indent=1)
    return summary


if __name__ == "__main__":
    main()
