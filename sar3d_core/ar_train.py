"""Training the autoregressive generator on precomputed tokens (paper Sec. 4.2, Supp. C).

As in the official code, the transformer never sees images or meshes while it trains: the
VQVAE has already turned every object into its token sequence (``sar3d data tokenize``), and
the frozen condition encoder turns every caption (text model) or condition image (image
model) into features once, before the first step. What remains per step is one
teacher-forced pass (``SAR3DTransformer.teacher_input`` + ``forward``) and the cross-entropy
over all ``L`` tokens, with 10% of the conditions dropped to the learned null condition.

* **Condition image** (image model): one of the side views 1-5 of the object's chunk (the
  input views of ``cameras.CHUNK_LAYOUT``; view 0 looks straight down and shows little of most
  objects), drawn anew each step as the paper's random view (``TRAIN_CONDITION_VIEWS``); at
  test time view 1 (azimuth 60, elevation 7 degrees), recorded in the checkpoint as
  ``condition_view``. The novel views 6-11 are kept to score novel-view PSNR (``ar_eval``).
* **Text** (text model): each object's caption or one of the world's shorter forms of it
  ("a red chair", ``world.prompt_forms``), drawn anew each step (``text_prompts``).
* **Next-token baseline** (``next_token=True``): the same trainer over the tokens of the
  single-scale VQVAE (one 8x8 scale per plane, raster order), with a causal mask.

Checkpoints of a trained generator: ``save_generator`` / ``load_generator`` write
``model.safetensors`` + ``config.json`` (format ``sar3d-ar/1``) with everything needed to
rebuild the transformer and to check that the VQVAE and condition encoder it is paired with
are the ones it was trained on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .config import SAR3DConfig
from .quantizer import sequence_to_tokens, tokens_to_sequence
from .training import TrainConfig, is_main_process, step_generator, train
from .transformer import CONDITIONS, SAR3DTransformer, TransformerSettings

FORMAT = "sar3d-ar/1"
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
CONDITION_VIEW = 1  # the chunk view an image-conditioned model sees at test time (see the module doc)
TRAIN_CONDITION_VIEWS = (1, 2, 3, 4, 5)  # the side views of the chunk's input layout: one drawn per step


# ------------------------------------------------------------------------------ data
def condition_images(data, count: int, view=CONDITION_VIEW, size: int | None = None) -> torch.Tensor:
    """View ``view`` of the first ``count`` objects of a data set folder: ``(N, 3, H, W)`` in [0, 1];
    with a tuple of views, ``(N * len(views), 3, H, W)``, object-major."""
    from .data import MultiViewDataset

    ds = MultiViewDataset(data, size=size)
    if len(ds) < count:
        raise ValueError(f"{data} holds {len(ds)} objects, fewer than the {count} of the token file: "
                         f"give the data set the tokens were made from")
    views = [view] if isinstance(view, int) else list(view)
    return torch.cat([ds.read(i).rgb[views] for i in tqdm(range(count), desc="condition images", unit="obj",
                                                          leave=False)])


@torch.no_grad()
def encode_conditions(encoder, condition: str, captions=None, images=None, batch_size: int = 64) -> dict:
    """Features of every caption or image: ``pooled (N, D)``, ``tokens (N, T, D_t)``, ``mask (N, T)``."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition {condition!r} is unknown: choose one of {CONDITIONS}")
    items = captions if condition == "text" else images
    if items is None or len(items) == 0:
        raise ValueError(f"no {'captions' if condition == 'text' else 'images'} to encode")
    parts = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        parts.append(encoder.encode_text(list(chunk)) if condition == "text" else encoder.encode_image(chunk))
    return {"pooled": torch.cat([p.pooled for p in parts]).float().cpu(),
            "tokens": torch.cat([p.tokens for p in parts]).float().cpu(),
            "mask": torch.cat([p.mask for p in parts]).cpu(), "name": parts[0].name}


