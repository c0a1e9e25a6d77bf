"""Evaluating the generators on the test split (issue 5's targets; metrics of Sec. 5.1).

Every number names the networks that produced it. The test split's captions hold
attribute combinations never seen in training (``world``), so the attribute accuracies
measure composition, not recall.

* **Text-conditioned** (``evaluate_text``): one object per test caption, rendered from
  ``EVAL_VIEWS`` (two orbit views, elevation 20 deg); the evaluation feature network
  (``featnet``, a different network from the tiny CLIP that conditions the model)
  classifies category and colour; FID between its features of the generated renders and of
  the ground-truth renders from the same cameras; COV / MMD-CD between point clouds on the
  marching-cubes surfaces of the samples and on the exact surfaces of the test objects.
* **VQVAE ceiling** (``reconstruction_reference``): the same point-cloud metrics for the
  VQVAE's reconstructions of the same objects, the bar for "MMD-CD within 1.5x".
* **Image-conditioned** (``evaluate_image``): PSNR of the novel views 6-11 of the sample
  against the ground truth, from the condition image (the chunk view of ``ar_train``).
* **Table 1 at toy scale** (``table1``, ``format_table1``): the paper's Table 1 columns (FID, KID,
  COV, MMD; no MUSIQ) plus EMD, 1-NNA, attribute accuracy and latency for the shipped generators
  and for reference rows (VQVAE ceiling, real-data floor, caption retrieval, an unconditional
  sample), each number with a bootstrap 95 % interval, the paper's numbers (``PAPER_TABLE1``)
  and a check of the orderings the paper claims (``ORDERING_CLAIMS``).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import TIE_RTOL, fid_from_features, point_cloud_metrics, psnr

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
    from .world import make_object, render_sdf

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
    from .featnet import load_default

    featnet = featnet or load_default()
    records = test_records(data, limit)
    out = generate_for_captions(gen, [r["caption"] for r in records], seed=seed, progress=progress, **sampling)
    images = out["views"].flatten(0, 1)  # (N * 2, 3, H, W), object-major
    acc = attribute_accuracy_of_views(featnet, out["views"], records)
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


def short_prompts(rounds: int = 1) -> list[tuple[str, str, str]]:
    """Plain prompts as people type them, one per category and round, the colour varied with both:
    ``[("a red table", "table", "red"), ...]`` (15 categories x ``rounds``)."""
    from .world import CATEGORIES, COLOURS, with_article

    colours = list(COLOURS)
    pairs = [(cat, colours[(5 * i + 3 * r) % len(colours)]) for r in range(rounds) for i, cat in enumerate(CATEGORIES)]
    return [(with_article(f"a {colour} {cat}"), cat, colour) for cat, colour in pairs]


@torch.no_grad()
def evaluate_short_prompts(gen, rounds: int = 2, *, featnet=None, seed: int = 0, progress: bool = True,
                           **sampling) -> dict:
    """Category and colour accuracy of a text generator on ``short_prompts(rounds)``: one sample per
    prompt, judged by the feature network from the two ``eval_cameras`` views."""
    from .featnet import attribute_accuracy, load_default

    featnet = featnet or load_default()
    prompts = short_prompts(rounds)
    out = generate_for_captions(gen, [p for p, _, _ in prompts], seed=seed, progress=progress, **sampling)
    images = out["views"].flatten(0, 1)
    labels = [{"category": c, "colour": k} for _, c, k in prompts for _ in EVAL_AZIMUTHS]
    acc = attribute_accuracy(featnet, images, labels)
    return {"prompts": len(prompts), "category_accuracy": acc.get("category"), "colour_accuracy": acc.get("colour"),
            "feature_network": featnet.config.name, "generator": gen.name, "sampling": sampling,
            "examples": [p for p, _, _ in prompts[:5]]}


@torch.no_grad()
def reconstruction_reference(vqvae, data, limit: int = 100, progress: bool = True, featnet=None) -> dict:
    """The generator's ceiling: COV / MMD-CD of the VQVAE's own reconstructions of the test
    objects and, with ``featnet``, the category / colour accuracy and FID of their renders
    from ``eval_cameras`` (what a generator that hit every object's tokens would score)."""
    from .data import MultiViewDataset
    from .featnet import attribute_accuracy

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
                   supersample: int = 2, candidates: int = 1, refine_from: int | None = None, fit_steps: int = 0,
                   **sampling) -> dict:
    """PSNR of the novel views 6-11 against the ground truth, conditioned on the chunk view the
    generator was trained with (``condition_view`` in its config). The samples are rendered
    anti-aliased (``supersample`` x ``supersample`` rays per pixel) as the data's targets are.
    ``candidates > 1``: the best of that many samples per image by agreement with the condition
    view, with ``refine_from`` its second round (``Pipeline.sample_best_of``; it reads the condition
    image and camera, never views 6-11). ``fit_steps``: then fit the kept sample to the condition
    view for that many steps (``Pipeline.fit_condition_view``, which reads the same)."""
    from .data import MultiViewDataset

    view = gen.meta.get("condition_view", 0)  # checkpoints from before the field was recorded used view 0
    ds = MultiViewDataset(data, size=gen.vqvae.cfg.image_size)
    n = min(limit, len(ds))
    novel = list(range(6, 12))
    scores, t_sample = [], 0.0
    batch_size = max(1, batch_size // candidates)  # B x N samples are decoded and rendered at once
    for i in tqdm(range(0, n, batch_size), desc="image-to-3D", disable=not progress, leave=False):
        mvs = [ds.read(j) for j in range(i, min(i + batch_size, n))]  # each object read once
        images, cameras = torch.stack([mv.rgb[view] for mv in mvs]), torch.stack([mv.c[view] for mv in mvs])
        cond = gen.condition(image=images)
        t0 = time.perf_counter()
        if candidates > 1:
            tokens, planes, _ = gen.sample_best_of(cond, images, candidates, cameras, refine_from=refine_from,
                                                   seed=seed + i, **sampling)
        else:
            tokens = gen.sample_tokens(cond, seed=seed + i, **sampling)
            planes = gen.vqvae.decode_tokens(tokens)
        if fit_steps:
            tokens, planes = gen.fit_condition_view(tokens, images, fit_steps, cameras, seed=seed + i)
        t_sample += time.perf_counter() - t0
        c = torch.stack([mv.c[novel] for mv in mvs])
        rgb = gen.vqvae.render(planes, c, chunk=8192, supersample=supersample)["rgb"].clamp(0, 1)
        for b, mv in enumerate(mvs):
            scores.append(float(psnr(rgb[b], mv.rgb[novel]).mean()))
    return {"objects": n, "psnr_novel": float(np.mean(scores)), "psnr_std": float(np.std(scores)),
            "supersample": supersample, "generator": gen.name, "condition_encoder": gen.encoder.name,
            "sampling": sampling, "candidates": candidates, "refine_from": refine_from, "fit_steps": fit_steps,
            "sample_seconds_per_object": t_sample / n}


def heldout_accuracy(images, records, featnet) -> dict:
    """Category and colour accuracy on the test objects whose (category, colour) pair never
    occurs in training (``world.HELDOUT_PAIRS``)."""
    from .featnet import attribute_accuracy
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


# ==================================================================== Table 1 at toy scale
# The paper's Table 1 (Sec. 5.1), computed live from the shipped checkpoints on the test split:
# see `table1`. Everything below builds on the functions above.

PAPER_TABLE1 = {  # Table 1 of the paper: image-conditioned 3D generation on G-Objaverse
    # FID and KID (%) on Inception-V3 features of renders, MUSIQ (no-reference image quality),
    # COV (%) and MMD (%) of point clouds, latency in seconds on a Tesla V100
    "Splatter-Image": {"FID": 48.80, "KID": 3.65, "MUSIQ": 30.33, "COV": 37.66, "MMD": 30.69, "latency_s": 0.83},
    "OpenLRM": {"FID": 38.41, "KID": 1.87, "MUSIQ": 45.46, "COV": 39.33, "MMD": 29.08, "latency_s": 7.21},
    "One-2-3-45 (V=12)": {"FID": 88.39, "KID": 6.34, "MUSIQ": 59.02, "COV": 33.33, "MMD": 35.09, "latency_s": 59.23},
    "Lara (V=4)": {"FID": 43.74, "KID": 1.95, "MUSIQ": 39.37, "COV": 39.33, "MMD": 28.84, "latency_s": 11.93},
    "CRM (V=6)": {"FID": 45.53, "KID": 1.93, "MUSIQ": 64.10, "COV": 38.83, "MMD": 28.91, "latency_s": 22.10},
    "LGM (V=4)": {"FID": 19.93, "KID": 0.55, "MUSIQ": 54.78, "COV": 50.83, "MMD": 22.06, "latency_s": 3.87},
    "Shap-E": {"FID": 138.53, "KID": 11.95, "MUSIQ": 31.51, "COV": 61.33, "MMD": 19.17, "latency_s": 9.54},
    "LN3Diff": {"FID": 29.08, "KID": 0.89, "MUSIQ": 50.39, "COV": 55.17, "MMD": 19.94, "latency_s": 7.51},
    "SAR3D-NeRF": {"FID": 22.55, "KID": 0.42, "MUSIQ": 65.77, "COV": 74.17, "MMD": 13.63, "latency_s": 1.64},
    "SAR3D-FlexiCubes": {"FID": 27.30, "KID": 0.63, "MUSIQ": 67.24, "COV": 71.50, "MMD": 15.25, "latency_s": 2.92},
}
PAPER_COLUMNS = (("FID", "FID"), ("KID", "KID (%)"), ("MUSIQ", "MUSIQ"), ("COV", "COV (%)"), ("MMD", "MMD (%)"),
                 ("latency_s", "latency V100 (s)"))
PAPER_HIGHER_IS_BETTER = {"FID": False, "KID": False, "MUSIQ": True, "COV": True, "MMD": False, "latency_s": False}

# our columns: key, Markdown header, display scale, higher is better, the paper column it stands for
TABLE1_COLUMNS = (
    ("FID", "FID", 1, False, "FID"),
    ("KID", "KID (%)", 100, False, "KID"),
    ("COV-CD", "COV-CD (%)", 100, True, "COV"),
    ("MMD-CD", "MMD-CD (x10^3)", 1e3, False, "MMD"),
    ("COV-EMD", "COV-EMD (%)", 100, True, None),
    ("MMD-EMD", "MMD-EMD (x10^2)", 1e2, False, None),
    ("1-NNA-CD", "1-NNA-CD (%)", 100, False, None),  # 50 % is ideal: lower is better down to there
    ("category", "category acc. (%)", 100, True, None),
    ("colour", "colour acc. (%)", 100, True, None),
    ("latency", "latency (s/object)", 1, False, "latency_s"),
)
_BOUNDS = {"FID": (0, None), "COV-CD": (0, 1), "MMD-CD": (0, None), "COV-EMD": (0, 1), "MMD-EMD": (0, None),
           "1-NNA-CD": (0, 1), "category": (0, 1), "colour": (0, 1), "latency": (0, None)}
MIN_TABLE1_OBJECTS = 8  # 4 per half: fewer leave the resamples with one or two distinct objects
RETRIEVAL_POOL = 2400  # train objects searched by the retrieval row (the generators' training set size)
TABLE1_FAST = {"bootstrap": 100, "emd_subsample": 64}  # `sar3d eval table1 --fast`
TABLE1_IMAGE_SIZE = 64  # the renders every row is judged on (the feature network's input size)
_RETRIEVAL_CACHE: dict = {}  # the retrieval row's pool, built once per process


@dataclass(frozen=True)
class Table1Row:
    """One row of the toy Table 1: ``kind`` says how its objects are made (``_ROW_MAKERS``)."""

    name: str
    kind: str  # generator | flexicubes | reconstruction | floor | retrieval | unconditional
    checkpoint: str | None = None  # the folder it needs (None: none)
    paper_row: str | None = None  # the PAPER_TABLE1 row it stands for
    note: str = ""


def default_table1_rows() -> tuple:
    from .generate import DATA_SAMPLES, DEFAULT_IMAGE, DEFAULT_NEXT_TOKEN, DEFAULT_TEXT
    from .vqvae_train import DEFAULT_CHECKPOINT

    return (
        Table1Row("SAR3D-NeRF (image)", "generator", str(DEFAULT_IMAGE), "SAR3D-NeRF",
                  "next-scale, conditioned on one view of the test object"),
        Table1Row("SAR3D-NeRF (text)", "generator", str(DEFAULT_TEXT), "SAR3D-NeRF",
                  "next-scale, conditioned on the test object's caption"),
        Table1Row("SAR3D-FlexiCubes (image)", "flexicubes", str(DATA_SAMPLES / "flexicubes_tiny"),
                  "SAR3D-FlexiCubes", "the image generator's tokens (same draws as SAR3D-NeRF (image)) through the "
                  "FlexiCubes decoder fine-tune; renders and clouds from its mesh"),
        Table1Row("next-token baseline (text)", "generator", str(DEFAULT_NEXT_TOKEN), None,
                  "one token at a time, same caption condition, same width and depth"),
        Table1Row("VQVAE reconstruction (ceiling)", "reconstruction", str(DEFAULT_CHECKPOINT), None,
                  "the VQVAE's own reconstruction from the 6 input views: a generator that hit every token"),
        Table1Row("real test half (floor)", "floor", None, None,
                  "the exact objects of the condition half: what a perfect generator scores"),
        Table1Row("nearest training caption (retrieval)", "retrieval", None, None,
                  f"the exact training object (of the first {RETRIEVAL_POOL}) whose caption shares most words "
                  "with the test caption (Jaccard of word sets)"),
        Table1Row("unconditional sample (condition-blind)", "unconditional", str(DEFAULT_IMAGE), None,
                  "the image generator given its learned null condition: ignores the test object"),
    )


# ------------------------------------------------------------------ statistics on a resample
def fid_weighted(f_a, w_a, f_b, w_b) -> float:
    """FID of two feature sets ``(n, D)`` where feature i counts ``w[i]`` times (a bootstrap draw).

    ``FID = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2))``. With ``S_a = A^T A`` and
    ``S_b = B^T B`` (``A``: the weighted, centred features over ``sqrt(m - 1)``) the non-zero eigenvalues
    of ``S_a S_b`` are those of ``(A B^T)(A B^T)^T``, so ``Tr((S_a S_b)^(1/2)) = ||A B^T||_*``, the sum of
    the singular values of a small ``(n_a, n_b)`` matrix: no ``(D, D)`` square root, exact for any D.
    With unit weights it is pytorch-fid's FID (tests/test_table1.py checks the two). Runs in torch
    (float64), whose thread count the caller sets.
    """
    f_a, w_a, f_b, w_b = (torch.as_tensor(x, dtype=torch.float64) for x in (f_a, w_a, f_b, w_b))

    def centred(f, w):
        mu = (w[:, None] * f).sum(0) / w.sum()
        return mu, (w / (w.sum() - 1)).sqrt()[:, None] * (f - mu)  # np.cov's m - 1 denominator

    (mu_a, A), (mu_b, B) = centred(f_a, w_a), centred(f_b, w_b)
    nuclear = torch.linalg.svdvals(A @ B.T).sum()
    return float(((mu_a - mu_b) ** 2).sum() + (A * A).sum() + (B * B).sum() - 2 * nuclear)


def polynomial_kernel(f_a, f_b) -> torch.Tensor:
    """KID's kernel ``k(x, y) = (x . y / D + 1)^3`` between all rows of ``f_a (n, D)`` and ``f_b (m, D)``."""
    f_a, f_b = (torch.as_tensor(x, dtype=torch.float64) for x in (f_a, f_b))
    return (f_a @ f_b.T / f_a.shape[1] + 1) ** 3


def kid_weighted(K_aa, K_bb, K_ab, w_a, w_b, views: int = 1) -> float:
    """KID's unbiased MMD^2 from image kernels (object-major, ``views`` images per object) when
    object i counts ``w[i]`` times (a bootstrap draw).

    The within-set sums leave out a feature with itself *and with its copies*, but keep the pairs
    of different views of one draw (as the unweighted estimator does), so duplicates add no
    spurious perfectly similar pairs. Unit weights give the usual estimator over all features
    (``metrics.kid_from_features`` with one subset of all of them).
    """
    K_aa, K_bb, K_ab, w_a, w_b = (torch.as_tensor(x, dtype=torch.float64) for x in (K_aa, K_bb, K_ab, w_a, w_b))
    V = views

    def per_object(K, n1, n2):  # (n1 V, n2 V) -> (n1, n2) sums over the view pairs
        return K.reshape(n1, V, n2, V).sum((1, 3))

    def within(K, w):
        n = len(w)
        S = per_object(K, n, n)
        own = S.diagonal() - K.diagonal().reshape(n, V).sum(1)  # different views of one object
        pairs = w @ S @ w - (w * w * S.diagonal()).sum() + (w * own).sum()
        count = V * V * (w.sum() ** 2 - (w * w).sum()) + V * (V - 1) * w.sum()
        return pairs / count

    cross = w_a @ per_object(K_ab, len(w_a), len(w_b)) @ w_b / (V * V * w_a.sum() * w_b.sum())
    return float(within(K_aa, w_a) + within(K_bb, w_b) - 2 * cross)


def _first_min(M: np.ndarray) -> np.ndarray:
    """Per row the first column tied with the row's minimum (``metrics.coverage_mmd``'s tie rule)."""
    m = M.min(1, keepdims=True)
    return (M <= m + TIE_RTOL * np.abs(m)).argmax(1)


def cov_mmd_resampled(M_GR: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> tuple[float, float]:
    """COV and MMD of the generated draws ``ia`` against the reference draws ``ib`` (``M[g, r]``:
    distances between the distinct shapes; ``inf`` rows: generated objects without a surface).

    A reference draw is covered when its shape is some generated draw's nearest shape (a copy of a
    covered shape is covered too); MMD averages over the reference draws. Identity draws give
    ``metrics.coverage_mmd``.
    """
    sub = M_GR[np.ix_(ia, ib)]
    surface = np.isfinite(sub).any(1)  # an object without a surface covers nothing
    hit = ib[_first_min(sub[surface])] if surface.any() else np.array([], int)
    return float(np.isin(ib, hit).mean()), float(sub.min(0).mean())


def one_nna_resampled(M_GG: np.ndarray, M_RR: np.ndarray, M_GR: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy over the generated draws ``ia`` and reference draws ``ib``.

    A draw never meets itself or a copy of itself (else every duplicate would be its own perfect
    neighbour); tied neighbours count fractionally as in ``metrics.one_nna``; a draw with no finite
    distance (an object without a surface) counts as told apart. Identity draws give ``metrics.one_nna``.
    """
    na, nb = len(ia), len(ib)
    D = np.block([[M_GG[np.ix_(ia, ia)], M_GR[np.ix_(ia, ib)]], [M_GR[np.ix_(ia, ib)].T, M_RR[np.ix_(ib, ib)]]])
    origin = np.concatenate([ia, M_GG.shape[0] + ib])  # a distinct id per shape of either set
    D[origin[:, None] == origin[None, :]] = np.inf  # leave the shape and its copies out
    label = np.arange(na + nb) < na
    m = D.min(1, keepdims=True)
    tied = D <= m + TIE_RTOL * np.abs(m)
    same = (tied & (label[:, None] == label[None, :])).sum(1) / tied.sum(1)
    return float(np.where(np.isfinite(m[:, 0]), same, 1.0).mean())


def _interval(point: float, values: np.ndarray, bounds=(None, None)) -> tuple[float, float]:
    """95 % interval: the spread of the bootstrap values (2.5 and 97.5 percentiles around their
    median) placed at the point estimate. A resample holds about 63 % distinct objects, which moves
    small-sample-biased statistics such as FID (up) as a whole; their spread is what the resample
    tells. Clipped to the metric's range."""
    if not np.isfinite(point) or not np.isfinite(values).all():
        return float("nan"), float("nan")
    lo, hi = point + np.percentile(values, [2.5, 97.5]) - np.median(values)
    low_bound, high_bound = bounds
    lo = lo if low_bound is None else max(lo, low_bound)
    hi = hi if high_bound is None else min(hi, high_bound)
    return float(lo), float(hi)


# ------------------------------------------------------------------------- the rows' objects
@dataclass
class _Made:
    """What a row made for the objects of the condition half: renders, clouds and seconds."""

    images: torch.Tensor  # (n * V, 3, H, W) from eval_cameras, object-major
    points: list  # n clouds (P, 3), None where the object has no surface
    seconds: list | None  # per object, or None where latency means nothing
    source: str = ""


def _timed_planes(vqvae, make_planes, seed: int):
    """(planes, cloud, seconds): the paper's latency covers condition -> mesh (marching cubes here)."""
    t0 = time.perf_counter()
    planes = make_planes()
    cloud = mesh_points(vqvae, planes, seed=seed)[0]
    return planes, cloud, time.perf_counter() - t0


def _render_eval(vqvae, planes) -> torch.Tensor:
    return vqvae.render(planes, eval_cameras()[None], TABLE1_IMAGE_SIZE, chunk=8192)["rgb"][0].clamp(0, 1)


def _make_generated(row, ctx, unconditional: bool = False) -> _Made:
    gen = ctx["generator"](row.checkpoint)
    view = gen.meta.get("condition_view", 0)
    null = None
    if unconditional:  # one pass of the null condition through the trained model (CFG off: s = 1)
        from .conditioning import Condition

        like = gen.condition(**{gen.condition_kind: _condition_of(gen, ctx, 0, view)})  # for the token count
        pooled, tokens = gen.transformer.null_condition(1, like.tokens.shape[1])
        null = Condition(pooled, tokens, torch.ones(1, tokens.shape[1], dtype=torch.bool), "null condition")
    kw = dict(ctx["sampling"], cfg=1.0, cfg_schedule="constant") if unconditional else ctx["sampling"]
    images, points, seconds = [], [], []
    for i, j in enumerate(tqdm(ctx["half_a"], desc=row.name, disable=not ctx["progress"], leave=False)):
        def planes_of():
            cond = null if unconditional else gen.condition(**{gen.condition_kind: _condition_of(gen, ctx, j, view)})
            return gen.vqvae.decode_tokens(gen.sample_tokens(cond, seed=ctx["seed"] + i, **kw))

        planes, cloud, dt = _timed_planes(gen.vqvae, planes_of, i)
        images.append(_render_eval(gen.vqvae, planes))
        points.append(cloud)
        seconds.append(dt)
    return _Made(torch.cat(images), points, seconds, gen.name)


def _make_flexicubes(row, ctx) -> _Made:
    """The image generator's draws (the seeds of ``SAR3D-NeRF (image)``) decoded by the FlexiCubes
    fine-tune in ``row.checkpoint``: views rendered from its mesh (``SAR3DFlexiCubes.render``), the
    cloud sampled from the same mesh; latency covers condition -> FlexiCubes mesh."""
    from .flexicubes_train import SAR3DFlexiCubes
    from .generate import DEFAULT_IMAGE
    from .metrics import sample_mesh_surface

    gen = ctx["generator"](str(DEFAULT_IMAGE))
    fc = SAR3DFlexiCubes.from_pretrained(row.checkpoint, gen.vqvae)
    view = gen.meta.get("condition_view", 0)
    images, points, seconds = [], [], []
    for i, j in enumerate(tqdm(ctx["half_a"], desc=row.name, disable=not ctx["progress"], leave=False)):
        t0 = time.perf_counter()
        cond = gen.condition(**{gen.condition_kind: _condition_of(gen, ctx, j, view)})
        planes = fc.decode_tokens(gen.sample_tokens(cond, seed=ctx["seed"] + i, **ctx["sampling"]))
        try:
            mesh = fc.mesh(planes)
        except ValueError:
            mesh = None
        seconds.append(time.perf_counter() - t0)
        if mesh is None:
            images.append(torch.ones(len(EVAL_AZIMUTHS), 3, TABLE1_IMAGE_SIZE, TABLE1_IMAGE_SIZE))
            points.append(None)
            continue
        images.append(fc.render(planes, eval_cameras(), TABLE1_IMAGE_SIZE, mesh=mesh)["rgb"])
        points.append(sample_mesh_surface(mesh, EVAL_POINTS, seed=i).float())
    return _Made(torch.cat(images), points, seconds, f"{gen.name} + FlexiCubes {fc.name}")


def _condition_of(gen, ctx, j: int, view: int):
    """The condition a generator gets for test object ``j``: its caption, or its chunk view ``view``."""
    if gen.condition_kind == "text":
        return [ctx["records"][j]["caption"]]
    return ctx["dataset"].read(j).rgb[view][None]


def _make_reconstruction(row, ctx) -> _Made:
    from .data import MultiViewDataset
    from .vqvae import SAR3DVQVAE

    vqvae = SAR3DVQVAE.from_pretrained(row.checkpoint).eval()
    ds = MultiViewDataset(ctx["data"], size=vqvae.cfg.image_size)
    images, points, seconds = [], [], []
    for i, j in enumerate(tqdm(ctx["half_a"], desc=row.name, disable=not ctx["progress"], leave=False)):
        item = ds[j]
        planes, cloud, dt = _timed_planes(vqvae, lambda: vqvae.decode_fhat(
            vqvae.encode(item["encoder_input"][None], item["input_c"][None]).f_hat), i)
        images.append(_render_eval(vqvae, planes))
        points.append(cloud)
        seconds.append(dt)
    return _Made(torch.cat(images), points, seconds, Path(row.checkpoint).name)


def _make_floor(row, ctx) -> _Made:
    records = [ctx["records"][j] for j in ctx["half_a"]]
    return _Made(ground_truth_renders(records, TABLE1_IMAGE_SIZE), list(exact_points(records)), None,
                 "the exact test objects")


def _retrieval_pool():
    from .world import objects_in_split

    if "pool" not in _RETRIEVAL_CACHE:
        pool = objects_in_split("train", RETRIEVAL_POOL)
        _RETRIEVAL_CACHE["pool"] = ([o.seed for o in pool], [caption_words(o.caption) for o in pool])
    return _RETRIEVAL_CACHE["pool"]


def caption_words(caption: str) -> frozenset:
    return frozenset(re.findall(r"[a-z0-9]+", caption.lower()))


def nearest_caption(caption: str, pool_words: list) -> int:
    """Index of the pool caption with the largest Jaccard overlap ``|A & B| / |A | B|`` of word sets
    (ties: the first)."""
    words = caption_words(caption)
    return int(np.argmax([len(words & p) / len(words | p) for p in pool_words]))


def _make_retrieval(row, ctx) -> _Made:
    seeds, pool_words = _retrieval_pool()
    found, seconds = [], []
    for j in ctx["half_a"]:
        t0 = time.perf_counter()
        found.append({"seed": seeds[nearest_caption(ctx["records"][j]["caption"], pool_words)]})
        seconds.append(time.perf_counter() - t0)
    return _Made(ground_truth_renders(found, TABLE1_IMAGE_SIZE), list(exact_points(found)), seconds,
                 f"exact train objects (first {RETRIEVAL_POOL})")


_ROW_MAKERS = {"generator": _make_generated, "reconstruction": _make_reconstruction, "floor": _make_floor,
               "retrieval": _make_retrieval, "unconditional": lambda row, ctx: _make_generated(row, ctx, True),
               "flexicubes": _make_flexicubes}


def _missing_reason(row) -> str | None:
    """Why a row cannot be computed here (None: it can)."""
    if row.kind not in _ROW_MAKERS:
        raise ValueError(f"row {row.name!r}: kind {row.kind!r} is not one of {sorted(_ROW_MAKERS)}")
    if row.checkpoint and not (Path(row.checkpoint) / "model.safetensors").is_file():
        return f"checkpoint {row.checkpoint} not found"
    return None


# ---------------------------------------------------------------------------- the table
def _row_evidence(made: _Made, ref: dict, featnet, fid_features, labels: list, emd_points, seed: int) -> dict:
    """Everything the statistics of one row need, computed once on the distinct objects."""
    from .metrics import normalize_point_clouds, pairwise_chamfer_distance, pairwise_emd

    V = len(EVAL_AZIMUTHS)
    f = fid_features(made.images).double()
    pred = featnet.predict(made.images)
    correct = {k: np.array([p == lab[k] for p, lab in zip(pred[k], labels)], float).reshape(-1, V).mean(1)
               for k in ("category", "colour")}
    ok = [i for i, p in enumerate(made.points) if p is not None]
    n = len(made.points)
    M = {k: np.full(s, np.inf) for k, s in (("GG", (n, n)), ("GR", (n, ref["n"])), ("GR-EMD", (n, ref["n"])))}
    if ok:
        gen = normalize_point_clouds(torch.stack([made.points[i] for i in ok]))
        M["GG"][np.ix_(ok, ok)] = pairwise_chamfer_distance(gen, None, progress=False).double().numpy()
        M["GR"][ok] = pairwise_chamfer_distance(gen, ref["points"], progress=False).double().numpy()
        if emd_points:
            M["GR-EMD"][ok] = pairwise_emd(gen, ref["points"], exact_max_points=emd_points, seed=seed,
                                             progress=False).numpy()
    return {"f": f, "K_aa": polynomial_kernel(f, f), "K_ab": polynomial_kernel(f, ref["f"]), "M": M,
            "correct": correct, "seconds": None if made.seconds is None else np.array(made.seconds),
            "empty": n - len(ok)}


def _row_statistics(ev: dict, ref: dict, ia: np.ndarray, ib: np.ndarray, emd: bool) -> dict:
    """Every number of a row on one resample (``ia``: condition-half draws, ``ib``: reference draws)."""
    V = len(EVAL_AZIMUTHS)
    w_a = np.bincount(ia, minlength=len(ev["correct"]["category"])).astype(float)  # draws per object
    w_b = np.bincount(ib, minlength=ref["n"]).astype(float)
    img_a, img_b = w_a.repeat(V), w_b.repeat(V)  # draws per image (object-major)
    keep_a, keep_b = torch.from_numpy(img_a > 0), torch.from_numpy(img_b > 0)
    out = {"FID": fid_weighted(ev["f"][keep_a], img_a[img_a > 0], ref["f"][keep_b], img_b[img_b > 0]),
           "KID": kid_weighted(ev["K_aa"], ref["K_bb"], ev["K_ab"], w_a, w_b, V)}
    out["COV-CD"], out["MMD-CD"] = cov_mmd_resampled(ev["M"]["GR"], ia, ib)
    out["COV-EMD"], out["MMD-EMD"] = cov_mmd_resampled(ev["M"]["GR-EMD"], ia, ib) if emd else (np.nan, np.nan)
    out["1-NNA-CD"] = one_nna_resampled(ev["M"]["GG"], ref["RR"], ev["M"]["GR"], ia, ib)
    out.update({k: float(v[ia].mean()) for k, v in ev["correct"].items()})
    out["latency"] = np.nan if ev["seconds"] is None else float(ev["seconds"][ia].mean())
    return out


def _check_table1_args(n: int, available: int, data, bootstrap: int) -> None:
    if n < MIN_TABLE1_OBJECTS:
        raise ValueError(f"table1 needs at least {MIN_TABLE1_OBJECTS} test objects ({MIN_TABLE1_OBJECTS // 2} "
                         f"per half, so that a bootstrap resample holds several distinct objects); {data} holds "
                         f"{available} and limit gives {n}: build more with "
                         f"`sar3d data build --split test --count 100` or raise limit")
    if bootstrap < 10:
        raise ValueError(f"bootstrap={bootstrap}: a 95 % interval needs at least 10 resamples (1000 for the table)")


@torch.no_grad()
def table1(data, limit: int = 100, *, rows=None, featnet=None, bootstrap: int = 1000, emd_subsample: int | None = 256,
           seed: int = 0, progress: bool = True, sampling: dict | None = None) -> dict:
    """Table 1 of the paper (Sec. 5.1) at toy scale, every number with a bootstrap 95 % interval.

    Protocol: the first ``limit`` objects of the test split ``data`` are cut at random (``seed``) into
    two halves. Each row makes one object per object of the *condition half* A (a generator conditions
    on its caption or chunk view); every row is compared with the same *reference half* B of real
    objects, so the floor row (A's exact objects) is what a perfect generator scores.

    * FID, KID: features of 2 renders per object (``eval_cameras``, 64 px) by ``featnet`` (default
      the offline ``featnet.load_default()``; a path to pytorch-fid's weights file uses Inception-V3).
    * COV, MMD (Chamfer), 1-NNA: 2048 points on each surface (marching cubes at 48^3 for decoded
      fields, the exact surface for real objects), each cloud scaled into the unit box; COV / MMD with
      EMD on a seeded subset of ``emd_subsample`` points per cloud (None: no EMD).
    * category / colour: the feature network's reading of the renders against the condition's labels.
    * latency: seconds per object on this CPU, batch 1, condition -> marching-cubes mesh.
    * intervals: ``bootstrap`` resamples of both halves' objects with replacement (the same draws for
      every row, so rows can be compared draw by draw); set metrics are recomputed on each (``_interval``).

    ``rows``: ``Table1Row`` s or names of ``default_table1_rows()`` (default all); a row whose checkpoint
    is missing says so and the others still compute. ``sampling``: cfg / top_k / top_p / cfg_schedule
    for the generators (default the paper's: 4, 10, 0.5, linear).
    """
    from .data import MultiViewDataset
    from .featnet import FeatureNet, load_default
    from .generate import Pipeline
    from .metrics import inception_features, normalize_point_clouds, pairwise_chamfer_distance

    started = time.perf_counter()
    all_records = test_records(data)
    n = min(limit or len(all_records), len(all_records))
    _check_table1_args(n, len(all_records), data, bootstrap)
    rows = _resolve_rows(rows)
    perm = np.random.default_rng(seed).permutation(n)
    half_a, half_b = sorted(perm[:n // 2].tolist()), sorted(perm[n // 2:2 * (n // 2)].tolist())
    labelnet = featnet if isinstance(featnet, FeatureNet) else load_default()
    if featnet is None or isinstance(featnet, FeatureNet):
        fid_features, network = labelnet.features, labelnet.name
    else:  # a path to pytorch-fid's Inception weights
        fid_features = lambda x: inception_features(x, weights_path=featnet, progress=False)  # noqa: E731
        network = "inception-v3-fid (pytorch-fid weights)"
    generators = {}  # one load per checkpoint (two rows share the image generator)

    def generator(folder):
        if folder not in generators:
            generators[folder] = Pipeline.from_pretrained(folder)
        return generators[folder]

    ctx = {"data": data, "records": all_records[:n], "half_a": half_a, "seed": seed, "progress": progress,
           "sampling": dict(sampling or {}), "dataset": MultiViewDataset(data, size=TABLE1_IMAGE_SIZE),
           "generator": generator}
    ref_records = [all_records[j] for j in half_b]
    f_ref = fid_features(ground_truth_renders(ref_records, TABLE1_IMAGE_SIZE)).double()
    ref_points = normalize_point_clouds(exact_points(ref_records))
    ref = {"n": len(half_b), "f": f_ref, "K_bb": polynomial_kernel(f_ref, f_ref), "points": ref_points,
           "RR": pairwise_chamfer_distance(ref_points, None, progress=False).double().numpy()}
    labels = [labels_of_record(all_records[j]) for j in half_a for _ in EVAL_AZIMUTHS]
    draw = np.random.default_rng([seed, 1])
    draws = [(np.arange(len(half_a)), np.arange(len(half_b)))]  # the identity first: the point estimate
    draws += [(draw.integers(0, len(half_a), len(half_a)), draw.integers(0, len(half_b), len(half_b)))
              for _ in range(bootstrap)]
    keys = [c[0] for c in TABLE1_COLUMNS]
    result_rows, samples = {}, {}
    for row in tqdm(rows, desc="Table 1 rows", disable=not progress):
        entry = {"kind": row.kind, "checkpoint": row.checkpoint, "paper_row": row.paper_row, "note": row.note}
        reason = _missing_reason(row)
        if reason is None:
            try:
                t0 = time.perf_counter()
                made = _ROW_MAKERS[row.kind](row, ctx)
            except FileNotFoundError as err:  # e.g. the VQVAE a generator names is not here
                reason = " ".join(str(err).split())
        if reason is not None:
            result_rows[row.name] = {**entry, "status": "missing", "reason": reason}
            continue
        ev = _row_evidence(made, ref, labelnet, fid_features, labels, emd_subsample, seed)
        values = np.array([[s[k] for k in keys] for s in
                           (_row_statistics(ev, ref, ia, ib, bool(emd_subsample)) for ia, ib in draws)])
        samples[row.name] = values
        metrics = {}
        for c, k in enumerate(keys):
            lo, hi = _interval(values[0, c], values[1:, c], _BOUNDS.get(k, (None, None)))
            metrics[k] = {"value": float(values[0, c]), "low": lo, "high": hi}
        result_rows[row.name] = {**entry, "status": "ok", "source": made.source, "objects": len(half_a),
                                 "empty_surfaces": ev["empty"], "seconds": round(time.perf_counter() - t0, 1),
                                 "metrics": metrics}
    result = {"rows": result_rows, "orderings": _orderings(result_rows, samples, keys),
              "protocol": {"data": str(data), "objects": n,
                           "condition_half": len(half_a), "reference_half": len(half_b),
                           "condition_seeds": [int(all_records[j]["seed"]) for j in half_a],
                           "reference_seeds": [int(all_records[j]["seed"]) for j in half_b],
                           "seed": seed, "bootstrap": bootstrap, "feature_network": network,
                           "attribute_network": labelnet.name, "points_per_cloud": EVAL_POINTS,
                           "emd": (f"exact EMD on a seeded subset of {min(emd_subsample, EVAL_POINTS)} of "
                                   f"{EVAL_POINTS} points"
                                   if emd_subsample else "not computed"),
                           "sampling": {"cfg": 4.0, "cfg_schedule": "linear", "top_k": 10, "top_p": 0.5,
                                        **ctx["sampling"]},
                           "latency": f"seconds per object, batch 1, condition to mesh (marching cubes at 48^3; "
                                      f"the FlexiCubes row: its fine-tune's mesh at its training grid), "
                                      f"{torch.get_num_threads()} torch thread(s) on this CPU",
                           "seconds": round(time.perf_counter() - started, 1)},
              "paper": PAPER_TABLE1}
    return result


def _resolve_rows(rows) -> list:
    defaults = {r.name: r for r in default_table1_rows()}
    if rows is None:
        return list(defaults.values())
    out = []
    for r in rows:
        if isinstance(r, Table1Row):
            out.append(r)
        elif r in defaults:
            out.append(defaults[r])
        else:
            raise ValueError(f"unknown Table 1 row {r!r}: use a Table1Row or one of {list(defaults)}")
    return out


# --------------------------------------------------------------------- the paper's orderings
ORDERING_CLAIMS = (
    # (claim, row that should win, row that should lose, the PAPER_TABLE1 rows that give the direction of
    #  each metric; None: the paper claims the first is better on every metric, with no numbers for the second)
    ("next-scale beats next-token (Sec. 1, 5.1)", "SAR3D-NeRF (text)", "next-token baseline (text)", None),
    ("NeRF vs FlexiCubes decoder (Table 1)", "SAR3D-NeRF (image)", "SAR3D-FlexiCubes (image)",
     ("SAR3D-NeRF", "SAR3D-FlexiCubes")),
)


def _orderings(rows: dict, samples: dict, keys: list) -> list:
    """For each claim and each metric the paper reports: the paired difference first - second with
    its interval, and whether the toy reproduces the paper's ordering ("reproduced": the interval
    lies on the paper's side of 0; "reversed": on the other side; "not resolved": it holds 0)."""
    out = []
    for claim, first, second, paper_rows in ORDERING_CLAIMS:
        for key, _, _, higher_better, paper_key in TABLE1_COLUMNS:
            if paper_key is None:
                continue
            if paper_rows is None:
                first_should_win = True
            else:
                a, b = (PAPER_TABLE1[r][paper_key] for r in paper_rows)
                first_should_win = (a > b) == PAPER_HIGHER_IS_BETTER[paper_key]
            entry = {"claim": claim, "first": first, "second": second, "metric": key,
                     "paper": "first better" if first_should_win else "second better"}
            missing = [r for r in (first, second) if r not in samples]
            if missing:
                entry.update(verdict="cannot check", why=f"{', '.join(missing)}: "
                             + "; ".join(rows.get(r, {}).get("reason", "row not in this table") for r in missing))
                out.append(entry)
                continue
            c = keys.index(key)
            diff = samples[first][:, c] - samples[second][:, c]
            lo, hi = _interval(diff[0], diff[1:])
            first_better_side = (lo > 0) if higher_better else (hi < 0)
            second_better_side = (hi < 0) if higher_better else (lo > 0)
            if not (first_better_side or second_better_side):
                verdict = "not resolved"
            else:
                verdict = "reproduced" if first_better_side == first_should_win else "reversed"
            entry.update(difference=float(diff[0]), low=lo, high=hi, verdict=verdict)
            out.append(entry)
    return out


# ------------------------------------------------------------------------------- Markdown
def _cell(m: dict, scale: float) -> str:
    if m is None or not np.isfinite(m["value"]):
        return "-"
    digits = 2 if abs(m["value"] * scale) < 10 else 1
    return f"{m['value'] * scale:.{digits}f} [{m['low'] * scale:.{digits}f}, {m['high'] * scale:.{digits}f}]"


def format_table1(result: dict, paper: bool = True, orderings: bool = True) -> str:
    """The result of ``table1`` as Markdown: our table (value [95 % interval]), the paper's Table 1
    and the ordering checks."""
    cols = TABLE1_COLUMNS
    lines = ["| method | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in result["rows"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | missing: {r['reason']} |" + " |" * (len(cols) - 1))
            continue
        lines.append(f"| {name} | " + " | ".join(_cell(r["metrics"].get(k), s) for k, _, s, _, _ in cols) + " |")
    p = result["protocol"]
    lines += ["", f"{p['objects']} test objects: {p['condition_half']} conditions vs {p['reference_half']} held-apart "
              f"references; features: {p['feature_network']}; EMD: {p['emd']}; {p['bootstrap']} bootstrap "
              f"resamples; latency: {p['latency']}; sampling {p['sampling']}."]
    for name, r in result["rows"].items():
        if r["status"] == "ok" and r["empty_surfaces"]:
            lines.append(f"{name}: {r['empty_surfaces']} of {r['objects']} objects without a surface "
                         "(they cover nothing and count as told apart).")
    if paper:
        lines += ["", "The paper's Table 1 (G-Objaverse, Inception-V3 features, latency on a V100):", "",
                  format_paper_table1()]
    if orderings and result.get("orderings"):
        lines += ["", "| the paper's claim | metric | paper | toy: first - second [95 %] | toy |",
                  "|---|---|---|---|---|"]
        previous = None
        for o in result["orderings"]:
            scale = next(c[2] for c in cols if c[0] == o["metric"])
            claim = "" if o["claim"] == previous else f"{o['claim']}: {o['first']} vs {o['second']}"
            previous = o["claim"]
            diff = (f"{o['difference'] * scale:.3g} [{o['low'] * scale:.3g}, {o['high'] * scale:.3g}]"
                    if "difference" in o else ("" if not claim else o.get("why", "")))
            lines.append(f"| {claim} | {o['metric']} | {o['paper']} | {diff} | {o['verdict']} |")
    return "\n".join(lines)


def format_paper_table1() -> str:
    lines = ["| method | " + " | ".join(h for _, h in PAPER_COLUMNS) + " |", "|---" * (len(PAPER_COLUMNS) + 1) + "|"]
    for name, r in PAPER_TABLE1.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.2f}" for k, _ in PAPER_COLUMNS) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------- small helpers for the tutorials
def attribute_accuracy_of_views(featnet, views, records) -> dict:
    """Category and colour accuracy (and the shape heads') of generated objects seen from several views.

    ``views (N, V, 3, H, W)``: the renders of ``generate_for_captions`` (``"views"``), object-major;
    ``records``: one per object, an ``index.json`` entry / ``world`` object's ``to_dict()`` (category
    and attributes) or a plain label dict ``{"category": .., "colour": ..}``. Every view of an object
    is judged against that object's labels (``featnet.attribute_accuracy``).
    """
    from .featnet import attribute_accuracy

    views = torch.as_tensor(views)
    if views.dim() != 5:
        raise ValueError(f"views have shape {tuple(views.shape)}: expected (objects, views, 3, H, W)")
    records = list(records)
    if len(records) != views.shape[0]:
        raise ValueError(f"{views.shape[0]} objects of views but {len(records)} records")
    labels = [labels_of_record(r) if "attributes" in r else dict(r) for r in records for _ in range(views.shape[1])]
    return attribute_accuracy(featnet, views.flatten(0, 1), labels)


def sample_diversity(features_SND) -> float:
    """Diversity of repeated samples: the mean feature distance ``||f_a - f_b||`` between the samples
    of one condition drawn with different seeds, over every pair of seeds and every condition.

    ``features_SND``: ``(seeds, conditions, D)``, e.g. ``featnet.features`` of one view per sample,
    stacked over the seeds. 0 when every seed gives the same object.
    """
    F = torch.as_tensor(features_SND).double()
    if F.dim() != 3 or F.shape[0] < 2 or F.shape[1] < 1:
        raise ValueError(f"features have shape {tuple(F.shape)}: expected (seeds >= 2, conditions, D)")
    a, b = torch.triu_indices(F.shape[0], F.shape[0], 1)
    return float((F[a] - F[b]).norm(dim=-1).mean())


def main(argv=None) -> dict:
    """``python -m sar3d_core.ar_eval``: the README's generation table (shipped checkpoints by default)."""
    import argparse

    from .featnet import load_default as load_featnet
    from .generate import DEFAULT_IMAGE, DEFAULT_NEXT_TOKEN, DEFAULT_TEXT, IMAGE_SAMPLING, Pipeline

    p = argparse.ArgumentParser(prog="python -m sar3d_core.ar_eval", description=main.__doc__)
    p.add_argument("--data", required=True, help="the built test split (index.json), e.g. ~/.cache/sar3d/test64")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--text", default=str(DEFAULT_TEXT))
    p.add_argument("--image", default=str(DEFAULT_IMAGE))
    p.add_argument("--next-token", default=str(DEFAULT_NEXT_TOKEN))
    p.add_argument("--cfg", type=float, default=4.0, help="text models (the image model: generate.IMAGE_SAMPLING)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    featnet = load_featnet()
    out = {"data": a.data, "limit": a.limit, "threads": torch.get_num_threads()}
    for key, folder in (("next_scale", a.text), ("next_token", a.next_token)):
        gen = Pipeline.from_pretrained(folder)
        r = evaluate_text(gen, a.data, a.limit, featnet=featnet, cfg=a.cfg)
        r["vqvae_ceiling"] = reconstruction_reference(gen.vqvae, a.data, a.limit, featnet=featnet)
        r["short_prompts"] = evaluate_short_prompts(gen, featnet=featnet, cfg=a.cfg)
        out[key] = r
        print(key, json.dumps({k: v for k, v in r.items() if k != "protocol"}, default=str))
    gen = Pipeline.from_pretrained(a.image)
    out["image"] = evaluate_image(gen, a.data, a.limit, **IMAGE_SAMPLING)  # the shipped image settings
    print("image", json.dumps(out["image"]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
