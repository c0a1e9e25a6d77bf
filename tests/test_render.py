"""The SDF and mesh renderers against closed forms (ray-sphere, ray-box, barycentrics) and each other."""
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sar3d_core.cameras import (camera_rays, chunk_cameras, orbit_cameras, project_points, ray_depth_scale,
                                unproject_depth)
from sar3d_core.render import (Y_UP_TO_Z_UP, Lighting, load_mesh, normalize_mesh, render_grid, render_mesh,
                               save_mesh)
from sar3d_core.world import render_sdf

FLAT = Lighting(ambient=1.0, directions=(), intensities=())  # rgb = albedo exactly


class Sphere:
    def __init__(self, radius=0.35, centre=(0.05, -0.02, 0.03), rgb=(0.8, 0.3, 0.2), shininess=0.0):
        self.radius, self.centre, self.rgb, self.shininess = radius, torch.tensor(centre), torch.tensor(rgb), shininess

    def sdf(self, p):
        return (p - self.centre).norm(dim=-1) - self.radius

    def color(self, p):
        return self.rgb.expand(p.shape[0], 3)


class Box:
    def __init__(self, half=(0.3, 0.2, 0.15), rgb=(0.2, 0.5, 0.9)):
        self.half, self.rgb = torch.tensor(half), torch.tensor(rgb)

    def sdf(self, p):  # exact box distance
        q = p.abs() - self.half
        return q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)

    def color(self, p):
        return self.rgb.expand(p.shape[0], 3)


class SphereOnBox:
    """A non-convex union: a sphere resting on an off-centre box (it occludes itself)."""

    caption = "a sphere on a box"

    def __init__(self):
        self.box, self.sphere = Box((0.35, 0.25, 0.1)), Sphere(0.18, (0.1, 0.05, 0.26))

    def sdf(self, p):
        return torch.minimum(self.box.sdf(p - torch.tensor([0.0, 0.0, -0.1])), self.sphere.sdf(p))

    def color(self, p):
        return torch.where((self.sphere.sdf(p) < 0.01)[:, None], self.sphere.color(p), self.box.color(p))


def rays_np(c, H, W):
    o, d = camera_rays(c, H, W)
    return o.double().numpy(), d.double().numpy(), ray_depth_scale(c, H, W).double().numpy()


def analytic_sphere(c, H, W, radius, centre):
    """Ray-sphere: ``|o + t d - m|^2 = r^2``, nearest root. -> hit, planar depth, normal, closest approach."""
    o, d, scale = rays_np(c, H, W)
    oc = o - np.asarray(centre)
    b = (oc * d).sum(-1)
    closest = np.sqrt(np.maximum((oc * oc).sum(-1) - b * b, 0))
    hit = closest < radius
    t = -b - np.sqrt(np.maximum(radius**2 - closest**2, 0))
    p = o + t[..., None] * d - np.asarray(centre)
    return hit, np.where(hit, t / scale, 0), p / radius, closest


