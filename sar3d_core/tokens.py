"""Token files: encode objects to multi-scale tokens, decode them, tokenize data sets (Sec. 4.1-4.2).

The AR stage (Sec. 4.2) trains on tokens precomputed by the VQVAE, as the official code
does. A token file is an ``.npz`` with

* ``format``: ``"sar3d-tokens/1"``; ``schedule``: the scales ``(K,)``; ``codebook_size``;
* ``sequence``: ``(N, L)`` token ids in the order of ``quantizer.tokens_to_sequence``
  (scale by scale, plane by plane, row-major; DESIGN.md §4), ``L = sum_k 3 s_k^2``;
* ``source``, ``caption``, ``seed``: one entry per object (``seed`` -1 when not procedural);
* ``checkpoint``: the VQVAE that wrote it; ``vqvae_fingerprint``: its weights' fingerprint
  (``SAR3DVQVAE.fingerprint``; absent in files written before it existed);
* ``refine_steps``: steps of ``SAR3DVQVAE.encode_refined`` per object (0: the encoder's one
  pass; absent, read as 0, in files written before it existed).

Reading checks the schedule and codebook size against the VQVAE that will decode it, and the
fingerprint when both sides have one, so a file from another schedule or another checkpoint
of the same schedule fails with one clear line instead of a wrong decode.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import SAR3DConfig, total_tokens
from .quantizer import sequence_to_tokens, tokens_to_sequence

FORMAT = "sar3d-tokens/1"


def save_tokens(path, sequence_NL, cfg: SAR3DConfig, sources, captions, seeds, checkpoint: str = "",
                fingerprint: str = "", refine_steps: int = 0) -> Path:
    """Write a token file atomically (see the module doc)."""
    path = Path(path)
    seq = np.asarray(sequence_NL.cpu() if torch.is_tensor(sequence_NL) else sequence_NL)
    if seq.ndim != 2 or seq.shape[1] != total_tokens(cfg.scales):
        raise ValueError(f"sequence has shape {seq.shape}: expected (N, {total_tokens(cfg.scales)}) for scales {cfg.scales}")
    n = len(seq)
    if not (len(sources) == len(captions) == len(seeds) == n):
        raise ValueError("sources, captions and seeds need one entry per sequence")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, format=np.array(FORMAT), schedule=np.array([int(s) for s in cfg.scales]),
                        codebook_size=np.array(cfg.codebook_size), sequence=seq.astype(np.int32),
                        source=np.array(list(sources), dtype=str), caption=np.array(list(captions), dtype=str),
                        seed=np.array(list(seeds), dtype=np.int64), checkpoint=np.array(str(checkpoint)),
                        vqvae_fingerprint=np.array(str(fingerprint)), refine_steps=np.array(int(refine_steps)))
    os.replace(tmp, path)
    return path


def _read_npz(path: Path) -> dict:
    """Every array of an .npz archive, never unpickling; ValueError (one line) when it is not one."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:  # an .npy gives an array: no context manager (TypeError)
            data = {k: z[k] for k in z.files}
    except (TypeError, AttributeError):
        reason = "it holds one .npy array, not an archive"
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
    else:
        return data
    raise ValueError(f"{path} is not a readable .npz token file ({reason}): write one with `sar3d encode` "
                     f"or `sar3d data tokenize`")


def _check_fields(path: Path, data: dict) -> None:
    """The arrays of a token file have the kinds and shapes of the module doc, else one ValueError."""
    missing = [k for k in ("schedule", "codebook_size", "sequence", "source", "caption", "seed", "checkpoint")
               if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the array(s) {', '.join(missing)} of a token file: re-write it with "
                         f"`sar3d encode` or `sar3d data tokenize`")
    integer = {k: data[k] for k in ("schedule", "codebook_size", "sequence", "seed")}
    for name, a in integer.items():
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{path}: `{name}` holds {a.dtype} values, expected integers (a corrupt token file)")
    if "refine_steps" in data and (data["refine_steps"].ndim != 0 or not np.issubdtype(data["refine_steps"].dtype, np.integer)):
        raise ValueError(f"{path}: `refine_steps` must be one integer (a corrupt token file)")
    shapes = {"schedule": 1, "codebook_size": 0, "sequence": 2, "source": 1, "caption": 1, "seed": 1, "checkpoint": 0}
    for name, ndim in shapes.items():
        if data[name].ndim != ndim:
            raise ValueError(f"{path}: `{name}` has shape {data[name].shape}, expected {ndim} dimension(s) "
                             f"(a corrupt token file)")
    n = len(data["sequence"])
    if not (len(data["source"]) == len(data["caption"]) == len(data["seed"]) == n):
        raise ValueError(f"{path}: {n} sequences but {len(data['source'])} sources, {len(data['caption'])} captions "
                         f"and {len(data['seed'])} seeds (a corrupt token file)")
    if len(data["schedule"]) == 0 or data["schedule"].min() < 1 or int(data["codebook_size"]) < 1:
        raise ValueError(f"{path}: scales {data['schedule'].tolist()} with {int(data['codebook_size'])} codes "
                         f"(a corrupt token file)")


