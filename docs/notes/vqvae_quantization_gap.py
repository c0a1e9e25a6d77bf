"""How much of the VQVAE's reconstruction error is the quantizer's?

For each test object: the encoder's continuous latent ``f`` and the quantized ``f_hat`` after all K
scales (Alg. 1), each decoded and rendered like ``vqvae_eval`` (12 views, 2 x 2 rays per pixel, the
model's samples per ray), scored by PSNR and mask IoU against the targets. The decoder was trained on
``f_hat`` only, so decoding ``f`` is an estimate of what a finer quantizer could give this decoder, not
a model of its own. Also printed: the residual ``||f - f_hat_k|| / ||f||`` after every scale.

    python docs/notes/vqvae_quantization_gap.py --checkpoint data_samples/vqvae_tiny_lift --limit 20
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sar3d_core.data import MultiViewDataset
from sar3d_core.metrics import mask_iou, psnr
from sar3d_core.vqvae_eval import EVAL_VIEWS
from sar3d_core.vqvae import SAR3DVQVAE


@torch.no_grad()
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="data_samples/vqvae_tiny_lift")
    ap.add_argument("--data", default=str(Path.home() / ".cache/sar3d/proc_test_64"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = SAR3DVQVAE.from_pretrained(a.checkpoint).eval()
    ds = MultiViewDataset(a.data, size=model.cfg.image_size, target_views=EVAL_VIEWS)
    rows = []
    for i in tqdm(range(min(a.limit, len(ds))), desc="objects"):
        item = ds[i]
        f = model.encoder(item["encoder_input"][None], item["input_c"][None])
        q = model.quantizer(f)
        row = {"residual": q.residual_norms.tolist()}
        for name, lat in (("quantized", q.f_hat), ("continuous", f)):
            out = model.render(model.decode_fhat(lat), item["target_c"][None], chunk=8192, supersample=2)
            row[f"psnr_{name}"] = float(psnr(out["rgb"][0].clamp(0, 1), item["target_rgb"]).mean())
            row[f"iou_{name}"] = float(mask_iou(out["mask"][0], item["target_mask"]).mean())
        rows.append(row)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "residual"}
    summary["residual_after_scale"] = np.mean([r["residual"] for r in rows], 0).round(3).tolist()
    summary.update(objects=len(rows), checkpoint=a.checkpoint)
    print(f"{len(rows)} objects, {a.checkpoint}")
    print(f"PSNR: quantized f_hat {summary['psnr_quantized']:.2f} dB, continuous f {summary['psnr_continuous']:.2f} dB")
    print(f"IoU:  quantized {summary['iou_quantized']:.4f}, continuous {summary['iou_continuous']:.4f}")
    print(f"||f - f_hat_k|| / ||f|| after scales 1..K: {summary['residual_after_scale']}")
    if a.json:
        json.dump({"summary": summary, "objects": rows}, open(a.json, "w"), indent=1)
    return summary


if __name__ == "__main__":
    main()
