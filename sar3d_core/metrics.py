"""Evaluation metrics of the paper's Table 1 (Sec. 5.1), which the official code does not ship.

3D shapes (point clouds sampled on the surfaces), with ``M[g, r]`` the distance between
generated shape ``g`` and reference shape ``r`` (definitions made standard by PointFlow,
Yang et al. ICCV 2019, ``metrics/evaluation_metrics.py``; COV and MMD from Achlioptas et
al. ICML 2018, 1-NNA from Lopez-Paz & Oquab ICLR 2017):

    CD(X, Y)  = mean_x min_y ||x - y||^2 + mean_y min_x ||x - y||^2     (squared, summed)
    EMD(X, Y) = 1/N min_{bijection pi} sum_i ||x_i - y_pi(i)||           (Euclidean)
    MMD       = mean_r min_g M[g, r]                 (fidelity, lower is better)
    COV       = |{argmin_r M[g, r] : g}| / |ref|     (diversity, higher is better)
    1-NNA     = leave-one-out 1-NN accuracy over gen U ref       (ideal 0.5)

Rendered views: FID (Heusel et al. 2017, through pytorch-fid) and KID (Binkowski et al.
2018) on features of any network, PSNR / SSIM / LPIPS / mask IoU for reconstructions.
Pretrained networks (Inception, LPIPS backbones) are used only when their weights are on
disk; nothing here downloads (DESIGN.md §4), and feature results name their network.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from tqdm.auto import tqdm

POINT_CLOUD_KEYS = ("COV-CD", "MMD-CD", "1-NNA-CD", "COV-EMD", "MMD-EMD", "1-NNA-EMD")
TIE_RTOL = 1e-6  # distances within this relative gap of the minimum (float32 rounding) are ties


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk; this module never downloads them."""


# ----------------------------------------------------------------------------- input checks
def _points(x, name: str, batched: bool = True) -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    want = 3 if batched else 2
    if x.dim() != want or x.shape[-1] != 3:
        shape = "(B, N, 3)" if batched else "(N, 3)"
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected {shape} xyz point clouds")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): pass at least one cloud of at least one point")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf coordinates: drop or repair those clouds before evaluating")
    return x if x.dtype == torch.float64 else x.float()  # float64 stays float64


def _same_point_count(X: torch.Tensor, Y: torch.Tensor, what: str) -> None:
    if X.shape[-2] != Y.shape[-2]:
        raise ValueError(f"{what} needs equal point counts, got {X.shape[-2]} and {Y.shape[-2]}: "
                         "resample both sets to the same number of points")


def _paired(X, Y, fn: str):
    """Checked ``(B, N, 3)`` pairs for a paired distance; ``(N, 3)`` inputs become B = 1 (``single``)."""
    single = np.ndim(X) == 2 and np.ndim(Y) == 2
    X, Y = _points(X, "X", batched=not single), _points(Y, "Y", batched=not single)
    if single:
        return X[None], Y[None], True
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y hold {X.shape[0]} and {Y.shape[0]} clouds: {fn} pairs them one to one "
                         "(the pairwise_ functions compare all pairs)")
    return X, Y, False


# ------------------------------------------------------------------------- Chamfer distance
def _augment(X_BN3: torch.Tensor):
    """``[x, |x|^2, 1] . [-2y, 1, |y|^2] = ||x - y||^2``: one matmul gives all squared distances."""
    sq = (X_BN3 * X_BN3).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    left_BN5 = torch.cat([X_BN3, sq, one], -1)
    right_B5N = torch.cat([-2 * X_BN3, one, sq], -1).transpose(-1, -2).contiguous()
    return left_BN5, right_B5N


