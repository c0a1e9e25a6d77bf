"""The registry of shipped checkpoints: every name loads with its class, and bad names say so."""
import pytest
import torch

from sar3d_core.checkpoints import DATA_SAMPLES, SHIPPED, load_shipped, shipped_path


@pytest.mark.parametrize("name", sorted(n for n, s in SHIPPED.items() if s.kind in ("vqvae", "feature_net",
                                                                                     "condition_encoder")))
def test_every_shipped_model_loads_with_its_class(name):
    if not (DATA_SAMPLES / name).is_dir():
        pytest.skip(f"{name} is not in data_samples")
    model = load_shipped(name)
    assert shipped_path(name) == DATA_SAMPLES / name
    kind = SHIPPED[name].kind
    if kind == "vqvae":
        from sar3d_core.vqvae import SAR3DVQVAE

        assert isinstance(model, SAR3DVQVAE) and not model.training
    elif kind == "feature_net":
        from sar3d_core.featnet import FeatureNet

        assert isinstance(model, FeatureNet)
    else:
        assert "tiny-clip" in model.text_name and "tiny-clip" in model.image_name


def test_a_shipped_generator_brings_its_own_vqvae():
    gen = load_shipped("ar_text_tiny")
    assert gen.vqvae.fingerprint() == gen.meta["vqvae_fingerprint"]
    with torch.no_grad():
        tokens = gen.sample_tokens(gen.condition(text=["a red chair"]), seed=0)
    assert len(tokens) == len(gen.vqvae.cfg.scales)


def test_unknown_or_missing_names_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        load_shipped("vqvae_huge")
    monkeypatch.setattr("sar3d_core.checkpoints.DATA_SAMPLES", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        shipped_path("vqvae_tiny_lift")
