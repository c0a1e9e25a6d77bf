"""Condition encoders: a frozen CLIP text encoder and a frozen DINOv2 image encoder (paper Sec. 4.2, Supp. C).

SAR3D generates from a text prompt or a single image (Sec. 4.2, Fig. 3 and S2): text goes
through the CLIP ViT-L text encoder (CLIP_T), an image through DINOv2 ViT-L, both frozen.
Their token features (CLIP's text tokens, DINOv2's patches) enter the transformer by
cross-attention; their pooled feature (CLIP's EOS token, DINOv2's CLS token) drives AdaLN
and is the start token of the sequence. ``ConditionEncoder`` returns both as a
``Condition``: ``pooled (B, D)``, ``tokens (B, T, D)``, ``mask (B, T)`` and ``name``, the
model that produced them (features of different encoders are never comparable).

Where the weights come from (DESIGN.md §4: nothing is downloaded at run time):

* ``ConditionEncoder.from_hub()``: ``openai/clip-vit-large-patch14`` and
  ``facebook/dinov2-large``, the paper's encoders, read with ``local_files_only=True`` from
  the Hugging Face cache or from local folders.
* ``ConditionEncoder.tiny_clip()``, the offline default: a tiny CLIP (``transformers``'
  ``CLIPModel`` with a small ``CLIPConfig``, about 1 M parameters) trained contrastively on
  64 px renders of the procedural world and their captions, with a word-level tokenizer over
  the captions' vocabulary. Its text tower encodes prompts, its vision tower images. It is
  shipped in ``data_samples/tiny_clip`` and retrained by ``python -m sar3d_core.conditioning``.
  Its ``metrics.json``: among 100 test-split objects (unseen captions, one view each), the
  caption finds its render first 46 % of the time and among the top 5 80 % (chance: 1 % and
  5 %); it knows only the procedural world's words (others become ``[UNK]``). It is a
  different network from the evaluation's feature network (``features``): a generator is
  never scored by the network it was conditioned on.

``load_condition_encoder("auto")`` takes the hub models when both are present, else the tiny CLIP.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

HUB_TEXT, HUB_IMAGE = "openai/clip-vit-large-patch14", "facebook/dinov2-large"
TINY_CLIP_FOLDER = Path(__file__).resolve().parent.parent / "data_samples" / "tiny_clip"
TINY_CLIP_NAME = "sar3d-tiny-clip-v2 (procedural renders, captions and short prompts, 64 px)"
TRAIN_COMMAND = "python -m sar3d_core.conditioning --out data_samples/tiny_clip"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DINOv2's normalisation
# ids 0..3. CLIPTextModel pools at the first EOS; an eos_token_id of 2 selects its legacy rule
# (pool at the largest id), so [EOS] must not be id 2.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


@dataclass
class Condition:
    """Features of B prompts or B images from one frozen encoder."""

    pooled: torch.Tensor  # (B, D): CLIP's EOS token / DINOv2's (or CLIP vision's) CLS token, after the last LayerNorm
    tokens: torch.Tensor  # (B, T, D): every text token / every image patch (row-major)
    mask: torch.Tensor  # (B, T) bool, False on padding
    name: str  # the model that produced the features
    truncated: list | None = None  # text only: which prompts were cut to the tokenizer's max length

    def __len__(self) -> int:
        return self.pooled.shape[0]


# ------------------------------------------------------------------------------ tokenizer of the tiny CLIP
def build_tokenizer(words, max_length: int = 32):
    """A word-level ``PreTrainedTokenizerFast``: NFKC + lower case, split on spaces and punctuation
    ("two-tone," -> two - tone ,), ``[BOS] words [EOS]``, unknown words -> ``[UNK]``. Offline, saved
    as JSON by ``save_pretrained`` (CLIP's BPE files would have to come from the hub)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in sorted(set(words)):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+|[^\w\s]+
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[
        ("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, pad_token="[PAD]",
                                   unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")


def caption_vocabulary(captions) -> list:
    """The words of ``captions`` as ``build_tokenizer`` splits them, plus the world's colour and category words."""
    from tokenizers import normalizers, pre_tokenizers

    from .world import CATEGORY_WORDS, COLOURS

    norm, pre = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]), pre_tokenizers.Whitespace()
    texts = list(captions) + list(COLOURS) + [w for ws in CATEGORY_WORDS.values() for w in ws]
    return sorted({w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))})


