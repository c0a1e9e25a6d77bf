"""FlexiCubes heads, the mesh renderer and the decoder-only fine-tune (paper Sec. 4.1, Eq. 9)."""
import json
import math

import numpy as np
import pytest
import torch
import trimesh

from sar3d_core.config import SAR3DConfig
from sar3d_core.data import MultiViewDataset
from sar3d_core.flexicubes import FlexiCubes
from sar3d_core.flexicubes_train import (FlexiCubesObjective, FlexiCubesSettings, SAR3DFlexiCubes, _collate,
                                         grid_trilinear, ray_mesh_hits, train_flexicubes)
from sar3d_core.meshing import extract_mesh
from sar3d_core.training import TrainConfig
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.world import build_dataset

RES = 10  # grid cells per side in these tests
FAST = dict(resolution=RES, rays=48, silhouette_samples=6, sdf_points=64)


def small_config() -> SAR3DConfig:
    return SAR3DConfig(
        name="test", image_size=32, latent_size=4, scales=(1, 2, 4), codebook_size=64,
        extra={"encoder": {"base_channels": 8, "max_channels": 16, "fused_channels": 16},
               "triplane": {"feature_channels": 8, "decoder_channels": (8, 8, 8), "mlp_hidden": 16, "num_samples": 8}})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_dataset(tmp_path_factory.mktemp("fc") / "data", 4, size=32, supersample=1, progress=False)


@pytest.fixture(scope="module")
def batch(data):
    ds = MultiViewDataset(data)
    return _collate([ds[0], ds[1]])


def vqvae_with_surface(batch, seed=0) -> SAR3DVQVAE:
    """A random small VQVAE whose density crosses the surface level inside the box: its density
    bias is set so that the 65 % quantile of the first object's field lies at the level."""
    torch.manual_seed(seed)
    v = SAR3DVQVAE(small_config()).eval()
    f = v.field
    with torch.no_grad():
        planes = v.decode_fhat(v.encode(batch["encoder_input"][:1], batch["input_c"][:1]).f_hat)
        g = torch.Generator().manual_seed(0)
        pts = (torch.rand(1, 4096, 3, generator=g) * 2 - 1) * f.bound
        raw = f.density_head(f.trunk_features(planes, pts))[0, :, 0] + f.density_bias
        level = math.log(2) / (2 * f.bound / v.triplane_settings.num_samples)  # meshing.surface_level
        target = math.log(math.expm1(level / f.density_scale))  # softplus^-1
        f.density_head.bias += target - torch.quantile(raw, 0.65)
    return v


@pytest.fixture(scope="module")
def vqvae(batch):
    return vqvae_with_surface(batch)


@pytest.fixture(scope="module")
def vqvae_folder(vqvae, tmp_path_factory):
    return vqvae.save_pretrained(tmp_path_factory.mktemp("fc") / "vqvae")


def planes_of(model, batch, i=0):
    with torch.no_grad():
        return model.decode_fhat(model.base.encode(batch["encoder_input"][i:i + 1], batch["input_c"][i:i + 1]).f_hat)