class ARDataset(torch.utils.data.Dataset):
    """Token sequences with their teacher-forcing inputs and condition features, in memory."""

    def __init__(self, sequence_NL: torch.Tensor, teacher_NlC: torch.Tensor, cond: dict, forms: int = 1):
        n = sequence_NL.shape[0]
        if not (teacher_NlC.shape[0] == n and cond["pooled"].shape[0] == n * forms):
            raise ValueError("sequences, teacher inputs and conditions need one row per object (times `forms`)")
        self.seq, self.teacher, self.forms = sequence_NL.long(), teacher_NlC.float(), forms
        self.pooled, self.tokens, self.mask = cond["pooled"], cond["tokens"], cond["mask"]

    def __len__(self) -> int:
        return self.seq.shape[0]

    def __getitem__(self, i: int) -> dict:
        """One object: its sequence, teacher input and condition; with several prompt forms, all of
        them (``pooled (forms, D)``, ...): ``pick_forms`` draws one per step, from the step's generator,
        so a resumed run sees the same draws as an uninterrupted one."""
        rows = slice(i * self.forms, (i + 1) * self.forms) if self.forms > 1 else i
        return {"seq": self.seq[i], "teacher": self.teacher[i], "pooled": self.pooled[rows],
                "tokens": self.tokens[rows], "mask": self.mask[rows]}


def pick_forms(batch: dict, generator: torch.Generator) -> dict:
    """A batch whose objects carry every prompt form (``pooled (B, forms, D)``, ``ARDataset``) with one
    form per object drawn uniformly; a batch with one condition per object is returned as it is."""
    if batch["pooled"].ndim == 2:
        return batch
    B, k = batch["pooled"].shape[:2]
    pick = torch.randint(k, (B,), generator=generator).to(batch["pooled"].device)
    rows = torch.arange(B, device=pick.device)
    return {**batch, **{key: batch[key][rows, pick] for key in ("pooled", "tokens", "mask")}}


@torch.no_grad()
def teacher_inputs(model: SAR3DTransformer, quantizer, sequence_NL: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``teacher_input`` of every sequence, ``(N, L - num_start, C)``."""
    out = []
    for i in range(0, sequence_NL.shape[0], batch_size):
        tokens = sequence_to_tokens(sequence_NL[i:i + batch_size], model.scales)
        out.append(model.teacher_input(quantizer, tokens).float())
    return torch.cat(out)


# ------------------------------------------------------------------------------ the objective
class ARObjective(nn.Module):
    """Teacher-forced cross-entropy (Eq. 1) of a ``SAR3DTransformer``; logs per-scale accuracy."""

    def __init__(self, model: SAR3DTransformer):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, step: int) -> dict:
        g = step_generator(step)
        batch = pick_forms(batch, g)
        logits = self.model(batch["teacher"], batch["pooled"], batch["tokens"], batch["mask"], generator=g)
        out = self.model.loss(logits, batch["seq"])
        scalars = {"loss": out["loss"], "accuracy": out["accuracy"]}
        if not self.model.next_token:
            scalars.update({f"acc_s{k + 1}": a for k, a in enumerate(out["accuracy_per_scale"])})
        return scalars


# ------------------------------------------------------------------------------ checkpoints
def save_generator(folder, model: SAR3DTransformer, vqvae_cfg: SAR3DConfig, condition: str,
                   encoder_name: str, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (everything ``load_generator`` needs)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "condition": condition, "next_token": model.next_token,
            "settings": dataclasses.asdict(model.settings), "cond_dim": model.cond_dim,
            "cond_token_dim": model.cond_token_dim, "vqvae_config": vqvae_cfg.to_dict(),
            "condition_encoder": encoder_name, "parameters": model.num_parameters(), **(extra or {})}
    tmp_w, tmp_c = folder / f".{WEIGHTS_NAME}.tmp", folder / f".{CONFIG_NAME}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp_w),
              metadata={"format": FORMAT})
    tmp_c.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_w, folder / WEIGHTS_NAME)
    os.replace(tmp_c, folder / CONFIG_NAME)
    return folder


def load_generator(folder) -> tuple[SAR3DTransformer, dict]:
    """``(transformer in eval mode, its config.json)`` from a ``save_generator`` folder."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}: not a generator checkpoint "
                                    f"(train one with `sar3d train ar`)")
    from .checkpoints import load_weights, read_meta

    meta = read_meta(folder / CONFIG_NAME, FORMAT)
    cfg = SAR3DConfig.from_dict(meta["vqvae_config"])
    settings = TransformerSettings(**meta["settings"])
    model = SAR3DTransformer.from_config(cfg, meta["cond_dim"], meta["cond_token_dim"], meta["condition"],
                                         settings, meta["next_token"])
    load_weights(model, folder / WEIGHTS_NAME)
    return model.eval(), meta