# ------------------------------------------------------------------------------ images in any form
def _image_list(images) -> list:
    """One image or a batch -> list of ``(3, H, W)`` float tensors in [0, 1], alpha composited on white."""
    if isinstance(images, (list, tuple)):
        items = list(images)
    elif isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        items = list(images)  # torch (B, C, H, W) or numpy (B, H, W, C)
    else:
        items = [images]
    if not items:
        raise ValueError("no images given")
    return [_one_image(x) for x in items]


def _one_image(x) -> torch.Tensor:
    from PIL import Image

    if isinstance(x, (str, Path)):
        x = Image.open(x)
    if isinstance(x, Image.Image):
        x = np.asarray(x.convert("RGBA" if "A" in x.mode or "transparency" in x.info else "RGB"))
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
            raise ValueError(f"a numpy image is (H, W, C) with C = 1, 3 or 4 (uint8 or floats in [0, 1]); "
                             f"got shape {x.shape}")
        t = torch.from_numpy(np.array(x)).permute(2, 0, 1)  # (a writable copy) HWC -> CHW
    elif isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(f"a torch image is (C, H, W) with C = 1, 3 or 4 (floats in [0, 1] or uint8); "
                             f"got shape {tuple(t.shape)}")
    else:
        raise TypeError(f"an image is a file, a PIL image, a numpy (H, W, C) array or a torch (C, H, W) tensor, "
                        f"not {type(x).__name__}")
    t = t.float() / 255 if t.dtype == torch.uint8 else t.float()
    if t.numel() == 0 or not torch.isfinite(t).all() or t.min() < -1e-3 or t.max() > 1 + 1e-3:
        raise ValueError("an image is empty, or has pixel values outside [0, 1] (floats) / 0..255 (uint8)")
    if t.shape[0] == 4:  # straight alpha over a white background, as the renders: rgb a + 1 (1 - a)
        t = t[:3] * t[3:] + (1 - t[3:])
    return t.clamp(0, 1).expand(3, -1, -1)