def test_heads_start_at_the_nerf_level_set(vqvae, batch):
    model = SAR3DFlexiCubes.from_vqvae(vqvae)
    planes = planes_of(model, batch)
    pts = (torch.rand(1, 500, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.45
    with torch.no_grad():
        s, _ = model.sdf(planes, pts)
        sigma, _ = vqvae.field.query(planes, pts)  # the copy's decoder and field are the base's at the start
    alpha = 1 - torch.exp(-sigma * (2 * 0.45 / vqvae.triplane_settings.num_samples))
    np.testing.assert_allclose(s.numpy(), (0.5 - alpha).numpy(), atol=1e-6)  # the residual starts at zero: s = level - opacity
    # the same mesh as meshing's FlexiCubes path on the NeRF field (unit weights, no deformation)
    ours = model.mesh(planes, RES)
    ref = extract_mesh(vqvae.field, planes, vqvae.triplane_settings.num_samples, RES, mesher="flexicubes")
    assert len(ours.faces) == len(ref.faces) > 0
    np.testing.assert_allclose(np.sort(ours.vertices, 0), np.sort(ref.vertices, 0), atol=1e-6)
    assert np.array_equal(np.sort(ours.vertices[ours.faces].reshape(-1, 9), 0),
                          np.sort(ref.vertices[ref.faces].reshape(-1, 9), 0))


def test_mesh_renderer_matches_trimesh_ray_casting_and_has_vertex_gradients():
    from trimesh.ray.ray_triangle import RayMeshIntersector  # numpy, independent of embree

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    g = torch.Generator().manual_seed(0)
    origins = torch.tensor([0.1, -1.5, 0.2]).expand(300, 3) + 0.05 * torch.randn(300, 3, generator=g)
    dirs = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, 0.0]) + 0.25 * torch.randn(300, 3, generator=g), dim=-1)
    verts = torch.tensor(sphere.vertices, dtype=torch.float64, requires_grad=True)
    faces = torch.tensor(sphere.faces)
    hit, t, normal, tri = ray_mesh_hits(verts, faces, origins.double(), dirs.double())
    loc, ray, ref_tri = RayMeshIntersector(sphere).intersects_location(origins.numpy(), dirs.numpy(),
                                                                       multiple_hits=False)
    assert 50 < hit.sum() < 300 and set(ray.tolist()) == set(hit.nonzero()[:, 0].tolist())
    order = np.argsort(ray)
    assert np.array_equal(ref_tri[order], tri.numpy())  # the same triangles
    ref_t = np.linalg.norm(loc[order] - origins.numpy()[ray[order]], axis=-1)
    np.testing.assert_allclose(t.detach().numpy(), ref_t, atol=1e-5)
    np.testing.assert_allclose(normal.detach().numpy(), sphere.face_normals[tri.numpy()], atol=1e-6)
    # gradients reach the hit triangles' vertices, and only them
    (grad,) = torch.autograd.grad(t.sum(), verts, retain_graph=True)
    touched = np.unique(sphere.faces[tri.numpy()])
    assert grad[touched].abs().sum() > 0
    assert grad[np.setdiff1d(np.arange(len(verts)), touched)].abs().sum() == 0
    # a second way: translating the mesh by delta moves each hit by (n . delta) / (n . d) along its ray
    delta = torch.tensor([0.0, -1e-3, 0.0], dtype=torch.float64)
    _, t2, _, tri2 = ray_mesh_hits(verts.detach() + delta, faces, origins.double(), dirs.double())
    n = normal.detach()
    same = tri2 == tri  # rays whose hit triangle did not change
    assert same.float().mean() > 0.95
    expected = (n @ delta) / (n * dirs.double()[hit]).sum(-1)
    np.testing.assert_allclose((t2 - t.detach())[same].numpy(), expected[same].numpy(), rtol=1e-6, atol=1e-12)
    (grad_same,) = torch.autograd.grad(t[same].sum(), verts)  # t is linear in a translation: exact
    np.testing.assert_allclose(float(grad_same.sum(0) @ delta), float((t2 - t.detach())[same].sum()), rtol=1e-6)


