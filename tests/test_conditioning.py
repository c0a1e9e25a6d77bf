"""Condition encoders (sar3d_core/conditioning.py): offline loading, text and image inputs, frozen, the tiny CLIP.

The hub-style loader is exercised on tiny random ``CLIPModel`` / ``Dinov2Model`` folders written by
``save_pretrained`` (nothing is downloaded); the shipped tiny CLIP is checked on fresh test renders.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sar3d_core import conditioning
from sar3d_core.conditioning import Condition, ConditionEncoder
from sar3d_core.training import Step, TrainConfig, read_log

WORDS = ["a", "red", "blue", "chair", "table", "with", "four", "legs", "tall", ",", "-", "two", "tone"]
MAX_LEN, WIDTH, PATCHES = 10, 32, 16  # CLIP vision 32 px / patch 8 and DINOv2 32 px / patch 8: 16 patches


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny random CLIPModel with a word-level tokenizer, and a tiny random Dinov2Model, saved locally."""
    from transformers import CLIPModel, Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    tokenizer = conditioning.build_tokenizer(WORDS, max_length=MAX_LEN)
    clip = CLIPModel(conditioning.tiny_clip_config(len(tokenizer), MAX_LEN, image_size=32, width=WIDTH, layers=2,
                                                   heads=2))
    clip.save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    dino = Dinov2Model(Dinov2Config(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                                    patch_size=8))
    dino.save_pretrained(root / "dino")
    return root / "clip", root / "dino"


@pytest.fixture(scope="module")
def encoder(folders):
    return ConditionEncoder.from_hub(text=folders[0], image=folders[1])


def test_hub_loader_reads_local_folders_and_names_every_output(encoder, folders):
    assert str(folders[0]) in encoder.name and str(folders[1]) in encoder.name and "DINOv2" in encoder.name
    assert encoder.encode_text("a red chair").name == encoder.text_name
    assert encoder.encode_image(torch.rand(3, 32, 32)).name == encoder.image_name
    assert encoder.image_size == 32 and encoder.prefix_tokens == 1  # from Dinov2Config (no preprocessor config)


def test_tokenizer_lower_cases_splits_punctuation_and_survives_save_load(tmp_path, folders):
    from transformers import AutoTokenizer

    tok = conditioning.build_tokenizer(WORDS, MAX_LEN)
    v = tok.get_vocab()
    assert [v[t] for t in conditioning.SPECIAL_TOKENS] == [0, 1, 2, 3]
    ids = tok("A Red, two-tone Sofa")["input_ids"]
    assert ids == [2, v["a"], v["red"], v[","], v["two"], v["-"], v["tone"], 1, 3]  # sofa: unknown
    loaded = AutoTokenizer.from_pretrained(str(folders[0]), local_files_only=True)
    assert loaded("A Red, two-tone Sofa")["input_ids"] == ids
    words = conditioning.caption_vocabulary(["A tall RED chair, with four legs"])
    assert {"tall", "red", "chair", ",", "four", "legs", "blue", "table"} <= set(words)  # + colours, categories


