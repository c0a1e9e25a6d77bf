"""The multi-scale 3D VQVAE: encoder, quantizer, triplane decoder, renderer (paper Sec. 4.1, Fig. 2).

``f = E(M~)``, ``R = Q(f)`` (Eq. 7); the decoder ``D`` turns ``f_hat`` (Alg. 2) into a
feature triplane and volume rendering gives RGB-D images and masks at the supervision
cameras. The training loss is Eq. 8,

    L = lambda_render L_render + lambda_VQ L_VQ + lambda_GAN L_GAN,

implemented here as

    L = w_rgb |rgb - rgb*|_1 + w_depth |d - d*|_1 + w_mask |m - m*|_1 + w_vq L_VQ,

the MAE part of ``L_render`` on the rendered rays (a random subset or full images), and
``L_VQ`` (codebook + beta commitment) from ``quantizer.MultiScaleTriplaneQuantizer``.
Weights: ``cfg.extra["loss"]`` (a dict) over ``DEFAULT_LOSS_WEIGHTS``: the official code's
(rgb 1, depth 0.5, mask ("alpha") 1, vq 1; the paper gives no numbers). Checkpoints from
before these defaults were trained with rgb 2 and mask 0.5 (their ``training.json``). The perceptual (LPIPS) term of ``L_render``,
the adversarial ``L_GAN`` and the training loop live in ``vqvae_train``, which renders
rays and patches and calls ``loss`` for the MAE part.

Checkpoints (DESIGN.md §4): a folder with ``model.safetensors`` and ``config.json``
(``{"format": FORMAT, "config": SAR3DConfig.to_dict()}``), written by ``save_pretrained``
and read by ``from_pretrained``. Nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .config import SAR3DConfig
from .encoder import EncoderSettings, MultiViewEncoder
from .quantizer import MultiScaleTriplaneQuantizer, QuantizerOutput
from .triplane import TriplaneDecoder, TriplaneField, TriplaneSettings, render_pixels, render_views

FORMAT = "sar3d-vqvae/1"
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
DEFAULT_LOSS_WEIGHTS = {"rgb": 1.0, "depth": 0.5, "mask": 1.0, "vq": 1.0}


def loss_weights(cfg: SAR3DConfig) -> dict:
    """``DEFAULT_LOSS_WEIGHTS`` overridden by ``cfg.extra["loss"]``."""
    overrides = dict(cfg.extra.get("loss", {}))
    unknown = set(overrides) - set(DEFAULT_LOSS_WEIGHTS)
    if unknown:
        raise ValueError(f"cfg.extra['loss'] has unknown keys {sorted(unknown)}: choose from {sorted(DEFAULT_LOSS_WEIGHTS)}")
    return {**DEFAULT_LOSS_WEIGHTS, **{k: float(v) for k, v in overrides.items()}}


def _json_normal(d: dict) -> dict:
    """A dict as it reads back from JSON (tuples become lists), to compare configs."""
    return json.loads(json.dumps(d))


def supersampled(render_fn, size: int, s: int) -> dict:
    """``render_fn(size * s)`` (full images ``(B, V, C, H, W)``) box-filtered back to ``size``: the
    mean of the ``s x s`` sub-pixel rays (``render._assemble`` filters its supersampled targets'
    RGB and mask the same way; depth stays opacity-weighted, as ``render_views`` returns it)."""
    if int(s) < 1:
        raise ValueError(f"supersample={s} must be a positive integer")
    out = render_fn(int(size) * int(s))
    B, V = out["rgb"].shape[:2]
    pool = lambda x: F.avg_pool2d(x.flatten(0, 1), int(s)).unflatten(0, (B, V))  # noqa: E731
    return {k: pool(out[k]) for k in ("rgb", "depth", "mask")}


def _near_and_anywhere(near_N: torch.Tensor, rays: int, generator: torch.Generator) -> torch.Tensor:
    """``rays`` pixel numbers: half drawn among the ``near_N`` pixels (all pixels if none), half anywhere."""
    pool = torch.nonzero(near_N)[:, 0]
    pool = pool if len(pool) else torch.arange(len(near_N))
    half = rays // 2
    return torch.cat([pool[torch.randint(len(pool), (half,), generator=generator)],
                      torch.randint(len(near_N), (rays - half,), generator=generator)])


class SAR3DVQVAE(nn.Module):
    """Views -> multi-scale tokens -> feature triplane -> rendered views (Fig. 2)."""

    def __init__(self, cfg: SAR3DConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder_settings = EncoderSettings.from_config(cfg)
        self.triplane_settings = TriplaneSettings.from_config(cfg)
        self.loss_weights = loss_weights(cfg)
        enc_c, dec_c = self.encoder_settings.colour_latent_channels, self.triplane_settings.colour_latent_channels
        if enc_c and enc_c != dec_c:
            raise ValueError(f"the encoder's colour_latent_channels={enc_c} must equal the triplane's ({dec_c}): "
                             f"the colour encoder's latents are the ones the colour decoder reads")
        self.encoder = MultiViewEncoder.from_config(cfg, self.encoder_settings)
        self.quantizer = MultiScaleTriplaneQuantizer.from_config(cfg)
        self.decoder = TriplaneDecoder.from_config(cfg, self.triplane_settings)
        self.field = TriplaneField.from_config(cfg, self.triplane_settings)
        # set on a decoder fine-tune: {"fingerprint", "weights", "checkpoint"} of the base (``fingerprint``)
        self.tokens_of: dict | None = None

    @classmethod
    def from_config(cls, cfg: SAR3DConfig) -> "SAR3DVQVAE":
        return cls(cfg)

    # --- Eq. 7 and Alg. 1-2 ------------------------------------------------------------
    @property
    def needs_cameras(self) -> bool:
        """Whether ``encode`` needs the input views' cameras (the encoder lifts pixels into the planes)."""
        return self.encoder.lift is not None

    def encode(self, encoder_input: torch.Tensor, input_c: torch.Tensor | None = None) -> QuantizerOutput:
        """``(B, 6, 10, H, W)`` and the input cameras ``input_c (B, 6, 25)`` -> ``QuantizerOutput``
        (tokens, straight-through ``f_hat``, ``vq_loss``). ``input_c`` is needed when the encoder
        lifts pixels (``needs_cameras``) and ignored otherwise."""
        return self.quantizer(self.encoder(encoder_input, input_c))

    def encode_refined(self, encoder_input: torch.Tensor, input_c: torch.Tensor, steps: int = 100,
                       input_mask: torch.Tensor | None = None, rays: int = 2048, lr: float = 1e-2,
                       seed: int = 0, progress: bool = False) -> QuantizerOutput:
        """``encode``, then ``refine_latent`` on the input views: ``steps`` of gradient descent on
        the encoder's latent ``f`` so that the tokens it quantizes to render the input views better.

        Our addition, not the paper's (which encodes in one pass): the encoder's one-pass latent
        leaves a gap to the best tokens the shipped decoder can render (``docs/RESULTS.md``,
        free-token fits), and a few steps per object close most of it, the way GAN inversion
        refines an encoder's guess. Only the input views are used: the same information the
        encoder sees, so novel views measure generalisation. The tokens stay this model's
        (same codebook, same fingerprint) and decode directly; models trained to read one-pass
        tokens (the captioner, the generators) read them less well (``docs/RESULTS.md``).

        ``encoder_input (B, 6, 10, H, W)`` gives the views' RGB and depth; ``input_mask
        (B, 6, 1, H, W)`` their alpha (default: ``depth > 0``). ``steps=0`` is ``encode``.
        """
        if steps == 0:
            return self.encode(encoder_input, input_c)
        depth = encoder_input[:, :, 3:4]
        mask = (depth > 0).to(depth.dtype) if input_mask is None else input_mask
        with torch.no_grad():
            f = self.encoder(encoder_input, input_c)
        return self.refine_latent(f, input_c, encoder_input[:, :, :3], depth=depth, mask=mask, steps=steps,
                                  rays=rays, lr=lr, seed=seed, progress=progress)

    def refine_latent(self, f_B3Chw: torch.Tensor, c_BV25: torch.Tensor, rgb: torch.Tensor,
                      depth: torch.Tensor | None = None, mask: torch.Tensor | None = None, steps: int = 100,
                      rays: int = 2048, lr: float = 1e-2, seed: int = 0, progress: bool = False) -> QuantizerOutput:
        """Tokens for views ``rgb (B, V, 3, H, W)`` at cameras ``c (B, V, 25)``, searched from the
        latent ``f`` (``encode_refined``'s engine): Adam on ``f`` through the quantizer (Alg. 1,
        straight-through, as in training) with the codebook, decoder and field frozen.

        Each step renders ``rays`` random rays per object, half of them on or within 2 px of the
        object (``mask``; all pixels without one); the loss is the render MAE of Eq. 8 with this
        model's weights, over the targets given (RGB always; ``depth`` and ``mask``, each
        ``(B, V, 1, H, W)``, when not None). Adam at ``lr``, constant, then decayed linearly to
        0.1x over the second half. The model's weights, mode and ``requires_grad`` are left as found.
        """
        if steps < 0 or rays < 1:
            raise ValueError(f"steps={steps} and rays={rays}: steps must be >= 0 and rays >= 1")
        B, V, _, H, W = rgb.shape
        flat = lambda x: x.reshape(B, -1).to(f_B3Chw.dtype)  # noqa: E731  (B, V, 1, H, W) -> (B, V H W)
        rgb_BN3 = rgb.permute(0, 1, 3, 4, 2).reshape(B, -1, 3).to(f_B3Chw.dtype)
        if mask is None:
            near = torch.ones(B, V * H * W, dtype=torch.bool)
        else:
            near = F.max_pool2d(mask.reshape(B * V, 1, H, W).float(), 5, stride=1, padding=2).reshape(B, -1) > 0.01
        targets = {k: flat(v) for k, v in (("depth", depth), ("mask", mask)) if v is not None}
        g = torch.Generator().manual_seed(int(seed))
        w, samples = self.loss_weights, self.triplane_settings
        was_training, grads = self.training, [p.requires_grad for p in self.parameters()]
        self.eval().requires_grad_(False)
        try:
            with torch.enable_grad():
                f = f_B3Chw.detach().clone().requires_grad_(True)
                opt = torch.optim.Adam([f], lr=lr)
                for step in tqdm(range(steps), desc="refining tokens", disable=not progress, leave=False):
                    index = torch.stack([_near_and_anywhere(near[b], rays, g) for b in range(B)]).to(f.device)
                    planes = self.decode_fhat(self.quantizer(f).f_hat)
                    out = render_pixels(planes, self.field, c_BV25.to(f.dtype), H, W, index, samples.num_samples,
                                        stratified=True, generator=g, importance_samples=samples.importance_samples)
                    loss = w["rgb"] * (out["rgb"] - rgb_BN3.gather(1, index[..., None].expand(-1, -1, 3))).abs().mean()
                    for k, target in targets.items():
                        loss = loss + w[k] * (out[k] - target.gather(1, index)).abs().mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    # constant, then linear decay to 0.1x over the second half
                    decay = max(0.0, (step + 1 - steps // 2) / max(1, steps - steps // 2))
                    opt.param_groups[0]["lr"] = lr * (1.0 - 0.9 * decay)
            with torch.no_grad():
                return self.quantizer(f.detach())
        finally:
            for p, r in zip(self.parameters(), grads):
                p.requires_grad_(r)
            self.train(was_training)

    def encode_views(self, mv, refine_steps: int = 0) -> QuantizerOutput:
        """Encode one ``views.MultiView`` from its first ``num_input_views`` views (a batch of one);
        ``refine_steps > 0``: ``encode_refined`` on those views and their masks."""
        inp = mv.select(slice(0, self.cfg.num_input_views))
        device = self.quantizer.codebook.weight.device
        x, c = inp.encoder_input()[None].to(device), inp.c[None].to(device)
        if refine_steps:
            return self.encode_refined(x, c, refine_steps, input_mask=inp.mask[None].to(device))
        return self.encode(x, c)

    def decode_fhat(self, f_hat_B3Chw: torch.Tensor) -> torch.Tensor:
        """``D``: latent triplane -> feature triplane ``(B, 3, F, H', W')``."""
        return self.decoder(f_hat_B3Chw)

    def decode_tokens(self, tokens: list, num_scales: int | None = None) -> torch.Tensor:
        """Alg. 2 then ``D``: tokens of the first ``num_scales`` scales -> feature planes ``(B, 3, F, H', W')``."""
        return self.decode_fhat(self.quantizer.tokens_to_fhat(tokens, num_scales))

    def render(self, planes_B3FHW: torch.Tensor, c_BV25: torch.Tensor, size: int | None = None,
               ray_subset: int | None = None, generator: torch.Generator | None = None, index=None,
               chunk: int | None = None, supersample: int = 1) -> dict:
        """Volume-render feature planes at cameras ``c (B, V, 25)`` (``triplane.render_views``).

        ``supersample=s`` renders full images with ``s x s`` rays per pixel and averages them,
        as the data builder renders its targets (``render._assemble``): anti-aliased edges.
        """
        size = self.cfg.image_size if size is None else int(size)
        if supersample != 1:
            return supersampled(lambda s: self.render(planes_B3FHW, c_BV25, s, chunk=chunk), size, supersample)
        return render_views(planes_B3FHW, self.field, c_BV25, size, size, self.triplane_settings.num_samples,
                            ray_subset=ray_subset, generator=generator,
                            stratified=self.training and generator is not None, index=index, chunk=chunk,
                            importance_samples=self.triplane_settings.importance_samples)

    # --- one pass and Eq. 8 --------------------------------------------------------------
    def forward(self, batch: dict, ray_subset: int | None = None, generator: torch.Generator | None = None) -> dict:
        """Encode ``batch["encoder_input"]``, render at ``batch["target_c"]``.

        Returns the render (``rgb``, ``depth``, ``mask``, and ``index``/``view``/``row``/``col``
        with ``ray_subset``; see ``render_views``) plus ``tokens``, ``f_hat``, ``planes``,
        ``vq_loss``, ``residual_norms`` and ``usage``. Views are rendered at the size of
        ``batch["target_rgb"]`` when given, else at ``cfg.image_size``.
        """
        for key in ("encoder_input", "target_c"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}: expected the fields of data.MultiViewDataset, batched")
        c = batch["target_c"]
        if c.ndim != 3:
            raise ValueError(f"target_c has shape {tuple(c.shape)}: expected (B, V, 25); batch the items "
                             f"(a DataLoader, or x[None] for one object)")
        size = batch["target_rgb"].shape[-1] if "target_rgb" in batch else None
        q = self.encode(batch["encoder_input"], batch.get("input_c"))
        planes = self.decode_fhat(q.f_hat)
        out = self.render(planes, c, size, ray_subset, generator)
        out.update(tokens=q.tokens, f_hat=q.f_hat, planes=planes, vq_loss=q.vq_loss,
                   residual_norms=q.residual_norms, usage=q.usage)
        return out

    @staticmethod
    def targets_for(batch: dict, out: dict) -> dict:
        """Ground truth matching ``out``: full images, or the rays of ``out["index"]``."""
        rgb, depth, mask = batch["target_rgb"], batch["target_depth"], batch["target_mask"]
        if "index" not in out:
            return {"rgb": rgb, "depth": depth, "mask": mask}
        B, idx = rgb.shape[0], out["index"]  # (B, n) into the flattened (V, H, W) grid
        rgb_BN3 = rgb.permute(0, 1, 3, 4, 2).reshape(B, -1, 3)
        return {"rgb": rgb_BN3.gather(1, idx[..., None].expand(-1, -1, 3)),
                "depth": depth.reshape(B, -1).gather(1, idx), "mask": mask.reshape(B, -1).gather(1, idx)}

    def loss(self, batch: dict, out: dict) -> dict:
        """Eq. 8 without LPIPS and GAN: ``{"rgb", "depth", "mask", "render", "vq", "total"}``."""
        target = self.targets_for(batch, out)
        w = self.loss_weights
        terms = {k: F.l1_loss(out[k], target[k].to(out[k].dtype)) for k in ("rgb", "depth", "mask")}
        # L_render = w_rgb MAE(rgb) + w_depth MAE(depth) + w_mask MAE(mask)
        terms["render"] = sum(w[k] * terms[k] for k in ("rgb", "depth", "mask"))
        terms["vq"] = out["vq_loss"]
        # L = L_render + lambda_VQ L_VQ   (Eq. 8, lambda_GAN L_GAN not yet)
        terms["total"] = terms["render"] + w["vq"] * terms["vq"]
        return terms

    # --- checkpoints ---------------------------------------------------------------------
    # the quantizer's usage counters change whenever it runs in training mode; they never change a token
    COUNTERS = ("quantizer.usage_counts", "quantizer.steps_since_used")

    def _hash(self, keep) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            if keep(k):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def token_weights_hash(self) -> str:
        """A short SHA-256 of the weights that decide the tokens and their latent (encoder and
        quantizer: codebook and ``phi``), without the usage counters."""
        return self._hash(lambda k: k.startswith(("encoder.", "quantizer.")) and k not in self.COUNTERS)

    def fingerprint(self) -> str:
        """A short SHA-256 of all weights: which VQVAE made a token file or a generator's tokens
        (two checkpoints of one config give different token meanings; the config cannot tell).

        A decoder fine-tune (``vqvae_train.train_vqvae(decoder_only=True)``) keeps its base's
        encoder and quantizer, so its tokens are the base's tokens: it records the base's
        fingerprint in ``tokens_of`` and answers with it for as long as ``token_weights_hash``
        still matches the base's. Any change to those weights gives a fingerprint of its own.
        """
        t = self.tokens_of
        if t and t.get("weights") == self.token_weights_hash():
            return str(t["fingerprint"])
        return self._hash(lambda k: True)

    def save_pretrained(self, folder) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp_weights, tmp_config = folder / f".{WEIGHTS_NAME}.tmp", folder / f".{CONFIG_NAME}.tmp"
        save_file(tensors, str(tmp_weights), metadata={"format": FORMAT})
        meta = {"format": FORMAT, "config": self.cfg.to_dict()}
        if self.tokens_of:
            meta["tokens_of"] = self.tokens_of
        tmp_config.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_weights, folder / WEIGHTS_NAME)  # rename last: no half-written checkpoint
        os.replace(tmp_config, folder / CONFIG_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder, config: SAR3DConfig | None = None) -> "SAR3DVQVAE":
        """Load a ``save_pretrained`` folder; ``config``, if given, must equal the saved one."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"checkpoint folder {folder} has no {name}: is it a SAR3DVQVAE checkpoint?")
        try:
            meta = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder / CONFIG_NAME} is not valid JSON: {err}") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{folder / CONFIG_NAME} has format {got!r}, expected {FORMAT!r} with a 'config' dict")
        saved = SAR3DConfig.from_dict(meta["config"])
        if config is not None and _json_normal(config.to_dict()) != _json_normal(saved.to_dict()):
            a, b = _json_normal(config.to_dict()), _json_normal(saved.to_dict())
            diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            raise ValueError(f"config mismatch with {folder / CONFIG_NAME}: (given, saved) = {diff}")
        try:
            tensors = load_file(str(folder / WEIGHTS_NAME))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file (corrupt or "
                             f"truncated?): {err}") from err
        model = cls(saved)
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(
                f"weights in {folder / WEIGHTS_NAME} do not fit its config ({saved.name}): "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape "
                f"{[(k, tuple(tensors[k].shape), tuple(own[k].shape)) for k in wrong[:5]]}"
                + ("; the field's layout differs: check \"colour_channels\" under \"extra\" / \"triplane\" "
                   "in its config.json (0 or absent: one shared trunk)"
                   if any(k.startswith("field.") for k in missing + unexpected + wrong) else "")
                + ("; the colour streams differ: check \"colour_latent_channels\" under \"extra\" / \"encoder\" "
                   "and \"triplane\" in its config.json"
                   if any(k.startswith(("encoder.colour.", "decoder.colour.")) for k in missing + unexpected)
                   else ""))
        model.load_state_dict(tensors)
        tokens_of = meta.get("tokens_of")
        if tokens_of is not None and not (isinstance(tokens_of, dict) and {"fingerprint", "weights"} <= set(tokens_of)):
            raise ValueError(f"{folder / CONFIG_NAME} has a 'tokens_of' entry without 'fingerprint' and 'weights'")
        model.tokens_of = tokens_of
        return model
