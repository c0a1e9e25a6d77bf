"""Sampling the AR transformer: KV cache, classifier-free guidance, top-k / top-p (Sec. 4.2, Fig. 3a).

**Next-scale** (`sample_next_scale`): K forward passes, one per scale. Pass k feeds all
``3 h_k w_k`` positions of scale k at once; they attend to each other and to the keys and
values cached from scales ``1..k-1`` (`transformer.KVCache`), so the whole sequence is never
recomputed. Pass 1 feeds the start tokens (the pooled condition); after sampling ``r_k`` the
next input is ``f_hat_k`` area-downsampled to scale k+1 (`transformer.fhat_to_scale_input`,
VAR's ``get_next_autoregressive_input``).

**Next-token baseline** (`sample_next_token`): a plain causal GPT of the same code
(``SAR3DTransformer(..., next_token=True)``) samples the ``3 h w`` tokens of the latent one at
a time, raster order per plane, with the same cache, guidance and filtering: ``L`` passes of
one position instead of ``K`` passes. This is what the next-scale vs next-token timing compares.

**Classifier-free guidance** (Sec. 4.2): the batch is doubled, the second half fed the learned
null condition, and ``r_g = r_u + s (r_c - r_u)``. The official code ramps the guidance over the
scales: VAR ``autoregressive_infer_cfg`` and SAR3D ``autoregressive_infer_cfg_3D_VAR_{image,text}_l2norm``
(cyw-3d/SAR3D ``models/var.py``) compute ``ratio = si / (K - 1)``, ``t = cfg * ratio`` and
``logits = (1 + t) c - t u``, i.e. ``s_k = 1 + cfg * k / (K - 1)`` for k = 0..K-1: no guidance
at the first scale, ``1 + cfg`` (5 for the paper's cfg = 4) at the last. ``"linear"`` is that
ramp (over the L tokens for the next-token sampler); ``"constant"`` uses ``s = cfg`` everywhere.
When every ``s`` is 1 the unconditional half is skipped.

**Filtering** (official ``sample_with_top_k_top_p_``, called with top_k = 10, top_p = 0.5 in
``test.py``): top-k keeps the k largest logits (ties kept); top-p then keeps, of what is left,
the most likely tokens until their probability reaches ``top_p`` (the most likely one always).
``top_k = 0`` and ``top_p = 1`` switch them off.
"""
from __future__ import annotations

import math
import time

import torch

from .config import NUM_PLANES, SAR3DConfig
from .quantizer import sequence_to_tokens
from .transformer import KVCache, SAR3DTransformer, fhat_to_scale_input

CFG_SCHEDULES = ("linear", "constant")


def check_sampling_args(cfg: float, top_k: int, top_p: float, cfg_schedule: str = "linear") -> None:
    if not (cfg >= 0 and math.isfinite(cfg)):  # NaN fails every comparison: test for what is right
        raise ValueError(f"guidance scale cfg={cfg} must be >= 0 and finite")
    if not (top_k >= 0 and float(top_k).is_integer()):
        raise ValueError(f"top_k={top_k} must be >= 0 and whole (0 switches top-k off)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (1 switches top-p off)")
    if cfg_schedule not in CFG_SCHEDULES:
        raise ValueError(f"cfg_schedule {cfg_schedule!r} is unknown: choose one of {CFG_SCHEDULES}")


def guidance_scales(num_steps: int, cfg: float, schedule: str = "linear") -> list[float]:
    """The ``s`` of each step: ``1 + cfg * k / (num_steps - 1)`` (official ramp) or ``cfg``."""
    check_sampling_args(cfg, 0, 1.0, schedule)
    if schedule == "constant":
        return [float(cfg)] * num_steps
    return [1.0 + cfg * k / max(num_steps - 1, 1) for k in range(num_steps)]


