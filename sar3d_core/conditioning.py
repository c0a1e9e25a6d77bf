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
  shipped in ``data_samples/tiny_clip`` and retrained by ``python -m sar3d_core.conditioning``
  (``sar3d train clip``; the shipped one in two steps, ``TRAIN_COMMAND``: then its text tower
  alone, with each prompt's colour-swapped twin as a hard negative): ``ClipObjective``, CLIP's
  symmetric InfoNCE, through the project's one loop ``training.train`` (run folder
  ``runs/tiny_clip``, resumable with ``--resume``). Its ``metrics.json``: among 100 test-split
  objects (unseen captions, one view each), the caption finds its render first 92 % of the time
  and among the top 5 always (chance: 1 % and 5 %); it knows only the procedural world's words (others become ``[UNK]``). It is a
  different network from the evaluation's feature network (``featnet``): a generator is
  never scored by the network it was conditioned on.

``load_condition_encoder("auto")`` takes the hub models when both are present, else the tiny CLIP.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .training import TrainConfig, batches_per_epoch, is_main_process, objective_loss, step_generator, train, world_info

HUB_TEXT, HUB_IMAGE = "openai/clip-vit-large-patch14", "facebook/dinov2-large"
TINY_CLIP_FOLDER = Path(__file__).resolve().parent.parent / "data_samples" / "tiny_clip"
TINY_CLIP_NAME = "sar3d-tiny-clip-v2 (procedural renders, captions and short prompts, 64 px)"
TRAIN_COMMAND = ("python -m sar3d_core.conditioning --out runs/tiny_clip_v2 && python -m sar3d_core.conditioning "
                 "--text-only-from runs/tiny_clip_v2 --twin-negatives --epochs 20 --run runs/tiny_clip_twins "
                 "--out data_samples/tiny_clip")  # v2, then its text tower with colour-swapped twins
DEFAULT_RUN = Path("runs") / "tiny_clip"  # the training run's folder (checkpoint, log.jsonl, loss.png)
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
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local load takes milliseconds: no "Loading weights" bar
    try:
        return loader.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, HFValidationError) as err:  # not cached / not a folder nor a valid hub id
        if Path(path).exists():
            raise FileNotFoundError(f"{path} holds no loadable {what}: {str(err).splitlines()[0]}") from None
        raise FileNotFoundError(
            f"{what} {path!r} is neither a local folder nor in the Hugging Face cache and nothing is downloaded "
            f"at run time: fetch it once with `hf download {path}` (or pass a local folder), or use the offline "
            f"default ConditionEncoder.tiny_clip()") from None
    finally:
        if shown:
            hf_logging.enable_progress_bar()


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


def _quoted(prompt: str, keep: int = 40) -> str:
    """A prompt for an error line: quoted, its first ``keep`` characters."""
    prompt = " ".join(prompt.split())
    return repr(prompt if len(prompt) <= keep else prompt[:keep] + "...")


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
                                    f"(about 15 minutes on 2 CPU cores)")
        where = "" if folder.resolve() == TINY_CLIP_FOLDER else f" from {folder}"
        text_name, image_name = tiny_clip_tower_names(folder)
        return cls(folder, folder, f"{text_name}{where}", f"{image_name}{where}")

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
    def encode_text(self, prompts, truncate: bool = True) -> Condition:
        """Prompts (a str or a list) -> ``Condition`` with ``tokens (B, L, D)`` padded to the max length L.
        An empty prompt is a ValueError. A longer one is truncated (``truncated[b]``) with a warning, as
        training and evaluation read the world's captions; ``truncate=False`` makes it a ValueError
        instead, for a prompt a person typed (``generate.Pipeline.generate``)."""
        if self.text_model is None:
            raise ValueError(f"this encoder has no text side ({self.name})")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("every prompt must be a non-empty string (e.g. 'a red chair with four legs'); "
                             "classifier-free guidance learns its own null condition")
        L = self.max_text_length
        lengths = self.tokenizer(prompts, verbose=False)["input_ids"]
        truncated = [len(ids) > L for ids in lengths]
        if any(truncated) and not truncate:
            b = truncated.index(True)
            raise ValueError(f"the prompt {_quoted(prompts[b])} is {len(lengths[b])} tokens long and the text encoder "
                             f"reads at most {L} ({self.text_name}): shorten it, e.g. 'a red chair with four legs'")
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