def test_grid_trilinear_reads_the_grid_in_world_coordinates():
    # trilinear interpolation is exact for an affine function: a second way to check the axis order
    x_unit, _ = FlexiCubes.construct_voxel_grid(6)
    f = lambda p: 0.3 * p[..., 0] - 2.0 * p[..., 1] + 5.0 * p[..., 2] + 0.1  # noqa: E731
    s_grid = f(x_unit * 0.9).reshape(1, 7, 7, 7)
    pts = (torch.rand(1, 200, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.45
    np.testing.assert_allclose(grid_trilinear(s_grid, pts, 0.45).numpy(), f(pts).numpy(), atol=1e-5)


def test_a_few_steps_lower_the_loss(vqvae, batch):
    model = SAR3DFlexiCubes.from_vqvae(vqvae)
    objective = FlexiCubesObjective(model, FlexiCubesSettings(**FAST))
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses, faces = [], []
    for _ in range(6):  # the same step: the same rays and SDF points, so the losses compare
        out = objective(batch, step=1)
        losses.append(float(out["loss"].detach()))
        faces.append(out["faces"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert faces[0] > 0 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], (losses, faces)


def test_fine_tune_exports_a_loadable_model_and_leaves_the_base_unchanged(vqvae, vqvae_folder, data, batch, tmp_path):
    before = vqvae.fingerprint()
    export = tmp_path / "export"
    summary = train_flexicubes(vqvae_folder, data, TrainConfig(steps=2, batch_size=2, log_every=1, out_dir=str(tmp_path / "run")),
                               export=export, settings=FlexiCubesSettings(**FAST), command="test")
    assert summary["final"]["step"] == 2
    base = SAR3DVQVAE.from_pretrained(vqvae_folder)
    assert base.fingerprint() == before  # the base checkpoint is read, never written
    meta = json.loads((export / "config.json").read_text())
    assert meta["format"] == "sar3d-flexicubes/1" and meta["vqvae_fingerprint"] == before
    assert json.loads((export / "training.json").read_text())["command"] == "test"
    model = SAR3DFlexiCubes.from_pretrained(export, base)
    assert base.fingerprint() == before
    fresh = SAR3DFlexiCubes.from_vqvae(base)
    assert not torch.equal(model.decoder.conv_out.weight, fresh.decoder.conv_out.weight)  # the copy was trained
    tokens = base.encode(batch["encoder_input"][:1], batch["input_c"][:1]).tokens
    mesh = model.mesh(tokens, RES)  # tokens of the base VQVAE, decoded by the fine-tuned copy
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    # the base's own decoder still decodes those tokens exactly as before
    assert torch.equal(base.decode_tokens(tokens), vqvae.decode_tokens(tokens))
    # another VQVAE (other weights, same config) is refused by its fingerprint
    other = vqvae_with_surface(batch, seed=1)
    with pytest.raises(ValueError, match="fingerprint"):
        SAR3DFlexiCubes.from_pretrained(export, other)


def test_resume_gives_the_same_weights(vqvae_folder, data, tmp_path):
    settings = FlexiCubesSettings(**FAST)

    def run(folder, steps, resume=False):
        cfg = TrainConfig(steps=steps, batch_size=2, log_every=1, ckpt_every=2, out_dir=str(folder))
        train_flexicubes(vqvae_folder, data, cfg, settings=settings, resume=resume)
        from safetensors.torch import load_file
        return load_file(str(folder / "checkpoint" / "model.safetensors"))

    straight = run(tmp_path / "a", 3)
    run(tmp_path / "b", 2)  # "killed" after the checkpoint of step 2
    resumed = run(tmp_path / "b", 3, resume=True)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_bad_input_is_one_clear_error(vqvae, batch, data, vqvae_folder, tmp_path):
    model = SAR3DFlexiCubes.from_vqvae(vqvae)
    planes = planes_of(model, batch)
    with pytest.raises(ValueError, match="resolution"):
        model.mesh(planes, 1)
    with pytest.raises(ValueError, match="resolution"):
        train_flexicubes(vqvae_folder, data, TrainConfig(steps=1, batch_size=2, out_dir=str(tmp_path)),
                         settings=FlexiCubesSettings(resolution=1))
    with pytest.raises(ValueError, match="NaN"):
        model.mesh(planes * float("nan"), RES)
    with pytest.raises(ValueError, match="one object at a time"):
        model.mesh(planes.expand(2, -1, -1, -1, -1), RES)
    empty = SAR3DFlexiCubes.from_vqvae(vqvae)
    with torch.no_grad():
        empty.field.density_head.bias -= 100.0  # nowhere opaque
    with pytest.raises(ValueError, match="no surface"):
        empty.mesh(planes, RES)


def test_cli_train_flexicubes_bad_data_is_one_line(tmp_path, capsys):
    from sar3d_core.cli import main

    assert main(["train", "flexicubes", "--data", str(tmp_path / "nothing"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


# ------------------------------------------------------------------ the shipped fine-tune in the pipeline
def _shipped_finetune():
    from sar3d_core.checkpoints import DATA_SAMPLES, load_shipped

    if not (DATA_SAMPLES / "flexicubes_tiny").is_dir():
        pytest.skip("flexicubes_tiny is not in data_samples")
    return load_shipped("flexicubes_tiny")


def test_shipped_finetune_renders_what_its_mesh_shows():
    """``render`` is the mesh seen through the cameras: its mask is where rays hit the mesh (trimesh's own
    ray caster) and the colour there is the field's colour at the hit point, white elsewhere."""
    from sar3d_core.ar_eval import eval_cameras
    from sar3d_core.cameras import camera_rays

    from sar3d_core.checkpoints import load_shipped

    fc = _shipped_finetune()
    assert fc.name == "flexicubes_tiny"
    gen = load_shipped("ar_text_tiny")
    with torch.no_grad():
        planes = fc.decode_tokens(gen.sample_tokens(gen.condition(text=["a green mug"]), seed=0))
    mesh = fc.mesh(planes)
    c = eval_cameras()[:2]
    out = fc.render(planes, c, 24, mesh=mesh)
    assert out["rgb"].shape == (2, 3, 24, 24) and out["mask"].shape == (2, 1, 24, 24)
    o, d = camera_rays(c, 24, 24)
    hits = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).ray.intersects_any(
        o.reshape(-1, 3).double().numpy(), d.reshape(-1, 3).double().numpy())
    assert (out["mask"].reshape(-1).bool().numpy() == hits).mean() > 0.99
    background = out["mask"].reshape(-1) == 0
    assert torch.all(out["rgb"].permute(0, 2, 3, 1).reshape(-1, 3)[background] == 1)


def test_generator_meshes_with_the_finetune_made_for_its_vqvae(tmp_path):
    from sar3d_core.checkpoints import load_shipped
    from sar3d_core.flexicubes_train import finetune_for

    fc = _shipped_finetune()
    gen = load_shipped("ar_text_tiny")
    assert finetune_for(gen.vqvae) is not None
    out = gen.generate(text=["a red chair"], mesh=True, mesher="flexicubes", seed=0)
    assert "fine-tune flexicubes_tiny" in out.mesher and out.meshes[0] is not None
    expected = fc.mesh([t[:1] for t in out.tokens])  # the same tokens through the fine-tuned decoder
    np.testing.assert_allclose(out.meshes[0].vertices, expected.vertices, atol=1e-5)
    mc = gen.generate(text=["a red chair"], mesh=True, seed=0)
    assert mc.mesher.startswith("marching cubes") and len(mc.meshes[0].faces) != len(out.meshes[0].faces)
    # a VQVAE the fine-tune was not made for: no fine-tune, unit-weight FlexiCubes on its own field
    other = SAR3DVQVAE(small_config())
    assert finetune_for(other) is None
    with pytest.raises(ValueError, match="mesher 'poisson'"):
        gen.generate(text=["a red chair"], mesh=True, mesher="poisson")
