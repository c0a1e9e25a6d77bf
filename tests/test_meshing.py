"""Marching-cubes and FlexiCubes surfaces of the triplane field (paper Sec. 4.1, Eq. 9)."""
import math

import numpy as np
import pytest
import torch

from sar3d_core.meshing import MESHERS, extract_mesh, surface_level
from sar3d_core.metrics import chamfer_distance, sample_mesh_surface

PLANES = torch.zeros(1, 3, 1, 2, 2)  # the duck-typed fields below ignore the planes


class SphereField:
    """A duck-typed field: density far above the surface level inside a sphere, 0 outside."""
    bound = 0.45

    def __init__(self, radius=0.3, density=200.0):
        self.radius, self.density = radius, density

    def query(self, planes, pts):
        inside = (pts.norm(dim=-1) < self.radius).float()
        rgb = torch.zeros(*pts.shape[:-1], 3)
        rgb[..., 0] = 1.0
        return inside * self.density, rgb


class SmoothSphereField(SphereField):
    """Opacity per bin ``alpha = 1/2 + (r - |p|) / w`` (clamped), i.e. linear across the surface
    ``|p| = r``: both meshers interpolate it almost exactly, so their vertices lie on the sphere."""

    def __init__(self, num_samples, radius=0.3, width=0.2):
        super().__init__(radius)
        self.delta, self.width = 2 * self.bound / num_samples, width

    def query(self, planes, pts):
        alpha = (0.5 + (self.radius - pts.norm(dim=-1)) / self.width).clamp(0.0, 0.999)
        return -torch.log1p(-alpha) / self.delta, super().query(planes, pts)[1]


class ShellField(SphereField):
    """Opaque only within 0.05 of the box's faces."""

    def query(self, planes, pts):
        sigma, rgb = super().query(planes, pts)
        return (pts.abs().amax(-1) > self.bound - 0.05).float() * self.density, rgb


class NaNField(SphereField):
    def query(self, planes, pts):
        sigma, rgb = super().query(planes, pts)
        sigma[..., ::97] = float("nan")
        return sigma, rgb


def sphere_points(n, r):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(n, 3, generator=g)
    return r * v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("mesher", MESHERS)
def test_sphere_surface_is_found_with_outward_normals_and_colours(mesher):
    field, res = SphereField(), 48
    mesh = extract_mesh(field, PLANES, num_samples=24, resolution=res, mesher=mesher)
    cell = 2 * field.bound / res  # 0.019
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2
    assert mesh.volume > 0  # outward-facing triangles
    assert abs(mesh.volume - 4 / 3 * math.pi * 0.3 ** 3) / (4 / 3 * math.pi * 0.3 ** 3) < 0.1
    # a step in density: each crossing is halfway between an inside and an outside sample
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radius - 0.3).max() < 0.5 * cell
    cd = chamfer_distance(sample_mesh_surface(mesh, 2000, seed=0).float(), sphere_points(2000, 0.3))
    assert cd < 1e-3
    assert (mesh.visual.vertex_colors[:, 0] == 255).all() and (mesh.visual.vertex_colors[:, 1] == 0).all()
    assert len(np.unique(mesh.faces)) == len(mesh.vertices)  # every vertex is used


@pytest.mark.parametrize("mesher", MESHERS)
def test_both_meshers_put_vertices_on_the_half_opacity_surface(mesher):
    field, res = SmoothSphereField(num_samples=24), 32
    mesh = extract_mesh(field, PLANES, num_samples=24, resolution=res, mesher=mesher)
    assert mesh.is_watertight and mesh.volume > 0
    # marching cubes: on cell edges (error ~ cell^2 / 8r); FlexiCubes: the mean of a cell's crossings,
    # slightly inside a convex surface (error ~ cell^2 / 2r): both far below a cell (0.028)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radius - 0.3).max() < 0.1 * 2 * field.bound / res


def test_flexicubes_mesh_is_dual_one_vertex_per_surface_cell_and_no_duplicate_faces():
    field, res = SphereField(), 24
    fc = extract_mesh(field, PLANES, num_samples=24, resolution=res, mesher="flexicubes")
    mc = extract_mesh(field, PLANES, num_samples=24, resolution=res, mesher="marching-cubes")
    faces = np.sort(fc.faces, axis=1)
    assert len(np.unique(faces, axis=0)) == len(faces)
    assert (faces[:, 0] != faces[:, 1]).all() and (faces[:, 1] != faces[:, 2]).all()  # no degenerate triangles
    # a sphere's surface cells each hold one piece: one dual vertex per cell, vertices strictly inside it
    cell = 2 * field.bound / res
    ijk = np.floor((fc.vertices + field.bound) / cell).astype(int)
    assert len(np.unique(ijk, axis=0)) == len(fc.vertices)
    # a closed genus-0 quad mesh: V - E + F = 2 with E = 2F (quads) -> 2 triangles per quad, F_tri = 2 (V - 2)
    assert len(fc.faces) == 2 * (len(fc.vertices) - 2)
    # same surface as marching cubes (which samples cell centres, FlexiCubes cell corners)
    cd = chamfer_distance(sample_mesh_surface(fc, 3000, seed=0).float(), sample_mesh_surface(mc, 3000, seed=0).float())
    assert cd < 2 * cell ** 2


