"""The multi-view convolutional encoder E of the 3D VQVAE (paper Sec. 4.1, Eq. 7, Fig. 2).

``f = E(M~)``: the 6 posed input views, each ``[RGB (3), depth (1), Plücker (6)]``
(``views.MultiView.encoder_input``), become one latent triplane ``f (B, 3, C, h, w)``.
The paper follows LN3Diff [32] ("a multi-view convolutional encoder [59, 67]"); this is a
small, CPU-friendly version of the same idea:

1. **Shared per-view trunk.** The same conv stack runs on every view (the views folded into
   the batch): ``n = log2(H / h)`` stages, each a strided 3x3 conv (halves the size),
   GroupNorm and SiLU, then a residual 3x3 conv block. ``H / h`` must be a power of two
   (tiny: 64 -> 8, 3 stages; paper: 256 -> 16, 4 stages).
2. **View fusion by concatenation.** The ``V`` feature maps ``(c, h, w)`` are stacked along
   channels ``(V c, h, w)`` and mixed by a 1x1 conv. The input layout of the views is fixed
   (``cameras.chunk_cameras``), so concatenation keeps *which* view saw what, which a
   mean would throw away; the Plücker channels tell the trunk where each pixel looks from.
   (LN3Diff fuses with attention; at this size a conv is the cheaper choice.)
3. **Triplane head.** A residual conv block and a 3x3 conv give ``3 C`` channels, read as
   the three planes ``(xy, xz, yz)`` of ``C`` channels each. Which image-space cell feeds
   which plane cell is learned, not hard-wired: the network learns the 2D -> triplane map.

4. **Geometric lifting** (our addition, not in the paper; on in the ``tiny`` preset, off in
   ``paper``, whose encoder is the paper's). The learned 2D -> triplane map above has to
   discover *where* in 3D each pixel lies; at CPU budgets it learns that slowly and blurs.
   But every input pixel comes with its planar depth and its camera, so its 3D point is
   known exactly (``cameras.unproject_depth``). ``lift_to_planes`` back-projects every
   object pixel of every input view and averages, per cell of each plane at
   ``lift_resolution``, its RGB, its occupancy and its coordinate along the plane's normal
   axis; a small conv stack brings these maps to the latent size and they are **added** to
   the latent ``f``. The cameras are the input views' own ``input_c`` (never a fixed rig),
   so the same code lifts real chunks and mesh renders. Which plane cell a point lands in
   follows the triplane's own convention (``triplane.PLANE_AXES``, ``align_corners=False``),
   so the lifted maps are aligned with the planes the decoder produces.

Sizes: ``EncoderSettings`` (``tiny`` and ``paper`` presets), overridden by
``cfg.extra["encoder"]`` (a dict), like ``triplane.TriplaneSettings``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .cameras import OBJECT_BOX, unproject_depth
from .config import NUM_PLANES, SAR3DConfig, component_settings

# (u, v) world axes of each plane and the axis along its normal, in plane order (xy, xz, yz);
# the same (u, v) as triplane.PLANE_AXES
LIFT_AXES = ((0, 1, 2), (0, 2, 1), (1, 2, 0))
LIFT_FEATURES = 5  # mean RGB (3), occupancy (1), mean normal-axis coordinate (1)


@dataclass
class EncoderSettings:
    """Widths of the encoder: stage ``k`` has ``min(base_channels * 2^k, max_channels)``."""

    base_channels: int = 32
    max_channels: int = 64
    fused_channels: int = 64  # width after the view fusion
    # > 0: the last ones of the latent come from a colour encoder of their own (0: off, as in the presets;
    # the default checkpoint vqvae_tiny_colour uses 4);
    # set it equal to the triplane's colour_latent_channels so the two streams line up
    colour_latent_channels: int = 0
    colour_widths: tuple = (16, 32, 32)  # base, max and fused widths of that colour encoder
    # > 0: geometric lifting of the input pixels onto planes of this size (module doc, step 4); 0: off
    lift_resolution: int = 0
    lift_channels: int = 32  # width of the conv stack that brings the lifted maps to the latent size

    @classmethod
    def paper(cls) -> "EncoderSettings":
        return cls(base_channels=32, max_channels=256, fused_channels=256)

    @classmethod
    def from_config(cls, cfg: SAR3DConfig) -> "EncoderSettings":
        """The preset of ``cfg.name``, overridden by ``cfg.extra["encoder"]`` (a dict)."""
        return component_settings(cls, cfg, "encoder")


def num_downsamplings(image_size: int, latent_size: int) -> int:
    """``log2(image_size / latent_size)``; ValueError unless that is a whole power of two."""
    ratio = image_size / latent_size
    n = round(math.log2(ratio)) if ratio >= 1 else -1
    if image_size % latent_size or n < 0 or 2 ** n != ratio:
        raise ValueError(f"image_size / latent_size = {image_size} / {latent_size} must be a power of two "
                         f"(1, 2, 4, ...): the encoder halves the views {image_size} px down to {latent_size}")
    return n


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))))))`` at constant width and size."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MultiViewEncoder(nn.Module):
    """Views ``(B, V, 10, H, W)`` -> latent triplane ``f (B, 3, C, h, w)`` (Eq. 7: ``f = E(M~)``)."""

    def __init__(self, num_views: int, in_channels: int, image_size: int, latent_size: int,
                 latent_channels: int, settings: EncoderSettings | None = None):
        super().__init__()
        s = settings or EncoderSettings()
        if min(num_views, in_channels, latent_channels, s.base_channels, s.max_channels, s.fused_channels) < 1:
            raise ValueError("num_views, in_channels, latent_channels and the encoder widths must be positive")
        self.num_views, self.in_channels = int(num_views), int(in_channels)
        self.image_size, self.latent_size, self.latent_channels = int(image_size), int(latent_size), int(latent_channels)
        n = num_downsamplings(self.image_size, self.latent_size)
        widths = [min(s.base_channels * 2 ** k, s.max_channels) for k in range(max(n, 1))]
        # shared per-view trunk: (V*B, 10, H, W) -> (V*B, c, h, w)
        layers, c_in = [nn.Conv2d(in_channels, widths[0], 3, padding=1)], widths[0]
        for c_out in widths[:n]:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _norm(c_out), nn.SiLU(), ResBlock(c_out)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        # fusion of the views by channel concatenation: (B, V*c, h, w) -> (B, fused, h, w)
        self.fuse = nn.Sequential(nn.Conv2d(num_views * c_in, s.fused_channels, 1), ResBlock(s.fused_channels))
        self.colour = None
        if s.colour_latent_channels:
            if not 0 < s.colour_latent_channels < latent_channels or len(s.colour_widths) != 3:
                raise ValueError(f"colour_latent_channels={s.colour_latent_channels} must be in (0, {latent_channels}) "
                                 f"and colour_widths (base, max, fused) three numbers, got {tuple(s.colour_widths)}")
            b, mx, fu = s.colour_widths
            self.colour = MultiViewEncoder(num_views, in_channels, image_size, latent_size, s.colour_latent_channels,
                                           EncoderSettings(b, mx, fu))
            latent_channels -= s.colour_latent_channels
        self.head = nn.Sequential(_norm(s.fused_channels), nn.SiLU(),
                                  nn.Conv2d(s.fused_channels, NUM_PLANES * latent_channels, 3, padding=1))
        self.lift = None
        if s.lift_resolution:
            self.lift = LiftedPlanes(s.lift_resolution, self.latent_size, self.latent_channels, s.lift_channels)

    @classmethod
    def from_config(cls, cfg: SAR3DConfig, settings: EncoderSettings | None = None) -> "MultiViewEncoder":
        return cls(cfg.num_input_views, cfg.in_channels, cfg.image_size, cfg.latent_size, cfg.latent_channels,
                   settings or EncoderSettings.from_config(cfg))

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.num_views, self.in_channels, self.image_size, self.image_size)
        if x.ndim == 4 and tuple(x.shape) == expected:
            raise ValueError(f"encoder input has shape {tuple(x.shape)}: one object without the batch "
                             f"dimension; use x[None] (expected (B, {', '.join(map(str, expected))}))")
        if x.ndim != 5:
            raise ValueError(f"encoder input has shape {tuple(x.shape)}: expected (B, V, C, H, W) = "
                             f"(B, {', '.join(map(str, expected))})")
        B, V, C, H, W = x.shape
        if V != self.num_views:
            raise ValueError(f"encoder input has {V} views, expected {self.num_views} (cfg.num_input_views): "
                             f"the views are fused by concatenation, so their number is fixed")
        if C != self.in_channels:
            raise ValueError(f"encoder input has {C} channels per view, expected {self.in_channels} "
                             f"(RGB 3 + depth 1 + Plücker 6, MultiView.encoder_input)")
        if (H, W) != (self.image_size, self.image_size):
            raise ValueError(f"encoder input views are {H}x{W} px, expected {self.image_size}x{self.image_size} "
                             f"(cfg.image_size); resize the views (data.resize_views)")

    def forward(self, views_BVCHW: torch.Tensor, input_c: torch.Tensor | None = None) -> torch.Tensor:
        """``f = E(M~)``; ``input_c (B, V, 25)``, the input views' cameras, is needed (and only
        used) when the encoder lifts pixels into the planes (``lift_resolution > 0``)."""
        self._check_input(views_BVCHW)
        B, V = views_BVCHW.shape[:2]
        if self.lift is not None and input_c is None:
            raise ValueError("this encoder lifts the input pixels into the planes with their cameras: pass input_c "
                             "(B, V, 25), the input views' cameras (data.MultiViewDataset's 'input_c', MultiView.c)")
        x = self.trunk(views_BVCHW.flatten(0, 1))  # (B*V, c, h, w): one trunk for all views
        x = x.unflatten(0, (B, V)).flatten(1, 2)  # (B, V*c, h, w): views side by side in channels
        x = self.head(self.fuse(x))  # (B, 3*C, h, w)
        f = x.unflatten(1, (NUM_PLANES, -1))  # (B, 3, C, h, w)
        if self.colour is not None:  # the colour stream's latents: the last channels of each plane
            f = torch.cat([f, self.colour(views_BVCHW)], 2)
        if self.lift is not None:
            f = f + self.lift(views_BVCHW, input_c)
        return f


def lift_to_planes(rgb_BV3HW: torch.Tensor, depth_BVHW: torch.Tensor, c_BV25: torch.Tensor, resolution: int,
                   bound: float = OBJECT_BOX) -> torch.Tensor:
    """Back-project the object pixels of posed views onto the three planes -> ``(B, 3, 5, R, R)``.

    A pixel with planar depth ``z > 0`` lies at ``p = unproject_depth(z, c)``. On plane
    ``(u, v)`` with normal axis ``n`` it falls in column ``floor((p_u + b) / 2b * R)`` and row
    ``floor((p_v + b) / 2b * R)``. Per cell: the mean RGB of the pixels there, the occupancy
    ``1 - exp(-count / 4)`` and the mean ``p_n / b``; empty cells hold zeros. Points outside
    the box ``[-b, b]^3`` are left out.
    """
    if rgb_BV3HW.ndim != 5 or depth_BVHW.shape != rgb_BV3HW.shape[:2] + rgb_BV3HW.shape[3:]:
        raise ValueError(f"rgb {tuple(rgb_BV3HW.shape)} and depth {tuple(depth_BVHW.shape)} must be "
                         f"(B, V, 3, H, W) and (B, V, H, W)")
    if c_BV25.shape != rgb_BV3HW.shape[:2] + (25,):
        raise ValueError(f"input_c has shape {tuple(c_BV25.shape)}: expected {tuple(rgb_BV3HW.shape[:2]) + (25,)}, "
                         f"one camera per input view")
    B, R = rgb_BV3HW.shape[0], int(resolution)
    pts_BN3 = unproject_depth(depth_BVHW.float(), c_BV25.float()).reshape(B, -1, 3)
    valid_BN = (depth_BVHW.reshape(B, -1) > 0) & (pts_BN3.abs() <= bound).all(-1)
    cell_BN3 = ((pts_BN3 + bound) / (2 * bound) * R).floor().long().clamp(0, R - 1)
    w_BN = valid_BN.float()
    # the weighted values (RGB, 1, p_n / b) of every pixel, features first; only p_n changes with the plane
    values_B5N = torch.empty(B, LIFT_FEATURES, pts_BN3.shape[1], dtype=pts_BN3.dtype, device=pts_BN3.device)
    values_B5N[:, :3] = rgb_BV3HW.float().transpose(1, 2).reshape(B, 3, -1) * w_BN[:, None]
    values_B5N[:, 3] = w_BN
    maps = []
    for u, v, n in LIFT_AXES:
        index_BN = cell_BN3[..., v] * R + cell_BN3[..., u]  # row-major (v rows, u columns)
        values_B5N[:, 4] = pts_BN3[..., n] / bound * w_BN
        acc_B5M = torch.zeros(B, LIFT_FEATURES, R * R, dtype=values_B5N.dtype, device=values_B5N.device)
        acc_B5M.scatter_add_(2, index_BN[:, None].expand(-1, LIFT_FEATURES, -1), values_B5N)
        count_B1M = acc_B5M[:, 3:4]
        mean_B5M = acc_B5M / count_B1M.clamp(min=1.0)
        mean_B5M[:, 3:4] = 1 - torch.exp(-count_B1M / 4)
        maps.append(mean_B5M.reshape(B, LIFT_FEATURES, R, R))
    return torch.stack(maps, 1)


class LiftedPlanes(nn.Module):
    """The lifted maps ``(B, 3, 5, R, R)`` -> an addition to the latent ``(B, 3, C, h, w)``: one conv
    stack shared by the planes (a 3x3 conv, then stride-2 convs down to ``h``, then a 1x1 conv)."""

    def __init__(self, resolution: int, latent_size: int, latent_channels: int, channels: int = 32):
        super().__init__()
        n = num_downsamplings(resolution, latent_size)
        self.resolution = int(resolution)
        layers = [nn.Conv2d(LIFT_FEATURES, channels, 3, padding=1), nn.SiLU()]
        for _ in range(n):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(channels, latent_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, views_BVCHW: torch.Tensor, input_c: torch.Tensor) -> torch.Tensor:
        maps = lift_to_planes(views_BVCHW[:, :, :3], views_BVCHW[:, :, 3], input_c.to(views_BVCHW.device),
                              self.resolution)
        B = maps.shape[0]
        return self.net(maps.flatten(0, 1).to(views_BVCHW.dtype)).unflatten(0, (B, NUM_PLANES))