# ------------------------------------------------------------------------------ training
def check_init(folder, meta: dict, condition: str, next_token: bool, settings: TransformerSettings | None,
               encoder_name: str, fingerprint: str) -> None:
    """Refuse to fine-tune the generator of ``folder`` (its ``config.json``: ``meta``) unless it is
    the same kind of model: condition, next-token or next-scale, transformer settings (when given),
    condition encoder and the VQVAE whose tokens it learnt."""
    wanted = {"condition": condition, "next_token": next_token, "condition_encoder": encoder_name,
              "vqvae_fingerprint": fingerprint}
    if settings is not None:
        wanted["settings"] = dataclasses.asdict(settings)
    for key, value in wanted.items():
        if key in meta and meta[key] != value:
            raise ValueError(f"--init {folder}: its {key} is {meta[key]!r}, this run's is {value!r}; "
                             f"fine-tune a generator of the same kind (or train from scratch without --init)")


def text_prompts(captions, seeds, prompt_forms: bool = True) -> tuple[list, int]:
    """The prompts a text-conditioned generator trains on: ``(flat list, forms per object)``.
    With ``prompt_forms`` and procedural objects (every seed >= 0), each object brings its caption
    and the world's other forms of it (``world.prompt_forms``: "a red chair", "red armchair", ...),
    so short prompts as people type them are in distribution; otherwise one caption per object."""
    if not prompt_forms or any(int(s) < 0 for s in seeds):
        return list(captions), 1
    from .world import prompt_forms as forms_of

    forms = [forms_of(int(s)) for s in tqdm(seeds, desc="prompt forms", unit="obj", leave=False)]
    if any(f[0] != c for f, c in zip(forms, captions)):
        raise ValueError("the token file's captions are not the procedural world's captions of its seeds "
                         "(made by another version of the world?): retokenize, or train with prompt_forms=False")
    return [p for f in forms for p in f], len(forms[0])


