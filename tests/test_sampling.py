"""Tests of KV-cached next-scale / next-token sampling with CFG and top-k/top-p (Sec. 4.2)."""
import pytest
import torch

from sar3d_core.config import SAR3DConfig
from sar3d_core.sampling import (classifier_free_guidance, filter_top_k_top_p, guidance_scales, sample_from_logits,
                                 sample_next_scale, sample_next_token, sampling_kwargs)
from test_transformer import SCALES, C, condition, tiny_model, tiny_quantizer


def test_cfg_formula():
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    assert torch.allclose(classifier_free_guidance(c, u, 1.0), c, atol=1e-6)
    assert torch.equal(classifier_free_guidance(c, u, 0.0), u)
    # the official form (1 + t) c - t u with s = 1 + t
    assert torch.allclose(classifier_free_guidance(c, u, 3.5), 3.5 * c - 2.5 * u, atol=1e-6)


def test_guidance_ramp_is_the_official_linear_one():
    # VAR / SAR3D autoregressive_infer_cfg: t = cfg * si / (K - 1), logits = (1 + t) c - t u
    ramp = guidance_scales(10, 4.0)
    assert ramp == pytest.approx([1 + 4.0 * si / 9 for si in range(10)])
    assert ramp[0] == 1.0 and ramp[-1] == 5.0
    assert guidance_scales(10, 4.0, "constant") == [4.0] * 10
    assert guidance_scales(1, 4.0) == [1.0]


def test_top_k_keeps_the_k_largest():
    logits = torch.randn(3, 4, 20, generator=torch.Generator().manual_seed(0))
    out = filter_top_k_top_p(logits, top_k=3)
    for row, kept in zip(logits.view(-1, 20), out.view(-1, 20)):
        expected = sorted(range(20), key=lambda v: -row[v].item())[:3]
        assert sorted(torch.isfinite(kept).nonzero().flatten().tolist()) == sorted(expected)
        assert torch.equal(kept[expected], row[expected])
    assert torch.equal(filter_top_k_top_p(logits, top_k=0), logits)
    assert torch.equal(filter_top_k_top_p(logits, top_k=50), logits)


def nucleus(row_logits, top_k, top_p):
    """Brute force: top-k, renormalise, then the shortest most-likely prefix with mass >= top_p."""
    order = sorted(range(len(row_logits)), key=lambda v: -row_logits[v].item())
    if top_k:
        order = order[:top_k]
    probs = torch.softmax(row_logits[order], 0).tolist()
    kept, mass = [], 0.0
    for v, p in zip(order, probs):
        kept.append(v)
        mass += p
        if mass >= top_p:
            break
    return sorted(kept)


@pytest.mark.parametrize("top_k,top_p", [(0, 0.3), (0, 0.5), (0, 0.9), (0, 1e-6), (5, 0.5), (10, 0.8)])
def test_top_p_matches_a_brute_force_nucleus(top_k, top_p):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 30, generator=g) * torch.tensor([0.3, 1, 2, 3, 5, 8])[:, None]
    out = filter_top_k_top_p(logits[None], top_k=top_k, top_p=top_p)[0]
    for row, kept in zip(logits, out):
        assert torch.isfinite(kept).nonzero().flatten().tolist() == nucleus(row, top_k, top_p)


@pytest.mark.parametrize("top_k,top_p", [(5, 0.5), (10, 0.8), (3, 1.0)])
def test_fast_top_k_draw_has_the_filtered_distribution(top_k, top_p):
    # the top-k path of sample_from_logits draws among the k best only; it must match
    # softmax(filter_top_k_top_p(logits)) over all V entries
    logits = torch.randn(4, 12, generator=torch.Generator().manual_seed(3)) * 1.5
    n = 20000
    draws = sample_from_logits(logits[:, None].expand(4, n, 12), top_k, top_p, torch.Generator().manual_seed(0))
    expected = filter_top_k_top_p(logits, top_k, top_p).softmax(-1)
    for row, p in zip(draws, expected):
        freq = torch.bincount(row, minlength=12).float() / n
        assert ((freq > 0) <= (p > 0)).all()  # nothing outside the kept set
        assert (freq - p).abs().max() < 0.015


