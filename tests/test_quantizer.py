"""Tests of the multi-scale residual triplane quantizer (Sec. 4.1, Supp. B, Alg. 1 and 2)."""
import pytest
import torch
import torch.nn.functional as F

from sar3d_core.config import SAR3DConfig
from sar3d_core.quantizer import MultiScaleTriplaneQuantizer, sequence_to_tokens, tokens_to_sequence


def tiny_quantizer(seed=0, **kwargs):
    torch.manual_seed(seed)
    return MultiScaleTriplaneQuantizer.from_config(SAR3DConfig.tiny(), **kwargs)


def test_decode_of_encoded_tokens_matches_every_prefix():
    q = tiny_quantizer()
    f = torch.randn(2, 3, 8, 8, 8)
    with torch.no_grad():
        out = q(f)
        assert torch.allclose(q.tokens_to_fhat(out.tokens), out.f_hat, atol=1e-5)
        for k in range(1, q.num_scales + 1):
            expected = out.f_hat_partial[k - 1]
            assert torch.allclose(q.tokens_to_fhat(out.tokens, num_scales=k), expected, atol=1e-5)
            # a prefix list of token maps is enough
            assert torch.allclose(q.tokens_to_fhat(out.tokens[:k], num_scales=k), expected, atol=1e-5)
        # the prefixes differ: every scale adds something
        assert not torch.allclose(out.f_hat_partial[0], out.f_hat_partial[1])


def test_tokens_are_cosine_nearest_codes_of_the_pooled_residual():
    # second way: the residual before scale k is f - f_hat_{k-1}; pool with adaptive_avg_pool2d,
    # and take argmax of F.cosine_similarity against every entry
    q = tiny_quantizer(1)
    f = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():
        out = q(f)
        Z = q.codebook.weight
        prev = torch.zeros_like(f)
        for k, (hk, wk) in enumerate(q.scales):
            rest = (f - prev).reshape(3, 8, 8, 8)
            pooled = F.adaptive_avg_pool2d(rest, (hk, wk))  # (3, C, hk, wk)
            cos = F.cosine_similarity(pooled.permute(0, 2, 3, 1)[..., None, :], Z, dim=-1)  # (3, hk, wk, V)
            assert torch.equal(out.tokens[k][0], cos.argmax(-1))
            prev = out.f_hat_partial[k]


def test_identity_phi_and_codebook_latent_is_exact():
    torch.manual_seed(0)
    q = MultiScaleTriplaneQuantizer(codebook_size=64, dim=8, scales=[4], latent_size=4, phi_mix=0.0)
    with torch.no_grad():
        q.codebook.weight.copy_(F.normalize(q.codebook.weight, dim=1))
    idx = torch.randint(0, 64, (2, 3, 4, 4))
    f = q.codebook.weight.detach()[idx].permute(0, 1, 4, 2, 3)  # (B, 3, h, w, C) -> (B, 3, C, h, w)
    out = q(f)
    assert torch.equal(out.tokens[0], idx)
    assert torch.allclose(out.f_hat, f, atol=1e-6)
    assert out.vq_loss.item() < 1e-10 and out.residual_norms[-1] < 1e-6


def test_planes_are_quantized_independently():
    q = tiny_quantizer(2)
    f = torch.randn(2, 3, 8, 8, 8)
    g = f.clone()
    g[:, 0] = torch.randn(2, 8, 8, 8) * 3
    with torch.no_grad():
        a, b = q(f), q(g)
    assert any(not torch.equal(x[:, 0], y[:, 0]) for x, y in zip(a.tokens, b.tokens))
    for x, y in zip(a.tokens, b.tokens):
        assert torch.equal(x[:, 1:], y[:, 1:])
    assert torch.allclose(a.f_hat[:, 1:], b.f_hat[:, 1:])


