"""Tests of the procedural world (sar3d_core.shapes): geometry against brute force and
closed forms, captions against their attributes, splits against the held-out pairs."""
import json
import math
import re
from collections import Counter

import numpy as np
import pytest
import torch

from sar3d_core import shapes
from sar3d_core.shapes import (CATEGORIES, CATEGORY_WORDS, COLOURS, EXTENT, FLOOR_Z, OBJECT_BOX, PATTERNS, SPLITS,
                               Part, ProceduralObject, heldout_combinations, make_object, objects_in_split,
                               split_of)


@pytest.fixture(scope="module")
def first_objects():
    return [make_object(seed) for seed in range(500)]


@pytest.fixture(scope="module")
def one_per_category(first_objects):
    found = {}
    for obj in first_objects:
        found.setdefault(obj.category, obj)
    return [found[c] for c in CATEGORIES]


def _single(*parts):
    """An object made of the given parts, placed as they are (no scaling)."""
    palette = (torch.zeros(len(parts), 3), torch.ones(len(parts), 3), torch.zeros(len(parts)))
    return ProceduralObject(0, "test", {"pattern": "plain"}, "", "train", 0.0, parts=list(parts), palette=palette)


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


# ------------------------------------------------------------------ primitives against brute force

PRIMITIVES = [Part("box", (0.2, 0.15, 0.1, 0.03), (0.05, 0.0, 0.0), spin=0.4),
              Part("sphere", (0.2,), (0.0, 0.1, 0.0)), Part("cylinder", (0.15, 0.2), axis="x"),
              Part("cone", (0.2, 0.05, 0.15), (0.0, 0.0, 0.05), axis="y", spin=0.3), Part("cone", (0.0, 0.2, 0.15)),
              Part("torus", (0.2, 0.05), axis="y"), Part("capsule", (0.08, 0.15), axis="x"),
              Part("box", (0.3, 0.05, 0.1), (0.0, 0.0, 0.1), axis="x", spin=math.pi / 4)]


def _inside(part, q):
    """Membership of points in a primitive, from its defining inequalities (not its SDF)."""
    x, y, z = part.to_local(q[:, 0].double(), q[:, 1].double(), q[:, 2].double())
    rho = torch.sqrt(x * x + y * y)
    if part.shape == "box":
        hx, hy, hz, r = (*part.size, 0.0)[:4]
        excess = torch.stack([x.abs() - (hx - r), y.abs() - (hy - r), z.abs() - (hz - r)]).clamp_min(0)
        return excess.norm(dim=0) <= r
    if part.shape == "sphere":
        return x * x + y * y + z * z <= part.size[0] ** 2
    if part.shape == "cylinder":
        return (rho <= part.size[0]) & (z.abs() <= part.size[1])
    if part.shape == "cone":  # the radius grows linearly from r1 at z = -h to r2 at z = h
        r1, r2, h = part.size
        return (z.abs() <= h) & (rho <= r1 + (r2 - r1) * (z + h) / (2 * h))
    if part.shape == "torus":
        return (rho - part.size[0]) ** 2 + z * z <= part.size[1] ** 2
    r, h = part.size  # capsule
    return x * x + y * y + (z - z.clamp(-h, h)) ** 2 <= r * r


@pytest.mark.parametrize("part", PRIMITIVES, ids=lambda p: f"{p.shape}-{p.axis}")
def test_exact_primitive_sdf_equals_distance_to_its_sampled_surface(part):
    obj = _single(part)
    surface = obj.sample_surface(10000)
    assert obj.sdf(surface).abs().max() < 1e-5
    g = torch.Generator().manual_seed(2)
    q = torch.cat([torch.rand(300, 3, generator=g) * 0.8 - 0.4,  # random points, and points near the surface
                   surface[:300] + 0.02 * torch.randn(300, 3, generator=g)])
    f, nearest = obj.sdf(q), torch.cdist(q, surface).min(1).values
    assert (f.abs() <= nearest + 1e-5).all()  # never more than the distance to a surface point
    assert (nearest - f.abs()).max() < 0.015  # and no less than it, up to the sample spacing
    inside = _inside(part, q)
    assert 60 < int(inside.sum()) < 540 and torch.equal(f < 0, inside)


@pytest.mark.parametrize("part", [Part("ellipsoid", (0.3, 0.2, 0.1)), Part("dome", (0.3, 0.2, 0.15), spin=0.5)],
                         ids=["ellipsoid", "dome"])
