"""The multi-view encoder and the 3D VQVAE (paper Sec. 4.1, Eq. 7-8, Fig. 2)."""
import json

import pytest
import torch

from sar3d_core.cameras import chunk_cameras
from sar3d_core.config import SAR3DConfig
from sar3d_core.encoder import MultiViewEncoder, num_downsamplings
from sar3d_core.vqvae import SAR3DVQVAE, loss_weights
from sar3d_core.world import render_sdf


def small_config(**extra) -> SAR3DConfig:
    """32 px views, a 3 x 8 x 4 x 4 latent, scales 1-2-4, 64 codes; small widths."""
    return SAR3DConfig(
        name="test", image_size=32, latent_size=4, scales=(1, 2, 4), codebook_size=64,
        extra={"encoder": {"base_channels": 16, "max_channels": 32, "fused_channels": 32},
               "triplane": {"feature_channels": 8, "decoder_channels": (16, 16, 16), "mlp_hidden": 32,
                            "num_samples": 12},
               **extra})


class Sphere:
    """A duck-typed object for ``render_sdf``: a sphere coloured by position."""

    def sdf(self, p):
        return p.norm(dim=-1) - 0.3

    def color(self, p):
        return (p / 0.9 + 0.5).clamp(0, 1)


@pytest.fixture(scope="module")
def sphere_batch():
    """One object, batched as a DataLoader would batch ``MultiViewDataset`` items."""
    mv = render_sdf(Sphere(), chunk_cameras(0), 32, 32)
    src, tgt = mv.select(slice(0, 6)), mv.select(slice(6, 12))
    item = {"encoder_input": src.encoder_input(), "input_c": src.c, "target_rgb": tgt.rgb,
            "target_depth": tgt.depth, "target_mask": tgt.mask, "target_c": tgt.c}
    return {k: v[None] for k, v in item.items()}


def test_num_downsamplings():
    assert num_downsamplings(64, 8) == 3 and num_downsamplings(256, 16) == 4 and num_downsamplings(8, 8) == 0
    for bad in ((48, 8), (64, 12), (8, 16)):
        with pytest.raises(ValueError, match="power of two"):
            num_downsamplings(*bad)


def test_encoder_shapes_and_errors():
    cfg = small_config()
    enc = MultiViewEncoder.from_config(cfg)
    assert enc(torch.randn(2, 6, 10, 32, 32)).shape == (2, 3, 8, 4, 4)
    for shape, match in (((1, 5, 10, 32, 32), "5 views"), ((1, 6, 9, 32, 32), "9 channels"),
                         ((1, 6, 10, 64, 64), "64x64 px"), ((6, 10, 32, 32), r"x\[None\]")):
        with pytest.raises(ValueError, match=match):
            enc(torch.randn(*shape))
    with pytest.raises(ValueError, match="power of two"):
        MultiViewEncoder.from_config(SAR3DConfig(image_size=48, latent_size=8))
    with pytest.raises(ValueError, match="unknown keys"):
        MultiViewEncoder.from_config(small_config(encoder={"widths": 3}))


def test_tiny_and_paper_encoder_shapes():
    tiny = SAR3DConfig.tiny()
    with torch.no_grad():
        cams = chunk_cameras(0)[None, :6]
        assert MultiViewEncoder.from_config(tiny)(torch.randn(1, 6, 10, 64, 64), cams).shape == (1, 3, 8, 8, 8)
        paper = SAR3DConfig.paper()
        enc = MultiViewEncoder.from_config(paper)  # 256 px -> 16 x 16, four stages
        assert 1e6 < sum(p.numel() for p in enc.parameters()) < 2e7
        assert enc(torch.randn(1, 6, 10, 256, 256)).shape == (1, 3, 8, 16, 16)