@pytest.mark.parametrize("kwargs,message", [
    ({"cfg": -1.0}, "cfg=-1.0 must be >= 0"), ({"cfg": float("nan")}, "cfg=nan must be >= 0 and finite"),
    ({"cfg": float("inf")}, "cfg=inf must be >= 0 and finite"), ({"top_p": 0.0}, "top_p=0.0 must be in"),
    ({"top_p": 1.5}, "top_p=1.5 must be in"), ({"top_k": -1}, "top_k=-1 must be >= 0"),
    ({"cfg_schedule": "cosine"}, "cfg_schedule 'cosine' is unknown")])
def test_bad_sampling_arguments_raise(kwargs, message):
    model, q = tiny_model(), tiny_quantizer()
    with pytest.raises(ValueError, match=message):
        sample_next_scale(model, q, *condition(1), **kwargs)
    with pytest.raises(ValueError, match=message):
        sample_next_token(tiny_model(next_token=True), q, *condition(1), **kwargs)
    if "top_k" in kwargs or "top_p" in kwargs:
        with pytest.raises(ValueError, match=message):
            filter_top_k_top_p(torch.zeros(1, 1, 4), kwargs.get("top_k", 0), kwargs.get("top_p", 1.0))


def teacher_forced_guided(model, q, tokens, pooled, cond_tokens, mask, steps_s, spans):
    """One full pass, conditional and unconditional, combined with the same guidance."""
    x = model.teacher_input(q, tokens)
    with torch.no_grad():
        c = model(x, pooled, cond_tokens, mask)
        u = model(x, *model.null_condition(*cond_tokens.shape[:2]))
    return torch.cat([classifier_free_guidance(c[:, a:b], u[:, a:b], s) for s, (a, b) in zip(steps_s, spans)], dim=1)


def close_in_float32(a, b):
    """Within 1e-5 of the logit scale: the randomized test models give logits up to ~30 once
    guided, where float32 rounding alone reaches ~1e-5; a wrong cache or mask is off by O(1)."""
    return (a - b).abs().max().item() <= 1e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("cross_attn_first,schedule", [(True, "linear"), (False, "constant")])
def test_kv_cached_next_scale_logits_equal_one_teacher_forced_pass(cross_attn_first, schedule):
    model, q = tiny_model(cross_attn_first=cross_attn_first), tiny_quantizer()
    pooled, cond_tokens, mask = condition(3)
    tokens, logits = sample_next_scale(model, q, pooled, cond_tokens, mask, cfg=2.5, cfg_schedule=schedule,
                                       top_k=0, top_p=1.0, seed=0, return_logits=True)
    assert [tuple(t.shape) for t in tokens] == [(3, 3, s, s) for s in SCALES]
    spans = list(zip(model.begins[:-1], model.begins[1:]))
    expected = teacher_forced_guided(model, q, tokens, pooled, cond_tokens, mask,
                                     guidance_scales(len(SCALES), 2.5, schedule), spans)
    assert logits.shape == expected.shape == (3, model.seq_len, 64)
    assert close_in_float32(logits, expected)


def test_condition_only_terms_are_computed_once_per_sample():
    """The AdaLN modulations (blocks and head) and the cross-attention keys depend on the
    condition only: the cache computes them on the first of the K passes and reuses them."""
    model, q = tiny_model(), tiny_quantizer()
    pooled, cond_tokens, mask = condition(2)
    calls = {"ada": 0, "head_ada": 0, "cross_kv": 0}

    def count(name):
        def hook(*_):
            calls[name] += 1
        return hook

    for blk in model.blocks:
        blk.ada.register_forward_hook(count("ada"))
        blk.cross_attn.to_kv.register_forward_hook(count("cross_kv"))
    model.head_ada.register_forward_hook(count("head_ada"))
    sample_next_scale(model, q, pooled, cond_tokens, mask, cfg=2.0, seed=0)
    assert calls == {"ada": len(model.blocks), "head_ada": 1, "cross_kv": len(model.blocks)}


