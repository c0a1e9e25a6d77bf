"""Cameras and Plücker rays against independent maths (numpy loops, closed forms, real poses)."""
import json
import math

import numpy as np
import pytest
import torch

from conftest import reference_path
from sar3d_core.cameras import (
    camera_centres, camera_rays, check_rigid, chunk_cameras, gobjaverse_cameras, intrinsics_from_fov,
    look_at, orbit_cameras, pack_camera, plucker_embedding, project_points, ray_depth_scale,
    unpack_camera, unproject_depth,
)

torch.manual_seed(0)
CAMS = orbit_cameras([0, 70, 200, 315], [10, 35, -20, 60], [1.6, 1.9, 2.0, 1.75])


def test_default_intrinsics_are_gobjaverse():
    K = intrinsics_from_fov()
    assert K[0, 0].item() == pytest.approx(1.3889, abs=1e-3) and K[0, 2] == 0.5 and K[1, 2] == 0.5


def test_pack_unpack_round_trip():
    c2w, K = unpack_camera(CAMS)
    assert torch.equal(pack_camera(c2w, K), CAMS)
    assert c2w.shape == (4, 4, 4) and K.shape == (4, 3, 3)
    with pytest.raises(ValueError, match="25"):
        unpack_camera(torch.zeros(4, 24))


def test_orbit_cameras_look_at_origin_from_the_given_position():
    c2w, _ = unpack_camera(CAMS)
    for i, (az, el, r) in enumerate([(0, 10, 1.6), (70, 35, 1.9), (200, -20, 2.0), (315, 60, 1.75)]):
        a, e = math.radians(az), math.radians(el)
        expected = r * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        np.testing.assert_allclose(c2w[i, :3, 3].numpy(), expected, atol=1e-5)
        # forward axis points at the origin; y (down) has a negative world-z component
        np.testing.assert_allclose(c2w[i, :3, 2].numpy(), -expected / r, atol=1e-5)
        assert c2w[i, 2, 1] < 0
    check_rigid(c2w)


def test_pole_views_are_rigid_and_match_the_reference_convention():
    top, bottom = look_at([0, 0, 2.0]), look_at([0, 0, -2.0])
    np.testing.assert_allclose(top[:3, :3].numpy(), np.diag([-1.0, 1.0, -1.0]), atol=1e-6)
    np.testing.assert_allclose(bottom[:3, :3].numpy(), np.diag([-1.0, -1.0, 1.0]), atol=1e-6)


@pytest.mark.parametrize("bad", ["scale", "shear", "reflect", "row", "nan"])
def test_check_rigid_rejects_non_rigid(bad):
    m = look_at([1.5, 0.3, 0.4])
    if bad == "scale":
        m[:3, :3] *= 1.1
    elif bad == "shear":
        m[0, 1] += 0.2
    elif bad == "reflect":
        m[:3, 0] *= -1
    elif bad == "row":
        m[3, 0] = 0.5
    else:
        m[0, 0] = float("nan")
    with pytest.raises(ValueError, match="c2w"):
        check_rigid(m)
    with pytest.raises(ValueError):
        pack_camera(m)


def _plucker_by_loops(c, H, W):
    """A second computation of the embedding: per pixel, with numpy and an inverted K."""
    c = c.double().numpy()
    c2w, K = c[:16].reshape(4, 4), c[16:].reshape(3, 3).copy()
    K[2, 2] = 1.0
    Kpix = np.diag([W, H, 1.0]) @ K
    out = np.zeros((6, H, W))
    o = c2w[:3, 3]
    for v in range(H):
        for u in range(W):
            d = c2w[:3, :3] @ np.linalg.solve(Kpix, [u + 0.5, v + 0.5, 1.0])
            d /= np.linalg.norm(d)
            out[:3, v, u], out[3:, v, u] = np.cross(o, d), d
    return out


def test_plucker_matches_a_per_pixel_loop():
    P = plucker_embedding(CAMS, 5, 7)
    assert P.shape == (4, 6, 5, 7)
    for i in range(4):
        np.testing.assert_allclose(P[i].numpy(), _plucker_by_loops(CAMS[i], 5, 7), atol=1e-5)


def test_moment_is_orthogonal_to_direction_and_direction_is_unit():
    P = plucker_embedding(CAMS, 16, 16)
    m, d = P[:, :3], P[:, 3:]
    assert (m * d).sum(1).abs().max() < 1e-5
    assert (d.norm(dim=1) - 1).abs().max() < 1e-5


def test_embedding_does_not_change_when_the_origin_slides_along_the_ray():
    origins, dirs = camera_rays(CAMS, 9, 9)
    P = plucker_embedding(CAMS, 9, 9).movedim(1, -1)
    for t in (-3.0, 0.7, 2.5):
        slid = origins + t * dirs  # another point on the same ray
        moment = torch.linalg.cross(slid, dirs, dim=-1)
        torch.testing.assert_close(moment, P[..., :3], atol=2e-5, rtol=0)
    # ... but a different ray (origin moved off the ray) changes it
    off = torch.linalg.cross(origins + torch.tensor([0.0, 0.0, 0.1]), dirs, dim=-1)
    assert (off - P[..., :3]).abs().max() > 1e-2


