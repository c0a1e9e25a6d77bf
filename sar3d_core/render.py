"""Exact renderers for the multi-view RGB-D input of the 3D VQVAE (paper Sec. 4.1; DESIGN.md §3).

SAR3D's VQVAE takes posed renderings of an object: RGB, planar depth (and, for
supervision, masks and normals) from the cameras of DESIGN.md §4. Two renderers make them,
with one camera model and one shading model (``Lighting``, ``shade``), so their images look alike:

* ``render_mesh`` casts rays into a triangle mesh (GLB, glTF, OBJ, PLY) through
  trimesh (Embree when ``embreex`` is installed), with colours from a texture, vertex or
  face colours. ``load_mesh`` reads a file into the world frame (+Z up): glTF/GLB are +Y up
  by their specification and are rotated by +90 deg about x, ``(x, y, z) -> (x, -z, y)``.
* ``world.render_sdf`` sphere-traces the signed distance functions of the procedural world
  (``world.sdf_render``; also reachable as ``render.render_sdf``).

Both return a ``views.MultiView`` (``_assemble``): rgb on a white background, depth as planar
camera z (``t / |(x, y, 1)|`` for a hit at distance ``t`` along the unit ray), unit world
normals, mask; depth and normals are 0 where the ray misses. ``render_grid`` tiles views into one image.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cameras import camera_rays, check_rigid, ray_box_interval, ray_depth_scale, unpack_camera
from .views import MultiView

MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
DEFAULT_ALBEDO = 0.7  # the grey of a mesh without colours or material


@dataclass(frozen=True)
class Lighting:
    """Fixed world-space lights, shared by both renderers (world up is +z).

    ``rgb = albedo * (ambient + sum_i I_i max(0, n.l_i)) + s * sum_i I_i max(0, n.h_i)^e``
    (Lambert plus Blinn-Phong), ``l_i`` the unit direction towards light ``i``,
    ``h_i = (l_i + v) / |l_i + v|`` with ``v`` towards the camera, ``s`` the object's shininess
    in [0, 1] (0: matte). A key light from above, a fill from the side and a weak light from
    below keep every face of an object readable from any camera.
    """

    ambient: float = 0.3
    directions: tuple = ((0.45, -0.35, 0.82), (-0.7, 0.55, 0.25), (0.1, 0.2, -1.0))
    intensities: tuple = (0.55, 0.25, 0.12)
    specular_exponent: float = 32.0


def shade(albedo_N3, normal_N3, dirs_N3, shininess=0.0, lighting: Lighting | None = None) -> torch.Tensor:
    """Shaded colour of surface points seen along unit rays ``dirs_N3`` -> ``(N, 3)`` in [0, 1]."""
    lighting = lighting or Lighting()
    rgb = albedo_N3 * lighting.ambient
    view_N3 = -dirs_N3  # towards the camera
    shininess = torch.as_tensor(shininess, dtype=albedo_N3.dtype).reshape(-1, 1)
    for direction, intensity in zip(lighting.directions, lighting.intensities):
        l_3 = torch.tensor(direction, dtype=albedo_N3.dtype)
        l_3 = l_3 / l_3.norm()
        rgb = rgb + intensity * albedo_N3 * (normal_N3 @ l_3).clamp(min=0)[:, None]
        half_N3 = torch.nn.functional.normalize(view_N3 + l_3, dim=-1)
        spec_N = (normal_N3 * half_N3).sum(-1).clamp(min=0) ** lighting.specular_exponent
        rgb = rgb + intensity * shininess * spec_N[:, None]
    return rgb.clamp(0.0, 1.0)


# ---------------------------------------------------------------- checks and assembly


def _check_size(height, width, supersample=1) -> tuple[int, int, int]:
    try:
        height, width, supersample = (operator.index(v) for v in (height, width, supersample))
    except TypeError:
        raise ValueError(f"image size {height}x{width} and supersample {supersample} must be integers") from None
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} must be positive")
    if supersample < 1:
        raise ValueError(f"supersample={supersample} must be a positive integer")
    return height, width, supersample


def _check_cameras(c) -> torch.Tensor:
    """``c (V, 25)`` (or one camera ``(25,)``) as float32, checked to be rigid."""
    c = torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c).float()
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[-1] != 25 or c.shape[0] == 0:
        raise ValueError(f"cameras c have shape {tuple(c.shape)}: expected (V, 25) = c2w (16) + K (9), V >= 1")
    check_rigid(unpack_camera(c)[0], name="c2w of c")
    return c


def _assemble(hit_N, depth_N, normal_N3, rgb_N3, c, height, width, s, caption, source) -> MultiView:
    """Per-ray results at ``s x`` resolution -> a ``MultiView`` averaged over ``s x s`` blocks.

    rgb and mask are box-filtered (anti-aliased edges); depth and normals are the mean over
    the sub-samples that hit, so an edge pixel holds a real surface depth, not a blend with 0.
    """
    V, Hs, Ws = c.shape[0], height * s, width * s
    hit = hit_N.float().reshape(V, 1, Hs, Ws)
    depth = (depth_N * hit_N).reshape(V, 1, Hs, Ws)
    normal = (normal_N3 * hit_N[:, None]).reshape(V, Hs, Ws, 3).permute(0, 3, 1, 2)
    rgb = torch.where(hit_N[:, None], rgb_N3, torch.ones_like(rgb_N3))  # white background
    rgb = rgb.reshape(V, Hs, Ws, 3).permute(0, 3, 1, 2)
    if s > 1:
        pool = torch.nn.functional.avg_pool2d
        mask = pool(hit, s)
        count = mask.clamp(min=1e-8)
        rgb, depth, normal = pool(rgb, s), pool(depth, s) / count, pool(normal, s)
        normal = torch.nn.functional.normalize(normal, dim=1) * (mask > 0)
    else:
        mask = hit
    return MultiView(rgb=rgb.contiguous(), depth=depth.contiguous(), mask=mask.contiguous(),
                     normal=normal.contiguous(), c=c, caption=caption, source=source)


# ---------------------------------------------------------------- meshes


def _one_line(err: Exception) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


GLTF_EXTENSIONS = (".glb", ".gltf")  # +Y up by the glTF 2.0 specification (sec. 3.4 "Coordinate System and Units")
UP_AXES = ("z", "y")
# rotation of +90 deg about x, (x, y, z) -> (x, -z, y): a +Y-up file into the +Z-up world
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])


def load_mesh(path, up: str = "z"):
    """Read a GLB, glTF, OBJ, PLY, STL or OFF file into one ``trimesh.Trimesh`` in the world frame (+Z up).

    A scene's parts are placed by its scene graph and merged, keeping their colours and
    textures. glTF/GLB files are +Y up by their specification and always turned to +Z up
    (``Y_UP_TO_Z_UP``); the other formats have no convention: ``up`` names their up axis
    (``"z"``, the default, or ``"y"``). Raises FileNotFoundError or ValueError (naming the
    file) when it cannot.
    """
    import trimesh

    if up not in UP_AXES:
        raise ValueError(f"up={up!r}: the up axis of a mesh file is one of {', '.join(UP_AXES)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS:
        raise ValueError(f"{path}: unsupported mesh extension '{ext}' (expected one of {', '.join(MESH_EXTENSIONS)})")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    try:
        scene = trimesh.load(str(path), force="scene")
        parts = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    except Exception as err:  # trimesh raises many kinds on a malformed file
        raise ValueError(f"{path}: not a readable {ext[1:].upper()} mesh ({_one_line(err)})") from None
    if not parts:
        raise ValueError(f"{path}: holds no triangle faces (a point cloud or an empty scene cannot be rendered)")
    mesh = _merge_parts(parts)
    if ext in GLTF_EXTENSIONS or up == "y":
        mesh.apply_transform(Y_UP_TO_Z_UP)  # rotates vertices and normals; colours and UVs stay
    return mesh


def save_mesh(mesh, path) -> Path:
    """Write a world-frame (+Z up) mesh; a glTF/GLB file gets +Y up, as its specification
    says, so ``load_mesh(save_mesh(mesh, path))`` gives the mesh back in the world frame."""
    path = Path(path)
    if path.suffix.lower() in GLTF_EXTENSIONS:
        mesh = mesh.copy()
        mesh.apply_transform(np.linalg.inv(Y_UP_TO_Z_UP))  # (x, y, z) -> (x, z, -y)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return path


def _merge_parts(parts):
    """One mesh from scene parts (already placed), keeping their colours.

    trimesh packs the parts' textures into one atlas; where it cannot (mixing textured and
    coloured parts can fail inside trimesh), textures are sampled at the vertices instead.
    """
    import trimesh

    if len(parts) == 1:
        return parts[0]
    merged = trimesh.util.concatenate(parts)
    if merged.visual.kind is None and any(p.visual.kind is not None for p in parts):
        for part in parts:
            if part.visual.kind == "texture":
                part.visual = part.visual.to_color()
        merged = trimesh.util.concatenate(parts)
    return merged


def normalize_mesh(mesh, box: float = 0.45, fill: float = 0.95):
    """A copy of ``mesh`` centred and scaled into the object box ``[-box, box]^3``.

    The bounding-box centre moves to the origin and one uniform scale makes the largest
    extent ``2 * box * fill`` (a 5% margin by default). The input is not modified.
    """
    extent = float(np.max(mesh.extents)) if len(mesh.vertices) else 0.0
    if not extent > 0:
        raise ValueError("normalize_mesh: the mesh has no extent (no vertices, or all at one point)")
    out = mesh.copy()
    out.apply_translation(-out.bounds.mean(axis=0))
    out.apply_scale(2.0 * box * fill / extent)
    return out


def _material_colour(material):
    """``(factor RGBA (4,), image or None)`` of a trimesh material."""
    factor = getattr(material, "baseColorFactor", None)  # PBR: texture * baseColorFactor (glTF)
    if hasattr(material, "baseColorTexture"):
        factor = np.ones(4) if factor is None else np.asarray(factor, np.float64) / 255.0
        return factor, material.baseColorTexture
    image = getattr(material, "image", None)  # OBJ: map_Kd alone (trimesh's default Kd is grey)
    if image is not None:
        return np.ones(4), image
    return np.asarray(material.main_color, np.float64) / 255.0, None


def sample_texture(image, uv_N2) -> np.ndarray:
    """Bilinear, repeating lookup of ``uv (N, 2)`` (v up, as trimesh stores it) -> RGB ``(N, 3)`` in [0, 1]."""
    img = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    Hi, Wi = img.shape[:2]
    x = uv_N2[:, 0] * Wi - 0.5  # pixel centres at +0.5; row 0 is v = 1
    y = (1.0 - uv_N2[:, 1]) * Hi - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x1, y1 = (x0 + 1) % Wi, (y0 + 1) % Hi
    x0, y0 = x0 % Wi, y0 % Hi
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _mesh_albedo(mesh, tri_M, bary_M3) -> np.ndarray:
    """Albedo at ray hits from a texture, vertex colours or face colours -> ``(M, 3)``."""
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "texture":
        factor, image = _material_colour(visual.material)
        uv = getattr(visual, "uv", None)
        if image is not None and uv is not None and len(uv) == len(mesh.vertices):
            uv_M2 = (bary_M3[:, :, None] * np.asarray(uv)[mesh.faces[tri_M]]).sum(1)
            return sample_texture(image, uv_M2) * factor[:3]
        return np.broadcast_to(factor[:3], (len(tri_M), 3))
    if kind == "vertex":
        vc = np.asarray(visual.vertex_colors, np.float64)[:, :3] / 255.0
        return (bary_M3[:, :, None] * vc[mesh.faces[tri_M]]).sum(1)
    if kind == "face":
        return np.asarray(visual.face_colors, np.float64)[tri_M, :3] / 255.0
    return np.full((len(tri_M), 3), DEFAULT_ALBEDO)


def _mesh_normals(mesh, tri_M, bary_M3, smooth_angle) -> np.ndarray:
    """Interpolated vertex normals on smooth faces, face normals where a face meets a crease.

    A face is smooth when each of its vertex normals is within ``smooth_angle`` degrees of
    its face normal (an "auto smooth" rule: a sphere is smooth, a cube's faces stay flat).
    """
    face_n = np.asarray(mesh.face_normals)
    n = face_n[tri_M]
    if smooth_angle > 0:
        vert_n = np.asarray(mesh.vertex_normals)[mesh.faces[tri_M]]  # (M, 3 corners, 3)
        smooth = ((vert_n * n[:, None]).sum(-1) > math.cos(math.radians(smooth_angle))).all(1)
        interp = (bary_M3[:, :, None] * vert_n).sum(1)
        n = np.where(smooth[:, None], interp, n)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def render_mesh(mesh, c, height: int, width: int, *, supersample: int = 1, lighting: Lighting | None = None,
                shininess: float = 0.0, smooth_angle: float = 30.0, caption: str | None = None,
                source: str = "") -> MultiView:
    """Ray-cast a ``trimesh.Trimesh`` from cameras ``c (V, 25)`` -> ``MultiView`` (same shading as ``world.render_sdf``).

    Normals face the camera (back faces are flipped); colours come from the texture
    (bilinear, times the PBR base colour factor), vertex or face colours, else grey.
    """
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"render_mesh needs a trimesh.Trimesh with faces, got {type(mesh).__name__}")
    height, width, s = _check_size(height, width, supersample)
    c = _check_cameras(c)
    Hs, Ws = height * s, width * s
    origins, dirs = camera_rays(c, Hs, Ws)
    o_N3, d_N3 = origins.reshape(-1, 3).double(), dirs.reshape(-1, 3).double()
    scale_N = ray_depth_scale(c, Hs, Ws).reshape(-1).double()
    lo, hi = torch.tensor(np.asarray(mesh.bounds), dtype=torch.float64)
    t_near, t_far = ray_box_interval(o_N3, d_N3, lo - 1e-6, hi + 1e-6)
    inside = torch.nonzero(t_near <= t_far).squeeze(1).numpy()  # only rays meeting the bounding box are cast
    o_np, d_np = o_N3.numpy(), d_N3.numpy()
    tri, ray, loc = mesh.ray.intersects_id(o_np[inside], d_np[inside], multiple_hits=False, return_locations=True)
    rays = inside[ray]
    t = ((loc - o_np[rays]) * d_np[rays]).sum(-1)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], loc)
    normal = _mesh_normals(mesh, tri, bary, smooth_angle)
    facing = (normal * d_np[rays]).sum(-1) > 0
    normal[facing] *= -1  # the side the camera sees
    albedo = torch.as_tensor(np.clip(_mesh_albedo(mesh, tri, bary), 0.0, 1.0), dtype=torch.float32)
    normal_M3 = torch.as_tensor(normal, dtype=torch.float32)
    rays_t = torch.as_tensor(rays, dtype=torch.long)
    N = o_N3.shape[0]
    hit_N = torch.zeros(N, dtype=torch.bool)
    depth_N, normal_N3, rgb_N3 = torch.zeros(N), torch.zeros(N, 3), torch.ones(N, 3)
    hit_N[rays_t] = True
    depth_N[rays_t] = (torch.as_tensor(t) / scale_N[rays_t]).float()  # planar z = t / |(x, y, 1)|
    normal_N3[rays_t] = normal_M3
    rgb_N3[rays_t] = shade(albedo, normal_M3, d_N3[rays_t].float(), shininess, lighting)
    source = source or str(mesh.metadata.get("file_name", "mesh"))
    return _assemble(hit_N, depth_N, normal_N3, rgb_N3, c, height, width, s, caption=caption, source=source)


# ---------------------------------------------------------------- grids


def _depth_image(depth_V1HW, mask_V1HW) -> torch.Tensor:
    """Depth as grey, near bright and far dark over the range of the object; black background."""
    valid = (mask_V1HW > 0) & (depth_V1HW > 0)
    if not valid.any():
        return torch.zeros_like(depth_V1HW).expand(-1, 3, -1, -1)
    near, far = depth_V1HW[valid].min(), depth_V1HW[valid].max()
    grey = 1.0 - 0.8 * (depth_V1HW - near) / (far - near).clamp(min=1e-6)
    return (grey * valid).expand(-1, 3, -1, -1)


def render_grid(mv: MultiView, path=None, *, rows=("rgb",), with_depth: bool = False,
                columns: int | None = None) -> np.ndarray:
    """Tile the views of ``mv`` into one ``uint8 (rows * H, columns * W, 3)`` image, saved as PNG if ``path``.

    ``rows`` names what to show, one band per entry: ``"rgb"``, ``"depth"``, ``"normal"``
    (``(n + 1) / 2``, white background) and ``"mask"``; ``with_depth`` appends ``"depth"``.
    Each band holds the views left to right, wrapped after ``columns`` views.
    """
    rows = tuple(rows) + (("depth",) if with_depth and "depth" not in rows else ())
    bands = {
        "rgb": lambda: mv.rgb,
        "depth": lambda: _depth_image(mv.depth, mv.mask),
        "normal": lambda: torch.where(mv.mask > 0, (mv.normal + 1) / 2, torch.ones_like(mv.normal)),
        "mask": lambda: mv.mask.expand(-1, 3, -1, -1),
    }
    unknown = [r for r in rows if r not in bands]
    if unknown or not rows:
        raise ValueError(f"render_grid rows {rows}: each must be one of {', '.join(bands)}")
    V, (H, W) = mv.num_views, mv.size
    columns = V if columns is None else max(1, min(int(columns), V))
    lines = math.ceil(V / columns)
    grid = torch.ones(len(rows) * lines, columns, 3, H, W)
    for r, name in enumerate(rows):
        images = bands[name]().float().clamp(0, 1)
        for v in range(V):
            grid[r * lines + v // columns, v % columns] = images[v]
    # (rows, columns, 3, H, W) -> (rows * H, columns * W, 3)
    image = (grid.permute(0, 3, 1, 4, 2).reshape(len(rows) * lines * H, columns * W, 3) * 255).round()
    image = image.to(torch.uint8).numpy()
    if path is not None:
        from PIL import Image

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return image


_SDF_RENDERER = ("render_sdf", "sphere_trace", "sdf_normals", "MARCH_BOUND")  # in world.sdf_render


def __getattr__(name):  # render.render_sdf & co.: the procedural world's renderer, imported on first use
    if name in _SDF_RENDERER:
        from .world import sdf_render

        return getattr(sdf_render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
