"""Tests of the next-scale AR transformer (Sec. 4.2, Supp. C, Fig. 3a, Fig. S2)."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sar3d_core.config import SAR3DConfig, tokens_per_scale
from sar3d_core.quantizer import MultiScaleTriplaneQuantizer, tokens_to_sequence
from sar3d_core.transformer import SAR3DTransformer, TransformerSettings

SCALES, LATENT = (1, 2, 3), 3
V, C, D_POOLED, D_TOKEN = 64, 4, 12, 10  # codebook, latent channels, condition dims


def randomized(model, seed=0, std=0.2):
    """VAR's init starts every block at the identity (AdaLN gates x 1e-5), which would hide a
    broken mask; property tests redraw every weight so that every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def tiny_model(next_token=False, cross_attn_first=True, seed=0, **settings):
    s = TransformerSettings(depth=2, width=32, num_heads=2, cross_attn_first=cross_attn_first, **settings)
    scales = (LATENT,) if next_token else SCALES
    return randomized(SAR3DTransformer(scales, V, C, D_POOLED, D_TOKEN, s, next_token=next_token), seed)


def tiny_quantizer(seed=0):
    torch.manual_seed(seed)
    return MultiScaleTriplaneQuantizer(V, C, SCALES, LATENT).eval()


def condition(B, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[:, 0] = True
    return torch.randn(B, D_POOLED, generator=g), torch.randn(B, T, D_TOKEN, generator=g), mask


def test_block_causal_mask_is_scale_level_order():
    model = tiny_model()
    levels = [k for k, n in enumerate(tokens_per_scale(SCALES)) for _ in range(n)]
    expected = torch.tensor([[li >= lj for lj in levels] for li in levels])
    assert model.seq_len == 3 * (1 + 4 + 9) == len(levels)
    assert torch.equal(model.allowed_LL, expected)
    gpt = tiny_model(next_token=True)
    assert torch.equal(gpt.allowed_LL, torch.ones(27, 27, dtype=torch.bool).tril())


@pytest.mark.parametrize("cross_attn_first", [True, False])
def test_changing_scale_k_input_changes_only_scale_k_and_later_logits(cross_attn_first):
    model = tiny_model(cross_attn_first=cross_attn_first)
    pooled, tokens, mask = condition(2)
    x = torch.randn(2, model.seq_len - model.num_start, C)
    with torch.no_grad():
        base = model(x, pooled, tokens, mask)
        for k in range(1, len(SCALES)):
            a, b = model.begins[k], model.begins[k + 1]
            x2 = x.clone()
            x2[:, a - model.num_start:b - model.num_start] += torch.randn(2, b - a, C)
            out = model(x2, pooled, tokens, mask)
            assert torch.allclose(out[:, :a], base[:, :a], atol=1e-6, rtol=0), f"scale {k} leaked backwards"
            # every position of scale k and later sees the change
            assert (out[:, a:] - base[:, a:]).abs().amax(-1).min() > 1e-4


def test_next_token_gpt_is_causal():
    model = tiny_model(next_token=True)
    pooled, tokens, mask = condition(2)
    x = torch.randn(2, model.seq_len - 1, C)
    with torch.no_grad():
        base = model(x, pooled, tokens, mask)
        for p in (1, 10, 26):  # position p is fed x[:, p - 1]
            x2 = x.clone()
            x2[:, p - 1] += 1.0
            out = model(x2, pooled, tokens, mask)
            assert torch.allclose(out[:, :p], base[:, :p], atol=1e-6, rtol=0)
            assert (out[:, p:] - base[:, p:]).abs().amax(-1).min() > 1e-4


def test_teacher_input_is_the_area_downsampled_partial_fhat():
    # second way: the quantizer's own f_hat after each scale (Alg. 1), pooled with adaptive_avg_pool2d
    q, model = tiny_quantizer(), tiny_model()
    with torch.no_grad():
        out = q(torch.randn(2, 3, C, LATENT, LATENT))
        x = model.teacher_input(q, out.tokens)
    assert x.shape == (2, model.seq_len - 3, C)
    for k in range(len(SCALES) - 1):
        s = SCALES[k + 1]
        pooled = F.adaptive_avg_pool2d(out.f_hat_partial[k].reshape(6, C, LATENT, LATENT), s).view(2, 3, C, s, s)
        a = model.begins[k + 1] - 3
        for plane in range(3):
            for i in range(s):
                for j in range(s):
                    pos = a + plane * s * s + i * s + j
                    assert torch.allclose(x[:, pos], pooled[:, plane, :, i, j], atol=1e-5)
    # the next-token GPT is fed the code of the previous token
    gpt = tiny_model(next_token=True)
    seq = tokens_to_sequence(out.tokens[-1:])
    assert torch.equal(gpt.teacher_input(q, out.tokens[-1:]), q.codebook.weight[seq[:, :-1]])


def test_condition_dropout_rate_is_ten_percent_and_uses_the_null_condition():
    model = tiny_model()
    model.settings = dataclasses.replace(model.settings, cond_dropout=0.1)
    N = 20000
    pooled, tokens, mask = torch.randn(N, D_POOLED), torch.randn(N, 2, D_TOKEN), torch.tensor([[True, False]]).repeat(N, 1)
    p2, t2, m2, dropped = model.drop_condition(pooled, tokens, mask, torch.Generator().manual_seed(0))
    assert 0.09 < dropped.float().mean().item() < 0.11  # binomial std 0.002
    assert torch.equal(p2[dropped], model.null_pooled.detach().expand(int(dropped.sum()), -1))
    assert torch.equal(t2[dropped], model.null_token.detach().expand(int(dropped.sum()), 2, -1))
    assert torch.equal(p2[~dropped], pooled[~dropped]) and torch.equal(t2[~dropped], tokens[~dropped])
    assert m2[dropped].all() and torch.equal(m2[~dropped], mask[~dropped])
    again = model.drop_condition(pooled, tokens, mask, torch.Generator().manual_seed(0))[3]
    other = model.drop_condition(pooled, tokens, mask, torch.Generator().manual_seed(1))[3]
    assert torch.equal(again, dropped) and not torch.equal(other, dropped)


def test_training_forward_drops_conditions_and_eval_does_not():
    model = tiny_model(cond_dropout=0.5)
    B = 16
    pooled, tokens, mask = condition(B)
    x = torch.randn(B, model.seq_len - 3, C)
    dropped = model.drop_condition(pooled, tokens, mask, torch.Generator().manual_seed(3))[3]
    assert 0 < int(dropped.sum()) < B
    with torch.no_grad():
        train = model.train()(x, pooled, tokens, mask, generator=torch.Generator().manual_seed(3))
        model.eval()
        cond = model(x, pooled, tokens, mask)
        null = model(x, *model.null_condition(B, tokens.shape[1]))
    assert torch.allclose(train[~dropped], cond[~dropped], atol=1e-5)
    assert torch.allclose(train[dropped], null[dropped], atol=1e-5)
    assert not torch.allclose(cond[dropped], null[dropped], atol=1e-3)


def test_loss_is_cross_entropy_with_per_scale_accuracy():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, model.seq_len, V, generator=g)
    target = torch.randint(V, (3, model.seq_len), generator=g)
    target[:, :3] = logits[:, :3].argmax(-1)  # scale 1 all right
    out = model.loss(logits, target)
    assert torch.allclose(out["loss"], F.cross_entropy(logits.reshape(-1, V), target.reshape(-1)))
    assert out["accuracy_per_scale"][0] == 100.0
    for k, (a, b) in enumerate(zip(model.begins[:-1], model.begins[1:])):
        hits = sum(int(logits[i, j].argmax() == target[i, j]) for i in range(3) for j in range(a, b))
        assert out["accuracy_per_scale"][k] == pytest.approx(100 * hits / (3 * (b - a)))
        assert out["loss_per_scale"][k] == pytest.approx(F.cross_entropy(logits[:, a:b].reshape(-1, V),
                                                                         target[:, a:b].reshape(-1)).item(), rel=1e-5)