def load_tokens(path, cfg: SAR3DConfig | None = None, fingerprint: str = "") -> dict:
    """Read a token file; with ``cfg``, check that its schedule and codebook match; with
    ``fingerprint`` (``SAR3DVQVAE.fingerprint`` of the reader), that the same weights wrote it.
    Raises FileNotFoundError or ValueError (one line naming the file) on a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such token file (write one with `sar3d encode` or `sar3d data tokenize`)")
    data = _read_npz(path)
    if str(data.get("format", "")) != FORMAT:
        raise ValueError(f"{path} has format {str(data.get('format', 'none'))!r}, expected {FORMAT!r}")
    _check_fields(path, data)
    schedule = tuple(int(s) for s in data["schedule"])
    if cfg is not None:
        if schedule != tuple(int(s) for s in cfg.scales) or int(data["codebook_size"]) != cfg.codebook_size:
            raise ValueError(f"{path} holds tokens of scales {schedule} with {int(data['codebook_size'])} codes, "
                             f"but the VQVAE has scales {tuple(cfg.scales)} with {cfg.codebook_size}: "
                             f"encode with the same checkpoint")
    written_by = str(data.get("vqvae_fingerprint", ""))
    if fingerprint and written_by and fingerprint != written_by:
        raise ValueError(f"{path} was written by the VQVAE {str(data['checkpoint'])!r} (fingerprint {written_by}), "
                         f"not by this one (fingerprint {fingerprint}): pass that checkpoint, or re-tokenize with "
                         f"`sar3d data tokenize --checkpoint ...`")
    seq = data["sequence"]
    if seq.shape[1] != total_tokens(schedule) or seq.min(initial=0) < 0 \
            or seq.max(initial=0) >= int(data["codebook_size"]):
        raise ValueError(f"{path}: sequence of shape {seq.shape} does not fit scales {schedule} "
                         f"and {int(data['codebook_size'])} codes")
    return {"sequence": torch.from_numpy(seq.astype(np.int64)), "schedule": schedule,
            "codebook_size": int(data["codebook_size"]), "source": [str(s) for s in data["source"]],
            "caption": [str(s) for s in data["caption"]], "seed": [int(s) for s in data["seed"]],
            "checkpoint": str(data["checkpoint"]), "vqvae_fingerprint": written_by,
            "refine_steps": int(data.get("refine_steps", 0))}


def tokens_of(loaded: dict, i: int | None = None) -> list[torch.Tensor]:
    """Per-scale token maps ``[(B, 3, s_k, s_k)]`` of object ``i`` (all objects when None)."""
    seq = loaded["sequence"] if i is None else loaded["sequence"][i:i + 1]
    return sequence_to_tokens(seq, loaded["schedule"])


@torch.no_grad()
def encode_multiview(model, mv, refine_steps: int = 0) -> list[torch.Tensor]:
    """Tokens ``[(1, 3, s_k, s_k)]`` of one object's views (``views.MultiView``; the first 6
    views are the encoder inputs, in the chunk layout); ``refine_steps``: see
    ``SAR3DVQVAE.encode_refined``."""
    if mv.num_views < model.cfg.num_input_views:
        raise ValueError(f"the object has {mv.num_views} views; the encoder needs {model.cfg.num_input_views}")
    if mv.size != (model.cfg.image_size, model.cfg.image_size):
        raise ValueError(f"views are {mv.size[0]}x{mv.size[1]} px; the VQVAE reads {model.cfg.image_size} px "
                         f"(data.resize_views)")
    return model.encode_views(mv, refine_steps).tokens


@torch.no_grad()
def decode_views(model, tokens, c_V25: torch.Tensor, size: int | None = None, num_scales: int | None = None) -> dict:
    """Render tokens (one object) at cameras ``c (V, 25)``: ``rgb (V, 3, H, W)``, ``depth``, ``mask``."""
    planes = model.decode_tokens(tokens, num_scales)
    out = model.render(planes, c_V25[None].to(planes.dtype), size, chunk=8192)
    return {k: v[0] for k, v in out.items()}


def tokenize_dataset(model, data, out, batch_size: int = 16, checkpoint: str = "", refine_steps: int = 0,
                     refine_rays: int = 2048, limit: int | None = None) -> dict:
    """Tokens of every object of a data set folder (``data.MultiViewDataset``) into ``out``;
    ``refine_steps > 0`` refines each batch's tokens on its input views (``SAR3DVQVAE.encode_refined``
    with ``refine_rays`` rays per object and step, masks ``depth > 0``; on one CPU core about 18 ms per
    object and step at 256 rays and 100 ms at 2048, so long runs are meant for a GPU). ``limit``: the first that many objects only
    (a generator trains on the token file's objects, the data set's first ones).

    Returns ``{"objects", "seconds", "objects_per_second", "path"}``.
    """
    from .data import MultiViewDataset

    dataset = MultiViewDataset(data, size=model.cfg.image_size)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit={limit}: tokenize at least one object (None: all {len(dataset)})")
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
    seqs, sources, captions, seeds = [], [], [], []
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i, batch in enumerate(tqdm(loader, desc="tokenizing", unit="batch")):
            x, c = batch["encoder_input"], batch["input_c"]
            q = model.encode_refined(x, c, refine_steps, rays=refine_rays, seed=i) if refine_steps else model.encode(x, c)
            seqs.append(tokens_to_sequence(q.tokens))
            sources += list(batch["id"])
            captions += list(batch["caption"])
            seeds += [int(s) for s in batch["seed"]]
    seconds = time.perf_counter() - t0
    path = save_tokens(out, torch.cat(seqs), model.cfg, sources, captions, seeds, checkpoint, model.fingerprint(),
                       refine_steps)
    return {"objects": len(seeds), "seconds": round(seconds, 2),
            "objects_per_second": round(len(seeds) / max(seconds, 1e-9), 1), "path": str(path)}
