"""Metrics of Table 1 against second computations: brute-force loops, permutations, closed forms."""
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from sar3d_core import metrics as M
from sar3d_core.metrics import (
    MissingWeightsError, chamfer_distance, coverage_mmd, emd, fid_from_features, format_point_cloud_table,
    frechet_distance, inception_available, inception_features, kid_from_features, lpips_available, lpips_distance,
    mask_iou, normalize_point_clouds, one_nna, pairwise_chamfer_distance, pairwise_emd, point_cloud_metrics, psnr,
    sample_mesh_surface, set_metrics_from_distances, ssim,
)

G = torch.Generator().manual_seed(0)


def rand(*shape, dtype=torch.float64):
    return torch.randn(*shape, generator=G, dtype=dtype)


def single_points(*xs):
    """One-point "shapes" at x on the x axis: CD between them is 2 (x - y)^2, exact for integers."""
    return torch.tensor([[[float(x), 0.0, 0.0]] for x in xs], dtype=torch.float64)


# ------------------------------------------------------------------------------ distances
def chamfer_loop(x, y):
    d = [[sum((a - b) ** 2 for a, b in zip(p, q)) for q in y.tolist()] for p in x.tolist()]
    return np.mean([min(r) for r in d]) + np.mean([min(c) for c in zip(*d)])


def test_chamfer_matches_a_brute_force_loop_and_its_pairwise_form():
    X, Y = rand(3, 7, 3), rand(3, 5, 3)
    expected = [chamfer_loop(x, y) for x, y in zip(X, Y)]
    np.testing.assert_allclose(chamfer_distance(X, Y, tile=3).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(chamfer_distance(X.float(), Y.float()).numpy(), expected, rtol=1e-4)
    assert chamfer_distance(X[0], Y[0]).item() == pytest.approx(expected[0])
    far = torch.tensor([1000.0, -500.0, 800.0], dtype=torch.float64)  # float32 far from the origin: centred first
    np.testing.assert_allclose(chamfer_distance((X + far).float(), (Y + far).float()).numpy(), expected, rtol=1e-3)
    A, B = rand(4, 6, 3), rand(5, 6, 3)
    P = pairwise_chamfer_distance(A, B, chunk=2, tile=4, progress=False)
    brute = [[chamfer_loop(a, b) for b in B] for a in A]
    np.testing.assert_allclose(P.numpy(), brute, rtol=1e-10)
    P32 = pairwise_chamfer_distance((A + far).float(), (B + far).float(), progress=False)
    np.testing.assert_allclose(P32.numpy(), brute, rtol=1e-3)
    S = pairwise_chamfer_distance(A, progress=False)  # symmetric path: upper triangle mirrored
    np.testing.assert_allclose(S.numpy(), pairwise_chamfer_distance(A, A.clone(), progress=False).numpy(), atol=1e-12)


def emd_permutations(x, y):
    n = len(x)
    d = torch.cdist(x, y).numpy()
    return min(d[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n)))


def test_emd_matches_all_permutations():
    for n in (1, 3, 6):
        X, Y = rand(2, n, 3), rand(2, n, 3)
        np.testing.assert_allclose(emd(X, Y).numpy(), [emd_permutations(x, y) for x, y in zip(X, Y)], rtol=1e-10)
    A, B = rand(3, 5, 3), rand(2, 5, 3)
    brute = [[emd_permutations(a, b) for b in B] for a in A]
    np.testing.assert_allclose(pairwise_emd(A, B, progress=False).numpy(), brute, rtol=1e-10)


def test_emd_of_a_permuted_copy_is_zero_and_of_a_translate_is_the_shift():
    X = rand(40, 3)
    assert emd(X, X[torch.randperm(40, generator=G)]).item() == pytest.approx(0.0, abs=1e-12)
    t = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)  # |t| = 1.3
    assert emd(X, X + t).item() == pytest.approx(1.3, rel=1e-9)
    # beyond exact_max_points both clouds keep the same seeded index subset: still exactly |t|
    assert emd(X, X + t, exact_max_points=8).item() == pytest.approx(1.3, rel=1e-9)
    assert emd(X, X.flip(0), exact_max_points=8).item() > 0  # different subsets of the same cloud