def test_encode_text_shapes_mask_and_eos_pooling(encoder):
    prompts = ["a red chair", "a tall blue table with four legs"]
    cond = encoder.encode_text(prompts)
    assert isinstance(cond, Condition) and len(cond) == 2
    assert cond.pooled.shape == (2, WIDTH) and cond.tokens.shape == (2, MAX_LEN, WIDTH)
    assert cond.mask.dtype == torch.bool and cond.mask.sum(1).tolist() == [3 + 2, 7 + 2]  # [BOS] words [EOS]
    assert cond.truncated == [False, False]
    for b, n in enumerate(cond.mask.sum(1).tolist()):  # CLIP pools the (final-LayerNorm) state of [EOS]
        torch.testing.assert_close(cond.pooled[b], cond.tokens[b, n - 1])
    alone = encoder.encode_text(prompts[0])  # padding and the batch never change a prompt's features
    torch.testing.assert_close(alone.pooled[0], cond.pooled[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond.pooled[0], cond.pooled[1], atol=1e-3)  # the comparison can fail


@pytest.mark.parametrize("bad", ["", "   ", [], ["a red chair", ""], [None]])
def test_empty_prompts_are_refused(encoder, bad):
    with pytest.raises(ValueError, match="non-empty"):
        encoder.encode_text(bad)


def test_overlong_prompts_are_truncated_with_a_warning_and_a_flag(encoder):
    long = " ".join(["a tall red chair with four legs"] * 3)  # 18 words > MAX_LEN - 2
    with pytest.warns(UserWarning, match="1 of 2 prompts .* truncated"):
        cond = encoder.encode_text([long, "a red chair"])
    assert cond.truncated == [True, False] and cond.mask.sum(1).tolist() == [MAX_LEN, 5]
    torch.testing.assert_close(cond.pooled[0], cond.tokens[0, MAX_LEN - 1])  # [EOS] is kept at the end


def test_an_overlong_prompt_is_an_error_when_truncation_is_off(encoder):
    """A typed prompt (``Pipeline.generate``, the CLI) is refused rather than silently cut."""
    long = " ".join(["a tall red chair with four legs"] * 3)
    with pytest.raises(ValueError, match=rf"is \d+ tokens long and the text encoder reads at most {MAX_LEN}"):
        encoder.encode_text(["a red chair", long], truncate=False)
    assert encoder.encode_text("a red chair", truncate=False).truncated == [False]  # a prompt that fits passes


def test_images_as_files_pil_numpy_and_torch_give_the_same_features(encoder, tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255
    Image.fromarray(hwc).save(tmp_path / "view.png")
    conds = [encoder.encode_image(x) for x in (Image.fromarray(hwc), hwc, chw, chw[None], [hwc, hwc],
                                               tmp_path / "view.png")]
    for cond in conds:
        assert cond.pooled.shape[1:] == (WIDTH,) and cond.tokens.shape[1:] == (PATCHES, WIDTH)
        assert cond.mask.all() and cond.mask.shape == cond.tokens.shape[:2]
        torch.testing.assert_close(cond.pooled[0], conds[0].pooled[0], atol=1e-5, rtol=1e-5)
    other = encoder.encode_image(np.ascontiguousarray(hwc[::-1]))
    assert not torch.allclose(other.pooled, conds[0].pooled, atol=1e-3)  # the comparison can fail


def test_alpha_is_composited_on_white_and_any_size_is_accepted(encoder):
    white = encoder.encode_image(torch.ones(3, 32, 32)).pooled
    clear = np.zeros((32, 32, 4), dtype=np.uint8)  # fully transparent black: white after compositing
    torch.testing.assert_close(encoder.encode_image(Image.fromarray(clear, "RGBA")).pooled, white)
    half = torch.cat([torch.tensor([1.0, 0, 0])[:, None, None].expand(3, 32, 32), torch.full((1, 32, 32), 0.5)])
    pink = torch.tensor([1.0, 0.5, 0.5])[:, None, None].expand(3, 32, 32)  # red over white at alpha 1/2
    torch.testing.assert_close(encoder.encode_image(half).pooled, encoder.encode_image(pink).pooled)
    wide = torch.rand(3, 20, 32)  # padded with white to 32 x 32, nothing cropped
    square = torch.ones(3, 32, 32)
    square[:, 6:26] = wide
    torch.testing.assert_close(encoder.encode_image(wide).pooled, encoder.encode_image(square).pooled)
    for size in [(7, 300), (513, 64), (1, 1)]:  # any size, also grey, is resized to the encoder's input
        assert encoder.encode_image(np.zeros(size, dtype=np.uint8)).tokens.shape == (1, PATCHES, WIDTH)
    batch = [np.zeros((40, 50, 3), np.uint8), Image.new("RGBA", (64, 64)), torch.rand(4, 9, 9)]
    assert encoder.encode_image(batch).pooled.shape == (3, WIDTH)


@pytest.mark.parametrize("bad, error", [(torch.rand(3, 8, 8) * 2, ValueError), (torch.rand(5, 8, 8), ValueError),
                                        (np.zeros((8, 8, 2), np.uint8), ValueError), (3.5, TypeError),
                                        ("no/such/image.png", FileNotFoundError),
                                        ([], ValueError), (torch.zeros(3, 0, 8), ValueError)])
def test_bad_images_are_refused_clearly(encoder, bad, error):
    with pytest.raises(error):
        encoder.encode_image(bad)


def test_encoders_are_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.ModuleDict({"cond": encoder, "head": torch.nn.Linear(WIDTH, 1)}).train()
    assert parent["head"].training and not encoder.training and not encoder.text_model.training
    cond = encoder.encode_text("a red chair")
    assert not cond.pooled.requires_grad and not cond.tokens.requires_grad
    loss = parent["head"](cond.pooled).sum()  # a trainable head on top still gets gradients
    loss.backward()
    assert parent["head"].weight.grad is not None


def test_missing_hub_models_raise_one_line_errors(folders, monkeypatch):
    with pytest.raises(FileNotFoundError, match="hf download") as err:
        ConditionEncoder.from_hub(text="sar3d-test/no-such-model-xyz", image=None)
    assert "\n" not in str(err.value) and "tiny_clip" in str(err.value)
    with pytest.raises(FileNotFoundError, match="neither a local folder"):
        ConditionEncoder.from_hub(text=None, image=folders[1].parent / "no" / "such-folder")
    with pytest.raises(ValueError, match="not a CLIP text encoder"):
        ConditionEncoder.from_hub(text=folders[1], image=None)
    monkeypatch.setattr(conditioning, "HUB_TEXT", "sar3d-test/no-such-model-xyz")
    with pytest.raises(FileNotFoundError):
        conditioning.load_condition_encoder("hub")
    monkeypatch.setattr(conditioning, "TINY_CLIP_FOLDER", folders[0])  # auto falls back to the tiny CLIP
    auto = conditioning.load_condition_encoder("auto")
    assert conditioning.TINY_CLIP_NAME in auto.name and auto.encode_image(torch.rand(3, 32, 32)).tokens.shape[1] == 16
    with pytest.raises(ValueError, match="kind"):
        conditioning.load_condition_encoder("large")


COLOURS = {"red": (1.0, 0.1, 0.1), "blue": (0.1, 0.1, 1.0), "green": (0.1, 0.9, 0.1), "white": (0.9, 0.9, 0.9)}


def captioned_toys(views: int = 2) -> conditioning.CaptionedRenders:
    """8 toy objects (a coloured bar, short for a chair, tall for a table on white) with two prompt forms each."""
    g = torch.Generator().manual_seed(0)
    prompts, images = [], []
    for colour, rgb in COLOURS.items():
        for category, half_height in (("chair", 6), ("table", 10)):
            prompts.append([f"a {colour} {category}", f"{colour} {category}"])
            view = torch.ones(3, 32, 32)
            view[:, 16 - half_height:16 + half_height, 10:22] = torch.tensor(rgb)[:, None, None]
            images.append(torch.stack([(view + 0.05 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)
                                       for _ in range(views)]))
    return conditioning.CaptionedRenders((torch.stack(images) * 255).round().to(torch.uint8), prompts, toy_tokenizer())


def toy_tokenizer():
    return conditioning.build_tokenizer(WORDS + list(COLOURS), max_length=MAX_LEN)


def toy_clip():
    return conditioning.new_tiny_clip(len(toy_tokenizer()), MAX_LEN, seed=0, image_size=32, width=WIDTH, layers=1,
                                      heads=2)


def clip_config(out_dir, **kw):
    return TrainConfig(**{"steps": 24, "batch_size": 8, "lr": 3e-3, "log_every": 1, "ckpt_every": 8, "seed": 3,
                          "out_dir": str(out_dir), "device": "cpu", "betas": (0.9, 0.999), **kw})


def full_batch_loss(clip, data) -> float:
    """The objective on all 8 objects at one fixed step (the same views, forms and augmentation every call)."""
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        return conditioning.ClipObjective(clip)(batch, Step(1, seed=5))["loss"].item()


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory):
    """A toy CLIP trained for 24 steps through training.train, uninterrupted."""
    data, clip = captioned_toys(), toy_clip()
    before = full_batch_loss(clip, data)
    rows = conditioning.fit_clip(clip, data, clip_config(tmp_path_factory.mktemp("clip")))
    return {"clip": clip, "data": data, "rows": rows, "before": before, "after": full_batch_loss(clip, data)}


def test_clip_objective_masks_equal_prompts_and_agrees_with_clip_logits(monkeypatch):
    from sar3d_core import featnet

    monkeypatch.setattr(featnet, "augment", lambda x, g: x)  # the same pixels as the reference below
    clip, data, tok = toy_clip(), captioned_toys(views=1), toy_tokenizer()
    prompts = ["a red chair", "a red chair", "a blue table"]  # objects 0 and 1 share their prompt
    data = conditioning.CaptionedRenders(data.images[[0, 1, 3]], [[p] for p in prompts], tok)
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    with torch.no_grad():
        loss = conditioning.ClipObjective(clip)(batch, Step(1))["loss"]
        x = (batch["images"][:, 0].float() / 255 - torch.tensor(conditioning.CLIP_MEAN)[:, None, None]) \
            / torch.tensor(conditioning.CLIP_STD)[:, None, None]
        enc = tok(prompts, padding="max_length", return_tensors="pt")
        logits = clip(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x).logits_per_text
        logits[0, 1] = logits[1, 0] = float("-inf")  # not each other's negatives
        target = torch.arange(3)
        expected = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
        torch.testing.assert_close(loss, expected)
        pair = torch.utils.data.default_collate([data[0], data[1]])  # only equal prompts: nothing to tell apart
        assert conditioning.ClipObjective(clip)(pair, Step(1))["loss"].item() == 0.0
    with pytest.raises(ValueError, match="same number"):
        conditioning.CaptionedRenders(data.images, [["a"], ["a", "b"], ["c"]], tok)


def test_twin_negatives_add_each_render_its_swapped_prompt(monkeypatch):
    from sar3d_core import featnet

    monkeypatch.setattr(featnet, "augment", lambda x, g: x)
    clip, data, tok = toy_clip(), captioned_toys(views=1), toy_tokenizer()
    prompts = ["a red chair", "a blue table", "a green chair"]
    twins = [["a blue chair"], [None], ["a white chair"]]  # object 1 has no twin: no extra negative
    data = conditioning.CaptionedRenders(data.images[[0, 3, 4]], [[p] for p in prompts], tok, twins)
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    with torch.no_grad():
        loss = conditioning.ClipObjective(clip)(batch, Step(1))["loss"]
        x = (batch["images"][:, 0].float() / 255 - torch.tensor(conditioning.CLIP_MEAN)[:, None, None]) \
            / torch.tensor(conditioning.CLIP_STD)[:, None, None]
        texts = prompts + ["a blue chair", "a white chair"]
        enc = tok(texts, padding="max_length", return_tensors="pt")
        logits = clip(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x).logits_per_image
        twin = torch.tensor([logits[0, 3], float("-inf"), logits[2, 4]])  # each render against its own twin only
        target = torch.arange(3)
        expected = (torch.nn.functional.cross_entropy(logits[:, :3].T, target)
                    + torch.nn.functional.cross_entropy(torch.cat([logits[:, :3], twin[:, None]], 1), target)) / 2
        torch.testing.assert_close(loss, expected)
        plain = conditioning.CaptionedRenders(data.images, [[p] for p in prompts], tok)
        without = conditioning.ClipObjective(clip)(torch.utils.data.default_collate([plain[i] for i in range(3)]),
                                                   Step(1))["loss"]
        assert loss > without  # a hard negative can only add to the loss
    with pytest.raises(ValueError, match="twins"):
        conditioning.CaptionedRenders(data.images, [[p] for p in prompts], tok, [["x"], [None]])


def test_twin_prompts_swap_the_two_colours_with_their_articles():
    from sar3d_core.world import make_object

    assert conditioning.swap_colours("a red-to-blue vase, red at the bottom", "red", "blue") == \
        "a blue-to-red vase, blue at the bottom"
    seen = set()
    for seed in range(400):
        obj = make_object(seed)
        forms = [obj.caption, *obj.prompts]
        twins = conditioning.twin_prompts(obj, forms)
        pattern, c, c2 = (obj.attributes[k] for k in ("pattern", "colour", "secondary_colour"))
        if pattern in ("plain", "checkered"):
            assert twins == [None] * len(forms)  # no order to get wrong
            continue
        for form, twin in zip(forms, twins):
            if twin is not None:
                seen.add(pattern)
                assert conditioning.swap_colours(twin, c, c2).replace("an ", "a ") == \
                    form.lower().replace("an ", "a ")
                for colour in (c, c2):  # the article agrees with the colour it now stands before
                    wrong = f" a {colour}" if colour[0] in "aeiou" else f" an {colour}"
                    assert wrong not in " " + twin, twin
    assert seen == set(conditioning.ORDERED_PATTERNS)


def test_clip_trains_through_the_training_loop_and_lowers_its_loss(trained_clip, tmp_path):
    rows = trained_clip["rows"]
    assert [r["step"] for r in rows] == list(range(1, 25)) and {"loss", "temperature", "lr"} <= rows[0].keys()
    # chance on 8 pairs is ln 8 = 2.08; measured 2.38 -> 0.63
    assert trained_clip["after"] < 0.5 * trained_clip["before"], trained_clip
    again = toy_clip()  # deterministic for a seed: a second run gives the same weights
    conditioning.fit_clip(again, captioned_toys(), clip_config(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(state(again).values(), state(trained_clip["clip"]).values()))
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "checkpoint" / "model.safetensors").is_file()


def test_killed_clip_run_resumes_to_the_same_weights(trained_clip, tmp_path, monkeypatch):
    forward = conditioning.ClipObjective.forward

    def killed_at_13(self, batch, step):
        if step == 13:
            raise KeyboardInterrupt
        return forward(self, batch, step)

    monkeypatch.setattr(conditioning.ClipObjective, "forward", killed_at_13)
    with pytest.raises(KeyboardInterrupt):
        conditioning.fit_clip(toy_clip(), captioned_toys(), clip_config(tmp_path))
    monkeypatch.setattr(conditioning.ClipObjective, "forward", forward)
    clip = toy_clip()  # a fresh process: fresh weights, then the step-8 checkpoint
    rows = conditioning.fit_clip(clip, captioned_toys(), clip_config(tmp_path), resume=True)
    assert rows == trained_clip["rows"]
    expected = state(trained_clip["clip"])
    assert all(torch.equal(v, expected[k]) for k, v in state(clip).items())


def test_saved_tiny_clip_is_what_the_encoder_loads(trained_clip, tmp_path):
    clip, tok = trained_clip["clip"], toy_tokenizer()
    conditioning.save_tiny_clip(tmp_path, clip, tok)
    enc = ConditionEncoder.tiny_clip(tmp_path)
    prompts = ["a red chair", "a tall blue table"]
    with torch.no_grad():
        ids = tok(prompts, padding="max_length", return_tensors="pt")
        direct = clip.text_model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).pooler_output
    torch.testing.assert_close(enc.encode_text(prompts).pooled, direct)
    with torch.no_grad():
        x = (trained_clip["data"].images[:2, 0].float() / 255 - enc.mean) / enc.std
        direct = clip.vision_model(pixel_values=x).pooler_output
    torch.testing.assert_close(enc.encode_image(trained_clip["data"].images[:2, 0]).pooled, direct)