def analytic_box(c, H, W, half):
    """Slab test for the box ``|p_i| <= h_i``: entry distance and the axis of the entered face."""
    o, d, scale = rays_np(c, H, W)
    half = np.asarray(half)
    with np.errstate(divide="ignore"):
        t0, t1 = (-half - o) / d, (half - o) / d
    near = np.minimum(t0, t1)
    t_in, t_out = near.max(-1), np.maximum(t0, t1).min(-1)
    axis = near.argmax(-1)
    hit = t_in < t_out
    p = o + t_in[..., None] * d
    normal = np.zeros_like(p)
    np.put_along_axis(normal, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
    # distance of the hit point to the edges of its face (small: the ray is near an edge)
    others = np.abs(half - np.abs(p))
    np.put_along_axis(others, axis[..., None], np.inf, -1)
    return hit, np.where(hit, t_in / scale, 0), normal, others.min(-1), t_out - t_in


def hwc(x):  # (V, C, H, W) tensor -> (V, H, W, C) numpy
    return x.permute(0, 2, 3, 1).double().numpy()


# ---------------------------------------------------------------- SDF renderer vs closed forms


def test_sphere_matches_ray_sphere_intersection():
    sphere = Sphere()
    c = orbit_cameras([0.0, 70.0, 200.0, 30.0], [10.0, -30.0, 60.0, 90.0], [1.6, 1.9, 2.2, 1.8])
    mv = render_sdf(sphere, c, 32, 32, eps=1e-6, max_steps=300, lighting=FLAT)
    hit, depth, normal, closest = analytic_sphere(c, 32, 32, sphere.radius, sphere.centre.numpy())
    clear = np.abs(closest - sphere.radius) > 1e-3  # pixels whose ray is not within 1e-3 of the silhouette
    mask = mv.mask[:, 0].numpy() > 0.5
    assert hit.sum() > 500 and (~hit).sum() > 500
    np.testing.assert_array_equal(mask[clear], hit[clear])
    both = mask & hit & clear
    np.testing.assert_allclose(mv.depth[:, 0].numpy()[both], depth[both], atol=1e-4)
    np.testing.assert_allclose(hwc(mv.normal)[both], normal[both], atol=2e-3)
    assert (mv.depth[:, 0].numpy()[~mask] == 0).all() and (hwc(mv.normal)[~mask] == 0).all()
    # flat lighting: the albedo on the object, white elsewhere
    np.testing.assert_allclose(hwc(mv.rgb)[mask], np.broadcast_to(sphere.rgb.numpy(), (mask.sum(), 3)), atol=1e-6)
    assert (hwc(mv.rgb)[~mask] == 1).all()


def test_box_matches_slab_intersection():
    box = Box()
    c = chunk_cameras(seed=3)
    mv = render_sdf(box, c, 32, 32, eps=1e-5, max_steps=400)
    hit, depth, normal, edge, _ = analytic_box(c, 32, 32, box.half.numpy())
    mask = mv.mask[:, 0].numpy() > 0.5
    clear = ~hit | (edge > 2e-3)
    assert hit.sum() > 500
    # a pixel within 1e-3 of an edge may go either way; none of the others may differ
    outside_band = ~(~hit & mask)  # extra hits only where the ray passes within eps-ish of the box
    np.testing.assert_array_equal(mask[clear & outside_band], hit[clear & outside_band])
    assert (mask & ~hit).sum() <= 3
    both = mask & hit & clear
    np.testing.assert_allclose(mv.depth[:, 0].numpy()[both], depth[both], atol=1e-3)
    np.testing.assert_allclose(hwc(mv.normal)[both], normal[both], atol=1e-3)


def test_shading_is_ambient_plus_lambert_plus_specular():
    sphere = Sphere(centre=(0.0, 0.0, 0.0))
    light = Lighting(ambient=0.2, directions=((0.3, -0.5, 0.8),), intensities=(0.7,), specular_exponent=16.0)
    c = orbit_cameras([20.0, 150.0], [15.0, -20.0], 1.8)
    matte = render_sdf(sphere, c, 24, 24, lighting=light)
    hit, _, n, closest = analytic_sphere(c, 24, 24, sphere.radius, (0, 0, 0))
    inner = hit & (closest < sphere.radius - 0.02)
    l = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    expected = sphere.rgb.numpy() * (0.2 + 0.7 * np.clip(n @ l, 0, None))[..., None]
    np.testing.assert_allclose(hwc(matte.rgb)[inner], expected[inner], atol=2e-3)
    shiny = render_sdf(Sphere(centre=(0.0, 0.0, 0.0), shininess=0.8), c, 24, 24, lighting=light)
    _, d, _ = rays_np(c, 24, 24)
    h = l - d
    h /= np.linalg.norm(h, axis=-1, keepdims=True)
    spec = 0.8 * 0.7 * np.clip((n * h).sum(-1), 0, None) ** 16
    np.testing.assert_allclose(hwc(shiny.rgb)[inner], np.clip(expected + spec[..., None], 0, 1)[inner], atol=3e-3)
    assert spec[inner].max() > 0.1  # the highlight is in view


def test_supersampled_mask_and_depth_average_the_subpixel_rays():
    sphere = Sphere()
    c = orbit_cameras([45.0], [20.0], 1.7)
    mv = render_sdf(sphere, c, 16, 16, supersample=3, eps=1e-6, max_steps=200)
    hit, depth, _, _ = analytic_sphere(c, 48, 48, sphere.radius, sphere.centre.numpy())
    blocks = lambda x: x.reshape(1, 16, 3, 16, 3).swapaxes(2, 3).reshape(1, 16, 16, 9)  # noqa: E731
    coverage = blocks(hit).mean(-1)
    assert ((coverage > 0) & (coverage < 1)).sum() > 10  # there are partial edge pixels
    np.testing.assert_allclose(mv.mask[:, 0].numpy(), coverage, atol=1e-6)
    mean_depth = blocks(depth).sum(-1) / np.maximum(blocks(hit).sum(-1), 1)
    np.testing.assert_allclose(mv.depth[:, 0].numpy(), mean_depth, atol=1e-4)
    # rgb is the coverage-weighted blend of the object and the white background
    lum, coverage = mv.rgb[0].mean(0).numpy(), coverage[0]
    assert lum[coverage == 0].min() == 1.0 and (lum[(coverage > 0) & (coverage < 1)] < 1).all()


def test_depth_unprojects_onto_the_surface_and_into_other_views():
    obj = SphereOnBox()
    c = chunk_cameras()[[1, 2, 7]]
    mv = render_sdf(obj, c, 48, 48)
    assert mv.caption == "a sphere on a box"
    mask0 = mv.mask[0, 0] > 0.5
    points = unproject_depth(mv.depth[0, 0], c[0])[mask0]  # (N, 3) world points seen by view 0
    assert points.shape[0] > 300
    assert obj.sdf(points).abs().max() < 2e-3
    # a point may land in a pixel whose centre ray just misses: grow the silhouettes by one pixel
    grown = torch.nn.functional.max_pool2d(mv.mask, 3, stride=1, padding=1)[:, 0] > 0.5
    for v in (1, 2):
        uv, z = project_points(points, c[v], 48, 48)
        col, row = uv.floor().long().unbind(-1)
        inside = (col >= 0) & (col < 48) & (row >= 0) & (row < 48)
        assert inside.all()
        assert grown[v][row, col].all()  # every surface point lies in the other view's silhouette
        # ... and nothing there is behind it: the other view sees that point or something in front
        seen = mv.mask[v, 0][row, col] > 0.5
        in_front = mv.depth[v, 0][row, col] <= z + 0.05
        assert seen.float().mean() > 0.8 and in_front[seen].float().mean() > 0.97


# ---------------------------------------------------------------- mesh renderer


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("shape", ["sphere", "box"])
def test_mesh_render_agrees_with_sdf_render(shape):
    if shape == "sphere":
        obj = Sphere(centre=(0.0, 0.0, 0.0))
        mesh = trimesh.creation.icosphere(subdivisions=4, radius=obj.radius)
    else:
        obj = Box()
        mesh = trimesh.creation.box(extents=2 * obj.half.numpy())
    mesh.visual.face_colors = np.append(obj.rgb.numpy() * 255, 255).round().astype(np.uint8)
    c = chunk_cameras()[:6]
    a, b = render_sdf(obj, c, 40, 40), render_mesh(mesh, c, 40, 40)
    ma, mb = a.mask[:, 0].numpy() > 0.5, b.mask[:, 0].numpy() > 0.5
    assert iou(ma, mb) > 0.97
    both = ma & mb
    depth_err = np.abs(a.depth[:, 0].numpy() - b.depth[:, 0].numpy())[both]
    assert np.median(depth_err) < 1e-3 and np.quantile(depth_err, 0.99) < 1e-2
    cos = (hwc(a.normal) * hwc(b.normal)).sum(-1)[both]
    assert np.median(cos) > 0.999
    # the same lights and colours: the two images agree where both see the object
    # (face colours are stored as uint8, hence the 1/255)
    assert np.median(np.abs(hwc(a.rgb) - hwc(b.rgb))[both]) < 3e-3


def test_triangle_backend_without_embree_agrees():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    c = orbit_cameras([10.0, 120.0], [20.0, -10.0], 1.7)
    fast = render_mesh(mesh, c, 12, 12)
    mesh.ray = trimesh.ray.ray_triangle.RayMeshIntersector(mesh)  # the pure-numpy path
    slow = render_mesh(mesh, c, 12, 12)
    assert torch.equal(fast.mask, slow.mask)
    torch.testing.assert_close(fast.depth, slow.depth, atol=1e-4, rtol=0)


def quadrant_texture():
    tex = np.zeros((8, 8, 3), np.uint8)  # top-left red, top-right blue, bottom-left green, bottom-right yellow
    tex[:4, :4], tex[:4, 4:], tex[4:, :4], tex[4:, 4:] = [255, 0, 0], [0, 0, 255], [0, 255, 0], [255, 255, 0]
    return tex


def textured_quad(material="pbr"):
    """A square in the plane x = 0, u along +y, v along +z (seen from +x: u right, v up)."""
    vertices = np.array([[0, -0.4, -0.4], [0, 0.4, -0.4], [0, 0.4, 0.4], [0, -0.4, 0.4]], float)
    mesh = trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False)
    image = Image.fromarray(quadrant_texture())
    mat = (trimesh.visual.material.PBRMaterial(baseColorTexture=image) if material == "pbr"
           else trimesh.visual.material.SimpleMaterial(image=image))
    mesh.visual = trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]], material=mat)
    return mesh