# ------------------------------------------------------------------------ COV, MMD, 1-NNA
def test_coverage_and_mmd_on_hand_made_matrices_with_ties():
    cov, mmd = coverage_mmd(torch.tensor([[1.0, 2.0, 3.0], [1.0, 5.0, 6.0]]))
    assert cov == pytest.approx(1 / 3) and mmd == pytest.approx(2.0)  # both pick r0; mean(1, 2, 3)
    cov, _ = coverage_mmd(torch.tensor([[1.0, 1.0], [2.0, 1.0]]))  # ties: g0 covers the lowest index, r0
    assert cov == 1.0
    near_tie = torch.tensor([[1.0 + 1e-9, 1.0], [5.0, 1.0]], dtype=torch.float64)  # gap below float32 rounding
    cov, _ = coverage_mmd(near_tie)  # g0 ties r0 and r1 -> covers r0
    assert cov == 1.0


def test_one_nna_exact_constructions():
    # separable cluster (G G | R R) scores 1, interleaved cluster (G R G R) scores 0 -> 0.5 exactly
    gen, ref = single_points(0, 1, 100, 103), single_points(10, 11, 101, 104)
    r = point_cloud_metrics(gen, ref, normalize=None, emd=True, progress=False)
    assert r["1-NNA-CD"] == pytest.approx(0.5) and r["1-NNA-EMD"] == pytest.approx(0.5)
    # tie: shape 0 (gen) is equally near 1 (ref) and -1 (gen) -> counts 1/2; 1 -> wrong; -1 -> right
    gen, ref = single_points(0, -1), single_points(1)
    assert point_cloud_metrics(gen, ref, normalize=None, emd=False, progress=False)["1-NNA-CD"] == pytest.approx(0.5)
    # direct matrices: each gen's nearest is a ref and vice versa -> 0
    M_GG = torch.tensor([[0.0, 9.0], [9.0, 0.0]])
    assert one_nna(M_GG, M_GG, torch.tensor([[1.0, 8.0], [8.0, 1.0]])) == 0.0


def test_a_set_against_itself_and_well_separated_sets():
    clouds = rand(5, 16, 3)
    r = point_cloud_metrics(clouds, clouds.clone(), progress=False)
    assert r["COV-CD"] == 1.0 and r["COV-EMD"] == 1.0
    assert r["MMD-CD"] == pytest.approx(0, abs=1e-12) and r["MMD-EMD"] == pytest.approx(0, abs=1e-12)
    assert r["1-NNA-CD"] == 0.0 and r["1-NNA-EMD"] == 0.0  # every shape's nearest is its twin
    spheres = torch.nn.functional.normalize(rand(6, 32, 3), dim=-1)
    slabs = rand(6, 32, 3) * torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64)
    r = point_cloud_metrics(spheres, slabs, progress=False)
    assert r["1-NNA-CD"] == 1.0 and r["1-NNA-EMD"] == 1.0


def test_set_metrics_from_distances_agrees_with_point_cloud_metrics():
    gen, ref = rand(6, 24, 3), rand(5, 24, 3) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    direct = point_cloud_metrics(gen, ref, emd_max_points=24, progress=False)
    g, r = normalize_point_clouds(gen), normalize_point_clouds(ref)
    D_gg = {"CD": pairwise_chamfer_distance(g, None, progress=False), "EMD": pairwise_emd(g, None, progress=False)}
    D_gr = {"CD": pairwise_chamfer_distance(g, r, progress=False), "EMD": pairwise_emd(g, r, progress=False)}
    D_rr = {"CD": pairwise_chamfer_distance(r, None, progress=False), "EMD": pairwise_emd(r, None, progress=False)}
    blocks = set_metrics_from_distances(D_gg, D_gr, D_rr)
    assert set(blocks) == set(M.POINT_CLOUD_KEYS)
    for key in M.POINT_CLOUD_KEYS:
        assert blocks[key] == pytest.approx(direct[key], rel=1e-12, abs=1e-15)
    # one distance at a time, as matrices (numpy too), under that distance's keys
    one = set_metrics_from_distances(D_gg["EMD"].numpy(), D_gr["EMD"].numpy(), D_rr["EMD"].numpy(), "EMD")
    assert one == {k: blocks[k] for k in ("COV-EMD", "MMD-EMD", "1-NNA-EMD")}


