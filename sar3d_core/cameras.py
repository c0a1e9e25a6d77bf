"""Cameras, per-pixel rays and the Plücker embedding (paper Sec. 4.1; DESIGN.md §4).

Conventions (those of G-Objaverse and the official SAR3D/LN3Diff code):

* ``c2w`` is a 4x4 camera-to-world matrix in the OpenCV convention: camera x right,
  y down, z forward. World up is +z. Objects live in ``[-0.45, 0.45]^3``.
* A camera is the 25-vector ``c = [c2w (16, row-major), K (9, row-major)]`` where the
  intrinsics ``K`` are normalised by the image size: ``fx = 0.5 / tan(fov / 2)``
  (1.3889 for the default fov of 0.6912 rad), ``cx = cy = 0.5``.
* Pixel ``(u, v)`` (column, row) has its centre at ``(u + 0.5, v + 0.5)``.
* Depth is planar: the z coordinate in the camera frame, not the distance along a ray.

The Plücker embedding of a pixel's ray, with camera centre ``o`` and unit direction ``d``,
is ``p = (o x d, d)`` (Sec. 4.1). The moment ``o x d`` is the same for every point on the
ray, so ``p`` names the ray itself, not a point on it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

DEFAULT_FOV = 0.6912  # radians, G-Objaverse's x_fov = y_fov
DEFAULT_RADIUS = 1.9411  # the radius of the reference chunk's rings (elevation 7 deg)
WORLD_UP = (0.0, 0.0, 1.0)
OBJECT_BOX = 0.45  # every object lies inside the object box [-OBJECT_BOX, OBJECT_BOX]^3


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    return x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def intrinsics_from_fov(fov: float = DEFAULT_FOV) -> torch.Tensor:
    """Normalised 3x3 intrinsics of a square pinhole camera: ``f = 0.5 / tan(fov/2)``."""
    if not 0 < fov < math.pi:
        raise ValueError(f"fov={fov} must be in (0, pi) radians")
    f = 0.5 / math.tan(fov / 2)
    return torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]])


def check_rigid(c2w: torch.Tensor, name: str = "c2w", atol: float = 1e-3) -> None:
    """Raise ValueError unless every ``c2w (..., 4, 4)`` is a rigid transform."""
    c2w = _tensor(c2w, torch.float64)
    if c2w.shape[-2:] != (4, 4):
        raise ValueError(f"{name} has shape {tuple(c2w.shape)}: expected (..., 4, 4)")
    if not torch.isfinite(c2w).all():
        raise ValueError(f"{name} holds NaN or inf values")
    R = c2w[..., :3, :3]
    eye = torch.eye(3, dtype=R.dtype)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=R.dtype)
    if (R @ R.transpose(-1, -2) - eye).abs().max() > atol or (torch.linalg.det(R) < 0).any():
        raise ValueError(f"{name} is not a rigid transform: its 3x3 block must be a rotation (R R^T = I, det +1)")
    if (c2w[..., 3, :] - bottom).abs().max() > atol:
        raise ValueError(f"{name} is not a rigid transform: its last row must be [0, 0, 0, 1]")


def pack_camera(c2w, K=None) -> torch.Tensor:
    """``c2w (..., 4, 4)`` and normalised ``K (..., 3, 3)`` -> ``c (..., 25)``."""
    c2w = _tensor(c2w)
    check_rigid(c2w)
    K = intrinsics_from_fov() if K is None else _tensor(K)
    K = K.expand(*c2w.shape[:-2], 3, 3)
    return torch.cat([c2w.flatten(-2), K.flatten(-2)], dim=-1)


def unpack_camera(c) -> tuple[torch.Tensor, torch.Tensor]:
    """``c (..., 25)`` -> ``(c2w (..., 4, 4), K (..., 3, 3))`` with ``K`` normalised."""
    c = _tensor(c)
    if c.shape[-1] != 25:
        raise ValueError(f"camera c has shape {tuple(c.shape)}: expected (..., 25) = c2w (16) + K (9)")
    return c[..., :16].unflatten(-1, (4, 4)), c[..., 16:].unflatten(-1, (3, 3))


def look_at(eye, target=(0.0, 0.0, 0.0), up=WORLD_UP) -> torch.Tensor:
    """OpenCV ``c2w (4, 4)`` of a camera at ``eye`` looking at ``target``.

    ``x = z x up`` (right), ``y = z x x`` (down). Looking straight up or down, the limit
    from azimuth 90 deg is used (``x = -X``), which is what the G-Objaverse top and bottom
    views hold.
    """
    eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
    z = target - eye
    if z.norm() < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    x = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64) if x.norm() < 1e-6 else x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w.float()


def orbit_cameras(azimuths_deg, elevations_deg, radius=DEFAULT_RADIUS, fov: float = DEFAULT_FOV) -> torch.Tensor:
    """Cameras on a sphere around the origin looking at it -> ``c (V, 25)``.

    The camera centre is ``r (cos e cos a, cos e sin a, sin e)`` (world up +z).
    """
    az = np.deg2rad(np.atleast_1d(np.asarray(azimuths_deg, dtype=np.float64)))
    el = np.deg2rad(np.atleast_1d(np.asarray(elevations_deg, dtype=np.float64)))
    az, el, radius = np.broadcast_arrays(az, el, np.asarray(radius, dtype=np.float64))
    K = intrinsics_from_fov(fov)
    cams = []
    for a, e, r in zip(az.ravel(), el.ravel(), radius.ravel()):
        eye = r * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        cams.append(pack_camera(look_at(eye), K))
    return torch.stack(cams)


def gobjaverse_cameras(radius_high: float = 1.673, radius_low: float = 1.987) -> torch.Tensor:
    """The 40 G-Objaverse views of one object -> ``c (40, 25)``.

    Views 0-24: elevation 10.9 deg, azimuth in 15 deg steps; 25: top; 26: bottom;
    27-39: elevation -2 deg, azimuth in 30 deg steps (radii as measured on the
    reference object; they vary per object in the real data).
    """
    ring_high = orbit_cameras(np.arange(25) * 15.0, 10.9, radius_high)
    poles = orbit_cameras([0.0, 0.0], [90.0, -90.0], radius_high)
    ring_low = orbit_cameras(np.arange(13) * 30.0, -2.0, radius_low)
    return torch.cat([ring_high, poles, ring_low])


# The 12 views of the reference SAR3D/LN3Diff chunk (azimuth, elevation, radius): views
# 0-5 are the encoder input, views 6-11 the supervision views (DESIGN.md §3).
CHUNK_LAYOUT = (
    (0.0, 90.0, 1.9411), (60.0, 7.0, 1.9411), (-165.0, 7.0, 1.9411), (-30.0, 7.0, 1.9411),
    (150.0, -3.0, 1.9944), (-30.0, -3.0, 1.9944),
    (0.0, -90.0, 1.9411), (0.0, 7.0, 1.9411), (135.0, 7.0, 1.9411), (-90.0, 7.0, 1.9411),
    (90.0, -3.0, 1.9944), (-90.0, -3.0, 1.9944),
)


def chunk_cameras(seed: int | None = None) -> torch.Tensor:
    """12 cameras in the layout of a SAR3D chunk -> ``c (12, 25)``.

    With ``seed=None`` the exact poses of the reference chunk. With a seed, the six
    encoder views stay fixed (so a small model sees one input layout) and the six
    supervision views are drawn on the G-Objaverse rings (elevation -3 to 30 deg, any
    azimuth), deterministic by seed: they are novel views for the decoder.
    """
    az, el, r = (np.array(v) for v in zip(*CHUNK_LAYOUT))
    if seed is not None:
        rng = np.random.default_rng(seed)
        az[6:] = rng.uniform(-180.0, 180.0, 6)
        el[6:] = rng.uniform(-3.0, 30.0, 6)
        r[6:] = rng.uniform(1.85, 2.0, 6)
    return orbit_cameras(az, el, r)


def pixel_directions(K, height: int, width: int) -> torch.Tensor:
    """Camera-frame directions ``(x, y, 1)`` of every pixel centre -> ``(..., H, W, 3)``.

    Their z component is 1, so ``depth * dir`` is the camera-frame point at planar depth.
    """
    K = _tensor(K)
    v, u = torch.meshgrid(
        (torch.arange(height, dtype=torch.float32, device=K.device) + 0.5) / height,
        (torch.arange(width, dtype=torch.float32, device=K.device) + 0.5) / width,
        indexing="ij",
    )
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    x = (u - cx) / fx
    y = (v - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def _check_size(height: int, width: int) -> None:
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"image size {height}x{width} must be positive")


def camera_rays(c, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays of every pixel: ``(origins (..., H, W, 3), dirs (..., H, W, 3))``.

    Directions are unit length. A point at planar depth ``z`` on the ray of a pixel is
    ``o + z * R (x, y, 1)``; ``ray_depth_scale`` gives ``|(x, y, 1)|`` to convert.
    """
    _check_size(height, width)
    c2w, K = unpack_camera(c)
    dirs_cam = pixel_directions(K, height, width)  # (..., H, W, 3)
    R = c2w[..., None, None, :3, :3]
    dirs = (R @ dirs_cam[..., None]).squeeze(-1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def ray_depth_scale(c, height: int, width: int) -> torch.Tensor:
    """Distance along the unit ray per unit of planar depth: ``|(x, y, 1)|`` -> ``(..., H, W)``."""
    _, K = unpack_camera(c)
    return pixel_directions(K, height, width).norm(dim=-1)


def plucker_embedding(c, height: int, width: int) -> torch.Tensor:
    """Plücker ray embedding ``p = (o x d, d)`` of every pixel (Sec. 4.1).

    ``c (..., 25)`` -> ``(..., 6, height, width)``: channels 0-2 the moment ``o x d``,
    channels 3-5 the unit direction ``d``.
    """
    origins, dirs = camera_rays(c, height, width)
    moment = torch.linalg.cross(origins, dirs, dim=-1)  # o x d, the same for any point on the ray
    return torch.cat([moment, dirs], dim=-1).movedim(-1, -3)


def unproject_depth(depth, c) -> torch.Tensor:
    """World points of a planar depth map: ``depth (..., H, W)``, ``c (..., 25)`` -> ``(..., H, W, 3)``."""
    depth = _tensor(depth)
    height, width = depth.shape[-2:]
    c2w, K = unpack_camera(c)
    pts_cam = pixel_directions(K, height, width) * depth[..., None]
    R, t = c2w[..., None, None, :3, :3], c2w[..., None, None, :3, 3]
    return (R @ pts_cam[..., None]).squeeze(-1) + t


def project_points(points, c, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points ``(..., N, 3)`` -> ``(uv (..., N, 2) in pixels, depth (..., N))``.

    ``uv`` is continuous: pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)``, so
    ``floor(uv)`` is the pixel index. ``depth`` is planar (camera z).
    """
    points = _tensor(points)
    c2w, K = unpack_camera(c)
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    # world -> camera: R^T (p - t)
    p_cam = ((points - t[..., None, :]) @ R)
    z = p_cam[..., 2]
    x = p_cam[..., 0] / z
    y = p_cam[..., 1] / z
    u = (K[..., 0, 0, None] * x + K[..., 0, 2, None]) * width
    v = (K[..., 1, 1, None] * y + K[..., 1, 2, None]) * height
    return torch.stack([u, v], dim=-1), z


def ray_box_interval(origins, dirs, lo=-0.45, hi=0.45) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of rays ``(..., 3)`` against the box ``[lo, hi]`` (scalars or per-axis, default
    the object box ``[-0.45, 0.45]^3``) -> ``(near, far)`` ray parameters; a ray misses when
    ``far <= near``. ``near`` is clamped to 0 (a camera inside the box starts at its centre)."""
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (lo - origins) / safe, (hi - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def camera_centres(c) -> torch.Tensor:
    """Camera centres ``(..., 3)`` of ``c (..., 25)``."""
    c2w, _ = unpack_camera(c)
    return c2w[..., :3, 3]
