"""The VQVAE training objective (paper Eq. 8), patches, the 3D training aid and `sar3d train vqvae`."""
import json

import pytest
import torch

from sar3d_core.cameras import chunk_cameras
from sar3d_core.config import SAR3DConfig
from sar3d_core.training import TrainConfig, step_generator
from sar3d_core.triplane import patch_index
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_train import (ObjectiveSettings, VQVAEObjective, export_checkpoint, occupancy_samples,
                                    procedural_object, procedural_seeds, surface_colour, surface_colour_samples,
                                    train_vqvae)
from sar3d_core.world import make_object

SAMPLES = "data_samples/chunks"


def small_config() -> SAR3DConfig:
    return SAR3DConfig(
        name="test", image_size=32, latent_size=4, scales=(1, 2, 4), codebook_size=64,
        extra={"encoder": {"base_channels": 8, "max_channels": 16, "fused_channels": 16},
               "triplane": {"feature_channels": 8, "decoder_channels": (8, 8, 8), "mlp_hidden": 16, "num_samples": 8}})


def batch_of(cfg, seeds=(3, 4)):
    from sar3d_core.world import render_sdf

    items = []
    for s in seeds:
        mv = render_sdf(make_object(s), chunk_cameras(s), cfg.image_size, cfg.image_size)
        items.append({"encoder_input": mv.select(slice(0, 6)).encoder_input(), "input_c": mv.c[:6],
                      "target_rgb": mv.rgb, "target_depth": mv.depth, "target_mask": mv.mask, "target_c": mv.c,
                      "seed": s})
    return torch.utils.data.default_collate(items)