def test_set_metrics_from_distances_on_a_hand_made_case():
    # one-point shapes on a line (squared distances): generated at 0 and 0.1, references at 0 and 5
    D_gr = torch.tensor([[0.0, 25.0], [0.01, 24.01]])
    D_gg, D_rr = torch.tensor([[0.0, 0.01], [0.01, 0.0]]), torch.tensor([[0.0, 25.0], [25.0, 0.0]])
    r = set_metrics_from_distances(D_gg, D_gr, D_rr)
    assert r["COV-CD"] == 0.5 and r["MMD-CD"] == pytest.approx((0.0 + 24.01) / 2)
    # nearest other shape: gen 0 -> ref 0, ref 0 -> gen 0, ref 1 -> gen 1 (all across: 0), and gen 1 is
    # equally near gen 0 and ref 0 (a tie: 1/2 right) -> (0 + 1/2 + 0 + 0) / 4
    assert r["1-NNA-CD"] == pytest.approx(1 / 8)
    assert r == set_metrics_from_distances({"CD": D_gg}, {"CD": D_gr}, {"CD": D_rr})


def test_one_nna_of_two_halves_of_one_distribution_is_near_half():
    clouds = rand(80, 1, 3)  # one-point clouds: 1-NN on Gaussian points
    r = point_cloud_metrics(clouds[:40], clouds[40:], normalize=None, emd=False, progress=False)
    assert 0.35 < r["1-NNA-CD"] < 0.65  # expectation (K-1)/(2K-1) = 0.487 for K = 40


def test_normalisation_removes_scale_and_translation():
    gen, ref = rand(5, 24, 3), rand(4, 24, 3) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    N = normalize_point_clouds(gen)
    extent = N.amax(1) - N.amin(1)
    np.testing.assert_allclose(extent.amax(-1).numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose((N.amax(1) + N.amin(1)).numpy(), 0.0, atol=1e-12)
    scale_g, scale_r = torch.rand(5, 1, 1, generator=G, dtype=torch.float64) * 5 + 0.1, 3.0
    moved_gen, moved_ref = gen * scale_g + rand(5, 1, 3) * 10, ref * scale_r - 7.0
    a = point_cloud_metrics(gen, ref, progress=False)
    b = point_cloud_metrics(moved_gen, moved_ref, progress=False)
    for key in M.POINT_CLOUD_KEYS:
        assert a[key] == pytest.approx(b[key], rel=1e-9)
    raw = point_cloud_metrics(moved_gen, moved_ref, normalize=None, emd=False, progress=False)
    assert raw["MMD-CD"] != pytest.approx(a["MMD-CD"], rel=1e-3)  # the protocol matters
    assert raw["MMD-EMD"] is None and "normalize=None" in raw["protocol"]


def test_format_point_cloud_table_scales_as_papers():
    r = {"COV-CD": 0.5, "MMD-CD": 0.0012, "1-NNA-CD": 0.625, "COV-EMD": None, "MMD-EMD": None, "1-NNA-EMD": None}
    row = format_point_cloud_table({"ours": r}).splitlines()[-1]
    assert row.split("|")[1:-1] == [" ours ", " 50.00 ", " 1.20 ", " 62.50 ", " - ", " - ", " - "]
    table = format_point_cloud_table(dict(r, protocol="4 vs 4 clouds")).splitlines()
    assert table[2].startswith("|  | 50.00 |") and table[-1] == "protocol: 4 vs 4 clouds"


def test_sample_mesh_surface_is_on_the_surface_and_area_weighted():
    trimesh = pytest.importorskip("trimesh")
    half = np.array([0.5, 1.0, 2.0])
    p = sample_mesh_surface(trimesh.creation.box(extents=2 * half), 14000, seed=3).double().numpy()
    on_face = np.isclose(np.abs(p), half, atol=1e-6)
    assert p.shape == (14000, 3) and on_face.any(1).all() and (np.abs(p) <= half + 1e-6).all()
    # face pairs normal to x, y, z have areas 8, 4, 2 (of 14)
    np.testing.assert_allclose(on_face.mean(0), [8 / 14, 4 / 14, 2 / 14], atol=0.02)
    assert torch.equal(sample_mesh_surface(trimesh.creation.box(), 50, seed=1),
                       sample_mesh_surface(trimesh.creation.box(), 50, seed=1))



def test_mesh_chamfer_is_zero_on_the_surface_and_grows_with_an_offset():
    trimesh = pytest.importorskip("trimesh")
    from sar3d_core.metrics import mesh_chamfer

    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    on = sample_mesh_surface(box, 8000, seed=7)
    gap = mesh_chamfer(box, on, seed=1)  # two samplings of one surface: only the sampling gap (about area / n)
    assert gap < 1e-3
    shifted = box.copy()
    shifted.apply_translation((0.1, 0, 0))
    # faces normal to x (1/3 of the area) now sit 0.1 away: 0.01 / 3 each way, squared distances summed
    assert mesh_chamfer(shifted, on, seed=1) == pytest.approx(2 * 0.01 / 3 + gap, rel=0.1)


# --------------------------------------------------------------------------- image metrics
def test_psnr_closed_form_with_and_without_mask():
    a = torch.zeros(2, 3, 8, 8)
    assert psnr(a, a + 0.1).numpy() == pytest.approx([20.0, 20.0], abs=1e-4)  # MSE 0.01
    assert psnr(a * 255, a * 255 + 25.5, data_range=255).numpy() == pytest.approx([20.0, 20.0], abs=1e-4)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., :4] = 1
    b = torch.where(mask.bool(), 0.01, 0.5).expand(2, 3, 8, 8)  # MSE 1e-4 inside, 0.25 outside
    assert psnr(a, b, mask=mask).numpy() == pytest.approx([40.0, 40.0], abs=1e-3)
    assert psnr(a, a).isinf().all()