def test_centre_pixel_looks_along_the_optical_axis():
    c2w, _ = unpack_camera(CAMS)
    _, dirs = camera_rays(CAMS, 9, 9)  # odd size: pixel 4 has its centre at 4.5 = W / 2
    torch.testing.assert_close(dirs[:, 4, 4], c2w[:, :3, 2], atol=1e-6, rtol=0)


def test_unproject_then_project_lands_on_the_same_pixel():
    H, W = 12, 10
    depth = 1.0 + torch.rand(4, H, W)
    pts = unproject_depth(depth, CAMS)
    uv, z = project_points(pts.flatten(1, 2), CAMS, H, W)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).flatten(0, 1).expand(4, -1, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(z, depth.flatten(1), atol=1e-5, rtol=0)
    # planar depth: distance along the ray is depth * |(x, y, 1)|
    o, d = camera_rays(CAMS, H, W)
    dist = (pts - o).norm(dim=-1)
    torch.testing.assert_close(dist, depth * ray_depth_scale(CAMS, H, W), atol=1e-5, rtol=0)


def _sphere_depth(o, d, radius, c2w_z):
    """Analytic planar depth of a ray-sphere hit (sphere at the origin), or nan."""
    b = (o * d).sum(-1)
    disc = b ** 2 - ((o * o).sum(-1) - radius ** 2)
    t = -b - torch.sqrt(disc.clamp(min=0))
    t[disc < 0] = float("nan")
    return t * (d * c2w_z).sum(-1)


def test_reprojecting_into_another_view_lands_on_the_right_pixel():
    """A point seen on a sphere in view A, projected into view B, lies on B's pixel ray."""
    H = W = 24
    ca, cb = CAMS[0], CAMS[1]
    c2w_a, _ = unpack_camera(ca)
    o, d = camera_rays(ca, H, W)
    depth = _sphere_depth(o, d, 0.4, c2w_a[:3, 2])
    hit = ~torch.isnan(depth)
    assert hit.sum() > 50
    pts = unproject_depth(torch.nan_to_num(depth), ca)[hit]
    torch.testing.assert_close(pts.norm(dim=-1), torch.full((len(pts),), 0.4), atol=1e-4, rtol=0)
    uv, zb = project_points(pts, cb, H, W)
    # independent projection: invert c2w and apply the pixel-unit K
    c2w_b, Kb = (m.double() for m in unpack_camera(cb))
    p_cam = (torch.linalg.inv(c2w_b) @ torch.cat([pts.double(), torch.ones(len(pts), 1, dtype=torch.float64)], 1).T)[:3]
    pix = torch.diag(torch.tensor([W, H, 1.0], dtype=torch.float64)) @ Kb @ p_cam
    torch.testing.assert_close(uv.double(), (pix[:2] / pix[2]).T, atol=1e-3, rtol=0)
    torch.testing.assert_close(zb.double(), p_cam[2], atol=1e-4, rtol=0)
    # the point lies on the ray of B through uv
    x = (uv[:, 0] / W - Kb[0, 2].float()) / Kb[0, 0].float()
    y = (uv[:, 1] / H - Kb[1, 2].float()) / Kb[1, 1].float()
    ray = (c2w_b[:3, :3].float() @ torch.stack([x, y, torch.ones_like(x)])).T
    ray = ray / ray.norm(dim=-1, keepdim=True)
    rel = pts - c2w_b[:3, 3].float()
    off_ray = (rel - (rel * ray).sum(-1, keepdim=True) * ray).norm(dim=-1)
    assert off_ray.max() < 1e-4


def test_chunk_layout_matches_the_real_chunk_cameras():
    c_real = torch.tensor(np.load(reference_path("sar3d_chunk", "1", "0", "c.npy")))
    c_ours = chunk_cameras()
    torch.testing.assert_close(c_ours[:, :16], c_real[:, :16], atol=2e-3, rtol=0)
    torch.testing.assert_close(c_ours[:, 16:24], c_real[:, 16:24], atol=1e-3, rtol=0)


def test_seeded_chunk_cameras_keep_inputs_and_vary_supervision():
    a, b = chunk_cameras(1), chunk_cameras(2)
    assert torch.equal(a[:6], b[:6]) and not torch.allclose(a[6:], b[6:])
    assert torch.equal(a, chunk_cameras(1))
    r = camera_centres(a).norm(dim=-1)
    assert ((r > 1.8) & (r < 2.01)).all()


def test_gobjaverse_rings_match_the_real_json_poses():
    root = reference_path("gobjaverse_object", "Animals", "0", "10120", "campos_512_v4")
    ours = unpack_camera(gobjaverse_cameras())[0]
    for view in (0, 6, 12, 18, 24, 30):
        meta = json.loads((root / f"{view:05d}" / f"{view:05d}.json").read_text())
        real = np.stack([meta["x"], meta["y"], meta["z"], meta["origin"]], axis=1)
        np.testing.assert_allclose(ours[view, :3, :4].numpy(), real, atol=0.02)
