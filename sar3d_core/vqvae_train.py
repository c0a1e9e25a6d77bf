"""Training objective of the 3D VQVAE (paper Sec. 4.1, Eq. 8) and `sar3d train vqvae`.

    L = lambda_render L_render + lambda_VQ L_VQ + lambda_GAN L_GAN            (Eq. 8)

``VQVAEObjective`` wraps a ``SAR3DVQVAE`` and a small PatchGAN discriminator and computes,
for one batch, every term on rays rendered from **all 12 views** of an object (the 6 input
views and the 6 novel ones):

* ``L_render``: MAE on RGB, depth and mask (``vqvae.SAR3DVQVAE.loss`` weights) over
  ``rays`` random rays plus ``patches`` square patches per object, and LPIPS on the patches
  when the LPIPS backbone weights are on disk (``metrics.lpips_available``); otherwise the
  term is off and the run says so (nothing is downloaded).
* ``L_VQ``: codebook + beta-commitment loss of the quantizer (Alg. 1).
* ``L_GAN``: hinge loss of a PatchGAN discriminator (Isola et al. 2017; VQGAN's choice) on
  the rendered patches against the ground-truth patches at the same pixels, switched on
  after ``gan_start`` steps with a small weight. The generator term runs the discriminator
  with detached weights (``torch.func.functional_call``) and the discriminator term sees
  detached renders, so one backward pass and one optimizer train both without either
  term leaking into the other's weights (and DDP sees one forward).
* ``L_3D`` (a documented **CPU training aid**, not in the paper; ``occupancy_weight``,
  0 turns it off): procedural objects have an exact SDF, so the field's opacity over one
  ray bin, ``alpha = 1 - exp(-sigma * delta)``, is pushed by a BCE towards the exact
  occupancy ``[sdf < 0]`` at points near the surface and uniform in the box. It gives the
  geometry a dense signal that rendering alone gives only slowly. Only items with a
  procedural seed (``seed >= 0``) use it.
* ``L_colour`` (the same kind of aid; ``colour_weight``, 0 turns it off): the field's colour
  at points near the surface is pulled (MAE) towards the diffuse colour the renders show
  there (``surface_colour``). Rendering reaches a colour only through the few rays that hit
  the object; this term gives every object hundreds of colour samples per step.
* ``L_readout`` (our addition against the "grey attractor"; ``readout_weight``, 0 turns it
  off): a linear head reads an RGB from every cell of the *quantized* colour latent; its
  mean over the plane cells the object occupies (``encoder.lift_to_planes``' occupancy at
  the latent size) is pulled (MAE) towards the mean colour of the input views' object
  pixels. Without it, a run may settle on grey renders, the L1 optimum for a model that
  does not read hue, and never leave; the readout makes the latent carry the hue from the
  first steps, so the decoder has it to use. Needs no procedural seed: it works on chunks.

Rays: ``object_ray_share`` of the random rays are drawn among the pixels inside (or within
two pixels of) the object's mask in the supervision views, the rest uniformly; the
background is learnt from few rays, the object is where the error is.

Each term is one method of ``VQVAEObjective`` (``render_terms``, ``lpips_term``, ``vq_terms``,
``gan_terms``, ``readout_term``, ``occupancy_term``, ``colour_term``) and ``weights(step)``
says how they add up to the loss. The 3D aids read the procedural objects through the
objective's ``object_of(seed)`` (default ``procedural_object``, a cached ``world.make_object``).

The loop is ``training.train`` (resume, DDP, checkpoints, loss curve); ``train_vqvae``
ties data, model and objective together and exports the final VQVAE with
``save_pretrained`` (the discriminator is left out of the export).
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import SAR3DConfig
from .data import INPUT_VIEWS, TARGET_VIEWS, MultiViewDataset
from .encoder import lift_to_planes
from .render import shade
from .training import (TrainConfig, derive_seed, find_checkpoint, is_main_process, load_checkpoint, step_generator,
                       train)
from .triplane import patch_index
from .vqvae import SAR3DVQVAE
from .world import ProceduralObject, make_object, sdf_normals

ObjectLookup = Callable[[int], ProceduralObject]  # seed -> the procedural object (its sdf, surface, colour)
SUPERVISED_VIEWS = INPUT_VIEWS + TARGET_VIEWS  # every view of a chunk: the 6 inputs, then the 6 novel ones

# the default VQVAE: the tiny preset's (geometric lifting, colour stream and readout, l2 codes), made by
# its command; every shipped generator and the captioner read its tokens. data_samples/vqvae_tiny_colour
# (colour stream, no lifting) is kept for tutorial 02's comparison.
PRESET_CHECKPOINT = DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data_samples" / "vqvae_tiny_lift"
PRESET_TRAIN_COMMAND = ("OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train vqvae "
                        "--preset tiny --threads 1 --batch-size 4 --steps 4500 --gan-start 3000 --lr-decay-from 0.6 "
                        "--lr-final 0.1 --out runs/vqvae_tiny_lift --export data_samples/vqvae_tiny_lift")
TRAIN_COMMAND = PRESET_TRAIN_COMMAND


@dataclass
class ObjectiveSettings:
    rays: int = 512  # random rays per object, over all supervision views
    patch: int = 32  # side of the rendered patches (GAN and LPIPS); 0 turns patches off
    patches: int = 1  # patches per object
    lpips_weight: float = 0.8  # used only when the LPIPS backbone weights are on disk (official weight)
    lpips_net: str = "alex"
    gan_weight: float = 0.025  # the official weight
    gan_start: int = 1000  # step from which L_GAN is on (the discriminator trains from step 1)
    occupancy_weight: float = 0.5  # the 3D CPU training aid; 0 turns it off
    occupancy_points: int = 1024  # per object, half near the surface and half uniform
    surface_noise: float = 0.02
    colour_weight: float = 0.0  # the exact-colour 3D training aid (off in the shipped run); 0 turns it off
    colour_points: int = 512  # per object, near the surface
    dead_code_every: int = 100  # replace unused codebook entries every N steps (0: never)
    readout_weight: float = 0.0  # the colour readout of the quantized latent (module doc); 0 turns it off
    object_ray_share: float = 0.0  # share of the random rays drawn on and near the object's mask
    # each supervised pixel rendered as the mean of supersample x supersample sub-pixel rays, as the
    # data builder renders its targets and vqvae_eval its images (1: one ray through the pixel centre)
    supersample: int = 1


# the objective options of each preset (``objective_preset``); the tiny preset's are the shipped run's
OBJECTIVE_PRESETS = {
    "tiny": {"colour_weight": 1.0, "readout_weight": 1.0, "object_ray_share": 0.5},
    "paper": {},  # the ObjectiveSettings defaults
}


def objective_preset(name: str, **overrides) -> ObjectiveSettings:
    """``ObjectiveSettings`` of preset ``name`` (``OBJECTIVE_PRESETS``), with ``overrides``."""
    if name not in OBJECTIVE_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(OBJECTIVE_PRESETS)}")
    return ObjectiveSettings(**{**OBJECTIVE_PRESETS[name], **overrides})


class PatchDiscriminator(nn.Module):
    """PatchGAN: a few strided convs, one logit per receptive-field patch (Isola et al. 2017)."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        mods, c_in = [], 3
        for k in range(layers):
            c_out = channels * 2 ** min(k, 2)
            mods += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                     nn.GroupNorm(min(8, c_out), c_out) if k else nn.Identity(), nn.LeakyReLU(0.2)]
            c_in = c_out
        mods.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, images_N3HW: torch.Tensor) -> torch.Tensor:
        return self.net(images_N3HW * 2 - 1)  # [0, 1] -> [-1, 1]


