"""`vqvae_eval`: the reconstruction numbers of the README on a tiny model and the shipped chunks."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sar3d_core.data import INPUT_VIEWS, TARGET_VIEWS, MultiViewDataset, load_views
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import (EVAL_VIEWS, OracleField, codebook_usage, evaluate_object, evaluate_vqvae,
                                   format_summary, hue_error, novel_views, summarise_objects, surface_chamfer,
                                   views_item)
from sar3d_core.world import make_object
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
    item = MultiViewDataset(SAMPLES, size=cfg.image_size, target_views=EVAL_VIEWS)[0]
    novel = slice(len(INPUT_VIEWS), len(EVAL_VIEWS))
    inside = item["target_mask"][novel, 0] > 0.5
    true = item["target_rgb"][novel].permute(0, 2, 3, 1)[inside].mean(0)
    np.testing.assert_allclose(rows[0]["colour_true"], true.numpy(), atol=1e-5)
    with torch.no_grad():
        q = model.encode(item["encoder_input"][None], item["input_c"][None])
        # rendered like the targets: 2 x 2 rays per pixel, averaged
        out = model.render(model.decode_tokens(q.tokens), item["target_c"][None], cfg.image_size, supersample=2)
    pred = out["rgb"][0, novel].clamp(0, 1).permute(0, 2, 3, 1)[inside].mean(0)
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


def test_the_views_of_an_evaluation_are_the_chunk_layout():
    assert EVAL_VIEWS == INPUT_VIEWS + TARGET_VIEWS and len(EVAL_VIEWS) == 12
    assert novel_views(12) == slice(len(INPUT_VIEWS), 12) and novel_views(6) == slice(0, 6)


def test_evaluate_object_is_one_row_of_the_evaluation():
    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg)
    result = evaluate_vqvae(model, SAMPLES, limit=2, chamfer=False, progress=False)
    dataset = MultiViewDataset(SAMPLES, size=cfg.image_size, target_views=EVAL_VIEWS)
    objects = [evaluate_object(model, dataset[i], oracle=False, chamfer=False) for i in range(2)]
    for r, row in zip(objects, result["objects"]):
        assert r.metrics == row
        assert r.rgb.shape == (12, 3, cfg.image_size, cfg.image_size) and r.mask.shape == (12, 1, 32, 32)
        assert r.oracle_rgb is None and r.novel == novel_views(12)
        assert r.planes.shape[:2] == (1, 3) and len(r.tokens) == len(cfg.scales)
        assert r.hue_error_deg == float(hue_error(np.array([row["colour_true"]]), np.array([row["colour_pred"]]))[0])
    s = result["summary"]
    usage = codebook_usage([r.tokens for r in objects], cfg.codebook_size)
    assert usage == {"codebook_used": s["codebook_used"], "codebook_usage": s["codebook_usage"]}
    means = summarise_objects(result["objects"], len(cfg.scales))
    assert means and all(s[k] == v for k, v in means.items())
    # without prefixes only the full schedule is rendered, with the same numbers
    quick = evaluate_object(model, dataset[0], prefixes=False, oracle=False, chamfer=False).metrics
    assert [k for k in quick if k.startswith("psnr_scale_")] == [f"psnr_scale_{len(cfg.scales)}"]
    assert all(quick[k] == result["objects"][0][k] for k in quick)


def test_evaluate_object_on_a_procedural_object_has_the_oracle_and_the_surface():
    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg)
    item = views_item(load_views("proc:38", num_views=12, size=cfg.image_size), 38)
    assert item["target_rgb"].shape[0] == len(EVAL_VIEWS) and item["encoder_input"].shape[0] == len(INPUT_VIEWS)
    r = evaluate_object(model, item, prefixes=False, points=256, mesh_resolution=16)
    m = r.metrics
    assert m["seed"] == 38 and m["id"] == "proc:38"
    assert r.oracle_rgb.shape == r.rgb.shape
    assert m["psnr_oracle"] > m["psnr"] + 5  # the exact object beats an untrained model by far
    assert 0.8 < m["mask_iou_oracle"] <= 1
    assert "chamfer_x1e3" in m  # NaN here: a fresh field is empty space, it has no surface
    assert set(m) >= {"psnr", "psnr_input", "psnr_novel", "mask_iou", "colour_true", "colour_pred"}
    with pytest.raises(ValueError, match="12 views"):
        views_item(load_views("proc:38", num_views=6, size=cfg.image_size), 38)


def test_surface_chamfer_of_the_exact_field_is_small_and_of_another_object_large():
    obj = make_object(38)
    exact = SimpleNamespace(field=OracleField(obj, 0.45), triplane_settings=SimpleNamespace(num_samples=24))
    planes = torch.zeros(1, 3, 1, 1, 1)  # the oracle field ignores them
    own = surface_chamfer(exact, planes, obj, 512, 24)
    other = surface_chamfer(exact, planes, make_object(39), 512, 24)
    assert 0 < own * 1e3 < 5 and other > 10 * own
    assert math.isnan(surface_chamfer(SAR3DVQVAE(small_config()), planes.expand(1, 3, 8, 2, 2), obj, 64, 8))