def _square(t_3HW: torch.Tensor, size: int) -> torch.Tensor:
    """Pad to a square with white (the renders' background, nothing is cropped), resize to ``size``."""
    _, H, W = t_3HW.shape
    d = abs(H - W)
    if d:
        t_3HW = F.pad(t_3HW, (d // 2, d - d // 2, 0, 0) if H > W else (0, 0, d // 2, d - d // 2), value=1.0)
    if t_3HW.shape[-1] != size:
        t_3HW = F.interpolate(t_3HW[None], size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0].clamp(0, 1)
    return t_3HW


# ------------------------------------------------------------------------------ loading (offline only)
def _hf(loader, path, what: str, **kwargs):
    """``loader.from_pretrained(path, local_files_only=True)`` with a one-line error when absent."""
    from huggingface_hub.errors import HFValidationError

    try:
        return loader.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, HFValidationError) as err:  # not cached / not a folder nor a valid hub id
        if Path(path).exists():
            raise FileNotFoundError(f"{path} holds no loadable {what}: {str(err).splitlines()[0]}") from None
        raise FileNotFoundError(
            f"{what} {path!r} is neither a local folder nor in the Hugging Face cache and nothing is downloaded "
            f"at run time: fetch it once with `hf download {path}` (or pass a local folder), or use the offline "
            f"default ConditionEncoder.tiny_clip()") from None


def _preprocessor_config(path) -> dict:
    """``preprocessor_config.json`` of a folder or of a cached hub model, else {}."""
    from huggingface_hub import try_to_load_from_cache

    file = Path(path) / "preprocessor_config.json" if Path(path).is_dir() else \
        try_to_load_from_cache(str(path), "preprocessor_config.json")
    return json.loads(Path(file).read_text(encoding="utf-8")) if isinstance(file, (str, Path)) and \
        Path(file).is_file() else {}


def _text_tower(path):
    from transformers import AutoConfig, AutoTokenizer, CLIPModel, CLIPTextModel

    kind = _hf(AutoConfig, path, "CLIP text encoder").model_type
    if kind not in ("clip", "clip_text_model"):
        raise ValueError(f"{path} is a {kind!r} model, not a CLIP text encoder")
    f32 = {"dtype": torch.float32}
    model = _hf(CLIPModel, path, "CLIP model", **f32).text_model if kind == "clip" else \
        _hf(CLIPTextModel, path, "CLIP text model", **f32)
    return model, _hf(AutoTokenizer, path, "tokenizer")


def _image_tower(path):
    """(model, size, mean, std, prefix tokens, is CLIP, what it is) for a CLIP vision or DINOv2 model."""
    from transformers import AutoConfig, AutoModel, CLIPModel, CLIPVisionModel

    kind, f32 = _hf(AutoConfig, path, "image encoder").model_type, {"dtype": torch.float32}
    if kind == "clip":
        model = _hf(CLIPModel, path, "CLIP model", **f32).vision_model
    elif kind == "clip_vision_model":
        model = _hf(CLIPVisionModel, path, "CLIP vision model", **f32)
    elif kind.startswith("dinov2"):
        model = _hf(AutoModel, path, "DINOv2 model", **f32)
    else:
        raise ValueError(f"{path} is a {kind!r} model, not DINOv2 or a CLIP vision encoder")
    pre, is_clip = _preprocessor_config(path), kind.startswith("clip")
    crop = pre.get("crop_size") or model.config.image_size  # DINOv2 interpolates its positions: any size works
    size = model.config.image_size if is_clip else crop["height"] if isinstance(crop, dict) else int(crop)
    mean = pre.get("image_mean", CLIP_MEAN if is_clip else IMAGENET_MEAN)
    std = pre.get("image_std", CLIP_STD if is_clip else IMAGENET_STD)
    prefix = 1 + getattr(model.config, "num_register_tokens", 0)  # CLS (+ registers) before the patches
    return model, int(size), mean, std, prefix, is_clip, "CLIP vision encoder" if is_clip else "DINOv2"


# ------------------------------------------------------------------------------ the encoder
class ConditionEncoder(nn.Module):
    """Frozen text and image encoders: ``encode_text(prompts)`` and ``encode_image(images)`` -> ``Condition``."""

    def __init__(self, text_path=None, image_path=None, text_name: str | None = None, image_name: str | None = None):
        super().__init__()
        if text_path is None and image_path is None:
            raise ValueError("a ConditionEncoder needs a text or an image encoder (or both)")
        self.text_model = self.tokenizer = self.image_model = None
        if text_path is not None:
            self.text_model, self.tokenizer = _text_tower(text_path)
        if image_path is not None:
            self.image_model, self.image_size, mean, std, self.prefix_tokens, self.clip_vision, what = \
                _image_tower(image_path)
            image_name = image_name or f"{image_path} ({what})"
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[:, None, None], persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[:, None, None], persistent=False)
        self.text_name, self.image_name = text_name or f"{text_path} (CLIP text encoder)", image_name
        self.requires_grad_(False)  # frozen, as in the paper
        self.eval()

    @classmethod
    def from_hub(cls, text=HUB_TEXT, image=HUB_IMAGE) -> "ConditionEncoder":
        """The paper's encoders (hub ids or local folders; None leaves a side out), offline only."""
        return cls(text, image)

    @classmethod
    def tiny_clip(cls, folder=TINY_CLIP_FOLDER) -> "ConditionEncoder":
        """The offline default: both towers of the tiny CLIP trained on the procedural world."""
        folder = Path(folder)
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"the tiny CLIP {folder} is missing: train it with `{TRAIN_COMMAND}` "
                                    f"(about 10 minutes on 2 CPU cores)")
        where = "" if folder.resolve() == TINY_CLIP_FOLDER else f" from {folder}"
        return cls(folder, folder, f"{TINY_CLIP_NAME}: text tower{where}", f"{TINY_CLIP_NAME}: vision tower{where}")

    @property
    def name(self) -> str:
        return (f"text: {self.text_name if self.text_model is not None else '-'} | "
                f"image: {self.image_name if self.image_model is not None else '-'}")

    @property
    def max_text_length(self) -> int:
        return min(self.tokenizer.model_max_length, self.text_model.config.max_position_embeddings)

    def train(self, mode: bool = True):  # frozen: stays in eval mode inside a module that trains
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode_text(self, prompts) -> Condition:
        """Prompts (a str or a list) -> ``Condition`` with ``tokens (B, L, D)`` padded to the max length L.
        An empty prompt is a ValueError; a longer one is truncated (``truncated[b]``) with a warning."""
        if self.text_model is None:
            raise ValueError(f"this encoder has no text side ({self.name})")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("every prompt must be a non-empty string (e.g. 'a red chair with four legs'); "
                             "classifier-free guidance learns its own null condition")
        L = self.max_text_length
        truncated = [len(ids) > L for ids in self.tokenizer(prompts, verbose=False)["input_ids"]]
        if any(truncated):
            warnings.warn(f"{sum(truncated)} of {len(prompts)} prompts were longer than the {L} tokens of "
                          f"{self.text_name} and were truncated (see Condition.truncated)", stacklevel=2)
        enc = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        ids_BL, mask_BL = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        out = self.text_model(input_ids=ids_BL, attention_mask=mask_BL)
        return Condition(out.pooler_output, out.last_hidden_state, mask_BL.bool(), self.text_name, truncated)

    @torch.no_grad()
    def encode_image(self, images) -> Condition:
        """Images (PIL, numpy HWC uint8, torch CHW in [0, 1], any size, RGBA composited on white; one or a
        batch) -> ``Condition`` with ``tokens (B, P, D)``, one per patch."""
        if self.image_model is None:
            raise ValueError(f"this encoder has no image side ({self.name})")
        x_B3HW = torch.stack([_square(t, self.image_size) for t in _image_list(images)]).to(self.device)
        out = self.image_model(pixel_values=(x_B3HW - self.mean) / self.std)
        tokens_BPD = out.last_hidden_state[:, self.prefix_tokens:]
        if self.clip_vision:  # CLIP normalises only its CLS output; normalise the patches the same way (as DINOv2)
            tokens_BPD = self.image_model.post_layernorm(tokens_BPD)
        mask_BP = torch.ones(tokens_BPD.shape[:2], dtype=torch.bool, device=tokens_BPD.device)
        return Condition(out.pooler_output, tokens_BPD, mask_BP, self.image_name)