def test_patch_index_gives_square_patches_inside_one_view():
    V, H, W, p = 12, 20, 24, 6
    idx = patch_index(3, V, H, W, p, count=2, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (3, 2 * p * p)
    for b in range(3):
        for k in range(2):
            block = idx[b, k * p * p:(k + 1) * p * p].reshape(p, p)
            view, pix = block // (H * W), block % (H * W)
            rows, cols = pix // W, pix % W
            assert (view == view[0, 0]).all()
            assert (rows - rows[0, 0] == torch.arange(p)[:, None]).all()
            assert (cols - cols[0, 0] == torch.arange(p)[None, :]).all()
            assert rows.max() < H and cols.max() < W
    with pytest.raises(ValueError, match="patch"):
        patch_index(1, 1, 8, 8, 9)


def test_render_at_index_equals_full_render_at_those_pixels():
    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg).eval()
    batch = batch_of(cfg, (3,))
    planes = model.decode_fhat(model.encode(batch["encoder_input"]).f_hat)
    full = model.render(planes, batch["target_c"], 32)
    idx = patch_index(1, 12, 32, 32, 5, 2, torch.Generator().manual_seed(1))
    part = model.render(planes, batch["target_c"], 32, index=idx)
    rgb_flat = full["rgb"].permute(0, 1, 3, 4, 2).reshape(1, -1, 3)
    torch.testing.assert_close(part["rgb"], rgb_flat[:, idx[0]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part["mask"], full["mask"].reshape(1, -1)[:, idx[0]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        model.render(planes, batch["target_c"], 32, index=idx, ray_subset=4)


def test_occupancy_samples_are_exact_and_near_the_surface():
    g = torch.Generator().manual_seed(0)
    pts, occ = occupancy_samples([5, 9], 400, 0.01, 0.45, g)
    assert pts.shape == (2, 400, 3) and occ.shape == (2, 400)
    assert pts.abs().max() <= 0.45
    for i, seed in enumerate([5, 9]):
        sdf = make_object(seed).sdf(pts[i])
        assert torch.equal(occ[i], (sdf < 0).float())
        assert sdf[:200].abs().median() < 0.02  # the near-surface half
        assert 0.2 < occ[i, :200].mean() < 0.8  # both sides of the surface


def test_surface_colour_matches_the_renders_of_a_matte_object():
    from sar3d_core.cameras import camera_rays, ray_depth_scale
    from sar3d_core.world import render_sdf

    obj = make_object(0)  # a matte car: the specular term is at most 0.05 x 0.92
    c = chunk_cameras()[[1, 7]]
    mv = render_sdf(obj, c, 32, 32)
    hit = mv.mask[:, 0] > 0.5  # (V, H, W)
    o, d = camera_rays(c, 32, 32)
    t = mv.depth[:, 0] * ray_depth_scale(c, 32, 32)  # planar depth -> distance along the ray
    p = (o + t[..., None] * d)[hit]
    target = surface_colour(obj, p)
    shown = mv.rgb.permute(0, 2, 3, 1)[hit]
    assert (target - shown).abs().max() < 0.05
    assert target.std(0).max() > 0.02  # not one flat colour: the object is shaded and patterned
    pts, rgb = surface_colour_samples([0, 3], 64, 0.0, torch.Generator().manual_seed(0))
    assert pts.shape == rgb.shape == (2, 64, 3)
    assert obj.sdf(pts[0]).abs().max() < 1e-3  # noise 0: on the surface
    torch.testing.assert_close(rgb[0], surface_colour(obj, pts[0]))


def test_colour_term_trains_only_the_colour_path():
    torch.manual_seed(0)
    cfg = small_config()
    obj = VQVAEObjective(SAR3DVQVAE(cfg), ObjectiveSettings(rays=16, patch=0, occupancy_weight=0.0,
                                                            colour_weight=1.0, colour_points=32))
    terms = obj(batch_of(cfg), 1)
    assert torch.isfinite(terms["colour"]) and 0 < float(terms["colour"].detach()) < 1
    field = obj.model.field
    terms["colour"].backward()
    assert field.color_head.weight.grad.abs().sum() > 0
    assert field.density_head.weight.grad is None or field.density_head.weight.grad.abs().sum() == 0
    assert "colour" not in VQVAEObjective(SAR3DVQVAE(cfg), ObjectiveSettings(rays=16, patch=0, colour_weight=0.0))(
        batch_of(cfg), 1)


def test_objective_terms_and_gan_isolation():
    torch.manual_seed(0)
    cfg = small_config()
    obj = VQVAEObjective(SAR3DVQVAE(cfg), ObjectiveSettings(rays=64, patch=8, gan_start=0, occupancy_points=64))
    batch = batch_of(cfg)
    terms = obj(batch, 1)
    for k in ("rgb", "depth", "mask", "vq", "d_loss", "g_adv", "occupancy", "loss"):
        assert k in terms and torch.isfinite(torch.as_tensor(terms[k])), k
    assert "lpips" not in terms or obj.lpips_status.startswith("on")
    # the generator's adversarial term never reaches the discriminator's weights ...
    terms["g_adv"].backward(retain_graph=True)
    assert all(p.grad is None for p in obj.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.model.decoder.parameters())
    obj.zero_grad(set_to_none=True)
    # ... and the discriminator's term never reaches the VQVAE
    terms["d_loss"].backward()
    assert all(p.grad is None for p in obj.model.parameters())
    assert any(p.grad is not None for p in obj.discriminator.parameters())
    clip_ids = {id(p) for p in obj.clip_parameters()}
    assert not clip_ids & {id(p) for p in obj.discriminator.parameters()}


def test_gan_term_waits_for_gan_start():
    torch.manual_seed(0)
    cfg = small_config()
    s = ObjectiveSettings(rays=32, patch=8, gan_start=5, occupancy_weight=0.0)
    obj = VQVAEObjective(SAR3DVQVAE(cfg), s)
    batch = batch_of(cfg, (3,))
    early, late = obj(batch, 1), obj(batch, 5)
    base = lambda t: t["render"] + t["vq"] + t["d_loss"]  # noqa: E731
    torch.testing.assert_close(early["loss"], base(early))
    torch.testing.assert_close(late["loss"], base(late) + s.gan_weight * late["g_adv"])


def weighted_objective(**settings):
    """An objective with every term on and weights that differ from one another and from 1."""
    torch.manual_seed(0)
    cfg = small_config()
    cfg.extra["loss"] = {"rgb": 2.0, "depth": 0.25, "mask": 0.5, "vq": 0.75}
    s = ObjectiveSettings(**{**dict(rays=32, patch=8, gan_start=3, gan_weight=0.05, occupancy_weight=0.3,
                                    occupancy_points=32, colour_weight=0.7, colour_points=16, readout_weight=0.2,
                                    object_ray_share=0.5), **settings})
    return VQVAEObjective(SAR3DVQVAE(cfg), s)


@pytest.mark.parametrize("step", [1, 3])  # before and from gan_start
def test_loss_is_the_weighted_sum_of_its_terms(step):
    obj = weighted_objective()
    s, w = obj.settings, obj.model.loss_weights
    terms = obj(batch_of(obj.model.cfg), step)
    assert list(terms) == ["rgb", "depth", "mask", "render", "readout", "vq", "usage", "d_loss", "g_adv",
                           "occupancy", "colour", "loss"]
    torch.testing.assert_close(terms["render"], 2.0 * terms["rgb"] + 0.25 * terms["depth"] + 0.5 * terms["mask"])
    gan = s.gan_weight if step >= s.gan_start else 0.0
    expected = (terms["render"] + w["vq"] * terms["vq"] + s.readout_weight * terms["readout"] + terms["d_loss"]
                + gan * terms["g_adv"] + s.occupancy_weight * terms["occupancy"] + s.colour_weight * terms["colour"])
    torch.testing.assert_close(terms["loss"], expected)
    assert obj.weights(step)["g_adv"] == gan and obj.weights(step)["vq"] == 0.75
    torch.testing.assert_close(obj.total(terms, step), terms["loss"])


def test_term_methods_reproduce_the_forward_pass():
    """The forward pass is its term methods, drawing from the step's generator in the documented order."""
    obj = weighted_objective()
    obj.train()  # stratified samples: the render draws from the generator too
    batch, step = batch_of(obj.model.cfg), 4
    terms = obj(batch, step)
    g = step_generator(step)
    m = obj.model
    q = m.encode(batch["encoder_input"], batch["input_c"])
    planes = m.decode_fhat(q.f_hat)
    out = obj.render_supervision(batch, planes, g)
    assert out["rgb"].shape == (2, 32 + 8 * 8, 3)
    parts = {**obj.render_terms(batch, out), "readout": obj.readout_term(q, batch), **obj.vq_terms(q)}
    parts.update(obj.gan_terms(*obj.patch_pair(batch, out)))
    seeds = procedural_seeds(batch)
    parts["occupancy"] = obj.occupancy_term(planes, seeds, g)
    parts["colour"] = obj.colour_term(planes, seeds, g)
    for k, v in parts.items():
        assert torch.equal(torch.as_tensor(terms[k]), torch.as_tensor(v)), k
    fake, real = obj.patch_pair(batch, out)
    assert fake.shape == real.shape == (2, 3, 8, 8)
    assert obj.patch_pair(batch, out) is not None and weighted_objective(patch=0).patch_pair(batch, out) is None


def test_a_batch_without_procedural_seeds_skips_the_3d_aids():
    def no_world(seed):
        raise AssertionError(f"the 3D aids looked up object {seed}")

    obj = weighted_objective()
    obj.object_of = no_world
    batch = batch_of(obj.model.cfg)
    for seeds in ([-1, -1], [3, -1]):  # chunks without a seed, or one of them
        batch["seed"] = torch.tensor(seeds)
        assert procedural_seeds(batch) == []
        terms = obj(batch, 1)
        assert "occupancy" not in terms and "colour" not in terms and "readout" in terms
    del batch["seed"]
    assert procedural_seeds(batch) == [] and "occupancy" not in obj(batch, 1)
    assert procedural_seeds({"seed": torch.tensor([3, 4])}) == [3, 4]


def test_the_3d_aids_read_objects_through_the_injected_lookup():
    calls = []

    def lookup(seed):
        calls.append(seed)
        return procedural_object(seed)

    a, b = weighted_objective(), weighted_objective()
    b.object_of = lookup
    batch = batch_of(a.model.cfg)
    ta, tb = a(batch, 1), b(batch, 1)
    assert calls == [3, 4, 3, 4]  # occupancy, then colour samples
    for k in ("occupancy", "colour", "loss"):
        assert torch.equal(ta[k], tb[k]), k
    assert procedural_object(3) is procedural_object(3)  # cached
    assert torch.equal(procedural_object(3).sdf(torch.zeros(1, 3)), make_object(3).sdf(torch.zeros(1, 3)))


def test_train_vqvae_runs_exports_and_resumes(tmp_path, capsys):
    cfg = small_config()
    out, export = tmp_path / "run", tmp_path / "export"
    settings = ObjectiveSettings(rays=32, patch=8, gan_start=1, occupancy_points=32)
    train_vqvae(SAMPLES, cfg, TrainConfig(steps=2, batch_size=2, log_every=1, out_dir=str(out)), settings, export=export)
    text = capsys.readouterr().out
    assert "LPIPS" in text and "3 objects" in text
    meta = json.loads((out / "objective.json").read_text())
    assert meta["objective"]["rays"] == 32
    model = SAR3DVQVAE.from_pretrained(export)
    assert model.cfg.scales == cfg.scales
    # continuing to 3 steps from the checkpoint of step 2, then exporting the run's latest checkpoint
    train_vqvae(SAMPLES, cfg, TrainConfig(steps=3, batch_size=2, log_every=1, out_dir=str(out)), settings, resume=True)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    again = SAR3DVQVAE.from_pretrained(export_checkpoint(out, tmp_path / "again"))
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_supersampled_supervision_matches_the_supersampled_image():
    from sar3d_core.vqvae_train import subpixel_index

    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg).eval()
    batch = batch_of(cfg)
    H = cfg.image_size
    # a 2x2 block of pixel (view 1, row 3, col 5) in the 2H grid: rows 6-7, cols 10-11
    sub = subpixel_index(torch.tensor([[1 * H * H + 3 * H + 5]]), H, H, 2)
    assert sub.tolist() == [[(4 * H * H) + 6 * 2 * H + 10, (4 * H * H) + 6 * 2 * H + 11,
                             (4 * H * H) + 7 * 2 * H + 10, (4 * H * H) + 7 * 2 * H + 11]]
    obj = VQVAEObjective(model, ObjectiveSettings(rays=16, patch=4, supersample=2))
    with torch.no_grad():
        planes = model.decode_fhat(model.encode(batch["encoder_input"]).f_hat)
        out = obj.render_supervision(batch, planes, step_generator(1))
        full = model.render(planes, batch["target_c"], H, supersample=2)
    B, V = batch["target_c"].shape[:2]
    for k in ("rgb", "depth", "mask"):
        img = full[k].permute(0, 1, 3, 4, 2) if k == "rgb" else full[k].squeeze(2)
        channels = img.shape[-1] if k == "rgb" else 1
        want = img.reshape(B, V * H * H, -1).gather(1, out["index"][..., None].expand(-1, -1, channels))
        assert torch.allclose(out[k].reshape(want.shape), want, atol=1e-5), k
    assert out["rgb"].shape == (B, 16 + 16, 3)
    with pytest.raises(ValueError, match="supersample"):
        VQVAEObjective(model, ObjectiveSettings(supersample=0))


def test_decoder_only_fine_tune_keeps_the_tokens_and_the_fingerprint(tmp_path):
    cfg = small_config()
    base_dir = SAR3DVQVAE(cfg).save_pretrained(tmp_path / "base")
    base = SAR3DVQVAE.from_pretrained(base_dir)
    settings = ObjectiveSettings(rays=32, patch=8, gan_start=1, occupancy_points=32, dead_code_every=1,
                                 readout_weight=1.0)
    with pytest.raises(ValueError, match="--init"):
        train_vqvae(SAMPLES, cfg, TrainConfig(steps=1, out_dir=str(tmp_path / "x")), settings, decoder_only=True)
    export = tmp_path / "ft"
    train_vqvae(SAMPLES, cfg, TrainConfig(steps=2, batch_size=2, lr=1e-2, out_dir=str(tmp_path / "run")), settings,
                export=export, init=base_dir, decoder_only=True)
    ft = SAR3DVQVAE.from_pretrained(export)
    a, b = base.state_dict(), ft.state_dict()
    token_keys = [k for k in a if k.startswith(("encoder.", "quantizer.")) and k not in SAR3DVQVAE.COUNTERS]
    assert token_keys and all(torch.equal(a[k], b[k]) for k in token_keys)  # dead-code resets were off too
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith(("decoder.", "field.")))  # it trained
    assert ft.fingerprint() == base.fingerprint() and ft.tokens_of["checkpoint"] == str(base_dir)
    meta = json.loads((tmp_path / "run" / "objective.json").read_text())
    assert meta["objective"]["readout_weight"] == 0 and meta["tokens_of"]["fingerprint"] == base.fingerprint()
    # the same tokens: encoding one object with either gives the same ids
    batch = batch_of(cfg)
    with torch.no_grad():
        ta, tb = base.eval().encode(batch["encoder_input"]).tokens, ft.eval().encode(batch["encoder_input"]).tokens
    assert all(torch.equal(x, y) for x, y in zip(ta, tb))
    # touching the codebook afterwards breaks the claim: the fingerprint becomes the weights' own
    with torch.no_grad():
        ft.quantizer.codebook.weight[0] += 1
    assert ft.fingerprint() != base.fingerprint()


def test_encoder_only_fine_tune_trains_the_encoder_alone(tmp_path):
    cfg = small_config()
    base_dir = SAR3DVQVAE(cfg).save_pretrained(tmp_path / "base")
    base = SAR3DVQVAE.from_pretrained(base_dir)
    settings = ObjectiveSettings(rays=32, patch=8, gan_start=1, occupancy_points=32, dead_code_every=1)
    with pytest.raises(ValueError, match="--init"):
        train_vqvae(SAMPLES, cfg, TrainConfig(steps=1, out_dir=str(tmp_path / "x")), settings, encoder_only=True)
    with pytest.raises(ValueError, match="not both"):
        train_vqvae(SAMPLES, cfg, TrainConfig(steps=1, out_dir=str(tmp_path / "x")), settings, init=base_dir,
                    encoder_only=True, decoder_only=True)
    export = tmp_path / "ft"
    train_vqvae(SAMPLES, cfg, TrainConfig(steps=2, batch_size=2, lr=1e-2, out_dir=str(tmp_path / "run")), settings,
                export=export, init=base_dir, encoder_only=True)
    a, b = base.state_dict(), SAR3DVQVAE.from_pretrained(export).state_dict()
    reader = [k for k in a if k.startswith(("quantizer.", "decoder.", "field.")) and k not in SAR3DVQVAE.COUNTERS]
    assert reader and all(torch.equal(a[k], b[k]) for k in reader)  # dead-code resets were off too
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))  # the encoder trained
    meta = json.loads((tmp_path / "run" / "objective.json").read_text())
    assert meta["objective"]["dead_code_every"] == 0