def test_training_command_writes_a_loadable_tiny_clip_and_resumes(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("SAR3D_CACHE", str(tmp_path / "cache"))  # renders of 6 objects, not the shared cache
    kw = dict(num_objects=6, views=1, epochs=1, batch_size=2, threads=1, eval_count=3, progress=False,
              run_dir=tmp_path / "run")
    conditioning.train_tiny_clip(tmp_path / "clip", **kw)
    metrics = json.loads((tmp_path / "clip" / "metrics.json").read_text())
    assert metrics["retrieval"]["test_objects"] == 3 and "--objects 6" in metrics["command"]
    assert metrics["steps"] == 3 and metrics["prompt_forms_per_object"] == 6  # 6 train objects / 2 per batch
    log = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in log] == [3] and metrics["final_loss"] == round(log[-1]["loss"], 4)
    assert (tmp_path / "run" / "loss.png").is_file()
    enc = ConditionEncoder.tiny_clip(tmp_path / "clip")
    assert enc.image_size == 64 and str(tmp_path / "clip") in enc.name  # from its preprocessor_config.json
    assert enc.encode_text("a red chair").tokens.shape == (1, 32, 128)
    assert enc.encode_image(torch.rand(2, 3, 64, 64)).tokens.shape == (2, 64, 128)
    # resumed from the finished run's checkpoint: no step is run again, the same model is exported
    first = load_file(tmp_path / "clip" / "model.safetensors")
    conditioning.train_tiny_clip(tmp_path / "again", resume=True, **kw)
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    # a text-only fine-tune: the vision tower's weights and name stay, the text tower gets a name of its own
    conditioning.train_tiny_clip(tmp_path / "text", **{**kw, "run_dir": tmp_path / "run_text"},
                                 twin_negatives=True, text_only_from=tmp_path / "clip")
    text = load_file(tmp_path / "text" / "model.safetensors")
    assert all(torch.equal(text[k], first[k]) for k in first if k.startswith(("vision_model", "visual_projection")))
    names, base = conditioning.tiny_clip_tower_names(tmp_path / "text"), conditioning.tiny_clip_tower_names(tmp_path / "clip")
    assert names[1] == base[1] and names[0].startswith(base[0]) and names[0] != base[0] and "twins" in names[0]
    tuned = ConditionEncoder.tiny_clip(tmp_path / "text")
    assert tuned.text_name.startswith(names[0]) and tuned.image_name.startswith(names[1])