def ssim_scipy(x, y, c1=1e-4, c2=9e-4):
    """Second computation: scipy's Gaussian filter (radius 5) on the valid region, per channel."""
    vals = []
    for a, b in zip(x.double().numpy(), y.double().numpy()):
        def blur(z):
            return ndimage.gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]
        ma, mb = blur(a), blur(b)
        va, vb, cov = blur(a * a) - ma ** 2, blur(b * b) - mb ** 2, blur(a * b) - ma * mb
        vals.append(((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))).mean())
    return np.mean(vals)


def test_ssim_against_scipy_filters_identity_noise_and_constant_images():
    x = torch.rand(1, 3, 24, 20, generator=G)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    y = (x + 0.1 * torch.randn(x.shape, generator=G)).clamp(0, 1)
    assert ssim(x, y).item() == pytest.approx(ssim_scipy(x[0], y[0]), abs=1e-6)
    noisy = [ssim(x, x + s * torch.randn(x.shape, generator=G)).item() for s in (0.02, 0.1, 0.3)]
    assert 1 > noisy[0] > noisy[1] > noisy[2]
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)  # var = cov = 0
    expected = (2 * 0.2 * 0.6 + 1e-4) / (0.2 ** 2 + 0.6 ** 2 + 1e-4)
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-6)


def test_mask_iou_on_hand_made_masks():
    a, b = torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)
    a[0, :, :, :2], b[0, :, :2, :] = 1, 1  # left half vs top half: 4 / 12
    a[1], b[1] = 1, 1
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 3, 1.0, 1.0])  # two empty masks: 1


def test_lpips_uses_only_local_weights(tmp_path):
    missing = tmp_path / "absent.pth"
    assert not lpips_available("alex", missing)
    with pytest.raises(MissingWeightsError, match="absent.pth"):
        lpips_distance(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), backbone_weights=missing)
    import torchvision

    torch.manual_seed(0)  # random trunk saved as a torchvision state dict exercises the loading path
    state = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features")}
    torch.save(state, tmp_path / "alex.pth")
    x, y = torch.rand(2, 3, 32, 32, generator=G), torch.rand(2, 3, 32, 32, generator=G)
    assert lpips_distance(x, x, backbone_weights=tmp_path / "alex.pth").abs().max() < 1e-6
    d = lpips_distance(x, y, backbone_weights=tmp_path / "alex.pth")
    assert d.shape == (2,) and (d > 0).all()
    model = M._MODELS[("lpips", "alex", str(tmp_path / "alex.pth"), "cpu")]
    assert torch.equal(model.net.slice1[0].weight, state["features.0.weight"])


# ----------------------------------------------------------------------------- FID and KID
def test_frechet_distance_against_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(closed, rel=1e-9)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))  # commuting, not diagonal
    assert frechet_distance(mu1, Q @ np.diag(s1) @ Q.T, mu2, Q @ np.diag(s2) @ Q.T) == pytest.approx(closed, rel=1e-7)
    rng = np.random.default_rng(1)
    f1 = mu1 + np.sqrt(s1) * rng.normal(size=(40000, 3))
    f2 = mu2 + np.sqrt(s2) * rng.normal(size=(40000, 3))
    r = fid_from_features(torch.as_tensor(f1), f2, feature_network="toy")
    assert r["FID"] == pytest.approx(closed, rel=0.03) and r["feature_network"] == "toy"