@functools.lru_cache(maxsize=4096)
def procedural_object(seed: int) -> ProceduralObject:
    """The procedural object of ``seed`` (``world.make_object``), cached: the 3D aids read the same
    objects again at every epoch. The default ``object_of`` of the aids' samplers and of ``VQVAEObjective``."""
    return make_object(int(seed))


_procedural_object = procedural_object  # the name flexicubes_train imports


def procedural_seeds(batch: dict) -> list[int]:
    """The procedural seeds of a batch, or ``[]`` unless every item has one (``seed >= 0``):
    the 3D aids need the exact object of every item."""
    seeds = [int(x) for x in batch["seed"]] if "seed" in batch else []
    return seeds if seeds and min(seeds) >= 0 else []


def occupancy_samples(seeds, n: int, noise: float, bound: float, generator: torch.Generator,
                      object_of: ObjectLookup = procedural_object):
    """Points ``(B, n, 3)`` and exact occupancy ``(B, n)`` of procedural objects ``seeds``:
    ``n // 2`` surface samples moved by ``N(0, noise^2)`` and the rest uniform in the box.
    ``object_of(seed)`` gives the object (``sdf``, ``sample_surface``)."""
    pts, occ = [], []
    for seed in seeds:
        obj = object_of(int(seed))
        m = n // 2
        surf_seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
        near = obj.sample_surface(m, seed=surf_seed).float()
        near = near + noise * torch.randn(m, 3, generator=generator)
        uniform = (torch.rand(n - m, 3, generator=generator) * 2 - 1) * bound
        p = torch.cat([near, uniform]).clamp(-bound, bound)
        pts.append(p)
        occ.append((obj.sdf(p) < 0).float())
    return torch.stack(pts), torch.stack(occ)