@pytest.fixture(scope="module")
def shipped():
    if not (conditioning.TINY_CLIP_FOLDER / "model.safetensors").is_file():
        pytest.skip(f"the tiny CLIP {conditioning.TINY_CLIP_FOLDER} is absent (train it: {conditioning.TRAIN_COMMAND})")
    return conditioning.TINY_CLIP_FOLDER


def test_shipped_tiny_clip_retrieves_fresh_test_renders(shipped):
    from transformers import AutoTokenizer, CLIPModel

    from sar3d_core.featnet import render_objects
    from sar3d_core.world import objects_in_split

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the SDF renderer is fastest on one thread
    try:
        objects = objects_in_split("test", 24, start=2000)  # not the 100 test objects of metrics.json
        images = render_objects(objects, 1, seed=77, progress=False)
    finally:
        torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(str(shipped), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(shipped), local_files_only=True)
    acc = conditioning.clip_retrieval(model, tokenizer, [o.caption for o in objects], images)
    # measured 0.71 / 0.96 (chance: 1/24, 5/24)
    assert acc["text_to_image_top1"] >= 0.4 and acc["text_to_image_top5"] >= 0.75, acc

    enc = ConditionEncoder.tiny_clip()
    assert enc.name.count(conditioning.TINY_CLIP_NAME) == 2
    text, image = enc.encode_text([o.caption for o in objects[:3]]), enc.encode_image(images[:3])
    assert text.pooled.shape == (3, 128) and text.tokens.shape == (3, 32, 128) and not any(text.truncated)
    assert image.pooled.shape == (3, 128) and image.tokens.shape == (3, 64, 128)