def load_condition_encoder(kind: str = "auto") -> ConditionEncoder:
    """``"hub"``: the paper's CLIP + DINOv2 (offline; FileNotFoundError if absent); ``"tiny"``: the shipped
    tiny CLIP; ``"auto"``: hub when both are present, else tiny. ``encoder.name`` says which was used."""
    if kind not in ("auto", "hub", "tiny"):
        raise ValueError(f"kind must be 'auto', 'hub' or 'tiny', got {kind!r}")
    if kind != "tiny":
        try:
            return ConditionEncoder.from_hub(HUB_TEXT, HUB_IMAGE)
        except FileNotFoundError:
            if kind == "hub":
                raise
    return ConditionEncoder.tiny_clip(TINY_CLIP_FOLDER)


# ------------------------------------------------------------------------------ training the tiny CLIP
def tiny_clip_config(vocab_size: int, max_length: int = 32, image_size: int = 64, patch_size: int = 8,
                     width: int = 128, layers: int = 4, heads: int = 4):
    """Both towers: ``layers`` pre-LN blocks of ``width`` (MLP 2 x width), projections to ``width``."""
    from transformers import CLIPConfig

    common = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=heads, projection_dim=width)
    return CLIPConfig(text_config=dict(vocab_size=vocab_size, max_position_embeddings=max_length, pad_token_id=0,
                                       bos_token_id=2, eos_token_id=3, **common),
                      vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
                      projection_dim=width)


@torch.no_grad()
def clip_retrieval(model, tokenizer, captions, images_N3HW, mean=CLIP_MEAN, std=CLIP_STD) -> dict:
    """Text -> image and image -> text top-1 / top-5 accuracy among the N pairs (chance: 1/N, 5/N)."""
    model.eval()
    enc = tokenizer(list(captions), padding="max_length", truncation=True, return_tensors="pt")
    x = images_N3HW.float() / 255 if images_N3HW.dtype == torch.uint8 else images_N3HW.float()
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    logits_NN = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x).logits_per_text
    out = {}
    for name, s_NN in (("text_to_image", logits_NN), ("image_to_text", logits_NN.T)):
        rank_N = (s_NN > s_NN.diagonal()[:, None]).sum(1)  # 0 = the true partner scores highest
        out.update({f"{name}_top{k}": float((rank_N < k).float().mean()) for k in (1, 5)})
    return out