def kid_loop(x, y):
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_against_a_double_loop():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 4)), rng.normal(0.5, 1.0, size=(10, 4))
    r = kid_from_features(x, y, num_subsets=3, subset_size=10, feature_network="toy")  # subsets = whole sets
    assert r["KID"] == pytest.approx(kid_loop(x, y), rel=1e-10) and r["KID-std"] == pytest.approx(0, abs=1e-12)
    r = kid_from_features(x, y, num_subsets=4, subset_size=6, seed=5)
    draw = np.random.default_rng(5)  # the documented draw order: x indices, then y indices, per subset
    values = [kid_loop(x[draw.choice(10, 6, replace=False)], y[draw.choice(10, 6, replace=False)]) for _ in range(4)]
    assert r["KID"] == pytest.approx(np.mean(values), rel=1e-10) and r["KID-std"] == pytest.approx(np.std(values))
    assert r["subset_size"] == 6 and r["feature_network"] == "unspecified"


def test_inception_features_use_only_local_weights(tmp_path):
    assert not inception_available(tmp_path / "none.pth")
    with pytest.raises(MissingWeightsError, match="none.pth"):
        inception_features(torch.rand(1, 3, 32, 32), weights_path=tmp_path / "none.pth")
    from unittest import mock

    from pytorch_fid import inception as fid_inception

    # a randomly initialised FID Inception, saved in the layout of the real weights file
    captured = {}
    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fid_inception.torchvision.models.Inception3, "load_state_dict",
                              lambda self, state, *a, **k: captured.update(self.state_dict())):
        fid_inception.fid_inception_v3()
    torch.save(captured, tmp_path / "inception.pth")
    images = torch.rand(3, 3, 32, 32, generator=G)
    f = inception_features(images, weights_path=tmp_path / "inception.pth", batch_size=2, progress=False)
    assert f.shape == (3, 2048) and torch.isfinite(f).all()
    assert torch.equal(f, inception_features(images, weights_path=tmp_path / "inception.pth", progress=False))
    model = M._MODELS[("inception", str(tmp_path / "inception.pth"), "cpu")]
    assert torch.equal(model.blocks[0][0].conv.weight, captured["Conv2d_1a_3x3.conv.weight"])


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("call, match", [
    (lambda: point_cloud_metrics(torch.full((2, 4, 3), math.nan), torch.rand(2, 4, 3)), "gen holds NaN"),
    (lambda: point_cloud_metrics(torch.rand(2, 4, 3), torch.rand(2, 5, 3)), "equal point counts"),
    (lambda: point_cloud_metrics(torch.rand(0, 4, 3), torch.rand(2, 4, 3)), "gen is empty"),
    (lambda: point_cloud_metrics(torch.rand(2, 4, 2), torch.rand(2, 4, 2)), r"gen has shape \(2, 4, 2\)"),
    (lambda: point_cloud_metrics(torch.rand(2, 4, 3), torch.rand(2, 4, 3), normalize="sphere"), "normalize"),
    (lambda: emd(torch.rand(3, 3), torch.rand(4, 3)), "equal point counts"),
    (lambda: chamfer_distance(torch.rand(2, 4, 3), torch.rand(3, 4, 3)), "one to one"),
    (lambda: psnr([torch.rand(3, 8, 8), torch.rand(3, 8, 9)], torch.rand(2, 3, 8, 8)), "a mixes image sizes"),
    (lambda: ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17)), "differ in shape"),
    (lambda: fid_from_features(np.zeros((5, 3)), np.zeros((5, 4))), "feature sizes"),
    (lambda: kid_from_features(np.zeros(5), np.zeros((5, 4))), "f1 has shape"),
    (lambda: set_metrics_from_distances(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2)), "do not fit"),
    (lambda: set_metrics_from_distances(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2, 2)), "D_gr has shape"),
    (lambda: set_metrics_from_distances({"CD": torch.zeros(1, 1)}, torch.zeros(1, 1), {"CD": torch.zeros(1, 1)}),
     "all as matrices or all as"),
    (lambda: set_metrics_from_distances({"CD": torch.zeros(1, 1)}, {"EMD": torch.zeros(1, 1)},
                                        {"CD": torch.zeros(1, 1)}), "name different distances"),
])
def test_bad_inputs_raise_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
