"""SAR3D-LLM (sar3d_core.captioner, caption_eval, `sar3d caption` / `eval captions`): the multimodal
sequence of Eq. 10 against its definition, training stages, generate() against a plain argmax loop,
checkpoints, the hub path, the VQVAE fingerprint and the caption scores against the world's tables."""
import re

import pytest
import torch
import torch.nn.functional as F

from sar3d_core import cli
from sar3d_core.caption_eval import evaluate_captioner, parse_caption, score_captions
from sar3d_core.captioner import (POINT_END, POINT_PATCH, POINT_START, CaptionDataset, CaptionerSettings,
                                  CaptionObjective, SAR3DCaptioner, _tidy, cosine_lr, input_sequences, train_stage)
from sar3d_core.config import SAR3DConfig, tokens_per_scale, total_tokens
from sar3d_core.quantizer import sequence_to_tokens, tokens_to_sequence
from sar3d_core.tokens import save_tokens
from sar3d_core.training import TrainConfig
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.world import CATEGORIES, COLOURS, heldout_combinations, make_object, objects_in_split

TINY = CaptionerSettings(width=96, layers=2, heads=4, intermediate=192)
SEEDS = (0, 1, 2, 3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _vqvae(seed: int, l2_codes: bool = True) -> SAR3DVQVAE:
    torch.manual_seed(seed)
    cfg = SAR3DConfig.tiny()
    cfg.extra["quantizer"]["l2_codes"] = l2_codes
    return SAR3DVQVAE(cfg).eval()


@pytest.fixture(scope="module")
def vqvae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vq") / "vqvae_a"
    _vqvae(0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vqvae(vqvae_folder):
    return SAR3DVQVAE.from_pretrained(vqvae_folder).eval()


def _sequences(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.codebook_size, (n, total_tokens(cfg.scales)), generator=g)


@pytest.fixture(scope="module")
def trained(vqvae, vqvae_folder, tmp_path_factory):
    """A tiny captioner overfitted (stage 2, through training.train) on 4 objects with random tokens."""
    captions = [make_object(s).caption for s in SEEDS]
    torch.manual_seed(0)
    cap = SAR3DCaptioner.from_vqvae(vqvae, captions, TINY, vqvae_checkpoint=str(vqvae_folder))
    seq = _sequences(vqvae.cfg, len(SEEDS))
    cfg = TrainConfig(steps=80, batch_size=4, lr=5e-3, log_every=10, ckpt_every=0,
                      out_dir=str(tmp_path_factory.mktemp("run")))
    rows = train_stage(cap, CaptionDataset(cap, cap.truncate(seq), captions), 2, cfg, warmup=0.05)
    return cap, seq, captions, rows


def _normal(caption):  # a reference as the word-level tokenizer gives it back
    return _tidy(caption.lower())


# ------------------------------------------------------------------ the model and its sequence (Eq. 10)
def test_the_llm_is_a_llama_with_the_projects_tokenizer_and_three_special_tokens(vqvae):
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    cap = SAR3DCaptioner.from_vqvae(vqvae, ["a red chair"], TINY)
    assert isinstance(cap.llm, LlamaForCausalLM) and isinstance(cap.tokenizer, PreTrainedTokenizerFast)
    assert cap.llm.config.hidden_act == "silu" and cap.llm.config.hidden_size == 96  # SwiGLU MLP
    assert cap.llm.get_input_embeddings().num_embeddings == len(cap.tokenizer)
    ids = cap.tokenizer(f"{POINT_START}{POINT_PATCH}{POINT_PATCH}{POINT_END}", add_special_tokens=False)["input_ids"]
    assert ids == [cap.start_id, cap.patch_id, cap.patch_id, cap.end_id] and len(set(ids)) == 3
    vocab = cap.tokenizer.get_vocab()
    assert set(COLOURS) | set(CATEGORIES) | {"give", "interpretation", "assistant"} <= set(vocab)
    # projector: the official 8 -> 1024 -> 2048 -> 4096 shape, scaled to the width (w/4, w/2, w)
    linears = [m for m in cap.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 24), (24, 48), (48, 96)]


def test_labels_cover_only_the_answer_and_the_3d_tokens_sit_between_the_special_tokens(vqvae):
    caption = "a 3D model of a red chair, with four legs"
    cap = SAR3DCaptioner.from_vqvae(vqvae, [caption], TINY)
    n = cap.num_tokens()
    ids, labels = cap.example(caption, n)
    words = lambda t: cap.tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = [cap.tokenizer.bos_token_id] + words("A chat between a curious user and an artificial intelligence "
                                                  "assistant. The assistant gives helpful, detailed, and polite "
                                                  "answers to the user's questions. USER:")
    suffix = words("Give a concise interpretation of the 3D data presented here ASSISTANT:")
    answer = words(caption) + [cap.tokenizer.eos_token_id]
    assert ids == prefix + [cap.start_id] + [cap.patch_id] * n + [cap.end_id] + suffix + answer
    start = len(prefix) + n + 2 + len(suffix)
    assert labels[:start] == [-100] * start and labels[start:] == answer

    codes = cap.truncate(_sequences(vqvae.cfg, 2))
    ds = CaptionDataset(cap, codes, [caption, "a blue mug"])
    assert (ds.labels[1][ds.attention_mask[1] == 0] == -100).all() and ds.attention_mask[1].sum() < len(ids)
    emb = cap.embed(ds.input_ids, ds.codes)
    # second way: the projector by hand on the l2-normalised codebook rows
    z = F.normalize(vqvae.quantizer.codebook.weight[codes], dim=-1)
    l1, l2, l3 = [m for m in cap.projector if isinstance(m, torch.nn.Linear)]
    z = l3(F.gelu(l2(F.gelu(l1(z)))))
    slots = torch.arange(len(prefix) + 1, len(prefix) + 1 + n)
    assert ds.input_ids[0, slots[0] - 1] == cap.start_id and ds.input_ids[0, slots[-1] + 1] == cap.end_id
    torch.testing.assert_close(emb[:, slots], z)
    table = cap.llm.get_input_embeddings().weight
    other = torch.ones(ds.input_ids.shape[1], dtype=torch.bool)
    other[slots] = False
    torch.testing.assert_close(emb[:, other], table[ds.input_ids[:, other]])
    # HF's loss on the spliced sequence is the answer-only cross-entropy computed here
    out = cap(ds.input_ids, ds.attention_mask, ds.labels, ds.codes)
    logits, target = out.logits[:, :-1], ds.labels[:, 1:]
    keep = target != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(logits[keep], target[keep]))


