"""Triplane decoder, field and volume rendering against closed forms (paper Sec. 4.1)."""
import math

import pytest
import torch

from sar3d_core.cameras import camera_centres, camera_rays, orbit_cameras, ray_box_interval, ray_depth_scale, unpack_camera
from sar3d_core.config import SAR3DConfig
from sar3d_core.cameras import OBJECT_BOX
from sar3d_core.triplane import (
    TriplaneDecoder, TriplaneField, TriplaneSettings, camera_pixel_rays, patch_index, random_pixel_index,
    render_images, render_pixels, render_rays, render_views, sample_triplane, volume_render,
)

CENTRE = torch.tensor([0.05, -0.03, 0.02])
RADIUS = 0.3


def sphere_field(sigma0):
    """Constant density ``sigma0`` inside the sphere, 0 outside; colour red."""
    def field_fn(points_BN3):
        inside = ((points_BN3 - CENTRE).norm(dim=-1) < RADIUS).float()
        rgb = torch.zeros(*points_BN3.shape[:-1], 3)
        rgb[..., 0] = 1.0
        return sigma0 * inside, rgb
    return field_fn


def random_rays(n, seed=0):
    """Rays through random points near the sphere, from 2 units away; returns o, d and b."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    target = CENTRE + (torch.rand(n, 3, generator=g) - 0.5) * 0.8
    o = target - 2.0 * d
    oc = CENTRE - o
    along = (oc * d).sum(-1)
    b = (oc - along[:, None] * d).norm(dim=-1)  # distance of the ray to the centre
    return o[None], d[None], b[None], along[None]


def test_volume_render_matches_analytic_sphere_opacity():
    sigma0 = 3.0
    o, d, b, _ = random_rays(400)
    near, far = ray_box_interval(o, d)
    out = volume_render(sphere_field(sigma0), o, d, near, far, num_samples=512, stratified=False)
    chord = 2 * torch.sqrt((RADIUS ** 2 - b ** 2).clamp(min=0))
    expected = 1 - torch.exp(-sigma0 * chord)
    hit = b < RADIUS
    assert hit.sum() > 100 and (~hit).sum() > 50
    # midpoint quadrature: each chord end is off by at most one bin (0.9 sqrt(3) / 512)
    assert (out["opacity"] - expected).abs().max() < 0.02
    assert (out["opacity"] - expected).abs().mean() < 2e-3
    # rays that miss: nothing accumulated, white background
    assert out["opacity"][~hit].abs().max() < 1e-6
    assert torch.allclose(out["rgb"][~hit], torch.ones_like(out["rgb"][~hit]))
    # colour is red blended on white by the opacity
    a = out["opacity"][..., None]
    assert torch.allclose(out["rgb"], a * torch.tensor([1.0, 0, 0]) + (1 - a), atol=1e-5)
    # stratified sampling is unbiased: the mean over draws approaches the analytic value
    g = torch.Generator().manual_seed(1)
    strat = torch.stack([volume_render(sphere_field(sigma0), o, d, near, far, 64, True, g)["opacity"]
                         for _ in range(8)]).mean(0)
    assert (strat - expected).abs().mean() < 0.01
    # stratified samples are random, one inside each bin of [near, far]
    t1, t2 = (volume_render(sphere_field(sigma0), o, d, near, far, 8, True, g)["t"] for _ in range(2))
    assert not torch.allclose(t1, t2)
    k = (t1 - near[..., None]) / ((far - near)[..., None] / 8)
    hit_box = far > near
    assert torch.equal(k[hit_box].floor(), torch.arange(8.0).expand_as(k[hit_box]))


def test_volume_render_depth_is_first_hit_in_planar_depth():
    c = orbit_cameras([30.0], [15.0], radius=1.9)
    H = W = 24
    o, d = camera_rays(c, H, W)
    o, d = o.reshape(1, -1, 3), d.reshape(1, -1, 3)
    scale = ray_depth_scale(c, H, W).reshape(1, -1)
    near, far = ray_box_interval(o, d)
    out = volume_render(sphere_field(1e4), o, d, near, far, num_samples=1024, depth_scale=scale)
    oc = CENTRE - o
    along = (oc * d).sum(-1)
    b2 = (oc * oc).sum(-1) - along ** 2
    hit = b2 < RADIUS ** 2 - 1e-3  # leave out grazing rays, whose chord is shorter than a bin
    t_hit = along - torch.sqrt((RADIUS ** 2 - b2).clamp(min=0))
    # planar depth, computed another way: the hit point's coordinate on the camera's z axis
    c2w, _ = unpack_camera(c)
    z_axis = c2w[0, :3, 2]
    planar = ((o + t_hit[..., None] * d - camera_centres(c)[0]) * z_axis).sum(-1)
    assert hit.sum() > 50
    assert (out["opacity"][hit] - 1).abs().max() < 1e-4
    assert (out["depth"][hit] - planar[hit]).abs().max() < 2e-3
    assert (out["expected_depth"][hit] - planar[hit]).abs().max() < 2e-3
    miss = b2 > RADIUS ** 2 + 1e-3
    assert out["opacity"][miss].abs().max() < 1e-6 and out["depth"][miss].abs().max() < 1e-6


def test_importance_samples_find_a_hard_surface_that_the_first_pass_only_brackets():
    # a hard sphere (opaque within 1e-4 units) seen through 8 coarse bins: the first pass can only say
    # in which bin the surface lies, 8 more samples drawn from its weights put the depth within a
    # fraction of that bin
    c = orbit_cameras([30.0], [15.0], radius=1.9)
    o, d = camera_rays(c, 24, 24)
    o, d = o.reshape(1, -1, 3), d.reshape(1, -1, 3)
    near, far = ray_box_interval(o, d)
    oc = CENTRE - o
    along = (oc * d).sum(-1)
    b2 = (oc * oc).sum(-1) - along ** 2
    hit = b2 < RADIUS ** 2 - 0.02  # chords longer than two coarse bins: both passes see the sphere
    t_hit = along - torch.sqrt((RADIUS ** 2 - b2).clamp(min=0))
    coarse = volume_render(sphere_field(1e4), o, d, near, far, 8)
    fine = volume_render(sphere_field(1e4), o, d, near, far, 8, importance_samples=8)
    assert hit.sum() > 50 and fine["t"].shape == (1, o.shape[1], 16) and fine["weights"].shape == fine["t"].shape
    bin_ = ((far - near) / 8)[hit]
    err_coarse = (coarse["expected_depth"][hit] - t_hit[hit]).abs() / bin_
    err_fine = (fine["expected_depth"][hit] - t_hit[hit]).abs() / bin_
    assert err_coarse.mean() > 0.2  # the first pass alone: about a quarter of a bin off on average
    assert err_fine.mean() < 0.5 * err_coarse.mean() and err_fine.max() < err_coarse.max()
    assert (fine["opacity"][hit] - 1).abs().max() < 1e-4
    # the samples are sorted along the ray and the new ones lie near the surface: in the hit bin or its neighbours
    assert (fine["t"][..., 1:] >= fine["t"][..., :-1]).all()
    # rays that miss the sphere stay empty, rays that miss the box too
    miss = b2 > RADIUS ** 2 + 1e-3
    assert fine["opacity"][miss].abs().max() < 1e-6


def test_importance_samples_keep_the_quadrature_exact_for_constant_density_and_off_changes_nothing():
    o, d, _, _ = random_rays(200)
    near, far = ray_box_interval(o, d)
    const = lambda p: (torch.full(p.shape[:-1], 2.0), torch.rand(*p.shape[:-1], 3))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    out = volume_render(const, o, d, near, far, 8, True, g, importance_samples=5)
    # the cells the samples stand for still tile [near, far]: exact opacity 1 - exp(-sigma L)
    assert torch.allclose(out["opacity"], 1 - torch.exp(-2.0 * (far - near).clamp(min=0)), atol=1e-5)
    # stratified draws move the new samples; deterministic ones repeat
    t1, t2 = (volume_render(const, o, d, near, far, 8, True, g, importance_samples=5)["t"] for _ in range(2))
    assert not torch.allclose(t1, t2)
    t3, t4 = (volume_render(const, o, d, near, far, 8, importance_samples=5)["t"] for _ in range(2))
    assert torch.equal(t3, t4)
    # importance_samples=0 is the single pass, bit for bit
    a = volume_render(sphere_field(3.0), o, d, near, far, 16)
    b = volume_render(sphere_field(3.0), o, d, near, far, 16, importance_samples=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="importance_samples=-1"):
        volume_render(const, o, d, near, far, 8, importance_samples=-1)
    # gradients reach the field through the new samples too
    field = TriplaneField(8, hidden=16, layers=2)
    planes = torch.randn(1, 3, 8, 8, 8, requires_grad=True)
    out = volume_render(lambda p: field.query(planes, p), o, d, near, far, 4, importance_samples=4)
    out["rgb"].sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_rays_missing_the_box_are_empty():
    o = torch.tensor([[[2.0, 2.0, 0.0], [0.0, 0.0, 2.0]]])
    d = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]])
    near, far = ray_box_interval(o, d)
    assert far[0, 0] <= near[0, 0]
    assert torch.allclose(near[0, 1], torch.tensor(2 - OBJECT_BOX))
    assert torch.allclose(far[0, 1], torch.tensor(2 + OBJECT_BOX))
    out = volume_render(lambda p: (torch.full(p.shape[:-1], 100.0), torch.zeros_like(p)), o, d, near, far, 16)
    assert out["opacity"][0, 0] == 0 and torch.allclose(out["rgb"][0, 0], torch.ones(3))
    assert out["opacity"][0, 1] > 0.999 and out["rgb"][0, 1].max() < 1e-3


def plane_centres(n):
    """Pixel-centre coordinates of a plane of n cells over [-b, b] (align_corners=False)."""
    return -OBJECT_BOX + (torch.arange(n, dtype=torch.float64) + 0.5) * 2 * OBJECT_BOX / n


def test_sample_triplane_recovers_linear_functions():
    H, W, Fc = 6, 10, 2
    g = torch.Generator().manual_seed(0)
    coef = torch.randn(3, Fc, 3, generator=g, dtype=torch.float64)  # per plane, channel: a u + b v + c
    v, u = torch.meshgrid(plane_centres(H), plane_centres(W), indexing="ij")  # rows v, columns u
    planes = torch.stack([torch.stack([coef[p, f, 0] * u + coef[p, f, 1] * v + coef[p, f, 2]
                                       for f in range(Fc)]) for p in range(3)])[None]  # (1, 3, F, H, W)
    # inside the outermost pixel centres, bilinear interpolation of a linear function is exact
    margin = OBJECT_BOX / min(H, W)
    pts = (torch.rand(1, 500, 3, generator=g, dtype=torch.float64) * 2 - 1) * (OBJECT_BOX - margin)
    x, y, z = pts[0].unbind(-1)
    expected = sum(coef[p, :, 0][None] * a[:, None] + coef[p, :, 1][None] * b[:, None] + coef[p, :, 2][None]
                   for p, (a, b) in enumerate([(x, y), (x, z), (y, z)]))
    got = sample_triplane(planes, pts)
    assert got.shape == (1, 500, Fc)
    assert torch.allclose(got[0], expected, atol=1e-10)
    # beyond the last centre the border value holds (padding_mode="border")
    corner = torch.full((1, 1, 3), 0.449, dtype=torch.float64)
    assert torch.allclose(sample_triplane(planes, corner)[0, 0], planes[0, :, :, -1, -1].sum(0))


def test_decoder_and_field_shapes_tiny_and_paper():
    tiny = SAR3DConfig.tiny()
    dec, field = TriplaneDecoder.from_config(tiny), TriplaneField.from_config(tiny)
    f = torch.randn(2, 3, tiny.latent_channels, tiny.latent_size, tiny.latent_size)
    planes = dec(f)
    s = TriplaneSettings.from_config(tiny)
    assert planes.shape == (2, 3, s.feature_channels, 32, 32)
    sigma, rgb = field.query(planes, torch.rand(2, 7, 3) - 0.5)
    assert sigma.shape == (2, 7) and rgb.shape == (2, 7, 3)
    assert (sigma >= 0).all() and ((rgb >= 0) & (rgb <= 1)).all()
    assert field.query(planes, torch.full((2, 1, 3), 0.6))[0].abs().max() == 0  # empty outside the box
    # a fresh field is nearly empty space: mean opacity across the box stays small
    c = orbit_cameras([0.0], [10.0])[None].expand(2, -1, -1)
    out = render_images(planes, field, c, 8, 8, num_samples=s.num_samples)
    assert out["rgb"].shape == (2, 1, 3, 8, 8) and out["depth"].shape == (2, 1, 1, 8, 8)
    assert out["mask"].mean() < 0.5

    paper = SAR3DConfig.paper()
    sp = TriplaneSettings.from_config(paper)
    dec_p = TriplaneDecoder.from_config(paper)
    assert paper.latent_size * dec_p.upsample_factor == 128
    small = dec_p(torch.randn(1, 3, paper.latent_channels, 2, 2))  # fully convolutional: a tiny input suffices
    assert small.shape == (1, 3, sp.feature_channels, 16, 16)
    assert TriplaneField.from_config(paper).query(small, torch.zeros(1, 4, 3))[1].shape == (1, 4, 3)
    # overrides through cfg.extra
    cfg = SAR3DConfig(extra={"triplane": {"feature_channels": 4}})
    assert TriplaneDecoder.from_config(cfg)(f).shape[2] == 4
    with pytest.raises(ValueError, match="unknown keys"):
        TriplaneSettings.from_config(SAR3DConfig(extra={"triplane": {"nope": 1}}))


def test_gradients_flow_from_rendered_rgb_to_latent():
    torch.manual_seed(0)
    cfg = SAR3DConfig.tiny()
    dec, field = TriplaneDecoder.from_config(cfg), TriplaneField.from_config(cfg)
    f = torch.randn(1, 3, cfg.latent_channels, cfg.latent_size, cfg.latent_size, requires_grad=True)
    c = orbit_cameras([0.0, 90.0], [10.0, 10.0])[None]
    out = render_images(dec(f), field, c, 8, 8, num_samples=12, stratified=True,
                        generator=torch.Generator().manual_seed(0))
    (out["rgb"].mean() + out["depth"].mean()).backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert all(p.grad is not None for p in field.parameters())


def dense_scene(seed=0):
    """A tiny-preset decoder's planes with a denser field (depth and mask not ~0) and cameras of 2 objects."""
    torch.manual_seed(seed)
    cfg = SAR3DConfig.tiny()
    dec, field = TriplaneDecoder.from_config(cfg), TriplaneField.from_config(cfg)
    with torch.no_grad():
        field.density_head.bias.fill_(4.0)
        planes = dec(torch.randn(2, 3, cfg.latent_channels, cfg.latent_size, cfg.latent_size))
    c = torch.stack([orbit_cameras([0.0, 120.0], [10.0, -3.0]), orbit_cameras([45.0, 200.0], [20.0, 5.0])])
    return planes, field, c