def surface_colour(obj, p_N3: torch.Tensor, lighting=None) -> torch.Tensor:
    """The colour renders of a procedural object show at its surface points ``p_N3``:
    the diffuse shading (``render.shade``, shininess 0, the world-fixed lights) of the albedo
    -> ``(N, 3)``. The lights are fixed in the world, so this part does not depend on the
    camera; the specular highlight does, and a view-independent colour field cannot hold
    it, so it is left out (at most 0.05 x 0.92 for the matte finish)."""
    normal = sdf_normals(obj.sdf, p_N3)
    albedo = torch.as_tensor(obj.color(p_N3)).float().reshape(-1, 3).clamp(0.0, 1.0)
    return shade(albedo, normal, -normal, 0.0, lighting)


def surface_colour_samples(seeds, n: int, noise: float, generator: torch.Generator,
                           object_of: ObjectLookup = procedural_object):
    """Points ``(B, n, 3)`` near the surfaces of procedural objects ``seeds`` and their
    colours ``(B, n, 3)``: ``surface_colour`` at a surface sample, which the point is moved
    from by ``N(0, noise^2)`` (the field's colour matters just inside the surface too)."""
    pts, rgb = [], []
    for seed in seeds:
        obj = object_of(int(seed))
        surf_seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
        p = obj.sample_surface(n, seed=surf_seed).float()
        rgb.append(surface_colour(obj, p))
        pts.append(p + noise * torch.randn(n, 3, generator=generator))
    return torch.stack(pts), torch.stack(rgb)


def sample_rays(mask_BV1HW: torch.Tensor, n: int, object_share: float, generator: torch.Generator) -> torch.Tensor:
    """Pixel numbers ``(B, n)`` into the flattened ``(V, H, W)`` grid: ``round(n * object_share)``
    drawn without replacement among the pixels within 2 px of the mask (``> 0.5``), the rest
    uniformly over all pixels (an object with too few such pixels takes uniform ones instead)."""
    B, V, _, H, W = mask_BV1HW.shape
    m = round(n * float(object_share))
    # the pixels of the smallest uniform numbers: a draw without replacement (topk picks the pixels
    # a full argsort would, tied numbers aside, at a quarter of its cost on 12 x 64 x 64 pixels)
    numbers = torch.rand(B, V * H * W, generator=generator)
    uniform = numbers.topk(n - m, -1, largest=False).indices if n > m else numbers[:, :0].long()
    if m <= 0:
        return uniform.to(mask_BV1HW.device)
    near = F.max_pool2d((mask_BV1HW.flatten(0, 1) > 0.5).float(), 5, stride=1, padding=2).reshape(B, -1).cpu()
    # random order among the near pixels first, then the rest: the first m are near ones while there are enough
    scores = torch.rand(B, V * H * W, generator=generator) + near
    picked = scores.topk(m, -1).indices
    return torch.cat([picked, uniform], 1).to(mask_BV1HW.device)


def subpixel_index(index_Bn: torch.Tensor, height: int, width: int, k: int) -> torch.Tensor:
    """Pixel numbers ``(B, n)`` into the flattened ``(V, H, W)`` grid -> the numbers ``(B, n k^2)``
    of their ``k x k`` sub-pixels in the ``(V, kH, kW)`` grid, each pixel's ``k^2`` in a row.

    Rendering at ``kH x kW`` puts a ray through each sub-pixel's centre, so the mean of a pixel's
    ``k^2`` renders is its box-filtered value, as ``vqvae.supersampled`` renders whole images.
    """
    v, pix = index_Bn // (height * width), index_Bn % (height * width)
    r, c = pix // width, pix % width
    ar = torch.arange(k, device=index_Bn.device)
    rows = (k * r)[..., None, None] + ar[:, None]  # (B, n, k, 1)
    cols = (k * c)[..., None, None] + ar[None, :]  # (B, n, 1, k)
    sub = v[..., None, None] * (k * height) * (k * width) + rows * (k * width) + cols
    return sub.reshape(index_Bn.shape[0], -1)


def input_mean_colour(encoder_input_BV10HW: torch.Tensor) -> torch.Tensor:
    """The mean RGB of the object pixels (depth > 0) of the input views -> ``(B, 3)``."""
    rgb, hit = encoder_input_BV10HW[:, :, :3], (encoder_input_BV10HW[:, :, 3:4] > 0).to(encoder_input_BV10HW.dtype)
    return (rgb * hit).sum((1, 3, 4)) / hit.sum((1, 3, 4)).clamp(min=1.0)


