"""Tests of the procedural world (sar3d_core.world): determinism and coverage of the categories,
the objects' placement, captions against their attributes, splits against the held-out pairs."""
import json
import re
from collections import Counter

import pytest
import torch

from sar3d_core.cameras import OBJECT_BOX
from sar3d_core.world import (CATEGORIES, CATEGORY_WORDS, COLOURS, EXTENT, FLOOR_Z, PATTERNS, SPLITS,
                              heldout_combinations, make_object, objects_in_split, split_of)


def _colours_named(caption):
    """Colour names in the order the caption uses them."""
    return re.findall(r"\b(" + "|".join(COLOURS) + r")\b", caption.lower())


def _categories_named(caption):
    return {c for c, words in CATEGORY_WORDS.items()
            if any(re.search(r"\b" + re.escape(w) + r"\b", caption.lower()) for w in words)}


def _pattern_named(caption):
    text = caption.lower()
    for pattern, regex in (("striped", r"stripe"), ("checkered", r"check"), ("dotted", r"\bdot|spot"),
                           ("gradient", r"gradient|fad|shading")):
        if re.search(regex, text):
            return pattern
    return "two-tone" if len(set(_colours_named(caption))) > 1 else "plain"


# ------------------------------------------------------------------ determinism and coverage

def test_same_seed_same_object_and_different_seeds_differ():
    a, b, c = make_object(7), make_object(7), make_object(8)
    assert a.to_dict() == b.to_dict()
    p = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    assert torch.equal(a.sdf(p), b.sdf(p)) and torch.equal(a.color(p), b.color(p))
    assert torch.equal(a.sample_surface(300, seed=3), b.sample_surface(300, seed=3))
    assert not torch.equal(a.sample_surface(300, seed=3), a.sample_surface(300, seed=4))
    assert a.to_dict() != c.to_dict() and not torch.allclose(a.sdf(p), c.sdf(p))


def test_to_dict_is_json(first_objects):
    for obj in first_objects[:50]:
        d = obj.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert set(d) == {"seed", "category", "attributes", "caption", "split"}
        assert 0.0 <= obj.shininess <= 1.0


def test_every_category_colour_and_pattern_is_reachable(first_objects):
    assert len(CATEGORIES) >= 12 and len(COLOURS) >= 10
    assert {o.category for o in first_objects[:300]} == set(CATEGORIES)
    assert {o.attributes["colour"] for o in first_objects[:300]} == set(COLOURS)
    assert {o.attributes["pattern"] for o in first_objects[:300]} == set(PATTERNS)
    assert all(all(0 <= v <= 1 for v in rgb) for rgb in COLOURS.values())
    assert all(len(o.parts) <= 15 for o in first_objects)


# ------------------------------------------------------------------ placement

def test_objects_lie_in_the_box_and_are_normalised(first_objects):
    g = torch.Generator().manual_seed(1)
    u = torch.rand(400, 2, generator=g) * 2 - 1
    faces = []  # points on the six faces of the object box
    for axis in range(3):
        for sign in (-1.0, 1.0):
            f = torch.empty(400, 3)
            f[:, axis] = sign * OBJECT_BOX
            f[:, [a for a in range(3) if a != axis]] = u * OBJECT_BOX
            faces.append(f)
    faces = torch.cat(faces)
    for obj in first_objects[:30]:
        pts = obj.sample_surface(600)
        assert pts.abs().max() < OBJECT_BOX
        assert (obj.sdf(faces) > 0).all()
        lo, hi = pts.min(0).values, pts.max(0).values
        # the exact bounding box used for the normalisation, checked against the samples
        # (which may miss a thin tip: a cone's apex has almost no area)
        assert EXTENT - 0.06 < float((hi - lo).max()) < EXTENT + 1e-4
        assert FLOOR_Z - 1e-4 < float(lo[2]) < FLOOR_Z + 0.03
        assert float((hi[:2] + lo[:2]).abs().max()) < 0.05  # centred in x and y


# ------------------------------------------------------------------ captions

def test_captions_name_category_colours_and_pattern(first_objects):
    for obj in first_objects[:300]:
        cap, attrs = obj.caption, obj.attributes
        assert _categories_named(cap) == {obj.category}, cap
        named = _colours_named(cap)
        assert named and named[0] == attrs["colour"], cap  # the main colour comes first
        if attrs["pattern"] == "plain":
            assert set(named) == {attrs["colour"]}, cap
        else:
            assert attrs["secondary_colour"] in named, cap
        assert _pattern_named(cap) == attrs["pattern"], cap


