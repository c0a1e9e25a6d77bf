"""Surfaces from the triplane field: marching cubes for now (paper Sec. 4.1; FlexiCubes, Eq. 9, later).

The field of ``triplane.TriplaneField`` is a density ``sigma``. Its surface is taken where a
ray bin of length ``delta = 2 b / S`` (the bin the renderer uses across the box of
half-size ``b`` with ``S`` samples) becomes half opaque:

    alpha(p) = 1 - exp(-sigma(p) delta) = 1/2   <=>   sigma(p) = ln 2 / delta,

the level at which the renderer switches from "see through" to "stop here". Marching
cubes (Lorensen and Cline 1987, via scikit-image) runs on ``alpha - 1/2`` sampled on a
``resolution^3`` grid of cell centres spanning the box; vertex colours are the field's
colour at the vertices. ``field_grid`` is the point-query interface FlexiCubes will use
too (it needs the same values on a grid).
"""
from __future__ import annotations

import math

import numpy as np
import torch


@torch.no_grad()
def field_grid(field, planes_13FHW: torch.Tensor, resolution: int = 64, chunk: int = 65536):
    """``alpha (R, R, R)`` of one object on the grid ``x_i = -b + (i + 1/2) 2b / R``, indexed ``[x, y, z]``,
    and the grid coordinates ``(R,)``."""
    b = field.bound
    axis = -b + (torch.arange(resolution, dtype=torch.float32) + 0.5) * (2 * b / resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sigma = torch.cat([field.query(planes_13FHW, pts[None, i:i + chunk].to(planes_13FHW.device))[0][0].cpu()
                       for i in range(0, len(pts), chunk)])
    return sigma.reshape(resolution, resolution, resolution), axis


@torch.no_grad()
def extract_mesh(field, planes_13FHW: torch.Tensor, num_samples: int, resolution: int = 64):
    """A ``trimesh.Trimesh`` of the field's surface (``alpha = 1/2``, see the module doc) with
    vertex colours; ValueError when the field has no surface inside the box."""
    import trimesh
    from skimage.measure import marching_cubes

    if planes_13FHW.ndim != 5 or planes_13FHW.shape[0] != 1:
        raise ValueError(f"planes have shape {tuple(planes_13FHW.shape)}: extract one object at a time (1, 3, F, H, W)")
    sigma, axis = field_grid(field, planes_13FHW, resolution)
    delta = 2 * field.bound / num_samples
    alpha = (1 - torch.exp(-sigma * delta)).numpy()
    if alpha.max() <= 0.5 or alpha.min() >= 0.5:
        raise ValueError(f"the field has no surface in the box (opacity per bin from {alpha.min():.3f} to "
                         f"{alpha.max():.3f}, the surface is at 0.5)")
    # pad with empty space so that surfaces touching the box are closed
    padded = np.pad(alpha, 1, constant_values=0.0)
    step = float(axis[1] - axis[0])
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=(step, step, step))
    verts = verts + (float(axis[0]) - step)  # padded index 0 sits one step before the first centre
    pts = torch.from_numpy(verts.astype(np.float32))[None].to(planes_13FHW.device)
    rgb = field.query(planes_13FHW, pts)[1][0].clamp(0, 1).cpu().numpy()
    colors = np.concatenate([(rgb * 255).round(), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    # marching_cubes orders faces for a field increasing inwards; trimesh wants outward normals
    mesh = trimesh.Trimesh(verts, faces[:, ::-1], vertex_colors=colors, process=False)
    return mesh


def surface_level(num_samples: int, bound: float) -> float:
    """The density at which a ray bin is half opaque: ``ln 2 / delta``."""
    return math.log(2.0) / (2 * bound / num_samples)