def _string_ids(strings) -> list:
    """One integer per string, equal for equal strings: ["a", "b", "a"] -> [0, 1, 0]."""
    seen = {}
    return [seen.setdefault(s, len(seen)) for s in strings]


@torch.no_grad()
def short_prompt_retrieval(model, tokenizer, objects, images_N3HW, mean=CLIP_MEAN, std=CLIP_STD) -> dict:
    """Does the text tower place a short prompt next to the right renders? For every distinct
    "a <colour> <category>" among ``objects``, the nearest render (cosine) is a hit when its object
    has that category (and colour). Chance is the share of renders of that category (and colour)."""
    model.eval()
    prompts = sorted({f"a {o.attributes['colour']} {o.category}" for o in objects})
    from .world import with_article

    enc = tokenizer([with_article(p) for p in prompts], padding="max_length", truncation=True,
                    return_tensors="pt")
    x = images_N3HW.float() / 255 if images_N3HW.dtype == torch.uint8 else images_N3HW.float()
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x)
    best = out.logits_per_text.argmax(1)  # (P,): the nearest render of each prompt
    cat = [p.split()[-1] for p in prompts]
    col = [p.split()[1] for p in prompts]
    hits_cat = [objects[int(b)].category == c for b, c in zip(best, cat)]
    hits_both = [h and objects[int(b)].attributes["colour"] == k for h, b, k in zip(hits_cat, best, col)]
    return {"prompts": len(prompts), "category_top1": sum(hits_cat) / len(prompts),
            "category_and_colour_top1": sum(hits_both) / len(prompts),
            "chance_category": 1 / len({o.category for o in objects})}


