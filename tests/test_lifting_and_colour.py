"""The VQVAE's geometric lifting, l2-normalised codes, colour readout and decoder skip, the
anti-aliased evaluation with its oracle, and the hue error, each against independent maths."""
import math

import numpy as np
import pytest
import torch

from sar3d_core.cameras import chunk_cameras, look_at, pack_camera
from sar3d_core.config import SAR3DConfig
from sar3d_core.encoder import LIFT_AXES, MultiViewEncoder, lift_to_planes
from sar3d_core.quantizer import MultiScaleTriplaneQuantizer
from sar3d_core.triplane import TriplaneDecoder
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import hue_error, hue_saturation, oracle_render
from sar3d_core.vqvae_train import (ColourReadout, ObjectiveSettings, VQVAEObjective, input_mean_colour,
                                    objective_preset, sample_rays)
from sar3d_core.world import make_object

BOUND = 0.45


def _camera(eye, fov=0.6912):
    """c (25,) of a camera at ``eye`` looking at the origin, with normalised intrinsics written out."""
    f = 0.5 / math.tan(fov / 2)
    K = torch.tensor([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1.0]])
    return pack_camera(look_at(torch.tensor(eye, dtype=torch.float32)), K)


def _pixel_of(point, c, size):
    """Project a world point with the pinhole model written out here: (row, col, planar depth)."""
    c2w = c[:16].reshape(4, 4)
    K = c[16:].reshape(3, 3)
    w2c = torch.linalg.inv(c2w)
    p_cam = w2c[:3, :3] @ point + w2c[:3, 3]
    u = K[0, 0] * p_cam[0] / p_cam[2] + K[0, 2]
    v = K[1, 1] * p_cam[1] / p_cam[2] + K[1, 2]
    return int(v * size), int(u * size), float(p_cam[2])


def test_a_point_seen_by_a_view_lands_in_the_right_plane_cells():
    """One lit pixel, its depth set from an independent projection of a chosen world point: the
    lifted maps hold its colour, occupancy and normal-axis coordinate in exactly the cell of each
    plane that contains the point, and nothing elsewhere."""
    R, size = 16, 512  # small pixels: the back-projected pixel centre stays inside the point's cell
    cell = 2 * BOUND / R
    point = torch.tensor([-BOUND + 11.5 * cell, -BOUND + 3.5 * cell, -BOUND + 7.5 * cell])
    c = _camera((1.2, -1.1, 0.9))
    row, col, z = _pixel_of(point, c, size)
    rgb = torch.ones(1, 1, 3, size, size)
    rgb[0, 0, :, row, col] = torch.tensor([0.9, 0.2, 0.1])
    depth = torch.zeros(1, 1, size, size)
    depth[0, 0, row, col] = z
    maps = lift_to_planes(rgb, depth, c[None, None], R, BOUND)  # (1, 3, 5, R, R)
    index = ((point + BOUND) / cell).floor().long()  # independent: the cell of each axis
    for p, (u, v, n) in enumerate(LIFT_AXES):
        occ = maps[0, p, 3]
        assert occ[index[v], index[u]] > 0 and int((occ > 0).sum()) == 1, p
        torch.testing.assert_close(maps[0, p, :3, index[v], index[u]], torch.tensor([0.9, 0.2, 0.1]))
        assert abs(float(maps[0, p, 4, index[v], index[u]]) - float(point[n]) / BOUND) < 0.01


def test_lifting_reads_the_cameras_it_is_given():
    cfg = SAR3DConfig.tiny()
    enc = MultiViewEncoder.from_config(cfg).eval()
    assert enc.lift is not None and enc.lift.resolution == 32
    mv_rgb = torch.rand(1, 6, 3, 64, 64)
    depth = torch.full((1, 6, 1, 64, 64), 1.9)
    x = torch.cat([mv_rgb, depth, torch.zeros(1, 6, 6, 64, 64)], 2)
    cams = chunk_cameras(0)[None, :6]
    with torch.no_grad():
        a, b = enc(x, cams), enc(x, cams[:, [1, 2, 3, 4, 5, 0]])  # each view's pixels from another camera
    assert not torch.allclose(a, b)  # other cameras, other lifted points: never a fixed rig
    with pytest.raises(ValueError, match="pass input_c"):
        enc(x)
    with pytest.raises(ValueError, match="one camera per input view"):
        lift_to_planes(x[:, :, :3], x[:, :, 3], cams[:, :5], 32)


def test_paper_preset_keeps_the_papers_encoder_and_old_configs_load_as_saved():
    assert MultiViewEncoder.from_config(SAR3DConfig.paper()).lift is None
    bare = SAR3DVQVAE(SAR3DConfig(extra={}))  # a config saved before the options existed
    assert bare.encoder.lift is None and not bare.quantizer.l2_codes and bare.decoder.colour_skip is None
    tiny = SAR3DVQVAE(SAR3DConfig.tiny())
    assert tiny.needs_cameras and tiny.quantizer.l2_codes and tiny.decoder.colour_skip is not None