@pytest.mark.parametrize("mesher", MESHERS)
def test_bad_inputs_raise_one_clear_value_error(mesher):
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(SphereField(density=0.0), PLANES, num_samples=24, resolution=16, mesher=mesher)
    with pytest.raises(ValueError, match="no surface"):  # opaque everywhere: no outside
        extract_mesh(SphereField(radius=10.0), PLANES, num_samples=24, resolution=8, mesher=mesher)
    with pytest.raises(ValueError, match="one object"):
        extract_mesh(SphereField(), torch.zeros(2, 3, 1, 2, 2), num_samples=24, mesher=mesher)
    for res in (1, 0, -3, 2.5):
        with pytest.raises(ValueError, match="at least 2"):
            extract_mesh(SphereField(), PLANES, num_samples=24, resolution=res, mesher=mesher)
    with pytest.raises(ValueError, match="NaN"):
        extract_mesh(NaNField(), PLANES, num_samples=24, resolution=12, mesher=mesher)


def test_unknown_mesher_and_a_surface_only_on_the_box_faces_raise():
    with pytest.raises(ValueError, match="not one of marching-cubes, flexicubes"):
        extract_mesh(SphereField(), PLANES, num_samples=24, resolution=8, mesher="dmc")
    # 2 cells: every corner but the centre lies on the box's faces, which count as empty
    with pytest.raises(ValueError, match="only on the box's faces"):
        extract_mesh(ShellField(), PLANES, num_samples=24, resolution=2, mesher="flexicubes")


def test_surface_level_is_half_opacity_of_one_bin():
    level, delta = surface_level(24, 0.45), 0.9 / 24
    assert abs((1 - math.exp(-level * delta)) - 0.5) < 1e-12


def test_cli_decode_writes_a_flexicubes_mesh(tmp_path, capsys):
    from sar3d_core import cli
    from sar3d_core.render import load_mesh

    tokens, glb = tmp_path / "tokens.npz", tmp_path / "fc.glb"
    assert cli.main(["encode", "proc:3", "--out", str(tokens)]) == 0
    assert cli.main(["decode", str(tokens), "--mesh", str(glb), "--mesher", "flexicubes",
                     "--mesh-resolution", "24"]) == 0
    assert "flexicubes (decoder fine-tune flexicubes_tiny)" in capsys.readouterr().out  # made for the default VQVAE
    mesh = load_mesh(glb)  # GLB is stored +Y up and read back +Z up
    assert mesh.is_watertight and len(mesh.faces) > 100
    assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    assert np.abs(mesh.vertices).max() <= 0.45 + 1e-6  # inside the object box
    # bad mesh options fail with one line, before any work
    for argv, message in (([], "give --out PNG"), (["--mesh", str(tmp_path / "m.png")], "write a mesh file"),
                          (["--out", str(tmp_path / "v.png"), "--mesher", "flexicubes"], "needs --mesh")):
        assert cli.main(["decode", str(tokens), *argv]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["decode", str(tokens), "--mesh", str(glb), "--mesher", "dmc"]) == 2
    assert "invalid choice" in capsys.readouterr().err



@pytest.mark.parametrize("mesher", MESHERS)
def test_cli_generate_meshes_the_decoded_planes_with_the_chosen_mesher(mesher, tmp_path, capsys, monkeypatch):
    """The command's wiring, with a stand-in generator (no transformer or CLIP to load): the mesher,
    its grid and the FlexiCubes folder go to ``Pipeline.generate``, which meshes and times it."""
    from types import SimpleNamespace

    from sar3d_core import cli, generate
    from sar3d_core.render import load_mesh

    calls = {}

    class StandIn:
        encoder = SimpleNamespace(name="stand-in")
        vqvae = SimpleNamespace(field=SphereField(), triplane_settings=SimpleNamespace(num_samples=24))

        def generate(self, **kw):
            calls.update(kw)
            meshes = [extract_mesh(self.vqvae.field, PLANES, 24, kw["mesh_resolution"], kw["mesher"])]
            return generate.Generation([], PLANES, None, meshes, {"sample": 0.01, "mesh": 0.02}, "stand-in",
                                       kw["mesher"])

    monkeypatch.setattr(generate.Pipeline, "from_pretrained", classmethod(lambda cls, *a, **k: StandIn()))
    glb = tmp_path / "m.glb"
    assert cli.main(["generate", "--text", "a ball", "--out", str(glb), "--mesher", mesher,
                     "--mesh-resolution", "24"]) == 0
    assert calls["mesh"] and calls["mesher"] == mesher and calls["mesh_resolution"] == 24
    assert calls["flexicubes"] is None  # the default: the fine-tune made for the generator's VQVAE, if any
    out = capsys.readouterr().out
    assert f"({mesher})" in out and "mesh" in out.split("time:")[1]
    mesh = load_mesh(glb)
    assert mesh.is_watertight and abs(np.linalg.norm(mesh.vertices, axis=1) - 0.3).max() < 0.5 * 0.9 / 24