NUMBER_WORDS = {1: ("one", "single", "pedestal", "central"), 2: ("two",), 3: ("three", "3"), 4: ("four", "4")}
COUNTED = {"table": "legs", "stool": "legs", "sofa": "seats", "rocket": "fins", "snowman": "balls", "house": "floors",
           "cactus": "arms", "tree": None}


def test_captions_carry_the_shape_attributes(first_objects):
    checked = 0
    for obj in first_objects[:400]:
        if obj.category not in COUNTED:
            continue
        key = COUNTED[obj.category] or ("tiers" if obj.attributes["kind"] == "pine" else "crowns")
        n = obj.attributes[key]
        words = set(re.findall(r"[a-z0-9]+", obj.caption.lower().replace("two-tone", "")))
        if n == 0:
            assert words & {"no", "without", "armless"}, obj.caption
        else:
            others = {w for m, ws in NUMBER_WORDS.items() if m != n for w in ws} - set(NUMBER_WORDS[n])
            assert words & set(NUMBER_WORDS[n]) and not words & others, obj.caption
        checked += 1
    assert checked > 100
    for obj in first_objects[:400]:
        if obj.category == "car":
            nouns = {"sedan": ("car", "sedan"), "pickup": ("pickup",), "van": ("van", "minivan")}
            style = nouns[obj.attributes["style"]]
            assert any(re.search(rf"\b{w}\b", obj.caption) for w in style), obj.caption


def test_captions_are_varied(first_objects):
    captions = [o.caption for o in first_objects[:200]]
    assert len(set(captions)) >= 190
    starts = Counter(" ".join(c.lower().split()[:2]) for c in captions)
    assert starts.most_common(1)[0][1] < 0.3 * len(captions)  # many sentence shapes, not one template


# ------------------------------------------------------------------ splits

def test_split_proportions():
    counts = Counter(split_of(s) for s in range(3000))
    assert set(counts) == set(SPLITS)
    assert abs(counts["train"] / 3000 - 0.8) < 0.03
    assert abs(counts["val"] / 3000 - 0.1) < 0.02 and abs(counts["test"] / 3000 - 0.1) < 0.02


def test_heldout_pairs_stay_out_of_train(first_objects):
    held = heldout_combinations()
    assert len(held) >= 5 and all(c in CATEGORIES and k in COLOURS for c, k in held)
    pairs = [((o.category, o.attributes["colour"]), o.split) for o in first_objects]
    assert all(split == split_of(o.seed) for o, (_, split) in zip(first_objects, pairs))
    assert not any(pair in held for pair, split in pairs if split == "train")
    in_eval = {pair for pair, split in pairs if split != "train" and pair in held}
    assert len(in_eval) >= len(held) // 3


def test_objects_in_split_is_the_filtered_seed_sequence():
    val = objects_in_split("val", 6, start=10)
    expected = [s for s in range(10, 1000) if split_of(s) == "val"][:6]
    assert [o.seed for o in val] == expected and all(o.split == "val" for o in val)
    assert [o.caption for o in val] == [make_object(s).caption for s in expected]
    with pytest.raises(ValueError):
        objects_in_split("training", 1)


def test_the_paper_path_imports_without_the_world():
    import subprocess
    import sys

    paper = ("cameras", "views", "render", "data", "encoder", "quantizer", "triplane", "vqvae", "transformer",
             "sampling", "meshing", "flexicubes", "captioner", "metrics", "conditioning", "generate", "tokens")
    code = (f"import sys\nfor m in {paper!r}: __import__('sar3d_core.' + m)\n"
            "assert not [m for m in sys.modules if m.startswith('sar3d_core.world')], 'imported the world'")
    subprocess.run([sys.executable, "-c", code], check=True)
    # the world's renderer and data set builder stay reachable from their shared neighbours
    from sar3d_core import data, render, world
    from sar3d_core.data import build_dataset
    from sar3d_core.render import render_sdf

    assert render_sdf is render.render_sdf is world.render_sdf
    assert build_dataset is data.build_dataset is world.build_dataset
    with pytest.raises(AttributeError):
        render.no_such_name