def test_the_colour_weighted_loss_is_the_weighted_mean_of_the_answer_tokens(vqvae):
    captions = ["a 3D model of a red chair, with four legs", "a blue and white mug", "a matte sedan"]
    cap = SAR3DCaptioner.from_vqvae(vqvae, captions, TINY)
    colour_ids = set(cap.colour_word_ids().tolist())
    assert colour_ids == {cap.words(" " + c)[0] for c in COLOURS} and len(colour_ids) == len(COLOURS)
    ds = CaptionDataset(cap, cap.truncate(_sequences(vqvae.cfg, 3)), captions)
    batch = {"input_ids": ds.input_ids, "labels": ds.labels, "attention_mask": ds.attention_mask, "codes": ds.codes}
    plain = CaptionObjective(cap)(batch, 1)["loss"]
    torch.testing.assert_close(CaptionObjective(cap, 1.0)(batch, 1)["loss"], plain)
    # by hand: per-token cross-entropy of the answers, "red", "blue" and "white" weighing 3, the rest 1
    logits = cap(ds.input_ids, ds.attention_mask, codes=ds.codes).logits[:, :-1]
    target = ds.labels[:, 1:]
    ce, weights = [], []
    for b in range(3):
        for t in range(target.shape[1]):
            if target[b, t] != -100:
                ce.append(F.cross_entropy(logits[b, t], target[b, t]))
                weights.append(3.0 if cap.tokenizer.convert_ids_to_tokens(int(target[b, t])) in COLOURS else 1.0)
    assert sum(w == 3.0 for w in weights) == 3
    expected = sum(w * c for w, c in zip(weights, ce)) / sum(weights)
    out = CaptionObjective(cap, 3.0)(batch, 1)
    torch.testing.assert_close(out["loss"], expected)
    assert not torch.allclose(out["loss"], plain) and 0 <= float(out["colour_accuracy"]) <= 100
    with pytest.raises(ValueError, match="must be positive"):
        CaptionObjective(cap, 0.0)