@contextmanager
def _num_threads(n: int):
    """Torch CPU threads set to ``n`` while inside."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# patterns whose two colours are not interchangeable: the main (first-named) colour is the bottom
# of a gradient, the wider band of stripes, the ground under dots, the main parts of a two-tone
# object. On a checkered object the two cover equal areas, so its swapped prompt is no negative.
ORDERED_PATTERNS = ("gradient", "striped", "dotted", "two-tone")


def swap_colours(text: str, a: str, b: str) -> str:
    """``text`` with the whole words ``a`` and ``b`` exchanged: "a red-to-blue vase" -> "a blue-to-red vase"."""
    return re.sub(rf"\b({re.escape(a)}|{re.escape(b)})\b", lambda m: b if m.group(1) == a else a, text)


def twin_prompts(obj, forms) -> list:
    """Each prompt form of ``obj`` with its two colours swapped, or None where that is no negative
    (a plain or checkered object, or a form that names fewer than both colours)."""
    c, c2 = obj.attributes.get("colour"), obj.attributes.get("secondary_colour")
    if obj.attributes.get("pattern") not in ORDERED_PATTERNS or not c or not c2 or c == c2:
        return [None] * len(forms)
    from .world import with_article

    out = []
    for f in forms:
        f = f.lower()  # the tokenizer lower-cases anyway
        t = swap_colours(f, c, c2)
        both = re.search(rf"\b{re.escape(c)}\b", f) and re.search(rf"\b{re.escape(c2)}\b", f)
        # the article follows the new colour ("an orange-to-red" -> "a red-to-orange"), or it would give the twin away
        out.append(with_article(re.sub(r"\b(a)n (?=[^aeiou\s])", r"\1 ", t)) if both else None)
    return out


class CaptionedRenders(torch.utils.data.Dataset):
    """One item per object: its ``V`` renders and its ``K`` prompt forms, tokenized.

    ``images``: uint8 ``(N, V, 3, H, W)``; ``prompts``: per object ``K`` strings (the caption and
    the world's other forms of it, ``ProceduralObject.prompts``). ``text_id`` is equal for equal
    prompts, so that a batch can tell two objects described alike ("a red chair").
    ``twins`` (optional): per object ``K`` strings or None, the same form with its two colours
    swapped (``twin_prompts``), a hard negative for that object's render (``ClipObjective``).
    """

    def __init__(self, images_NV3HW: torch.Tensor, prompts, tokenizer, twins=None):
        N = len(prompts)
        if images_NV3HW.ndim != 5 or images_NV3HW.shape[2] != 3 or images_NV3HW.shape[0] != N or N == 0:
            raise ValueError(f"need images (N, V, 3, H, W) and N prompt lists, got {tuple(images_NV3HW.shape)} and {N}")
        K = len(prompts[0])
        if K == 0 or any(len(forms) != K for forms in prompts):
            raise ValueError(f"every object needs the same number (>= 1) of prompt forms, "
                             f"got {sorted({len(f) for f in prompts})}")
        flat = [p for forms in prompts for p in forms]
        enc = tokenizer(flat, padding="max_length", truncation=True, return_tensors="pt")
        self.images = images_NV3HW
        self.input_ids = enc["input_ids"].view(N, K, -1)
        self.attention_mask = enc["attention_mask"].view(N, K, -1)
        self.text_id = torch.tensor(_string_ids(flat)).view(N, K)
        self.twins = None
        if twins is not None:
            if len(twins) != N or any(len(t) != K for t in twins):
                raise ValueError("twins need one entry per prompt form of every object")
            tw = [t or "" for ts in twins for t in ts]
            enc = tokenizer(tw, padding="max_length", truncation=True, return_tensors="pt")
            self.twins = {"twin_input_ids": enc["input_ids"].view(N, K, -1),
                          "twin_attention_mask": enc["attention_mask"].view(N, K, -1),
                          "has_twin": torch.tensor([t is not None for ts in twins for t in ts]).view(N, K)}

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {"images": self.images[i], "input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i],
                "text_id": self.text_id[i]}
        if self.twins is not None:
            item.update({k: v[i] for k, v in self.twins.items()})
        return item


class ClipObjective(nn.Module):
    """The contrastive loss of a ``CLIPModel`` on a batch of ``CaptionedRenders`` (what ``training.train`` minimises).

    Each object is seen with one view (augmented, ``featnet.augment``) and one prompt form, both
    drawn from ``step_generator(step)``: one view per object, so no second positive among the
    negatives. ``logits_tv = exp(s) cos(text_t, image_v)``, ``s`` the learnable log inverse
    temperature clamped to ``[0, ln 100]`` (temperature at least 0.01, as CLIP); InfoNCE both ways,
    ``L = 1/2 [CE(logits, diag) + CE(logits^T, diag)]`` (Radford et al. 2021, Fig. 3), where two
    objects with the same prompt are not each other's negatives.
    """

    MAX_LOG_SCALE = math.log(100)

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.tensor(CLIP_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD)[:, None, None], persistent=False)

    def optimizer_groups(self) -> list:
        """Weight decay (``TrainConfig.weight_decay``) on matrices only, not on gains, biases and the temperature."""
        params = list(self.parameters())
        return [{"params": [p for p in params if p.ndim >= 2]},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    def log_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.clamp(0, self.MAX_LOG_SCALE)

    def forward(self, batch: dict, step: int) -> dict:
        from .featnet import augment

        g = step_generator(step)
        images = batch["images"]
        (B, V), K, device = images.shape[:2], batch["input_ids"].shape[1], images.device
        obj = torch.arange(B, device=device)
        view = torch.randint(V, (B,), generator=g).to(device)
        form = torch.randint(K, (B,), generator=g).to(device)
        x = (augment(images[obj, view].float() / 255, g) - self.mean) / self.std
        out = self.clip(input_ids=batch["input_ids"][obj, form], attention_mask=batch["attention_mask"][obj, form],
                        pixel_values=x)
        scale = self.log_scale().exp()
        logits_BB = scale * out.text_embeds @ out.image_embeds.T  # both unit vectors
        text_id = batch["text_id"][obj, form]
        same_BB = (text_id[:, None] == text_id[None, :]) & ~torch.eye(B, dtype=torch.bool, device=device)
        logits_BB = logits_BB.masked_fill(same_BB, float("-inf"))
        image_to_text = logits_BB.T
        if "has_twin" in batch:  # each render also against its own prompt with the colours swapped
            has = batch["has_twin"][obj, form]
            twin = self.clip.get_text_features(input_ids=batch["twin_input_ids"][obj, form],
                                               attention_mask=batch["twin_attention_mask"][obj, form])
            twin = getattr(twin, "pooler_output", twin)
            twin_B = scale * (F.normalize(twin, dim=-1) * out.image_embeds).sum(-1)
            image_to_text = torch.cat([image_to_text, twin_B.masked_fill(~has, float("-inf"))[:, None]], 1)
        loss = (F.cross_entropy(logits_BB, obj) + F.cross_entropy(image_to_text, obj)) / 2
        return {"loss": loss, "temperature": 1 / scale.detach()}


def fit_clip(clip, dataset: CaptionedRenders, cfg: TrainConfig, resume: bool = False) -> list[dict]:
    """Train ``clip`` in place through ``training.train`` (``ClipObjective``); its temperature is
    left clamped as in training. Returns the log rows."""
    objective = ClipObjective(clip)
    rows = train(objective, dataset, objective_loss, cfg, resume=resume)
    with torch.no_grad():
        clip.logit_scale.copy_(objective.log_scale())
    return rows


def tiny_clip_train_config(num_objects: int, epochs: int, seed: int = 0, batch_size: int = 128, lr: float = 1e-3,
                           run_dir=DEFAULT_RUN) -> TrainConfig:
    """``epochs`` passes over ``num_objects`` objects: AdamW (weight decay 0.05 on matrices), torch's
    one-cycle schedule (10 % cosine warm-up, cosine decay; ``TrainConfig.schedule``), no gradient
    clipping; a checkpoint every 100 steps."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    steps = epochs * batches_per_epoch(num_objects, batch_size, world_info()[1])
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.05, grad_clip=0.0, log_every=10,
                       ckpt_every=100, seed=seed, out_dir=str(run_dir), betas=(0.9, 0.999), warmup=0.1,
                       schedule="one-cycle")