def test_all_scales_look_up_one_codebook():
    q = tiny_quantizer(phi_mix=0.0)
    names = [n for n, _ in q.named_parameters() if "codebook" in n]
    assert names == ["codebook.weight"] and q.codebook.weight.shape == (1024, 8)
    # id j at every cell of every scale: each scale adds the same entry Z_j (bicubic keeps a
    # constant map constant), so f_hat = K * Z_j everywhere
    j = 17
    tokens = [torch.full((1, 3, s, s), j) for s in SAR3DConfig.tiny().scales]
    with torch.no_grad():
        f_hat = q.tokens_to_fhat(tokens)
        expected = q.num_scales * q.lookup(torch.tensor(j))  # l2-normalised codes in the tiny preset
        assert torch.allclose(f_hat.permute(0, 1, 3, 4, 2), expected.expand(1, 3, 8, 8, 8), atol=1e-5)
        # changing that one entry changes what every scale decodes
        q.codebook.weight[j] += 1.0
        for k in range(1, q.num_scales + 1):
            assert torch.allclose(q.tokens_to_fhat(tokens[:k], num_scales=k).permute(0, 1, 3, 4, 2),
                                  k * q.lookup(torch.tensor(j)).expand(1, 3, 8, 8, 8), atol=1e-5)


def test_gradients_straight_through_and_to_the_codebook():
    q = tiny_quantizer(3)
    f = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    out = q(f)
    upstream = torch.randn_like(f)
    out.f_hat.backward(upstream, retain_graph=True)
    assert torch.equal(f.grad, upstream)  # the STE passes the gradient through unchanged
    assert q.codebook.weight.grad is None  # the STE path does not train the codebook
    f.grad = None
    out.vq_loss.backward()
    assert q.codebook.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in q.phis[0].parameters())
    # commitment gradient in closed form: beta / K * sum_k 2 (f - f_hat_k) / numel
    with torch.no_grad():
        expected = sum(2 * (f - p) / f.numel() for p in out.f_hat_partial) * q.beta / q.num_scales
    assert torch.allclose(f.grad, expected, atol=1e-7)


def test_sequence_order_against_a_hand_built_example():
    t1 = torch.tensor([[[[1]], [[2]], [[3]]]])  # (1, 3, 1, 1): one token per plane
    t2 = torch.arange(10, 22).view(1, 3, 2, 2)  # plane 0: 10 11 / 12 13, plane 1: 14.., plane 2: 18..
    seq = tokens_to_sequence([t1, t2])
    assert seq.tolist() == [[1, 2, 3, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]]
    back = sequence_to_tokens(seq, [1, 2])
    assert torch.equal(back[0], t1) and torch.equal(back[1], t2)
    with pytest.raises(ValueError, match="expected"):
        sequence_to_tokens(seq[:, :-1], [1, 2])


def test_paper_preset_round_trip_and_length():
    cfg = SAR3DConfig.paper()
    torch.manual_seed(0)
    q = MultiScaleTriplaneQuantizer.from_config(cfg)
    assert q.codebook.weight.shape == (16384, 8) and q.num_scales == 10
    with torch.no_grad():
        out = q(torch.randn(1, 3, 8, 16, 16))
        seq = tokens_to_sequence(out.tokens)
        assert seq.shape == (1, 2040) == (1, cfg.total_tokens())
        assert [t.shape[-1] for t in out.tokens] == list(cfg.scales)
        assert torch.allclose(q.sequence_to_fhat(seq), out.f_hat, atol=1e-5)
    # VAR's partial sharing: neighbouring scales share a phi, every phi is used, in order
    index = [q.phi_index(k) for k in range(10)]
    assert index[0] == 0 and index[-1] == 3 and index == sorted(index) and set(index) == {0, 1, 2, 3}
    assert index[:3] == [0, 0, 0] and index[3:5] == [1, 1]  # ticks 1/12, 4/12, ... against k/9


def test_residual_norm_shrinks_with_scales_after_fitting():
    q = tiny_quantizer(4)
    f = torch.randn(2, 3, 8, 8, 8)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for _ in range(20):  # a few steps of codebook (and phi) fitting on the VQ loss
        out = q(f)
        opt.zero_grad()
        out.vq_loss.backward()
        opt.step()
    with torch.no_grad():
        out = q(f)
    norms = out.residual_norms
    # second way: ||f - f_hat_k|| / ||f|| from the partial sums
    direct = torch.stack([(f - p).norm() / f.norm() for p in out.f_hat_partial])
    assert torch.allclose(norms, direct, atol=1e-5)
    assert (norms[1:] - norms[:-1]).mean() < 0 and (norms[1:] <= norms[:-1] + 1e-4).all()
    assert norms[-1] < 0.8 * norms[0]


