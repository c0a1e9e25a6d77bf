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

Sizes: ``EncoderSettings`` (``tiny`` and ``paper`` presets), overridden by
``cfg.extra["encoder"]`` (a dict), like ``triplane.TriplaneSettings``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import NUM_PLANES, SAR3DConfig, component_settings


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

    def forward(self, views_BVCHW: torch.Tensor) -> torch.Tensor:
        self._check_input(views_BVCHW)
        B, V = views_BVCHW.shape[:2]
        x = self.trunk(views_BVCHW.flatten(0, 1))  # (B*V, c, h, w): one trunk for all views
        x = x.unflatten(0, (B, V)).flatten(1, 2)  # (B, V*c, h, w): views side by side in channels
        x = self.head(self.fuse(x))  # (B, 3*C, h, w)
        f = x.unflatten(1, (NUM_PLANES, -1))  # (B, 3, C, h, w)
        if self.colour is not None:  # the colour stream's latents: the last channels of each plane
            f = torch.cat([f, self.colour(views_BVCHW)], 2)
        return f
