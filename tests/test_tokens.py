"""Token files, `sar3d encode`, `sar3d decode` and `sar3d data tokenize` (paper Sec. 4.1-4.2)."""
import numpy as np
import pytest
import torch

from sar3d_core.cli import main
from sar3d_core.config import SAR3DConfig, total_tokens
from sar3d_core.quantizer import tokens_to_sequence
from sar3d_core.tokens import load_tokens, save_tokens, tokens_of
from sar3d_core.vqvae import SAR3DVQVAE

CHUNK = "data_samples/chunks/000001"


def small_config(scales=(1, 2, 4)) -> SAR3DConfig:
    return SAR3DConfig(
        name="test", image_size=32, latent_size=4, scales=scales, codebook_size=64,
        extra={"encoder": {"base_channels": 8, "max_channels": 16, "fused_channels": 16},
               "triplane": {"feature_channels": 8, "decoder_channels": (8, 8, 8), "mlp_hidden": 16, "num_samples": 8}})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "vqvae"
    SAR3DVQVAE(small_config()).save_pretrained(folder)
    return folder


def test_round_trip_and_per_scale_maps(tmp_path):
    cfg = small_config()
    seq = torch.randint(0, 64, (2, total_tokens(cfg.scales)))
    path = save_tokens(tmp_path / "t.npz", seq, cfg, ["a", "b"], ["x", "y"], [3, -1], "ckpt")
    loaded = load_tokens(path, cfg)
    assert torch.equal(loaded["sequence"], seq) and loaded["seed"] == [3, -1] and loaded["caption"] == ["x", "y"]
    maps = tokens_of(loaded, 1)
    assert [tuple(m.shape) for m in maps] == [(1, 3, 1, 1), (1, 3, 2, 2), (1, 3, 4, 4)]
    assert torch.equal(tokens_to_sequence(maps), seq[1:])


def test_other_schedule_and_bad_files_are_refused(tmp_path):
    cfg = small_config()
    path = save_tokens(tmp_path / "t.npz", torch.zeros(1, total_tokens(cfg.scales), dtype=torch.long), cfg,
                       ["a"], [""], [-1])
    with pytest.raises(ValueError, match="scales"):
        load_tokens(path, small_config((1, 2, 3, 4)))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="readable"):
        load_tokens(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", sequence=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="format"):
        load_tokens(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_tokens(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="expected"):
        save_tokens(tmp_path / "x.npz", torch.zeros(1, 5), cfg, ["a"], [""], [-1])


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable .npz token file"), ("npy", "one .npy array"), ("empty", "not a readable"),
    ("drop seed", "lacks the array"), ("float sequence", "`sequence` holds float"),
    ("scalar source", "`source` has shape"), ("extra seed", "1 sequences but 1 sources"),
    ("schedule of words", "`schedule` holds <U"),
])
def test_damaged_token_files_give_one_clear_line(damage, message, tmp_path):
    cfg = small_config()
    path = save_tokens(tmp_path / "t.npz", torch.zeros(1, total_tokens(cfg.scales), dtype=torch.long), cfg,
                       ["a"], [""], [-1])
    arrays = dict(np.load(path))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "npy":
        np.save(tmp_path / "a.npy", arrays["sequence"])
        path.write_bytes((tmp_path / "a.npy").read_bytes())
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        key, value = {"drop seed": ("seed", None), "float sequence": ("sequence", arrays["sequence"] + 0.5),
                      "scalar source": ("source", np.array("a")), "extra seed": ("seed", np.array([1, 2])),
                      "schedule of words": ("schedule", np.array(["a", "b", "c"]))}[damage]
        arrays[key] = value
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ValueError, match=message) as err:
        load_tokens(path, cfg)
    assert "t.npz" in str(err.value) and "\n" not in str(err.value)


def test_cli_encode_decode_and_tokenize(tmp_path, checkpoint, capsys):
    tok = tmp_path / "one.npz"
    assert main(["encode", CHUNK, "--out", str(tok), "--checkpoint", str(checkpoint)]) == 0
    loaded = load_tokens(tok, small_config())
    model = SAR3DVQVAE.from_pretrained(checkpoint).eval()
    from sar3d_core.data import load_views
    from sar3d_core.tokens import encode_multiview

    expected = tokens_to_sequence(encode_multiview(model, load_views(CHUNK, num_views=6, size=32)))
    assert torch.equal(loaded["sequence"], expected)
    png = tmp_path / "grid.png"
    assert main(["decode", str(tok), "--out", str(png), "--checkpoint", str(checkpoint), "--scales", "2",
                 "--views", "3"]) == 0
    from PIL import Image

    assert Image.open(png).size == (3 * 32, 32)
    all_tok = tmp_path / "all.npz"
    assert main(["data", "tokenize", "data_samples/chunks", "--out", str(all_tok), "--checkpoint", str(checkpoint)]) == 0
    data = load_tokens(all_tok, small_config())
    assert data["sequence"].shape == (3, total_tokens((1, 2, 4)))
    assert torch.equal(data["sequence"][0], expected[0])  # same object, same tokens, batched or not
    capsys.readouterr()
    assert main(["decode", str(tok), "--out", str(png), "--checkpoint", str(checkpoint), "--scales", "9"]) == 2
    assert "--scales" in capsys.readouterr().err


def test_cli_decode_refuses_tokens_of_another_schedule(tmp_path, checkpoint, capsys):
    other = small_config((1, 3, 4))
    path = save_tokens(tmp_path / "t.npz", torch.zeros(1, total_tokens(other.scales), dtype=torch.long), other,
                       ["a"], [""], [-1])
    assert main(["decode", str(path), "--out", str(tmp_path / "g.png"), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scales (1, 3, 4)" in err[0]


def test_tokens_of_another_checkpoint_of_the_same_schedule_are_refused(tmp_path, checkpoint, capsys):
    """Same config, other weights: the schedule check cannot tell, the fingerprint does."""
    model = SAR3DVQVAE.from_pretrained(checkpoint)
    assert model.fingerprint() == SAR3DVQVAE.from_pretrained(checkpoint).fingerprint()
    torch.manual_seed(1)
    other = SAR3DVQVAE(small_config())
    assert other.fingerprint() != model.fingerprint()
    tok = tmp_path / "one.npz"
    assert main(["encode", CHUNK, "--out", str(tok), "--checkpoint", str(checkpoint)]) == 0
    assert load_tokens(tok)["vqvae_fingerprint"] == model.fingerprint()
    assert load_tokens(tok, small_config(), model.fingerprint())["sequence"].shape[0] == 1
    with pytest.raises(ValueError, match="re-tokenize"):
        load_tokens(tok, small_config(), other.fingerprint())
    other.save_pretrained(tmp_path / "other")
    capsys.readouterr()
    assert main(["decode", str(tok), "--out", str(tmp_path / "g.png"), "--checkpoint", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fingerprint" in err[0] and not (tmp_path / "g.png").exists()
    # files written before fingerprints existed still load (nothing to compare against)
    old = save_tokens(tmp_path / "old.npz", load_tokens(tok)["sequence"], small_config(), ["a"], [""], [-1])
    assert load_tokens(old, small_config(), other.fingerprint())["vqvae_fingerprint"] == ""
