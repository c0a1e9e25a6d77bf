"""Surfaces from the triplane field: marching cubes or FlexiCubes (paper Sec. 4.1, Eq. 9).

The field of ``triplane.TriplaneField`` is a density ``sigma``. Its surface is taken where a
ray bin of length ``delta = 2 b / S`` (the bin the renderer uses across the box of
half-size ``b`` with ``S`` samples) becomes half opaque:

    alpha(p) = 1 - exp(-sigma(p) delta) = 1/2   <=>   sigma(p) = ln 2 / delta,

the level at which the renderer switches from "see through" to "stop here". Two meshers
find that level set, both on cells of width ``2 b / R`` (``R = resolution``):

* ``"marching-cubes"`` (Lorensen and Cline 1987, via scikit-image) runs on ``alpha - 1/2``
  sampled at the ``R^3`` cell centres ``x_i = -b + (i + 1/2) 2b / R``, padded with a layer
  of empty space so that surfaces touching the box are closed; vertices sit on cell edges.
* ``"flexicubes"`` (``sar3d_core.flexicubes``, the extractor SAR3D fine-tunes its decoder
  for) runs on the ``(R + 1)^3`` cell corners of ``FlexiCubes.construct_voxel_grid(R)``,
  scaled from ``[-0.5, 0.5]^3`` to the box, with the signed value

      s(x) = 1/2 - alpha(x)        (negative inside, zero on the same surface),

  the box's faces counted as empty (``s = 1/2``) to close the surface, as the padding does
  for marching cubes. The weights ``beta``, ``alpha`` and ``gamma`` are all ones and the grid
  is not deformed: this is the field's SDF *before* any FlexiCubes fine-tune, i.e. Dual
  Marching Cubes on the NeRF surface (one vertex inside each surface cell, quads across
  crossed edges). The paper goes further (Eq. 9): its decoder is fine-tuned to predict
  ``s``, the deformation and the 21 weights per cube. That fine-tune is
  ``flexicubes_train.SAR3DFlexiCubes`` (shipped as ``data_samples/flexicubes_tiny``);
  ``generate.Pipeline.generate(mesher="flexicubes")`` and the CLI's ``--mesher flexicubes``
  use it whenever it was made for the VQVAE at hand, and this unit-weight path otherwise.

Either way the vertex colours are the field's colour at the vertices and the triangles face
outwards. ``field_grid`` is the cell-centre query the marching-cubes path uses.
"""
from __future__ import annotations

import math

import numpy as np
import torch

MESHERS = ("marching-cubes", "flexicubes")