def _chamfer_from_augmented(left_BN5, right_B5M, tile: int) -> torch.Tensor:
    """CD of ``left[b]`` vs ``right[b]`` (``left`` may broadcast with B = 1); rows tiled to stay in cache."""
    row_mins, col_min = [], None
    for i in range(0, left_BN5.shape[-2], tile):
        d2_BTM = torch.matmul(left_BN5[..., i:i + tile, :], right_B5M).clamp_min_(0)  # cancellation < 0
        row_mins.append(d2_BTM.amin(-1))
        m = d2_BTM.amin(-2)
        col_min = m if col_min is None else torch.minimum(col_min, m)
    # CD = mean_x min_y ||x-y||^2 + mean_y min_x ||x-y||^2
    return torch.cat(row_mins, -1).mean(-1) + col_min.mean(-1)


def chamfer_distance(X, Y, *, tile: int = 64) -> torch.Tensor:
    """Chamfer distance of paired clouds ``X (B, N, 3)``, ``Y (B, M, 3)`` -> ``(B,)`` (squared, summed).

    Computed in float32 (float64 if the inputs are float64); ``(N, 3)`` inputs give a scalar.
    """
    X, Y, single = _paired(X, Y, "chamfer_distance")
    dtype = torch.promote_types(X.dtype, Y.dtype)
    centre = X.to(dtype).mean(1, keepdim=True)  # CD ignores a shared shift; centring limits cancellation
    cd = _chamfer_from_augmented(_augment(X.to(dtype) - centre)[0], _augment(Y.to(dtype) - centre)[1], tile)
    return cd[0] if single else cd


def pairwise_chamfer_distance(A, B=None, *, chunk: int = 4, tile: int = 64, device=None, workers: int | None = None,
                              progress: bool = True, desc: str = "CD") -> torch.Tensor:
    """``M[i, j] = CD(A[i], B[j])`` for ``A (P, N, 3)``, ``B (Q, M, 3)`` -> ``(P, Q)`` on the CPU.

    ``B=None`` computes ``A`` against itself, only the upper triangle (CD is symmetric; diagonal 0).
    Each cloud of ``A`` meets ``chunk`` clouds of ``B`` per matmul; ``device="cuda"`` runs it there.
    On the CPU, rows run in ``workers`` threads (default: torch's thread count) of one torch
    thread each: the matmuls are too small to split, and split ones spin-wait on a busy machine.
    """
    A = _points(A, "A")
    symmetric = B is None
    B = A if symmetric else _points(B, "B")
    dtype = torch.promote_types(A.dtype, B.dtype)
    device = torch.device(device or "cpu")
    A, B = A.to(device, dtype), B.to(device, dtype)
    centre = torch.cat([A.flatten(0, 1), B.flatten(0, 1)]).mean(0)  # shared shift: limits cancellation
    left, _ = _augment(A - centre)
    _, right = _augment(B - centre)
    M = torch.zeros(A.shape[0], B.shape[0], dtype=dtype)

    def fill_row(i):
        for j in range(i + 1 if symmetric else 0, B.shape[0], chunk):
            M[i, j:j + chunk] = _chamfer_from_augmented(left[i:i + 1], right[j:j + chunk], tile).cpu()

    rows = range(A.shape[0])
    bar = dict(total=len(rows), desc=desc, disable=not progress, leave=False)
    if device.type != "cpu":
        for i in tqdm(rows, **bar):
            fill_row(i)
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per process: every worker thread runs single-threaded kernels
        try:
            with ThreadPoolExecutor(workers or threads) as pool:
                for _ in tqdm(pool.map(fill_row, rows), **bar):
                    pass
        finally:
            torch.set_num_threads(threads)
    return M + M.T if symmetric else M


# ------------------------------------------------------------------- Earth mover's distance
def _emd_subsample(n_points: int, exact_max_points: int, seed: int):
    """One seeded random index set used for every cloud (point order carries no meaning), or None."""
    if n_points <= exact_max_points:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_points, exact_max_points, replace=False))


def _emd_pair(x_N3: np.ndarray, y_N3: np.ndarray) -> float:
    cost_NN = cdist(x_N3, y_N3)  # Euclidean, float64
    rows, cols = linear_sum_assignment(cost_NN)  # exact optimal bijection (Hungarian / LAPJV)
    return float(cost_NN[rows, cols].mean())