def classifier_free_guidance(logits_cond: torch.Tensor, logits_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    # r_g = r_u + s (r_c - r_u)   (Sec. 4.2)
    return logits_uncond + scale * (logits_cond - logits_uncond)


def filter_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """A copy of the logits with the filtered-out entries set to ``-inf``."""
    check_sampling_args(0.0, top_k, top_p)
    logits_BlV = logits_BlV.clone()
    if 0 < top_k < logits_BlV.shape[-1]:
        kth = logits_BlV.topk(top_k, dim=-1).values[..., -1:]
        logits_BlV.masked_fill_(logits_BlV < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits_BlV.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token once the more likely ones already hold top_p of the mass
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        logits_BlV.masked_fill_(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits_BlV


def sample_from_logits(logits_BlV: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per position from ``softmax(filter_top_k_top_p(logits))`` -> ``(B, l)``.

    With ``0 < top_k < V`` only the k best entries can be drawn, so the top-p cut and the draw
    run on those k (already sorted by ``topk``) instead of sorting and sampling over all V
    codes: the same distribution, a fraction of the work (profiled on the tiny text model,
    the full-V filter, sort and multinomial took about a fifth of a sample's CPU time).
    """
    B, l, V = logits_BlV.shape
    logits_BlV = logits_BlV.float()
    if not 0 < top_k < V:
        probs = filter_top_k_top_p(logits_BlV, top_k, top_p).softmax(dim=-1)
        return torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, l)
    check_sampling_args(0.0, top_k, top_p)
    vals, idx = logits_BlV.reshape(-1, V).topk(top_k, dim=-1)  # (N, k), descending
    probs = vals.softmax(dim=-1)
    if top_p < 1:
        drop = (probs.cumsum(dim=-1) - probs) >= top_p  # the rule of filter_top_k_top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
    pick = torch.multinomial(probs, 1, generator=generator)  # (N, 1) among the k
    return idx.gather(1, pick).view(B, l)


def sampling_kwargs(cfg: SAR3DConfig) -> dict:
    """The config's guidance and filtering (paper: cfg 4 ramped, top-k 10, top-p 0.5)."""
    return {"cfg": cfg.cfg_scale, "top_k": cfg.top_k, "top_p": cfg.top_p}


def _autoregress(model: SAR3DTransformer, cond_pooled, cond_tokens, cond_mask, scales_s: list[float],
                 next_input, top_k: int, top_p: float, seed: int, return_logits: bool, pass_seconds=None,
                 forced=()):
    """The loop both samplers share: ``len(scales_s)`` cached passes; ``next_input(step, idx_Bl)``
    gives the inputs ``(B, l, C)`` of the next pass. Returns ``(idx_BL, logits_BLV or None)``.
    A list ``pass_seconds`` receives the wall time of each pass (blocks, guidance, draw and the
    next pass's input), for ``sar3d bench sampling``. ``forced``: the ids ``(B, l)`` of the first
    passes, kept instead of drawn (the passes still run, to fill the cache the later ones read)."""
    model._check_condition(cond_pooled, cond_tokens, cond_mask)
    B, T = cond_tokens.shape[:2]
    guided = any(s != 1.0 for s in scales_s)
    if guided:  # second half of the batch: the unconditional branch
        null_pooled, null_tokens = model.null_condition(B, T)
        cond_pooled = torch.cat((cond_pooled, null_pooled.to(cond_pooled.dtype)))
        cond_tokens = torch.cat((cond_tokens, null_tokens.to(cond_tokens.dtype)))
        cond_mask = None if cond_mask is None else torch.cat((cond_mask.bool(), torch.ones_like(cond_mask, dtype=torch.bool)))
    generator = torch.Generator(device=cond_pooled.device).manual_seed(int(seed))
    cond_BW = model.condition_vector(cond_pooled)
    cache = KVCache()
    x_BlC = cond_pooled.new_zeros(B, 0, model.latent_channels)  # the first pass: start tokens only
    idx_parts, logit_parts = [], []
    for step, s in enumerate(scales_s):
        t0 = time.perf_counter()
        h_BlW = model.embed_inputs(torch.cat((x_BlC, x_BlC)) if guided else x_BlC, cond_BW, cache.length)
        logits_BlV = model.run_blocks(h_BlW, cond_BW, cond_tokens, cond_mask, cache).float()
        if guided:
            logits_BlV = classifier_free_guidance(logits_BlV[:B], logits_BlV[B:], s)
        idx_Bl = forced[step].to(logits_BlV.device) if step < len(forced) else \
            sample_from_logits(logits_BlV, top_k, top_p, generator)
        idx_parts.append(idx_Bl)
        if return_logits:
            logit_parts.append(logits_BlV)
        if step + 1 < len(scales_s):
            x_BlC = next_input(step, idx_Bl)
        if pass_seconds is not None:
            pass_seconds.append(time.perf_counter() - t0)
    return torch.cat(idx_parts, dim=1), (torch.cat(logit_parts, dim=1) if return_logits else None)


def _prepare(model: SAR3DTransformer, quantizer, next_token: bool, cfg, cfg_schedule, top_k, top_p) -> None:
    check_sampling_args(cfg, top_k, top_p, cfg_schedule)
    if model.next_token != next_token:
        raise ValueError(f"this is a {'next-token' if model.next_token else 'next-scale'} transformer: use "
                         f"{'sample_next_token' if model.next_token else 'sample_next_scale'}")
    model.check_quantizer(quantizer)


@torch.no_grad()
def sample_next_scale(model: SAR3DTransformer, quantizer, cond_pooled: torch.Tensor, cond_tokens: torch.Tensor,
                      cond_mask: torch.Tensor | None = None, *, cfg: float = 4.0, cfg_schedule: str = "linear",
                      top_k: int = 10, top_p: float = 0.5, seed: int = 0, return_logits: bool = False,
                      pass_seconds: list | None = None, prefix: list | None = None):
    """K passes, one per scale -> token maps ``[(B, 3, h_k, w_k)]`` for ``SAR3DVQVAE.decode_tokens``
    (and the guided logits ``(B, L, V)`` the tokens were drawn from, with ``return_logits``).

    ``prefix``: the token maps of the first ``n < K`` scales, kept as they are; scales
    ``n+1..K`` are drawn conditioned on them (what a next-scale model can do and a raster
    next-token model cannot: redraw the detail of an object while keeping its coarse layout).
    """
    _prepare(model, quantizer, False, cfg, cfg_schedule, top_k, top_p)
    B, (h, w) = cond_pooled.shape[0], quantizer.latent_hw
    prefix = list(prefix or [])
    if prefix:
        if len(prefix) >= len(model.scales):
            raise ValueError(f"a prefix of {len(prefix)} scales leaves nothing to draw: keep at most "
                             f"{len(model.scales) - 1} of the {len(model.scales)} scales")
        for k, t in enumerate(prefix):
            if tuple(t.shape) != (B, NUM_PLANES, *model.scales[k]):
                raise ValueError(f"prefix[{k}] has shape {tuple(t.shape)}, expected ({B}, 3, "
                                 f"{model.scales[k][0]}, {model.scales[k][1]}) for this generator's schedule")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= model.codebook_size):
                raise ValueError(f"prefix[{k}] holds ids outside the codebook [0, {model.codebook_size - 1}]")
    f_hat_NChw = cond_pooled.new_zeros(B * NUM_PLANES, model.latent_channels, h, w)

    def next_input(k: int, idx_Bl: torch.Tensor) -> torch.Tensor:
        # f_hat += phi_k(up(z_k)), then the input of scale k+1 (VAR get_next_autoregressive_input)
        nonlocal f_hat_NChw
        f_hat_NChw = quantizer.accumulate(f_hat_NChw, k, idx_Bl)
        return fhat_to_scale_input(f_hat_NChw.view(B, NUM_PLANES, -1, h, w), model.scales[k + 1])

    scales_s = guidance_scales(len(model.scales), cfg, cfg_schedule)
    idx_BL, logits = _autoregress(model, cond_pooled, cond_tokens, cond_mask, scales_s, next_input,
                                  top_k, top_p, seed, return_logits, pass_seconds,
                                  forced=[t.reshape(B, -1).long() for t in prefix])
    tokens = sequence_to_tokens(idx_BL, model.scales)
    return (tokens, logits) if return_logits else tokens


@torch.no_grad()
def sample_next_token(model: SAR3DTransformer, quantizer, cond_pooled: torch.Tensor, cond_tokens: torch.Tensor,
                      cond_mask: torch.Tensor | None = None, *, cfg: float = 4.0, cfg_schedule: str = "linear",
                      top_k: int = 10, top_p: float = 0.5, seed: int = 0, return_logits: bool = False,
                      pass_seconds: list | None = None):
    """The next-token baseline: ``L = 3 h w`` passes of one token -> ``[(B, 3, h, w)]`` (one
    scale at the latent resolution, raster order per plane)."""
    _prepare(model, quantizer, True, cfg, cfg_schedule, top_k, top_p)
    scales_s = guidance_scales(model.seq_len, cfg, cfg_schedule)
    idx_BL, logits = _autoregress(model, cond_pooled, cond_tokens, cond_mask, scales_s,
                                  lambda i, idx_B1: quantizer.lookup(idx_B1), top_k, top_p, seed, return_logits,
                                  pass_seconds)
    tokens = sequence_to_tokens(idx_BL, model.scales)
    return (tokens, logits) if return_logits else tokens


@torch.no_grad()
def draw_teacher_forced(model: SAR3DTransformer, quantizer, tokens: list, cond_pooled: torch.Tensor,
                        cond_tokens: torch.Tensor, cond_mask: torch.Tensor | None = None, *, cfg: float = 4.0,
                        cfg_schedule: str = "linear", top_k: int = 10, top_p: float = 0.5, seed: int = 0) -> list:
    """Token maps drawn as ``sample_next_scale`` draws them, but each scale given the *true* scales
    before it (``tokens``, teacher forcing): one guided pass over the whole sequence, every position
    drawn at its scale's guidance and the same filtering. Our addition: the errors the sampler
    makes at each scale, on objects whose views are known, for training a decoder to read them
    (``vqvae_train.TokenDraws``). Returns ``[(B, 3, h_k, w_k)]``."""
    _prepare(model, quantizer, False, cfg, cfg_schedule, top_k, top_p)
    x = model.teacher_input(quantizer, tokens)
    scales_s = guidance_scales(len(model.scales), cfg, cfg_schedule)
    logits = model(x, cond_pooled, cond_tokens, cond_mask).float()
    if any(s != 1.0 for s in scales_s):
        null_pooled, null_tokens = model.null_condition(*cond_tokens.shape[:2])
        uncond = model(x, null_pooled.to(cond_pooled.dtype), null_tokens.to(cond_tokens.dtype)).float()
        s_L = torch.cat([torch.full((b - a,), s) for (a, b), s in zip(zip(model.begins[:-1], model.begins[1:]), scales_s)])
        logits = classifier_free_guidance(logits, uncond, s_L.to(logits)[None, :, None])
    generator = torch.Generator(device=logits.device).manual_seed(int(seed))
    return sequence_to_tokens(sample_from_logits(logits, top_k, top_p, generator), model.scales)