def train_ar(tokens_path, data, vqvae, encoder, condition: str, train_cfg: TrainConfig, next_token: bool = False,
             settings: TransformerSettings | None = None, resume: bool = False, export=None,
             prompt_forms: bool = True, init=None) -> dict:
    """Train a generator on a token file (``sar3d data tokenize``) of the data set ``data``.

    ``vqvae``: the ``SAR3DVQVAE`` that made the tokens (its quantizer builds the teacher inputs);
    ``encoder``: the frozen ``conditioning.ConditionEncoder``; ``prompt_forms``: text models also
    see each object's short prompts and a paraphrase (``text_prompts``); ``init``: a generator
    folder (``save_generator``) to start from, a fine-tune (``check_init``; its settings when
    ``settings`` is None). Returns a summary.
    """
    from .tokens import load_tokens

    t0 = time.perf_counter()
    fingerprint = vqvae.fingerprint()  # hashes every weight: once
    loaded = load_tokens(tokens_path, vqvae.cfg, fingerprint)
    if next_token and len(vqvae.cfg.scales) != 1:
        raise ValueError(f"the next-token baseline reads tokens of a single-scale VQVAE, this one has scales "
                         f"{list(vqvae.cfg.scales)} (train one with `sar3d train vqvae --single-scale`)")
    seq = loaded["sequence"]
    forms = 1
    if condition == "text":
        prompts, forms = text_prompts(loaded["caption"], loaded["seed"], prompt_forms)
        cond = encode_conditions(encoder, "text", captions=prompts)
    else:
        forms = len(TRAIN_CONDITION_VIEWS)  # a random view per step, as the paper; tested on CONDITION_VIEW
        cond = encode_conditions(encoder, "image", images=condition_images(data, len(seq), TRAIN_CONDITION_VIEWS,
                                                                           size=vqvae.cfg.image_size))
    start = None
    if init is not None:
        start, meta = load_generator(init)
        check_init(init, meta, condition, next_token, settings, cond["name"], fingerprint)
        settings = start.settings
    model = SAR3DTransformer.from_config(vqvae.cfg, cond["pooled"].shape[1], cond["tokens"].shape[2], condition,
                                         settings, next_token)
    if start is not None:
        model.load_state_dict(start.state_dict())
    dataset = ARDataset(seq, teacher_inputs(model, vqvae.quantizer, seq), cond, forms)
    t_data = time.perf_counter() - t0
    if is_main_process():
        print(f"data: {len(dataset)} sequences of {model.seq_len} tokens from {tokens_path}; condition features of "
              f"{cond['name']} in {t_data:.0f} s; transformer {model.num_parameters() / 1e6:.2f}M parameters")
    out_dir = Path(train_cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    rows = train(ARObjective(model), dataset, lambda net, batch, step: net(batch, step), train_cfg, resume=resume)
    t_train = time.perf_counter() - t1
    summary = {"steps": train_cfg.steps, "data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1),
               "condition": condition, "next_token": next_token, "condition_encoder": cond["name"],
               "prompt_forms_per_object": forms, **({"init": str(init)} if init is not None else {}),
               "parameters": model.num_parameters(), "final": rows[-1] if rows else None}
    if is_main_process():  # one writer under DDP: the ranks hold the same weights
        if export:
            save_generator(export, model, vqvae.cfg, condition, cond["name"],
                           {"training": {k: v for k, v in summary.items() if k != "final"},
                            "tokens": str(tokens_path), "vqvae_checkpoint": loaded["checkpoint"],
                            "vqvae_fingerprint": fingerprint,
                            **({"condition_view": CONDITION_VIEW, "train_condition_views": list(TRAIN_CONDITION_VIEWS)}
                               if condition == "image" else {})})
        print("summary " + json.dumps(summary))
    return summary


@torch.no_grad()
def write_token_draws(generator, tokens_path, out, seeds=None, draws: int = 2, batch_size: int = 32,
                      seed: int = 0, progress: bool = True, keep=None, **sampling) -> Path:
    """A token file of ``draws`` teacher-forced draws per object (``sampling.draw_teacher_forced``)
    by the text ``generator`` (a ``generate.Pipeline``) from its caption: what the generator draws
    at each scale given the object's true coarser scales, at the shipped sampling settings unless
    ``sampling`` says otherwise. ``seeds``: the procedural objects to draw for (default all).
    ``keep`` (a list of scale counts) instead: one row per entry k, the object's true first k scales
    kept and the rest sampled freely given them (``sample_tokens(prefix=...)``), so the later scales
    build on the sampler's own earlier ones as in a plain sample. Rows are object-major (``draws``, or
    ``len(keep)``, rows per object, with its seed and caption); the file carries the token file's VQVAE
    fingerprint. Our addition: the training data of a decoder that reads
    generated token maps (``vqvae_train.train_vqvae(token_draws=...)``)."""
    from .sampling import draw_teacher_forced
    from .tokens import load_tokens, save_tokens

    if generator.condition_kind != "text" or generator.next_token:
        raise ValueError("token draws need a next-scale text generator")
    if keep is not None:
        K = len(generator.transformer.scales)
        keep = [int(k) for k in keep]
        if not keep or not all(1 <= k < K for k in keep):
            raise ValueError(f"keep {keep}: each entry must keep between 1 and {K - 1} of the {K} scales")
        draws = len(keep)
    vq = generator.vqvae
    loaded = load_tokens(tokens_path, vq.cfg, vq.fingerprint())
    rows = list(range(len(loaded["seed"])))
    if seeds is not None:
        where = {s: i for i, s in enumerate(loaded["seed"])}
        missing = [s for s in seeds if s not in where]
        if missing:
            raise ValueError(f"{tokens_path} holds no tokens of the objects with seeds {missing[:5]}: "
                             f"tokenize the data set they come from")
        rows = [where[s] for s in seeds]
    kw = {"cfg": 4.0, "top_k": 10, "top_p": 0.5, **sampling}
    parts = []
    for b in tqdm(range(0, len(rows), batch_size), desc="token draws", disable=not progress):
        part = rows[b:b + batch_size]
        truth = sequence_to_tokens(loaded["sequence"][part], loaded["schedule"])
        cond = generator.condition(text=[loaded["caption"][i] for i in part])
        if keep is None:
            drawn = [draw_teacher_forced(generator.transformer, vq.quantizer, truth, cond.pooled, cond.tokens,
                                         cond.mask, seed=seed + b * draws + d, **kw) for d in range(draws)]
        else:
            drawn = [generator.sample_tokens(cond, seed=seed + b * draws + d, prefix=truth[:k], **kw)
                     for d, k in enumerate(keep)]
        drawn = [tokens_to_sequence(t) for t in drawn]
        parts.append(torch.stack(drawn, 1).flatten(0, 1))  # (B * draws, L), object-major
    seq = torch.cat(parts)
    obj = [i for i in rows for _ in range(draws)]
    return save_tokens(out, seq, vq.cfg, [loaded["source"][i] for i in obj], [loaded["caption"][i] for i in obj],
                       [loaded["seed"][i] for i in obj], checkpoint=loaded["checkpoint"],
                       fingerprint=loaded["vqvae_fingerprint"], refine_steps=loaded["refine_steps"])