def emd(X, Y, *, exact_max_points: int = 1024, seed: int = 0) -> torch.Tensor:
    """Earth mover's distance of paired clouds ``X, Y (B, N, 3)`` -> ``(B,)`` (float64).

    ``1/N min_pi sum_i ||x_i - y_pi(i)||``, solved exactly by linear_sum_assignment when
    ``N <= exact_max_points``. Larger clouds are approximated: both are reduced to the same
    seeded random subset of ``exact_max_points`` indices (``seed``), and the exact EMD of those
    subsets is returned. Equal point counts are required; ``(N, 3)`` inputs give a scalar.
    """
    X, Y, single = _paired(X, Y, "emd")
    _same_point_count(X, Y, "EMD (a bijection between the clouds)")
    idx = _emd_subsample(X.shape[1], exact_max_points, seed)
    x, y = X.double().numpy(), Y.double().numpy()
    if idx is not None:
        x, y = x[:, idx], y[:, idx]
    out = torch.tensor([_emd_pair(a, b) for a, b in zip(x, y)], dtype=torch.float64)
    return out[0] if single else out


def pairwise_emd(A, B=None, *, exact_max_points: int = 1024, seed: int = 0, workers: int | None = None,
                 progress: bool = True, desc: str = "EMD") -> torch.Tensor:
    """``M[i, j] = EMD(A[i], B[j])`` -> ``(P, Q)`` float64; ``B=None``: A vs itself (upper triangle).

    Rows run in ``workers`` threads (default: torch's thread count); scipy's solver releases the GIL.
    """
    A = _points(A, "A")
    symmetric = B is None
    B = A if symmetric else _points(B, "B")
    _same_point_count(A, B, "EMD (a bijection between the clouds)")
    idx = _emd_subsample(A.shape[1], exact_max_points, seed)
    a, b = A.double().numpy(), B.double().numpy()
    if idx is not None:
        a, b = a[:, idx], b[:, idx]
    M = torch.zeros(len(a), len(b), dtype=torch.float64)

    def fill_row(i):
        for j in range(i + 1 if symmetric else 0, len(b)):
            M[i, j] = _emd_pair(a[i], b[j])

    with ThreadPoolExecutor(workers or torch.get_num_threads()) as pool:
        for _ in tqdm(pool.map(fill_row, range(len(a))), total=len(a), desc=desc, disable=not progress, leave=False):
            pass
    return M + M.T if symmetric else M


# --------------------------------------------------------------------- COV, MMD and 1-NNA
def _ties_with_min(M: torch.Tensor, dim: int) -> torch.Tensor:
    """Boolean mask of entries tied with the minimum along ``dim`` (within TIE_RTOL of it)."""
    m = M.amin(dim, keepdim=True)
    return M <= m + TIE_RTOL * m.abs()


def coverage_mmd(M_GR: torch.Tensor) -> tuple[float, float]:
    """``COV = |{argmin_r M[g, r]}| / R`` and ``MMD = mean_r min_g M[g, r]`` from ``M (G, R)``.

    Ties: a generated shape equally close to several references covers the lowest-index one.
    """
    M_GR = torch.as_tensor(M_GR)
    nearest_ref_G = _ties_with_min(M_GR, 1).float().argmax(1)  # first tied index
    cov = nearest_ref_G.unique().numel() / M_GR.shape[1]
    mmd = M_GR.amin(0).mean().item()
    return cov, mmd


