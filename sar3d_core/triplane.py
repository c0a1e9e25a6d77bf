"""Triplane decoder, triplane field and volume rendering (paper Sec. 4.1, Supp. B, Fig. 2).

The decoder ``D`` of Alg. 2 (Supp. B) turns the reconstructed latent triplane
``f_hat (B, 3, C, h, w)`` into a feature triplane ``T (B, 3, F, H', W')`` "in a plane-wise
manner" (Fig. 2): the same conv upsampler runs on each plane, the planes folded into the
batch. A small MLP reads the summed plane features at a 3D point and gives a density and a
colour; volume rendering (NeRF [44], Sec. 4.1) turns them into the RGB-D images and masks
that the reconstruction loss of Eq. 8 compares to the ground truth.

Conventions (DESIGN.md §4):

* The three planes cover the object box ``[-b, b]^3`` (``b = cameras.OBJECT_BOX = 0.45``),
  in the order ``(xy, xz, yz)``. Plane ``p`` is indexed by ``(u, v)``: xy: ``(u, v) = (x, y)``,
  xz: ``(x, z)``, yz: ``(y, z)``. ``u`` runs along the width (columns, ``grid_sample``'s
  first grid coordinate), ``v`` along the height (rows).
* ``align_corners=False``: a plane of ``W`` columns tiles ``[-b, b]`` edge to edge, so
  column ``j`` has its centre at ``u = -b + (j + 0.5) 2b / W`` (pixel centres at +0.5, as
  for images). Points beyond the outermost centres take the border value.
* Features of the three planes are summed (as in LN3Diff's triplane renderer; EG3D takes
  the mean), so the MLP input has ``F`` channels whatever the number of planes; or, with
  ``plane_merge="concat"`` (the official SAR3D decoder's choice), concatenated: ``3 F``
  channels, which keeps which plane a feature came from.
* The decoder is plane-wise convs (Fig. 2). ``attention_blocks > 0`` adds transformer blocks on
  the latent grid that mix cells within and across planes (``PlaneAttentionBlock``), after the
  official decoder's DiT blocks; an option, off in both presets: at the tiny preset's budget it
  did not beat the conv stack (docs/RESULTS.md, the VQVAE ablation).
* Distances ``t`` are along unit world rays (``cameras.camera_rays``); ``render_images`` and
  ``render_pixels`` convert the depth they return to planar camera z with
  ``cameras.ray_depth_scale``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cameras import OBJECT_BOX, camera_rays, ray_box_interval, ray_depth_scale
from .config import NUM_PLANES, SAR3DConfig, component_settings

# (u, v) world axes of each plane, in plane order (xy, xz, yz)
PLANE_AXES = ((0, 1), (0, 2), (1, 2))


@dataclass
class TriplaneSettings:
    """Sizes of the decoder and field. ``decoder_channels[k]`` is the width at ``h * 2^k``."""

    feature_channels: int = 16  # F, channels of the decoded feature triplane
    decoder_channels: tuple = (32, 32, 32)  # tiny: 8 -> 16 -> 32
    mlp_hidden: int = 32
    mlp_layers: int = 2
    density_bias: float = -4.0  # softplus(-4) * 10 = 0.18 per unit: start nearly empty
    density_scale: float = 10.0
    num_samples: int = 24  # samples per ray inside the box
    # > 0: that many more samples per ray drawn where the first pass's weights lie (hierarchical
    # sampling, as the EG3D / LN3Diff renderer the official code uses does); 0 in the tiny preset
    importance_samples: int = 0
    bound: float = OBJECT_BOX
    colour_channels: int = 0  # > 0: the last ones of F feed a colour MLP of their own (0: one shared trunk)
    colour_latent_channels: int = 0  # > 0 (needs colour_channels): the last ones of C feed a colour decoder of their own
    colour_decoder_channels: tuple = (16, 16, 16)  # widths of that colour decoder (same number of stages)
    # with the colour decoder: add a 1x1 conv of the (nearest-)upsampled colour latent to its output, a short
    # path from the latent's colour to the field's colour input (our addition; off in the presets)
    colour_skip: bool = False
    plane_merge: str = "sum"  # how the field combines the three planes' features: "sum" or "concat"
    # > 0: that many transformer blocks on the latent grid right after the decoder's first conv, alternating
    # attention within each plane and across all three planes' cells (the official decoder's DiT blocks mix
    # the planes this way); 0 in the presets (an option; see PlaneAttentionBlock)
    attention_blocks: int = 0
    attention_heads: int = 4

    @classmethod
    def paper(cls) -> "TriplaneSettings":
        # 16 -> 128 feature planes, as LN3Diff decodes its latent to a 256-wide triplane
        return cls(feature_channels=32, decoder_channels=(128, 128, 64, 32), mlp_hidden=64, num_samples=96)

    @classmethod
    def from_config(cls, cfg: SAR3DConfig) -> "TriplaneSettings":
        """The preset of ``cfg.name``, overridden by ``cfg.extra["triplane"]`` (a dict)."""
        return component_settings(cls, cfg, "triplane")


class PlaneAttentionBlock(nn.Module):
    """A pre-norm transformer block over the cells of a triplane ``(B, 3, C, h, w)``.

    ``across_planes=False``: each plane's ``h w`` cells attend to each other (one sequence per
    plane); ``True``: all ``3 h w`` cells of an object form one sequence, so a cell of the xy
    plane can read the xz and yz cells that share its x or y. The official SAR3D decoder (a DiT
    on the LN3Diff triplane) alternates the two; the decoder adds learned positions (``pos``, one
    vector per plane cell) before its first block. Attention output and MLP output start at zero, so a fresh block is
    the identity and the decoder starts as the plain conv stack.
    """

    def __init__(self, width: int, heads: int, across_planes: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by attention_heads={heads}")
        self.across_planes = across_planes
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        for out in (self.attn.out_proj, self.mlp[-1]):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def forward(self, x_B3Chw: torch.Tensor) -> torch.Tensor:
        B, P, C, h, w = x_B3Chw.shape
        t = x_B3Chw.permute(0, 1, 3, 4, 2)  # (B, 3, h, w, C)
        t = t.reshape(B, P * h * w, C) if self.across_planes else t.reshape(B * P, h * w, C)
        y = self.norm1(t)
        t = t + self.attn(y, y, y, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return t.reshape(B, P, h, w, C).permute(0, 1, 4, 2, 3)


class TriplaneDecoder(nn.Module):
    """Latent triplane ``(B, 3, C, h, w)`` -> feature triplane ``(B, 3, F, h 2^K, w 2^K)``.

    With ``colour_latent_channels = c_l > 0`` (needs the split field, ``colour_channels = c``)
    the decoder runs two streams that never mix: the first ``C - c_l`` latent channels go
    through the main conv stack to the first ``F - c`` features (the field's density input),
    the last ``c_l`` through a narrower stack of their own to the last ``c`` (its colour
    input). Density, mask, depth and occupancy losses then reach no weight of the colour
    stream, and the colour losses no weight of the geometry stream; only the encoder and the
    codebook are shared. Off (``0``) in the presets; on in the default checkpoint
    ``data_samples/vqvae_tiny_colour``.
    """

    def __init__(self, latent_channels: int, feature_channels: int, decoder_channels=(32, 32, 32),
                 colour_latent_channels: int = 0, colour_feature_channels: int = 0, colour_decoder_channels=(16, 16, 16),
                 colour_skip: bool = False, attention_blocks: int = 0, attention_heads: int = 4,
                 latent_size: int | None = None):
        super().__init__()
        if len(decoder_channels) < 1:
            raise ValueError("decoder_channels needs at least one width")
        self.latent_channels, self.feature_channels = latent_channels, feature_channels
        self.upsample_factor = 2 ** (len(decoder_channels) - 1)
        # two streams: the last ``colour_latent_channels`` of the latent -> the last
        # ``colour_feature_channels`` features (the split field's colour input), the rest -> the rest
        self.colour_latent_channels = int(colour_latent_channels)
        self.colour = self.colour_skip = None
        if colour_skip and not self.colour_latent_channels:
            raise ValueError("colour_skip needs the colour decoder (colour_latent_channels > 0)")
        if self.colour_latent_channels:
            if not 0 < self.colour_latent_channels < latent_channels or not 0 < colour_feature_channels < feature_channels:
                raise ValueError(f"colour_latent_channels={colour_latent_channels} must be in (0, {latent_channels}) and "
                                 f"needs colour_channels in (0, {feature_channels}) (the split field's colour input)")
            if len(colour_decoder_channels) != len(decoder_channels):
                raise ValueError(f"colour_decoder_channels {tuple(colour_decoder_channels)} needs "
                                 f"{len(decoder_channels)} widths, as many as decoder_channels (same upsampling)")
            self.colour = TriplaneDecoder(self.colour_latent_channels, colour_feature_channels, colour_decoder_channels)
            if colour_skip:
                self.colour_skip = nn.Conv2d(self.colour_latent_channels, colour_feature_channels, 1)
            latent_channels -= self.colour_latent_channels
            feature_channels -= colour_feature_channels
        self.conv_in = nn.Conv2d(latent_channels, decoder_channels[0], 3, padding=1)
        self.stages = nn.ModuleList()
        for c_in, c_out in zip(decoder_channels[:-1], decoder_channels[1:]):
            self.stages.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU(),
            ))
        self.conv_out = nn.Conv2d(decoder_channels[-1], feature_channels, 3, padding=1)
        # the geometry stream's optional transformer blocks on the latent grid, within / across planes in turn
        self.blocks = nn.ModuleList(PlaneAttentionBlock(decoder_channels[0], attention_heads, across_planes=k % 2 == 1)
                                    for k in range(int(attention_blocks)))
        self.pos = None
        if self.blocks:
            if not latent_size:
                raise ValueError("attention_blocks > 0 needs latent_size (the latent grid's side) for its positions")
            self.pos = nn.Parameter(0.02 * torch.randn(NUM_PLANES, decoder_channels[0], latent_size, latent_size))

    @classmethod
    def from_config(cls, cfg: SAR3DConfig, settings: TriplaneSettings | None = None) -> "TriplaneDecoder":
        s = settings or TriplaneSettings.from_config(cfg)
        return cls(cfg.latent_channels, s.feature_channels, s.decoder_channels, s.colour_latent_channels,
                   s.colour_channels if s.colour_latent_channels else 0, s.colour_decoder_channels, s.colour_skip,
                   s.attention_blocks, s.attention_heads, cfg.latent_size)

    def forward(self, f_B3Chw: torch.Tensor) -> torch.Tensor:
        if f_B3Chw.ndim != 5 or f_B3Chw.shape[1] != NUM_PLANES or f_B3Chw.shape[2] != self.latent_channels:
            raise ValueError(
                f"latent triplane has shape {tuple(f_B3Chw.shape)}: expected (B, 3, {self.latent_channels}, h, w)")
        if self.colour is not None:  # geometry stream | colour stream, never mixed
            c = self.latent_channels - self.colour_latent_channels
            colour = self.colour(f_B3Chw[:, :, c:])
            if self.colour_skip is not None:  # + conv1x1(upsample(colour latent))
                up = F.interpolate(f_B3Chw[:, :, c:].flatten(0, 1), scale_factor=self.upsample_factor, mode="nearest")
                colour = colour + self.colour_skip(up).unflatten(0, f_B3Chw.shape[:2])
            return torch.cat([self._stack(f_B3Chw[:, :, :c]), colour], 2)
        return self._stack(f_B3Chw)

    def _stack(self, f_B3Chw: torch.Tensor) -> torch.Tensor:
        B = f_B3Chw.shape[0]
        x = f_B3Chw.flatten(0, 1)  # (B*3, C, h, w): one conv stack shared by the planes
        x = F.silu(self.conv_in(x))
        if self.blocks:
            x = x.unflatten(0, (B, NUM_PLANES))
            if x.shape[-2:] != self.pos.shape[-2:]:
                raise ValueError(f"latent grid {tuple(x.shape[-2:])} does not match the attention positions "
                                 f"{tuple(self.pos.shape[-2:])} (latent_size)")
            x = x + self.pos
            for block in self.blocks:
                x = block(x)
            x = x.flatten(0, 1)
        for stage in self.stages:
            x = stage(x)
        x = self.conv_out(x)  # (B*3, F, H', W')
        return x.unflatten(0, (B, NUM_PLANES))


def plane_uv(points_BN3: torch.Tensor, bound: float = OBJECT_BOX) -> torch.Tensor:
    """World points -> normalised plane coordinates in ``[-1, 1]``: ``(B, 3, N, 2)``."""
    uv = torch.stack([points_BN3[..., list(axes)] for axes in PLANE_AXES], dim=1)
    return uv / bound


def sample_triplane(planes_B3FHW: torch.Tensor, points_BN3: torch.Tensor, bound: float = OBJECT_BOX,
                    merge: str = "sum") -> torch.Tensor:
    """Bilinear features of each plane at the points' projections, summed -> ``(B, N, F)``.

    ``feat(p) = T_xy(x, y) + T_xz(x, z) + T_yz(y, z)``; ``merge="concat"``: the three side
    by side -> ``(B, N, 3, F)`` (plane order xy, xz, yz).
    """
    if merge not in ("sum", "concat"):
        raise ValueError(f"merge={merge!r}: choose 'sum' or 'concat'")
    if planes_B3FHW.ndim != 5 or planes_B3FHW.shape[1] != NUM_PLANES:
        raise ValueError(f"planes have shape {tuple(planes_B3FHW.shape)}: expected (B, 3, F, H, W)")
    if points_BN3.ndim != 3 or points_BN3.shape[-1] != 3 or points_BN3.shape[0] != planes_B3FHW.shape[0]:
        raise ValueError(f"points have shape {tuple(points_BN3.shape)}: expected (B={planes_B3FHW.shape[0]}, N, 3)")
    B, P, C, H, W = planes_B3FHW.shape
    grid = plane_uv(points_BN3, bound).flatten(0, 1)[:, None]  # (B*3, 1, N, 2), grid[..., 0] -> columns
    feat = F.grid_sample(planes_B3FHW.flatten(0, 1), grid.to(planes_B3FHW.dtype), mode="bilinear",
                         padding_mode="border", align_corners=False)  # (B*3, F, 1, N)
    feat = feat[:, :, 0].unflatten(0, (B, P))  # (B, 3, F, N)
    if merge == "concat":
        return feat.permute(0, 3, 1, 2)  # (B, N, 3, F)
    return feat.sum(1).transpose(1, 2)  # (B, N, F)


class TriplaneField(nn.Module):
    """MLP on summed triplane features -> density ``sigma >= 0`` and colour in ``[0, 1]``.

    With ``colour_channels = c > 0`` the feature channels are split: the first ``F - c``
    feed the density trunk, the last ``c`` a colour MLP of their own. With one shared trunk
    (``c = 0``, the presets and the shipped checkpoints) the density, mask, depth and
    occupancy gradients reach the same plane features as the colour ones and, under Adam's
    per-weight step sizes, drown them: fitting free per-object feature planes of 4 objects
    for 300 steps, the shared field rendered all four in one brown, the split one
    (``c = F / 2``) in their own colours (README, VQVAE, "Colour diagnosis"). The paper's
    Fig. 2 leaves the MLP's layout open.

    ``trunk_features`` is the density trunk's hidden code: an SDF head (FlexiCubes, Sec. 4.1
    Eq. 9) attaches to it as one more linear layer, next to ``density_head``.
    """

    def __init__(self, feature_channels: int, hidden: int = 32, layers: int = 2,
                 density_bias: float = -4.0, density_scale: float = 10.0, bound: float = OBJECT_BOX,
                 colour_channels: int = 0, plane_merge: str = "sum"):
        super().__init__()
        if not 0 <= colour_channels < feature_channels:
            raise ValueError(f"colour_channels={colour_channels} must be in [0, feature_channels={feature_channels})")
        if plane_merge not in ("sum", "concat"):
            raise ValueError(f"plane_merge={plane_merge!r}: choose 'sum' or 'concat'")
        self.bound, self.density_bias, self.density_scale = bound, density_bias, density_scale
        self.colour_channels = int(colour_channels)
        self.density_channels = feature_channels - self.colour_channels
        self.plane_merge = plane_merge
        m = NUM_PLANES if plane_merge == "concat" else 1  # MLP inputs per feature channel
        self.trunk = self._mlp(m * self.density_channels, hidden, layers)
        self.density_head = nn.Linear(hidden, 1)
        self.color_trunk = self._mlp(m * self.colour_channels, hidden, layers - 1) if self.colour_channels else None
        self.color_head = nn.Linear(hidden if self.colour_channels == 0 or layers > 1 else m * self.colour_channels, 3)

    @staticmethod
    def _mlp(width: int, hidden: int, layers: int) -> nn.Sequential:
        mods = []
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        return nn.Sequential(*mods)

    @classmethod
    def from_config(cls, cfg: SAR3DConfig, settings: TriplaneSettings | None = None) -> "TriplaneField":
        s = settings or TriplaneSettings.from_config(cfg)
        return cls(s.feature_channels, s.mlp_hidden, s.mlp_layers, s.density_bias, s.density_scale, s.bound,
                   s.colour_channels, s.plane_merge)

    def _features(self, planes_B3FHW, points_BN3) -> tuple[torch.Tensor, torch.Tensor]:
        """The density and colour inputs of the MLPs at the points: ``(B, N, m (F - c))``, ``(B, N, m c)``."""
        feat = sample_triplane(planes_B3FHW, points_BN3, self.bound, self.plane_merge)
        d, c = feat[..., :self.density_channels], feat[..., self.density_channels:]
        if self.plane_merge == "concat":  # (B, N, 3, f) -> (B, N, 3 f)
            d, c = d.flatten(-2), c.flatten(-2)
        return d, c

    def trunk_features(self, planes_B3FHW, points_BN3) -> torch.Tensor:
        return self.trunk(self._features(planes_B3FHW, points_BN3)[0])  # (B, N, hidden)

    def query(self, planes_B3FHW, points_BN3) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sigma (B, N), rgb (B, N, 3))`` at world points; ``sigma = 0`` outside the box."""
        d_BNf, c_BNf = self._features(planes_B3FHW, points_BN3)
        h_BNh = self.trunk(d_BNf)
        # sigma = s * softplus(raw + b): b < 0 makes a fresh field nearly empty space
        sigma_BN = self.density_scale * F.softplus(self.density_head(h_BNh)[..., 0] + self.density_bias)
        inside_BN = (points_BN3.abs() <= self.bound + 1e-4).all(-1)
        sigma_BN = sigma_BN * inside_BN
        if self.colour_channels:
            h_BNh = self.color_trunk(c_BNf)
        rgb_BN3 = torch.sigmoid(self.color_head(h_BNh))
        return sigma_BN, rgb_BN3


