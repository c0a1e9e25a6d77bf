"""Evaluating the generators on the test split (issue 5's targets; metrics of Sec. 5.1).

Every number names the networks that produced it. The test split's captions hold
attribute combinations never seen in training (``world``), so the attribute accuracies
measure composition, not recall.

* **Text-conditioned** (``evaluate_text``): one object per test caption, rendered from
  ``EVAL_VIEWS`` (two orbit views, elevation 20 deg); the evaluation feature network
  (``features``, a different network from the tiny CLIP that conditions the model)
  classifies category and colour; FID between its features of the generated renders and of
  the ground-truth renders from the same cameras; COV / MMD-CD between point clouds on the
  marching-cubes surfaces of the samples and on the exact surfaces of the test objects.
* **VQVAE ceiling** (``reconstruction_reference``): the same point-cloud metrics for the
  VQVAE's reconstructions of the same objects, the bar for "MMD-CD within 1.5x".
* **Image-conditioned** (``evaluate_image``): PSNR of the novel views 6-11 of the sample
  against the ground truth, from the condition image (the chunk view of ``ar_train``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import fid_from_features, point_cloud_metrics, psnr

EVAL_POINTS = 2048
EVAL_AZIMUTHS, EVAL_ELEVATION = (30.0, 210.0), 20.0


def eval_cameras() -> torch.Tensor:
    """``EVAL_VIEWS``: the two cameras ``(2, 25)`` every generated object is rendered from."""
    from .cameras import orbit_cameras

    return orbit_cameras(list(EVAL_AZIMUTHS), [EVAL_ELEVATION] * len(EVAL_AZIMUTHS))


def test_records(data, limit: int | None = None) -> list[dict]:
    """``index.json`` entries of a built data set folder (seed, category, attributes, caption, folder)."""
    index = Path(data) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{data}: no index.json; build the test split with "
                                f"`sar3d data build --split test --size 64 --count 300`")
    objects = json.loads(index.read_text(encoding="utf-8"))["objects"]
    return objects[:limit] if limit else objects


def labels_of_record(r: dict) -> dict:
    return {"category": r["category"], **r["attributes"]}


def ground_truth_renders(records, size: int = 64) -> torch.Tensor:
    """Exact renders of the procedural objects from ``eval_cameras``: ``(N * 2, 3, H, W)``."""
    from .render import render_sdf
    from .world import make_object

    c = eval_cameras()
    out = [render_sdf(make_object(int(r["seed"])), c, size, size).rgb
           for r in tqdm(records, desc="reference renders", leave=False)]
    return torch.cat(out)


def exact_points(records, n: int = EVAL_POINTS) -> torch.Tensor:
    from .world import make_object

    return torch.stack([make_object(int(r["seed"])).sample_surface(n, seed=i).float() for i, r in enumerate(records)])


def mesh_points(vqvae, planes_B3FHW: torch.Tensor, n: int = EVAL_POINTS, resolution: int = 48, seed: int = 0):
    """Points on the marching-cubes surface of each object (None where it has no surface)."""
    from .meshing import extract_mesh
    from .metrics import sample_mesh_surface

    out = []
    for b in range(planes_B3FHW.shape[0]):
        try:
            mesh = extract_mesh(vqvae.field, planes_B3FHW[b:b + 1], vqvae.triplane_settings.num_samples, resolution)
            out.append(sample_mesh_surface(mesh, n, seed=seed + b).float())
        except ValueError:
            out.append(None)
    return out


def _cloud_metrics(points: list, ref_RN3: torch.Tensor) -> dict:
    ok = [p for p in points if p is not None]
    if not ok:
        return {"COV-CD": 0.0, "MMD-CD": float("nan"), "empty": len(points)}
    r = point_cloud_metrics(torch.stack(ok), ref_RN3, emd=False, progress=False)
    return {"COV-CD": r["COV-CD"], "MMD-CD": r["MMD-CD"], "1-NNA-CD": r["1-NNA-CD"], "empty": len(points) - len(ok),
            "protocol": r["protocol"]}


@torch.no_grad()
def generate_for_captions(gen, captions, *, batch_size: int = 25, seed: int = 0, progress: bool = True,
                          **sampling) -> dict:
    """Sample one object per caption (batched); ``planes``, ``views`` from ``eval_cameras`` and the
    seconds spent sampling."""
    c = eval_cameras()
    planes, views, t_sample = [], [], 0.0
    for i in tqdm(range(0, len(captions), batch_size), desc="generating", disable=not progress, leave=False):
        cond = gen.condition(text=list(captions[i:i + batch_size]))
        t0 = time.perf_counter()
        tokens = gen.sample_tokens(cond, seed=seed + i, **sampling)
        t_sample += time.perf_counter() - t0
        p = gen.vqvae.decode_tokens(tokens)
        planes.append(p)
        views.append(gen.vqvae.render(p, c[None].expand(p.shape[0], -1, -1), chunk=8192)["rgb"].clamp(0, 1))
    return {"planes": torch.cat(planes), "views": torch.cat(views), "sample_seconds": t_sample}


def evaluate_text(gen, data, limit: int = 100, *, featnet=None, seed: int = 0, points: bool = True,
                  progress: bool = True, **sampling) -> dict:
    """Attribute accuracy, FID and COV/MMD-CD of a text-conditioned generator over ``limit`` test captions."""
    from .features import attribute_accuracy, load_default

    featnet = featnet or load_default()
    records = test_records(data, limit)
    out = generate_for_captions(gen, [r["caption"] for r in records], seed=seed, progress=progress, **sampling)
    images = out["views"].flatten(0, 1)  # (N * 2, 3, H, W), object-major
    labels = [labels_of_record(r) for r in records for _ in EVAL_AZIMUTHS]
    acc = attribute_accuracy(featnet, images, labels)
    heldout = heldout_accuracy(images, records, featnet)
    ref_images = ground_truth_renders(records, images.shape[-1])
    fid = fid_from_features(featnet.features(images), featnet.features(ref_images),
                            feature_network=featnet.config.name)
    result = {"objects": len(records), "category_accuracy": acc.get("category"), "colour_accuracy": acc.get("colour"),
              "FID": fid["FID"], "feature_network": featnet.config.name,
              "generator": gen.name, "condition_encoder": gen.encoder.name,
              "sampling": sampling, "sample_seconds_per_object": out["sample_seconds"] / len(records), **heldout}
    if points:
        ref = exact_points(records)
        result.update(_cloud_metrics(mesh_points(gen.vqvae, out["planes"]), ref))
    return result


@torch.no_grad()
def reconstruction_reference(vqvae, data, limit: int = 100, progress: bool = True, featnet=None) -> dict:
    """The generator's ceiling: COV / MMD-CD of the VQVAE's own reconstructions of the test
    objects and, with ``featnet``, the category / colour accuracy and FID of their renders
    from ``eval_cameras`` (what a generator that hit every object's tokens would score)."""
    from .data import MultiViewDataset
    from .features import attribute_accuracy

    records = test_records(data, limit)
    ds = MultiViewDataset(data, size=vqvae.cfg.image_size)
    c = eval_cameras()[None]
    clouds, views = [], []
    for i in tqdm(range(len(records)), desc="reconstructing", disable=not progress, leave=False):
        planes = vqvae.decode_fhat(vqvae.encode(ds[i]["encoder_input"][None], ds[i]["input_c"][None]).f_hat)
        clouds += mesh_points(vqvae, planes, seed=i)
        if featnet is not None:
            views.append(vqvae.render(planes, c, 64, chunk=8192)["rgb"][0].clamp(0, 1))
    result = _cloud_metrics(clouds, exact_points(records))
    if featnet is not None:
        images = torch.cat(views)
        acc = attribute_accuracy(featnet, images, [labels_of_record(r) for r in records for _ in EVAL_AZIMUTHS])
        fid = fid_from_features(featnet.features(images), featnet.features(ground_truth_renders(records, 64)),
                                feature_network=featnet.config.name)
        result.update(category_accuracy=acc.get("category"), colour_accuracy=acc.get("colour"), FID=fid["FID"],
                      feature_network=featnet.config.name)
    return result


@torch.no_grad()
def evaluate_image(gen, data, limit: int = 100, *, seed: int = 0, batch_size: int = 25, progress: bool = True,
                   **sampling) -> dict:
    """PSNR of the novel views 6-11 against the ground truth, conditioned on the chunk view the
    generator was trained with (``condition_view`` in its config)."""
    from .data import MultiViewDataset

    view = gen.meta.get("condition_view", 0)  # checkpoints from before the field was recorded used view 0
    ds = MultiViewDataset(data, size=gen.vqvae.cfg.image_size)
    n = min(limit, len(ds))
    novel = list(range(6, 12))
    scores, t_sample = [], 0.0
    for i in tqdm(range(0, n, batch_size), desc="image-to-3D", disable=not progress, leave=False):
        mvs = [ds.read(j) for j in range(i, min(i + batch_size, n))]  # each object read once
        cond = gen.condition(image=torch.stack([mv.rgb[view] for mv in mvs]))
        t0 = time.perf_counter()
        tokens = gen.sample_tokens(cond, seed=seed + i, **sampling)
        t_sample += time.perf_counter() - t0
        planes = gen.vqvae.decode_tokens(tokens)
        c = torch.stack([mv.c[novel] for mv in mvs])
        rgb = gen.vqvae.render(planes, c, chunk=8192)["rgb"].clamp(0, 1)
        for b, mv in enumerate(mvs):
            scores.append(float(psnr(rgb[b], mv.rgb[novel]).mean()))
    return {"objects": n, "psnr_novel": float(np.mean(scores)), "psnr_std": float(np.std(scores)),
            "generator": gen.name, "condition_encoder": gen.encoder.name,
            "sampling": sampling, "sample_seconds_per_object": t_sample / n}


def heldout_accuracy(images, records, featnet) -> dict:
    """Category and colour accuracy on the test objects whose (category, colour) pair never
    occurs in training (``world.HELDOUT_PAIRS``)."""
    from .features import attribute_accuracy
    from .world import heldout_combinations

    pairs = heldout_combinations()
    keep = [i for i, r in enumerate(records) if (r["category"], r["attributes"].get("colour")) in pairs]
    if not keep:
        return {"heldout_objects": 0}
    V = len(EVAL_AZIMUTHS)
    idx = [i * V + v for i in keep for v in range(V)]
    acc = attribute_accuracy(featnet, images[idx], [labels_of_record(records[i]) for i in keep for _ in range(V)])
    return {"heldout_objects": len(keep), "heldout_category_accuracy": acc.get("category"),
            "heldout_colour_accuracy": acc.get("colour")}


def main(argv=None) -> dict:
    """``python -m sar3d_core.ar_eval``: the README's generation table (shipped checkpoints by default)."""
    import argparse

    from .features import load_default as load_featnet
    from .generate import DEFAULT_IMAGE, DEFAULT_NEXT_TOKEN, DEFAULT_TEXT, Generator

    p = argparse.ArgumentParser(prog="python -m sar3d_core.ar_eval", description=main.__doc__)
    p.add_argument("--data", required=True, help="the built test split (index.json), e.g. ~/.cache/sar3d/test64")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--text", default=str(DEFAULT_TEXT))
    p.add_argument("--image", default=str(DEFAULT_IMAGE))
    p.add_argument("--next-token", default=str(DEFAULT_NEXT_TOKEN))
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    featnet = load_featnet()
    out = {"data": a.data, "limit": a.limit, "threads": torch.get_num_threads()}
    for key, folder in (("next_scale", a.text), ("next_token", a.next_token)):
        gen = Generator.from_pretrained(folder)
        r = evaluate_text(gen, a.data, a.limit, featnet=featnet, cfg=a.cfg)
        r["vqvae_ceiling"] = reconstruction_reference(gen.vqvae, a.data, a.limit, featnet=featnet)
        out[key] = r
        print(key, json.dumps({k: v for k, v in r.items() if k != "protocol"}, default=str))
    gen = Generator.from_pretrained(a.image)
    out["image"] = evaluate_image(gen, a.data, a.limit, cfg=a.cfg)
    print("image", json.dumps(out["image"]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