def test_the_twin_loss_ranks_each_caption_above_its_colour_swapped_twin(vqvae):
    from sar3d_core.captioner import answer_log_prob, twin_captions

    captions = ["a red-to-blue gradient vase", "a blue and white mug", "a grey chair"]
    twins = ["a blue-to-red gradient vase", "a white and blue mug", None]  # the plain chair has none
    cap = SAR3DCaptioner.from_vqvae(vqvae, captions, TINY)
    ds = CaptionDataset(cap, cap.truncate(_sequences(vqvae.cfg, 3)), captions, twins=twins)
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    plain = CaptionObjective(cap)(batch, 1)
    torch.testing.assert_close(CaptionObjective(cap, twin_weight=0.0)(batch, 1)["loss"], plain["loss"])
    out = CaptionObjective(cap, twin_weight=2.0)(batch, 1)
    # by hand: the sum of the answer tokens' log-probabilities, for the two rows with a twin
    def log_p(ids, labels):
        logits = cap(ids, torch.ones_like(ids), codes=ds.codes[:2]).logits[:, :-1]
        target = labels[:, 1:]
        return torch.stack([sum(torch.log_softmax(logits[b, t], -1)[target[b, t]]
                                for t in range(target.shape[1]) if target[b, t] != -100) for b in range(2)])
    true_ids = ds.input_ids[:2]
    twin_ids = batch["twin_input_ids"][:2]
    margin = log_p(true_ids, ds.labels[:2]) - log_p(twin_ids, batch["twin_labels"][:2])
    torch.testing.assert_close(out["loss"], plain["loss"] + 2.0 * F.softplus(-margin).mean(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(answer_log_prob(cap(true_ids, torch.ones_like(true_ids), codes=ds.codes[:2]).logits,
                                               ds.labels[:2]), log_p(true_ids, ds.labels[:2]), rtol=1e-4, atol=1e-4)
    assert float(out["twin_order"]) == 100 * float((margin > 0).float().mean())
    with pytest.raises(ValueError, match="twin"):
        CaptionObjective(cap, twin_weight=-1.0)
    # the world's twins: plain and checkered objects get none; a gradient's swaps its two colours
    seeds = [s for s in range(300) if make_object(s).attributes["pattern"] in ("plain", "checkered", "gradient")][:12]
    objects = [make_object(s) for s in seeds]
    got = twin_captions(seeds, [o.caption for o in objects])
    for o, t in zip(objects, got):
        if o.attributes["pattern"] != "gradient":
            assert t is None
        elif t is not None:
            c, c2 = o.attributes["colour"], o.attributes["secondary_colour"]
            assert t.index(c2) < t.index(c) and o.caption.lower().index(c) < o.caption.lower().index(c2)
    assert any(t is not None for t in got)
    assert twin_captions([seeds[0]], ["not this object's caption"]) == [None]


def test_keep_k_minus_2_feeds_exactly_the_tokens_of_the_first_k_minus_2_scales(vqvae):
    cfg = vqvae.cfg
    cap = SAR3DCaptioner.from_vqvae(vqvae, ["a red chair"], TINY)
    K = len(cfg.scales)
    assert cap.keep == K - 2 and cap.num_tokens() == cfg.truncated_tokens()[0] == sum(tokens_per_scale(cfg.scales)[:-2])
    seq = _sequences(cfg, 3)
    per_scale = sequence_to_tokens(seq, cfg.scales)
    torch.testing.assert_close(cap.truncate(seq), tokens_to_sequence(per_scale[:K - 2]))
    torch.testing.assert_close(cap.truncate(per_scale), cap.truncate(seq))  # per-scale maps, e.g. generated tokens
    ids, _ = cap.example("a red chair", cap.num_tokens())
    assert ids.count(cap.patch_id) == cfg.truncated_tokens()[0]
    for k in range(1, K + 1):
        assert cap.truncate(seq, k).shape == (3, cfg.truncated_tokens(k)[0])
    with pytest.raises(ValueError, match="between 1 and"):
        cap.truncate(seq, K + 1)
    # the paper's schedule: 765 of 2040 tokens
    paper = SAR3DConfig.paper()
    big = SAR3DCaptioner(cap.llm, cap.tokenizer, torch.randn(paper.codebook_size, 8), paper.scales)
    assert big.num_tokens() == 765 and total_tokens(paper.scales) == 2040


def test_the_optional_position_embedding_adds_one_vector_per_3d_token_position(vqvae, tmp_path):
    settings = CaptionerSettings(**{**TINY.__dict__, "position_embedding": True})
    cap = SAR3DCaptioner.from_vqvae(vqvae, ["a red chair"], settings)
    assert cap.token_position.shape == (total_tokens(vqvae.cfg.scales), 96)
    seq = _sequences(vqvae.cfg, 2)
    for keep in (2, cap.keep):
        codes = cap.truncate(seq, keep)
        ids = torch.tensor(cap.prompt_ids(codes.shape[1])).expand(2, -1)
        slots = ids[0] == cap.patch_id
        torch.testing.assert_close(cap.embed(ids, codes)[:, slots],
                                   cap.projector(cap.code_vectors(codes)) + cap.token_position[:codes.shape[1]])
    cap.save_pretrained(tmp_path / "c")
    again = SAR3DCaptioner.from_pretrained(tmp_path / "c")
    assert torch.equal(again.token_position, cap.token_position)
    assert SAR3DCaptioner.from_vqvae(vqvae, ["a red chair"], TINY).token_position is None  # the paper's default


@pytest.mark.parametrize("l2_codes", [False, True])
def test_code_vectors_are_the_l2_normalised_codebook(l2_codes):
    vq = _vqvae(1, l2_codes)
    cap = SAR3DCaptioner.from_vqvae(vq, ["a red chair"], TINY)
    ids = torch.randint(0, vq.cfg.codebook_size, (5, 7))
    torch.testing.assert_close(cap.code_vectors(ids), F.normalize(vq.quantizer.codebook.weight[ids], dim=-1))
    torch.testing.assert_close(cap.code_vectors(ids).norm(dim=-1), torch.ones(5, 7))
    if l2_codes:
        torch.testing.assert_close(cap.code_vectors(ids), vq.quantizer.lookup(ids))


# ------------------------------------------------------------------ training and decoding
def test_a_tiny_captioner_overfits_four_objects_and_greedy_generate_reproduces_them(trained):
    cap, seq, captions, rows = trained
    assert rows[-1]["loss"] < 0.1 < rows[0]["loss"]
    for r in rows:  # the cosine schedule with warm-up reaches the optimizer
        assert r["lr"] == pytest.approx(cosine_lr(r["step"], 80, 5e-3, 0.05))
    assert cap.caption(seq) == [_normal(c) for c in captions]
    # generate() with its KV cache against a plain argmax loop re-running the whole sequence
    codes = cap.truncate(seq[:2])
    ids = torch.tensor(cap.prompt_ids(codes.shape[1])).expand(2, -1)
    emb = cap.embed(ids, codes)
    out = []
    with torch.no_grad():
        for _ in range(6):
            nxt = cap.llm(inputs_embeds=emb, use_cache=False).logits[:, -1].argmax(-1)
            out.append(nxt)
            emb = torch.cat([emb, cap.llm.get_input_embeddings()(nxt)[:, None]], 1)
    assert torch.equal(cap.generate_ids(codes, max_new_tokens=6), torch.stack(out, 1))
    # sampling: reproducible by seed, and a very low temperature is greedy
    a, b = (cap.caption(seq, greedy=False, temperature=1.5, seed=s) for s in (0, 0))
    assert a == b
    assert cap.caption(seq, greedy=False, temperature=1e-4, seed=3) == cap.caption(seq)
    # beam search: one beam is greedy; four beams still recover what the model learned by heart
    assert cap.caption(seq, num_beams=1) == cap.caption(seq)
    assert cap.caption(seq, num_beams=4) == [_normal(c) for c in captions]


def test_the_optional_fhat_input_feeds_patches_of_the_vqvaes_accumulated_latent(vqvae, tmp_path):
    settings = CaptionerSettings(**{**TINY.__dict__, "fhat_input": True, "position_embedding": True})
    captions = [make_object(s).caption for s in SEEDS]
    cap = SAR3DCaptioner.from_vqvae(vqvae, captions, settings)
    seq = _sequences(vqvae.cfg, 4)
    h, w = vqvae.quantizer.latent_hw
    for keep in (1, cap.keep, cap.num_scales):
        codes = cap.truncate(seq, keep)
        f = vqvae.quantizer.tokens_to_fhat(sequence_to_tokens(seq, vqvae.cfg.scales), keep)  # (B, 3, C, h, w)
        patches = cap.fhat_patches(codes)
        assert patches.shape == (4, 3 * (h // 2) * (w // 2), 4 * f.shape[2]) == (4, cap.num_slots(codes.shape[1]), 32)
        # patch (plane 1, row 0, column 1) holds cells rows 0-1, columns 2-3 of plane 1, channel-major
        j = (h // 2) * (w // 2) + 1
        torch.testing.assert_close(patches[:, j], f[:, 1, :, 0:2, 2:4].reshape(4, -1))
        ids = torch.tensor(cap.prompt_ids(cap.num_slots(codes.shape[1]))).expand(4, -1)
        slots = ids[0] == cap.patch_id
        torch.testing.assert_close(cap.embed(ids, codes)[:, slots],
                                   cap.projector(cap.fhat_norm(patches)) + cap.token_position[:patches.shape[1]])
    with pytest.raises(ValueError, match="whole scales"):
        cap.fhat_patches(seq[:, :5])
    # training moves the projector, never the VQVAE's quantizer copy; a checkpoint brings it back
    ds = CaptionDataset(cap, cap.truncate(seq), captions)
    assert (ds.input_ids == cap.patch_id).sum(1).eq(cap.num_slots(ds.codes.shape[1])).all()
    frozen = {k: v.clone() for k, v in cap.fhat_quantizer.state_dict().items()}
    proj = cap.projector[0].weight.clone()
    for which in (1, 2):
        train_stage(cap, ds, which, TrainConfig(steps=2, batch_size=4, lr=1e-2, ckpt_every=0,
                                                out_dir=str(tmp_path / f"s{which}")))
    assert all(torch.equal(v, frozen[k]) for k, v in cap.fhat_quantizer.state_dict().items())
    assert not torch.equal(cap.projector[0].weight, proj)
    cap.save_pretrained(tmp_path / "c")
    again = SAR3DCaptioner.from_pretrained(tmp_path / "c")
    assert again.fhat_quantizer is not None and again.caption(seq) == cap.caption(seq)
    assert SAR3DCaptioner.from_vqvae(vqvae, ["a red chair"], TINY).fhat_quantizer is None  # the paper's default


def test_stage_1_trains_the_projector_and_special_tokens_with_the_llm_frozen(vqvae, tmp_path):
    captions = [make_object(s).caption for s in SEEDS]
    cap = SAR3DCaptioner.from_vqvae(vqvae, captions, TINY)
    ds = CaptionDataset(cap, cap.truncate(_sequences(vqvae.cfg, 4)), captions)
    before = {k: v.clone() for k, v in cap.state_dict().items()}
    train_stage(cap, ds, 1, TrainConfig(steps=3, batch_size=4, lr=1e-2, ckpt_every=0, out_dir=str(tmp_path / "s1")))
    after = cap.state_dict()
    emb = "llm.model.embed_tokens.weight"
    changed = (after[emb] != before[emb]).any(1)
    assert changed[[cap.start_id, cap.end_id]].all() and changed.sum() == 2  # <point_patch> is always replaced
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("llm.") and k != emb)
    assert all(not torch.equal(after[k], before[k]) for k in after if k.startswith("projector."))
    assert all(p.requires_grad for p in cap.parameters())  # the stage's freezing is undone afterwards
    # stage 0: text only, the LLM learns and the projector stays
    ds0 = CaptionDataset(cap, ds.codes, captions, text_only=True)
    assert not (ds0.input_ids == cap.patch_id).any()
    before = {k: v.clone() for k, v in cap.state_dict().items()}
    train_stage(cap, ds0, 0, TrainConfig(steps=2, batch_size=4, lr=1e-2, ckpt_every=0, out_dir=str(tmp_path / "s0")))
    after = cap.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("projector."))
    assert not torch.equal(after["llm.lm_head.weight"], before["llm.lm_head.weight"])


def test_the_blind_baseline_zeroes_the_3d_tokens(trained):
    cap, seq, _, _ = trained
    codes = cap.truncate(seq)
    ids = torch.tensor(cap.prompt_ids(codes.shape[1])).expand(len(codes), -1)
    blind, seen = cap.embed(ids, codes, blind=True), cap.embed(ids, codes)
    slots = ids[0] == cap.patch_id
    assert (blind[:, slots] == 0).all() and (seen[:, slots] != 0).any()
    torch.testing.assert_close(blind[:, ~slots], seen[:, ~slots])
    blind_captions = cap.caption(seq, blind=True)
    assert len(set(blind_captions)) == 1 and len(set(cap.caption(seq))) == 4


# ------------------------------------------------------------------ checkpoints, hub, fingerprint
def test_save_and_load_round_trip(trained, tmp_path):
    cap, seq, _, _ = trained
    cap.save_pretrained(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    again = SAR3DCaptioner.from_pretrained(tmp_path / "c")
    state, loaded = cap.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
    assert again.tokenizer.get_vocab() == cap.tokenizer.get_vocab()
    assert (again.keep, again.schedule, again.vqvae_fingerprint) == (cap.keep, cap.schedule, cap.vqvae_fingerprint)
    assert again.caption(seq) == cap.caption(seq)
    (tmp_path / "c" / "config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="sar3d-captioner/1"):
        SAR3DCaptioner.from_pretrained(tmp_path / "c")


def test_the_hub_path_loads_a_local_llama_and_resizes_its_embeddings(vqvae, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from sar3d_core.captioner import word_tokenizer

    tok = word_tokenizer(["a red chair"])
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    llm.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    cap = SAR3DCaptioner.from_vqvae(vqvae, llm=tmp_path / "llama")
    table = cap.llm.get_input_embeddings().weight
    assert table.shape == (len(tok) + 3, 64) and len(cap.tokenizer) == len(tok) + 3
    torch.testing.assert_close(table[:len(tok)], llm.get_input_embeddings().weight)  # old rows kept
    assert {cap.patch_id, cap.start_id, cap.end_id} == {len(tok), len(tok) + 1, len(tok) + 2}
    assert cap.meta["llm_source"] == str(tmp_path / "llama") and cap.projector[-1].out_features == 64
    assert len(cap.caption(_sequences(vqvae.cfg, 2), max_new_tokens=3)) == 2
    cap.save_pretrained(tmp_path / "c")
    assert SAR3DCaptioner.from_pretrained(tmp_path / "c").llm.get_input_embeddings().weight.shape == table.shape
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        SAR3DCaptioner.from_vqvae(vqvae, llm="no-such-org/no-such-llama")


def test_tokens_of_another_vqvae_are_refused_in_one_line(trained, vqvae, tmp_path, capsys):
    cap, seq, _, _ = trained
    other = _vqvae(7)
    assert other.fingerprint() != vqvae.fingerprint()
    save_tokens(tmp_path / "other.npz", seq[:1], other.cfg, ["x"], ["a red chair"], [-1], "elsewhere",
                other.fingerprint())
    with pytest.raises(ValueError, match="fingerprint"):
        input_sequences(cap, [f"{tmp_path / 'other.npz'}#0"])
    other.save_pretrained(tmp_path / "vq_other")
    with pytest.raises(ValueError, match="fingerprint"):
        input_sequences(cap, ["proc:3"], vqvae_folder=tmp_path / "vq_other")
    cap.save_pretrained(tmp_path / "c")
    assert cli.main(["caption", str(tmp_path / "other.npz"), "--checkpoint", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fingerprint" in err[0]


def test_sar3d_caption_prints_one_line_per_input_in_order(trained, vqvae, vqvae_folder, tmp_path, capsys):
    cap, seq, _, _ = trained
    cap.save_pretrained(tmp_path / "c")
    save_tokens(tmp_path / "t.npz", seq, vqvae.cfg, list("abcd"), [""] * 4, [-1] * 4, str(vqvae_folder),
                vqvae.fingerprint())
    args = ["caption", f"{tmp_path / 't.npz'}#2", "proc:5", f"{tmp_path / 't.npz'}#0", "--checkpoint",
            str(tmp_path / "c")]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    from sar3d_core.data import load_views
    from sar3d_core.tokens import encode_multiview

    proc = tokens_to_sequence(encode_multiview(vqvae, load_views("proc:5", 6, 64)))  # the VQVAE the captioner names
    assert lines == cap.caption(seq[[2]]) + cap.caption(proc) + cap.caption(seq[[0]])
    assert cli.main(["caption", str(tmp_path / "t.npz"), "--scales", "2", "--checkpoint", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().out.strip().split("\n") == cap.caption(seq, keep=2)

    save_tokens(tmp_path / "empty.npz", seq[:0], vqvae.cfg, [], [], [], "", vqvae.fingerprint())
    (tmp_path / "bad.glb").write_bytes(b"not a mesh")
    for bad, words in [([str(tmp_path / "empty.npz")], "no objects"), ([f"{tmp_path / 't.npz'}#9"], "out of range"),
                       ([str(tmp_path / "t.npz"), "--scales", "7"], "between 1 and 6"),
                       ([str(tmp_path / "bad.glb")], "bad.glb")]:
        assert cli.main(["caption", *bad, "--checkpoint", str(tmp_path / "c")]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and not captured.out, (bad, captured.err)


# ------------------------------------------------------------------ scores
def test_caption_parsing_recovers_the_worlds_category_and_main_colour():
    for obj in objects_in_split("test", 150) + [make_object(s) for s in range(150)]:
        assert parse_caption(obj.caption) == {"category": obj.category, "colour": obj.attributes["colour"]}, obj.caption
    assert parse_caption("A red-and-white striped pickup truck") == {"category": "car", "colour": "red"}
    assert parse_caption("a glossy grey hand weight") == {"category": "dumbbell", "colour": "grey"}
    assert parse_caption("something round") == {"category": None, "colour": None}


def test_scores_against_hand_counts():
    held = next(o for o in objects_in_split("test", 200)
                if (o.category, o.attributes["colour"]) in heldout_combinations())
    plain = next(o for o in objects_in_split("test", 200)
                 if (o.category, o.attributes["colour"]) not in heldout_combinations())
    refs, seeds = [held.caption, plain.caption], [held.seed, plain.seed]
    exact = score_captions(refs, refs, seeds)
    assert exact["category_accuracy"] == exact["colour_accuracy"] == 100 and exact["heldout"]["objects"] == 1
    assert exact["BLEU-4"] == pytest.approx(100) and exact["ROUGE-L"] == pytest.approx(100)
    other = next(c for c in COLOURS if c != held.attributes["colour"])
    wrong = score_captions([f"a {other} {held.category}", plain.caption], refs, seeds)
    assert wrong["colour_accuracy"] == 50 and wrong["category_accuracy"] == 100
    assert wrong["heldout"]["colour_accuracy"] == 0 and wrong["heldout"]["both_accuracy"] == 0

    def lcs(a, b):  # ROUGE-L by hand: longest common subsequence of the words
        t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
        return t[-1][-1]
    hyp, ref = "a tall red table with four legs", "a red round table standing on four legs"
    words = lambda s: re.findall(r"[a-z0-9]+", s)  # noqa: E731
    p, r = lcs(words(hyp), words(ref)) / len(words(hyp)), lcs(words(hyp), words(ref)) / len(words(ref))
    got = score_captions([hyp], [ref], [-1])
    assert got["ROUGE-L"] == pytest.approx(100 * 2 * p * r / (p + r), abs=0.01)
    assert 0 < got["BLEU-4"] < 100


def test_evaluation_runs_the_scales_ablation_and_the_blind_baseline(trained):
    cap, seq, captions, _ = trained
    loaded = {"sequence": seq, "caption": captions, "seed": list(SEEDS)}
    result = evaluate_captioner(cap, loaded)
    assert result["main"]["category_accuracy"] == 100 and result["main"]["colour_accuracy"] == 100
    assert list(result["keep_ablation"]) == list(range(1, cap.num_scales + 1))
    assert result["keep_ablation"][cap.keep] == result["main"]
    assert [s["tokens_fed"] for s in result["keep_ablation"].values()] == \
        [sum(tokens_per_scale(cap.schedule)[:k]) for k in range(1, cap.num_scales + 1)]
    true = [(make_object(s).category, make_object(s).attributes["colour"]) for s in SEEDS]
    blind = cap.caption(seq, blind=True)[0]  # one caption for all: right only where it matches the object
    expect = 100 * sum(parse_caption(blind)["category"] == c for c, _ in true) / 4
    assert result["blind"]["category_accuracy"] == expect


def test_the_training_and_evaluation_commands(trained, vqvae, vqvae_folder, tmp_path, capsys):
    import json
    import shlex

    from sar3d_core.captioner import DEFAULT_CHECKPOINT, TRAIN_COMMAND

    train_args = shlex.split(TRAIN_COMMAND.split(" -m sar3d_core.cli ")[1])
    parsed = cli.build_parser().parse_args(train_args)  # the shipped checkpoint's command is a valid one
    assert parsed.func is cli._cmd_train_captioner and parsed.position_embedding and parsed.steps == [300, 300, 2400]
    assert parsed.colour_word_weight == 3
    shipped = DEFAULT_CHECKPOINT / "training.json"
    if shipped.is_file():  # ... and the one its training record names
        assert json.loads(shipped.read_text())["command"] == TRAIN_COMMAND

    cap, seq, captions, _ = trained
    save_tokens(tmp_path / "t.npz", seq, vqvae.cfg, list("abcd"), captions, list(SEEDS), str(vqvae_folder),
                vqvae.fingerprint())
    assert cli.main(["train", "captioner", "--tokens", str(tmp_path / "t.npz"), "--width", "32", "--layers", "1",
                     "--heads", "2", "--steps", "2", "1", "2", "--batch-size", "2", "--position-embedding",
                     "--colour-word-weight", "2", "--out", str(tmp_path / "run"), "--export", str(tmp_path / "new")]) == 0
    new = SAR3DCaptioner.from_pretrained(tmp_path / "new")
    assert new.meta["vqvae_fingerprint"] == vqvae.fingerprint() and new.token_position is not None
    assert new.meta["training"]["stage_steps"] == [2, 1, 2] and new.meta["training"]["colour_word_weight"] == 2
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(train_args + ["--colour-word-weight", "0"])
    assert all((tmp_path / "run" / f"stage{s}" / "checkpoint" / "model.safetensors").is_file() for s in (0, 1, 2))
    capsys.readouterr()

    cap.save_pretrained(tmp_path / "c")
    assert cli.main(["eval", "captions", str(tmp_path / "t.npz"), "--checkpoint", str(tmp_path / "c"),
                     "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["main"]["category_accuracy"] == 100 and set(result) >= {"blind", "keep_ablation", "examples"}
    assert "keep=4 (SAR3D-LLM)" in capsys.readouterr().out