def test_vqvae_forward_shapes(sphere_batch):
    cfg = small_config()
    model = SAR3DVQVAE(cfg).eval()
    out = model(sphere_batch)
    assert out["rgb"].shape == (1, 6, 3, 32, 32) and out["depth"].shape == (1, 6, 1, 32, 32)
    assert out["mask"].shape == (1, 6, 1, 32, 32) and out["f_hat"].shape == (1, 3, 8, 4, 4)
    assert [tuple(t.shape) for t in out["tokens"]] == [(1, 3, 1, 1), (1, 3, 2, 2), (1, 3, 4, 4)]
    # decode_tokens is Alg. 2 + D: the same planes as the forward pass
    assert torch.allclose(model.decode_tokens(out["tokens"]), out["planes"], atol=1e-5)
    assert model.decode_tokens(out["tokens"][:2], num_scales=2).shape == out["planes"].shape
    sub = model(sphere_batch, ray_subset=100, generator=torch.Generator().manual_seed(0))
    assert sub["rgb"].shape == (1, 100, 3) and sub["depth"].shape == (1, 100) and sub["index"].shape == (1, 100)
    losses = model.loss(sphere_batch, sub)
    assert set(losses) == {"rgb", "depth", "mask", "render", "vq", "total"}
    # the subset targets are the pixels the index names
    idx = sub["index"][0, 5]
    v, r, c = sub["view"][0, 5], sub["row"][0, 5], sub["col"][0, 5]
    assert int(idx) == int(v) * 1024 + int(r) * 32 + int(c)
    target = model.targets_for(sphere_batch, sub)
    assert torch.equal(target["rgb"][0, 5], sphere_batch["target_rgb"][0, v, :, r, c])
    assert target["depth"][0, 5] == sphere_batch["target_depth"][0, v, 0, r, c]
    # full-image loss matches a hand computation of Eq. 8 (MAE part) with the default weights
    full = model.loss(sphere_batch, out)
    w = loss_weights(cfg)
    by_hand = sum(w[k] * (out[k] - sphere_batch[f"target_{k}"]).abs().mean() for k in ("rgb", "depth", "mask"))
    assert torch.allclose(full["total"], by_hand + w["vq"] * out["vq_loss"])


def test_loss_weights_from_config():
    assert loss_weights(small_config(loss={"depth": 2})) == {"rgb": 1.0, "depth": 2.0, "mask": 1.0, "vq": 1.0}
    with pytest.raises(ValueError, match="unknown keys"):
        loss_weights(small_config(loss={"lpips": 1}))


def test_rgb_loss_reaches_first_encoder_conv(sphere_batch):
    torch.manual_seed(0)
    model = SAR3DVQVAE(small_config())
    out = model(sphere_batch, ray_subset=256, generator=torch.Generator().manual_seed(0))
    model.loss(sphere_batch, out)["rgb"].backward()  # rgb only: the path through the straight-through f_hat
    grad = model.encoder.trunk[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_overfit_one_object(sphere_batch):
    torch.manual_seed(0)
    model = SAR3DVQVAE(small_config())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(30):
        losses = model.loss(sphere_batch, model(sphere_batch, ray_subset=256, generator=g))
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        history.append(losses["render"].item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.6 * first, history


def test_save_load_round_trip(tmp_path, sphere_batch):
    torch.manual_seed(0)
    cfg = small_config()
    model = SAR3DVQVAE(cfg).eval()
    model.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["format"] == "sar3d-vqvae/1" and meta["config"]["image_size"] == 32
    loaded = SAR3DVQVAE.from_pretrained(tmp_path / "ckpt", config=cfg).eval()
    with torch.no_grad():
        a, b = model(sphere_batch), loaded(sphere_batch)
    assert all(torch.equal(x, y) for x, y in zip(a["tokens"], b["tokens"]))
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["depth"], b["depth"])


def test_checkpoint_errors(tmp_path):
    cfg = small_config()
    folder = SAR3DVQVAE(cfg).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SAR3DVQVAE.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="config mismatch"):
        SAR3DVQVAE.from_pretrained(folder, config=small_config(loss={"rgb": 2.0}))
    # weights of another config: the codebook does not fit
    other = SAR3DVQVAE(SAR3DConfig(name="test", image_size=32, latent_size=4, scales=(1, 2, 4), codebook_size=32,
                                   extra=cfg.extra)).save_pretrained(tmp_path / "other")
    (other / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="do not fit"):
        SAR3DVQVAE.from_pretrained(other)
    # weights of a split colour field under a config without it: the error names the setting
    split_extra = {**cfg.extra, "triplane": {**cfg.extra["triplane"], "colour_channels": 4}}
    split = SAR3DVQVAE(SAR3DConfig(name="test", image_size=32, latent_size=4, scales=(1, 2, 4), codebook_size=64,
                                   extra=split_extra)).save_pretrained(tmp_path / "split")
    (split / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="colour_channels"):
        SAR3DVQVAE.from_pretrained(split)
    # a truncated weights file
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        SAR3DVQVAE.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        SAR3DVQVAE.from_pretrained(folder)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"format": "other", "config": {}}))
    with pytest.raises(ValueError, match="format"):
        SAR3DVQVAE.from_pretrained(tmp_path / "bad")