def one_nna(M_GG: torch.Tensor, M_RR: torch.Tensor, M_GR: torch.Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy over ``gen U ref`` (0.5 ideal, 1.0 separable).

    Each shape is classified by the set of its nearest other shape. Ties: when several shapes are
    nearest, the shape counts as the fraction of them that share its set (the expected accuracy of a
    uniformly random tie-break), so the result is deterministic and unbiased.
    """
    G, R = M_GR.shape
    M = torch.cat([torch.cat([M_GG, M_GR], 1), torch.cat([M_GR.T, M_RR], 1)], 0).double()
    M.fill_diagonal_(float("inf"))  # leave one out
    label = torch.cat([torch.ones(G), torch.zeros(R)]).bool()
    tied = _ties_with_min(M, 1)
    same = (label[None, :] == label[:, None]) & tied
    return (same.sum(1) / tied.sum(1)).mean().item()


def set_metrics_from_distances(D_gg, D_gr, D_rr, distance: str = "CD") -> dict:
    """COV, MMD and 1-NNA from precomputed distance matrices, under the keys of ``point_cloud_metrics``.

    ``D_gg (G, G)``, ``D_gr (G, R)`` and ``D_rr (R, R)``: distances among the generated shapes, from
    generated to reference shapes, and among the reference shapes, for the distance named
    ``distance`` -> ``{"COV-CD": .., "MMD-CD": .., "1-NNA-CD": ..}``. Or three mappings
    ``{distance: matrix}`` with the same keys (e.g. ``"CD"`` and ``"EMD"``): the keys of every
    distance. A reference block computed once can so be shared by many generated sets.
    """
    mappings = [isinstance(m, Mapping) for m in (D_gg, D_gr, D_rr)]
    if any(mappings):
        if not all(mappings):
            raise ValueError("pass D_gg, D_gr and D_rr all as matrices or all as {distance: matrix} mappings")
        if not (set(D_gg) == set(D_gr) == set(D_rr)):
            raise ValueError(f"the mappings name different distances: D_gg {sorted(D_gg)}, D_gr {sorted(D_gr)}, "
                             f"D_rr {sorted(D_rr)}")
        out = {}
        for d in D_gg:
            out.update(set_metrics_from_distances(D_gg[d], D_gr[d], D_rr[d], d))
        return out
    D_gg, D_gr, D_rr = (torch.as_tensor(m) for m in (D_gg, D_gr, D_rr))
    if D_gr.dim() != 2 or D_gr.numel() == 0:
        raise ValueError(f"D_gr has shape {tuple(D_gr.shape)}: expected a non-empty (G, R) matrix")
    G, R = D_gr.shape
    if tuple(D_gg.shape) != (G, G) or tuple(D_rr.shape) != (R, R):
        raise ValueError(f"D_gg {tuple(D_gg.shape)}, D_gr {tuple(D_gr.shape)} and D_rr {tuple(D_rr.shape)} "
                         f"do not fit: expected ({G}, {G}), ({G}, {R}) and ({R}, {R})")
    out = {}
    out[f"COV-{distance}"], out[f"MMD-{distance}"] = coverage_mmd(D_gr)
    out[f"1-NNA-{distance}"] = one_nna(D_gg, D_rr, D_gr)
    return out


def normalize_point_clouds(X, mode: str | None = "bbox_unit_cube") -> torch.Tensor:
    """Per-shape normalisation before the distances are computed.

    ``"bbox_unit_cube"``: centre each shape on its bounding box and scale it so its longest
    bounding-box side is 1 (a shape of zero extent is only centred). ``None``: unchanged.
    """
    X = _points(X, "X")
    if mode is None:
        return X
    if mode != "bbox_unit_cube":
        raise ValueError(f"normalize={mode!r} is not a protocol: use 'bbox_unit_cube' or None")
    lo, hi = X.amin(1, keepdim=True), X.amax(1, keepdim=True)
    extent = (hi - lo).amax(-1, keepdim=True)
    return (X - (lo + hi) / 2) / torch.where(extent > 0, extent, torch.ones_like(extent))


def point_cloud_metrics(gen, ref, *, normalize: str | None = "bbox_unit_cube", emd: bool = True,
                        emd_max_points: int = 1024, seed: int = 0, device=None, workers: int | None = None,
                        progress: bool = True) -> dict:
    """COV, MMD and 1-NNA with Chamfer and EMD distances: ``gen (G, N, 3)`` vs ``ref (R, N, 3)``.

    Returns fractions and raw distances (unscaled) under the keys of ``POINT_CLOUD_KEYS``
    (EMD keys are None when ``emd=False``) plus ``"protocol"``, a sentence saying how they were
    computed. The CD matrices run in torch (``device`` may be "cuda"); EMD is exact by
    linear_sum_assignment on the CPU, about 0.15 s per pair at 1024 points, for the
    ``G R + G (G - 1) / 2 + R (R - 1) / 2`` pairs that 1-NNA needs (lower ``emd_max_points`` to trade).
    ``workers`` threads share the CPU work (default: torch's thread count). The set metrics
    come from the three distance blocks by ``set_metrics_from_distances``.
    """
    gen, ref = _points(gen, "gen"), _points(ref, "ref")
    if emd:
        _same_point_count(gen, ref, "EMD (set emd=False to compare clouds of different sizes)")
    gen, ref = normalize_point_clouds(gen, normalize), normalize_point_clouds(ref, normalize)
    out = dict.fromkeys(POINT_CLOUD_KEYS)
    kw = dict(device=device, workers=workers, progress=progress)
    D_gg = {"CD": pairwise_chamfer_distance(gen, None, desc="CD gen-gen", **kw)}
    D_rr = {"CD": pairwise_chamfer_distance(ref, None, desc="CD ref-ref", **kw)}
    D_gr = {"CD": pairwise_chamfer_distance(gen, ref, desc="CD gen-ref", **kw)}
    n = gen.shape[1]
    emd_note = "EMD not computed"
    if emd:
        kw = dict(exact_max_points=emd_max_points, seed=seed, workers=workers, progress=progress)
        D_gg["EMD"] = pairwise_emd(gen, None, desc="EMD gen-gen", **kw)
        D_rr["EMD"] = pairwise_emd(ref, None, desc="EMD ref-ref", **kw)
        D_gr["EMD"] = pairwise_emd(gen, ref, desc="EMD gen-ref", **kw)
        emd_note = (f"EMD exact on all {n} points" if n <= emd_max_points else
                    f"EMD exact on a seeded random subset of {emd_max_points} of {n} points (seed {seed})")
    out.update(set_metrics_from_distances(D_gg, D_gr, D_rr))
    out["protocol"] = (f"{gen.shape[0]} generated vs {ref.shape[0]} reference clouds of {n} points; normalize="
                       f"{normalize!r}; CD squared, mean per direction, summed; {emd_note}; ties: COV takes the lowest "
                       "reference index, 1-NNA scores tied neighbours fractionally")
    return out


def format_point_cloud_table(results: dict) -> str:
    """A markdown table as papers report it: COV and 1-NNA in %, MMD-CD x 10^3, MMD-EMD x 10^2.

    ``results`` is one ``point_cloud_metrics`` dict or a mapping ``{row name: dict}``.
    """
    rows = {"": results} if "MMD-CD" in results else results
    cols = [("COV-CD", "COV-CD (%)", 100), ("MMD-CD", "MMD-CD (x10^3)", 1e3), ("1-NNA-CD", "1-NNA-CD (%)", 100),
            ("COV-EMD", "COV-EMD (%)", 100), ("MMD-EMD", "MMD-EMD (x10^2)", 1e2), ("1-NNA-EMD", "1-NNA-EMD (%)", 100)]
    lines = ["| method | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = ["-" if r.get(k) is None else f"{r[k] * s:.2f}" for k, _, s in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = [f"{name or 'protocol'}: {r['protocol']}" for name, r in rows.items() if r.get("protocol")]
    return "\n".join(lines + ([""] + notes if notes else []))


def sample_mesh_surface(mesh, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points on a ``trimesh.Trimesh`` surface, area-weighted (uniform per unit area) -> ``(n, 3)``."""
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or mesh.area <= 0:
        raise ValueError("mesh must be a trimesh.Trimesh with faces of non-zero area "
                         "(load it with trimesh.load(path, force='mesh'))")
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return torch.as_tensor(np.asarray(points), dtype=torch.float32)


def mesh_chamfer(mesh, surface_N3: torch.Tensor, seed: int = 0) -> float:
    """Chamfer distance (``chamfer_distance``, unscaled) between a mesh and points on the true surface
    ``(N, 3)``: ``N`` area-weighted samples of the mesh (``sample_mesh_surface``) against them."""
    return float(chamfer_distance(sample_mesh_surface(mesh, len(surface_N3), seed=seed), surface_N3.float()))


# --------------------------------------------------------------------------- image metrics
def _images(x, name: str) -> torch.Tensor:
    """Images as ``(B, C, H, W)`` float: a tensor ``(B, C, H, W)`` / ``(C, H, W)`` or a list of ``(C, H, W)``."""
    if isinstance(x, (list, tuple)):
        sizes = {tuple(t.shape) for t in x}
        if len(sizes) != 1:
            raise ValueError(f"{name} mixes image sizes {sorted(sizes)}: resize them to one size first")
        x = torch.stack([torch.as_tensor(t) for t in x])
    x = torch.as_tensor(x)
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected non-empty (B, C, H, W) or (C, H, W) images")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return x.float() if x.dtype != torch.float64 else x


def _image_pair(a, b):
    A, B = _images(a, "a"), _images(b, "b")
    if A.shape != B.shape:
        raise ValueError(f"a {tuple(A.shape)} and b {tuple(B.shape)} differ in shape: compare images of one size")
    return A, B


def psnr(a, b, mask=None, data_range: float = 1.0) -> torch.Tensor:
    """``10 log10(range^2 / MSE)`` per image ``(B,)``; with ``mask (B, 1, H, W)`` the MSE is over masked pixels."""
    A, B = _image_pair(a, b)
    err_BCHW = (A - B).double() ** 2
    if mask is None:
        mse_B = err_BCHW.flatten(1).mean(1)
    else:
        m = _images(mask, "mask")
        if m.shape[0] != A.shape[0] or m.shape[-2:] != A.shape[-2:]:
            raise ValueError(f"mask {tuple(m.shape)} does not match the images {tuple(A.shape)}: pass (B, 1, H, W)")
        m = (m > 0.5).double().expand_as(err_BCHW)
        count_B = m.flatten(1).sum(1)
        mse_B = (err_BCHW * m).flatten(1).sum(1) / count_B
        mse_B = torch.where(count_B > 0, mse_B, torch.full_like(mse_B, float("nan")))  # empty mask: undefined
    return 10 * torch.log10(data_range ** 2 / mse_B)  # inf for identical images


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a, b, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image ``(B,)`` (Wang et al. 2004): Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03.

    Local statistics are taken over the "valid" region only (no padding), per channel.
    """
    A, B = (t.double() for t in _image_pair(a, b))
    if min(A.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(A.shape[-2:])} are smaller than the SSIM window {window_size}")
    C = A.shape[1]
    g = _gaussian_window(window_size, sigma)
    w = (g[:, None] * g[None, :]).repeat(C, 1, 1, 1)  # (C, 1, k, k), one window per channel

    def blur(x):
        return F.conv2d(x, w, groups=C)

    mu_a, mu_b = blur(A), blur(B)
    var_a, var_b = blur(A * A) - mu_a ** 2, blur(B * B) - mu_b ** 2
    cov = blur(A * B) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # SSIM = (2 mu_a mu_b + c1)(2 cov + c2) / ((mu_a^2 + mu_b^2 + c1)(var_a + var_b + c2))
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def mask_iou(a, b, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of binarised masks ``(B, 1, H, W)`` -> ``(B,)``; two empty masks give 1."""
    A, B = _image_pair(a, b)
    A, B = A > threshold, B > threshold
    inter, union = (A & B).flatten(1).sum(1), (A | B).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter, dtype=torch.float32))


