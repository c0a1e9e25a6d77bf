"""`vqvae_eval`: the reconstruction numbers of the README on a tiny model and the shipped chunks."""
import math

import numpy as np
import torch

from sar3d_core.data import MultiViewDataset
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import evaluate_vqvae, format_summary
from test_vqvae_train import small_config

SAMPLES = "data_samples/chunks"


def test_evaluate_vqvae_summary_and_colour_statistics():
    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg)
    result = evaluate_vqvae(model, SAMPLES, limit=3, chamfer=False, progress=False, oracle=False)
    s, rows = result["summary"], result["objects"]
    assert s["objects"] == len(rows) == 3
    for k in ("psnr", "psnr_input", "psnr_novel", "mask_iou", "colour_mae"):
        assert math.isfinite(s[k]), k
    assert len(s["colour_corr_rgb"]) == 3 and all(-1 <= v <= 1 for v in s["colour_corr_rgb"])
    assert 1 <= s["codebook_used"] <= cfg.codebook_size
    # the colour numbers are the mean over the novel views inside the true mask
    item = MultiViewDataset(SAMPLES, size=cfg.image_size, target_views=range(12))[0]
    inside = item["target_mask"][6:, 0] > 0.5
    true = item["target_rgb"][6:].permute(0, 2, 3, 1)[inside].mean(0)
    np.testing.assert_allclose(rows[0]["colour_true"], true.numpy(), atol=1e-5)
    with torch.no_grad():
        q = model.encode(item["encoder_input"][None], item["input_c"][None])
        # rendered like the targets: 2 x 2 rays per pixel, averaged
        out = model.render(model.decode_tokens(q.tokens), item["target_c"][None], cfg.image_size, supersample=2)
    pred = out["rgb"][0, 6:].clamp(0, 1).permute(0, 2, 3, 1)[inside].mean(0)
    np.testing.assert_allclose(rows[0]["colour_pred"], pred.numpy(), atol=1e-5)
    true_all = np.array([r["colour_true"] for r in rows])
    pred_all = np.array([r["colour_pred"] for r in rows])
    assert abs(s["colour_mae"] - np.abs(true_all - pred_all).mean()) < 1e-9
    assert "correlation R/G/B" in format_summary(s)
    # more samples per ray for the evaluation only: reported, and the model keeps its own afterwards
    more = evaluate_vqvae(model, SAMPLES, limit=1, chamfer=False, progress=False, oracle=False, num_samples=32)
    assert more["summary"]["num_samples"] == 32 and model.triplane_settings.num_samples == cfg.extra["triplane"]["num_samples"]
    assert more["objects"][0]["psnr"] != rows[0]["psnr"]  # the same object, rendered with other samples


def test_without_prefixes_only_the_full_schedule_is_rendered_and_the_numbers_agree():
    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg)
    full = evaluate_vqvae(model, SAMPLES, limit=2, chamfer=False, progress=False)["summary"]
    quick = evaluate_vqvae(model, SAMPLES, limit=2, chamfer=False, progress=False, prefixes=False)["summary"]
    K = len(cfg.scales)
    assert [k for k in quick if k.startswith("psnr_scale_")] == [f"psnr_scale_{K}"]
    assert len([k for k in full if k.startswith("psnr_scale_")]) == K
    for k in ("psnr", "mask_iou", f"psnr_scale_{K}", "colour_mae"):
        assert abs(quick[k] - full[k]) < 1e-6, k
    assert f"1..{K}:" in format_summary(quick) and "1..1:" not in format_summary(quick)