def test_ellipsoid_sdf_is_a_bound_of_the_distance(part):
    obj = _single(part)
    surface = obj.sample_surface(10000)
    assert obj.sdf(surface).abs().max() < 1e-5
    q = torch.rand(300, 3, generator=torch.Generator().manual_seed(3)) * 0.8 - 0.4
    f, nearest = obj.sdf(q), torch.cdist(q, surface).min(1).values
    assert (f.abs() <= nearest + 1e-5).all()
    assert (f.abs() >= 0.3 * nearest - 1e-3).all()  # min(r) / max(r) = 1/3


def test_box_samples_are_uniform_by_area():
    h = (0.3, 0.2, 0.1)
    pts = _single(Part("box", h)).sample_surface(20000).numpy()
    areas = np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]])
    for axis in range(3):  # share of the points on the two faces normal to each axis
        share = np.mean(np.isclose(np.abs(pts[:, axis]), h[axis], atol=1e-6))
        expected = areas[axis] / areas.sum()
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / len(pts))


def test_torus_and_cone_samples_follow_the_area_element():
    R, r = 0.2, 0.08
    pts = _single(Part("torus", (R, r))).sample_surface(20000).numpy()
    inner = np.mean(np.hypot(pts[:, 0], pts[:, 1]) < R)  # inner half: 2 pi r (pi R - 2 r) of 4 pi^2 R r
    expected = (math.pi * R - 2 * r) / (2 * math.pi * R)
    assert abs(inner - expected) < 4 * math.sqrt(expected * (1 - expected) / len(pts))

    r1, r2, h = 0.3, 0.1, 0.2
    pts = _single(Part("cone", (r1, r2, h))).sample_surface(30000).numpy()
    side = pts[np.abs(np.abs(pts[:, 2]) - h) > 1e-6]
    slant = math.hypot(r1 - r2, 2 * h)  # frustum lateral areas, lower half over the whole
    expected = math.pi * (r1 + (r1 + r2) / 2) * slant / 2 / (math.pi * (r1 + r2) * slant)
    share = np.mean(side[:, 2] < 0)
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / len(side))
    caps = np.isclose(np.abs(pts[:, 2]), h, atol=1e-6).mean()
    expected = math.pi * (r1 ** 2 + r2 ** 2) / (math.pi * (r1 ** 2 + r2 ** 2) + math.pi * (r1 + r2) * slant)
    assert abs(caps - expected) < 4 * math.sqrt(expected * (1 - expected) / len(pts))


def test_ellipsoid_area_matches_the_spheroid_closed_form():
    a, c = 0.3, 0.1  # oblate: A = 2 pi a^2 (1 + (1 - e^2) / e atanh(e))
    e = math.sqrt(1 - c * c / (a * a))
    closed = 2 * math.pi * a * a * (1 + (1 - e * e) / e * math.atanh(e))
    assert abs(shapes._ellipsoid_area(a, a, c) - closed) < 1e-4 * closed


def test_union_samples_cover_the_visible_surface_uniformly():
    # two overlapping spheres: each loses a cap of area 2 pi r h inside the other
    r1, r2, d = 0.2, 0.12, 0.25
    x0 = (d * d + r1 * r1 - r2 * r2) / (2 * d)  # the intersection plane, from the first centre
    visible = np.array([4 * math.pi * r1 ** 2 - 2 * math.pi * r1 * (r1 - x0),
                        4 * math.pi * r2 ** 2 - 2 * math.pi * r2 * (r2 - (d - x0))])
    obj = _single(Part("sphere", (r1,), (0.0, 0.0, 0.0)), Part("sphere", (r2,), (d, 0.0, 0.0)))
    pts = obj.sample_surface(20000)
    assert obj.sdf(pts).abs().max() < 1e-5
    on_first = float((pts.norm(dim=1) - r1).abs().lt(1e-5).float().mean())
    expected = visible[0] / visible.sum()
    assert abs(on_first - expected) < 4 * math.sqrt(expected * (1 - expected) / len(pts))


# ------------------------------------------------------------------ the objects' SDFs

def test_surface_samples_are_on_the_surface_and_spread_over_parts(one_per_category):
    for obj in one_per_category:
        pts = obj.sample_surface(1000)
        assert pts.shape == (1000, 3) and pts.dtype == torch.float32
        assert obj.sdf(pts).abs().max() < 1e-3
        d_PN = torch.stack(obj._distances(pts)).abs()
        hit = Counter(d_PN.argmin(0).tolist())
        assert len(hit) >= min(2, len(obj.parts)) and max(hit.values()) < 0.95 * len(pts), obj.category