def _query_sigma(field, planes_13FHW: torch.Tensor, pts_N3: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """``sigma (N,)`` of one object at world points, in chunks (on the planes' device, returned on CPU)."""
    return torch.cat([field.query(planes_13FHW, pts_N3[None, i:i + chunk].to(planes_13FHW.device))[0][0].cpu()
                      for i in range(0, len(pts_N3), chunk)])


@torch.no_grad()
def field_grid(field, planes_13FHW: torch.Tensor, resolution: int = 64, chunk: int = 65536):
    """``sigma (R, R, R)`` of one object on the grid ``x_i = -b + (i + 1/2) 2b / R``, indexed ``[x, y, z]``,
    and the grid coordinates ``(R,)``."""
    b = field.bound
    axis = -b + (torch.arange(resolution, dtype=torch.float32) + 0.5) * (2 * b / resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sigma = _query_sigma(field, planes_13FHW, pts, chunk)
    return sigma.reshape(resolution, resolution, resolution), axis


def _opacity_per_bin(sigma: torch.Tensor, num_samples: int, bound: float) -> torch.Tensor:
    """``alpha = 1 - exp(-sigma delta)`` with the renderer's bin ``delta = 2 b / S``; ValueError on NaN
    or when ``alpha`` never crosses 1/2 (no surface)."""
    alpha = 1 - torch.exp(-sigma * (2 * bound / num_samples))
    if torch.isnan(alpha).any():
        raise ValueError(f"the field is NaN at {int(torch.isnan(alpha).sum())} of {alpha.numel()} grid points: "
                         "its surface is undefined there")
    if alpha.max() <= 0.5 or alpha.min() >= 0.5:
        raise ValueError(f"the field has no surface in the box (opacity per bin from {float(alpha.min()):.3f} to "
                         f"{float(alpha.max()):.3f}, the surface is at 0.5)")
    return alpha


def _marching_cubes(field, planes_13FHW, num_samples: int, resolution: int):
    from skimage.measure import marching_cubes

    sigma, axis = field_grid(field, planes_13FHW, resolution)
    alpha = _opacity_per_bin(sigma, num_samples, field.bound).numpy()
    # pad with empty space so that surfaces touching the box are closed
    padded = np.pad(alpha, 1, constant_values=0.0)
    step = float(axis[1] - axis[0])
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=(step, step, step))
    verts = verts + (float(axis[0]) - step)  # padded index 0 sits one step before the first centre
    # marching_cubes orders faces for a field increasing inwards; trimesh wants outward normals
    return verts.astype(np.float32), np.ascontiguousarray(faces[:, ::-1])


def _flexicubes(field, planes_13FHW, num_samples: int, resolution: int):
    from .flexicubes import FlexiCubes

    fc = FlexiCubes()
    x_unit_nx3, cube_fx8 = fc.construct_voxel_grid(resolution)  # corners of R^3 cubes spanning [-0.5, 0.5]^3
    x_nx3 = x_unit_nx3 * (2 * field.bound)  # the field's box [-b, b]^3
    alpha_n = _opacity_per_bin(_query_sigma(field, planes_13FHW, x_nx3), num_samples, field.bound)
    # s = level - opacity: negative inside, zero where a bin turns half opaque (the marching-cubes surface)
    s_n = 0.5 - alpha_n
    on_box_face = (x_unit_nx3.abs() == 0.5).any(-1)  # construct_voxel_grid puts these exactly at +-0.5
    s_n[on_box_face] = 0.5  # empty, so the surface closes inside the box
    if not (s_n < 0).any():
        raise ValueError("the field has no surface in the box (it is opaque only on the box's faces, "
                         f"which count as empty; try a finer resolution than {resolution})")
    # beta = alpha = gamma = 1 and no deformation: Dual Marching Cubes on the field's surface
    verts, faces, _ = fc(x_nx3, s_n, cube_fx8, resolution)
    return verts.numpy(), faces.numpy()


@torch.no_grad()
def extract_mesh(field, planes_13FHW: torch.Tensor, num_samples: int, resolution: int = 64,
                 mesher: str = "marching-cubes"):
    """A ``trimesh.Trimesh`` of the field's surface (``alpha = 1/2``, see the module doc) with
    vertex colours and outward normals.

    ``resolution``: cells per side of the box (at least 2); ``mesher``: ``"marching-cubes"``
    (samples at the cell centres) or ``"flexicubes"`` (samples at the cell corners, unit
    weights, no deformation). ValueError for several objects at once, a resolution below 2,
    an unknown mesher, NaN in the field or a field without a surface inside the box.
    """
    import trimesh

    if mesher not in MESHERS:
        raise ValueError(f"mesher {mesher!r} is not one of {', '.join(MESHERS)}")
    if planes_13FHW.ndim != 5 or planes_13FHW.shape[0] != 1:
        raise ValueError(f"planes have shape {tuple(planes_13FHW.shape)}: extract one object at a time (1, 3, F, H, W)")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an int of at least 2 cells per side, got {resolution!r}")
    extract = _marching_cubes if mesher == "marching-cubes" else _flexicubes
    verts, faces = extract(field, planes_13FHW, num_samples, int(resolution))
    pts = torch.from_numpy(verts)[None].to(planes_13FHW.device)
    rgb = field.query(planes_13FHW, pts)[1][0].clamp(0, 1).cpu().numpy()
    colors = np.concatenate([(rgb * 255).round(), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
    return trimesh.Trimesh(verts, faces, vertex_colors=colors, process=False)


def surface_level(num_samples: int, bound: float) -> float:
    """The density at which a ray bin is half opaque: ``ln 2 / delta``."""
    return math.log(2.0) / (2 * bound / num_samples)