def test_cli_train_vqvae_bad_data_is_one_line(tmp_path, capsys):
    from sar3d_core.cli import main

    assert main(["train", "vqvae", "--data", str(tmp_path / "nothing"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a data set folder" in err[0]


@pytest.mark.parametrize("args, message", [(["--decoder-only"], "pass --init"),
                                           (["--supersample", "0"], "positive integer"),
                                           (["--token-draws", "draws.npz"], "add --decoder-only"),
                                           (["--token-draw-share", "0"], "in (0, 1]")])
def test_cli_train_vqvae_bad_fine_tune_options_are_one_line(tmp_path, capsys, args, message):
    from sar3d_core.cli import main

    out = tmp_path / "run"
    assert main(["train", "vqvae", "--data", SAMPLES, "--steps", "1", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()  # nothing half-written


DDP_VQVAE_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from safetensors.torch import save_file
from test_vqvae_train import small_config
import sar3d_core.vqvae_train as vt
from sar3d_core.training import TrainConfig, world_info
torch.manual_seed(0)
captured = {{}}
original = vt.VQVAEObjective.__init__
def keep(self, model, *a, **k):
    original(self, model, *a, **k)
    model.quantizer.dead_after = 0  # every code counts as dead: each step resets the whole codebook
    captured["model"] = model
vt.VQVAEObjective.__init__ = keep
settings = vt.ObjectiveSettings(rays=32, patch=8, gan_start=1, occupancy_points=32, dead_code_every=1)
model_cfg = small_config()
model_cfg.scales = (1, 2, 3, 4)  # with 4 scales every shared phi conv is used (DDP wants gradients for all)
vt.train_vqvae({data!r}, model_cfg, TrainConfig(steps=3, batch_size=1, log_every=1, out_dir={out!r}), settings)
q = captured["model"].quantizer  # reset at every step, from a different batch on each rank
rank = world_info()[0]
save_file({{"codebook": q.codebook.weight.detach().contiguous()}}, {out!r} + f"/codebook{{rank}}.safetensors")
"""


def test_ddp_dead_code_resets_keep_one_codebook(tmp_path):
    """Each rank holds its own batch; after resets at every step the ranks must still hold one codebook."""
    from pathlib import Path

    from conftest import run_torchrun
    from safetensors.torch import load_file

    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "ddp_vqvae.py"
    script.write_text(DDP_VQVAE_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out),
                                              data=str(Path(SAMPLES).resolve())))
    result = run_torchrun(script)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = (load_file(out / f"codebook{r}.safetensors")["codebook"] for r in (0, 1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("extra, message", [("{triplane", "not valid JSON"), ("[1]", "must be a JSON dict"),
                                            ('{"triplane": {"colour_chanels": 8}}', "unknown keys")])
def test_cli_train_vqvae_bad_extra_is_one_line(tmp_path, capsys, extra, message):
    from sar3d_core.cli import main

    assert main(["train", "vqvae", "--data", str(SAMPLES), "--steps", "1", "--out", str(tmp_path / "run"),
                 "--extra", extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written