# ------------------------------------------------------------------------------------ LPIPS
_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
_MODELS: dict = {}


def _lpips_backbone_path(net: str, backbone_weights=None) -> Path:
    if net not in _LPIPS_BACKBONES:
        raise ValueError(f"net={net!r} is not an LPIPS backbone: use one of {sorted(_LPIPS_BACKBONES)}")
    if backbone_weights is not None:
        return Path(backbone_weights)
    import torchvision

    url = getattr(torchvision.models, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def lpips_available(net: str = "alex", backbone_weights=None) -> bool:
    """True when the torchvision backbone weights of LPIPS are on disk (the linear heads ship with ``lpips``)."""
    return _lpips_backbone_path(net, backbone_weights).is_file()


def lpips_model(net: str = "alex", backbone_weights=None, device=None):
    """The LPIPS v0.1 module (frozen, eval mode; inputs in [-1, 1], or [0, 1] with ``normalize=True``).

    The backbone is read from ``backbone_weights`` (a torchvision ImageNet state dict) or the torch
    hub cache; when absent, MissingWeightsError says where to put it. Nothing is downloaded.
    Differentiable in its inputs (the VQVAE's perceptual loss, Eq. 8).
    """
    import lpips

    path = _lpips_backbone_path(net, backbone_weights)
    if not path.is_file():
        raise MissingWeightsError(f"LPIPS-{net} backbone weights not found at {path}: place the torchvision ImageNet "
                                  "weights there or pass backbone_weights=PATH (this code never downloads)")
    device = torch.device(device or "cpu")
    key = ("lpips", net, str(path), str(device))
    if key not in _MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation inside lpips
            model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # heads from the package, trunk below
        state = torch.load(path, map_location="cpu", weights_only=True)
        for slice_ in model.net.children():  # the trunk's slices keep torchvision's `features.<i>` numbering
            slice_.load_state_dict({k: state[f"features.{k}"] for k in slice_.state_dict()})
        model.requires_grad_(False)
        _MODELS[key] = model.eval().to(device)
    return _MODELS[key]


def lpips_distance(a, b, net: str = "alex", backbone_weights=None, device=None) -> torch.Tensor:
    """LPIPS v0.1 (Zhang et al. 2018) per image ``(B,)`` for images in [0, 1] (``lpips_model``)."""
    A, B = _image_pair(a, b)
    model = lpips_model(net, backbone_weights, device)
    dev = next(model.parameters()).device
    with torch.no_grad():
        d = model(A.to(dev), B.to(dev), normalize=True)  # [0, 1] -> [-1, 1] inside
    return d.flatten().cpu()


# ------------------------------------------------------------------------------- FID and KID
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _features(f, name: str) -> np.ndarray:
    f = np.asarray(f.detach().cpu() if torch.is_tensor(f) else f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} has shape {f.shape}: expected (N, D) features with N >= 2")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} holds NaN or inf features")
    return f