@pytest.mark.parametrize("ext", ["glb", "obj"])
def test_texture_colours_land_where_expected(tmp_path, ext):
    path = tmp_path / f"quad.{ext}"
    save_mesh(textured_quad("pbr" if ext == "glb" else "simple"), path)  # GLB: stored +Y up, read back +Z up
    mesh = load_mesh(path)
    c = orbit_cameras([0.0], [0.0], 1.5)  # from +x: image right is +y, image up is +z
    rgb = (hwc(render_mesh(mesh, c, 16, 16, lighting=FLAT).rgb)[0] * 255).round()
    # the quad covers about the middle 12 x 12 pixels; sample well inside each quadrant
    assert rgb[4, 4].tolist() == [255, 0, 0] and rgb[4, 11].tolist() == [0, 0, 255]
    assert rgb[11, 4].tolist() == [0, 255, 0] and rgb[11, 11].tolist() == [255, 255, 0]
    assert rgb[0, 0].tolist() == [255, 255, 255]


def test_pbr_base_colour_factor_multiplies_the_texture():
    mesh = textured_quad()
    mesh.visual.material.baseColorFactor = [0.5, 1.0, 1.0, 1.0]
    rgb = hwc(render_mesh(mesh, orbit_cameras([0.0], [0.0], 1.5), 16, 16, lighting=FLAT).rgb)[0]
    np.testing.assert_allclose(rgb[4, 4], [128 / 255, 0, 0], atol=1e-6)


