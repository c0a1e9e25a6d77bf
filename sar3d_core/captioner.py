"""SAR3D-LLM: captions from the truncated scales of the 3D tokens (paper Sec. 4.3, Eq. 10, Figs. 7-8).

The paper captions an object from the first ``K - 2`` scales of its VQVAE tokens only
(``R~ = (r_1, ..., r_{K-2})``, 37.5 % of the paper's 2040 tokens; 90 of the tiny preset's 390):

    Z_proj = Gamma_proj(R~),   Z_m = Concat(Z_proj, Z~_t)                                 (Eq. 10)

As the official code (built on PointLLM) does it:

* every kept token id is looked up in the codebook, l2-normalised (8-d vectors, no position
  embedding of their own: the LLM's rotary positions order them), and an MLP projector
  ``C -> w/4 -> GELU -> w/2 -> GELU -> w`` maps it to the LLM's width ``w`` (officially
  ``8 -> 1024 -> 2048 -> 4096`` into Vicuna-7B);
* the projected tokens replace ``<point_patch>`` placeholders between ``<point_start>`` and
  ``<point_end>`` in ``inputs_embeds``, followed by the fixed instruction, in Vicuna v1.1's chat
  template: ``SYSTEM USER: <point_start><point_patch> x n<point_end>\\nPROMPT ASSISTANT: caption</s>``;
* the loss is the LM cross-entropy on the answer (and its ``</s>``) only: labels are -100 elsewhere.

Training (``train_captioner``, through the project's one loop ``training.train``):

* **stage 0** (ours, the stand-in for Vicuna's pretraining): the LLM alone learns the language
  of the training captions, text only (the chat with no 3D block, loss on every token);
* **stage 1** (Sec. 4.3): the projector and the three special-token embeddings train, the LLM is
  frozen (lr 2e-3, cosine with 3 % warm-up, as the official code);
* **stage 2**: LLM and projector train together (the paper: lr 2e-5 on Vicuna-7B; the tiny preset
  uses a larger rate, its 2 M-parameter LLM trains for minutes, not hours).

The LLM is a real ``transformers.LlamaForCausalLM`` (RMSNorm, rotary positions, SwiGLU):
offline, a small one over the project's word-level tokenizer (``conditioning.build_tokenizer``);
with ``llm=PATH`` any LLaMA-family checkpoint on disk (Vicuna-7B in the paper), read with
``local_files_only=True``, its embeddings resized for the three special tokens.
Captioning runs ``generate()`` (greedy or sampled, with its KV cache) on ``inputs_embeds``.

``StageSettings.colour_weight`` (1 by default: the official uniform loss) weighs the colour words of
the answer that much more in the loss of stages 1 and 2, our addition: the tiny LLM learns the
category of the tokens long before their colour, and the colour words are two or three of an
answer's twenty-odd tokens.

``CaptionerSettings.position_embedding`` (off by default, as the official code) adds a learned
vector per 3D token position (scale, plane, cell) to the projected tokens: the category is a
position-specific function of the codes (a linear probe on the 90 tiny-preset tokens reads it
perfectly, one on their bag of codes only half the time), and rotary attention alone gives a small
LLM trained from scratch no absolute position within the 3D block.

``CaptionerSettings.fhat_input`` (off by default; not in the paper) feeds the LLM what the VQVAE's
decoder would read instead of the per-scale code vectors: the accumulated latent ``f_hat`` after
the kept scales (Algorithm 2 on them, with a frozen copy of the VQVAE's quantizer), cut into 2 x 2
patches of its cells, one 3D token per patch (48 for the tiny preset, whatever ``keep``). The
code vectors of separate scales are residuals; a colour laid out in space (a gradient's bottom
and top, a two-tone object's halves) is their sum. On the tiny preset this did not name colours
more often than the code vectors, but a longer prefix than the one trained on no longer confuses
it (docs/RESULTS.md, Captioning).

A checkpoint is one folder: ``model.safetensors`` (LLM, projector, codebook copy), ``config.json``
(format ``sar3d-captioner/1``: the LLM's config, the token schedule, ``keep`` and the fingerprint of
the VQVAE whose tokens it reads) and ``tokenizer/``. Tokens of another VQVAE are refused.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import total_tokens, truncated_tokens

FORMAT = "sar3d-captioner/1"
WEIGHTS_NAME, CONFIG_NAME, TOKENIZER_FOLDER = "model.safetensors", "config.json", "tokenizer"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data_samples" / "captioner_tiny"
PROMPT = "Give a concise interpretation of the 3D data presented here"
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")  # Vicuna v1.1
POINT_PATCH, POINT_START, POINT_END = "<point_patch>", "<point_start>", "<point_end>"
# the shipped captioner's command (its training.json records it); it reads the tokens of the default VQVAE
# (data_samples/vqvae_tiny_lift), the tokens the generators train on, so it captions their samples too
TRAIN_DATA_COMMAND = (
    "sar3d data build --count 10000 --split train --out ~/.cache/sar3d/proc_train_10k && sar3d data tokenize "
    "~/.cache/sar3d/proc_train_10k --out ~/.cache/sar3d/ar/train_tokens_lift_10k.npz --checkpoint "
    "data_samples/vqvae_tiny_lift")
TRAIN_COMMAND = (
    "OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 -m sar3d_core.cli train captioner "
    "--tokens ~/.cache/sar3d/ar/train_tokens_lift_10k.npz --data ~/.cache/sar3d/proc_train_10k --threads 1 "
    "--batch-size 16 --steps 300 300 2400 --lr 2e-3 2e-3 1e-3 --position-embedding --colour-word-weight 3 "
    "--out runs/captioner_10k_cw3 --export data_samples/captioner_tiny")


@dataclass
class CaptionerSettings:
    """The offline LLM (a small LLaMA) and what the captioner feeds it."""

    width: int = 192
    layers: int = 4
    heads: int = 4
    intermediate: int = 512  # SwiGLU hidden size, about 8/3 of the width as in LLaMA
    keep: int | None = None  # scales fed to the LLM; None: K - 2 (Sec. 4.3)
    max_new_tokens: int = 48
    position_embedding: bool = False  # a learned vector per 3D token position (not in the paper; see the module doc)
    fhat_input: bool = False  # feed 2 x 2 patches of the accumulated f_hat, not code vectors (not in the paper)


@dataclass
class StageSettings:
    """Steps and peak learning rates of stages 0, 1, 2 (cosine schedule, ``warmup`` share of linear warm-up)."""

    steps: tuple = (300, 300, 1200)
    lr: tuple = (2e-3, 2e-3, 1e-3)
    warmup: float = 0.03
    colour_weight: float = 1.0  # loss weight of the colour words in stages 1 and 2 (1: the official uniform loss)
    twin_weight: float = 0.0  # weight of the twin ranking loss in stages 1 and 2 (0: none; see CaptionObjective)

    @classmethod
    def paper(cls) -> "StageSettings":
        """The official rates on a pretrained Vicuna: no stage 0, then 2e-3 and 2e-5. The paper gives no step
        counts: these are one epoch of its 176K objects at its batch sizes 140 and 112."""
        return cls(steps=(0, 1258, 1572), lr=(0.0, 2e-3, 2e-5))


# ------------------------------------------------------------------------------ the model
def tiny_llama_config(vocab_size: int, settings: CaptionerSettings, max_positions: int, bos: int, eos: int, pad: int):
    """A small ``LlamaConfig``: ``settings.layers`` blocks of RMSNorm, rotary attention and a SwiGLU MLP."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=settings.width, intermediate_size=settings.intermediate,
                       num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
                       num_key_value_heads=settings.heads, max_position_embeddings=max_positions, hidden_act="silu",
                       bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=False)