def train_tiny_clip(out_folder=TINY_CLIP_FOLDER, num_objects: int = 3000, views: int = 4, epochs: int = 60,
                    seed: int = 0, batch_size: int = 128, lr: float = 1e-3, threads: int = 2, eval_count: int = 100,
                    max_length: int = 32, progress: bool = True, prompt_forms: bool = True):
    """Train a ``CLIPModel`` contrastively (InfoNCE, learnable temperature, AdamW, one-cycle schedule) on
    renders of train-split objects and their captions; save it with its tokenizer, image processor
    and ``metrics.json`` (text <-> image retrieval among ``eval_count`` test-split objects).

    With ``prompt_forms`` each object is seen with its caption or one of the world's other forms
    of it (``ProceduralObject.prompts``), drawn per step; equal prompts in a batch are not negatives.
    The renders are the feature network's (``features.training_renders``: the first ``num_objects``
    train and val objects from ``views`` random views, rendered once and cached), of which only
    the train-split objects are used: the val and test captions stay unseen."""
    from transformers import CLIPImageProcessor, CLIPModel

    from .features import augment, render_objects, training_objects, training_renders
    from .world import objects_in_split

    t0, threads_before = time.perf_counter(), torch.get_num_threads()
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # the SDF renderer is bound by per-op overhead: one thread is fastest
    images, _, first_render_s = training_renders(num_objects, views, seed, progress=progress)  # (num_objects * V, ...)
    objects = training_objects(num_objects)
    keep = [i for i, o in enumerate(objects) if o.split == "train"]
    objects = [objects[i] for i in keep]
    images = images.view(num_objects, views, 3, 64, 64)[keep]  # (N, V, 3, 64, 64) uint8
    render_s, N = time.perf_counter() - t0, len(keep)
    torch.set_num_threads(threads)
    # every object with its caption and the world's other forms of it ("a red chair", a paraphrase, ...)
    forms = [[o.caption, *o.prompts] for o in objects] if prompt_forms else [[o.caption] for o in objects]
    K = len(forms[0])
    captions = [p for f in forms for p in f]  # (N * K,)
    tokenizer = build_tokenizer(caption_vocabulary(captions), max_length)
    n_long = sum(len(ids) > max_length for ids in tokenizer(captions, verbose=False)["input_ids"])
    enc = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")
    text_id = torch.tensor(_string_ids(captions))  # equal prompts share an id
    model = CLIPModel(tiny_clip_config(len(tokenizer), max_length))
    print(f"{TINY_CLIP_NAME}: {sum(p.numel() for p in model.parameters())} parameters, vocabulary "
          f"{len(tokenizer)}, {N} train objects x {views} views ({render_s:.0f} s), "
          f"{n_long} captions longer than {max_length} tokens")
    mean_3, std_3 = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.05},
                             {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    per_epoch = N // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order, view = torch.randperm(N, generator=g), torch.randint(views, (N,), generator=g)
        form = torch.randint(K, (N,), generator=g)
        bar = tqdm(range(per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for i in bar:  # one view per object and batch: no second positive among the negatives
            idx = order[i * batch_size:(i + 1) * batch_size]
            rows = idx * K + form[idx]  # one prompt form per object
            x = (augment(images[idx, view[idx]].float() / 255, g) - mean_3) / std_3
            # logits_tv = exp(s) cos(text_t, image_v), s the learnable log inverse temperature; InfoNCE both ways:
            # L = 1/2 [CE(logits, diag) + CE(logits^T, diag)]
            logits_BB = model(input_ids=enc["input_ids"][rows], attention_mask=enc["attention_mask"][rows],
                              pixel_values=x).logits_per_text
            target = torch.arange(len(idx))
            # two objects with the same short prompt ("a red chair") are not each other's negatives
            same_BB = (text_id[rows][:, None] == text_id[rows][None, :]) & ~torch.eye(len(idx), dtype=torch.bool)
            logits_BB = logits_BB.masked_fill(same_BB, float("-inf"))
            loss = (F.cross_entropy(logits_BB, target) + F.cross_entropy(logits_BB.T, target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))  # temperature at least 0.01, as CLIP
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1 / model.logit_scale.exp().item():.3f}")
    train_s = time.perf_counter() - t0 - render_s
    test = objects_in_split("test", eval_count)
    torch.set_num_threads(1)
    test_images = render_objects(test, 1, seed + 1, 64, progress=progress, desc="test renders")
    torch.set_num_threads(threads)
    retrieval = clip_retrieval(model, tokenizer, [o.caption for o in test], test_images)
    short = short_prompt_retrieval(model, tokenizer, test, test_images)
    out = Path(out_folder)
    model.save_pretrained(out)  # config.json + model.safetensors
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, image_mean=list(CLIP_MEAN),
                       image_std=list(CLIP_STD)).save_pretrained(out)
    metrics = {"model": TINY_CLIP_NAME, "command": f"python -m sar3d_core.conditioning --out {out_folder} "
               f"--objects {num_objects} --views {views} --epochs {epochs} --seed {seed} --threads {threads}",
               "parameters": sum(p.numel() for p in model.parameters()), "vocabulary": len(tokenizer),
               "train_objects": N, "views_per_object": views, "captions_truncated": n_long,
               "render_seconds": round(first_render_s or render_s), "train_seconds": round(train_s),
               "prompt_forms_per_object": K, "final_loss": round(loss.item(), 4),
               "temperature": round(1 / model.logit_scale.exp().item(), 4),
               "retrieval": {"test_objects": eval_count, "chance_top1": 1 / eval_count, "chance_top5": 5 / eval_count,
                             **{k: round(v, 4) for k, v in retrieval.items()}},
               "short_prompts": {k: round(v, 4) if isinstance(v, float) else v for k, v in short.items()}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(json.dumps(metrics, indent=1))
    torch.set_num_threads(threads_before)
    return model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="train the tiny CLIP: the offline text and image condition encoder")
    p.add_argument("--out", default=str(TINY_CLIP_FOLDER), help="model folder (default: the shipped one)")
    p.add_argument("--objects", type=int, default=3000,
                   help="first train and val objects of the shared render set; the train ones are used (default 3000)")
    p.add_argument("--views", type=int, default=4, help="random views per object (default 4)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for training (rendering uses one)")
    args = p.parse_args(argv)
    train_tiny_clip(args.out, args.objects, args.views, args.epochs, args.seed, args.batch_size, args.lr, args.threads)


if __name__ == "__main__":
    main()