def test_vertex_colours_are_barycentric(tmp_path):
    # one triangle with red, green, blue corners: the colour at a point is its barycentric coordinates
    corners = np.array([[0, -0.4, -0.3], [0, 0.4, -0.3], [0, 0.0, 0.4]])
    mesh = trimesh.Trimesh(corners, [[0, 1, 2]], vertex_colors=[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]],
                           process=False)
    path = tmp_path / "tri.ply"
    mesh.export(path)
    c = orbit_cameras([0.0], [0.0], 1.5)
    mv = render_mesh(load_mesh(path), c, 24, 24, lighting=FLAT)
    o, d, _ = rays_np(c, 24, 24)
    p = o + (-o[..., :1] / d[..., :1]) * d  # the rays' crossing of the plane x = 0
    bary = trimesh.triangles.points_to_barycentric(np.repeat(corners[None], p[0].size // 3, 0), p[0].reshape(-1, 3))
    bary = bary.reshape(24, 24, 3)
    mask = mv.mask[0, 0].numpy() > 0.5
    inside = (bary > 0.02).all(-1)
    assert inside.sum() > 40 and (mask[inside]).all()
    np.testing.assert_allclose(hwc(mv.rgb)[0][inside], bary[inside], atol=1e-5)


def test_face_colours_and_normals_face_the_camera():
    mesh = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    colours = np.zeros((12, 4), np.uint8)
    colours[:, 3] = 255
    colours[:, 0] = (mesh.face_normals[:, 0] > 0.5) * 255  # the +x face is red, the rest black
    mesh.visual.face_colors = colours
    c = orbit_cameras([0.0, 180.0], [0.0, 0.0], 1.5)
    mv = render_mesh(mesh, c, 16, 16, lighting=FLAT)
    centre = hwc(mv.rgb)[:, 8, 8]
    np.testing.assert_allclose(centre, [[1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(hwc(mv.normal)[:, 8, 8], [[1, 0, 0], [-1, 0, 0]], atol=1e-6)
    # an open quad seen from behind: its normal is flipped towards the camera
    back = render_mesh(textured_quad(), orbit_cameras([180.0], [0.0], 1.5), 8, 8)
    np.testing.assert_allclose(hwc(back.normal)[0, 4, 4], [-1, 0, 0], atol=1e-6)


def test_scene_parts_are_merged_with_their_colours(tmp_path):
    red, blue = textured_quad(), textured_quad()
    red.visual.material.baseColorTexture = Image.new("RGB", (4, 4), (255, 0, 0))
    blue.visual.material.baseColorTexture = Image.new("RGB", (4, 4), (0, 0, 255))
    cube = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    cube.visual.face_colors = [0, 200, 0, 255]
    scene = trimesh.Scene()
    scene.add_geometry(red, transform=trimesh.transformations.translation_matrix([0, -0.45, 0]))
    scene.add_geometry(blue, transform=trimesh.transformations.translation_matrix([0, 0.45, 0]))
    scene.add_geometry(cube, transform=trimesh.transformations.translation_matrix([0, 0, 0.6]))
    scene.apply_transform(np.linalg.inv(Y_UP_TO_Z_UP))  # glTF is +Y up: load_mesh turns it back
    scene.export(tmp_path / "scene.glb")
    mesh = load_mesh(tmp_path / "scene.glb")
    assert len(mesh.faces) == 2 + 2 + 12
    centre, scale = mesh.bounds.mean(0), 2 * 0.45 * 0.95 / mesh.extents.max()
    mesh = normalize_mesh(mesh)
    c = orbit_cameras([0.0], [0.0], 1.5)
    rgb = (hwc(render_mesh(mesh, c, 32, 32, lighting=FLAT).rgb)[0] * 255).round()
    # where the centres of the three parts land in the image (seen from +x: right is +y)
    centres = (np.array([[0.0, -0.45, 0.0], [0.0, 0.45, 0.0], [0.1, 0.0, 0.6]]) - centre) * scale
    uv, _ = project_points(torch.tensor(centres, dtype=torch.float32), c[0], 32, 32)
    (cr, rr), (cb, rb), (cg, rg) = uv.floor().long().tolist()
    assert rgb[rr, cr].tolist() == [255, 0, 0] and rgb[rb, cb].tolist() == [0, 0, 255]
    assert rgb[rg, cg].tolist() == [0, 200, 0]


# ---------------------------------------------------------------- files and normalisation


def test_load_mesh_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.glb"):
        load_mesh(tmp_path / "nothere.glb")
    cases = {
        "empty.obj": (b"", "empty"),
        "garbage.glb": (bytes(range(256)) * 4, "not a readable GLB"),
        "garbage.obj": (b"\x00\xff\xfe hello \x01\x02\n" * 20, "no triangle faces|not a readable OBJ"),
        "truncated.ply": (b"ply\nformat ascii 1.0\nelement vertex 2\n", "not a readable PLY"),
        "broken.gltf": (b'{"asset": 1}', "not a readable GLTF"),
        "model.xyz": (b"1 2 3\n", "unsupported mesh extension"),
    }
    for name, (data, what) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=what) as err:
            load_mesh(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    trimesh.PointCloud(np.random.default_rng(0).normal(size=(20, 3))).export(tmp_path / "points.ply")
    with pytest.raises(ValueError, match="points.ply: holds no triangle faces"):
        load_mesh(tmp_path / "points.ply")


def tall_box():
    """A box 0.8 tall along +y in the file, 0.3 deep along z, in the positive octant."""
    box = trimesh.creation.box(extents=(0.2, 0.8, 0.3))
    box.apply_translation([0.1, 0.4, 0.15])
    return box


@pytest.mark.parametrize("ext", ["glb", "gltf"])
def test_gltf_files_are_turned_from_y_up_to_z_up(tmp_path, ext):
    """glTF is +Y up by its specification: (x, y, z) in the file is (x, -z, y) in the world (+90 deg about x)."""
    path = tmp_path / f"tall.{ext}"
    tall_box().export(path)  # trimesh writes the coordinates as they are: tall along the file's +y
    np.testing.assert_allclose(trimesh.load(path, force="mesh").extents, [0.2, 0.8, 0.3], atol=1e-6)
    mesh = load_mesh(path)
    np.testing.assert_allclose(mesh.bounds, [[0, -0.3, 0], [0.2, 0, 0.8]], atol=1e-6)  # tallest along z
    assert load_mesh(path, up="z").extents.argmax() == 2  # `up` is for the formats without a convention


@pytest.mark.parametrize("ext", ["obj", "ply", "stl", "off"])
def test_other_formats_are_z_up_unless_told_y(tmp_path, ext):
    path = tmp_path / f"tall.{ext}"
    tall_box().export(path)
    np.testing.assert_allclose(load_mesh(path).bounds, [[0, 0, 0], [0.2, 0.8, 0.3]], atol=1e-6)
    np.testing.assert_allclose(load_mesh(path, up="y").bounds, [[0, -0.3, 0], [0.2, 0, 0.8]], atol=1e-6)
    with pytest.raises(ValueError, match="up='x'"):
        load_mesh(path, up="x")


def test_the_shipped_mug_is_y_up_in_its_file_and_upright_in_the_world():
    from conftest import REPO_ROOT
    from sar3d_core.data import sample_mug

    path = REPO_ROOT / "data_samples" / "meshes" / "mug.glb"
    raw = trimesh.load(path, force="mesh")  # the cylinder's height 0.6 runs along the file's y (glTF up)
    np.testing.assert_allclose(raw.extents, [0.72, 0.6, 0.5], atol=1e-6)
    mug = load_mesh(path)
    np.testing.assert_allclose(mug.extents, [0.72, 0.5, 0.6], atol=1e-6)  # upright: height along z
    np.testing.assert_allclose(np.sort(mug.vertices, 0), np.sort(sample_mug().vertices, 0), atol=1e-6)


@pytest.mark.parametrize("ext", ["glb", "obj"])
def test_save_mesh_then_load_mesh_gives_the_world_frame_back(tmp_path, ext):
    mesh = tall_box()
    back = load_mesh(save_mesh(mesh, tmp_path / f"box.{ext}"))
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-6)
    assert np.allclose(mesh.bounds, [[0, 0, 0], [0.2, 0.8, 0.3]])  # the input is left alone


def test_normalize_mesh_fits_the_box_and_leaves_the_input_alone():
    mesh = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    mesh.apply_translation([3.0, -1.0, 2.0])
    before = mesh.vertices.copy()
    out = normalize_mesh(mesh)
    np.testing.assert_array_equal(mesh.vertices, before)
    np.testing.assert_allclose(out.bounds.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(out.extents, np.array([2.0, 1.0, 0.5]) * 0.45 * 0.95, atol=1e-12)
    assert np.abs(out.vertices).max() <= 0.45
    with pytest.raises(ValueError, match="no extent"):
        normalize_mesh(trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]], process=False))


# ---------------------------------------------------------------- grids and bad input


def test_render_grid_tiles_the_views(tmp_path):
    mv = render_sdf(Sphere(), orbit_cameras([0.0, 90.0, 180.0], 10.0, 1.8), 16, 16)
    grid = render_grid(mv, tmp_path / "grid.png", with_depth=True)
    assert grid.shape == (32, 48, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:16, 16:32], (hwc(mv.rgb)[1] * 255).round().astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "grid.png")), grid)
    depth_band = grid[16:, :, 0]
    assert (depth_band[hwc(mv.mask)[..., 0].transpose(1, 0, 2).reshape(16, 48) == 0] == 0).all()
    wrapped = render_grid(mv, rows=("rgb", "normal", "mask"), columns=2)
    assert wrapped.shape == (3 * 2 * 16, 32, 3)
    assert (wrapped[16:32, 16:] == 255).all()  # the empty slot after the third view
    with pytest.raises(ValueError, match="rows"):
        render_grid(mv, rows=("albedo",))


def test_bad_input_raises_clear_errors():
    c = orbit_cameras([0.0], [0.0], 1.5)
    with pytest.raises(ValueError, match="expected \\(V, 25\\)"):
        render_sdf(Sphere(), c[:, :24], 8, 8)
    skewed = c.clone()
    skewed[:, :3] *= 2.0  # scale the first row of the rotation
    with pytest.raises(ValueError, match="not a rigid transform"):
        render_sdf(Sphere(), skewed, 8, 8)
    with pytest.raises(ValueError, match="must be positive"):
        render_sdf(Sphere(), c, 0, 8)
    with pytest.raises(ValueError, match="supersample"):
        render_mesh(trimesh.creation.box(), c, 8, 8, supersample=0)
    with pytest.raises(TypeError, match="sdf"):
        render_sdf(object(), c, 8, 8)

    class BadShape(Sphere):
        def sdf(self, p):
            return super().sdf(p)[:, None]

    with pytest.raises(ValueError, match="expected \\(N,\\)"):
        render_sdf(BadShape(), c, 8, 8)
    with pytest.raises(ValueError, match="Trimesh with faces"):
        render_mesh(trimesh.PointCloud(np.zeros((4, 3))), c, 8, 8)