def _feature_pair(f1, f2):
    a, b = _features(f1, "f1"), _features(f2, "f2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"f1 and f2 have feature sizes {a.shape[1]} and {b.shape[1]}: "
                         "use one feature network for both")
    return a, b


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, by pytorch-fid's calculate_frechet_distance."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) deprecation
        return float(calculate_frechet_distance(np.asarray(mu1, np.float64), np.asarray(sigma1, np.float64),
                                                np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64)))


def fid_from_features(f1, f2, *, feature_network: str = "unspecified") -> dict:
    """FID between two feature sets ``(N, D)``, ``(M, D)`` of any network (named in the result)."""
    a, b = _feature_pair(f1, f2)
    fid = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    return {"FID": fid, "feature_network": feature_network, "num_features": (len(a), len(b))}


def kid_from_features(f1, f2, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                      feature_network: str = "unspecified") -> dict:
    """KID: unbiased MMD^2 with ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets.

    Each of ``num_subsets`` draws ``subset_size`` features of each set without replacement
    (``seed``); ``subset_size`` is clipped to the smaller set. Returns mean ``KID`` and ``KID-std``.
    """
    a, b = _feature_pair(f1, f2)
    m, d = min(subset_size, len(a), len(b)), a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        # MMD^2_u = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_{i,j} k(x_i,y_j)/m^2
        values.append((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())
    return {"KID": float(np.mean(values)), "KID-std": float(np.std(values)), "feature_network": feature_network,
            "num_subsets": num_subsets, "subset_size": m}


def inception_available(weights_path=None) -> bool:
    """True when pytorch-fid's FID Inception weights are on disk (``weights_path`` or the torch hub cache)."""
    return _inception_path(weights_path).is_file()


def _inception_path(weights_path=None) -> Path:
    return Path(weights_path) if weights_path else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def inception_features(images, *, weights_path=None, batch_size: int = 50, device=None,
                       progress: bool = True) -> torch.Tensor:
    """2048-d pool3 features of pytorch-fid's FID InceptionV3 for images ``(N, 3, H, W)`` in [0, 1].

    The weights come from ``weights_path`` or the torch hub cache; if absent, MissingWeightsError.
    Feed the features to ``fid_from_features(..., feature_network="inception-v3-fid")``.
    """
    from pytorch_fid import inception as fid_inception

    X = _images(images, "images")
    if X.shape[1] != 3:
        raise ValueError(f"images have {X.shape[1]} channels: Inception takes RGB (N, 3, H, W) in [0, 1]")
    path = _inception_path(weights_path)
    if not path.is_file():
        raise MissingWeightsError(f"FID Inception weights not found at {path}: download "
                                  f"{fid_inception.FID_WEIGHTS_URL} there or pass weights_path=PATH, "
                                  "or use fid_from_features with another feature network")
    device = torch.device(device or "cpu")
    key = ("inception", str(path), str(device))
    if key not in _MODELS:
        # pytorch-fid fetches its weights by URL; point that loader at the local file (never the network)
        def local(*_, **__):
            return torch.load(path, map_location="cpu", weights_only=True)

        with mock.patch.object(fid_inception, "load_state_dict_from_url", local):
            model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                                              resize_input=True, normalize_input=True, use_fid_inception=True)
        _MODELS[key] = model.eval().to(device)
    feats = []
    with torch.no_grad():
        for i in tqdm(range(0, len(X), batch_size), desc="Inception", disable=not progress, leave=False):
            feats.append(_MODELS[key](X[i:i + batch_size].to(device))[0].flatten(1).cpu())
    return torch.cat(feats)