def test_rendered_pixels_match_the_full_images():
    planes, field, c = dense_scene()
    H, W = 6, 5
    with torch.no_grad():
        full = render_images(planes, field, c, H, W, num_samples=10, chunk=17)
        index = random_pixel_index(2, 2, H, W, 13, torch.Generator().manual_seed(3))
        sub = render_pixels(planes, field, c, H, W, index, num_samples=10)
    assert set(full) == {"rgb", "depth", "mask"} and full["rgb"].shape == (2, 2, 3, H, W)
    assert full["depth"].shape == full["mask"].shape == (2, 2, 1, H, W)
    assert set(sub) == {"rgb", "depth", "mask", "index", "view", "row", "col"}
    assert sub["rgb"].shape == (2, 13, 3) and sub["depth"].shape == sub["mask"].shape == (2, 13)
    assert torch.equal(sub["index"], index) and all(len(set(i.tolist())) == 13 for i in index)
    bi = torch.arange(2)[:, None]
    v, r, col = sub["view"], sub["row"], sub["col"]
    assert torch.equal(v * H * W + r * W + col, sub["index"])
    assert torch.allclose(full["rgb"].permute(0, 1, 3, 4, 2)[bi, v, r, col], sub["rgb"], atol=1e-5)
    assert torch.allclose(full["depth"][bi, v, 0, r, col], sub["depth"], atol=1e-5)
    assert torch.allclose(full["mask"][bi, v, 0, r, col], sub["mask"], atol=1e-5)
    assert full["mask"].max() > 0.3 and full["mask"].min() < 1e-6  # some rays miss the box


