"""A set of posed views of one object, and the 10-channel encoder input (paper Sec. 4.1).

Every source of data (the procedural renderer, a SAR3D chunk, a raw G-Objaverse folder,
a mesh file) produces a `MultiView`. The VQVAE input of Sec. 4.1 is, per view,
``M~ = [I (+) Delta (+) P]``: RGB (3), planar depth (1) and the Plücker embedding (6).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .cameras import check_rigid, plucker_embedding, unpack_camera


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