def test_kv_cached_next_token_logits_equal_one_teacher_forced_pass():
    model, q = tiny_model(next_token=True), tiny_quantizer()
    pooled, cond_tokens, mask = condition(2)
    tokens, logits = sample_next_token(model, q, pooled, cond_tokens, mask, cfg=1.5, top_k=0, top_p=1.0,
                                       seed=0, return_logits=True)
    assert [tuple(t.shape) for t in tokens] == [(2, 3, 3, 3)]
    L = model.seq_len
    expected = teacher_forced_guided(model, q, tokens, pooled, cond_tokens, mask,
                                     guidance_scales(L, 1.5), [(i, i + 1) for i in range(L)])
    assert close_in_float32(logits, expected)


def test_top_k_1_sampling_is_greedy_on_the_guided_logits():
    model, q = tiny_model(), tiny_quantizer()
    tokens, logits = sample_next_scale(model, q, *condition(2), cfg=3.0, top_k=1, seed=5, return_logits=True)
    seq = torch.cat([t.reshape(2, -1) for t in tokens], dim=1)
    assert torch.equal(seq, logits.argmax(-1))


def test_same_seed_same_tokens_different_seed_different_tokens():
    model, q = tiny_model(), tiny_quantizer()
    pooled, cond_tokens, mask = condition(3)
    kw = dict(cfg=1.0, top_k=0, top_p=1.0)
    a = sample_next_scale(model, q, pooled, cond_tokens, mask, seed=0, **kw)
    b = sample_next_scale(model, q, pooled, cond_tokens, mask, seed=0, **kw)
    c = sample_next_scale(model, q, pooled, cond_tokens, mask, seed=1, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    # the token maps decode (Alg. 2) like the VQVAE's own
    assert q.tokens_to_fhat(a).shape == (3, 3, C, 3, 3)
    gpt = tiny_model(next_token=True)
    d = sample_next_token(gpt, q, pooled, cond_tokens, mask, seed=0, **kw)
    e = sample_next_token(gpt, q, pooled, cond_tokens, mask, seed=0, **kw)
    f = sample_next_token(gpt, q, pooled, cond_tokens, mask, seed=1, **kw)
    assert torch.equal(d[0], e[0]) and not torch.equal(d[0], f[0])


def test_pass_timings_one_per_pass_and_the_tokens_unchanged():
    model, q = tiny_model(), tiny_quantizer()
    pooled, cond_tokens, mask = condition(2)
    seconds = []
    a = sample_next_scale(model, q, pooled, cond_tokens, mask, seed=3, pass_seconds=seconds)
    b = sample_next_scale(model, q, pooled, cond_tokens, mask, seed=3)
    assert len(seconds) == len(model.scales) and all(s > 0 for s in seconds)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    gpt, seconds = tiny_model(next_token=True), []
    sample_next_token(gpt, q, pooled, cond_tokens, mask, seed=3, pass_seconds=seconds)
    assert len(seconds) == gpt.seq_len


def test_samplers_refuse_the_wrong_model_and_read_the_config():
    q = tiny_quantizer()
    with pytest.raises(ValueError, match="sample_next_token"):
        sample_next_scale(tiny_model(next_token=True), q, *condition(1))
    with pytest.raises(ValueError, match="sample_next_scale"):
        sample_next_token(tiny_model(), q, *condition(1))
    assert sampling_kwargs(SAR3DConfig.paper()) == {"cfg": 4.0, "top_k": 10, "top_p": 0.5}


def test_a_model_overfit_by_teacher_forcing_regenerates_its_tokens():
    # end to end: default (VAR) init, teacher_input + loss for training, the cached sampler for generation
    from sar3d_core.quantizer import tokens_to_sequence
    from sar3d_core.transformer import SAR3DTransformer, TransformerSettings
    from test_transformer import D_POOLED, D_TOKEN, V
    torch.manual_seed(0)
    model = SAR3DTransformer(SCALES, V, C, D_POOLED, D_TOKEN, TransformerSettings(depth=2, width=32, num_heads=2))
    q = tiny_quantizer()
    with torch.no_grad():
        target = q(torch.randn(4, 3, C, 3, 3)).tokens
    x, target_BL = model.teacher_input(q, target), tokens_to_sequence(target)
    pooled, cond_tokens, mask = condition(4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        out = model.loss(model(x, pooled, cond_tokens, mask, generator=torch.Generator().manual_seed(step)), target_BL)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.1 and min(out["accuracy_per_scale"]) == 100.0
    tokens = sample_next_scale(model.eval(), q, pooled, cond_tokens, mask, cfg=1.0, top_k=1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(tokens, target))


def test_a_prefix_of_scales_is_kept_and_the_rest_drawn_given_it():
    """Next-scale sampling from scale k: scales 1..k-1 are kept, and the logits of every later
    pass are those the model gives after exactly those scales (the passes before are cached)."""
    model, q = tiny_model(), tiny_quantizer()
    pooled, cond_tokens, mask = condition(2)
    K = len(model.scales)
    full, logits_full = sample_next_scale(model, q, pooled, cond_tokens, mask, cfg=2.0, seed=0, return_logits=True)
    for n in range(1, K):
        out, logits = sample_next_scale(model, q, pooled, cond_tokens, mask, cfg=2.0, seed=7, prefix=full[:n],
                                        return_logits=True)
        assert all(torch.equal(a, b) for a, b in zip(out[:n], full[:n]))
        # pass n+1 sees only scales 1..n, which are the same: its guided logits are too
        seen = sum(3 * h * w for h, w in model.scales[:n + 1])
        torch.testing.assert_close(logits[:, :seen], logits_full[:, :seen], atol=1e-4, rtol=1e-4)
    redrawn = [sample_next_scale(model, q, pooled, cond_tokens, mask, seed=s, prefix=full[:2])[2:] for s in (1, 2)]
    assert not all(torch.equal(a, b) for a, b in zip(*redrawn))  # the free scales vary with the seed
    with pytest.raises(ValueError, match="leaves nothing to draw"):
        sample_next_scale(model, q, pooled, cond_tokens, mask, prefix=full)
    with pytest.raises(ValueError, match="expected"):
        sample_next_scale(model, q, pooled, cond_tokens, mask, prefix=[full[1]])


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_teacher_forced_greedy_draws_give_back_a_greedy_sample(schedule):
    """Given the tokens the sampler drew greedily, a teacher-forced greedy draw sees the same prefix
    at every scale, hence the same guided logits, and must return the same tokens; a wrong guidance
    scale per position or a shifted alignment changes some."""
    from sar3d_core.sampling import draw_teacher_forced

    model, q = tiny_model(), tiny_quantizer()
    pooled, cond_tokens, mask = condition(3)
    greedy = sample_next_scale(model, q, pooled, cond_tokens, mask, cfg=3.0, cfg_schedule=schedule, top_k=1, seed=0)
    drawn = draw_teacher_forced(model, q, greedy, pooled, cond_tokens, mask, cfg=3.0, cfg_schedule=schedule, top_k=1)
    assert all(torch.equal(a, b) for a, b in zip(greedy, drawn))
    # with the true prefix replaced, the later scales are drawn given other tokens
    other = sample_next_scale(model, q, pooled, cond_tokens, mask, cfg=1.0, top_k=0, top_p=1.0, seed=3)
    redrawn = draw_teacher_forced(model, q, other, pooled, cond_tokens, mask, cfg=3.0, cfg_schedule=schedule, top_k=1)
    assert torch.equal(redrawn[0], greedy[0])  # the first scale has no prefix
    assert not all(torch.equal(a, b) for a, b in zip(greedy[1:], redrawn[1:]))


def test_teacher_forced_draws_follow_the_seed_and_the_filtering():
    from sar3d_core.sampling import draw_teacher_forced

    model, q = tiny_model(), tiny_quantizer()
    pooled, cond_tokens, mask = condition(2)
    truth = sample_next_scale(model, q, pooled, cond_tokens, mask, seed=1)
    a, b, c = (draw_teacher_forced(model, q, truth, pooled, cond_tokens, mask, top_k=0, top_p=1.0, seed=s)
               for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    with pytest.raises(ValueError, match="top_p"):
        draw_teacher_forced(model, q, truth, pooled, cond_tokens, mask, top_p=0.0)