def test_l2_codes_look_up_unit_vectors_and_dead_code_resets_stay_consistent():
    q = MultiScaleTriplaneQuantizer(64, 8, (1, 2, 4), 4, l2_codes=True)
    z = q.lookup(torch.arange(64))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(z, q.codebook.weight / q.codebook.weight.norm(dim=-1, keepdim=True))
    f = torch.randn(2, 3, 8, 4, 4)
    out = q(f)
    torch.testing.assert_close(q.tokens_to_fhat(out.tokens), out.f_hat.detach(), atol=1e-5, rtol=1e-5)
    q.steps_since_used[:5] = q.dead_after  # entries 0-4 dead
    assert q.reset_dead_codes(f, torch.Generator().manual_seed(0)) == 5
    torch.testing.assert_close(q.lookup(torch.arange(5)).norm(dim=-1), torch.ones(5))
    with pytest.raises(ValueError, match="unknown keys"):
        MultiScaleTriplaneQuantizer.from_config(SAR3DConfig(extra={"quantizer": {"l2": True}}))


def test_colour_skip_adds_a_short_path_from_the_colour_latent():
    dec = TriplaneDecoder(8, 16, (8, 8, 8), colour_latent_channels=4, colour_feature_channels=8, colour_skip=True)
    f = torch.randn(2, 3, 8, 4, 4, requires_grad=True)
    out = dec(f)
    assert out.shape == (2, 3, 16, 16, 16)
    with torch.no_grad():
        dec.colour_skip.weight.zero_()
        dec.colour_skip.bias.fill_(1.0)
        shifted = dec(f)
    torch.testing.assert_close(shifted[:, :, 8:], dec.colour(f[:, :, 4:]) + 1.0)
    torch.testing.assert_close(shifted[:, :, :8], out[:, :, :8])  # geometry untouched
    with pytest.raises(ValueError, match="colour_skip needs"):
        TriplaneDecoder(8, 16, (8, 8, 8), colour_skip=True)


def test_readout_is_the_occupancy_weighted_mean_of_a_linear_head():
    model = SAR3DVQVAE(SAR3DConfig.tiny())
    readout = ColourReadout(model)
    assert readout.channels == 4
    mv = make_object(3)
    from sar3d_core.world import render_sdf

    views = render_sdf(mv, chunk_cameras(3)[:6], 64, 64)
    x = views.encoder_input()[None]
    c = views.c[None]
    f_hat = torch.randn(1, 3, 8, 8, 8)
    got = readout(f_hat, x, c)
    occ = lift_to_planes(x[:, :, :3], x[:, :, 3], c, 8)[0, :, 3]  # (3, 8, 8)
    per_cell = readout.head(f_hat[0, :, 4:].permute(0, 2, 3, 1))  # (3, 8, 8, 3)
    expected = (per_cell * occ[..., None]).sum((0, 1, 2)) / occ.sum()
    torch.testing.assert_close(got[0], expected)
    hit = views.depth[:, 0] > 0
    torch.testing.assert_close(input_mean_colour(x)[0], views.rgb.permute(0, 2, 3, 1)[hit].mean(0), atol=1e-5,
                               rtol=1e-5)


def test_objective_has_the_readout_term_and_rays_favour_the_object():
    torch.manual_seed(0)
    mask = torch.zeros(2, 12, 1, 64, 64)
    mask[:, :, :, 28:36, 28:36] = 1.0  # a small object: 1.6% of the pixels
    idx = sample_rays(mask, 400, 0.75, torch.Generator().manual_seed(0))
    near = torch.nn.functional.max_pool2d(mask.flatten(0, 1), 5, 1, 2).reshape(2, -1)
    assert idx.shape == (2, 400)
    assert float(near.gather(1, idx[:, :300]).mean()) == 1.0  # the object share, all on or near it
    assert len(set(idx[0, :300].tolist())) == 300  # drawn without replacement
    assert objective_preset("tiny").readout_weight > 0 and objective_preset("paper").readout_weight == 0
    with pytest.raises(ValueError, match="unknown preset"):
        objective_preset("huge")
    obj = VQVAEObjective(SAR3DVQVAE(SAR3DConfig.tiny()), ObjectiveSettings(rays=16, patch=0, readout_weight=1.0,
                                                                         occupancy_weight=0.0))
    from sar3d_core.world import render_sdf

    items = [render_sdf(make_object(s), chunk_cameras(s), 64, 64) for s in (3, 4)]
    batch = {"encoder_input": torch.stack([m.select(slice(0, 6)).encoder_input() for m in items]),
             "input_c": torch.stack([m.c[:6] for m in items]), "target_c": torch.stack([m.c for m in items]),
             "target_rgb": torch.stack([m.rgb for m in items]), "target_depth": torch.stack([m.depth for m in items]),
             "target_mask": torch.stack([m.mask for m in items])}
    terms = obj(batch, step=1)
    assert "readout" in terms and terms["readout"] > 0
    terms["loss"].backward()
    assert obj.readout.head.weight.grad is not None and obj.model.encoder.lift.net[0].weight.grad.abs().sum() > 0