# -------------------------------------------------------------------------------- benchmark
def benchmark_point_cloud_metrics(num: int = 200, points: int = 2048, emd_points: int = 1024, seed: int = 0) -> dict:
    """Time a ``num`` x ``num`` CD evaluation (COV, MMD, 1-NNA) at ``points`` points, and one EMD pair."""
    g = torch.Generator().manual_seed(seed)
    gen, ref = torch.randn(num, points, 3, generator=g), torch.randn(num, points, 3, generator=g)
    t = time.perf_counter()
    result = point_cloud_metrics(gen, ref, emd=False)
    cd_s = time.perf_counter() - t
    x, y = torch.randn(2, emd_points, 3, generator=g).unbind(0)
    t = time.perf_counter()
    emd(x, y)
    emd_pair_s = time.perf_counter() - t
    n_pairs = num * num + num * (num - 1)  # gen-ref, plus the two symmetric halves
    report = {"cd_seconds": cd_s, "cd_pairs": n_pairs, "emd_pair_seconds": emd_pair_s,
              "emd_estimated_seconds": emd_pair_s * n_pairs, "threads": torch.get_num_threads(), **result}
    print(f"{num} x {num} clouds of {points} points, {torch.get_num_threads()} threads: CD metrics in {cd_s:.1f} s "
          f"({n_pairs} pairs, {1e3 * cd_s / n_pairs:.2f} ms/pair); EMD {emd_points} points: {emd_pair_s:.3f} s/pair "
          f"(~{emd_pair_s * n_pairs / 3600:.1f} h for all pairs)")
    return report


if __name__ == "__main__":  # the same as `sar3d bench metrics`
    import sys

    from .cli import main

    sys.exit(main(["bench", "metrics", *sys.argv[1:]]))
