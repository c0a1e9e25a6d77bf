"""Data formats against independent checks: round trips on analytic views, multi-view
geometry on the real samples (consistency across views, rays against the object box,
normals against finite differences of the depth), clear errors and atomic writes."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import reference_path
from sar3d_core import data
from sar3d_core.cameras import (
    camera_rays, chunk_cameras, plucker_embedding, project_points, ray_depth_scale, unpack_camera, unproject_depth,
)
from sar3d_core.data import (
    MultiViewDataset, load_views, read_chunk, read_gobjaverse, resize_views, write_chunk,
)
from sar3d_core.views import MultiView
from sar3d_core.world import build_dataset

RADIUS = 0.4


# ---------------------------------------------------------------- analytic fixtures
def sphere_views(c, size=32, s=2, caption="a test sphere") -> MultiView:
    """A sphere of radius 0.4 at the origin, ray-cast in closed form at ``s x`` resolution
    and box-filtered: soft mask, depth and normals averaged over the sub-pixels that hit."""
    o, d = camera_rays(c, size * s, size * s)  # (V, Hs, Ws, 3)
    b = (o * d).sum(-1)
    disc = b**2 - ((o * o).sum(-1) - RADIUS**2)
    hit = disc > 0
    t = -b - disc.clamp(min=0).sqrt()
    p = o + t[..., None] * d
    n = p / RADIUS
    depth = torch.where(hit, t / ray_depth_scale(c, size * s, size * s), 0)
    colour = torch.stack([0.5 + 0.4 * n[..., 0], 0.3 + 0.2 * n[..., 2], torch.full_like(t, 0.6)], -1)
    rgb = torch.where(hit[..., None], colour, torch.ones_like(colour)).permute(0, 3, 1, 2)
    hitf = hit.float()[:, None]
    pool = lambda x: F.avg_pool2d(x, s)  # noqa: E731
    mask = pool(hitf)
    depth = pool(depth[:, None]) / mask.clamp(min=1e-8)
    normal = F.normalize(pool(n.permute(0, 3, 1, 2) * hitf), dim=1) * (mask > 0)
    return MultiView(rgb=pool(rgb), depth=depth, mask=mask, normal=normal, c=c, caption=caption, source="sphere")


@pytest.fixture(scope="module")
def sphere():
    return sphere_views(chunk_cameras(7))


@pytest.fixture()
def chunk(tmp_path, sphere):
    return write_chunk(sphere, tmp_path / "obj" / "0", ins="test/sphere")


def write_fake_gobjaverse(root, mv: MultiView, ids):
    """``mv`` in the raw G-Objaverse format: straight-alpha RGBA PNG (black where empty),
    EXR with G-buffer normals (world (x, y, z) = (-R, -B, G)) and depth premultiplied by
    coverage, JSON camera with x, y, z, origin columns."""
    import OpenEXR

    c2w, K = unpack_camera(mv.c)
    for v, i in enumerate(ids):
        folder = root / "campos_512_v4" / f"{i:05d}"
        folder.mkdir(parents=True)
        alpha = mv.mask[v, 0].numpy()
        rgb = (mv.rgb[v].permute(1, 2, 0).numpy() - (1 - alpha[..., None])) / np.maximum(alpha[..., None], 1e-6)
        rgba = np.concatenate([rgb * (alpha[..., None] > 0), alpha[..., None]], -1)
        Image.fromarray(np.round(rgba.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
        n = mv.normal[v].numpy()
        channels = {"R": -n[0], "G": n[2], "B": -n[1], "A": mv.depth[v, 0].numpy() * alpha}
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        half = {k: a.astype(np.float16) for k, a in channels.items()}
        OpenEXR.File(header, half).write(str(folder / f"{i:05d}_nd.exr"))
        fov = 2 * math.atan(0.5 / float(K[v, 0, 0]))
        cam = {"x": c2w[v, :3, 0].tolist(), "y": c2w[v, :3, 1].tolist(), "z": c2w[v, :3, 2].tolist(),
               "origin": c2w[v, :3, 3].tolist(), "x_fov": fov, "y_fov": fov, "max_depth": 5.0}
        (folder / f"{i:05d}.json").write_text(json.dumps(cam))
    return root


# ---------------------------------------------------------------- independent geometry checks
def consistency(mv: MultiView, tol_px=2):
    """Back-project every view's depth and project it into every other view: the share of
    points inside that view's mask (dilated by ``tol_px``), the share in front of its
    surface by more than 3% (free-space violations: in front of every surface pixel within
    one pixel) and the median relative depth gap of the points that land on its surface
    (visible ones: gap under 5%)."""
    V, _, H, W = mv.rgb.shape
    valid = (mv.depth[:, 0] > 0) & (mv.mask[:, 0] >= 0.5)
    pts = unproject_depth(mv.depth[:, 0], mv.c)
    grown = F.max_pool2d((mv.mask >= 0.5).float(), 2 * tol_px + 1, 1, tol_px)[:, 0]
    far = torch.where(mv.depth[:, 0] > 0, mv.depth[:, 0], torch.full_like(mv.depth[:, 0], 1e9))
    nearest = -F.max_pool2d(-far[:, None], 3, 1, 1)[:, 0]  # nearest surface depth in each 3x3 window
    inside, violation, gap = [], [], []
    for i in range(V):
        p = pts[i][valid[i]]
        for j in range(V):
            if i == j or len(p) == 0:
                continue
            uv, z = project_points(p, mv.c[j], H, W)
            u, v = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            ok = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
            inside.append(grown[j][v[ok], u[ok]].mean().item())
            dj, z = mv.depth[j, 0][v[ok], u[ok]], z[ok]
            seen = dj > 0
            rel = (z[seen] - dj[seen]) / dj[seen]
            gap.append(rel[rel.abs() < 0.05].abs())
            # in front of every surface within one pixel: not explained by a thin part or an edge
            near = nearest[j][v[ok], u[ok]][seen]
            violation.append((z[seen] < near * 0.97).float().mean().item())
    return float(np.mean(inside)), float(np.min(inside)), float(np.mean(violation)), torch.cat(gap).median().item()


def rays_hit_box(mv: MultiView, half=0.45, pad=0.05):
    """Share of mask pixels whose ray meets the box ``[-half-pad, half+pad]^3`` (slab test in numpy)."""
    H, W = mv.size
    o, d = (x.double().numpy() for x in camera_rays(mv.c, H, W))
    sel = (mv.mask[:, 0] >= 0.5).numpy()
    o, d = o[sel], d[sel]
    with np.errstate(divide="ignore"):
        t0, t1 = (-(half + pad) - o) / d, ((half + pad) - o) / d
    near, far = np.minimum(t0, t1).max(-1), np.maximum(t0, t1).min(-1)
    return float(((near <= far) & (far > 0)).mean())


def fd_normal_agreement(mv: MultiView, k=2):
    """Median cosine between the decoded normals and normals of the back-projected depth
    (central differences with a step of ``k`` pixels, after a mask-aware box filter of
    size ``2k+1`` against 8-bit depth noise), oriented towards the camera; and per view
    the share of decoded normals facing the camera."""
    valid = ((mv.depth > 0) & (mv.mask >= 0.5)).float()
    box = lambda x: F.avg_pool2d(x, 2 * k + 1, 1, k)  # noqa: E731
    full = box(valid)[:, 0] > 0.999
    smooth = (box(mv.depth * valid) / box(valid).clamp(min=1e-8))[:, 0] * valid[:, 0]
    p = unproject_depth(smooth, mv.c)
    dx = p[:, k:-k, 2 * k:] - p[:, k:-k, :-2 * k]
    dy = p[:, 2 * k:, k:-k] - p[:, :-2 * k, k:-k]
    fd = F.normalize(torch.linalg.cross(dx, dy, dim=-1), dim=-1)
    centre = unpack_camera(mv.c)[0][:, None, None, :3, 3]
    to_cam = centre - p[:, k:-k, k:-k]
    fd = fd * torch.sign((fd * to_cam).sum(-1, keepdim=True))
    n = mv.normal.permute(0, 2, 3, 1)[:, k:-k, k:-k]
    sel = full[:, k:-k, k:-k]
    cos = (n * fd).sum(-1)[sel]
    facing = (n * to_cam).sum(-1) > 0
    per_view = [facing[v][sel[v]].float().mean().item() for v in range(mv.num_views) if sel[v].sum() > 30]
    return cos.median().item(), min(per_view)


# ---------------------------------------------------------------- round trips
def test_write_read_chunk_round_trip(chunk, sphere):
    assert sorted(p.name for p in chunk.iterdir()) == sorted(
        ["raw_img.png", "depth_alpha.jpg", "d_near_far.npy", "normal.png", "c.npy", "bbox.npy", "caption.txt",
         "ins.txt", "depth.npz"])
    assert [p.name for p in chunk.parent.iterdir()] == ["0"]  # no temp folder left
    with Image.open(chunk / "raw_img.png") as im:
        assert im.size == (12 * 32, 32)
    mv = read_chunk(chunk)
    assert torch.equal(mv.c, sphere.c) and mv.caption == "a test sphere"
    assert (mv.rgb - sphere.rgb).abs().max() <= 0.5 / 255 + 1e-6  # PNG: 8-bit rounding only
    assert (mv.mask - sphere.mask).abs().max() < 0.06 and (mv.mask - sphere.mask).abs().mean() < 0.005  # JPEG
    both = (mv.depth > 0) & (sphere.depth > 0)
    assert both.sum() > 0.95 * (sphere.depth > 0).sum()
    assert ((mv.depth - sphere.depth).abs()[both] / sphere.depth[both]).max() < 1e-3  # float16 depth.npz
    on = (mv.mask >= 0.5) & (sphere.mask >= 0.5)
    assert (mv.normal * sphere.normal).sum(1, keepdim=True)[on].min() > 0.995  # 8-bit normals, world frame
    bbox = np.load(chunk / "bbox.npy")
    rows, cols = np.nonzero(sphere.mask[3, 0].numpy() >= 0.5)
    assert bbox[3].tolist() == [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]


def test_read_chunk_without_depth_npz_decodes_the_jpeg_disparity(chunk, sphere):
    (chunk / "depth.npz").unlink()
    mv = read_chunk(chunk)
    both = (mv.depth > 0) & (sphere.depth > 0)
    assert both.sum() > 0.8 * (sphere.mask >= 0.5).sum()  # edges may be dropped by the median test
    assert (mv.depth[(mv.depth > 0) & (sphere.depth == 0)]).numel() == 0
    rel = (mv.depth - sphere.depth).abs()[both] / sphere.depth[both]
    assert rel.median() < 0.005 and rel.max() < 0.02  # 8-bit disparity over [1/3, 1/z_min]


def test_resize_views_keeps_surface_depth_and_unit_normals(sphere):
    small = resize_views(sphere, 16)
    assert small.rgb.shape == (12, 3, 16, 16)
    ref = sphere_views(sphere.c, size=16, s=4)  # the same sphere supersampled straight to 16 px
    assert (small.mask - ref.mask).abs().max() < 1e-5
    both = (small.depth > 0) & (ref.depth > 0)
    assert torch.equal(small.depth > 0, ref.depth > 0)
    assert ((small.depth - ref.depth).abs()[both] / ref.depth[both]).max() < 0.02
    assert torch.allclose(small.normal.norm(dim=1)[both[:, 0]], torch.ones(1), atol=1e-5)


def test_read_gobjaverse_conventions_on_our_own_fixture(tmp_path, sphere):
    ids = [0, 6, 12]
    mv3 = sphere.select([0, 7, 9])
    root = write_fake_gobjaverse(tmp_path / "10120", mv3, ids)
    for folder in (root, root / "campos_512_v4"):
        g = read_gobjaverse(folder)
        assert g.num_views == 3 and torch.allclose(g.c, mv3.c, atol=1e-6)
        assert (g.rgb - mv3.rgb).abs().max() < 0.03  # straight alpha, 8 bits, composited on white
        assert (g.mask - mv3.mask).abs().max() <= 0.5 / 255 + 1e-6
        has = g.depth > 0
        assert torch.equal(has, mv3.mask >= 0.5)
        # un-premultiplied: edge pixels keep the surface depth (float16 A and 8-bit alpha)
        assert ((g.depth - mv3.depth).abs()[has] / mv3.depth[has]).max() < 0.01
        assert (g.normal * mv3.normal).sum(1)[has[:, 0]].min() > 0.999
    assert read_gobjaverse(root, views=[12, 0]).c[0].equal(read_gobjaverse(root).c[2])
    assert read_gobjaverse(root / "campos_512_v4" / "00006").c.equal(read_gobjaverse(root).c[1:2])  # one view folder
    assert load_views(str(root), num_views=2, size=16).rgb.shape == (2, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="00018"):
        read_gobjaverse(root, views=[0, 18])
    (root / "campos_512_v4" / "00006" / "00006_nd.exr").unlink()
    with pytest.raises(FileNotFoundError, match=r"00006/00006_nd\.exr"):
        read_gobjaverse(root)


# ---------------------------------------------------------------- the real samples
def test_real_chunk_is_one_consistent_object():
    mv = read_chunk(reference_path("sar3d_chunk", "1", "0"))
    assert mv.rgb.shape == (12, 3, 256, 256) and mv.caption == "a white pen with a purple handle"
    assert mv.c[0, 24].item() == pytest.approx(1 / 256, abs=1e-4)  # K as stored
    assert (mv.depth[mv.depth > 0] < 2.9).all() and (mv.depth > 0).sum() > 0.9 * (mv.mask >= 0.5).sum()
    inside, worst, violation, gap = consistency(mv)
    pts = unproject_depth(mv.depth[:, 0], mv.c)[mv.depth[:, 0] > 0]
    in_box = (pts.abs() <= 0.47).all(-1).float().mean().item()
    hit = rays_hit_box(mv)
    cos, facing = fd_normal_agreement(mv)
    print(f"\nreal chunk: in-mask {inside:.4f} (worst pair {worst:.4f}), free-space violations {violation:.4f}, "
          f"median visible depth gap {gap:.4f}, points in box {in_box:.4f}, rays hit box {hit:.4f}, "
          f"normal vs FD median cos {cos:.4f}, min facing share {facing:.3f}")
    assert inside > 0.95 and worst > 0.9 and violation < 0.01 and gap < 0.02  # 8-bit disparity
    assert in_box > 0.995 and hit > 0.999
    assert cos > 0.9 and facing > 0.9


def test_real_gobjaverse_is_one_consistent_object():
    mv = read_gobjaverse(reference_path("gobjaverse_object", "Animals", "0", "10120"))
    assert mv.rgb.shape == (6, 3, 512, 512) and mv.caption is None
    assert mv.c[:, 16].allclose(torch.tensor(1.3889), atol=1e-3)
    inside, worst, violation, gap = consistency(mv)
    pts = unproject_depth(mv.depth[:, 0], mv.c)[mv.depth[:, 0] > 0]
    in_box = (pts.abs() <= 0.47).all(-1).float().mean().item()
    hit = rays_hit_box(mv)
    cos, facing = fd_normal_agreement(mv, k=1)
    print(f"\nreal G-Objaverse: in-mask {inside:.4f} (worst pair {worst:.4f}), free-space violations {violation:.4f}, "
          f"median visible depth gap {gap:.4f}, points in box {in_box:.4f}, rays hit box {hit:.4f}, "
          f"normal vs FD median cos {cos:.4f}, min facing share {facing:.3f}")
    assert inside > 0.95 and worst > 0.95 and violation < 0.01 and gap < 0.005
    assert in_box > 0.995 and hit > 0.999
    assert cos > 0.95 and facing > 0.9


def test_real_samples_through_the_dataset():
    chunk = reference_path("sar3d_chunk", "1", "0")
    gobj = reference_path("gobjaverse_object", "Animals", "0", "10120")
    ds = MultiViewDataset([chunk, gobj], size=32)
    a, b = ds[0], ds[1]
    assert a["encoder_input"].shape == b["encoder_input"].shape == (6, 10, 32, 32)
    assert a["caption"] == "a white pen with a purple handle" and a["id"] == "daily-used/91/467794"
    assert b["caption"] == "" and torch.equal(b["input_c"], b["target_c"])  # 6 views: inputs = targets


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("defect, match", [
    ("missing", r"lacks normal\.png, c\.npy"),
    ("size", r"depth_alpha\.jpg is 384x32 pixels: expected 384x64"),
    ("nan_depth", r"depth\.npz holds NaN"),
    ("nan_range", r"d_near_far\.npy holds NaN"),
    ("rigid", r"c\.npy.*not a rigid transform"),
    ("tiles", r"raw_img\.png is 380 pixels wide"),
])
def test_bad_chunk_gives_one_clear_error(chunk, defect, match):
    if defect == "missing":
        (chunk / "normal.png").unlink()
        (chunk / "c.npy").unlink()
    elif defect == "size":
        Image.new("L", (12 * 32, 32)).save(chunk / "depth_alpha.jpg")
    elif defect == "nan_depth":
        depth = np.load(chunk / "depth.npz")["depth"]
        depth[3, 10, 10] = np.nan
        np.savez(chunk / "depth.npz", depth=depth)
    elif defect == "nan_range":
        (chunk / "depth.npz").unlink()
        near_far = np.load(chunk / "d_near_far.npy")
        near_far[1, 2] = np.nan
        np.save(chunk / "d_near_far.npy", near_far)
    elif defect == "rigid":
        c = np.load(chunk / "c.npy")
        c[4, :3] *= 1.2  # a scaled row: not a rotation
        np.save(chunk / "c.npy", c)
    else:
        Image.new("RGB", (380, 32)).save(chunk / "raw_img.png")
    with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
        read_chunk(chunk)
    assert str(chunk) in str(err.value)


def test_write_chunk_is_atomic(tmp_path, sphere, monkeypatch):
    def fail_halfway(mv, folder, ins):
        (folder / "raw_img.png").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "_write_chunk_files", fail_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_chunk(sphere, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_chunk(sphere, tmp_path / "a")
    with pytest.raises(FileExistsError, match="exists"):
        write_chunk(sphere, tmp_path / "a")
    write_chunk(sphere.select([0] * 12), tmp_path / "a", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["a"] and torch.equal(read_chunk(tmp_path / "a").c[5], sphere.c[0])


def test_load_views_dispatch_and_errors(chunk, tmp_path):
    from sar3d_core.world import make_object

    assert load_views(str(chunk), num_views=4, size=16).rgb.shape == (4, 3, 16, 16)
    proc = load_views("proc:3", num_views=2, size=16)
    assert proc.caption == make_object(3).caption and torch.equal(proc.c, chunk_cameras(3)[:2])
    assert (proc.mask > 0.5).any(dim=(1, 2, 3)).all()
    for spec, err, match in [("proc:x", ValueError, "integer seed"),
                             (str(tmp_path / "nope"), FileNotFoundError, "no such"),
                             (str(tmp_path), ValueError, "neither a chunk")]:
        with pytest.raises(err, match=match):
            load_views(spec)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported input"):
        load_views(str(tmp_path / "notes.txt"))


def test_load_views_of_a_mesh_file(tmp_path):
    import trimesh

    path = tmp_path / "ball.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=3.0).export(path)  # far outside the box: normalised
    mv = load_views(str(path), num_views=3, size=16)
    assert mv.num_views == 3 and (mv.mask > 0).any()
    pts = unproject_depth(mv.depth[:, 0], mv.c)[mv.depth[:, 0] > 0]
    assert (pts.norm(dim=-1) - 0.95 * 0.45).abs().max() < 0.03  # a sphere of radius 0.43 after normalize_mesh


def test_load_views_reads_a_y_up_mesh_upright(tmp_path):
    import trimesh

    from sar3d_core.render import Y_UP_TO_Z_UP

    box = trimesh.creation.box(extents=(0.2, 0.8, 0.3))  # tall along y: a +Y-up file
    box.export(tmp_path / "y_up.obj")
    box.apply_transform(Y_UP_TO_Z_UP)  # the same object, +Z up
    box.export(tmp_path / "z_up.obj")
    upright = load_views(str(tmp_path / "z_up.obj"), num_views=3, size=16)
    turned = load_views(str(tmp_path / "y_up.obj"), num_views=3, size=16, up="y")
    torch.testing.assert_close(turned.depth, upright.depth, atol=1e-5, rtol=0)
    assert not torch.allclose(load_views(str(tmp_path / "y_up.obj"), num_views=3, size=16).depth, upright.depth)
    for spec in ("proc:3", str(tmp_path)):
        with pytest.raises(ValueError, match="applies to mesh files only"):
            load_views(spec, num_views=1, size=16, up="y")
    with pytest.raises(ValueError, match="up axis"):
        load_views(str(tmp_path / "z_up.obj"), up="x")


# ---------------------------------------------------------------- data set and builder
class FakeObject:
    def __init__(self, seed):
        self.seed, self.caption, self.category = seed, f"sphere number {seed}", "ball"

    def to_dict(self):
        return {"seed": self.seed, "category": self.category, "attributes": {"colour": "red"},
                "caption": self.caption, "split": "train"}


def fake_world(monkeypatch, fail_at=None):
    calls = []

    def render(obj, c, height, width, supersample=1):
        calls.append(obj.seed)
        if obj.seed == fail_at:
            raise RuntimeError("renderer crashed")
        return sphere_views(c, size=height, s=1, caption=None)

    monkeypatch.setattr("sar3d_core.world.dataset.objects_in_split", lambda split, count, start=0:
                        [FakeObject(s) for s in range(start, start + count)])
    monkeypatch.setattr("sar3d_core.world.dataset.make_object", FakeObject)  # what a worker rebuilds from the seed
    monkeypatch.setattr("sar3d_core.world.dataset.render_sdf", render)
    return calls


def test_failed_build_leaves_nothing_half_written_and_resumes(tmp_path, monkeypatch):
    fake_world(monkeypatch, fail_at=1)
    with pytest.raises(RuntimeError, match="crashed"):
        build_dataset(tmp_path / "cache", 3, size=16, progress=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["000000"]  # one complete chunk, no index, no temp
    read_chunk(tmp_path / "cache" / "000000")
    calls = fake_world(monkeypatch)
    out = build_dataset(tmp_path / "cache", 3, size=16, progress=False)
    assert calls == [1, 2]  # the finished object was skipped
    index = json.loads((out / "index.json").read_text())
    assert [e["seed"] for e in index["objects"]] == [0, 1, 2] and index["objects"][2]["caption"] == "sphere number 2"
    with pytest.raises(ValueError, match="16 px"):
        build_dataset(out, 3, size=32, progress=False)


def test_dataset_items_and_plucker_channels(tmp_path, monkeypatch):
    fake_world(monkeypatch)
    ds = MultiViewDataset(build_dataset(tmp_path / "cache", 2, size=16, progress=False))
    assert len(ds) == 2
    item = ds[1]
    shapes = {"encoder_input": (6, 10, 16, 16), "input_c": (6, 25), "target_rgb": (6, 3, 16, 16),
              "target_depth": (6, 1, 16, 16), "target_mask": (6, 1, 16, 16), "target_normal": (6, 3, 16, 16),
              "target_c": (6, 25)}
    assert {k: tuple(item[k].shape) for k in shapes} == shapes
    assert item["caption"] == "sphere number 1" and item["seed"] == 1 and item["id"] == "proc/train/1"
    c = chunk_cameras(1)
    assert torch.equal(item["input_c"], c[:6]) and torch.equal(item["target_c"], c[6:])
    assert torch.allclose(item["encoder_input"][:, 4:], plucker_embedding(item["input_c"], 16, 16), atol=1e-6)
    ref = sphere_views(c[:6], 16, 1)
    assert (item["encoder_input"][:, :3] - ref.rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(item["encoder_input"][:, 3:4], ref.depth, rtol=1e-3, atol=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["encoder_input"].shape == (2, 6, 10, 16, 16) and batch["caption"][0] == "sphere number 0"


def test_dataset_of_gobjaverse_folders_with_few_views(tmp_path, sphere):
    root = write_fake_gobjaverse(tmp_path / "obj", sphere.select([0, 7, 9]), [0, 6, 12])
    item = MultiViewDataset([root])[0]
    assert item["encoder_input"].shape == (6, 10, 32, 32) and item["id"] == "obj"
    assert torch.allclose(item["input_c"], sphere.c[[0, 7, 9, 0, 7, 9]], atol=1e-6)  # cycled, inputs = targets
    assert torch.equal(item["input_c"], item["target_c"])
    with pytest.raises(FileNotFoundError, match="not a data set folder"):
        MultiViewDataset([tmp_path / "empty"])


def test_build_procedural_dataset_and_read_it_back(tmp_path):
    from sar3d_core.world import make_object

    out = build_dataset(tmp_path / "proc", 2, size=32, supersample=1, progress=False)
    ds = MultiViewDataset(out)
    assert len(ds) == 2
    for i, entry in enumerate(json.loads((out / "index.json").read_text())["objects"]):
        item = ds[i]
        assert item["seed"] == entry["seed"] and item["caption"] == make_object(entry["seed"]).caption != ""
        assert item["encoder_input"].shape == (6, 10, 32, 32)
        assert (item["target_mask"] > 0.5).any(dim=(1, 2, 3)).all()  # the object is seen by every target view
    mv = read_chunk(out / json.loads((out / "index.json").read_text())["objects"][0]["folder"])
    inside, _, violation, _ = consistency(mv)
    assert inside > 0.97 and violation < 0.01


def test_parallel_build_matches_one_worker_and_sends_no_tensors(tmp_path, monkeypatch):
    """Two worker processes write the same files as one. The jobs sent to the workers carry no
    tensors: each tensor pickled to a worker pins a file descriptor of the parent while the pool
    lives (a 10,000-object build died of "Too many open files" after about 6,600 objects)."""
    import pickle

    from sar3d_core.world import build_dataset

    build_dataset(tmp_path / "one", count=3, size=16, workers=1, progress=False)
    build_dataset(tmp_path / "two", count=3, size=16, workers=2, progress=False)
    for folder in sorted(p.name for p in (tmp_path / "one").iterdir() if p.is_dir()):
        for f in sorted((tmp_path / "one" / folder).iterdir()):
            assert f.read_bytes() == (tmp_path / "two" / folder / f.name).read_bytes(), f

    sent = []

    class InProcessPool:  # records what would be pickled to the workers, runs it here
        def __init__(self, workers, initializer=None):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap_unordered(self, fn, jobs):
            for job in jobs:
                sent.append(pickle.dumps(job))
                yield fn(job)

    class Context:
        Pool = InProcessPool

    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_context", lambda method: Context())
    build_dataset(tmp_path / "three", count=2, size=16, workers=2, progress=False)
    assert len(sent) == 2 and not any(b"torch" in job for job in sent)
