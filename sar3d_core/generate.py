"""Text- and image-to-3D with a trained generator (paper Sec. 4.2, Fig. 3a; Supp. C).

``Pipeline`` pairs the three frozen pieces a sample needs and checks that they belong
together: the condition encoder (its ``name`` must be the one the transformer was trained
on), the VQVAE (same config as the one whose tokens trained it), and the transformer.
``Pipeline.generate`` then runs the whole pipeline, timing each stage:

1. ``condition``: the prompt or image -> pooled vector + token features;
2. ``sample``: next-scale (K passes with the KV cache) or next-token (``3 h w`` passes)
   sampling with classifier-free guidance (``sampling``);
3. ``decode``: Alg. 2 (tokens -> ``f_hat``) and the triplane decoder;
4. ``render``: volume-rendered views (optional);
5. ``mesh``: a surface (optional): marching cubes on the field, or FlexiCubes (Sec. 4.1) with
   the decoder fine-tune made for this VQVAE (``flexicubes_train.finetune_for``; Dual Marching
   Cubes with unit weights on the NeRF field when there is none).

Image to 3D can also keep the best of N samples by how well each, rendered from the condition
camera, reproduces the condition image (``Pipeline.sample_best_of``, our addition): the shipped
image settings (``IMAGE_SAMPLING``) do, with a second round over the fine scales.

``Generator`` is another name for ``Pipeline``; the code says ``Pipeline`` so the class is
never confused with the ``torch.Generator`` random streams that samplers take as arguments.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .ar_train import load_generator
from .sampling import sample_next_scale, sample_next_token
from .vqvae import _json_normal

DATA_SAMPLES = Path(__file__).resolve().parent.parent / "data_samples"
DEFAULT_TEXT = DATA_SAMPLES / "ar_text_tiny"
DEFAULT_IMAGE = DATA_SAMPLES / "ar_image_tiny"
DEFAULT_NEXT_TOKEN = DATA_SAMPLES / "ar_text_next_token_tiny"
DEFAULT_SINGLE_SCALE_VQVAE = DATA_SAMPLES / "vqvae_single_scale_lift"
# The shipped sampling settings (`sar3d generate` uses them unless told otherwise; top-k 10 and
# top-p 0.5 for both). Text: the paper's guidance, 4 with the official linear ramp. Image: no
# guidance (it costs the image model novel-view PSNR: the view already pins the object) and the
# best of 16 by agreement with the condition view, then 16 more from scale 4 (our addition,
# ``Pipeline.sample_best_of``), then the kept sample's tokens fitted to the condition view for 50
# steps (our addition, ``Pipeline.fit_condition_view``); the measurements behind them are in
# docs/RESULTS.md.
TEXT_SAMPLING = {"cfg": 4.0, "cfg_schedule": "linear", "candidates": 1, "refine_from": None, "fit_steps": 0}
IMAGE_SAMPLING = {"cfg": 1.0, "cfg_schedule": "constant", "candidates": 16, "refine_from": 4, "fit_steps": 50}
WHITE = 0.99  # a condition image's pixels with every channel above this are background


@dataclass
class Generation:
    """What ``Pipeline.generate`` made for a batch of B conditions."""

    tokens: list  # [(B, 3, h_k, w_k)] per scale
    planes: torch.Tensor  # (B, 3, F, H', W') feature triplanes
    views: dict | None  # rgb (B, V, 3, H, W), depth, mask, or None
    meshes: list | None  # trimesh.Trimesh per object (None where the field has no surface)
    seconds: dict = field(default_factory=dict)  # per stage
    model: str = ""  # which checkpoints made it
    mesher: str = ""  # which surface extractor made the meshes (empty: none)

    def timing_line(self) -> str:
        total = sum(self.seconds.values())
        parts = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in self.seconds.items())
        return f"{1000 * total:.0f} ms in all: {parts}"


def find_vqvae(ref: str) -> Path:
    """The VQVAE folder a generator names (``vqvae_checkpoint`` in its config): a folder of that
    name under ``data_samples/`` first (the name travels with a clone, an absolute path does not),
    then the path itself."""
    for folder in (DATA_SAMPLES / Path(ref).name, Path(ref).expanduser()):
        if (folder / "model.safetensors").is_file():
            return folder
    raise FileNotFoundError(f"the generator was trained on tokens of the VQVAE {ref!r}, which is not here "
                            f"(nor under {DATA_SAMPLES}): pass its folder with --vqvae")


class Pipeline:
    """Condition encoder + transformer + VQVAE, checked to be a trained set (see module doc)."""

    def __init__(self, transformer, meta: dict, vqvae, encoder, name: str = "generator"):
        if _json_normal(meta["vqvae_config"]) != _json_normal(vqvae.cfg.to_dict()):
            raise ValueError("the VQVAE does not match the generator: it was trained on tokens of another "
                             "config (pass the VQVAE checkpoint it was trained with)")
        tower = encoder.text_name if meta["condition"] == "text" else encoder.image_name
        if tower != meta["condition_encoder"]:
            raise ValueError(f"the generator was trained on features of {meta['condition_encoder']!r}, "
                             f"not {tower!r}: load that condition encoder")
        transformer.check_quantizer(vqvae.quantizer)
        wanted = meta.get("vqvae_fingerprint")
        if wanted and wanted != (have := vqvae.fingerprint()):
            raise ValueError(f"the generator was trained on tokens of the VQVAE {meta.get('vqvae_checkpoint', '?')!r} "
                             f"(fingerprint {wanted}), not of this one ({have}): "
                             f"pass that VQVAE checkpoint")
        self.transformer, self.meta, self.vqvae, self.encoder = transformer.eval(), meta, vqvae.eval(), encoder
        self.condition_kind, self.name = meta["condition"], name

    @classmethod
    def from_pretrained(cls, folder, vqvae_folder=None, encoder=None) -> "Pipeline":
        """``folder``: a ``save_generator`` checkpoint; ``vqvae_folder``: default the VQVAE its
        config names (``find_vqvae``), else the shipped tiny VQVAE (or the single-scale one for a
        next-token model); ``encoder``: default the tiny CLIP."""
        from .conditioning import load_condition_encoder
        from .vqvae import SAR3DVQVAE
        from .vqvae_train import DEFAULT_CHECKPOINT

        transformer, meta = load_generator(folder)
        if vqvae_folder is None and meta.get("vqvae_checkpoint"):
            vqvae_folder = find_vqvae(meta["vqvae_checkpoint"])
        elif vqvae_folder is None:
            vqvae_folder = DEFAULT_SINGLE_SCALE_VQVAE if meta["next_token"] else DEFAULT_CHECKPOINT
        vqvae = SAR3DVQVAE.from_pretrained(vqvae_folder).eval()
        encoder = encoder or load_condition_encoder("tiny" if "tiny" in meta["condition_encoder"] else "auto")
        kind = "next-token" if meta["next_token"] else "next-scale"
        return cls(transformer, meta, vqvae, encoder,
                   f"{Path(folder).name} ({meta['condition']}, {kind}; VQVAE {Path(vqvae_folder).name})")

    @property
    def next_token(self) -> bool:
        return self.transformer.next_token

    def condition(self, text=None, image=None, truncate: bool = True):
        """``conditioning.Condition`` of prompts or images (exactly one of the two). ``truncate``: cut a
        prompt longer than the text encoder reads, with a warning (False: a ValueError)."""
        if (text is None) == (image is None):
            raise ValueError("give a text prompt or an image, not both and not neither")
        if text is not None:
            if self.condition_kind != "text":
                raise ValueError("this generator is image-conditioned: give --image")
            return self.encoder.encode_text(text, truncate=truncate)
        if self.condition_kind != "image":
            raise ValueError("this generator is text-conditioned: give --text")
        return self.encoder.encode_image(image)

    @torch.no_grad()
    def sample_tokens(self, cond, *, cfg: float = 4.0, cfg_schedule: str = "linear", top_k: int = 10,
                      top_p: float = 0.5, seed: int = 0, pass_seconds: list | None = None,
                      prefix: list | None = None) -> list:
        """Token maps for a condition. ``prefix`` (next-scale only): the first scales, kept; the
        rest are drawn given them (``sampling.sample_next_scale``)."""
        kw = dict(cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p, seed=seed, pass_seconds=pass_seconds)
        if self.next_token:
            if prefix:
                raise ValueError("a next-token generator draws one raster of tokens: it cannot keep coarse scales")
            return sample_next_token(self.transformer, self.vqvae.quantizer, cond.pooled, cond.tokens, cond.mask, **kw)
        return sample_next_scale(self.transformer, self.vqvae.quantizer, cond.pooled, cond.tokens, cond.mask,
                                 prefix=prefix, **kw)

    def resample_fn(self, text=None, image=None, **sampling):
        """The token inspector's hook (``inspector.TokenInspector(resample_fn=...)``): ``fn(tokens, k, seed)``
        keeps scales ``1..k-1`` of ``tokens`` and draws scales ``k..K`` again for this prompt or image."""
        cond = self.condition(text, image, truncate=False)
        options = {"cfg": 4.0, "top_k": 10, "top_p": 0.5, **sampling}

        def fn(tokens: list, k: int, seed: int = 0) -> list:
            if not 1 <= int(k) <= len(tokens):
                raise ValueError(f"scale k={k} must be between 1 and {len(tokens)}")
            return self.sample_tokens(cond, seed=seed, prefix=[t.long() for t in tokens[:int(k) - 1]], **options)

        return fn

    def condition_camera(self) -> torch.Tensor:
        """The camera ``(25,)`` an image generator's condition images are taken from: the view of
        the chunk layout it was tested on (``condition_view`` in its config, ``cameras.CHUNK_LAYOUT``)."""
        from .cameras import chunk_cameras

        if self.condition_kind != "image":
            raise ValueError("only an image generator has a condition camera")
        return chunk_cameras()[int(self.meta.get("condition_view", 0))]

    @torch.no_grad()
    def condition_agreement(self, planes_B3FHW: torch.Tensor, images_B3HW: torch.Tensor,
                            camera: torch.Tensor | None = None, supersample: int = 1) -> torch.Tensor:
        """PSNR ``(B,)`` of each object rendered at the condition camera against its condition image
        (both at the VQVAE's image size): how well a sample explains the view it was drawn from.
        ``camera``: ``(25,)`` or ``(B, 25)``; default ``condition_camera``."""
        from .conditioning import _image_list, _square
        from .metrics import psnr

        size = self.vqvae.cfg.image_size
        target = torch.stack([_square(t, size) for t in _image_list(images_B3HW)]).to(planes_B3FHW.dtype)
        c = (self.condition_camera() if camera is None else torch.as_tensor(camera)).to(planes_B3FHW.dtype)
        c_B125 = c.reshape(-1, 1, 25).expand(planes_B3FHW.shape[0], 1, 25)  # one camera, or one per object
        rgb = self.vqvae.render(planes_B3FHW, c_B125, chunk=8192, supersample=supersample)["rgb"][:, 0]
        return psnr(rgb.clamp(0, 1), target)

    @torch.no_grad()
    def sample_best_of(self, cond, images, candidates: int, camera: torch.Tensor | None = None,
                       refine_from: int | None = None, seed: int = 0,
                       **sampling) -> tuple[list, torch.Tensor, torch.Tensor]:
        """Image to 3D, best of N (our addition, not the paper's): draw ``candidates`` samples per
        condition image and keep the one whose render at the condition camera agrees best with the
        image (``condition_agreement``). With ``refine_from=k``, a second round then keeps scales
        ``1..k-1`` of that sample, draws scales ``k..K`` ``candidates`` times more, and keeps the
        best of those and it: the coarse scales settle the shape, the second round its details.
        Only the condition image and its camera are read.
        Returns ``(tokens, planes, agreement (B, N))`` of the kept samples (N: every candidate scored)."""
        B, N = len(cond), int(candidates)
        if refine_from is not None and not 2 <= int(refine_from) <= len(self.transformer.scales):
            raise ValueError(f"refine_from={refine_from}: the second round starts at a scale between 2 and "
                             f"{len(self.transformer.scales)}")
        rep = lambda x: x.repeat_interleave(N, 0)  # noqa: E731  (B, ...) -> (B N, ...), candidates of one image adjacent
        cond_n = dataclasses.replace(cond, pooled=rep(cond.pooled), tokens=rep(cond.tokens), mask=rep(cond.mask))
        images_n = [im for im in _as_image_list(images) for _ in range(N)]
        if camera is not None and torch.as_tensor(camera).ndim == 2:  # one camera per image
            camera = rep(torch.as_tensor(camera))

        def best(tokens, planes, agree_BN):
            keep = torch.arange(B) * agree_BN.shape[1] + agree_BN.argmax(1)
            return [t[keep] for t in tokens], planes[keep]

        tokens = self.sample_tokens(cond_n, seed=seed, **sampling)
        planes = self.vqvae.decode_tokens(tokens)
        agree = self.condition_agreement(planes, images_n, camera).reshape(B, N)
        tokens, planes = best(tokens, planes, agree)
        if refine_from is not None:
            prefix = [rep(t).long() for t in tokens[:int(refine_from) - 1]]
            more = self.sample_tokens(cond_n, seed=seed + 1, prefix=prefix, **sampling)
            more_planes = self.vqvae.decode_tokens(more)
            more_agree = self.condition_agreement(more_planes, images_n, camera).reshape(B, N)
            # per image: the first round's choice (column 0), then the N redrawn
            both = [torch.cat([t[:, None], m.reshape(B, N, *m.shape[1:])], 1).flatten(0, 1) for t, m in zip(tokens, more)]
            both_planes = torch.cat([planes[:, None], more_planes.reshape(B, N, *more_planes.shape[1:])], 1).flatten(0, 1)
            round2 = torch.cat([agree.max(1, keepdim=True).values, more_agree], 1)
            tokens, planes = best(both, both_planes, round2)
            agree = torch.cat([agree, more_agree], 1)
        return tokens, planes, agree

    def fit_condition_view(self, tokens: list, images, steps: int, camera: torch.Tensor | None = None,
                           seed: int = 0) -> tuple[list, torch.Tensor]:
        """Image to 3D, then a search (our addition, not the paper's): the sampled tokens' latent
        ``f_hat`` is re-quantized and refined for ``steps`` (``SAR3DVQVAE.refine_latent``) so that the
        object renders its condition image better at the condition camera: RGB, and the image's
        non-white pixels as the mask. Only the condition image and its camera are read.
        ``camera``: ``(25,)`` or ``(B, 25)``; default ``condition_camera``. Returns ``(tokens, planes)``."""
        from .conditioning import _image_list, _square

        if self.condition_kind != "image":
            raise ValueError("fitting the condition view needs an image generator")
        vq = self.vqvae
        size = vq.cfg.image_size
        target = torch.stack([_square(t, size) for t in _image_list(images)])  # (B, 3, H, W)
        B = target.shape[0]
        c = (self.condition_camera() if camera is None else torch.as_tensor(camera)).reshape(-1, 1, 25)
        c = c.expand(B, 1, 25).to(target.dtype)
        alpha = (target.min(1, keepdim=True).values < WHITE).to(target.dtype)
        f_hat = vq.quantizer.tokens_to_fhat([t.long() for t in tokens], len(vq.cfg.scales))
        q = vq.refine_latent(f_hat, c, target[:, None], mask=alpha[:, None], steps=int(steps), seed=seed)
        with torch.no_grad():
            return q.tokens, vq.decode_tokens(q.tokens)

    @torch.no_grad()
    def generate(self, text=None, image=None, *, cfg: float = 4.0, cfg_schedule: str = "linear", top_k: int = 10,
                 top_p: float = 0.5, seed: int = 0, cameras: torch.Tensor | None = None, size: int | None = None,
                 mesh: bool = False, mesh_resolution: int | None = None, mesher: str = "marching-cubes",
                 flexicubes=None, candidates: int = 1, refine_from: int | None = None,
                 fit_steps: int = 0) -> Generation:
        """The pipeline of the module doc. ``cameras (V, 25)``: render those views (none if None).

        ``mesh``: also mesh each object with ``mesher`` (``meshing.MESHERS``) on ``mesh_resolution``
        cells per side (default 48 for marching cubes, the fine-tune's training grid for FlexiCubes).
        ``flexicubes``: a FlexiCubes fine-tune folder (default: the shipped one when it was made for
        this VQVAE, ``flexicubes_train.finetune_for``). ``candidates`` and ``refine_from`` (image only):
        keep the best of that many samples by agreement with the condition image (``sample_best_of``).
        ``fit_steps`` (image only): then fit the kept sample to the condition image (``fit_condition_view``).
        A prompt longer than the text encoder reads is a ValueError, not cut (``condition(truncate=False)``)."""
        from .meshing import MESHERS

        if mesher not in MESHERS:
            raise ValueError(f"mesher {mesher!r} is not one of {', '.join(MESHERS)}")
        if int(candidates) < 1 or (int(candidates) > 1 and image is None):
            raise ValueError(f"candidates={candidates}: best-of-N needs a condition image and N >= 1 "
                             f"(text generation draws one sample per prompt)")
        if refine_from is not None and int(candidates) < 2:
            raise ValueError("refine_from is a second round of best-of-N: give candidates >= 2 as well")
        if int(fit_steps) < 0 or (int(fit_steps) > 0 and image is None):
            raise ValueError(f"fit_steps={fit_steps}: fitting needs a condition image and steps >= 0")
        seconds = {}
        t = time.perf_counter()
        cond = self.condition(text, image, truncate=False)  # a prompt that does not fit is an error here
        seconds["condition"] = time.perf_counter() - t
        t = time.perf_counter()
        sampling = dict(cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p, seed=seed)
        if int(candidates) > 1:
            tokens, planes, _ = self.sample_best_of(cond, image, int(candidates), refine_from=refine_from, **sampling)
            seconds["sample, decode and select"] = time.perf_counter() - t
        else:
            tokens = self.sample_tokens(cond, **sampling)
            seconds["sample"] = time.perf_counter() - t
            t = time.perf_counter()
            planes = self.vqvae.decode_tokens(tokens)
            seconds["decode"] = time.perf_counter() - t
        if int(fit_steps) > 0:
            t = time.perf_counter()
            tokens, planes = self.fit_condition_view(tokens, image, int(fit_steps), seed=seed)
            seconds["fit the condition view"] = time.perf_counter() - t
        views = None
        if cameras is not None:
            t = time.perf_counter()
            c = cameras.to(planes.dtype)
            c = c.expand(planes.shape[0], -1, -1) if c.ndim == 2 else c
            views = self.vqvae.render(planes, c, size, chunk=8192)
            seconds["render"] = time.perf_counter() - t
        meshes, used = None, ""
        if mesh:
            t = time.perf_counter()
            meshes, used = self.mesh(tokens, planes, mesh_resolution, mesher, flexicubes)
            seconds["mesh"] = time.perf_counter() - t
        return Generation(tokens, planes, views, meshes, seconds, self.name, used)

    def flexicubes(self, folder=None):
        """The FlexiCubes fine-tune of this generator's VQVAE (loaded once; None when there is none)."""
        from .flexicubes_train import finetune_for

        key = str(folder)
        cache = self.__dict__.setdefault("_flexicubes", {})
        if key not in cache:
            cache[key] = finetune_for(self.vqvae, folder)
        return cache[key]

    @torch.no_grad()
    def mesh(self, tokens: list, planes: torch.Tensor, resolution: int | None = None,
             mesher: str = "marching-cubes", flexicubes=None) -> tuple[list, str]:
        """``(meshes, mesher used)``: a ``trimesh.Trimesh`` per object (None where it has no surface)."""
        from .meshing import extract_mesh

        fc = self.flexicubes(flexicubes) if mesher == "flexicubes" else None
        if fc is not None:
            used = f"FlexiCubes with the decoder fine-tune {fc.name}"
        elif mesher == "flexicubes":
            used = "FlexiCubes, unit weights on the NeRF field (no fine-tune for this VQVAE)"
        else:
            used = "marching cubes on the NeRF field"
        meshes = []
        for b in range(planes.shape[0]):
            try:
                if fc is not None:
                    meshes.append(fc.mesh([t[b:b + 1] for t in tokens], resolution))
                else:
                    meshes.append(extract_mesh(self.vqvae.field, planes[b:b + 1], self.vqvae.triplane_settings.num_samples,
                                               resolution or 48, mesher))
            except ValueError:
                meshes.append(None)
        return meshes, used


def _as_image_list(images) -> list:
    """One image or a batch (a list, or a 4-D array / tensor) -> a list of single images."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        return list(images)
    return [images]


Generator = Pipeline  # another name for the same class, for scripts that import generate.Generator


# ------------------------------------------------------------------------------ timing
def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not the sampler's cost
    times = sorted(_seconds(fn) for _ in range(repeats))
    return float(times[len(times) // 2])


@torch.no_grad()
def benchmark_sampling(next_scale: Pipeline, next_token: Pipeline | None = None,
                       prompt: str = "a 3D model of a chair coloured red", repeats: int = 5, cfg: float = 4.0,
                       mesh_resolution: int = 48) -> dict:
    """The numbers of ``sar3d bench sampling``, all in one run on this machine:

    * ``next_scale_s`` / ``next_token_s``: median wall time to sample one object's tokens
      with CFG (batch 1, both branches), and their ratio;
    * ``teacher_forced_s``: one teacher-forced forward over the full sequence at the same
      batch with CFG (2 rows: conditional and null), the compute floor of sampling; the two
      are timed in alternation and ``sampling_over_forward`` is the median of the
      per-repeat ratios (robust to a noisy machine's slow spells);
    * ``end_to_end_s``: text -> condition -> tokens -> planes -> marching-cubes mesh, and its stages;
    * where sampling time goes: ``next_scale_pass_ms`` (median wall time of each of the K passes,
      ``next_scale_pass_tokens`` new tokens each), ``next_token_pass_ms`` (median over all passes)
      and a least-squares line through the next-scale passes, ``pass_fixed_ms`` +
      ``pass_ms_per_token`` x tokens: what a pass costs whatever its size, and what each token adds;
    * ``speedup_bound``: the speed-up the transformer passes alone allow, ``(next-token passes /
      next-scale passes) x (next-token pass cost / mean next-scale pass cost)``; the measured
      ``speedup`` differs from it by the work outside the passes (the draws, filtering and
      bookkeeping of each step, which the next-token sampler pays once per token).
    """
    cond = next_scale.condition(text=prompt, truncate=False)
    kw = dict(cfg=cfg, top_k=10, top_p=0.5, seed=0)
    model, q = next_scale.transformer, next_scale.vqvae.quantizer
    out = {"prompt": prompt, "threads": torch.get_num_threads(), "repeats": repeats, "cfg": cfg,
           "next_scale_tokens": model.seq_len, "next_scale_passes": len(model.scales)}
    tokens = next_scale.sample_tokens(cond, **kw)
    x = model.teacher_input(q, tokens)
    null_p, null_t = model.null_condition(1, cond.tokens.shape[1])
    pooled2, tokens2 = torch.cat((cond.pooled, null_p)), torch.cat((cond.tokens, null_t))
    mask2 = torch.cat((cond.mask, torch.ones_like(cond.mask)))
    # interleaved: each repeat times one sampling and one forward back to back, so a slow
    # spell of a noisy machine hits both; the ratio is the median of the per-repeat ratios
    ns_passes, nt_passes = [], []
    sample_fn = lambda: next_scale.sample_tokens(cond, **kw, pass_seconds=ns_passes)  # noqa: E731
    forward_fn = lambda: model(torch.cat((x, x)), pooled2, tokens2, mask2)  # noqa: E731
    sample_fn(), forward_fn()  # warm-up
    ns_passes.clear()
    pairs = [(_seconds(sample_fn), _seconds(forward_fn)) for _ in range(repeats)]
    K = len(model.scales)
    pass_ms = 1000 * np.median(np.array(ns_passes).reshape(repeats, K), axis=0)
    n_tokens = np.diff(model.begins)
    slope, intercept = np.polyfit(n_tokens, pass_ms, 1) if K > 1 else (float("nan"), float("nan"))  # a line needs 2 passes
    out.update(next_scale_pass_tokens=[int(n) for n in n_tokens], next_scale_pass_ms=[float(v) for v in pass_ms],
               pass_fixed_ms=float(intercept), pass_ms_per_token=float(slope))
    out["next_scale_s"] = float(np.median([a for a, _ in pairs]))
    out["teacher_forced_s"] = float(np.median([b for _, b in pairs]))
    out["sampling_over_forward"] = float(np.median([a / b for a, b in pairs]))
    if next_token is not None:
        nt_cond = next_token.condition(text=prompt, truncate=False)
        out["next_token_tokens"] = next_token.transformer.seq_len
        nt_repeats = max(1, repeats // 2)
        out["next_token_s"] = _median_seconds(lambda: next_token.sample_tokens(nt_cond, **kw, pass_seconds=nt_passes),
                                              nt_repeats)
        timed = nt_passes[-nt_repeats * next_token.transformer.seq_len:]  # not the warm-up's
        out["next_token_pass_ms"] = float(1000 * np.median(timed))
        out["speedup"] = out["next_token_s"] / out["next_scale_s"]
        out["pass_count_ratio"] = out["next_token_tokens"] / out["next_scale_passes"]
        out["pass_cost_ratio"] = out["next_token_pass_ms"] / float(np.mean(pass_ms))
        out["speedup_bound"] = out["pass_count_ratio"] * out["pass_cost_ratio"]
    runs = []
    for i in range(repeats + 1):
        res = next_scale.generate(text=prompt, mesh=True, mesh_resolution=mesh_resolution, seed=i, cfg=cfg)
        runs.append(res.seconds)
    runs = runs[1:]  # the first is a warm-up
    totals = sorted(sum(r.values()) for r in runs)
    out["end_to_end_s"] = float(totals[len(totals) // 2])
    out["end_to_end_stages_s"] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    out["mesh_resolution"] = mesh_resolution
    return out
