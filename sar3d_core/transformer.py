"""Next-scale autoregressive transformer (paper Sec. 4.2, Supp. C, Fig. 3a and Fig. S2).

Eq. 1, per triplane: ``p(r_1, ..., r_K) = prod_k p(r_k | r_1, ..., r_{k-1}, c)``. All ``3 h_k w_k``
tokens of scale k are predicted at once from the scales before it (VAR, Tian et al. 2024,
``models/var.py``), with the SAR3D additions of the official code (cyw-3d/SAR3D ``models/var.py``,
``models/basic_var.py``):

* **Sequence** (DESIGN.md §4): scale-major, then plane, then row-major; ``L = sum_k 3 h_k w_k``
  (2040 for the paper). Each position gets a learned position embedding, a scale-level
  embedding and a plane embedding ("different latent plane r_k^i is differentiated with the
  corresponding learnable positional embeddings", Sec. 4.2).
* **Start tokens**: the pooled condition (DINOv2 / CLIP_T), projected to the width, is the
  start token of the sequence (Sec. 4.2): it fills the first scale's ``3`` positions (one per
  plane, told apart by their embeddings), like VAR's class-embedding SOS.
* **Teacher forcing** (VAR ``idxBl_to_var_input``): the input for scale k+1 is
  ``f_hat_k = sum_{j<=k} phi_j(up(z_j))``, area-downsampled to ``h_{k+1} x w_{k+1}`` per plane and
  projected ``C -> width`` by a linear layer (``fhat_to_scale_input``, ``teacher_input``).
* **Block-causal mask**: a token sees every token of its own and earlier scales, none of later.
* **Blocks** (Fig. S2): AdaLN self-attention and AdaLN FFN, whose scale, shift and gate come
  from the pooled condition by SiLU + Linear (VAR ``AdaLNSelfAttn``, DiT's adaLN), plus
  cross-attention to the condition tokens. Supp. C rearranges the order per condition: the
  image model uses a pre-cross-attention block (cross-attn, self-attn, FFN; Sec. 4.2, "[25]"),
  the text model self-attn, cross-attn, FFN (official ``AdaLNCrossSelfAttn_Image_new`` and
  ``AdaLNCrossSelfAttn_text``): ``TransformerSettings.cross_attn_first``. Attention uses VAR's
  ``attn_l2_norm`` (cosine attention with a learned per-head temperature), on in the official build.
* **CFG training** (Sec. 4.2): 10% of the conditions are replaced by a *learned* null
  condition, pooled vector and token features together (the official code loads the encoder
  outputs of an empty prompt / image and draws the two replacements independently).
* **Next-token baseline** (``next_token=True``): the same code with one scale at full latent
  resolution, a causal mask, one start position, and the previous token's code as input.

Not reproduced: VAR's drop-path, its redundant ``pos_start`` and the fused kernels. The
cross-attention pre-norm is a LayerNorm (official: RMSNorm, which needs torch >= 2.4).
Paper sizes (Sec. 5, official ``build_vae_var_3D_VAR``): depth 24 (image) / 16 (text), 16 heads,
width ``64 x depth``; condition dims 1024 (DINOv2 ViT-L) / 768 (CLIP ViT-L text).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import NUM_PLANES, SAR3DConfig, _as_hw
from .quantizer import tokens_to_sequence

CONDITIONS = ("image", "text")


@dataclass
class TransformerSettings:
    """Sizes of the AR transformer; the defaults are the ``tiny`` image model."""

    depth: int = 4
    width: int = 192
    num_heads: int = 4
    mlp_ratio: float = 4.0
    cross_attn_first: bool = True  # image: pre-cross-attention block; text: False (Supp. C)
    cond_dropout: float = 0.1  # Sec. 4.2: 10% of conditions replaced by the null condition
    attn_l2_norm: bool = True

    @classmethod
    def from_config(cls, cfg: SAR3DConfig, condition: str = "image") -> "TransformerSettings":
        """Depth ``cfg.ar_depth_<condition>``; width ``64 x depth`` and 16 heads for ``paper``
        (its ``cfg.ar_width`` is the image model's), ``cfg.ar_width`` otherwise; then
        ``cfg.extra["transformer"]`` (a dict) overrides any field."""
        if condition not in CONDITIONS:
            raise ValueError(f"condition {condition!r} is unknown: choose one of {CONDITIONS}")
        depth = cfg.ar_depth_image if condition == "image" else cfg.ar_depth_text
        paper = cfg.name == "paper"
        base = cls(depth=depth, width=64 * depth if paper else cfg.ar_width, num_heads=16 if paper else cls.num_heads,
                   cross_attn_first=condition == "image", cond_dropout=cfg.cond_dropout)
        overrides = dict(cfg.extra.get("transformer", {}))
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"cfg.extra['transformer'] has unknown keys {sorted(unknown)}: "
                             f"choose from {[f.name for f in dataclasses.fields(cls)]}")
        return dataclasses.replace(base, **overrides)

    @classmethod
    def paper(cls, condition: str = "image") -> "TransformerSettings":
        return cls.from_config(SAR3DConfig.paper(), condition)

    @classmethod
    def tiny(cls, condition: str = "image") -> "TransformerSettings":
        return cls.from_config(SAR3DConfig.tiny(), condition)

    def validate(self) -> None:
        if min(self.depth, self.width, self.num_heads) < 1 or self.width % self.num_heads:
            raise ValueError(f"depth {self.depth}, width {self.width} and num_heads {self.num_heads} must be "
                             f"positive, with width divisible by num_heads")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout={self.cond_dropout} must be in [0, 1)")


def fhat_to_scale_input(f_hat_B3Chw: torch.Tensor, hw) -> torch.Tensor:
    """Input of one scale: ``f_hat`` area-downsampled to ``hw`` per plane -> ``(B, 3 h_k w_k, C)``,
    plane-major then row-major like the token sequence (VAR ``get_next_autoregressive_input``)."""
    B, P, C, h, w = f_hat_B3Chw.shape
    x_NChw = f_hat_B3Chw.reshape(B * P, C, h, w)
    if tuple(hw) != (h, w):
        x_NChw = F.interpolate(x_NChw, size=tuple(hw), mode="area")
    return x_NChw.reshape(B, P, C, -1).transpose(2, 3).reshape(B, -1, C)


class KVCache:
    """Self-attention keys/values of every block for the positions fed so far, and the terms
    that depend on the condition alone (the cross-attention keys/values of the condition
    tokens, the AdaLN modulations of the blocks and the head): ``once`` computes those on the
    first pass and every later pass reuses them."""

    def __init__(self):
        self.self_kv, self.fixed, self.length = {}, {}, 0

    def extend(self, block: int, k_BHld: torch.Tensor, v_BHld: torch.Tensor):
        if block in self.self_kv:
            k0, v0 = self.self_kv[block]
            k_BHld, v_BHld = torch.cat((k0, k_BHld), dim=2), torch.cat((v0, v_BHld), dim=2)
        self.self_kv[block] = (k_BHld, v_BHld)
        return k_BHld, v_BHld

    def once(self, key, compute):
        if key not in self.fixed:
            self.fixed[key] = compute()
        return self.fixed[key]


def _once(cache: KVCache | None, key, compute):
    """``compute()``, cached in ``cache`` under ``key`` when there is a cache."""
    return compute() if cache is None else cache.once(key, compute)


class Attention(nn.Module):
    """Multi-head attention of queries from ``x`` on keys/values from a source of ``kv_dim``."""

    def __init__(self, width: int, heads: int, kv_dim: int, l2_norm: bool):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_kv, self.proj = nn.Linear(width, width), nn.Linear(kv_dim, 2 * width), nn.Linear(width, width)
        # VAR attn_l2_norm: softmax(tau_h <q/|q|, k/|k|>), tau_h learned per head, starts at 4, at most 100
        self.log_tau_H = nn.Parameter(torch.full((heads,), math.log(4.0))) if l2_norm else None

    def _split(self, x_BLW: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, H, L, W/H)
        return x_BLW.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def queries(self, x_BLW: torch.Tensor) -> torch.Tensor:
        q = self._split(self.to_q(x_BLW))
        if self.log_tau_H is not None:
            q = F.normalize(q, dim=-1) * self.log_tau_H.clamp(max=math.log(100.0)).exp().view(-1, 1, 1)
        return q

    def keys_values(self, src_BTD: torch.Tensor):
        k, v = (self._split(t) for t in self.to_kv(src_BTD).chunk(2, dim=-1))
        return (F.normalize(k, dim=-1) if self.log_tau_H is not None else k), v

    def attend(self, q, k, v, mask=None) -> torch.Tensor:
        scale = 1.0 if self.log_tau_H is not None else None  # the temperature is already in q
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return self.proj(out.transpose(1, 2).flatten(2))


class AdaLNBlock(nn.Module):
    """Fig. S2: ``x += g1 attn(LN(x)(1+s1)+b1)``, ``x += g2 FFN(LN(x)(1+s2)+b2)`` with
    ``(g1, g2, s1, s2, b1, b2) = Linear(SiLU(c))``, and ``x += crossattn(norm(x), tokens)``
    before (image) or after (text) the self-attention."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, token_dim: int, cross_attn_first: bool, l2_norm: bool):
        super().__init__()
        self.cross_attn_first = cross_attn_first
        self.norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.attn = Attention(width, heads, width, l2_norm)
        self.cross_norm = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = Attention(width, heads, token_dim, l2_norm)
        hidden = round(width * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def _cross(self, x, tokens_BTD, token_mask, cache, index):
        k, v = _once(cache, ("cross_kv", index), lambda: self.cross_attn.keys_values(tokens_BTD))
        return x + self.cross_attn.attend(self.cross_attn.queries(self.cross_norm(x)), k, v, token_mask)

    def forward(self, x_BlW, cond_BW, tokens_BTD, token_mask, self_mask, cache: KVCache | None = None, index: int = 0):
        g1, g2, s1, s2, b1, b2 = _once(cache, ("ada", index),
                                       lambda: self.ada(cond_BW).unsqueeze(1).chunk(6, dim=-1))  # each (B, 1, W)
        if self.cross_attn_first:
            x_BlW = self._cross(x_BlW, tokens_BTD, token_mask, cache, index)
        h = self.norm(x_BlW) * (1 + s1) + b1
        k, v = self.attn.keys_values(h)
        if cache is not None:  # the new positions attend to the cached ones and to each other
            k, v = cache.extend(index, k, v)
        x_BlW = x_BlW + g1 * self.attn.attend(self.attn.queries(h), k, v, self_mask)
        if not self.cross_attn_first:
            x_BlW = self._cross(x_BlW, tokens_BTD, token_mask, cache, index)
        return x_BlW + g2 * self.ffn(self.norm(x_BlW) * (1 + s2) + b2)


class SAR3DTransformer(nn.Module):
    """Teacher-forced input ``(B, L - n_start, C)`` + condition -> logits ``(B, L, V)`` (Eq. 1)."""

    def __init__(self, scales, codebook_size: int, latent_channels: int, cond_dim: int, cond_token_dim: int,
                 settings: TransformerSettings | None = None, next_token: bool = False):
        super().__init__()
        s = self.settings = settings or TransformerSettings()
        s.validate()
        self.scales, self.next_token = tuple(_as_hw(x) for x in scales), bool(next_token)
        if len(self.scales) == 0 or (self.next_token and len(self.scales) != 1):
            raise ValueError(f"scales {list(scales)}: give the schedule, or one scale (the latent) for next_token")
        self.codebook_size, self.latent_channels = int(codebook_size), int(latent_channels)
        self.cond_dim, self.cond_token_dim = int(cond_dim), int(cond_token_dim)
        sizes = [NUM_PLANES * h * w for h, w in self.scales]
        self.begins = [sum(sizes[:k]) for k in range(len(sizes) + 1)]  # scale k: positions begins[k]:begins[k+1]
        self.seq_len = self.begins[-1]
        self.num_start = 1 if self.next_token else sizes[0]  # positions fed by the start token
        level = [k for k, n in enumerate(sizes) for _ in range(n)]
        plane = [p for h, w in self.scales for p in range(NUM_PLANES) for _ in range(h * w)]
        # i sees j iff rank_i >= rank_j: rank = scale level (block-causal) or position (causal)
        self._rank = list(range(self.seq_len)) if self.next_token else level
        rank_L = torch.tensor(self._rank)
        self.register_buffer("level_L", torch.tensor(level), persistent=False)
        self.register_buffer("plane_L", torch.tensor(plane), persistent=False)
        self.register_buffer("allowed_LL", rank_L[:, None] >= rank_L[None, :], persistent=False)
        W = s.width
        self.cond_proj = nn.Linear(cond_dim, W)  # pooled condition -> AdaLN input and start token
        self.null_pooled = nn.Parameter(torch.zeros(cond_dim))  # the learned null condition (CFG)
        self.null_token = nn.Parameter(torch.zeros(cond_token_dim))
        self.word_embed = nn.Linear(latent_channels, W)
        self.pos_LW = nn.Parameter(torch.zeros(self.seq_len, W))
        self.level_embed = nn.Embedding(len(sizes), W)
        self.plane_embed = nn.Embedding(NUM_PLANES, W)
        self.blocks = nn.ModuleList(AdaLNBlock(W, s.num_heads, s.mlp_ratio, cond_token_dim, s.cross_attn_first,
                                               s.attn_l2_norm) for _ in range(s.depth))
        self.head_norm = nn.LayerNorm(W, eps=1e-6, elementwise_affine=False)
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(W, 2 * W))
        self.head = nn.Linear(W, codebook_size)
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: SAR3DConfig, cond_dim: int, cond_token_dim: int, condition: str = "image",
                    settings: TransformerSettings | None = None, next_token: bool = False) -> "SAR3DTransformer":
        settings = settings or TransformerSettings.from_config(cfg, condition)
        scales = (cfg.latent_size,) if next_token else cfg.scales
        return cls(scales, cfg.codebook_size, cfg.latent_channels, cond_dim, cond_token_dim, settings, next_token)

    def save_pretrained(self, folder, vqvae_cfg: SAR3DConfig, condition: str, encoder_name: str,
                        extra: dict | None = None):
        """``model.safetensors`` + ``config.json`` in ``folder``, with what a reader needs to check it
        belongs to a VQVAE and a condition encoder (``ar_train.save_generator``)."""
        from .ar_train import save_generator

        return save_generator(folder, self, vqvae_cfg, condition, encoder_name, extra)

    @classmethod
    def from_pretrained(cls, folder) -> "SAR3DTransformer":
        """The transformer of a ``save_pretrained`` folder, in eval mode, its ``config.json`` as ``.meta``
        (``ar_train.load_generator``; ``generate.Pipeline.from_pretrained`` adds its VQVAE and encoder)."""
        from .ar_train import load_generator

        model, meta = load_generator(folder)
        model.meta = meta
        return model

    @torch.no_grad()
    def init_weights(self) -> None:
        """VAR's ``init_weights``: trunc-normal ``std = sqrt(1 / 3W)``, head x 0.02, output
        projections / sqrt(2 depth), AdaLN gates x 1e-5 (blocks start near identity)."""
        if self.pos_LW.is_meta:
            return
        W, std = self.settings.width, math.sqrt(1 / (3 * self.settings.width))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        for p in (self.pos_LW, self.null_pooled, self.null_token):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.mul_(0.02)
        self.head_ada[-1].weight.mul_(0.5)
        for blk in self.blocks:
            for lin in (blk.attn.proj, blk.cross_attn.proj, blk.ffn[-1]):
                lin.weight.div_(math.sqrt(2 * self.settings.depth))
            blk.ada[-1].weight[:2 * W].mul_(1e-5)
            blk.ada[-1].weight[2 * W:].mul_(0.5)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- the condition -------------------------------------------------------------------
    def _check_condition(self, cond_pooled, cond_tokens, cond_mask) -> None:
        if cond_pooled.dim() != 2 or cond_pooled.shape[1] != self.cond_dim:
            raise ValueError(f"cond_pooled has shape {tuple(cond_pooled.shape)}, expected (B, {self.cond_dim})")
        B = cond_pooled.shape[0]
        if cond_tokens.dim() != 3 or cond_tokens.shape[0] != B or cond_tokens.shape[2] != self.cond_token_dim:
            raise ValueError(f"cond_tokens has shape {tuple(cond_tokens.shape)}, expected ({B}, T, {self.cond_token_dim})")
        if cond_mask is not None:
            if tuple(cond_mask.shape) != tuple(cond_tokens.shape[:2]):
                raise ValueError(f"cond_mask has shape {tuple(cond_mask.shape)}, expected {tuple(cond_tokens.shape[:2])}")
            if not cond_mask.bool().any(dim=1).all():
                raise ValueError("cond_mask has a row without any valid token: cross-attention needs at least one")

    def null_condition(self, batch: int, num_tokens: int):
        """The unconditional branch: learned ``(pooled (B, D), tokens (B, T, D_t))``."""
        return self.null_pooled.expand(batch, -1), self.null_token.expand(batch, num_tokens, -1)

    def drop_condition(self, cond_pooled, cond_tokens, cond_mask=None, generator: torch.Generator | None = None):
        """Replace each row by the null condition with probability ``cond_dropout`` (Sec. 4.2).
        Returns ``(pooled, tokens, mask, dropped_B)``; a dropped row's mask is all valid."""
        B = cond_pooled.shape[0]
        device = generator.device if generator is not None else cond_pooled.device
        dropped = (torch.rand(B, generator=generator, device=device) < self.settings.cond_dropout).to(cond_pooled.device)
        pooled = torch.where(dropped[:, None], self.null_pooled.to(cond_pooled.dtype), cond_pooled)
        tokens = torch.where(dropped[:, None, None], self.null_token.to(cond_tokens.dtype), cond_tokens)
        mask = None if cond_mask is None else cond_mask.bool() | dropped[:, None]
        return pooled, tokens, mask, dropped

    def condition_vector(self, cond_pooled: torch.Tensor) -> torch.Tensor:
        return self.cond_proj(cond_pooled)  # (B, W): drives AdaLN and is the start token

    # --- the sequence -------------------------------------------------------------------
    def embed_inputs(self, x_BlC: torch.Tensor, cond_BW: torch.Tensor, start: int) -> torch.Tensor:
        """Input embeddings of positions ``start, start + 1, ...``: the start token for the first
        ``num_start`` positions (when ``start == 0``), ``word_embed(x)`` after them, plus the
        position, scale-level and plane embeddings."""
        if 0 < start < self.num_start:
            raise ValueError(f"start={start} falls inside the {self.num_start} start positions")
        parts = [cond_BW.unsqueeze(1).expand(-1, self.num_start, -1)] if start == 0 else []
        if x_BlC.shape[1] > 0:
            parts.append(self.word_embed(x_BlC))
        h_BlW = torch.cat(parts, dim=1)
        end = start + h_BlW.shape[1]
        if end > self.seq_len:
            raise ValueError(f"positions {start}..{end - 1} run past the sequence length {self.seq_len}")
        return h_BlW + self.pos_LW[start:end] + self.level_embed(self.level_L[start:end]) + self.plane_embed(self.plane_L[start:end])

    def run_blocks(self, h_BlW, cond_BW, cond_tokens, cond_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        """Blocks and head on positions ``start:end`` (``start`` = ``cache.length``, 0 without a cache)."""
        start = cache.length if cache is not None else 0
        end = start + h_BlW.shape[1]
        # a whole scale (or one token) sees everything so far: no mask, the fast attention path
        full = cache is not None and self._rank[start] == self._rank[end - 1]
        self_mask = None if full else self.allowed_LL[start:end, :end]
        token_mask = None if cond_mask is None else cond_mask.bool()[:, None, None, :]
        for i, blk in enumerate(self.blocks):
            h_BlW = blk(h_BlW, cond_BW, cond_tokens, token_mask, self_mask, cache, i)
        if cache is not None:
            cache.length = end
        scale, shift = _once(cache, "head_ada", lambda: self.head_ada(cond_BW).unsqueeze(1).chunk(2, dim=-1))
        return self.head(self.head_norm(h_BlW) * (1 + scale) + shift)  # (B, l, V)

    def forward(self, x_BLC_teacher_input, cond_pooled, cond_tokens, cond_mask=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        B, expected = cond_pooled.shape[0], (self.seq_len - self.num_start, self.latent_channels)
        if x_BLC_teacher_input.dim() != 3 or tuple(x_BLC_teacher_input.shape) != (B, *expected):
            raise ValueError(f"teacher input has shape {tuple(x_BLC_teacher_input.shape)}, expected ({B}, "
                             f"{expected[0]}, {expected[1]}): use teacher_input(quantizer, tokens)")
        self._check_condition(cond_pooled, cond_tokens, cond_mask)
        if self.training and self.settings.cond_dropout > 0:
            cond_pooled, cond_tokens, cond_mask, _ = self.drop_condition(cond_pooled, cond_tokens, cond_mask, generator)
        cond_BW = self.condition_vector(cond_pooled)
        return self.run_blocks(self.embed_inputs(x_BLC_teacher_input, cond_BW, 0), cond_BW, cond_tokens, cond_mask)

    # --- teacher forcing and the loss ------------------------------------------------------
    def check_quantizer(self, quantizer) -> None:
        scales = (quantizer.latent_hw,) if self.next_token else quantizer.scales
        if scales != self.scales or quantizer.codebook_size != self.codebook_size or quantizer.dim != self.latent_channels:
            raise ValueError(f"quantizer (scales {list(quantizer.scales)}, V {quantizer.codebook_size}, C {quantizer.dim}) "
                             f"does not match the transformer (scales {list(self.scales)}, V {self.codebook_size}, "
                             f"C {self.latent_channels})")

    @torch.no_grad()
    def teacher_input(self, quantizer, tokens: list) -> torch.Tensor:
        """Ground-truth tokens -> ``(B, L - num_start, C)``: for scale k+1, ``f_hat`` after scales
        1..k area-downsampled to scale k+1 (VAR ``idxBl_to_var_input``); next-token: the codes
        of tokens ``0..L-2``."""
        self.check_quantizer(quantizer)
        if self.next_token:
            if tokens[-1].dim() != 4 or tuple(tokens[-1].shape[1:]) != (NUM_PLANES, *quantizer.latent_hw):
                raise ValueError(f"next-token tokens have shape {tuple(tokens[-1].shape)}, expected "
                                 f"(B, 3, {quantizer.latent_hw[0]}, {quantizer.latent_hw[1]})")
            return quantizer.lookup(tokens_to_sequence(tokens[-1:])[:, :-1])
        quantizer._check_tokens(tokens, quantizer.num_scales)
        K = len(self.scales)
        if K == 1:
            return quantizer.codebook.weight.new_zeros(tokens[0].shape[0], 0, self.latent_channels)
        prefixes = quantizer.fhat_prefixes(tokens, K - 1)  # f_hat after scales 1..k, k < K
        return torch.cat([fhat_to_scale_input(f, self.scales[k + 1]) for k, f in enumerate(prefixes)], dim=1)

    def loss(self, logits_BLV: torch.Tensor, target_BL: torch.Tensor, label_smoothing: float = 0.0) -> dict:
        """Cross-entropy over all ``L`` tokens (the official uniform ``1/L`` weights), plus
        per-scale loss and accuracy (%) for logging."""
        ce_BL = F.cross_entropy(logits_BLV.flatten(0, 1).float(), target_BL.flatten(), reduction="none",
                                label_smoothing=label_smoothing).view(target_BL.shape)
        hit_BL = (logits_BLV.argmax(-1) == target_BL).float()
        spans = list(zip(self.begins[:-1], self.begins[1:]))
        return {"loss": ce_BL.mean(), "accuracy": 100 * hit_BL.mean().item(),
                "loss_per_scale": [ce_BL[:, a:b].mean().item() for a, b in spans],
                "accuracy_per_scale": [100 * hit_BL[:, a:b].mean().item() for a, b in spans]}