def test_supersampled_render_is_the_mean_of_the_sub_pixel_rays():
    torch.manual_seed(0)
    model = SAR3DVQVAE(SAR3DConfig(extra={})).eval()
    planes = torch.randn(1, 3, 16, 32, 32)
    c = chunk_cameras(0)[None, :2]
    with torch.no_grad():
        fine = model.render(planes, c, 16)
        aa = model.render(planes, c, 8, supersample=2)
    torch.testing.assert_close(aa["rgb"], fine["rgb"].reshape(1, 2, 3, 8, 2, 8, 2).mean((4, 6)))
    torch.testing.assert_close(aa["mask"], fine["mask"].reshape(1, 2, 1, 8, 2, 8, 2).mean((4, 6)))


def test_the_oracle_reproduces_the_targets_through_the_models_renderer():
    """The exact object through the volume renderer and the targets' 2 x 2 pixel sampling comes
    close to the SDF renderer's targets: the ceiling the evaluation prints is high and real."""
    from sar3d_core.metrics import mask_iou, psnr
    from sar3d_core.world import render_sdf

    obj = make_object(1)
    c = chunk_cameras(1)[:3]
    target = render_sdf(obj, c, 64, 64, supersample=2)
    ref = oracle_render(obj, c, 64, 64, BOUND, supersample=2)
    assert float(psnr(ref["rgb"][0].clamp(0, 1), target.rgb).mean()) > 28.0
    assert float(mask_iou(ref["mask"][0], target.mask).mean()) > 0.9


def test_hue_error_against_known_colours():
    h, s = hue_saturation(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(h[:3], [0, 120, 240])
    np.testing.assert_allclose(s, [1, 1, 1, 0])
    err = hue_error(np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]]), np.array([[0, 1.0, 0], [1.0, 0, 0.2], [1.0, 0, 0]]))
    np.testing.assert_allclose(err, [120, 12, 120], atol=1e-6)  # the short way round the hue circle


def test_concatenated_plane_features_keep_each_plane_and_sum_to_the_default():
    from sar3d_core.triplane import TriplaneField, sample_triplane

    torch.manual_seed(0)
    planes, pts = torch.randn(2, 3, 6, 8, 8), (torch.rand(2, 50, 3) * 2 - 1) * BOUND
    cat = sample_triplane(planes, pts, BOUND, merge="concat")
    assert cat.shape == (2, 50, 3, 6)
    torch.testing.assert_close(cat.sum(2), sample_triplane(planes, pts, BOUND))
    field = TriplaneField(6, colour_channels=2, plane_merge="concat")
    assert field.trunk[0].in_features == 12 and field.color_trunk[0].in_features == 6
    planes.requires_grad_(True)
    sigma, rgb = field.query(planes, pts)
    (sigma.sum() + rgb.sum()).backward()
    assert all(planes.grad[:, p].abs().sum() > 0 for p in range(3))
    with pytest.raises(ValueError, match="plane_merge"):
        TriplaneField(6, plane_merge="mean")


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_sample_rays_draws_the_pixels_a_full_argsort_would(share):
    # the draw takes the pixels of the smallest uniform numbers (and the largest near-object
    # scores) by topk; a full argsort of the same numbers picks the same pixels
    mask = (torch.rand(3, 12, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    n = 200
    got = sample_rays(mask, n, share, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    m = round(n * share)
    uniform = torch.rand(3, 12 * 16 * 16, generator=g).argsort(-1)[:, :n - m]
    if m:
        near = torch.nn.functional.max_pool2d(mask.flatten(0, 1), 5, 1, 2).reshape(3, -1)
        picked = (torch.rand(3, 12 * 16 * 16, generator=g) + near).argsort(-1, descending=True)[:, :m]
        uniform = torch.cat([picked, uniform], 1)
    assert got.shape == (3, n) and got.dtype == torch.long
    assert torch.equal(got[:, :m].sort(1).values, uniform[:, :m].sort(1).values)
    assert torch.equal(got[:, m:].sort(1).values, uniform[:, m:].sort(1).values)
    assert all(len(set(row.tolist())) == n - m for row in got[:, m:])  # the uniform part: without replacement