def test_render_rays_is_the_volume_render_of_the_camera_rays():
    planes, field, c = dense_scene(1)
    o, d, scale = camera_pixel_rays(c, 4, 3)
    assert o.shape == d.shape == (2, 24, 3) and scale.shape == (2, 24)
    torch.testing.assert_close(scale, ray_depth_scale(c, 4, 3).reshape(2, -1))
    with torch.no_grad():
        planar = render_rays(planes, field, o, d, 10, scale)
        along = render_rays(planes, field, o, d, 10, chunk=7)  # no scale: distances along the ray
        images = render_images(planes, field, c, 4, 3, 10)
    torch.testing.assert_close(along["depth"], planar["depth"] * scale)
    torch.testing.assert_close(along["rgb"], planar["rgb"])  # chunks change nothing without stratified samples
    torch.testing.assert_close(images["mask"].reshape(2, -1), planar["mask"])
    near, far = ray_box_interval(o, d, -field.bound, field.bound)
    direct = volume_render(lambda p: field.query(planes, p), o, d, near, far, 10, depth_scale=scale)
    torch.testing.assert_close(planar["rgb"], direct["rgb"])
    torch.testing.assert_close(planar["mask"], direct["opacity"])


def test_render_views_dispatches_to_images_and_pixels():
    """The combined entry point (``SAR3DVQVAE.render``'s): full images, or pixels at ``index``, or at
    ``ray_subset`` pixels drawn by ``random_pixel_index`` from the generator it then samples with."""
    planes, field, c = dense_scene(2)
    H, W = 5, 4
    G = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    with torch.no_grad():
        for a, b in ((render_views(planes, field, c, H, W, 8, chunk=9), render_images(planes, field, c, H, W, 8)),
                     (render_views(planes, field, c, H, W, 8, stratified=True, generator=G(1)),
                      render_images(planes, field, c, H, W, 8, stratified=True, generator=G(1)))):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        g = G(3)
        sub = render_views(planes, field, c, H, W, 8, ray_subset=11, generator=G(3), stratified=True, chunk=4)
        ref = render_pixels(planes, field, c, H, W, random_pixel_index(2, 2, H, W, 11, g), 8, stratified=True,
                            generator=g, chunk=4)
        assert sub.keys() == ref.keys() and all(torch.equal(sub[k], ref[k]) for k in sub)
        idx = patch_index(2, 2, H, W, 3, generator=G(4))
        at = render_views(planes, field, c, H, W, 8, index=idx)
        assert all(torch.equal(at[k], v) for k, v in render_pixels(planes, field, c, H, W, idx, 8).items())