def test_settings_presets_follow_the_paper_and_the_config():
    image, text = TransformerSettings.paper("image"), TransformerSettings.paper("text")
    assert (image.depth, image.width, image.num_heads, image.cross_attn_first) == (24, 1536, 16, True)
    assert (text.depth, text.width, text.num_heads, text.cross_attn_first) == (16, 1024, 16, False)
    assert image.cond_dropout == 0.1
    tiny = TransformerSettings.tiny("text")
    cfg = SAR3DConfig.tiny()
    assert (tiny.depth, tiny.width, tiny.cross_attn_first) == (cfg.ar_depth_text, cfg.ar_width, False)
    cfg.extra["transformer"] = {"depth": 2, "num_heads": 8}
    assert (TransformerSettings.from_config(cfg).depth, TransformerSettings.from_config(cfg).num_heads) == (2, 8)
    cfg.extra["transformer"] = {"layers": 2}
    with pytest.raises(ValueError, match="unknown keys"):
        TransformerSettings.from_config(cfg)
    with pytest.raises(ValueError, match="condition"):
        TransformerSettings.from_config(SAR3DConfig.tiny(), "audio")
    with pytest.raises(ValueError, match="divisible"):
        SAR3DTransformer(SCALES, V, C, 4, 4, TransformerSettings(width=30, num_heads=4))