def new_tiny_clip(vocab_size: int, max_length: int = 32, seed: int = 0, **sizes):
    """A freshly initialised ``CLIPModel(tiny_clip_config(...))``, the same for the same seed."""
    from transformers import CLIPModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CLIPModel(tiny_clip_config(vocab_size, max_length, **sizes))


def _train_split_renders(num_objects: int, views: int, seed: int, progress: bool):
    """The train-split objects among ``featnet.training_objects(num_objects)``, their renders
    uint8 ``(N, V, 3, 64, 64)`` and the seconds the first rendering took (None when cached)."""
    from .featnet import training_objects, training_renders

    with _num_threads(1):  # the SDF renderer is bound by per-op overhead: one thread is fastest
        images, _, render_s = training_renders(num_objects, views, seed, progress=progress)
    objects = training_objects(num_objects)
    keep = [i for i, o in enumerate(objects) if o.split == "train"]
    return [objects[i] for i in keep], images.view(num_objects, views, 3, 64, 64)[keep], render_s


def tiny_clip_tower_names(folder) -> tuple[str, str]:
    """The names of a tiny CLIP folder's text and vision towers (``metrics.json``'s ``text_tower`` and
    ``vision_tower``; a folder without them is a from-scratch ``TINY_CLIP_NAME`` model). A generator
    records the name of the tower it was trained on, so a text tower trained further gets a name of
    its own while the untouched vision tower keeps its name."""
    names = {}
    if (Path(folder) / "metrics.json").is_file():
        names = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    return (names.get("text_tower", f"{TINY_CLIP_NAME}: text tower"),
            names.get("vision_tower", f"{TINY_CLIP_NAME}: vision tower"))


