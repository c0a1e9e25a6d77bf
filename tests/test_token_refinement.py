"""`SAR3DVQVAE.encode_refined`: tokens refined on the input views (our addition to Sec. 4.1)."""
import pytest
import torch

from sar3d_core.data import MultiViewDataset
from sar3d_core.metrics import psnr
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.vqvae_eval import EVAL_VIEWS, evaluate_vqvae
from test_vqvae_train import small_config

SHIPPED, SAMPLES = "data_samples/vqvae_tiny_lift", "data_samples/chunks"


@pytest.fixture(scope="module")
def shipped_and_item():
    model = SAR3DVQVAE.from_pretrained(SHIPPED).eval()
    return model, MultiViewDataset(SAMPLES, size=model.cfg.image_size, target_views=EVAL_VIEWS)[0]


def input_view_psnr(model, tokens, item) -> float:
    n = item["encoder_input"].shape[0]
    with torch.no_grad():
        out = model.render(model.decode_tokens(tokens), item["target_c"][None, :n], supersample=2)
    return float(psnr(out["rgb"][0].clamp(0, 1), item["target_rgb"][:n]).mean())


def test_refined_tokens_render_the_input_views_better_and_leave_the_model_untouched(shipped_and_item):
    model, item = shipped_and_item
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, c = item["encoder_input"][None], item["input_c"][None]
    one_pass = model.encode(x, c)
    refined = model.encode_refined(x, c, steps=40, input_mask=item["target_mask"][None, :6], seed=0)
    changed = sum(int((a != b).sum()) for a, b in zip(one_pass.tokens, refined.tokens))
    assert changed > 0  # the fit picks other codes, not just another continuous latent
    assert input_view_psnr(model, refined.tokens, item) > input_view_psnr(model, one_pass.tokens, item) + 0.3
    # same codebook entries as the one pass would use: token ids in range, same scale shapes
    assert [t.shape for t in refined.tokens] == [t.shape for t in one_pass.tokens]
    assert all(int(t.max()) < model.cfg.codebook_size for t in refined.tokens)
    # the model itself is unchanged: weights, counters, mode and requires_grad
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_zero_steps_is_the_one_pass_and_seeds_repeat(shipped_and_item):
    model, item = shipped_and_item
    x, c = item["encoder_input"][None], item["input_c"][None]
    zero, one_pass = model.encode_refined(x, c, steps=0), model.encode(x, c)
    assert all(torch.equal(a, b) for a, b in zip(zero.tokens, one_pass.tokens))
    a, b = (model.encode_refined(x, c, steps=3, rays=256, seed=5) for _ in range(2))
    assert all(torch.equal(s, t) for s, t in zip(a.tokens, b.tokens))
    with pytest.raises(ValueError, match="steps must be >= 0"):
        model.encode_refined(x, c, steps=-1)


def test_a_batch_of_objects_is_refined_object_by_object_and_training_mode_comes_back():
    torch.manual_seed(0)
    model = SAR3DVQVAE(small_config()).train()
    item = MultiViewDataset(SAMPLES, size=model.cfg.image_size, target_views=EVAL_VIEWS)[0]
    x, c = item["encoder_input"][None].repeat(2, 1, 1, 1, 1), item["input_c"][None].repeat(2, 1, 1)
    q = model.encode_refined(x, c, steps=2, rays=64)
    assert q.f_hat.shape[0] == 2 and model.training
    # evaluation reports the steps and fits on the input views only
    s = evaluate_vqvae(model, SAMPLES, limit=1, chamfer=False, progress=False, oracle=False, prefixes=False,
                       refine_steps=2)["summary"]
    assert s["refine_steps"] == 2


def test_token_files_record_the_refinement(tmp_path):
    import numpy as np

    from sar3d_core.tokens import load_tokens, tokenize_dataset

    torch.manual_seed(0)
    model = SAR3DVQVAE(small_config())
    plain = tokenize_dataset(model, SAMPLES, tmp_path / "plain.npz", batch_size=2)
    refined = tokenize_dataset(model, SAMPLES, tmp_path / "refined.npz", batch_size=2, refine_steps=3)
    a, b = load_tokens(plain["path"], model.cfg), load_tokens(refined["path"], model.cfg)
    assert (a["refine_steps"], b["refine_steps"]) == (0, 3) and a["source"] == b["source"]
    first = tokenize_dataset(model, SAMPLES, tmp_path / "first.npz", batch_size=2, limit=1)
    cheap = tokenize_dataset(model, SAMPLES, tmp_path / "cheap.npz", refine_steps=3, refine_rays=64, limit=1)
    f, c = load_tokens(first["path"], model.cfg), load_tokens(cheap["path"], model.cfg)
    assert torch.equal(f["sequence"], a["sequence"][:1]) and f["source"] == a["source"][:1]
    assert c["sequence"].shape == f["sequence"].shape and c["refine_steps"] == 3
    with pytest.raises(ValueError, match="at least one object"):
        tokenize_dataset(model, SAMPLES, tmp_path / "none.npz", limit=0)
    # a file from before the field existed reads as the one pass; a malformed one is refused
    with np.load(plain["path"]) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "old.npz", **{k: v for k, v in arrays.items() if k != "refine_steps"})
    assert load_tokens(tmp_path / "old.npz", model.cfg)["refine_steps"] == 0
    np.savez(tmp_path / "bad.npz", **{**arrays, "refine_steps": np.array([1.5])})
    with pytest.raises(ValueError, match="refine_steps"):
        load_tokens(tmp_path / "bad.npz", model.cfg)