def test_clear_errors_on_wrong_shapes():
    cfg = SAR3DConfig.tiny()
    dec, field = TriplaneDecoder.from_config(cfg), TriplaneField.from_config(cfg)
    with pytest.raises(ValueError, match="latent triplane"):
        dec(torch.zeros(1, 2, cfg.latent_channels, 8, 8))
    planes = torch.zeros(1, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="points"):
        sample_triplane(planes, torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="planes"):
        sample_triplane(torch.zeros(3, 4, 8, 8), torch.zeros(1, 5, 3))
    o = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match="near"):
        volume_render(sphere_field(1.0), o, o, torch.zeros(1, 3), torch.ones(1, 4), 8)
    with pytest.raises(ValueError, match="num_samples"):
        volume_render(sphere_field(1.0), o, o, torch.zeros(1, 4), torch.ones(1, 4), 0)
    with pytest.raises(ValueError, match="cameras c"):
        render_images(planes, field, orbit_cameras([0.0], [0.0]), 4, 4, 8)
    with pytest.raises(ValueError, match="cameras c"):
        render_pixels(planes, field, orbit_cameras([0.0], [0.0]), 4, 4, torch.zeros(1, 2, dtype=torch.long), 8)
    with pytest.raises(ValueError, match="index"):
        render_pixels(planes, field, orbit_cameras([0.0], [0.0])[None], 4, 4, torch.tensor([[16]]), 8)
    with pytest.raises(ValueError, match="ray_subset"):
        random_pixel_index(1, 1, 4, 4, 17)
    with pytest.raises(ValueError, match="ray_subset"):
        render_views(planes, field, orbit_cameras([0.0], [0.0])[None], 4, 4, 8, ray_subset=100)
    with pytest.raises(ValueError, match="not both"):
        render_views(planes, field, orbit_cameras([0.0], [0.0])[None], 4, 4, 8, ray_subset=2,
                     index=torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("layers", [1, 2])
def test_split_field_keeps_density_and_colour_channels_apart(layers):
    torch.manual_seed(0)
    field = TriplaneField(8, hidden=16, layers=layers, colour_channels=4)  # the last 4 channels are colour
    assert (field.density_channels, field.colour_channels) == (4, 4)
    planes = torch.randn(1, 3, 8, 6, 6, requires_grad=True)
    pts = torch.rand(1, 50, 3) * 0.8 - 0.4
    sigma, rgb = field.query(planes, pts)
    bumped = planes.detach().clone()
    bumped[:, :, 4:] += 1.0  # colour channels only
    sigma2, rgb2 = field.query(bumped, pts)
    assert torch.equal(sigma, sigma2) and not torch.allclose(rgb, rgb2)
    bumped = planes.detach().clone()
    bumped[:, :, :4] += 1.0  # density channels only
    sigma3, rgb3 = field.query(bumped, pts)
    assert torch.equal(rgb, rgb3) and not torch.allclose(sigma, sigma3)
    # a density loss sends no gradient to the colour channels
    sigma.sum().backward()
    assert planes.grad[:, :, 4:].abs().max() == 0 and planes.grad[:, :, :4].abs().max() > 0
    assert field.trunk_features(planes, pts).shape == (1, 50, 16)


def test_shared_trunk_field_and_bad_colour_channels():
    shared = TriplaneField(8, hidden=16)  # the default: one trunk
    assert shared.color_trunk is None and shared.density_channels == 8
    planes = torch.randn(1, 3, 8, 6, 6)
    bumped = planes.clone()
    bumped[:, :, 4:] += 1.0
    pts = torch.rand(1, 20, 3) * 0.8 - 0.4
    assert not torch.allclose(shared.query(planes, pts)[0], shared.query(bumped, pts)[0])  # one trunk sees all
    for bad in (8, -1):
        with pytest.raises(ValueError, match="colour_channels"):
            TriplaneField(8, colour_channels=bad)
    cfg = SAR3DConfig(extra={"triplane": {"colour_channels": 8}})  # tiny: F = 16
    assert TriplaneField.from_config(cfg).colour_channels == 8 and TriplaneField.from_config(cfg).density_channels == 8


def test_two_stream_decoder_keeps_geometry_and_colour_latents_apart():
    torch.manual_seed(0)
    cfg = SAR3DConfig(extra={"triplane": {"colour_channels": 8, "colour_latent_channels": 3}})  # tiny: C = 8, F = 16
    dec = TriplaneDecoder.from_config(cfg)
    assert dec.colour is not None and dec.colour.latent_channels == 3 and dec.colour.feature_channels == 8
    f = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    planes = dec(f)
    assert planes.shape == (2, 3, 16, 32, 32)
    bumped = f.detach().clone()
    bumped[:, :, 5:] += 1.0  # colour latents only: the geometry features (the first F - 8) do not move
    moved = dec(bumped)
    assert torch.equal(planes[:, :, :8], moved[:, :, :8]) and not torch.allclose(planes[:, :, 8:], moved[:, :, 8:])
    bumped = f.detach().clone()
    bumped[:, :, :5] += 1.0  # geometry latents only
    moved = dec(bumped)
    assert torch.equal(planes[:, :, 8:], moved[:, :, 8:]) and not torch.allclose(planes[:, :, :8], moved[:, :, :8])
    # with the split field, a density loss sends no gradient to the colour latents
    field = TriplaneField.from_config(cfg)
    sigma, _ = field.query(planes, torch.rand(2, 64, 3) * 0.8 - 0.4)
    sigma.sum().backward()
    assert f.grad[:, :, 5:].abs().max() == 0 and f.grad[:, :, :5].abs().max() > 0
    # the default is the one-stream decoder of the shipped checkpoint
    assert TriplaneDecoder.from_config(SAR3DConfig()).colour is None


def test_two_stream_decoder_refuses_bad_settings():
    with pytest.raises(ValueError, match="colour_channels"):  # colour latents need the split field's colour input
        TriplaneDecoder.from_config(SAR3DConfig(extra={"triplane": {"colour_latent_channels": 4}}))
    with pytest.raises(ValueError, match="colour_latent_channels"):
        TriplaneDecoder(8, 16, (32, 32), colour_latent_channels=8, colour_feature_channels=4)
    with pytest.raises(ValueError, match="widths"):
        TriplaneDecoder(8, 16, (32, 32, 32), colour_latent_channels=4, colour_feature_channels=4,
                        colour_decoder_channels=(16, 16))


def test_attention_decoder_starts_as_the_conv_stack_and_mixes_planes_only_across():
    """The optional DiT-like blocks: zero-initialised outputs make a fresh decoder (positions zeroed) the plain
    conv stack; a within-plane block never lets one plane's cells reach another's, an across-plane block does."""
    from sar3d_core.triplane import PlaneAttentionBlock
    torch.manual_seed(0)
    plain = TriplaneDecoder(8, 16, (8, 8, 8))
    attn = TriplaneDecoder(8, 16, (8, 8, 8), attention_blocks=2, attention_heads=2, latent_size=4)
    missing, unexpected = attn.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k == "pos" or k.startswith("blocks.") for k in missing)
    f = torch.randn(2, 3, 8, 4, 4)
    with torch.no_grad():
        attn.pos.zero_()
    torch.testing.assert_close(attn(f), plain(f))
    assert [b.across_planes for b in attn.blocks] == [False, True]

    x = torch.randn(1, 3, 8, 4, 4)
    x2 = x.clone()
    x2[:, 0] += torch.randn(8, 4, 4)  # change the xy plane only
    for across in (False, True):
        block = PlaneAttentionBlock(8, 2, across_planes=across)
        for p in block.parameters():  # leave the zero start: outputs must depend on the input
            torch.nn.init.normal_(p, std=0.3)
        with torch.no_grad():
            d = (block(x2) - block(x)).abs().flatten(2).amax(-1)[0]  # (3,) change per plane
        assert d[0] > 1e-3
        assert (d[1:] > 1e-3).all() if across else (d[1:] == 0).all()


def test_attention_decoder_from_the_config_trains_its_blocks():
    from sar3d_core.vqvae import SAR3DVQVAE
    cfg = SAR3DConfig.tiny()
    cfg.extra = {**cfg.extra, "triplane": {**cfg.extra.get("triplane", {}), "attention_blocks": 2}}
    dec = SAR3DVQVAE(cfg).decoder
    assert len(dec.blocks) == 2 and dec.pos.shape == (3, TriplaneSettings.from_config(cfg).decoder_channels[0], 8, 8)
    f = torch.randn(2, 3, cfg.latent_channels, 8, 8)
    dec(f).square().mean().backward()
    assert dec.blocks[0].attn.out_proj.weight.grad.abs().sum() > 0  # zero-initialised, but it learns
    with pytest.raises(ValueError, match="latent_size"):
        TriplaneDecoder(8, 16, (8, 8, 8), attention_blocks=1)
    with pytest.raises(ValueError, match="divisible"):
        TriplaneDecoder(8, 16, (8, 8, 8), attention_blocks=1, attention_heads=3, latent_size=4)