def render_weights(tau_BRS: torch.Tensor) -> torch.Tensor:
    """``w_i = T_i alpha_i`` from the optical depths ``tau_i = sigma_i delta_i`` of the samples along
    each ray: ``alpha_i = 1 - exp(-tau_i)``, ``T_i = exp(-sum_{j<i} tau_j)``."""
    alpha_BRS = 1.0 - torch.exp(-tau_BRS)
    T_BRS = torch.exp(-(torch.cumsum(tau_BRS, -1) - tau_BRS))  # exclusive sum: j < i
    return T_BRS * alpha_BRS


def importance_t(weights_BRS: torch.Tensor, near, delta_BR, count: int, stratified: bool,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` distances ``(B, R, count)`` per ray drawn from the piecewise-constant density of
    the first pass's ``weights`` over its equal bins (inverse transform sampling, NeRF [44] Sec. 5.2).

    The weights are widened to each bin's neighbours (a 3-bin max, so the bins around a surface get
    samples too) and floored at 1% of their mean (empty rays sample uniformly). The quantiles are
    ``(i + 0.5) / count``, or ``(i + u) / count`` with ``u`` uniform when ``stratified``."""
    w = weights_BRS.detach()
    w = torch.maximum(w, torch.maximum(F.pad(w[..., 1:], (0, 1)), F.pad(w[..., :-1], (1, 0))))
    pdf = w + 0.01 * w.mean(-1, keepdim=True) + 1e-6
    pdf = pdf / pdf.sum(-1, keepdim=True)
    cdf = F.pad(torch.cumsum(pdf, -1), (1, 0))  # (B, R, S + 1), from 0 to 1
    u = torch.arange(count, dtype=w.dtype, device=w.device)
    if stratified:
        dev = generator.device if generator is not None else w.device
        u = u + torch.rand(*w.shape[:2], count, generator=generator, dtype=w.dtype, device=dev).to(w.device)
    else:
        u = (u + 0.5).expand(*w.shape[:2], count)
    u = (u / count).clamp(0.0, 1.0 - 1e-6).contiguous()
    S = w.shape[-1]
    bin_ = (torch.searchsorted(cdf.contiguous(), u, right=True) - 1).clamp(0, S - 1)
    lo, p = cdf.gather(-1, bin_), pdf.gather(-1, bin_)
    return near[..., None] + delta_BR[..., None] * (bin_ + ((u - lo) / p).clamp(0.0, 1.0))


def volume_render(field_fn, origins, dirs, near, far, num_samples: int, stratified: bool = False,
                  generator: torch.Generator | None = None, depth_scale=None, background: float = 1.0,
                  importance_samples: int = 0) -> dict:
    """Render rays ``(B, R, 3)`` through ``field_fn(points (B, N, 3)) -> (sigma (B, N), rgb (B, N, 3))``.

    ``[near, far]`` is cut into ``num_samples`` equal bins; sample ``i`` sits at the bin's
    middle (or uniformly inside it when ``stratified``) and stands for the whole bin, so
    ``delta_i`` is the bin width and ``sum_i delta_i = far - near``. Rays with
    ``far <= near`` (they miss the box) get opacity 0 and the background colour.

    Returns ``rgb (B, R, 3)`` composited on ``background`` (white), ``opacity (B, R)``,
    ``depth (B, R)`` = ``sum_i w_i t_i`` (goes to 0 on empty rays, as ground-truth depth maps
    do), ``expected_depth (B, R)`` = ``depth / opacity`` (the mean hit distance given a hit),
    ``weights (B, R, S)`` and ``t (B, R, S)``. Depths are distances along the ray, or planar
    when ``depth_scale (B, R)`` (distance per unit planar depth) is given: ``z = t / scale``.

    ``importance_samples`` N > 0 adds N samples drawn from the first pass's weights
    (``importance_t``) and composites all ``S + N``, sorted along the ray; each then stands for the
    stretch of ray closer to it than to its neighbours (the cells still sum to ``far - near``), and
    ``weights`` and ``t`` are ``(B, R, S + N)``. The field is queried at every sample, with
    gradients; only where the new samples go is drawn from the detached weights.
    """
    if origins.ndim != 3 or origins.shape[-1] != 3 or dirs.shape != origins.shape:
        raise ValueError(f"origins {tuple(origins.shape)} and dirs {tuple(dirs.shape)} must both be (B, R, 3)")
    if near.shape != origins.shape[:2] or far.shape != origins.shape[:2]:
        raise ValueError(f"near {tuple(near.shape)} and far {tuple(far.shape)} "
                         f"must be (B, R) = {tuple(origins.shape[:2])}")
    if int(num_samples) < 1:
        raise ValueError(f"num_samples={num_samples} must be a positive integer")
    if int(importance_samples) < 0:
        raise ValueError(f"importance_samples={importance_samples} must be 0 (off) or a positive integer")
    B, R, _ = origins.shape
    S = int(num_samples)
    far = torch.maximum(far, near)  # a missed ray: empty interval, every delta 0
    delta_BR = (far - near) / S
    offset = torch.arange(S, dtype=origins.dtype, device=origins.device)
    if stratified:
        dev = generator.device if generator is not None else origins.device  # a CPU generator may drive CUDA rays
        offset = offset + torch.rand(B, R, S, generator=generator, dtype=origins.dtype, device=dev).to(origins.device)
    else:
        offset = (offset + 0.5).expand(B, R, S)
    t_BRS = near[..., None] + delta_BR[..., None] * offset
    points = origins[:, :, None] + t_BRS[..., None] * dirs[:, :, None]  # (B, R, S, 3)
    sigma, rgb = field_fn(points.reshape(B, R * S, 3))
    if sigma.shape != (B, R * S) or rgb.shape != (B, R * S, 3):
        raise ValueError(f"field_fn returned sigma {tuple(sigma.shape)}, rgb {tuple(rgb.shape)}: "
                         f"expected ({B}, {R * S}) and ({B}, {R * S}, 3)")
    sigma_BRS, rgb_BRS3 = sigma.reshape(B, R, S), rgb.reshape(B, R, S, 3)
    cell_BRS = delta_BR[..., None].expand(B, R, S)
    if int(importance_samples) > 0:
        N = int(importance_samples)
        tau = sigma_BRS.detach() * cell_BRS
        t_new = importance_t(render_weights(tau), near, delta_BR, N, stratified, generator)
        points = origins[:, :, None] + t_new[..., None] * dirs[:, :, None]
        sigma_new, rgb_new = field_fn(points.reshape(B, R * N, 3))
        t_BRS, order = torch.sort(torch.cat([t_BRS, t_new], -1), -1)
        sigma_BRS = torch.cat([sigma_BRS, sigma_new.reshape(B, R, N)], -1).gather(-1, order)
        rgb_BRS3 = torch.cat([rgb_BRS3, rgb_new.reshape(B, R, N, 3)], -2).gather(-2, order[..., None].expand(-1, -1, -1, 3))
        mid = 0.5 * (t_BRS[..., 1:] + t_BRS[..., :-1])
        cell_BRS = torch.cat([mid, far[..., None]], -1) - torch.cat([near[..., None], mid], -1)

    # Volume rendering (NeRF [44]) of C(r) = int T(t) sigma(t) c(t) dt, T(t) = exp(-int_0^t sigma):
    #   \hat{C} = \sum_i T_i \alpha_i c_i,  T_i = \exp(-\sum_{j<i} \sigma_j \delta_j),
    #   \alpha_i = 1 - \exp(-\sigma_i \delta_i),  w_i = T_i \alpha_i
    tau_BRS = sigma_BRS * cell_BRS
    w_BRS = render_weights(tau_BRS)
    opacity_BR = w_BRS.sum(-1)
    rgb_BR3 = (w_BRS[..., None] * rgb_BRS3).sum(-2) + (1.0 - opacity_BR[..., None]) * background
    depth_BR = (w_BRS * t_BRS).sum(-1)
    if depth_scale is not None:
        if depth_scale.shape != (B, R):
            raise ValueError(f"depth_scale has shape {tuple(depth_scale.shape)}: expected ({B}, {R})")
        depth_BR = depth_BR / depth_scale
    return {"rgb": rgb_BR3, "opacity": opacity_BR, "depth": depth_BR,
            "expected_depth": depth_BR / opacity_BR.clamp(min=1e-8), "weights": w_BRS, "t": t_BRS}


def camera_pixel_rays(c, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rays of every pixel of cameras ``c (B, V, 25)``, flattened over ``(V, H, W)``:
    ``origins (B, P, 3)``, unit ``dirs (B, P, 3)`` and ``depth_scale (B, P)`` (distance per unit
    planar depth, ``cameras.ray_depth_scale``), ``P = V H W``."""
    B = c.shape[0]
    origins, dirs = camera_rays(c, height, width)  # (B, V, H, W, 3)
    scale = ray_depth_scale(c, height, width).reshape(B, -1)
    return origins.reshape(B, -1, 3), dirs.reshape(B, -1, 3), scale


def render_rays(planes_B3FHW, field: TriplaneField, origins_BR3, dirs_BR3, num_samples: int, depth_scale_BR=None,
                stratified: bool = False, generator: torch.Generator | None = None,
                chunk: int | None = None, importance_samples: int = 0) -> dict:
    """Volume-render the field on the triplane along rays ``(B, R, 3)`` inside its box (NeRF [44]).

    Returns ``rgb (B, R, 3)`` on white, ``depth (B, R)`` (``sum_i w_i t_i``, planar when
    ``depth_scale_BR`` is given; 0 on empty rays) and ``mask (B, R)`` the opacity. ``chunk``:
    at most that many rays per call of the field (memory); the result does not depend on it
    unless ``stratified`` draws from ``generator``.
    """
    near, far = ray_box_interval(origins_BR3, dirs_BR3, -field.bound, field.bound)
    field_fn = lambda pts: field.query(planes_B3FHW, pts)  # noqa: E731
    R = origins_BR3.shape[1]
    step = R if chunk is None else int(chunk)
    scale = (lambda s: None) if depth_scale_BR is None else (lambda s: depth_scale_BR[:, s])  # noqa: E731
    parts = [volume_render(field_fn, origins_BR3[:, i:i + step], dirs_BR3[:, i:i + step], near[:, i:i + step],
                           far[:, i:i + step], num_samples, stratified, generator, scale(slice(i, i + step)),
                           importance_samples=importance_samples)
             for i in range(0, R, step)]
    cat = lambda k: torch.cat([p[k] for p in parts], 1)  # noqa: E731
    return {"rgb": cat("rgb"), "depth": cat("depth"), "mask": cat("opacity")}


def _check_cameras(planes_B3FHW, c) -> None:
    """Cameras ``(B, V, 25)``, one row of views per object of the planes."""
    if c.ndim != 3 or c.shape[-1] != 25 or c.shape[0] != planes_B3FHW.shape[0]:
        raise ValueError(f"cameras c have shape {tuple(c.shape)}: expected (B={planes_B3FHW.shape[0]}, V, 25)")


def render_images(planes_B3FHW, field: TriplaneField, c, height: int, width: int, num_samples: int,
                  stratified: bool = False, generator: torch.Generator | None = None,
                  chunk: int | None = None, importance_samples: int = 0) -> dict:
    """Render every pixel of cameras ``c (B, V, 25)``: full images (Sec. 4.1, the RGB-D-mask of Eq. 8).

    ``rgb (B, V, 3, H, W)`` on white, ``depth (B, V, 1, H, W)`` planar (``sum_i w_i z_i``, 0
    where empty), ``mask (B, V, 1, H, W)`` the opacity.
    """
    _check_cameras(planes_B3FHW, c)
    B, V = c.shape[:2]
    origins, dirs, scale = camera_pixel_rays(c, height, width)
    out = render_rays(planes_B3FHW, field, origins, dirs, num_samples, scale, stratified, generator, chunk,
                      importance_samples)
    return {"rgb": out["rgb"].reshape(B, V, height, width, 3).permute(0, 1, 4, 2, 3),
            "depth": out["depth"].reshape(B, V, 1, height, width),
            "mask": out["mask"].reshape(B, V, 1, height, width)}


def random_pixel_index(batch: int, views: int, height: int, width: int, count: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixel numbers ``(B, count)`` into the flattened ``(V, H, W)`` grid, drawn uniformly
    without replacement per object (the random rays of the render loss)."""
    total = views * height * width
    if not 1 <= int(count) <= total:
        raise ValueError(f"ray_subset={count} must be between 1 and V*H*W = {total}")
    return torch.rand(batch, total, generator=generator).argsort(-1)[:, :int(count)]


def render_pixels(planes_B3FHW, field: TriplaneField, c, height: int, width: int, index, num_samples: int,
                  stratified: bool = False, generator: torch.Generator | None = None,
                  chunk: int | None = None, importance_samples: int = 0) -> dict:
    """Render the pixels ``index (B, n)`` (numbers into the flattened ``(V, H, W)`` grid of
    cameras ``c (B, V, 25)``, e.g. ``random_pixel_index`` or ``patch_index``).

    ``rgb (B, n, 3)``, planar ``depth (B, n)``, ``mask (B, n)``, the ``index`` itself and its
    split into ``view``, ``row``, ``col`` (each ``(B, n)``).
    """
    _check_cameras(planes_B3FHW, c)
    B, V = c.shape[:2]
    if index.ndim != 2 or index.shape[0] != B or int(index.min()) < 0 or int(index.max()) >= V * height * width:
        raise ValueError(f"index of shape {tuple(index.shape)} must be (B={B}, n) pixel numbers in [0, V*H*W)")
    origins, dirs, scale = camera_pixel_rays(c, height, width)
    index = index.to(origins.device)
    take = lambda x: x.gather(1, index[..., None].expand(-1, -1, 3))  # noqa: E731
    out = render_rays(planes_B3FHW, field, take(origins), take(dirs), num_samples, scale.gather(1, index),
                      stratified, generator, chunk, importance_samples)
    pix = index % (height * width)
    return {**out, "index": index, "view": index // (height * width), "row": pix // width, "col": pix % width}


def render_views(planes_B3FHW, field: TriplaneField, c, height: int, width: int, num_samples: int,
                 ray_subset: int | None = None, generator: torch.Generator | None = None,
                 stratified: bool = False, chunk: int | None = None, index=None, importance_samples: int = 0) -> dict:
    """``render_images`` (neither ``ray_subset`` nor ``index``), or ``render_pixels`` at ``index``
    or at ``ray_subset`` pixels drawn by ``random_pixel_index`` with ``generator``: one entry
    point for ``vqvae.SAR3DVQVAE.render``, which takes the same options."""
    if ray_subset is not None and index is not None:
        raise ValueError("give ray_subset or index, not both")
    if ray_subset is None and index is None:
        return render_images(planes_B3FHW, field, c, height, width, num_samples, stratified, generator, chunk,
                             importance_samples)
    _check_cameras(planes_B3FHW, c)
    if ray_subset is not None:
        index = random_pixel_index(c.shape[0], c.shape[1], height, width, ray_subset, generator)
    return render_pixels(planes_B3FHW, field, c, height, width, index, num_samples, stratified, generator, chunk,
                         importance_samples)


def patch_index(batch: int, views: int, height: int, width: int, patch: int, count: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixel numbers ``(B, count * patch^2)`` of ``count`` random square patches per object.

    Each patch lies in one view drawn uniformly, at a uniform top-left corner; its pixels are
    listed row by row, so ``x.reshape(B, count, patch, patch, ...)`` gives the patch images
    (the input of the PatchGAN and LPIPS terms of Eq. 8).
    """
    if not 1 <= patch <= min(height, width) or count < 1:
        raise ValueError(f"patch={patch} must be in 1..{min(height, width)} and count={count} positive")
    v = torch.randint(0, views, (batch, count), generator=generator)
    r0 = torch.randint(0, height - patch + 1, (batch, count), generator=generator)
    c0 = torch.randint(0, width - patch + 1, (batch, count), generator=generator)
    ar = torch.arange(patch)
    rows = r0[..., None, None] + ar[:, None]  # (B, count, p, 1)
    cols = c0[..., None, None] + ar[None, :]  # (B, count, 1, p)
    idx = v[..., None, None] * height * width + rows * width + cols
    return idx.reshape(batch, count * patch * patch)
