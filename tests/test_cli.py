"""The `sar3d` command: outputs on good input, one-line errors and no files on bad input."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT


def sar3d(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sar3d_core.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("source", ["proc:5", "data_samples/meshes/mug.glb", "data_samples/chunks/000001"])
def test_render_writes_a_grid(source, tmp_path):
    out = tmp_path / "grid.png"
    result = sar3d("render", REPO_ROOT / source if not source.startswith("proc") else source,
                   "--out", out, "--views", 3, "--size", 24)
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out))
    assert image.shape[:2] == (24, 72)
    assert (image < 250).any() and (image == 255).any()  # an object on a white background


@pytest.mark.parametrize("args, message", [
    (["render", "proc:notanumber"], "proc:"),
    (["render", "missing/file.glb"], "missing/file.glb"),
    (["render", "proc:3", "--size", "0"], "size"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path):
    out = tmp_path / "grid.png"
    result = sar3d(*args, "--out", out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_data_build_then_refuse_another_size(tmp_path):
    result = sar3d("data", "build", "--count", 2, "--size", 16, "--out", tmp_path / "ds")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ds" / "index.json").is_file() and len(list((tmp_path / "ds").glob("0*"))) == 2
    result = sar3d("data", "build", "--count", 2, "--size", 32, "--out", tmp_path / "ds")
    assert result.returncode == 2 and "16 px" in result.stderr


def test_render_up_flag_turns_a_y_up_mesh_upright(tmp_path, capsys):
    """`--up y` reads an OBJ as +Y up: it renders as the same object stored +Z up."""
    import trimesh

    from sar3d_core.cli import main
    from sar3d_core.render import Y_UP_TO_Z_UP

    box = trimesh.creation.box(extents=(0.2, 0.8, 0.3))
    box.export(tmp_path / "y_up.obj")
    box.apply_transform(Y_UP_TO_Z_UP)
    box.export(tmp_path / "z_up.obj")
    grids = {}
    for name, up in (("y_up", "y"), ("z_up", "z"), ("y_up", "z")):
        out = tmp_path / f"{name}_{up}.png"
        assert main(["render", str(tmp_path / f"{name}.obj"), "--up", up, "--views", "2", "--size", "16",
                     "--out", str(out)]) == 0, capsys.readouterr().err
        grids[name, up] = np.asarray(Image.open(out)).astype(int)
    assert np.abs(grids["y_up", "y"] - grids["z_up", "z"]).max() <= 1
    assert np.abs(grids["y_up", "z"] - grids["z_up", "z"]).max() > 100  # lying on its side without the flag


def test_bench_metrics_is_the_metrics_modules_benchmark(capsys):
    """``sar3d bench metrics`` (also ``python -m sar3d_core.metrics``) times the CD metrics on random clouds."""
    from sar3d_core.cli import main

    assert main(["bench", "metrics", "--num", "3", "--points", "16"]) == 0
    out = capsys.readouterr().out
    assert "3 x 3 clouds of 16 points" in out and "15 pairs" in out  # 3 x 3 gen-ref + 2 x 3 within the sets
