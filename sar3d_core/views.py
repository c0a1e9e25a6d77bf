"""A set of posed views of one object, and the 10-channel encoder input (paper Sec. 4.1).

Every source of data (the procedural renderer, a SAR3D chunk, a raw G-Objaverse folder,
a mesh file) produces a `MultiView`. The VQVAE input of Sec. 4.1 is, per view,
``M~ = [I (+) Delta (+) P]``: RGB (3), planar depth (1) and the Plücker embedding (6).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .cameras import check_rigid, plucker_embedding, project_points, unpack_camera, unproject_depth


@dataclass
class MultiView:
    """Views of one object. ``V`` views of ``H x W`` pixels.

    rgb ``(V, 3, H, W)`` in [0, 1] on a white background; depth ``(V, 1, H, W)`` planar
    (0 where empty); mask ``(V, 1, H, W)`` in [0, 1]; normal ``(V, 3, H, W)`` unit world-space
    normals (0 where empty); c ``(V, 25)`` cameras (DESIGN.md §4); caption str or None.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    normal: torch.Tensor
    c: torch.Tensor
    caption: str | None = None
    source: str = ""

    def __post_init__(self):
        self.validate()

    @property
    def num_views(self) -> int:
        return self.rgb.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.rgb.shape[-2:])

    def validate(self) -> None:
        """Raise ValueError naming the field when shapes or values are inconsistent."""
        where = f" ({self.source})" if self.source else ""
        if self.rgb.ndim != 4 or self.rgb.shape[1] != 3:
            raise ValueError(f"rgb has shape {tuple(self.rgb.shape)}{where}: expected (V, 3, H, W)")
        V, _, H, W = self.rgb.shape
        for name, channels in (("depth", 1), ("mask", 1), ("normal", 3)):
            t = getattr(self, name)
            if tuple(t.shape) != (V, channels, H, W):
                raise ValueError(f"{name} has shape {tuple(t.shape)}{where}: expected {(V, channels, H, W)}")
        if tuple(self.c.shape) != (V, 25):
            raise ValueError(f"c has shape {tuple(self.c.shape)}{where}: expected ({V}, 25)")
        for name in ("rgb", "depth", "mask", "normal", "c"):
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} holds NaN or inf values{where}")
        if (self.depth < 0).any():
            raise ValueError(f"depth holds negative values{where}: depth is planar z, 0 where empty")
        check_rigid(unpack_camera(self.c)[0], name=f"c2w of c{where}")

    def select(self, index) -> "MultiView":
        """A subset of the views (a slice, a list or a tensor of view indices)."""
        return replace(self, rgb=self.rgb[index], depth=self.depth[index], mask=self.mask[index],
                       normal=self.normal[index], c=self.c[index])

    def encoder_input(self) -> torch.Tensor:
        """The VQVAE input ``[RGB, depth, Plücker]`` -> ``(V, 10, H, W)`` (Sec. 4.1)."""
        H, W = self.size
        return torch.cat([self.rgb, self.depth, plucker_embedding(self.c, H, W)], dim=1)


def point_cloud(mv: MultiView, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Back-project every masked pixel of every view -> ``(points (N, 3), colours (N, 3), view index (N,))``."""
    pts = unproject_depth(mv.depth[:, 0], mv.c)  # (V, H, W, 3)
    keep = (mv.mask[:, 0] > threshold) & (mv.depth[:, 0] > 0)
    view = torch.arange(mv.num_views)[:, None, None].expand_as(keep)
    return pts[keep], mv.rgb.permute(0, 2, 3, 1)[keep], view[keep]


def multiview_consistency(mv: MultiView, tol_px: int = 2, tol_depth: float = 0.02) -> dict:
    """How well the views agree as one 3D object: a check of depth, masks and cameras together.

    Every masked pixel of view i is back-projected and projected into each other view j:
    ``inside_mask`` is the share that lands inside j's mask (dilated by ``tol_px``);
    ``free_space`` the share that is not in front of j's observed surface by more than
    ``tol_depth`` (a point may hide behind it, never float in front of it).
    Returns the means over all ordered pairs and the per-pair matrices ``(V, V)``.
    """
    V, _, H, W = mv.depth.shape
    k = 2 * tol_px + 1
    mask_dil = F.max_pool2d((mv.mask > 0.5).float(), k, stride=1, padding=tol_px)[:, 0]
    # nearest observed depth within the tolerance window (background = +inf)
    depth_obs = torch.where(mv.mask[:, 0] > 0.5, mv.depth[:, 0], torch.full_like(mv.depth[:, 0], float("inf")))
    depth_min = -F.max_pool2d(-depth_obs[:, None], k, stride=1, padding=tol_px)[:, 0]
    points, _, view = point_cloud(mv)
    inside = torch.full((V, V), float("nan"))
    free = torch.full((V, V), float("nan"))
    for i in range(V):
        p = points[view == i]
        if len(p) == 0:
            continue
        for j in range(V):
            if i == j:
                continue
            uv, z = project_points(p, mv.c[j], H, W)
            px = uv.floor().long()
            ok = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
            u, v = px[ok, 0], px[ok, 1]
            landed = torch.zeros(len(p))
            landed[ok] = mask_dil[j, v, u]
            inside[i, j] = landed.mean()
            not_in_front = torch.zeros(len(p), dtype=torch.bool)
            not_in_front[ok] = z[ok] >= depth_min[j, v, u] - tol_depth
            free[i, j] = not_in_front.float().mean()
    return {
        "inside_mask": float(inside.nanmean()), "free_space": float(free.nanmean()),
        "num_points": len(points), "inside_mask_VV": inside, "free_space_VV": free,
        "tol_px": tol_px, "tol_depth": tol_depth,
    }
