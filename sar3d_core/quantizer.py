"""Multi-scale residual triplane quantizer (paper Sec. 4.1, Supp. B, Algorithms 1 and 2).

The latent triplane ``f`` of shape ``(B, 3, C, h, w)`` becomes K token maps
``r_1..r_K``, ``r_k`` of shape ``(B, 3, h_k, w_k)`` (DESIGN.md §4), coarse to fine.
Following VAR (Tian et al. 2024, ``models/quant.py``), with the paper's triplane twist:

* every plane is quantized on its own: the three planes are folded into the batch, so
  plane i only ever sees its own residual (Supp. B: "each plane ... is quantized
  independently based on the corresponding plane's previous scales");
* all scales and planes share ONE codebook ``Z`` of V entries of dimension C; the
  nearest entry is chosen by cosine similarity (l2-normalised queries and entries). With
  ``l2_codes`` (SAR3D Sec. 4.1, "applying l2-normalization to codebook vectors"; the
  official code looks up ``F.normalize(embedding.weight)``) the looked-up vector is the
  l2-normalised entry; without it, the raw entry, as in VAR's ``using_znorm=True``. Dead-code
  resets write raw vectors, which the lookup normalises the same way;
* after each scale the codes are interpolated back to ``h x w`` (no network, Supp. B)
  and passed through a 3x3 conv ``phi_k`` with a residual mix; ``phi_shared`` convs are
  shared by neighbouring scales (VAR's ``PhiPartiallyShared``). The convs are shared by
  the three planes (the official code folds planes into the batch too).

Interpolation: residual down with ``area`` (an average over the cells a token covers),
codes up with ``bicubic``; the last scale (``h_K x w_K = h x w``) is not interpolated.

Dead codes: `usage_counts` (EMA of how often each entry is picked) and
`steps_since_used` are updated on every training forward pass;
`reset_dead_codes(latents)` re-initialises every entry unused for ``dead_after`` steps
with a random residual vector (a query of some scale) of the given latents, so it
starts next to data that currently exists and will be picked again.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import NUM_PLANES, SAR3DConfig, _as_hw


def tokens_to_sequence(tokens: list[torch.Tensor]) -> torch.Tensor:
    """List over scales of ``(B, 3, h_k, w_k)`` -> ``idx_BL``: scale-major, then plane, then row-major."""
    if len(tokens) == 0:
        raise ValueError("tokens is empty: give one LongTensor (B, 3, h_k, w_k) per scale")
    B = tokens[0].shape[0]
    for k, t in enumerate(tokens):
        if t.dim() != 4 or t.shape[0] != B or t.shape[1] != NUM_PLANES:
            raise ValueError(f"tokens[{k}] has shape {tuple(t.shape)}, expected (B={B}, 3, h_k, w_k)")
    return torch.cat([t.reshape(B, -1) for t in tokens], dim=1)


def sequence_to_tokens(idx_BL: torch.Tensor, scales) -> list[torch.Tensor]:
    """Inverse of `tokens_to_sequence` for a schedule ``scales`` (ints or (h, w) pairs)."""
    hws = [_as_hw(s) for s in scales]
    expected = sum(NUM_PLANES * h * w for h, w in hws)
    if idx_BL.dim() != 2 or idx_BL.shape[1] != expected:
        raise ValueError(
            f"sequence has shape {tuple(idx_BL.shape)}, expected (B, {expected}) for scales {list(scales)}")
    out, start = [], 0
    for h, w in hws:
        n = NUM_PLANES * h * w
        out.append(idx_BL[:, start:start + n].reshape(-1, NUM_PLANES, h, w))
        start += n
    return out


class Phi(nn.Conv2d):
    """``phi(z) = (1 - m) z + m conv3x3(z)``: a conv that starts close to the identity."""

    def __init__(self, dim: int, mix: float):
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.mix = float(mix)

    def forward(self, z_NChw: torch.Tensor) -> torch.Tensor:
        if self.mix == 0.0:
            return z_NChw
        return (1.0 - self.mix) * z_NChw + self.mix * super().forward(z_NChw)


@dataclass
class QuantizerOutput:
    f_hat: torch.Tensor  # (B, 3, C, h, w), straight-through: forward value f_hat, gradient to f
    tokens: list  # K LongTensors (B, 3, h_k, w_k)
    vq_loss: torch.Tensor  # scalar: codebook + beta * commitment, averaged over scales
    f_hat_partial: list  # K tensors (B, 3, C, h, w): f_hat accumulated after scales 1..k
    residual_norms: torch.Tensor  # (K,): ||f - f_hat_k|| / ||f|| after scale k (no grad)
    usage: torch.Tensor  # (V,) long: how often each code was picked in this call


class MultiScaleTriplaneQuantizer(nn.Module):
    """Algorithm 1 (`forward`) and Algorithm 2 (`tokens_to_fhat`) over one shared codebook."""

    def __init__(self, codebook_size: int, dim: int, scales, latent_size: int, beta: float = 0.25,
                 phi_shared: int = 4, phi_mix: float = 0.5, dead_after: int = 100,
                 usage_decay: float = 0.99, l2_codes: bool = False):
        super().__init__()
        self.scales = tuple(_as_hw(s) for s in scales)
        self.latent_hw = _as_hw(latent_size)
        if len(self.scales) == 0:
            raise ValueError("scales is empty: give at least one scale")
        if self.scales[-1] != self.latent_hw:
            raise ValueError(f"the last scale {self.scales[-1]} must equal the latent size {self.latent_hw}")
        if codebook_size < 1 or dim < 1 or phi_shared < 1:
            raise ValueError("codebook_size, dim and phi_shared must be positive")
        self.codebook_size, self.dim, self.beta = int(codebook_size), int(dim), float(beta)
        self.dead_after, self.usage_decay = int(dead_after), float(usage_decay)
        self.l2_codes = bool(l2_codes)
        # ONE table for every scale and plane; entries of norm about 1
        self.codebook = nn.Embedding(codebook_size, dim)
        nn.init.normal_(self.codebook.weight, std=dim ** -0.5)
        self.phis = nn.ModuleList(Phi(dim, phi_mix) for _ in range(phi_shared))
        # VAR's PhiPartiallyShared: n ticks evenly over [t, 1 - t] of [0, 1], with t = 1/(3n) for n = 4
        # (its default) and 1/(2n) otherwise; scale k sits at k/(K-1) and takes the nearest tick
        tick = 1 / (3 * phi_shared) if phi_shared == 4 else 1 / (2 * phi_shared)
        self.register_buffer("phi_ticks", torch.linspace(tick, 1 - tick, phi_shared))
        # a schedule with fewer scales than convs (the single-scale baseline) leaves some unused:
        # frozen, so that DDP does not wait for their gradients
        used = {self.phi_index(k) for k in range(len(self.scales))}
        for j, phi in enumerate(self.phis):
            phi.requires_grad_(j in used)
        self.register_buffer("usage_counts", torch.zeros(codebook_size))
        self.register_buffer("steps_since_used", torch.zeros(codebook_size, dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: SAR3DConfig, **kwargs) -> "MultiScaleTriplaneQuantizer":
        """``cfg.extra["quantizer"]`` (a dict, e.g. ``{"l2_codes": true}``) sets the keyword options."""
        options = {**cfg.extra.get("quantizer", {}), **kwargs}
        unknown = set(options) - {"phi_shared", "phi_mix", "dead_after", "usage_decay", "l2_codes"}
        if unknown:
            raise ValueError(f"cfg.extra['quantizer'] has unknown keys {sorted(unknown)}: choose from "
                             f"phi_shared, phi_mix, dead_after, usage_decay, l2_codes")
        return cls(cfg.codebook_size, cfg.latent_channels, cfg.scales, cfg.latent_size, cfg.beta, **options)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors of ids ``idx (...)`` -> ``(..., C)``: l2-normalised entries with ``l2_codes``, else raw."""
        z = self.codebook(idx)
        return F.normalize(z, dim=-1) if self.l2_codes else z

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    def phi_index(self, k: int) -> int:
        """Which shared conv serves scale k (0-based): the one whose tick is nearest k / (K - 1)."""
        at = k / (self.num_scales - 1) if self.num_scales > 1 else 0.0
        return int(torch.argmin((self.phi_ticks - at).abs()).item())

    # --- the steps of one scale, shared by Algorithms 1 and 2 (public: tutorial 02 runs them by hand) ---
    def downsample(self, rest_NChw: torch.Tensor, k: int) -> torch.Tensor:
        """``interpolate(f, h_k, w_k)`` with ``area`` (a mean over the cells a token covers); none at k = K."""
        if k == self.num_scales - 1:
            return rest_NChw
        return F.interpolate(rest_NChw, size=self.scales[k], mode="area")

    def nearest_code(self, rest_NChw: torch.Tensor) -> torch.Tensor:
        """Cosine nearest neighbour: ``argmax_v <r / |r|, Z_v / |Z_v|>`` per cell -> (N, h_k, w_k)."""
        N, C, hk, wk = rest_NChw.shape
        query_MC = F.normalize(rest_NChw.permute(0, 2, 3, 1).reshape(-1, C), dim=1)
        codes_VC = F.normalize(self.codebook.weight.detach(), dim=1)
        return (query_MC @ codes_VC.T).argmax(dim=1).view(N, hk, wk)

    def scale_contribution(self, k: int, idx_Nhw: torch.Tensor) -> torch.Tensor:
        """``phi_k(interpolate(lookup(Z, r_k), h, w))`` -> (N, C, h, w)  (Alg. 1 l. 6-8, Alg. 2 l. 5-7)."""
        z_NChw = self.lookup(idx_Nhw).permute(0, 3, 1, 2)  # (N, hk, wk, C) -> (N, C, hk, wk)
        if k != self.num_scales - 1:
            z_NChw = F.interpolate(z_NChw, size=self.latent_hw, mode="bicubic", align_corners=False)
        return self.phis[self.phi_index(k)](z_NChw)

    # --- checks ---------------------------------------------------------------------
    def _check_latent(self, f_B3Chw: torch.Tensor) -> None:
        expected = (NUM_PLANES, self.dim, *self.latent_hw)
        if f_B3Chw.dim() != 5 or tuple(f_B3Chw.shape[1:]) != expected:
            raise ValueError(f"latent triplane has shape {tuple(f_B3Chw.shape)}, "
                             f"expected (B, {', '.join(map(str, expected))})")

    def _check_tokens(self, tokens, num_scales: int) -> None:
        if not isinstance(tokens, (list, tuple)) or len(tokens) not in (num_scales, self.num_scales):
            n = len(tokens) if isinstance(tokens, (list, tuple)) else type(tokens).__name__
            raise ValueError(f"got {n} token maps, expected {self.num_scales} (or num_scales={num_scales}): "
                             f"are they from another schedule? this quantizer uses {list(self.scales)}")
        B = tokens[0].shape[0]
        for k in range(num_scales):
            t, (hk, wk) = tokens[k], self.scales[k]
            if tuple(t.shape) != (B, NUM_PLANES, hk, wk):
                raise ValueError(f"tokens[{k}] has shape {tuple(t.shape)}, expected ({B}, 3, {hk}, {wk}) "
                                 f"for this quantizer's schedule {list(self.scales)}")
            if t.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"tokens[{k}] has dtype {t.dtype}, expected a LongTensor of code ids")
            if t.numel() and (t.min() < 0 or t.max() >= self.codebook_size):
                raise ValueError(f"tokens[{k}] holds ids in [{int(t.min())}, {int(t.max())}], "
                                 f"outside the codebook [0, {self.codebook_size - 1}]")

    # --- Algorithm 1: encode ------------------------------------------------------------
    def forward(self, f_B3Chw: torch.Tensor) -> QuantizerOutput:
        self._check_latent(f_B3Chw)
        B, P, C, h, w = f_B3Chw.shape
        f_NChw = f_B3Chw.reshape(B * P, C, h, w)  # planes folded into the batch: quantized independently
        f_nograd = f_NChw.detach()
        rest_NChw = f_nograd.clone()  # the residual r = f (Alg. 1 l. 1)
        f_hat_NChw = torch.zeros_like(f_nograd)
        tokens, partial, norms, vq_loss = [], [], [], f_NChw.new_zeros(())
        f_norm = f_nograd.norm().clamp_min(1e-12)
        for k, (hk, wk) in enumerate(self.scales):
            # r_k = Q(interpolate(f, h_k, w_k))   (Alg. 1 l. 4)
            query = self.downsample(rest_NChw, k)
            idx_Nhw = self.nearest_code(query)
            tokens.append(idx_Nhw.view(B, P, hk, wk))
            # \hat f += phi_k(z_k),  f <- f - phi_k(z_k)   (Alg. 1 l. 6-8)
            h_NChw = self.scale_contribution(k, idx_Nhw)
            f_hat_NChw = f_hat_NChw + h_NChw
            rest_NChw = rest_NChw - h_NChw.detach()
            partial.append(f_hat_NChw.view(B, P, C, h, w))
            norms.append((rest_NChw.norm() / f_norm).detach())
            # L_VQ = ||sg[f] - \hat f||^2 + beta ||f - sg[\hat f]||^2  (codebook + commitment, VAR)
            codebook_loss = F.mse_loss(f_hat_NChw, f_nograd)
            commitment_loss = F.mse_loss(f_hat_NChw.detach(), f_NChw)
            vq_loss = vq_loss + codebook_loss + self.beta * commitment_loss
        vq_loss = vq_loss / self.num_scales  # averaged over scales, as VAR does
        # straight-through estimator: forward value \hat f, gradient d/df = identity
        f_hat_st = f_NChw + (f_hat_NChw - f_NChw).detach()
        usage = torch.bincount(torch.cat([t.reshape(-1) for t in tokens]), minlength=self.codebook_size)
        if self.training:
            self._track_usage(usage)
        return QuantizerOutput(f_hat=f_hat_st.view(B, P, C, h, w), tokens=tokens, vq_loss=vq_loss,
                               f_hat_partial=partial, residual_norms=torch.stack(norms), usage=usage)

    # --- Algorithm 2: decode -------------------------------------------------------------
    def fhat_prefixes(self, tokens: list[torch.Tensor], num_scales: int | None = None) -> list[torch.Tensor]:
        """Algorithm 2 step by step: ``[f_hat_1, ..., f_hat_n]``, ``f_hat_k = sum_{j <= k} phi_j(interpolate(
        lookup(Z, r_j), h, w))``, each ``(B, 3, C, h, w)``, for ``n = num_scales`` (default all K).

        The one place the sum is written: decoding (``tokens_to_fhat``), the transformer's
        teacher-forcing input and the per-scale inspector all read these prefixes.
        """
        num_scales = self.num_scales if num_scales is None else int(num_scales)
        if not 1 <= num_scales <= self.num_scales:
            raise ValueError(f"num_scales={num_scales} must be between 1 and {self.num_scales}")
        self._check_tokens(tokens, num_scales)
        B = tokens[0].shape[0]
        f_hat_NChw = self.codebook.weight.new_zeros(B * NUM_PLANES, self.dim, *self.latent_hw)
        out = []
        for k in range(num_scales):
            f_hat_NChw = self.accumulate(f_hat_NChw, k, tokens[k])
            out.append(f_hat_NChw.view(B, NUM_PLANES, self.dim, *self.latent_hw))
        return out

    def accumulate(self, f_hat_NChw: torch.Tensor, k: int, tokens_k: torch.Tensor) -> torch.Tensor:
        """One step of Algorithm 2: ``f_hat + phi_k(interpolate(lookup(Z, r_k), h, w))``, with ``f_hat``
        ``(B * 3, C, h, w)`` (planes folded into the batch) and ``r_k`` any shape holding ``B * 3 h_k w_k`` ids."""
        return f_hat_NChw + self.scale_contribution(k, tokens_k.long().reshape(-1, *self.scales[k]))

    def tokens_to_fhat(self, tokens: list[torch.Tensor], num_scales: int | None = None) -> torch.Tensor:
        """``\\hat f = sum_{k <= num_scales} phi_k(interpolate(lookup(Z, r_k), h, w))`` -> (B, 3, C, h, w).

        ``num_scales`` (default all K) decodes a prefix, for per-scale inspection and the
        truncated-scale captioner; ``tokens`` may then hold just those first scales.
        """
        return self.fhat_prefixes(tokens, num_scales)[-1]

    def sequence_to_fhat(self, idx_BL: torch.Tensor) -> torch.Tensor:
        return self.tokens_to_fhat(sequence_to_tokens(idx_BL, self.scales))

    # --- codebook usage and dead codes ---------------------------------------------------
    @torch.no_grad()
    def _track_usage(self, usage_V: torch.Tensor) -> None:
        self.usage_counts.mul_(self.usage_decay).add_(usage_V.float(), alpha=1 - self.usage_decay)
        self.steps_since_used.add_(1)
        self.steps_since_used[usage_V > 0] = 0

    def dead_codes(self) -> torch.Tensor:
        """Ids of entries not picked in the last ``dead_after`` training steps."""
        return torch.nonzero(self.steps_since_used >= self.dead_after).flatten()

    @torch.no_grad()
    def reset_dead_codes(self, latents_B3Chw: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-initialise dead entries from random residual vectors of ``latents``; returns how many.

        The candidates are the queries Algorithm 1 quantizes (the residual interpolated to
        each scale) for the current codebook, so a reset entry lands on a residual the
        encoder produces now and is picked at the next step.
        """
        dead = self.dead_codes()
        if dead.numel() == 0:
            return 0
        self._check_latent(latents_B3Chw)
        B, P, C, h, w = latents_B3Chw.shape
        rest_NChw = latents_B3Chw.reshape(B * P, C, h, w).float().clone()
        queries = []
        for k in range(self.num_scales):
            query = self.downsample(rest_NChw, k)
            queries.append(query.permute(0, 2, 3, 1).reshape(-1, C))
            rest_NChw = rest_NChw - self.scale_contribution(k, self.nearest_code(query))
        pool_MC = torch.cat(queries)
        pick = torch.randint(len(pool_MC), (dead.numel(),), generator=generator).to(pool_MC.device)
        self.codebook.weight.data[dead] = pool_MC[pick].to(self.codebook.weight.dtype)
        self.steps_since_used[dead] = 0
        return int(dead.numel())