def test_sdf_is_lipschitz_1(one_per_category):
    g = torch.Generator().manual_seed(4)
    for obj in one_per_category:
        a = torch.rand(3000, 3, generator=g) * 1.2 - 0.6
        step = torch.randn(3000, 3, generator=g) * torch.tensor([0.002, 0.02, 0.2]).repeat(1000)[:, None]
        b = a + step
        assert ((obj.sdf(a) - obj.sdf(b)).abs() <= step.norm(dim=1) + 1e-5).all(), obj.category


def test_sdf_spheres_contain_no_surface_and_are_tight(one_per_category):
    g = torch.Generator().manual_seed(5)
    for obj in one_per_category:
        surface = obj.sample_surface(4000)
        q = torch.cat([torch.rand(200, 3, generator=g) - 0.5,
                       surface[:200] + 0.03 * torch.randn(200, 3, generator=g)])
        f, nearest = obj.sdf(q), torch.cdist(q, surface).min(1).values
        # the ball of radius |sdf(p)| around p holds no surface point
        assert (f.abs() <= nearest + 1e-5).all(), obj.category
        # and the bound is close to the distance (not a trivially small function)
        far = nearest > 0.05
        assert (f.abs()[far] / nearest[far]).median() > 0.9, obj.category
        assert (f < 0).any() and (f > 0).any()


def test_sdf_accepts_float64_and_returns_float32():
    obj = make_object(3)
    p = torch.rand(100, 3, dtype=torch.float64) - 0.5
    out = obj.sdf(p)
    assert out.shape == (100,) and out.dtype == torch.float32
    assert torch.allclose(out, obj.sdf(p.float()), atol=1e-6)


# ------------------------------------------------------------------ colours and patterns

def _find(objects, **attrs):
    return next(o for o in objects if all(o.attributes.get(k) == v for k, v in attrs.items()))


def test_plain_objects_have_their_colour(first_objects):
    table = next(o for o in first_objects if o.category == "table" and o.attributes["pattern"] == "plain")
    rgb = table.color(table.sample_surface(500))
    assert rgb.shape == (500, 3)
    assert torch.allclose(rgb, torch.tensor(COLOURS[table.attributes["colour"]]).expand(500, 3))


@pytest.mark.parametrize("pattern", ["striped", "checkered", "dotted", "gradient", "two-tone"])
def test_patterns_show_both_colours(first_objects, pattern):
    obj = next(o for o in first_objects
               if o.attributes["pattern"] == pattern and o.category in ("vase", "house", "snowman", "sofa", "cactus"))
    pts = obj.sample_surface(4000)
    rgb = obj.color(pts)
    assert rgb.min() >= 0 and rgb.max() <= 1
    c1, c2 = (torch.tensor(COLOURS[obj.attributes[k]]) for k in ("colour", "secondary_colour"))
    is_c1, is_c2 = ((rgb - c).abs().amax(1) < 1e-5 for c in (c1, c2))
    if pattern == "gradient":  # blends: the bottom is close to c1, the top close to c2
        patterned = obj.palette[2][torch.stack(obj._distances(pts)).abs().argmin(0)] > 0
        pts, rgb = pts[patterned], rgb[patterned]
        z = pts[:, 2]
        bottom, top = rgb[z < z.quantile(0.05)].mean(0), rgb[z > z.quantile(0.95)].mean(0)
        assert (bottom - c1).norm() < (bottom - c2).norm() and (top - c2).norm() < (top - c1).norm()
    else:
        assert is_c1.float().mean() > 0.05 and is_c2.float().mean() > 0.03, (obj.category, obj.caption)
    if pattern == "striped":  # the second colour covers about STRIPE_SHARE of the patterned surface
        share = float(is_c2.sum() / (is_c1.sum() + is_c2.sum()))
        assert 0.2 < share < 0.6


def test_colour_is_that_of_the_nearest_part(first_objects):
    obj = next(o for o in first_objects if o.attributes["pattern"] == "two-tone" and o.category == "table")
    pts = obj.sample_surface(3000)
    nearest = torch.stack(obj._distances(pts)).abs().argmin(0)
    accent = torch.tensor([p.role == "accent" for p in obj.parts])[nearest]
    rgb = obj.color(pts)
    assert accent.any() and (~accent).any()
    c1, c2 = (torch.tensor(COLOURS[obj.attributes[k]]) for k in ("colour", "secondary_colour"))
    assert torch.allclose(rgb[accent], c2.expand(int(accent.sum()), 3))
    assert torch.allclose(rgb[~accent], c1.expand(int((~accent).sum()), 3))


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