def save_tiny_clip(out_folder, clip, tokenizer) -> Path:
    """The folder ``ConditionEncoder.tiny_clip`` reads: the CLIPModel, its tokenizer and image processor."""
    from transformers import CLIPImageProcessor

    out = Path(out_folder)
    clip.save_pretrained(out)  # config.json + model.safetensors
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, image_mean=list(CLIP_MEAN),
                       image_std=list(CLIP_STD)).save_pretrained(out)
    return out


def _test_retrieval(clip, tokenizer, eval_count: int, seed: int, progress: bool) -> dict:
    """Retrieval among the first ``eval_count`` test-split objects (one fresh view each), captions and short prompts."""
    from .featnet import render_objects
    from .world import objects_in_split

    test = objects_in_split("test", eval_count)
    with _num_threads(1):
        images = render_objects(test, 1, seed + 1, 64, progress=progress, desc="test renders")
    retrieval = clip_retrieval(clip, tokenizer, [o.caption for o in test], images)
    short = short_prompt_retrieval(clip, tokenizer, test, images)
    return {"retrieval": {"test_objects": eval_count, "chance_top1": 1 / eval_count, "chance_top5": 5 / eval_count,
                          **{k: round(v, 4) for k, v in retrieval.items()}},
            "short_prompts": {k: round(v, 4) if isinstance(v, float) else v for k, v in short.items()}}


