"""The procedural data set: objects of the world rendered into SAR3D/LN3Diff chunk folders.

``build_dataset`` stands in for the paper's G-Objaverse preprocessing (Sec. 5.1): it renders
the objects of a split (``objects_in_split``) from the 12 chunk cameras of each seed
(``cameras.chunk_cameras``: 6 encoder inputs, 6 supervision views) with ``render_sdf`` and
writes them in the layout that ``data.read_chunk`` and ``data.MultiViewDataset`` read, so the
real and the procedural data share one loader.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from ..cameras import chunk_cameras
from ..data import INDEX_NAME, default_cache_dir, read_index, write_chunk
from .objects import make_object, objects_in_split
from .sdf_render import render_sdf


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _render_one(job) -> None:
    """Render and write one procedural object (runs in a worker process, one torch thread).
    The job names the object by its seed: an object's tensors sent to a worker would each hold a
    file descriptor of the parent open (torch's shared-memory pickling), thousands over a large build."""
    seed, folder, size, supersample, split = job
    obj = make_object(seed)
    mv = render_sdf(obj, chunk_cameras(obj.seed), size, size, supersample=supersample)
    write_chunk(replace(mv, caption=obj.caption), folder, ins=f"proc/{split}/{obj.seed}")


def _single_thread_worker() -> None:
    torch.set_num_threads(1)  # the renderer's tensors are small: threads fight, processes scale


def build_dataset(out=None, count: int = 100, size: int = 64, split: str = "train", start: int = 0,
                  supersample: int = 2, progress: bool = True, workers: int = 1) -> Path:
    """Render the first ``count`` objects of ``split`` among seeds ``start, start + 1, ...`` into ``out``.

    One chunk folder per object, ``out/<seed:06d>/`` (12 views of ``chunk_cameras(seed)``:
    6 encoder inputs, 6 supervision views), then ``out/index.json`` (seed, split, caption,
    category, attributes of every object) written last. Resumable: existing chunk folders
    are complete (``write_chunk`` is atomic) and are skipped. ``workers`` processes render
    in parallel, one torch thread each. Returns ``out``.
    """
    import multiprocessing

    from tqdm.auto import tqdm

    out = Path(out).expanduser() if out is not None else default_cache_dir() / f"proc_{split}_{size}"
    if count < 1:
        raise ValueError(f"count={count}: a data set holds at least 1 object")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: give a folder for the data set")
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX_NAME
    index = read_index(index_path) if index_path.is_file() else {}
    if index and (index.get("size") != size or index.get("split") != split):
        raise ValueError(f"{out} holds a {index.get('split')} data set at {index.get('size')} px: "
                         f"use another folder for {split} at {size} px")
    entries = {e["seed"]: e for e in index.get("objects", [])}
    jobs = []
    for obj in objects_in_split(split, count, start=start):
        folder = out / f"{obj.seed:06d}"
        if folder.is_dir():  # complete by construction
            with Image.open(folder / "raw_img.png") as im:
                if im.size[1] != size:
                    raise ValueError(f"{folder} holds {im.size[1]} px views: expected {size}")
        else:
            jobs.append((obj.seed, folder, size, supersample, split))
        entries[obj.seed] = {"folder": folder.name, **obj.to_dict()}
    workers = max(1, min(workers, len(jobs)))
    bar = tqdm(total=len(jobs), desc=f"rendering {split} objects", unit="obj", disable=not progress)
    if workers == 1:
        threads = torch.get_num_threads()
        _single_thread_worker()
        try:
            for job in jobs:
                _render_one(job)
                bar.update()
        finally:
            torch.set_num_threads(threads)
    else:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_single_thread_worker) as pool:
            for _ in pool.imap_unordered(_render_one, jobs):
                bar.update()
    bar.close()
    _write_json_atomic(index_path, {"format": "sar3d-chunks", "size": size, "split": split, "views": 12,
                                    "supersample": supersample, "objects": [entries[s] for s in sorted(entries)]})
    return out