class ColourReadout(nn.Module):
    """A linear RGB head on the quantized colour latent, averaged over the occupied plane cells -> ``(B, 3)``.

    It reads the colour stream's latent channels (the last ``colour_latent_channels``), or
    every channel when the model has no colour stream. The occupied cells are those that
    the input pixels land in (``encoder.lift_to_planes`` at the latent size).
    """

    def __init__(self, model: SAR3DVQVAE):
        super().__init__()
        cfg = model.cfg
        self.channels = model.triplane_settings.colour_latent_channels or cfg.latent_channels
        self.latent_size = cfg.latent_size
        self.head = nn.Linear(self.channels, 3)

    def forward(self, f_hat_B3Chw: torch.Tensor, encoder_input: torch.Tensor, input_c: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            occ = lift_to_planes(encoder_input[:, :, :3], encoder_input[:, :, 3], input_c, self.latent_size)[:, :, 3]
        rgb_B3hw3 = self.head(f_hat_B3Chw[:, :, -self.channels:].movedim(2, -1))  # (B, 3, h, w, 3)
        w = occ[..., None].to(rgb_B3hw3.dtype)
        return (rgb_B3hw3 * w).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp(min=1e-6)


class VQVAEObjective(nn.Module):
    """Eq. 8 for one batch: ``forward(batch, step) -> {"loss", terms...}`` (see the module doc).

    Each term has a method of its own; ``weights(step)`` says how they add up to ``loss``.
    ``object_of(seed)`` gives the procedural object of the 3D aids (default ``procedural_object``).
    """

    def __init__(self, model: SAR3DVQVAE, settings: ObjectiveSettings | None = None, lpips_weights=None,
                 object_of: ObjectLookup | None = None):
        super().__init__()
        self.model, self.settings = model, settings or ObjectiveSettings()
        if int(self.settings.supersample) != self.settings.supersample or self.settings.supersample < 1:
            raise ValueError(f"supersample={self.settings.supersample} must be a positive integer (1: one ray a pixel)")
        self.discriminator = PatchDiscriminator()
        self.readout = ColourReadout(model) if self.settings.readout_weight > 0 else None
        self.object_of = object_of or procedural_object
        self.config = None  # training.train records model configs that are dataclasses; ours is in config.json
        self._lpips = [None]  # kept out of the module tree: frozen, never saved
        self.lpips_status = "off (lpips_weight = 0)"
        s = self.settings
        if s.lpips_weight > 0 and s.patch > 0:
            from .metrics import lpips_available, lpips_model

            if lpips_available(s.lpips_net, lpips_weights):
                self._lpips[0] = lpips_model(s.lpips_net, lpips_weights)
                self.lpips_status = f"on (LPIPS-{s.lpips_net}, weight {s.lpips_weight})"
            else:
                self.lpips_status = (f"off: the LPIPS-{s.lpips_net} backbone weights are not on disk "
                                     f"(metrics.lpips_available); nothing is downloaded")

    def clip_parameters(self):
        """What ``training.train`` clips: the VQVAE, not the discriminator (whose hinge-loss
        gradients would otherwise dominate the norm and shrink the generator's step)."""
        return self.model.parameters()

    def weights(self, step: int) -> dict:
        """The weight of each loss term at ``step``, in the order they are added: ``L_render``
        (its MAE parts carry the model's weights), ``lambda_VQ L_VQ``, the readout, LPIPS, the
        discriminator's hinge loss, ``lambda_GAN`` times the generator's (0 before ``gan_start``),
        then the 3D aids (Eq. 8 and the module doc)."""
        s = self.settings
        return {"render": 1.0, "vq": self.model.loss_weights["vq"], "readout": s.readout_weight,
                "lpips": s.lpips_weight, "d_loss": 1.0, "g_adv": float(step >= s.gan_start) * s.gan_weight,
                "occupancy": s.occupancy_weight, "colour": s.colour_weight}

    def total(self, terms: dict, step: int) -> torch.Tensor:
        """``sum_k weights(step)[k] * terms[k]`` over the weighted terms present in ``terms``."""
        parts = [w * terms[k] for k, w in self.weights(step).items() if k in terms]
        return sum(parts[1:], parts[0])

    # --- L_render: random rays and patches of all supervision views ------------------------
    def supervision_index(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """Pixel numbers ``(B, n)`` to render: ``rays`` random rays (``sample_rays``), then
        ``patches`` square patches of side ``patch`` (``triplane.patch_index``)."""
        s = self.settings
        B, V, _, H, W = batch["target_rgb"].shape
        parts = []
        if s.rays:
            parts.append(sample_rays(batch["target_mask"], s.rays, s.object_ray_share, generator))
        if s.patch:
            parts.append(patch_index(B, V, H, W, s.patch, s.patches, generator))
        return torch.cat(parts, 1)

    def render_supervision(self, batch: dict, planes: torch.Tensor, generator: torch.Generator) -> dict:
        """The feature planes rendered at the ``supervision_index`` pixels of ``batch["target_c"]``;
        with ``supersample`` k > 1 each pixel is the mean of its k x k sub-pixel rays (``subpixel_index``)."""
        index = self.supervision_index(batch, generator).to(planes.device)
        H, W = batch["target_rgb"].shape[-2:]
        k = int(self.settings.supersample)
        if k == 1:
            return self.model.render(planes, batch["target_c"], H, index=index, generator=generator)
        out = self.model.render(planes, batch["target_c"], H * k, index=subpixel_index(index, H, W, k),
                                generator=generator)
        B, n = index.shape
        pool = lambda x: x.reshape(B, n, k * k, *x.shape[2:]).mean(2)  # noqa: E731
        pix = index % (H * W)
        return {"rgb": pool(out["rgb"]), "depth": pool(out["depth"]), "mask": pool(out["mask"]), "index": index,
                "view": index // (H * W), "row": pix // W, "col": pix % W}

    def render_terms(self, batch: dict, out: dict) -> dict:
        """The MAE part of ``L_render`` on the rendered pixels: ``rgb``, ``depth``, ``mask`` and their
        weighted sum ``render`` (``SAR3DVQVAE.loss``)."""
        terms = self.model.loss(batch, {**out, "vq_loss": torch.zeros((), device=out["rgb"].device)})
        return {k: terms[k] for k in ("rgb", "depth", "mask", "render")}

    def patch_pair(self, batch: dict, out: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rendered and the true patches ``(B * patches, 3, p, p)`` (the last pixels of
        ``out``), or ``None`` without patches."""
        s = self.settings
        if not s.patch:
            return None
        n = s.patches * s.patch * s.patch
        shape = (batch["target_rgb"].shape[0] * s.patches, s.patch, s.patch, 3)
        fake = out["rgb"][:, -n:].reshape(shape).permute(0, 3, 1, 2)
        real = self.model.targets_for(batch, out)["rgb"][:, -n:].reshape(shape).permute(0, 3, 1, 2)
        return fake, real.to(fake.dtype)

    def lpips_term(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The perceptual part of ``L_render`` on the patches (LPIPS, inputs in [0, 1])."""
        return self._lpips[0](fake, real, normalize=True).mean()

    # --- L_VQ and L_GAN ------------------------------------------------------------------------
    @staticmethod
    def vq_terms(q) -> dict:
        """``L_VQ`` (codebook + beta commitment, Alg. 1) and the share of codes this batch picked."""
        return {"vq": q.vq_loss, "usage": float((q.usage > 0).float().mean())}

    def gan_terms(self, fake: torch.Tensor, real: torch.Tensor) -> dict:
        """Hinge losses of the PatchGAN: ``d_loss`` trains the discriminator on detached renders,
        ``g_adv`` the VQVAE through a frozen copy of it (``torch.func.functional_call``)."""
        # hinge loss: D pushes real logits above +1 and fake ones below -1 ...
        d_loss = F.relu(1 - self.discriminator(real)).mean() + F.relu(1 + self.discriminator(fake.detach())).mean()
        # ... and the generator raises D's logits on its renders, through a frozen copy of D
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_adv = -torch.func.functional_call(self.discriminator, frozen, (fake,)).mean()
        return {"d_loss": d_loss, "g_adv": g_adv}

    # --- our additions: the colour readout and the 3D aids ---------------------------------------
    def readout_term(self, q, batch: dict) -> torch.Tensor:
        """MAE between the readout of the quantized colour latent and the input views' mean object colour."""
        return F.l1_loss(self.readout(q.f_hat, batch["encoder_input"], batch["input_c"]),
                         input_mean_colour(batch["encoder_input"]))

    def occupancy_term(self, planes: torch.Tensor, seeds: list, generator: torch.Generator) -> torch.Tensor:
        """BCE between the field's opacity over one ray bin and the exact occupancy (``occupancy_samples``)."""
        s, field = self.settings, self.model.field
        pts, occ = occupancy_samples(seeds, s.occupancy_points, s.surface_noise, field.bound, generator,
                                     self.object_of)
        sigma, _ = field.query(planes, pts.to(planes.device))
        delta = 2 * field.bound / self.model.triplane_settings.num_samples  # one ray bin across the box
        alpha = (1 - torch.exp(-sigma.float() * delta)).clamp(1e-5, 1 - 1e-5)
        occ = occ.to(alpha.device)
        # BCE written out: F.binary_cross_entropy refuses to run under CUDA autocast
        return -(occ * alpha.log() + (1 - occ) * (1 - alpha).log()).mean()

    def colour_term(self, planes: torch.Tensor, seeds: list, generator: torch.Generator) -> torch.Tensor:
        """MAE between the field's colour near the surface and the exact diffuse colour (``surface_colour_samples``)."""
        s = self.settings
        pts, rgb = surface_colour_samples(seeds, s.colour_points, s.surface_noise / 2, generator, self.object_of)
        _, pred = self.model.field.query(planes, pts.to(planes.device))
        return F.l1_loss(pred.float(), rgb.to(pred.device))

    def forward(self, batch: dict, step: int) -> dict:
        """Every term of this batch at ``step`` and their weighted sum ``loss`` (``weights``)."""
        s, m = self.settings, self.model
        g = step_generator(step)  # drawn from in this order: rays, patches, stratified samples, the 3D aids
        q = m.encode(batch["encoder_input"], batch.get("input_c"))
        f_hat = q.f_hat
        if "draw_mask" in batch:  # decoder fine-tune on token draws (TokenDraws): some rows read drawn tokens
            f_hat = torch.where(batch["draw_mask"][:, None, None, None, None], batch["f_hat_draw"], f_hat)
        planes = m.decode_fhat(f_hat)
        out = self.render_supervision(batch, planes, g)
        terms = self.render_terms(batch, out)
        if self.readout is not None:
            terms["readout"] = self.readout_term(q, batch)
        terms.update(self.vq_terms(q))
        pair = self.patch_pair(batch, out)
        if pair is not None and self._lpips[0] is not None:
            terms["lpips"] = self.lpips_term(*pair)
        if pair is not None:
            terms.update(self.gan_terms(*pair))
        seeds = procedural_seeds(batch)
        if s.occupancy_weight > 0 and seeds:
            terms["occupancy"] = self.occupancy_term(planes, seeds, g)
        if s.colour_weight > 0 and seeds:
            terms["colour"] = self.colour_term(planes, seeds, g)
        terms["loss"] = self.total(terms, step)
        return terms


@torch.no_grad()
def reset_dead_codes_synced(quantizer, encoder, encoder_input, step: int, input_c=None) -> int:
    """``quantizer.reset_dead_codes`` on this batch's latents, the same on every DDP rank.

    Each rank holds its own batch, so resetting locally would give the same dead ids
    different vectors on different ranks; DDP synchronises gradients, not weights, and the
    codebooks would drift apart for good. Rank 0 resets and broadcasts its codebook and
    counters instead. Returns how many entries were reset.
    """
    import torch.distributed as dist

    n = quantizer.reset_dead_codes(encoder(encoder_input, input_c), step_generator(step, rank=0))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in (quantizer.codebook.weight.data, quantizer.steps_since_used, quantizer.usage_counts):
            dist.broadcast(t, src=0)
    return n


class PackedDataset(torch.utils.data.Dataset):
    """A ``MultiViewDataset`` read once into memory (float16), keeping what training needs.

    Reading and decoding a chunk costs ~50 ms, as much as a fifth of a training step on two
    cores; packing pays it once, in worker processes.
    """

    KEYS = ("encoder_input", "input_c", "target_rgb", "target_depth", "target_mask", "target_c", "seed")

    def __init__(self, dataset, workers: int = 2, desc: str = "packing data"):
        loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=workers,
                                             collate_fn=lambda items: items)
        self.items = []
        for items in tqdm(loader, desc=desc, unit="batch"):
            for it in items:
                self.items.append({k: (it[k].half() if torch.is_tensor(it[k]) and it[k].is_floating_point()
                                       and not k.endswith("_c") else it[k]) for k in self.KEYS})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {k: (v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v)
                for k, v in self.items[i].items()}


def single_scale_config(cfg: SAR3DConfig) -> SAR3DConfig:
    """The next-token baseline's VQVAE config: one scale at the full latent size."""
    d = cfg.to_dict()
    d["scales"] = [cfg.latent_size]
    return SAR3DConfig.from_dict(d)


def init_from(init, scales=None) -> SAR3DVQVAE:
    """A VQVAE initialised from the checkpoint ``init``; with ``scales``, under that schedule.

    The weights do not depend on the schedule (the ``phi`` convs are shared by position on
    [0, 1], ``quantizer.phi_index``), so a multi-scale model's encoder, codebook, ``phi`` and
    decoder can start the single-scale baseline, which is then fine-tuned.
    """
    model = SAR3DVQVAE.from_pretrained(init)
    if scales is None or tuple(scales) == tuple(model.cfg.scales):
        return model
    d = model.cfg.to_dict()
    d["scales"] = list(scales)
    other = SAR3DVQVAE(SAR3DConfig.from_dict(d))
    other.load_state_dict(model.state_dict())
    return other


def freeze_tokens(model: SAR3DVQVAE, base: str) -> dict:
    """Freeze ``model``'s encoder and quantizer, so that it writes and reads the tokens of the
    checkpoint it was loaded from (``base``), and record that base in ``model.tokens_of``.

    What is left to train is the decoder and the field, i.e. how a token map becomes a 3D
    object: every token file and every model trained on those tokens (the generators, the
    captioner) stays valid and decodes through the new decoder without retraining. (Whether that
    helps generation is an empirical question: RESULTS, "Fine-tuning the decoder alone".)
    """
    model.tokens_of = {"fingerprint": model.fingerprint(), "weights": model.token_weights_hash(),
                       "checkpoint": str(base)}
    model.encoder.requires_grad_(False)
    model.quantizer.requires_grad_(False)
    return model.tokens_of


def decoder_only_settings(settings: ObjectiveSettings) -> ObjectiveSettings:
    """The objective of a decoder-only fine-tune (``freeze_tokens``): no dead-code resets, which
    would rewrite the frozen codebook, and no colour readout, which reads the frozen latent."""
    return replace(settings, dead_code_every=0, readout_weight=0.0)


def freeze_reader(model: SAR3DVQVAE) -> None:
    """Freeze ``model``'s quantizer (codebook and ``phi``), decoder and field: what reads the tokens.

    What is left to train is the encoder, which chooses the tokens: an encoder-only fine-tune
    (``train_vqvae(encoder_only=True)``, our addition, a diagnostic). Fitting tokens to one object at
    a time through these frozen stages renders it better than the encoder's own tokens
    (RESULTS, "What each stage can hold"); this asks how much of that more encoder training
    recovers. The tokens change, so generators trained on the base's tokens do not read the result.
    """
    for part in (model.quantizer, model.decoder, model.field):
        part.requires_grad_(False)


class TokenDraws:
    """Token draws of a generator for the training objects (``ar_train.write_token_draws``), for a
    decoder-only fine-tune that also reads generated token maps (our addition).

    ``apply(batch, model, step)`` marks each procedural item that has draws with probability
    ``share`` and gives it one of its draws at random: ``batch["draw_mask"] (B,)`` and
    ``batch["f_hat_draw"] (B, 3, C, h, w)``, which ``VQVAEObjective.forward`` decodes instead of the
    item's own encoding. The item's views stay the targets: the decoder learns to render the
    object a draw came from, as the sampler's tokens will reach it.
    """

    def __init__(self, path, model: SAR3DVQVAE, share: float = 0.5):
        from .tokens import load_tokens

        if not 0 < share <= 1:
            raise ValueError(f"token draw share {share} must be in (0, 1]")
        loaded = load_tokens(path, model.cfg, model.fingerprint())
        if not loaded["vqvae_fingerprint"]:
            raise ValueError(f"{path} does not say which VQVAE wrote its tokens: write it with "
                             f"ar_train.write_token_draws")
        self.sequence, self.share, self.path = loaded["sequence"], float(share), str(path)
        self.rows = {}
        for i, s in enumerate(loaded["seed"]):
            self.rows.setdefault(int(s), []).append(i)

    def apply(self, batch: dict, model: SAR3DVQVAE, step) -> dict:
        g = step_generator(step, seed=derive_seed(getattr(step, "seed", 0), "token draws"))
        seeds = [int(x) for x in batch["seed"]]
        pick, choice = torch.rand(len(seeds), generator=g), torch.rand(len(seeds), generator=g)
        mask = torch.tensor([bool(p < self.share) and s in self.rows for p, s in zip(pick, seeds)])
        if not mask.any():
            return batch
        rows = [self.rows[s][int(c * len(self.rows[s]))] for s, c, m in zip(seeds, choice, mask) if m]
        with torch.no_grad():  # only the marked items' draws are decoded; the others keep their encoding
            drawn = model.quantizer.sequence_to_fhat(self.sequence[rows].to(batch["encoder_input"].device))
        f_hat = drawn.new_zeros(len(seeds), *drawn.shape[1:])
        f_hat[mask.to(f_hat.device)] = drawn
        return {**batch, "draw_mask": mask.to(f_hat.device), "f_hat_draw": f_hat}


def train_vqvae(data, cfg: SAR3DConfig, train_cfg: TrainConfig, settings: ObjectiveSettings | None = None,
                resume: bool = False, export=None, init=None, decoder_only: bool = False,
                encoder_only: bool = False, token_draws=None, token_draw_share: float = 0.5) -> dict:
    """Train the VQVAE on ``data`` (a built procedural folder or chunk folders, all 12 views
    supervised) with ``training.train``; export the VQVAE to ``export`` when given.

    ``init``: a VQVAE checkpoint folder to start from (fine-tuning), under ``cfg``'s schedule
    (``init_from``); ignored on resume. ``decoder_only``: fine-tune the decoder and field of
    ``init`` with its encoder and quantizer frozen (``freeze_tokens``; no dead-code resets, no
    colour readout, which reads the frozen latent): the result reads and writes ``init``'s
    tokens and carries its fingerprint. ``encoder_only``: fine-tune the encoder of ``init`` alone
    (``freeze_reader``; no dead-code resets, which would rewrite the frozen codebook).
    ``token_draws`` (decoder-only): a file of ``ar_train.write_token_draws``; a ``token_draw_share``
    of the items decode one of their drawn token maps instead of their encoding (``TokenDraws``).
    Returns a summary (steps, seconds, LPIPS status, final losses).
    """
    settings = settings or ObjectiveSettings()
    if decoder_only and encoder_only:
        raise ValueError("choose --decoder-only or --encoder-only, not both")
    if encoder_only and not init:
        raise ValueError("an encoder-only fine-tune needs the VQVAE whose decoder it keeps: pass --init FOLDER")
    if decoder_only and not init:
        raise ValueError("a decoder-only fine-tune needs the VQVAE whose tokens it keeps: pass --init FOLDER")
    if token_draws and not decoder_only:
        raise ValueError("token draws train the decoder alone: add --decoder-only (and --init the VQVAE that "
                         "wrote their tokens)")
    t0 = time.perf_counter()
    model = init_from(init, cfg.scales) if init else SAR3DVQVAE(cfg)
    cfg = model.cfg
    tokens_of = None
    if decoder_only:
        tokens_of = freeze_tokens(model, init)
        settings = decoder_only_settings(settings)
    draws = TokenDraws(token_draws, model, token_draw_share) if token_draws else None
    if encoder_only:
        freeze_reader(model)
        settings = replace(settings, dead_code_every=0)
    objective = VQVAEObjective(model, settings)
    dataset = MultiViewDataset(data, size=cfg.image_size, target_views=SUPERVISED_VIEWS)
    packed = PackedDataset(dataset)
    t_data = time.perf_counter() - t0
    print(f"data: {len(packed)} objects from {data}, packed in {t_data:.0f} s; LPIPS {objective.lpips_status}")
    out_dir = Path(train_cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "objective.json").write_text(json.dumps(
        {"model_config": cfg.to_dict(), "objective": asdict(settings), "lpips": objective.lpips_status,
         "tokens_of": tokens_of, **({"token_draws": {"file": draws.path, "share": draws.share}} if draws else {})},
        indent=2))

    def loss_fn(net, batch, step):
        inner = net.module if hasattr(net, "module") else net
        if settings.dead_code_every and step % settings.dead_code_every == 0:
            reset_dead_codes_synced(inner.model.quantizer, inner.model.encoder, batch["encoder_input"], step,
                                    batch.get("input_c"))
        if draws is not None:
            batch = draws.apply(batch, inner.model, step)
        return net(batch, step)

    t1 = time.perf_counter()
    rows = train(objective, packed, loss_fn, train_cfg, resume=resume)
    t_train = time.perf_counter() - t1
    if tokens_of is not None and model.fingerprint() != tokens_of["fingerprint"]:  # the promise, checked
        raise RuntimeError("the decoder-only fine-tune changed the encoder or the quantizer: "
                           "its tokens are not the base's")
    if export and is_main_process():  # one writer under DDP: the ranks hold the same weights
        model.save_pretrained(export)
    summary = {"steps": train_cfg.steps, "data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1),
               "lpips": objective.lpips_status, "final": rows[-1] if rows else None}
    print("summary " + json.dumps(summary))
    return summary


def load_default() -> SAR3DVQVAE:
    """The shipped tiny VQVAE ``data_samples/vqvae_tiny_lift`` (the tiny preset), in eval mode."""
    if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        raise FileNotFoundError(f"the VQVAE checkpoint {DEFAULT_CHECKPOINT} is missing: train it with `{TRAIN_COMMAND}`")
    return SAR3DVQVAE.from_pretrained(DEFAULT_CHECKPOINT).eval()


def load_run_checkpoint(run_dir, folder=None) -> tuple[SAR3DVQVAE, dict]:
    """The VQVAE of a training run's checkpoint ``folder`` (default: its latest) and that
    checkpoint's ``state.json``; the run's ``objective.json`` says how to build it."""
    folder = folder or find_checkpoint(run_dir)
    if folder is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint: train first")
    meta = json.loads((Path(run_dir) / "objective.json").read_text())
    model = SAR3DVQVAE(SAR3DConfig.from_dict(meta["model_config"]))
    state = load_checkpoint(folder, VQVAEObjective(model, ObjectiveSettings(**meta["objective"])))
    model.tokens_of = meta.get("tokens_of")
    return model, state


def export_checkpoint(run_dir, export) -> Path:
    """Write the VQVAE of a training run's latest checkpoint as a ``save_pretrained`` folder."""
    return load_run_checkpoint(run_dir)[0].save_pretrained(export)