def projector(code_dim: int, width: int) -> nn.Sequential:
    """Gamma_proj: the official ``8 -> 1024 -> GELU -> 2048 -> GELU -> 4096`` scaled to ``width`` (w/4, w/2, w)."""
    return nn.Sequential(nn.Linear(code_dim, max(width // 4, 1)), nn.GELU(),
                         nn.Linear(max(width // 4, 1), max(width // 2, 1)), nn.GELU(),
                         nn.Linear(max(width // 2, 1), width))


def word_tokenizer(captions):
    """The project's word-level tokenizer (``conditioning.build_tokenizer``) over the captions and the template."""
    from .conditioning import build_tokenizer, caption_vocabulary

    return build_tokenizer(caption_vocabulary(list(captions) + [SYSTEM, PROMPT, "USER: ASSISTANT:"]), 4096)


def load_hub_llm(path):
    """``(causal LM, tokenizer)`` of a LLaMA-family checkpoint on disk or in the HF cache; nothing is downloaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .conditioning import _hf

    return (_hf(AutoModelForCausalLM, path, "causal language model", dtype=torch.float32),
            _hf(AutoTokenizer, path, "tokenizer"))


def _tidy(text: str) -> str:
    """Word-level decoding puts spaces around punctuation: "two - tone , glossy" -> "two-tone, glossy"."""
    text = re.sub(r"\s+([,.;:!?'])", r"\1", re.sub(r"\s*-\s*", "-", text))
    return re.sub(r"'\s+(s|t|re|ve|ll|d|m)\b", r"'\1", text).strip()  # "user' s" -> "user's"


class SAR3DCaptioner(nn.Module):
    """Codebook lookup -> projector -> LLaMA on ``[system, 3D tokens, prompt]`` -> caption (Eq. 10)."""

    def __init__(self, llm, tokenizer, codebook_VC: torch.Tensor, schedule, keep: int | None = None,
                 meta: dict | None = None, position_embedding: bool = False, fhat_quantizer=None):
        super().__init__()
        self.schedule = tuple(int(s) for s in schedule)
        self.keep = len(self.schedule) - 2 if keep is None else int(keep)
        truncated_tokens(self.schedule, self.keep)  # 1 <= keep <= K
        missing = [t for t in (POINT_PATCH, POINT_START, POINT_END) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
        if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
            llm.resize_token_embeddings(len(tokenizer))
        self.llm, self.tokenizer = llm, tokenizer
        # with f_hat input (see the module doc): a frozen copy of the VQVAE's quantizer computes it
        self.fhat_quantizer = fhat_quantizer.eval().requires_grad_(False) if fhat_quantizer is not None else None
        in_dim = codebook_VC.shape[1] * (4 if fhat_quantizer is not None else 1)
        self.fhat_norm = nn.LayerNorm(in_dim) if fhat_quantizer is not None else None
        self.projector = projector(in_dim, llm.config.hidden_size)
        # optional: which scale, plane and cell each 3D token is, as the AR transformer's learned positions
        self.token_position = nn.Parameter(torch.randn(total_tokens(self.schedule), llm.config.hidden_size) * 0.02) \
            if position_embedding else None
        # the codebook as the VQVAE looks it up, l2-normalised (Sec. 4.1); a frozen copy
        self.register_buffer("codebook", F.normalize(codebook_VC.detach().float().clone(), dim=-1))
        self.meta = dict(meta or {})
        ids = tokenizer.convert_tokens_to_ids
        self.patch_id, self.start_id, self.end_id = ids(POINT_PATCH), ids(POINT_START), ids(POINT_END)
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise ValueError("the LLM's tokenizer has no end-of-sequence token")
        backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
        self.word_level = type(backend).__name__ == "WordLevel"  # decoded words need their punctuation re-attached
        words = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.prefix_ids = ([self.bos_id] if self.bos_id is not None else []) + words(f"{SYSTEM} USER:")
        self.suffix_ids = words(f"\n{PROMPT} ASSISTANT:")
        self.words = words

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_vqvae(cls, vqvae, captions=(), settings: CaptionerSettings | None = None, llm=None,
                   vqvae_checkpoint: str = "") -> "SAR3DCaptioner":
        """A captioner for the tokens of ``vqvae``: a tiny LLaMA over a word-level tokenizer of
        ``captions`` (its vocabulary), or the LLaMA-family checkpoint ``llm`` (a path) when given."""
        settings = settings or CaptionerSettings()
        cfg = vqvae.cfg
        q = vqvae.quantizer
        codebook = q.lookup(torch.arange(cfg.codebook_size, device=q.codebook.weight.device))
        if llm is None:
            tokenizer = word_tokenizer(captions)
            tokenizer.add_tokens([POINT_PATCH, POINT_START, POINT_END], special_tokens=True)
            max_positions = 64 * math.ceil((total_tokens(cfg.scales) + 256) / 64)
            from transformers import LlamaForCausalLM

            model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), settings, max_positions,
                                                       tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                       tokenizer.pad_token_id))
            source = "tiny LLaMA (trained here)"
        else:
            model, tokenizer = load_hub_llm(llm)
            source = str(llm)
        meta = {"llm_source": source, "vqvae_config": cfg.to_dict(), "vqvae_fingerprint": vqvae.fingerprint(),
                "vqvae_checkpoint": str(vqvae_checkpoint), "max_new_tokens": settings.max_new_tokens}
        quantizer = copy.deepcopy(vqvae.quantizer).cpu() if settings.fhat_input else None
        return cls(model, tokenizer, codebook, cfg.scales, settings.keep, meta, settings.position_embedding, quantizer)

    @property
    def vqvae_fingerprint(self) -> str:
        return self.meta.get("vqvae_fingerprint", "")

    @property
    def num_scales(self) -> int:
        return len(self.schedule)

    def num_tokens(self, keep: int | None = None) -> int:
        """3D tokens fed for ``keep`` scales (default: this captioner's ``keep``)."""
        return truncated_tokens(self.schedule, self.keep if keep is None else keep)[0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_slots(self, n: int) -> int:
        """3D tokens the LLM sees for ``n`` token ids: ``n``, or with f_hat input one per 2 x 2 patch of cells."""
        if self.fhat_quantizer is None:
            return n
        h, w = self.fhat_quantizer.latent_hw
        return 3 * (h // 2) * (w // 2)

    # --- the multimodal sequence (Eq. 10) -----------------------------------------------
    def prompt_ids(self, n: int | None) -> list[int]:
        """``[BOS] SYSTEM USER: <point_start> <point_patch> x n <point_end> \\n PROMPT ASSISTANT:``;
        ``n=None``: the text-only chat of stage 0 (no 3D block)."""
        block = [] if n is None else [self.start_id] + [self.patch_id] * n + [self.end_id]
        return self.prefix_ids + block + self.suffix_ids

    def example(self, caption: str, n: int | None) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one training example: labels are the answer and ``</s>``, -100
        elsewhere; with ``n=None`` (stage 0, text only) every token is a label."""
        prompt, answer = self.prompt_ids(n), self.words(" " + caption.strip()) + [self.eos_id]
        labels = (prompt if n is None else [-100] * len(prompt)) + answer
        return prompt + answer, labels

    def colour_word_ids(self) -> torch.Tensor:
        """Vocabulary ids of the world's colour words (``world.COLOURS``) that the tokenizer knows: one id per
        word with the word-level tokenizer; with a hub LLM's sub-word tokenizer, every piece of a colour word."""
        from .world import COLOURS

        ids = {i for c in COLOURS for i in self.words(" " + c)}
        return torch.tensor(sorted(ids - {self.tokenizer.unk_token_id}), dtype=torch.long)

    def check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``, after checking that they are entries of the codebook (ValueError otherwise)."""
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook.shape[0]):
            raise ValueError(f"token ids must lie in [0, {self.codebook.shape[0]})")
        return ids

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """``(...)`` token ids -> ``(..., C)`` l2-normalised code vectors (the VQVAE's ``lookup``)."""
        return self.codebook[self.check_ids(ids)]

    @torch.no_grad()
    def fhat_patches(self, codes_Bn: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` ids of the first scales -> ``(B, 3 h/2 w/2, 4 C)``: ``f_hat`` after those scales
        (Algorithm 2), its cells in 2 x 2 patches, plane-major then row-major."""
        from .quantizer import sequence_to_tokens

        n, keep = codes_Bn.shape[1], 0
        while keep < self.num_scales and total_tokens(self.schedule[:keep + 1]) <= n:
            keep += 1
        if keep == 0 or total_tokens(self.schedule[:keep]) != n:
            raise ValueError(f"{n} token ids are not whole scales of {list(self.schedule)}")
        f = self.fhat_quantizer.tokens_to_fhat(sequence_to_tokens(codes_Bn, self.schedule[:keep]), keep)
        B, P, C, h, w = f.shape
        f = f.reshape(B, P, C, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        return f.reshape(B, P * (h // 2) * (w // 2), 4 * C)

    def inputs_3d(self, codes_Bn: torch.Tensor) -> torch.Tensor:
        """What the projector reads: the code vectors ``(B, n, C)``, or the f_hat patches (``fhat_patches``)."""
        if self.fhat_quantizer is None:
            return self.code_vectors(codes_Bn)
        return self.fhat_norm(self.fhat_patches(self.check_ids(codes_Bn)))

    def embed(self, input_ids_BT: torch.Tensor, codes_Bn: torch.Tensor | None = None, blind: bool = False):
        """``inputs_embeds (B, T, w)``: the token embeddings, with Gamma_proj(codes) spliced in at the
        ``<point_patch>`` positions (zeros with ``blind``: the baseline that sees no 3D tokens)."""
        emb_BTD = self.llm.get_input_embeddings()(input_ids_BT)
        slot_BT = input_ids_BT == self.patch_id
        if not slot_BT.any():
            return emb_BTD
        if codes_Bn is None or (slot_BT.sum(1) != self.num_slots(codes_Bn.shape[1])).any():
            raise ValueError(f"each row needs one <point_patch> per 3D token: {slot_BT.sum(1).tolist()} slots for "
                             f"{None if codes_Bn is None else self.num_slots(codes_Bn.shape[1])} tokens")
        z_BnD = self.projector(self.inputs_3d(codes_Bn))  # Z_proj = Gamma_proj(R~)
        if self.token_position is not None:
            z_BnD = z_BnD + self.token_position[:z_BnD.shape[1]]
        if blind:
            z_BnD = torch.zeros_like(z_BnD)
        return emb_BTD.masked_scatter(slot_BT[..., None], z_BnD.to(emb_BTD.dtype))  # row-major: token j of row b

    def forward(self, input_ids, attention_mask, labels=None, codes=None, blind: bool = False):
        """The LLM on the spliced sequence; with ``labels``, HF's shifted cross-entropy (-100 ignored)."""
        return self.llm(inputs_embeds=self.embed(input_ids, codes, blind), attention_mask=attention_mask,
                        labels=labels, use_cache=False)

    # --- captioning -----------------------------------------------------------------------
    def truncate(self, tokens, keep: int | None = None) -> torch.Tensor:
        """The first ``keep`` scales of full sequences ``(B, L)`` or of per-scale maps ``[(B, 3, s, s)]``
        (e.g. ``generate.Generation.tokens``: caption what the generator made, Fig. 7) -> ``(B, n)``."""
        from .quantizer import tokens_to_sequence

        keep = self.keep if keep is None else int(keep)
        if not 1 <= keep <= self.num_scales:
            raise ValueError(f"scales={keep} must be between 1 and {self.num_scales} (the captioner reads scales "
                             f"{list(self.schedule)})")
        seq = tokens_to_sequence(tokens) if isinstance(tokens, (list, tuple)) else torch.as_tensor(tokens)
        seq = seq[None] if seq.ndim == 1 else seq
        if seq.shape[-1] != total_tokens(self.schedule):
            raise ValueError(f"token sequences of length {seq.shape[-1]}: the captioner reads sequences of "
                             f"{total_tokens(self.schedule)} tokens (scales {list(self.schedule)})")
        return seq[:, :self.num_tokens(keep)].long().to(self.codebook.device)

    @torch.no_grad()
    def generate_ids(self, codes_Bn: torch.Tensor, *, greedy: bool = True, temperature: float = 1.0,
                     top_k: int = 0, top_p: float = 1.0, seed: int = 0, max_new_tokens: int | None = None,
                     blind: bool = False, num_beams: int = 1) -> torch.Tensor:
        """New token ids ``(B, <= max_new_tokens)`` from ``llm.generate`` on ``inputs_embeds`` (KV cache on);
        ``num_beams > 1`` with ``greedy``: beam search."""
        from transformers import GenerationConfig

        self.eval()
        B, n = codes_Bn.shape
        ids_BT = torch.tensor(self.prompt_ids(self.num_slots(n)), device=self.codebook.device).expand(B, -1)
        emb = self.embed(ids_BT, codes_Bn, blind)
        sampling = dict(do_sample=True, temperature=temperature, top_k=top_k or None, top_p=top_p) if not greedy \
            else dict(do_sample=False, num_beams=int(num_beams))
        gen = GenerationConfig(max_new_tokens=max_new_tokens or self.meta.get("max_new_tokens", 48), use_cache=True,
                               eos_token_id=self.eos_id, pad_token_id=self.pad_id, **sampling)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.llm.generate(inputs_embeds=emb, attention_mask=torch.ones_like(ids_BT),
                                     generation_config=gen)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        ids = ids[:ids.index(self.eos_id)] if self.eos_id in ids else ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return _tidy(text) if self.word_level else text.strip()

    @torch.no_grad()
    def caption(self, tokens, keep: int | None = None, batch_size: int = 64, **generate_kwargs) -> list[str]:
        """Captions of token sequences ``(B, L)`` / per-scale maps, from their first ``keep`` scales.
        ``generate_kwargs``: ``greedy``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ``max_new_tokens``,
        ``blind``, ``num_beams``."""
        codes = self.truncate(tokens, keep)
        out = []
        for i in range(0, codes.shape[0], batch_size):
            out += [self.decode(row) for row in self.generate_ids(codes[i:i + batch_size], **generate_kwargs)]
        return out

    # --- checkpoints ------------------------------------------------------------------------
    def check_fingerprint(self, fingerprint: str, what: str = "the tokens") -> None:
        """ValueError (one line) when ``fingerprint`` names another VQVAE than the one this captioner reads."""
        if fingerprint and self.vqvae_fingerprint and fingerprint != self.vqvae_fingerprint:
            raise ValueError(f"{what} come from the VQVAE with fingerprint {fingerprint}, but the captioner was "
                             f"trained on tokens of {self.meta.get('vqvae_checkpoint') or 'another VQVAE'} "
                             f"(fingerprint {self.vqvae_fingerprint}): encode with that VQVAE")

    def save_pretrained(self, folder, extra: dict | None = None) -> Path:
        """``model.safetensors`` + ``config.json`` + ``tokenizer/`` (JSON): everything ``from_pretrained`` needs."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder / TOKENIZER_FOLDER)
        meta = {**self.meta, **(extra or {}), "format": FORMAT,
                "llm_config": json.loads(self.llm.config.to_json_string()),
                "schedule": list(self.schedule), "keep": self.keep, "code_dim": int(self.codebook.shape[1]),
                "position_embedding": self.token_position is not None, "fhat_input": self.fhat_quantizer is not None,
                "codebook_size": int(self.codebook.shape[0]), "prompt": PROMPT, "system": SYSTEM,
                "parameters": self.num_parameters()}
        tmp_w, tmp_c = folder / f".{WEIGHTS_NAME}.tmp", folder / f".{CONFIG_NAME}.tmp"
        save_model(self, str(tmp_w), metadata={"format": FORMAT})
        tmp_c.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_w, folder / WEIGHTS_NAME)
        os.replace(tmp_c, folder / CONFIG_NAME)
        return folder

    @staticmethod
    def read_config(folder) -> dict:
        """``config.json`` of a captioner folder (no weights read); FileNotFoundError / ValueError in one line."""
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_FOLDER):
            if not (folder / name).exists():
                shipped = folder.resolve() == DEFAULT_CHECKPOINT
                hint = f"train it with `{TRAIN_DATA_COMMAND} && {TRAIN_COMMAND}`" if shipped else \
                    "train one with `sar3d train captioner`"
                raise FileNotFoundError(f"{folder} has no {name}: not a captioner checkpoint ({hint})")
        from .checkpoints import read_meta

        return read_meta(folder / CONFIG_NAME, FORMAT)

    @classmethod
    def from_pretrained(cls, folder) -> "SAR3DCaptioner":
        from safetensors.torch import load_model
        from transformers import CONFIG_MAPPING, AutoModelForCausalLM, PreTrainedTokenizerFast

        folder = Path(folder)
        meta = cls.read_config(folder)
        llm_cfg = dict(meta["llm_config"])
        llm = AutoModelForCausalLM.from_config(CONFIG_MAPPING[llm_cfg.pop("model_type")].from_dict(llm_cfg))
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder / TOKENIZER_FOLDER))
        keys = ("format", "llm_config", "schedule", "keep", "code_dim", "codebook_size", "prompt", "system",
                "parameters", "position_embedding", "fhat_input")
        quantizer = None
        if meta.get("fhat_input"):  # its weights come with the captioner's
            from .config import SAR3DConfig
            from .quantizer import MultiScaleTriplaneQuantizer

            quantizer = MultiScaleTriplaneQuantizer.from_config(SAR3DConfig.from_dict(meta["vqvae_config"]))
        model = cls(llm, tokenizer, torch.zeros(meta["codebook_size"], meta["code_dim"]), meta["schedule"],
                    meta["keep"], {k: v for k, v in meta.items() if k not in keys},
                    meta.get("position_embedding", False), quantizer)
        try:
            load_model(model, str(folder / WEIGHTS_NAME))
        except (RuntimeError, OSError, ValueError) as err:  # missing / unexpected keys, wrong shapes, corrupt file
            raise ValueError(f"{folder / WEIGHTS_NAME} does not fit its config.json: "
                             f"{' '.join(str(err).split())[:300]}") from None
        return model.eval()


def load_default() -> SAR3DCaptioner:
    return SAR3DCaptioner.from_pretrained(DEFAULT_CHECKPOINT)


# ------------------------------------------------------------------------------ inputs of `sar3d caption`
def load_vqvae_for(captioner: SAR3DCaptioner, folder=None):
    """The VQVAE that makes this captioner's tokens: ``folder``, else the one its config names
    (``generate.find_vqvae``), else the shipped default; refused (one line) when its weights differ."""
    from .generate import find_vqvae
    from .vqvae import SAR3DVQVAE
    from .vqvae_train import load_default as default_vqvae

    named = captioner.meta.get("vqvae_checkpoint")
    if folder is None and named:
        folder = find_vqvae(named)
    vqvae = SAR3DVQVAE.from_pretrained(folder).eval() if folder else default_vqvae()
    captioner.check_fingerprint(vqvae.fingerprint(), f"the tokens of the VQVAE {folder or 'default'}")
    return vqvae


def input_sequences(captioner: SAR3DCaptioner, specs, vqvae_folder=None, up: str = "z") -> tuple[torch.Tensor, list]:
    """Full token sequences ``(N, L)`` and a label per object for ``sar3d caption``'s inputs, in order:
    ``proc:<seed>``, a chunk or G-Objaverse folder, a mesh file (encoded by the VQVAE), or a token file
    (``tokens.npz#i``: object i; ``tokens.npz``: every object in it). Any bad input fails before any caption."""
    from .config import SAR3DConfig
    from .data import load_views
    from .quantizer import tokens_to_sequence
    from .tokens import encode_multiview, load_tokens

    cfg, vqvae, seqs, labels = SAR3DConfig.from_dict(captioner.meta["vqvae_config"]), None, [], []
    for spec in map(str, specs):
        path, _, index = spec.partition("#") if ".npz#" in spec else (spec, "", "")
        if path.endswith(".npz"):
            loaded = load_tokens(Path(path).expanduser(), cfg)  # schedule and codebook of the captioner's VQVAE
            captioner.check_fingerprint(loaded["vqvae_fingerprint"], f"the tokens of {path}")
            count = len(loaded["seed"])
            if count == 0:
                raise ValueError(f"{path} holds no objects to caption")
            try:
                rows = [int(index)] if index else list(range(count))
            except ValueError:
                raise ValueError(f"{spec}: expected tokens.npz#<object index>") from None
            if not all(0 <= i < count for i in rows):
                raise ValueError(f"{spec}: {path} holds {count} object(s), index {index} is out of range")
            seqs += [loaded["sequence"][i] for i in rows]
            labels += [f"{path}#{i}" for i in rows]
            continue
        vqvae = vqvae or load_vqvae_for(captioner, vqvae_folder)
        mv = load_views(spec, num_views=vqvae.cfg.num_input_views, size=vqvae.cfg.image_size, up=up)
        seqs.append(tokens_to_sequence(encode_multiview(vqvae, mv))[0].cpu())
        labels.append(spec)
    if not seqs:
        raise ValueError("no input to caption")
    return torch.stack(seqs), labels


# ------------------------------------------------------------------------------ training
class CaptionDataset(torch.utils.data.Dataset):
    """Examples of one stage, padded to one length: ``input_ids``, ``labels``, ``attention_mask``, ``codes``."""

    def __init__(self, captioner: SAR3DCaptioner, codes_Nn: torch.Tensor, captions, text_only: bool = False,
                 twins=None):
        if len(captions) != codes_Nn.shape[0] or not len(captions):
            raise ValueError(f"{codes_Nn.shape[0]} token sequences and {len(captions)} captions: need one each, "
                             f"and at least one")
        if twins is not None and len(twins) != len(captions):
            raise ValueError(f"{len(twins)} twin captions for {len(captions)} captions: need one (or None) each")
        n = None if text_only else captioner.num_slots(codes_Nn.shape[1])
        pairs = [captioner.example(c, n) for c in captions]
        twin_pairs = [captioner.example(t, n) if t else None for t in twins] if twins is not None else []
        T = max(len(ids) for ids, _ in pairs + [p for p in twin_pairs if p])
        pad = lambda xs, v: xs + [v] * (T - len(xs))  # noqa: E731  (right padding, masked out)
        self.input_ids = torch.tensor([pad(ids, captioner.pad_id) for ids, _ in pairs])
        self.labels = torch.tensor([pad(lab, -100) for _, lab in pairs])
        self.attention_mask = torch.tensor([pad([1] * len(ids), 0) for ids, _ in pairs])
        self.codes = codes_Nn.long().cpu()
        self.twins = None
        if twins is not None:  # a row without a twin repeats its own example (masked out by has_twin)
            filled = [p or q for p, q in zip(twin_pairs, pairs)]
            self.twins = {"twin_input_ids": torch.tensor([pad(ids, captioner.pad_id) for ids, _ in filled]),
                          "twin_labels": torch.tensor([pad(lab, -100) for _, lab in filled]),
                          "twin_attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids, _ in filled]),
                          "has_twin": torch.tensor([p is not None for p in twin_pairs])}

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i], "labels": self.labels[i], "attention_mask": self.attention_mask[i],
                "codes": self.codes[i]}
        if self.twins is not None:
            item.update({k: v[i] for k, v in self.twins.items()})
        return item


def twin_captions(seeds, captions) -> list:
    """Per object (a procedural seed and its caption): the caption with its two colours swapped
    (``conditioning.twin_prompts``), or None where the order carries no meaning (plain, checkered)
    or the caption names fewer than both colours. Not a seed of the procedural world: None."""
    from .conditioning import twin_prompts
    from .world import make_object

    out = []
    for seed, caption in zip(seeds, captions):
        try:
            obj = make_object(int(seed))
        except (ValueError, TypeError):
            out.append(None)
            continue
        out.append(twin_prompts(obj, [caption])[0] if obj.caption == caption else None)
    return out


def answer_log_prob(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """``log p(answer | prompt, 3D tokens)`` per row: the sum of the answer tokens' log-probabilities
    (labels != -100, shifted by one as in the LM loss) -> ``(B,)``."""
    target, logits = labels_BT[:, 1:], logits_BTV[:, :-1].float()
    answer = target != -100
    logp = torch.log_softmax(logits, -1).gather(-1, target.clamp_min(0)[..., None])[..., 0]
    return (logp * answer).sum(1)


class CaptionObjective(nn.Module):
    """The answer-only LM loss of a batch (what ``training.train`` minimises) and the answer-token accuracy.
    With ``colour_weight != 1`` the loss is the weighted mean of the answer tokens' cross-entropy, the
    colour words weighing ``colour_weight`` and every other token 1 (``StageSettings.colour_weight``).

    With ``twin_weight > 0`` and twin examples in the batch (``CaptionDataset(twins=...)``), it adds
    ``twin_weight * mean softplus(log p(twin) - log p(caption))`` over the rows that have a twin: the
    same caption with its two colours swapped must be less likely than the true one, given the 3D
    tokens (a pairwise ranking loss; not in the paper). Which colour a caption names first is the
    main colour; the LM loss alone rewards naming both colours, in either order."""

    def __init__(self, captioner: SAR3DCaptioner, colour_weight: float = 1.0, twin_weight: float = 0.0):
        super().__init__()
        if not colour_weight > 0:
            raise ValueError(f"colour_weight {colour_weight}: must be positive (1 is the plain loss)")
        if not twin_weight >= 0:
            raise ValueError(f"twin_weight {twin_weight}: must be 0 (none) or positive")
        self.captioner, self.colour_weight, self.twin_weight = captioner, float(colour_weight), float(twin_weight)
        self.register_buffer("colour_ids", captioner.colour_word_ids(), persistent=False)

    def forward(self, batch: dict, step: int) -> dict:
        plain = self.colour_weight == 1.0
        out = self.captioner(batch["input_ids"], batch["attention_mask"], batch["labels"] if plain else None,
                             batch["codes"])
        target = batch["labels"][:, 1:]
        answer = target != -100
        logits = out.logits[:, :-1]
        hit = (logits.argmax(-1) == target)[answer]
        scalars = {"accuracy": hit.float().mean() * 100}
        if plain:
            loss = out.loss
        else:
            ce = F.cross_entropy(logits[answer].float(), target[answer], reduction="none")
            colour = torch.isin(target[answer], self.colour_ids)
            weight = torch.where(colour, self.colour_weight, 1.0)
            scalars["colour_accuracy"] = hit[colour].float().mean() * 100 if colour.any() else torch.tensor(0.0)
            loss = (weight * ce).sum() / weight.sum()
        if self.twin_weight > 0 and "has_twin" in batch and bool(batch["has_twin"].any()):
            rows = batch["has_twin"]
            twin = self.captioner(batch["twin_input_ids"][rows], batch["twin_attention_mask"][rows],
                                  codes=batch["codes"][rows])
            margin = answer_log_prob(out.logits[rows], batch["labels"][rows]) - \
                answer_log_prob(twin.logits, batch["twin_labels"][rows])
            scalars["twin_order"] = (margin > 0).float().mean() * 100  # the true order preferred, % of rows
            loss = loss + self.twin_weight * F.softplus(-margin).mean()
        return {"loss": loss, **scalars}


def cosine_lr(step: int, steps: int, peak: float, warmup: float) -> float:
    """Linear warm-up over ``ceil(warmup * steps)`` steps, then a cosine from ``peak`` towards 0 (HF's ``cosine``)."""
    w = math.ceil(warmup * steps)
    if step <= w:
        return peak * step / w
    return peak * 0.5 * (1 + math.cos(math.pi * (step - w - 1) / max(steps - w, 1)))  # steps count from 1


@contextmanager
def stage(captioner: SAR3DCaptioner, which: int, steps: int, peak_lr: float, warmup: float):
    """Freeze what stage ``which`` keeps fixed and schedule the learning rate while inside.

    ``training.train`` keeps one constant rate; the schedule is set by a pre-step hook on the
    optimizer that holds this captioner's parameters, from the step ``loss_fn`` last saw (``on_step``).
    """
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    llm, proj = captioner.llm, captioner.projector
    llm.requires_grad_(which != 1)
    proj.requires_grad_(which != 0)
    if captioner.fhat_norm is not None:
        captioner.fhat_norm.requires_grad_(which != 0)
    if captioner.fhat_quantizer is not None:  # the VQVAE's, frozen in every stage
        captioner.fhat_quantizer.requires_grad_(False)
    if captioner.token_position is not None:
        captioner.token_position.requires_grad_(which != 0)
    handles, current = [], {"step": 1}
    if which == 1:  # the LLM frozen, but the three new token embeddings learn (PointLLM's stage 1)
        weight = llm.get_input_embeddings().weight
        weight.requires_grad_(True)
        rows = torch.zeros(weight.shape[0], 1, device=weight.device)
        rows[[captioner.patch_id, captioner.start_id, captioner.end_id]] = 1
        handles.append(weight.register_hook(lambda g: g * rows.to(g.dtype)))
    mine = next(captioner.projector.parameters())

    def set_lr(optimizer, args, kwargs):
        if any(p is mine for group in optimizer.param_groups for p in group["params"]):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(current["step"], steps, peak_lr, warmup)

    handles.append(register_optimizer_step_pre_hook(set_lr))
    try:
        yield lambda step: current.update(step=step)
    finally:
        for h in handles:
            h.remove()
        captioner.requires_grad_(True)
        if captioner.fhat_quantizer is not None:
            captioner.fhat_quantizer.requires_grad_(False)


def train_stage(captioner: SAR3DCaptioner, dataset: CaptionDataset, which: int, train_cfg, warmup: float = 0.03,
                resume: bool = False, colour_weight: float = 1.0, twin_weight: float = 0.0) -> list[dict]:
    """One stage (0, 1 or 2) through ``training.train`` with ``train_cfg`` (its ``lr`` is the peak);
    ``colour_weight``: the colour words' loss weight, ``twin_weight``: the twin ranking loss's (``CaptionObjective``)."""
    from .training import train

    if which not in (0, 1, 2):
        raise ValueError(f"stage {which}: the stages are 0 (LM), 1 (projector) and 2 (all)")
    objective = CaptionObjective(captioner, colour_weight, twin_weight)
    with stage(captioner, which, train_cfg.steps, train_cfg.lr, warmup) as on_step:
        def loss_fn(net, batch, step):
            on_step(step)
            return net(batch, step)

        return train(objective, dataset, loss_fn, train_cfg, resume=resume)


def _data_captions(data, count: int):
    """Captions of a built data set (its index.json) in the order ``sar3d data tokenize`` read them, or None."""
    from .data import INDEX_NAME, read_index

    index = Path(data) / INDEX_NAME
    if not index.is_file():
        return None
    objects = read_index(index)["objects"]
    if len(objects) != count:
        raise ValueError(f"{data} holds {len(objects)} objects, the token file {count}: give the data set the "
                         f"tokens were made from")
    return [o.get("caption", "") for o in objects]


def train_captioner(tokens_path, vqvae, train_cfg, data=None, settings: CaptionerSettings | None = None,
                    stages: StageSettings | None = None, llm=None, resume: bool = False, export=None,
                    vqvae_checkpoint: str = "", init=None) -> dict:
    """Stages 0-2 on a token file (``sar3d data tokenize``) of the data set ``data``; run folders
    ``train_cfg.out_dir/stage{0,1,2}``; the trained captioner is written to ``export``. Returns a summary.
    ``init``: a trained captioner folder to continue from (its tokenizer, LLM and projector; it must
    read this VQVAE's tokens) instead of a new one; give 0 steps to the stages it needs no more of."""
    from .tokens import load_tokens
    from .training import _init_distributed, is_main_process, resolve_device, world_info

    t0 = time.perf_counter()
    settings, stages = settings or CaptionerSettings(), stages or StageSettings()
    fingerprint = vqvae.fingerprint()
    loaded = load_tokens(tokens_path, vqvae.cfg, fingerprint)
    captions = loaded["caption"]
    if data is not None and (expected := _data_captions(data, len(captions))) is not None and expected != captions:
        raise ValueError(f"the captions of {tokens_path} differ from those of {data}: tokenize that data set")
    keep_rows = [i for i, c in enumerate(captions) if c.strip()]
    if not keep_rows:
        raise ValueError(f"{tokens_path} holds no captioned object to train on")
    captions = [captions[i] for i in keep_rows]
    if init:
        captioner = SAR3DCaptioner.from_pretrained(init)
        if captioner.vqvae_fingerprint != fingerprint:
            raise ValueError(f"--init {init} reads the tokens of another VQVAE (fingerprint "
                             f"{captioner.vqvae_fingerprint or 'none'}, these tokens {fingerprint})")
        captioner.meta["init"] = str(init)
    else:
        captioner = SAR3DCaptioner.from_vqvae(vqvae, captions, settings, llm, vqvae_checkpoint or loaded["checkpoint"])
    codes = captioner.truncate(loaded["sequence"][keep_rows]).cpu()
    twins = twin_captions([loaded["seed"][i] for i in keep_rows], captions) if stages.twin_weight > 0 else None
    if is_main_process():
        print(f"captioner: {captioner.meta['llm_source']}, {captioner.num_parameters() / 1e6:.2f}M parameters, "
              f"vocabulary {len(captioner.tokenizer)}; {len(captions)} captioned objects, the first {captioner.keep} "
              f"of {captioner.num_scales} scales = {codes.shape[1]} of {loaded['sequence'].shape[1]} tokens; "
              f"settings {dataclasses.asdict(settings)}, stages {dataclasses.asdict(stages)}")
    rows, seconds = {}, {}
    # under torchrun, one process group for the three stages: `train` leaves a group it did not create as it is
    started_group = _init_distributed(resolve_device(train_cfg.device, world_info()[2]))
    try:
        for which in (0, 1, 2):
            if stages.steps[which] < 1:
                continue
            t = time.perf_counter()
            dataset = CaptionDataset(captioner, codes, captions, text_only=which == 0,
                                     twins=twins if which else None)
            cfg = dataclasses.replace(train_cfg, steps=int(stages.steps[which]), lr=float(stages.lr[which]),
                                      out_dir=str(Path(train_cfg.out_dir) / f"stage{which}"))
            rows[which] = train_stage(captioner, dataset, which, cfg, stages.warmup, resume,
                                      stages.colour_weight if which else 1.0, stages.twin_weight if which else 0.0)
            seconds[which] = round(time.perf_counter() - t, 1)
    finally:
        if started_group:
            torch.distributed.destroy_process_group()
    summary = {"tokens": str(tokens_path), "objects": len(captions), "keep": captioner.keep,
               "stage_steps": list(stages.steps), "stage_lr": list(stages.lr), "stage_seconds": seconds,
               "colour_word_weight": stages.colour_weight, "twin_weight": stages.twin_weight,
               "init": str(init) if init else None,
               "objects_with_twin": sum(t is not None for t in twins) if twins is not None else 0,
               "seconds": round(time.perf_counter() - t0, 1), "parameters": captioner.num_parameters(),
               "final": {w: r[-1] for w, r in rows.items() if r}}
    if is_main_process():
        if export:
            captioner.save_pretrained(export, {"training": summary, "batch_size": train_cfg.batch_size,
                                               "settings": dataclasses.asdict(settings)})
        print("summary " + json.dumps(summary))
    return summary
