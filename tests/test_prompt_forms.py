"""Prompts as people write them: the world's short forms of each caption, how the text models
train on them (``ar_train.text_prompts``, ``ARDataset`` with forms, the tiny CLIP's masking of
equal prompts) and the plain-prompt evaluation (``ar_eval.short_prompts``)."""
import re

import pytest
import torch

from sar3d_core.ar_eval import short_prompts
from sar3d_core.ar_train import ARDataset, pick_forms, text_prompts
from sar3d_core.training import step_generator
from sar3d_core.conditioning import _string_ids
from sar3d_core.world import CATEGORIES, CATEGORY_WORDS, COLOURS, make_object, prompt_forms


def _names_category(text, category):
    return any(re.search(r"\b" + re.escape(w) + r"\b", text.lower()) for w in CATEGORY_WORDS[category])


@pytest.mark.parametrize("seed", range(40))
def test_every_form_names_the_category_and_the_short_ones_the_colour(seed):
    obj = make_object(seed)
    forms = prompt_forms(seed)
    assert forms[0] == obj.caption and len(forms) == 6 and len(set(forms[1:3])) >= 1
    assert all(_names_category(f, obj.category) for f in forms), forms
    colour = obj.attributes["colour"]
    short, bare, patterned = forms[1:3], forms[4], forms[3]
    for f in short:  # "a red chair", "red armchair": colour, noun and nothing else
        words = f.lower().split()
        assert words[-2 if words[0] not in ("a", "an") else 1] == colour or colour in f.lower(), f
        assert len(words) <= 5, f
    assert colour in patterned.lower()
    assert not any(re.search(r"\b" + c + r"\b", bare.lower()) for c in COLOURS), bare  # "a chair"
    assert not re.search(r"\ba [aeiou]", " ".join(forms).lower().replace("a one", "")), forms  # "an orange"


def test_forms_do_not_change_the_object():
    """The forms come from their own generator: the object and its caption are those of the seed alone."""
    a, b = make_object(123), make_object(123)
    assert a.prompts == b.prompts and a.caption == b.caption and a.attributes == b.attributes
    assert make_object(124).prompts != a.prompts


def test_text_prompts_flatten_the_forms_object_major_and_check_the_captions():
    seeds = [3, 7, 11]
    captions = [make_object(s).caption for s in seeds]
    flat, k = text_prompts(captions, seeds)
    assert k == 6 and len(flat) == 18 and flat[6:12] == prompt_forms(7)
    assert text_prompts(captions, seeds, prompt_forms=False) == (captions, 1)
    assert text_prompts(captions, [3, -1, 11]) == (captions, 1)  # not all procedural: captions only
    with pytest.raises(ValueError, match="retokenize"):
        text_prompts(["a green mug", *captions[1:]], seeds)


def test_dataset_with_forms_draws_a_form_of_the_same_object():
    n, k = 4, 3
    seq, teacher = torch.arange(n)[:, None].expand(n, 5), torch.zeros(n, 4, 2)
    pooled = torch.arange(n * k, dtype=torch.float)[:, None]  # row j belongs to object j // k
    cond = {"pooled": pooled, "tokens": pooled[:, None].expand(-1, 2, -1), "mask": torch.ones(n * k, 2, dtype=torch.bool)}
    ds = ARDataset(seq, teacher, cond, forms=k)
    assert ds[2]["pooled"][:, 0].tolist() == [6, 7, 8]  # every form of object 2 and nothing else
    batch = torch.utils.data.default_collate([ds[2], ds[0]])
    seen = set()
    for step in range(60):
        picked = pick_forms(batch, step_generator(step, seed=0, rank=0))
        again = pick_forms(batch, step_generator(step, seed=0, rank=0))
        assert torch.equal(picked["pooled"], again["pooled"])  # a function of the step: resumable
        assert picked["pooled"].shape == (2, 1) and picked["tokens"].shape == (2, 2, 1)
        assert int(picked["pooled"][1]) in (0, 1, 2)  # object 0 keeps its own forms
        seen.add(int(picked["pooled"][0]))
    assert seen == {6, 7, 8}
    with pytest.raises(ValueError, match="one row per object"):
        ARDataset(seq, teacher, cond, forms=2)


def test_equal_prompts_share_an_id():
    assert _string_ids(["a red mug", "a chair", "a red mug"]) == [0, 1, 0]


def test_short_prompts_cover_every_category_once_per_round_with_varied_colours():
    prompts = short_prompts(2)
    assert len(prompts) == 2 * len(CATEGORIES)
    for r in range(2):
        assert [c for _, c, _ in prompts[r * 15:(r + 1) * 15]] == list(CATEGORIES)
    assert len({k for _, _, k in prompts}) >= 10  # colours vary
    assert all(p.split()[-1] == c and k in p for p, c, k in prompts)
    assert ("an orange mug", "mug", "orange") in prompts
