"""`sar3d eval points|images` and `sar3d train featnet`: known answers, a brute-force check, one-line errors."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT


def sar3d(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sar3d_core.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def clouds(path, points):
    np.savez(path, points=np.asarray(points, dtype=np.float32))
    return path


def test_identical_sets_cover_everything_at_zero_distance(tmp_path):
    x = np.random.default_rng(0).random((6, 64, 3))
    gen, ref = clouds(tmp_path / "gen.npz", x * 3 + 1), clouds(tmp_path / "ref.npz", x)  # the same after bbox normalisation
    result = sar3d("eval", "points", gen, ref, "--json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    assert "| gen.npz vs ref.npz | 100.00 | 0.00 | 0.00 | 100.00 | 0.00 | 0.00 |" in result.stdout
    assert "normalize='bbox_unit_cube'" in result.stdout and "EMD exact on all 64 points" in result.stdout
    r = json.loads((tmp_path / "out.json").read_text())
    assert r["COV-CD"] == r["COV-EMD"] == 1.0 and abs(r["MMD-CD"]) < 1e-6 and abs(r["MMD-EMD"]) < 1e-6
    assert r["1-NNA-CD"] == r["1-NNA-EMD"] == 0.0  # each shape's nearest neighbour is its copy in the other set


def test_chamfer_metrics_match_a_brute_force_computation(tmp_path):
    rng = np.random.default_rng(1)
    gen, ref = rng.random((6, 64, 3)), rng.random((5, 64, 3)) * [1.0, 1.0, 0.5]
    result = sar3d("eval", "points", clouds(tmp_path / "g.npz", gen), clouds(tmp_path / "r.npz", ref),
                   "--no-emd", "--normalize", "none", "--json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    r = json.loads((tmp_path / "out.json").read_text())
    gen, ref = gen.astype(np.float32).astype(np.float64), ref.astype(np.float32).astype(np.float64)

    def cd(a, b):  # squared distances, mean nearest neighbour per direction, summed
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return d2.min(1).mean() + d2.min(0).mean()

    every = np.concatenate([gen, ref])
    M = np.array([[cd(a, b) for b in every] for a in every])
    M_GR = M[:6, 6:]
    np.fill_diagonal(M, np.inf)
    nearest_is_gen = M.argmin(1) < 6
    assert r["COV-CD"] == pytest.approx(len(set(M_GR.argmin(1))) / 5)
    assert r["MMD-CD"] == pytest.approx(M_GR.min(0).mean(), rel=1e-4)
    assert r["1-NNA-CD"] == pytest.approx(np.mean(nearest_is_gen == (np.arange(11) < 6)))
    assert r["COV-EMD"] is None and "EMD not computed" in result.stdout


@pytest.mark.parametrize("make, message", [
    (lambda d: (clouds(d / "g.npz", np.zeros((2, 8, 3))), d / "missing.npz"), "missing.npz: no such file"),
    (lambda d: (np.savez(d / "g.npz", xyz=np.zeros((2, 8, 3))) or d / "g.npz", d / "g.npz"), "no array `points`"),
    (lambda d: (clouds(d / "g.npz", np.zeros((2, 8, 3))), clouds(d / "r.npz", np.zeros((2, 6, 3)))), "equal counts"),
    (lambda d: (clouds(d / "g.npz", np.zeros((2, 8, 2))), d / "g.npz"), "expected (N, P, 3)"),
    (lambda d: ((d / "g.npz").write_text("not a zip") and d / "g.npz", d / "g.npz"), "not a readable .npz"),
])
def test_bad_point_clouds_give_one_line_and_status_2(make, message, tmp_path):
    gen, ref = make(tmp_path)
    result = sar3d("eval", "points", gen, ref)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


@pytest.fixture
def image_folders(tmp_path):
    """RGBA images with junk colour where transparent, the same images on white, and on red."""
    rng = np.random.default_rng(0)
    for name in ("rgba", "white", "red"):
        (tmp_path / name).mkdir()
    for i in range(6):
        rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        alpha = np.zeros((40, 48), np.uint8)
        alpha[8:32, 10:40] = 255
        for name, background in (("rgba", (0, 255, 0)), ("white", (255, 255, 255)), ("red", (255, 0, 0))):
            im = rgb.copy()
            im[alpha == 0] = background
            Image.fromarray(np.dstack([im, alpha]) if name == "rgba" else im).save(tmp_path / name / f"{i}.png")
    # a random feature network whose features keep their scale through the layers
    from sar3d_core.featnet import FeatureNet

    net = FeatureNet()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, generator=torch.Generator().manual_seed(0), nonlinearity="relu")
    net.save_pretrained(tmp_path / "net")
    return tmp_path


def test_eval_images_composites_alpha_on_white(image_folders):
    from sar3d_core.cli import _read_image_set

    d = image_folders
    rgba, white, red = (_read_image_set(d / name, name, 32)[0] for name in ("rgba", "white", "red"))
    assert rgba.shape == (6, 3, 32, 32) and (rgba - white).abs().max() < 1e-6 < (rgba - red).abs().max()
    result = sar3d("eval", "images", d / "rgba", d / "white", "--featnet", d / "net", "--json", d / "same.json")
    assert result.returncode == 0, result.stderr
    assert "6 images" in result.stdout and "feature network: sar3d-featnet-v1" in result.stdout
    r = json.loads((d / "same.json").read_text())
    assert abs(r["FID"]) < 1e-6 and r["num_images"] == [6, 6]


def test_eval_images_reads_data_set_folders_with_the_shipped_network(tmp_path):
    if not (REPO_ROOT / "data_samples" / "feature_net" / "model.safetensors").is_file():
        pytest.skip("the shipped feature network data_samples/feature_net is not there yet")
    chunks = REPO_ROOT / "data_samples" / "chunks"
    result = sar3d("eval", "images", chunks, chunks, "--size", 32)
    assert result.returncode == 0, result.stderr
    assert "3 objects x 6 target views; 32 px" in result.stdout
    assert re.search(r"FID -?0\.000 ", result.stdout) and "procedural renders" in result.stdout


def test_eval_images_bad_input(image_folders):
    for args, message in ((["nothere", image_folders / "white"], "nothere: no such folder"),
                          ([image_folders / "net", image_folders / "white"], "holds no PNG/JPEG images")):
        result = sar3d("eval", "images", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_train_featnet_takes_the_options_of_the_featnet_module():
    def options(cmd):
        out = subprocess.run([sys.executable, "-m", *cmd, "--help"], capture_output=True, text=True, check=True).stdout
        return set(re.findall(r"(--[a-z][a-z-]*)", out)) - {"--help"}

    wanted = options(["sar3d_core.featnet"])
    assert options(["sar3d_core.cli", "train", "featnet"]) == wanted
    assert options(["sar3d_core.features"]) == wanted  # the module's other name runs the same main