def test_usage_tracking_and_dead_code_reset():
    torch.manual_seed(0)
    q = MultiScaleTriplaneQuantizer(codebook_size=32, dim=4, scales=[2], latent_size=2, dead_after=3)
    f = torch.randn(1, 3, 4, 2, 2)
    q.train()
    for _ in range(3):
        out = q(f)
    used = out.usage > 0
    assert out.usage.sum() == 12 and torch.equal(q.steps_since_used == 0, used)
    dead = q.dead_codes()
    assert torch.equal(dead, torch.nonzero(~used).flatten())
    assert q.reset_dead_codes(f, generator=torch.Generator().manual_seed(0)) == len(dead)
    pixels = f.permute(0, 1, 3, 4, 2).reshape(-1, 4)  # the only scale is full resolution
    for v in dead:
        assert (q.codebook.weight[v] - pixels).abs().amax(dim=1).min() < 1e-6
    assert len(q.dead_codes()) == 0 and q.reset_dead_codes(f) == 0
    q.eval()
    before = q.steps_since_used.clone()
    q(f)
    assert torch.equal(q.steps_since_used, before)  # eval passes do not count


def test_bad_inputs_raise_clear_errors():
    q = tiny_quantizer()
    with pytest.raises(ValueError, match="expected"):
        q(torch.randn(2, 8, 8, 8))  # no plane axis
    with pytest.raises(ValueError, match="expected"):
        q(torch.randn(2, 3, 4, 8, 8))  # wrong C
    with pytest.raises(ValueError, match="expected"):
        q(torch.randn(2, 3, 8, 16, 16))  # wrong h, w
    with torch.no_grad():
        tokens = q(torch.randn(1, 3, 8, 8, 8)).tokens
    with pytest.raises(ValueError, match="another schedule"):
        q.tokens_to_fhat(tokens[:-1])
    paper_like = [torch.zeros(1, 3, s, s, dtype=torch.long) for s in (1, 2, 3, 4, 5, 8)]
    with pytest.raises(ValueError, match="schedule"):
        q.tokens_to_fhat(paper_like)
    bad = [t.clone() for t in tokens]
    bad[2][0, 1, 0, 0] = 1024
    with pytest.raises(ValueError, match="outside the codebook"):
        q.tokens_to_fhat(bad)
    bad[2][0, 1, 0, 0] = -1
    with pytest.raises(ValueError, match="outside the codebook"):
        q.tokens_to_fhat(bad)
    with pytest.raises(ValueError, match="num_scales"):
        q.tokens_to_fhat(tokens, num_scales=7)
    with pytest.raises(ValueError, match="last scale"):
        MultiScaleTriplaneQuantizer(16, 8, scales=[1, 2, 4], latent_size=8)


def test_fhat_prefixes_are_algorithm_2_step_by_step_and_match_algorithm_1():
    q = tiny_quantizer()
    f = torch.randn(2, 3, 8, 8, 8)
    with torch.no_grad():
        out = q(f)
        prefixes = q.fhat_prefixes(out.tokens)
        assert len(prefixes) == q.num_scales
        for k, (a, b) in enumerate(zip(prefixes, out.f_hat_partial), 1):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # Alg. 2 replays Alg. 1's running sum
            torch.testing.assert_close(a, q.tokens_to_fhat(out.tokens[:k], num_scales=k))
        # one step by hand: the difference of two prefixes is that scale's contribution
        step = q.accumulate(prefixes[1].reshape(6, 8, 8, 8), 2, out.tokens[2]) - prefixes[1].reshape(6, 8, 8, 8)
        torch.testing.assert_close(step, q.scale_contribution(2, out.tokens[2].reshape(6, *q.scales[2])))
    assert len(q.fhat_prefixes(out.tokens, 3)) == 3
    with pytest.raises(ValueError, match="num_scales"):
        q.fhat_prefixes(out.tokens, 0)


@pytest.mark.parametrize("n, ticks", [(4, [1 / 12, 1 / 12 + (1 - 2 / 12) / 3, 1 - 1 / 12 - (1 - 2 / 12) / 3, 1 - 1 / 12]),
                                      (2, [1 / 4, 3 / 4]), (3, [1 / 6, 1 / 2, 5 / 6]), (1, [0.5])])
def test_shared_phi_ticks_follow_var(n, ticks):
    """VAR's PhiPartiallyShared: ticks over [1/(3n), 1 - 1/(3n)] for n = 4, over [1/(2n), 1 - 1/(2n)] otherwise."""
    q = MultiScaleTriplaneQuantizer(16, 4, (1, 2, 4), 4, phi_shared=n)
    torch.testing.assert_close(q.phi_ticks, torch.tensor(ticks, dtype=torch.float32))