def expected_parameters(s: TransformerSettings, L, K, V_, C_, d_pooled, d_token):
    """Closed-form count of the architecture (second way to `num_parameters`)."""
    W, H, hid = s.width, s.num_heads, round(s.width * s.mlp_ratio)
    attn = lambda kv: (W * W + W) + (kv * 2 * W + 2 * W) + (W * W + W) + H  # q, kv, proj, temperature
    block = attn(W) + attn(d_token) + 2 * W + (W * 6 * W + 6 * W) + (W * hid + hid + hid * W + W)
    rest = (d_pooled * W + W) + d_pooled + d_token + (C_ * W + W) + L * W + K * W + 3 * W + (W * 2 * W + 2 * W) + (W * V_ + V_)
    return s.depth * block + rest


@pytest.mark.parametrize("condition,dims", [("image", (1024, 1024)), ("text", (768, 768))])
def test_paper_preset_builds_with_2040_tokens(condition, dims):
    cfg = SAR3DConfig.paper()
    with torch.device("meta"):  # no memory, no init: the paper model is ~1.2B parameters
        model = SAR3DTransformer.from_config(cfg, *dims, condition=condition).eval()
        logits = model(torch.empty(1, 2037, 8), torch.empty(1, dims[0]), torch.empty(1, 7, dims[1]))
    n = model.num_parameters()
    print(f"paper {condition} transformer: {n / 1e6:.1f}M parameters, L = {model.seq_len}")
    assert model.seq_len == 2040 and logits.shape == (1, 2040, 16384)
    assert n == expected_parameters(model.settings, 2040, 10, 16384, 8, *dims)
    assert (1.0e9 < n < 1.4e9) if condition == "image" else (0.3e9 < n < 0.5e9)


def test_bad_inputs_raise_one_clear_error():
    model, q = tiny_model(), tiny_quantizer()
    pooled, tokens, mask = condition(2)
    x = torch.randn(2, model.seq_len - 3, C)
    with pytest.raises(ValueError, match="teacher input"):
        model(x[:, :-1], pooled, tokens, mask)
    with pytest.raises(ValueError, match="cond_pooled"):
        model(x, pooled[:, :5], tokens, mask)
    with pytest.raises(ValueError, match="cond_tokens"):
        model(x, pooled, tokens[..., :3], mask)
    bad = mask.clone()
    bad[1] = False
    with pytest.raises(ValueError, match="without any valid token"):
        model(x, pooled, tokens, bad)
    with pytest.raises(ValueError, match="does not match"):
        model.teacher_input(MultiScaleTriplaneQuantizer(V, C, (1, 3), 3), [torch.zeros(2, 3, 1, 1, dtype=torch.long)])
    with pytest.raises(ValueError, match="next_token"):
        SAR3DTransformer(SCALES, V, C, 4, 4, TransformerSettings(), next_token=True)
    with pytest.raises(ValueError):
        model.teacher_input(q, [torch.zeros(2, 3, 1, 1, dtype=torch.long)] * 3)
