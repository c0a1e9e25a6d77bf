"""How soft a VQVAE's silhouettes are, and whether the renderer's sampling sets it.

For each test object the reconstruction is rendered at 4x the image size with one ray per pixel
(so each 64-px pixel is seen as 4 x 4 point samples), at the model's own samples per ray and at
many more; so is the exact object (``vqvae_eval.OracleField``, a hard density step). The *edge
width* of a render is the number of its pixels with opacity strictly between 0.1 and 0.9, divided
by the length of the true silhouette (the pixels on the boundary of the exact object's mask at
that size), in 64-px pixels: about how far the opacity takes to rise from 10% to 90% across the
silhouette. A hard, well-placed edge gives close to 0; a density that rises over a distance w
inside the surface gives about w.

Printed beside it: the width of one ray bin at the model's samples per ray (the box's diagonal
ray length over the samples, in 64-px pixels at the object's distance), and each render's mask
IoU against the exact object at that size.

    python docs/notes/vqvae_edge_width.py --checkpoint data_samples/vqvae_tiny_lift --limit 10
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from sar3d_core.data import MultiViewDataset
from sar3d_core.triplane import render_images
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import EVAL_VIEWS, OracleField
from sar3d_core.world.objects import make_object


def edge_width(opacity_VHW: torch.Tensor, true_VHW: torch.Tensor, scale: int) -> float:
    """Pixels with 0.1 < opacity < 0.9 per pixel of true silhouette boundary, in pixels of the 1/scale image."""
    m = true_VHW[:, None].float()
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)
    boundary = (m - eroded).sum()
    soft = ((opacity_VHW > 0.1) & (opacity_VHW < 0.9)).sum()
    return float(soft / boundary.clamp(min=1)) / scale


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="data_samples/vqvae_tiny_lift")
    p.add_argument("--data", default=str(Path.home() / ".cache/sar3d/proc_test_64"))
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--scale", type=int, default=4, help="render at this multiple of the image size")
    p.add_argument("--fine-samples", type=int, default=192, help="samples per ray of the fine renders")
    p.add_argument("--views", type=int, default=4, help="views per object (of the 12)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    model = SAR3DVQVAE.from_pretrained(args.checkpoint).eval()
    S0 = model.triplane_settings.num_samples
    size = model.cfg.image_size * args.scale
    dataset = MultiViewDataset(args.data, size=model.cfg.image_size, target_views=EVAL_VIEWS)
    rows = []
    for i in range(min(args.limit, len(dataset))):
        item = dataset[i]
        obj = make_object(int(item["seed"]))
        c = item["target_c"][:args.views][None]
        planes = model.decode_tokens(model.encode(item["encoder_input"][None], item["input_c"][None]).tokens)
        oracle = OracleField(obj, model.field.bound)
        dummy = torch.zeros(1, 3, 1, 1, 1)
        truth = render_images(dummy, oracle, c, size, size, 4 * args.fine_samples, chunk=16384)["mask"][0, :, 0] > 0.5
        row = {"seed": int(item["seed"])}
        for name, field, planes_, samples in (("model", model.field, planes, S0),
                                              ("model_fine", model.field, planes, args.fine_samples),
                                              ("oracle", oracle, dummy, S0)):
            op = render_images(planes_, field, c, size, size, samples, chunk=16384)["mask"][0, :, 0]
            row[f"{name}_edge_px"] = edge_width(op, truth, args.scale)
            row[f"{name}_iou"] = iou(op, truth.float())
        rows.append(row)
        print(json.dumps(row))
    # one ray bin at the model's samples: the box's full diagonal (2 sqrt(3) b) over S0, in 64-px pixels at the
    # object's distance (the camera's focal length in pixels over the distance to the origin)
    cam = item["target_c"][0]
    focal_px = float(cam[16]) * model.cfg.image_size  # normalised intrinsics: fx / width
    dist = float(cam[:16].reshape(4, 4)[:3, 3].norm())
    bin_px = 2 * 3 ** 0.5 * model.field.bound / S0 * focal_px / dist
    summary = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    summary.update(objects=len(rows), samples=S0, fine_samples=args.fine_samples, scale=args.scale,
                   longest_bin_px=bin_px, checkpoint=args.checkpoint)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