def colour_stream_config() -> SAR3DConfig:
    """``small_config`` with the colour stream: 1 of the 8 latent channels, 4 of the 8 features."""
    cfg = small_config()
    cfg.extra["triplane"].update(colour_channels=4, colour_latent_channels=1)
    cfg.extra["encoder"].update(colour_latent_channels=1, colour_widths=(8, 16, 16))
    return cfg


def test_colour_stream_is_its_own_encoder_decoder_and_field(sphere_batch):
    torch.manual_seed(0)
    model = SAR3DVQVAE(colour_stream_config())
    x = sphere_batch["encoder_input"]
    f = model.encoder(x)
    assert f.shape == (1, 3, 8, 4, 4)
    assert torch.equal(f[:, :, 7:], model.encoder.colour(x))  # the last latent channel: the colour encoder's
    # a geometry loss (depth, mask) sends no gradient into the colour encoder ...
    out = model(sphere_batch, ray_subset=64, generator=torch.Generator().manual_seed(0))
    (out["depth"].sum() + out["mask"].sum()).backward()
    colour_grads = [p.grad for n, p in model.named_parameters() if n.startswith(("encoder.colour.", "decoder.colour.",
                                                                                  "field.color"))]
    assert colour_grads and all(g is None or g.abs().max() == 0 for g in colour_grads)
    # ... and the colour encoder's latents change no density
    planes = model.decode_fhat(f.detach())
    bumped = f.detach().clone()
    bumped[:, :, 7:] += 1.0
    pts = torch.rand(1, 50, 3) * 0.8 - 0.4
    s0, c0 = model.field.query(planes, pts)
    s1, c1 = model.field.query(model.decode_fhat(bumped), pts)
    assert torch.equal(s0, s1) and not torch.allclose(c0, c1)


def test_colour_stream_settings_must_agree(tmp_path):
    cfg = colour_stream_config()
    cfg.extra["triplane"]["colour_latent_channels"] = 2
    with pytest.raises(ValueError, match="must equal the triplane's"):
        SAR3DVQVAE(cfg)
    bad = small_config()
    bad.extra["encoder"].update(colour_latent_channels=8)  # all 8 latent channels: no geometry left
    with pytest.raises(ValueError, match="colour_latent_channels=8"):
        MultiViewEncoder.from_config(bad)
    # colour-stream weights under a config without it: the error names the setting
    folder = SAR3DVQVAE(colour_stream_config()).save_pretrained(tmp_path / "two")
    plain = SAR3DVQVAE(small_config()).save_pretrained(tmp_path / "plain")
    (folder / "config.json").write_text((plain / "config.json").read_text())
    with pytest.raises(ValueError, match="colour_latent_channels"):
        SAR3DVQVAE.from_pretrained(folder)