def train_tiny_clip(out_folder=TINY_CLIP_FOLDER, num_objects: int = 3000, views: int = 4, epochs: int = 60,
                    seed: int = 0, batch_size: int = 128, lr: float = 1e-3, threads: int = 2, eval_count: int = 100,
                    max_length: int = 32, progress: bool = True, prompt_forms: bool = True, run_dir=DEFAULT_RUN,
                    resume: bool = False, twin_negatives: bool = False, text_only_from=None):
    """Train the tiny CLIP contrastively (``ClipObjective`` through ``training.train``: run folder
    ``run_dir`` with checkpoint, ``log.jsonl`` and ``loss.png``; ``resume`` continues it) on renders of
    train-split objects and their captions; save it with its tokenizer, image processor and
    ``metrics.json`` (text <-> image retrieval among ``eval_count`` test-split objects) to ``out_folder``.

    With ``prompt_forms`` each object is seen with its caption or one of the world's other forms
    of it (``ProceduralObject.prompts``), drawn per step; equal prompts in a batch are not negatives.
    The renders are the feature network's (``featnet.training_renders``: the first ``num_objects``
    train and val objects from ``views`` random views, rendered once and cached), of which only
    the train-split objects are used: the val and test captions stay unseen.

    ``twin_negatives``: each render also meets its own prompt with the two colours swapped as a
    negative (``twin_prompts``: gradients, stripes, dots and two-tone objects), so that the text
    tower must tell "red-to-blue" from "blue-to-red".

    ``text_only_from``: a trained tiny CLIP folder; start from it and train its text tower (and
    text projection) alone, its vision tower, projection and temperature frozen, with its own
    tokenizer. The image features, and so every image-conditioned model, stay valid. (Such a model
    still carries ``TINY_CLIP_NAME`` when loaded: give its text tower a name of its own before a
    generator is trained on it and shipped.)"""
    t0 = time.perf_counter()
    objects, images, first_render_s = _train_split_renders(num_objects, views, seed, progress)
    render_s = time.perf_counter() - t0
    forms = [[o.caption, *o.prompts] if prompt_forms else [o.caption] for o in objects]
    captions = [p for f in forms for p in f]
    if text_only_from:
        from transformers import AutoTokenizer, CLIPModel

        clip = _hf(CLIPModel, text_only_from, "CLIP model", dtype=torch.float32)
        tokenizer = _hf(AutoTokenizer, text_only_from, "tokenizer")
        for module in (clip.vision_model, clip.visual_projection):
            module.requires_grad_(False)
        clip.logit_scale.requires_grad_(False)
    else:
        tokenizer = build_tokenizer(caption_vocabulary(captions), max_length)
    n_long = sum(len(ids) > max_length for ids in tokenizer(captions, verbose=False)["input_ids"])
    twins = [twin_prompts(o, f) for o, f in zip(objects, forms)] if twin_negatives else None
    dataset = CaptionedRenders(images, forms, tokenizer, twins)
    if not text_only_from:
        clip = new_tiny_clip(len(tokenizer), max_length, seed)
    cfg = tiny_clip_train_config(len(dataset), epochs, seed, batch_size, lr, run_dir)
    if is_main_process():
        print(f"{TINY_CLIP_NAME}: {sum(p.numel() for p in clip.parameters())} parameters, vocabulary "
              f"{len(tokenizer)}, {len(objects)} train objects x {views} views ({render_s:.0f} s), "
              f"{n_long} captions longer than {max_length} tokens, {cfg.steps} steps")
    with _num_threads(threads):
        rows = fit_clip(clip, dataset, cfg, resume)
        train_s = time.perf_counter() - t0 - render_s
        if not is_main_process():  # under torchrun the ranks hold the same weights: one writer
            return clip
        text_tower, vision_tower = f"{TINY_CLIP_NAME}: text tower", f"{TINY_CLIP_NAME}: vision tower"
        if text_only_from:  # the vision tower keeps its name, the text tower gets one of its own
            text_tower, vision_tower = tiny_clip_tower_names(text_only_from)
            text_tower += f" + {epochs} epochs text-only" + (" with colour-swapped twins" if twin_negatives else "")
        metrics = {"model": TINY_CLIP_NAME, "text_tower": text_tower, "vision_tower": vision_tower, "command": f"python -m sar3d_core.conditioning --out {out_folder} "
                   f"--objects {num_objects} --views {views} --epochs {epochs} --seed {seed} --threads {threads}"
                   + (" --twin-negatives" if twin_negatives else "")
                   + (f" --text-only-from {text_only_from}" if text_only_from else ""), "twin_negatives": twin_negatives,
                   "text_only_from": str(text_only_from) if text_only_from else None,
                   "parameters": sum(p.numel() for p in clip.parameters()), "vocabulary": len(tokenizer),
                   "train_objects": len(objects), "views_per_object": views, "captions_truncated": n_long,
                   "render_seconds": round(first_render_s or render_s), "train_seconds": round(train_s),
                   "steps": cfg.steps, "prompt_forms_per_object": len(forms[0]),
                   "final_loss": round(rows[-1]["loss"], 4),
                   "temperature": round(1 / clip.logit_scale.exp().item(), 4),
                   **_test_retrieval(clip, tokenizer, eval_count, seed, progress)}
    out = save_tiny_clip(out_folder, clip, tokenizer)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(json.dumps(metrics, indent=1))
    return clip


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
    p.add_argument("--run", default=str(DEFAULT_RUN), help=f"run folder: checkpoint, log.jsonl, loss.png "
                                                            f"(default {DEFAULT_RUN})")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--twin-negatives", action="store_true",
                   help="each render also against its prompt with the two colours swapped (gradients, stripes, "
                        "dots, two-tone objects)")
    p.add_argument("--text-only-from", default=None, metavar="FOLDER",
                   help="start from this tiny CLIP and train its text side alone (the image features stay as they are)")
    args = p.parse_args(argv)
    train_tiny_clip(args.out, args.objects, args.views, args.epochs, args.seed, args.batch_size, args.lr, args.threads,
                    run_dir=args.run, resume=args.resume, twin_negatives=args.twin_negatives,
                    text_only_from=args.text_only_from)


if __name__ == "__main__":
    main()
