"""Tests of the SDF geometry (sar3d_core.world.shapes): primitives and their surface samplers against
brute force and closed forms, the objects' SDFs as Lipschitz-1 bounds of the distance, and the
colour field against the objects' colours and patterns."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from sar3d_core.world import COLOURS, Part, ProceduralObject, make_object, shapes


def _single(*parts):
    """An object made of the given parts, placed as they are (no scaling)."""
    palette = (torch.zeros(len(parts), 3), torch.ones(len(parts), 3), torch.zeros(len(parts)))
    return ProceduralObject(0, "test", {"pattern": "plain"}, "", "train", 0.0, parts=list(parts), palette=palette)


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
