"""A procedural world of captioned 3D objects: the stand-in for the paper's training data.

The paper (Sec. 5.1, "Datasets") trains on G-Objaverse renders of about 176K objects, with
3DTopia's captions for text conditioning and 3D understanding. This module replaces both
with a small world that every stage can train on and be measured on with a CPU
(DESIGN.md §3): 15 categories of objects built from SDF primitives (``shapes``), each with
shape attributes, a colour, a pattern and a finish, and a caption written from those
attributes.

* Categories: one builder per category draws the shape attributes and returns the parts
  (``shapes.Part``) in model units; ``make_object`` scales, turns and places them (see
  ``shapes`` for the placement and the SDF they define).
* Captions: one sentence per object, written from its attributes in three sentence shapes
  with synonyms and shuffled traits; the main colour is always the first colour named.
* Splits: ``split_of(seed)`` puts about 80/10/10 % of seeds in train/val/test. The
  (category, colour) pairs of ``HELDOUT_PAIRS`` never occur in train; in val and test a
  quarter of the objects are drawn from them, to measure compositional generalisation.

Everything is a function of the seed: object, caption, SDF values and surface samples.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch

from .shapes import EXTENT, FLOOR_Z, Part, ProceduralObject

SPLITS = ("train", "val", "test")
CATEGORIES = ("table", "chair", "stool", "sofa", "lamp", "mug", "vase", "tree", "mushroom",
              "cactus", "snowman", "house", "car", "rocket", "dumbbell")
COLOURS = {
    "red": (0.85, 0.12, 0.10), "orange": (0.96, 0.50, 0.08), "yellow": (0.96, 0.84, 0.15),
    "green": (0.18, 0.62, 0.20), "teal": (0.05, 0.58, 0.58), "blue": (0.14, 0.32, 0.85),
    "purple": (0.52, 0.24, 0.74), "pink": (0.96, 0.55, 0.72), "brown": (0.48, 0.29, 0.14),
    "white": (0.95, 0.95, 0.93), "grey": (0.55, 0.55, 0.57), "black": (0.10, 0.10, 0.11),
}
DETAIL_COLOURS = {"glass": (0.60, 0.80, 0.93), "bulb": (1.0, 0.93, 0.55),
                  "cream": (0.93, 0.88, 0.74), "terracotta": (0.74, 0.38, 0.22)}
PATTERNS = ("plain", "striped", "checkered", "dotted", "two-tone", "gradient")
PATTERN_WEIGHTS = (0.3, 0.14, 0.14, 0.14, 0.14, 0.14)
FINISHES = {"matte": 0.05, "glossy": 0.6}  # name -> shininess (specular weight of the renderer)
HELDOUT_PAIRS = frozenset({
    ("table", "blue"), ("chair", "red"), ("lamp", "green"), ("mug", "yellow"), ("tree", "purple"),
    ("car", "white"), ("house", "pink"), ("mushroom", "teal"), ("rocket", "orange"), ("sofa", "grey")})
HELDOUT_SHARE = 0.25  # share of val/test objects drawn from HELDOUT_PAIRS


# ------------------------------------------------------------------ categories
# A builder draws its shape attributes from ``rng`` and returns ``(parts, attributes, look)``
# in model units: about 1 tall, standing on z = 0, front towards -y. ``look`` feeds the
# caption: nouns (synonyms), traits as (prenominal phrasings, postnominal phrasings), the
# phrase naming the accent parts, and their colour when the pattern is not two-tone.

_NUM = {1: "one", 2: "two", 3: "three", 4: "four"}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _t(pre="", post=""):
    """A caption trait: ``_t("tall|high", "of dining height")`` -> (("tall", "high"), ("of dining height",))."""
    return tuple(pre.split("|")) if pre else (), tuple(post.split("|")) if post else ()


def _count(n, noun, adjective):  # _count(4, "legs", "legged"): "four-legged" / "with four legs" / "with 4 legs"
    return _t(f"{_NUM[n]}-{adjective}", f"with {_NUM[n]} {noun}|with {n} {noun}")


def _look(nouns, traits, accent, accent_default=None):
    return {"nouns": nouns, "traits": traits, "accent": accent, "accent_default": accent_default}


def _ring(n, radius, start=0.0):  # n points on a circle
    return [(radius * math.cos(start + 2 * math.pi * k / n), radius * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)]


def _corners(hx, hy):
    return [(sx * hx, sy * hy) for sx in (-1, 1) for sy in (-1, 1)]


def _legs(xy, top, r=0.03, role="accent"):  # vertical legs from the floor up to z = top
    return [Part("cylinder", (r, top / 2), (x, y, top / 2), role=role) for x, y in xy]


def _table(rng):
    top, height = _pick(rng, ("round", "square", "rectangular")), _pick(rng, ("tall", "short"))
    legs = _pick(rng, (1, 3, 4) if top == "round" else (1, 4))
    H = rng.uniform(0.85, 1.0) if height == "tall" else rng.uniform(0.38, 0.48)
    W, T = rng.uniform(0.55, 0.65), 0.05  # top half width and thickness
    D = W * rng.uniform(0.5, 0.65) if top == "rectangular" else W
    parts = [Part("cylinder", (W, T / 2), (0, 0, H - T / 2)) if top == "round"
             else Part("box", (W, D, T / 2, 0.01), (0, 0, H - T / 2))]
    if legs == 1:  # a pedestal on a foot
        parts += _legs([(0, 0)], H - T + 0.02, r=0.06)
        parts.append(Part("cylinder", (0.45 * D, 0.025), (0, 0, 0.025), role="accent"))
    elif top == "round":
        parts += _legs(_ring(legs, 0.72 * W, math.pi / 2 if legs == 3 else math.pi / 4), H - T + 0.02)
    else:
        parts += _legs(_corners(W - 0.08, D - 0.08), H - T + 0.02)
    traits = [_t("tall|high", "of dining height") if height == "tall" else _t("short|low", "low to the ground"),
              _t({"round": "round|circular", "square": "square", "rectangular": "rectangular|oblong"}[top],
                 f"with a {top} top"),
              _t("pedestal", "with a single central leg|on a single pedestal") if legs == 1
              else _count(legs, "legs", "legged")]
    look = _look(("table", "dining table") if height == "tall" else ("table", "coffee table"), traits,
                 "a {c2} pedestal" if legs == 1 else "{c2} legs")
    return parts, {"top": top, "height": height, "legs": legs}, look


def _chair(rng):
    back, arms, seat = _pick(rng, ("high", "low")), bool(rng.random() < 0.5), _pick(rng, ("square", "round"))
    S, Z = rng.uniform(0.22, 0.27), rng.uniform(0.42, 0.5)  # seat half width and height
    Hb = rng.uniform(0.5, 0.6) if back == "high" else rng.uniform(0.2, 0.28)
    if seat == "square":
        parts = [Part("box", (S, S, 0.03, 0.01), (0, 0, Z - 0.03))]
        parts += _legs(_corners(S - 0.03, S - 0.03), Z - 0.04, 0.025)
    else:
        parts = [Part("cylinder", (S, 0.03), (0, 0, Z - 0.03))]
        parts += _legs(_ring(4, S - 0.04, math.pi / 4), Z - 0.04, 0.025)
    back_w, back_y = (S, S - 0.03) if seat == "square" else (0.7 * S, 0.72 * S)  # backrest at +y, on the seat's edge
    parts.append(Part("box", (back_w, 0.025, (Hb + 0.06) / 2, 0.01), (0, back_y, Z + (Hb - 0.06) / 2)))
    if arms:
        for sx in (-1, 1):
            parts += [Part("box", (0.025, S - 0.03, 0.02, 0.01), (sx * (S - 0.02), 0, Z + 0.2)),
                      Part("box", (0.02, 0.02, 0.11), (sx * (S - 0.02), -(S - 0.05), Z + 0.09))]
    traits = [_t("high-backed|tall-backed", "with a high back|with a tall backrest") if back == "high"
              else _t("low-backed", "with a low back|with a short backrest"),
              _t("", "with armrests|with arms") if arms else _t("armless", "without armrests|with no arms"),
              _t("", f"with a {seat} seat")]
    look = _look(("chair", "armchair") if arms else ("chair",), traits, "{c2} legs")
    return parts, {"back": back, "arms": arms, "seat": seat}, look


def _stool(rng):
    legs, height, seat = _pick(rng, (3, 4)), _pick(rng, ("tall", "short")), _pick(rng, ("round", "square"))
    H = rng.uniform(0.9, 1.05) if height == "tall" else rng.uniform(0.4, 0.5)
    R, T = rng.uniform(0.2, 0.25), 0.06
    parts = [Part("cylinder", (R, T / 2), (0, 0, H - T / 2)) if seat == "round"
             else Part("box", (0.9 * R, 0.9 * R, T / 2, 0.015), (0, 0, H - T / 2))]
    parts += _legs(_ring(legs, 0.72 * R, math.pi / 4 if legs == 4 else math.pi / 2), H - T + 0.02, r=0.025)
    if height == "tall":
        parts.append(Part("torus", (0.72 * R, 0.015), (0, 0, 0.35 * H), role="accent"))  # footrest ring
    traits = [_t("tall", "with a footrest ring") if height == "tall" else _t("short|low"),
              _count(legs, "legs", "legged"), _t(seat, f"with a {seat} seat")]
    look = _look(("stool", "bar stool") if height == "tall" else ("stool", "footstool"), traits, "{c2} legs")
    return parts, {"legs": legs, "height": height, "seat": seat}, look


def _sofa(rng):
    seats, arms, back = _pick(rng, (2, 3)), bool(rng.random() < 0.6), _pick(rng, ("high", "low"))
    L, D, A = 0.225 * seats, 0.4, 0.09 if arms else 0.0  # cushions' half length, half depth, arm half width
    Hb = rng.uniform(0.5, 0.6) if back == "high" else rng.uniform(0.3, 0.36)
    parts = [Part("box", (L + 2 * A, D, 0.12, 0.04), (0, 0, 0.22)),  # base, then backrest
             Part("box", (L + 2 * A, 0.09, (Hb + 0.09) / 2, 0.04), (0, D - 0.09, 0.25 + (Hb + 0.09) / 2))]
    parts += [Part("cylinder", (0.03, 0.07), (x, y, 0.07), role="brown")
              for x, y in _corners(L + 2 * A - 0.06, D - 0.06)]
    parts += [Part("box", (A, D, 0.2, 0.04), (sx * (L + A), 0, 0.3)) for sx in ((-1, 1) if arms else ())]
    parts += [Part("box", (L / seats - 0.01, D - 0.12, 0.06, 0.05), (-L + (2 * i + 1) * L / seats, -0.06, 0.38),
                   role="accent") for i in range(seats)]
    n = _NUM[seats]
    traits = [_t(f"{n}-seater", f"with {n} seat cushions|with {n} cushions"),
              _t("", "with armrests|with padded arms") if arms else _t("armless", "without arms|with no armrests"),
              _t("high-backed", "with a high back") if back == "high" else _t("low-backed", "with a low back")]
    return parts, {"seats": seats, "arms": arms, "back": back}, _look(("sofa", "couch"), traits, "{c2} cushions")


def _lamp(rng):
    shade, height, base = _pick(rng, ("cone", "dome")), _pick(rng, ("tall", "short")), _pick(rng, ("round", "square"))
    Hp = rng.uniform(1.0, 1.15) if height == "tall" else rng.uniform(0.45, 0.55)  # pole height
    parts = [Part("cylinder", (0.2, 0.03), (0, 0, 0.03)) if base == "round"
             else Part("box", (0.17, 0.17, 0.03, 0.01), (0, 0, 0.03)),
             Part("cylinder", (0.022, Hp / 2), (0, 0, Hp / 2), role="accent"),
             Part("cone", (0.26, 0.12, 0.13), (0, 0, Hp + 0.05)) if shade == "cone"
             else Part("dome", (0.25, 0.25, 0.2), (0, 0, Hp - 0.04)),
             Part("sphere", (0.07,), (0, 0, Hp - 0.09), role="bulb")]
    traits = [_t("", "with a conical shade|with a cone-shaped shade") if shade == "cone"
              else _t("", "with a dome-shaped shade|with a rounded shade"),
              _t("tall") if height == "tall" else _t("short|small"), _t("", f"on a {base} base")]
    look = _look(("floor lamp", "lamp") if height == "tall" else ("desk lamp", "lamp"), traits, "a {c2} pole")
    return parts, {"shade": shade, "height": height, "base": base}, look


def _mug(rng):
    height, handle, saucer = _pick(rng, ("tall", "short")), bool(rng.random() < 0.7), bool(rng.random() < 0.3)
    if height == "tall":
        R, H = rng.uniform(0.26, 0.3), rng.uniform(0.75, 0.85)
    else:
        R, H = rng.uniform(0.4, 0.45), rng.uniform(0.45, 0.52)
    z0 = 0.04 if saucer else 0.0
    parts = [Part("cylinder", (R, H / 2), (0, 0, z0 + H / 2)),
             Part("cylinder", (R - 0.045, H / 2), (0, 0, z0 + H / 2 + 0.07), role="accent", carve=True)]  # the hollow
    if handle:  # a ring in the xz plane, half buried in the wall (its inner part is carved away)
        parts.append(Part("torus", (0.24 * H, 0.04), (R + 0.03, 0, z0 + H / 2), axis="y"))
    if saucer:
        parts.append(Part("cylinder", (R + 0.2, 0.025), (0, 0, 0.025)))
    traits = [_t("tall|narrow", "that is tall and narrow") if height == "tall"
              else _t("short|wide|squat", "that is short and wide"),
              _t("", "with a handle|with a loop handle") if handle else _t("", "without a handle|with no handle")]
    traits += [_t("", "on a saucer|sitting on a saucer")] if saucer else []
    look = _look(("mug", "coffee mug") if handle else ("cup", "tumbler"), traits, "a {c2} inside")
    return parts, {"height": height, "handle": handle, "saucer": saucer}, look


def _vase(rng):
    body, neck, handles = _pick(rng, ("round", "slender")), _pick(rng, ("long", "short")), bool(rng.random() < 0.35)
    if body == "round":  # body radii a (x, y) and c (z), neck radius rn
        a, c, rn = rng.uniform(0.33, 0.38), rng.uniform(0.3, 0.34), 0.11
    else:
        a, c, rn = rng.uniform(0.2, 0.24), rng.uniform(0.42, 0.48), 0.09
    hn, zb = rng.uniform(0.18, 0.24) if neck == "long" else 0.07, 0.02 + c  # neck half height, body centre
    top = zb + c - 0.04 + 2 * hn
    parts = [Part("ellipsoid", (a, a, c), (0, 0, zb)), Part("cylinder", (0.6 * a, 0.025), (0, 0, 0.025)),
             Part("cylinder", (rn, hn), (0, 0, top - hn), role="accent"),
             Part("torus", (rn, 0.025), (0, 0, top), role="accent"),  # the lip
             Part("cylinder", (rn - 0.03, 0.25), (0, 0, top), role="accent", carve=True)]  # the opening
    if handles:  # loops from the neck down into the shoulder
        x = rn + 0.07
        z = zb + c * math.sqrt(max(0.0, 1 - (x / a) ** 2)) + 0.04
        parts += [Part("torus", (0.08, 0.018), (sx * x, 0, z), axis="y") for sx in (-1, 1)]
    traits = [_t("round|bulbous|pot-bellied", "with a round body") if body == "round"
              else _t("slender|slim", "with a slender body"),
              _t("long-necked", "with a long neck|with a tall neck") if neck == "long"
              else _t("short-necked", "with a short neck")]
    traits += [_t("two-handled", "with two handles|with a pair of handles")] if handles else []
    look = _look(("vase", "flower vase"), traits, "a {c2} neck")
    return parts, {"body": body, "neck": neck, "handles": handles}, look


def _tree(rng):
    kind, trunk = _pick(rng, ("pine", "round")), _pick(rng, ("tall", "short"))
    Ht = rng.uniform(0.35, 0.45) if trunk == "tall" else rng.uniform(0.12, 0.2)
    parts = [Part("cylinder", (0.06, Ht / 2 + 0.05), (0, 0, Ht / 2 + 0.05), role="accent")]
    if kind == "pine":  # stacked cones
        tiers, R = _pick(rng, (2, 3, 4)), rng.uniform(0.38, 0.45)
        parts += [Part("cone", (R * (1 - 0.2 * i), 0.02, 0.2), (0, 0, Ht + 0.2 + 0.22 * i)) for i in range(tiers)]
        shape, nouns, n = {"tiers": tiers}, ("pine tree", "fir tree"), _NUM[tiers]
        trait = _t(f"{n}-tiered", f"with {n} tiers|with {n} layers of branches")
    else:  # one big ball of leaves or three smaller ones
        crowns = _pick(rng, (1, 3))
        if crowns == 1:
            parts.append(Part("sphere", (rng.uniform(0.36, 0.42),), (0, 0, Ht + 0.33)))
        else:
            parts += [Part("sphere", (0.26,), (x, 0, Ht + z)) for x, z in ((-0.2, 0.25), (0.2, 0.25), (0, 0.5))]
        shape, nouns = {"crowns": crowns}, ("tree", "leafy tree")
        trait = _t("", "with a single round crown|with one ball of leaves") if crowns == 1 \
            else _t("", "with three round crowns|with three balls of leaves")
    traits = [trait, _t("", "on a tall trunk|with a long trunk") if trunk == "tall"
              else _t("", "with a short trunk|on a stubby trunk")]
    return parts, {"kind": kind, **shape, "trunk": trunk}, _look(nouns, traits, "a {c2} trunk", "brown")


def _mushroom(rng):
    cap, stem, count = _pick(rng, ("flat", "round")), _pick(rng, ("tall", "short")), _pick(rng, (1, 2))
    a, c = (rng.uniform(0.4, 0.45), 0.14) if cap == "flat" else (rng.uniform(0.28, 0.32), 0.28)
    Hs = rng.uniform(0.5, 0.6) if stem == "tall" else rng.uniform(0.26, 0.32)
    parts = []
    for x, s in ((0.0, 1.0), (a + 0.12, 0.55))[:count]:  # a second, smaller mushroom beside the first
        parts += [Part("cone", (0.11 * s, 0.08 * s, Hs * s / 2), (x, 0, Hs * s / 2), role="accent"),
                  Part("dome", (a * s, a * s, c * s), (x, 0, (Hs - 0.03) * s))]
    traits = [_t("flat-capped|wide-capped", "with a flat cap|with a broad flat cap") if cap == "flat"
              else _t("round-capped|dome-capped", "with a round cap|with a domed cap"),
              _t("tall", "with a tall stem|with a long stalk") if stem == "tall"
              else _t("short|stubby", "with a short stem|with a stubby stalk")]
    traits += [_t("", "with a small mushroom beside it|next to a smaller one")] if count == 2 else []
    look = _look(("mushroom", "toadstool"), traits, "a {c2} stem", "cream")
    return parts, {"cap": cap, "stem": stem, "count": count}, look


def _cactus(rng):
    arms, pot, height = _pick(rng, (0, 1, 2)), _pick(rng, ("round", "square")), _pick(rng, ("tall", "short"))
    h, r = rng.uniform(0.32, 0.4) if height == "tall" else rng.uniform(0.14, 0.2), 0.14
    zc = 0.12 + r + h  # the body's rounded bottom sits inside the pot (top at 0.22)
    parts = [Part("cone", (0.17, 0.22, 0.11), (0, 0, 0.11), role="accent") if pot == "round"
             else Part("box", (0.2, 0.2, 0.11, 0.01), (0, 0, 0.11), role="accent"),
             Part("capsule", (r, h), (0, 0, zc))]
    for k, sx in enumerate((1, -1)[:arms]):  # an elbow: out along x, then up
        za = zc - 0.06 * k
        parts += [Part("capsule", (0.07, 0.09), (sx * (r + 0.05), 0, za), axis="x"),
                  Part("capsule", (0.07, 0.12), (sx * (r + 0.14), 0, za + 0.12))]
    traits = [(_t("", "with no arms|without arms"), _t("one-armed", "with one arm|with a single arm"),
               _t("two-armed", "with two arms"))[arms],
              _t("", f"in a {pot} pot|planted in a {pot} pot"),
              _t("tall") if height == "tall" else _t("short|stubby")]
    return parts, {"arms": arms, "pot": pot, "height": height}, _look(("cactus",), traits, "a {c2} pot", "terracotta")


def _snowman(rng):
    balls, hat, arms = _pick(rng, (2, 3)), bool(rng.random() < 0.6), bool(rng.random() < 0.5)
    radii = (0.3, 0.22, 0.16) if balls == 3 else (0.3, 0.2)
    zs = [radii[0]]
    for r0, r1 in zip(radii, radii[1:]):  # each ball sinks a little into the one below
        zs.append(zs[-1] + 0.8 * (r0 + r1))
    rh, zh = radii[-1], zs[-1]  # the head
    parts = [Part("sphere", (r,), (0, 0, z), role="accent" if (i == balls - 1 and not hat) else "main")
             for i, (r, z) in enumerate(zip(radii, zs))]
    parts += [Part("sphere", (0.025,), (sx * 0.36 * rh, -0.86 * rh, zh + 0.36 * rh), role="black") for sx in (-1, 1)]
    parts.append(Part("cone", (0.0, 0.035, 0.08), (0, -(rh + 0.02), zh), axis="y", role="orange"))  # carrot nose
    if hat:
        parts += [Part("cylinder", (0.8 * rh, 0.012), (0, 0, zh + 0.8 * rh), role="accent"),
                  Part("cylinder", (0.55 * rh, 0.45 * rh), (0, 0, zh + 1.25 * rh), role="accent")]
    if arms:
        parts += [Part("capsule", (0.018, 0.14), (sx * (radii[1] + 0.1), 0, zs[1] + 0.05), axis="x", role="brown")
                  for sx in (-1, 1)]
    n = _NUM[balls]
    traits = [_t(f"{n}-ball", f"made of {n} snowballs|with {n} stacked balls"),
              _t("", "wearing a top hat|with a top hat") if hat else _t("hatless|bareheaded", "without a hat"),
              _t("", "with stick arms|with twig arms") if arms else _t("armless", "without arms")]
    look = _look(("snowman",), traits, "a {c2} hat" if hat else "a {c2} head", "black" if hat else None)
    return parts, {"balls": balls, "hat": hat, "arms": arms}, look


def _house(rng):
    floors, roof, chimney = _pick(rng, (1, 2)), _pick(rng, ("pointed", "flat")), bool(rng.random() < 0.5)
    Dx, Dy, Hf = rng.uniform(0.42, 0.5), 0.3, 0.38  # half width, half depth, storey height
    Hw = floors * Hf
    parts = [Part("box", (Dx, Dy, Hw / 2), (0, 0, Hw / 2))]
    if roof == "pointed":  # a square beam turned 45 degrees about x: its upper half is a gable roof
        s = (Dy + 0.04) / math.sqrt(2)
        parts.append(Part("box", (s, s, Dx), (0, 0, Hw), axis="x", spin=math.pi / 4, role="accent"))
    else:
        parts.append(Part("box", (Dx + 0.04, Dy + 0.04, 0.03, 0.01), (0, 0, Hw + 0.01), role="accent"))
    parts.append(Part("box", (0.07, 0.015, 0.12), (0, -Dy, 0.12), role="brown"))  # door
    parts += [Part("box", (0.07, 0.015, 0.06), (sx * 0.55 * Dx, -Dy, 0.2 + Hf * f), role="glass")  # windows
              for f in range(floors) for sx in (-1, 1)]
    if chimney:
        parts.append(Part("box", (0.05, 0.05, 0.17), (0.5 * Dx, 0.1, Hw + 0.17)))
    traits = [_t("one-storey|single-storey", "with one floor|with a single floor") if floors == 1
              else _t("two-storey", "with two floors|with two storeys"),
              _t("", "with a pointed roof|with a gabled roof") if roof == "pointed"
              else _t("flat-roofed", "with a flat roof"),
              _t("", "with a chimney") if chimney else _t("", "without a chimney")]
    look = _look(("house", "small house"), traits, "a {c2} roof")
    return parts, {"floors": floors, "roof": roof, "chimney": chimney}, look


def _car(rng):
    style, wheels = _pick(rng, ("sedan", "pickup", "van")), _pick(rng, ("big", "small"))
    wr, L, W = 0.15 if wheels == "big" else 0.11, 0.5, 0.22  # wheel radius, chassis half length and width
    zc = wr + 0.05  # chassis centre; the front is +x
    (cx, cy, cz), x0 = {"sedan": ((0.25, 0.19, 0.11), -0.04), "pickup": ((0.15, 0.2, 0.12), 0.2),
                        "van": ((0.44, 0.2, 0.17), -0.04)}[style]  # cabin half sizes and position
    zcab = zc + 0.1 + cz - 0.03
    parts = [Part("box", (L, W, 0.1, 0.04), (0, 0, zc)),
             Part("box", (cx, cy, cz, 0.05), (x0, 0, zcab), role="accent"),
             Part("box", (cx - 0.03, cy + 0.006, 0.45 * cz), (x0, 0, zcab + 0.25 * cz), role="glass")]  # windows
    parts += [Part("cylinder", (wr, 0.045), (x, y, wr), axis="y", role="black") for x, y in _corners(0.3, W - 0.02)]
    parts += [Part("sphere", (0.035,), (L - 0.01, sy * 0.13, zc + 0.03), role="bulb") for sy in (-1, 1)]
    traits = [_t("big-wheeled", "with big wheels|with large wheels") if wheels == "big"
              else _t("small-wheeled", "with small wheels")]
    nouns = {"sedan": ("car", "sedan"), "pickup": ("pickup truck",), "van": ("van", "minivan")}[style]
    return parts, {"style": style, "wheels": wheels}, _look(nouns, traits, "a {c2} cabin")


def _rocket(rng):
    fins, nose, height = _pick(rng, (3, 4)), _pick(rng, ("pointed", "rounded")), _pick(rng, ("tall", "stubby"))
    window = bool(rng.random() < 0.5)
    R, hb = (0.15, rng.uniform(0.38, 0.45)) if height == "tall" else (0.19, rng.uniform(0.18, 0.24))
    top = 0.1 + 2 * hb
    parts = [Part("cylinder", (R, hb), (0, 0, 0.1 + hb)),
             Part("cone", (0.8 * R, 0.55 * R, 0.05), (0, 0, 0.05), role="grey"),  # nozzle
             Part("cone", (R, 0.0, 0.2), (0, 0, top + 0.2), role="accent") if nose == "pointed"
             else Part("dome", (R, R, 0.9 * R), (0, 0, top), role="accent")]
    for k in range(fins):  # thin boxes turned to point away from the axis
        th = 2 * math.pi * k / fins + (math.pi / 4 if fins == 4 else math.pi / 2)
        centre = ((R + 0.07) * math.cos(th), (R + 0.07) * math.sin(th), 0.13)
        parts.append(Part("box", (0.09, 0.014, 0.13), centre, spin=th, role="accent"))
    if window:
        parts.append(Part("sphere", (0.055,), (0, -(R - 0.025), 0.1 + 1.4 * hb), role="glass"))
    traits = [_count(fins, "fins", "finned"),
              _t("sharp-nosed", "with a pointed nose|with a pointed nose cone") if nose == "pointed"
              else _t("round-nosed", "with a rounded nose|with a round nose cone"),
              _t("tall|slender") if height == "tall" else _t("stubby|short")]
    traits += [_t("", "with a round window|with a porthole")] if window else []
    look = _look(("rocket", "rocket ship", "spaceship"), traits, "{c2} fins")
    return parts, {"fins": fins, "nose": nose, "height": height, "window": window}, look


def _dumbbell(rng):
    ends, bar = _pick(rng, ("round", "disc")), _pick(rng, ("long", "short"))
    L = rng.uniform(0.42, 0.5) if bar == "long" else rng.uniform(0.24, 0.3)  # half bar length
    Rw = 0.17  # weight radius; the dumbbell lies along x on its weights
    parts = [Part("cylinder", (0.04, L), (0, 0, Rw), axis="x", role="accent")]
    for sx in (-1, 1):
        if ends == "round":
            parts.append(Part("sphere", (Rw,), (sx * L, 0, Rw)))
        else:
            parts += [Part("cylinder", (Rw, 0.05), (sx * L, 0, Rw), axis="x"),
                      Part("cylinder", (0.8 * Rw, 0.04), (sx * (L - 0.09), 0, Rw), axis="x")]
    traits = [_t("ball-ended", "with round ball weights|with spherical weights") if ends == "round"
              else _t("", "with disc weights|with weight plates"),
              _t("long", "with a long bar|with a long handle") if bar == "long"
              else _t("short|compact", "with a short bar|with a short handle")]
    return parts, {"ends": ends, "bar": bar}, _look(("dumbbell", "hand weight"), traits, "a {c2} bar", "grey")


_BUILDERS = {"table": _table, "chair": _chair, "stool": _stool, "sofa": _sofa, "lamp": _lamp, "mug": _mug,
             "vase": _vase, "tree": _tree, "mushroom": _mushroom, "cactus": _cactus, "snowman": _snowman,
             "house": _house, "car": _car, "rocket": _rocket, "dumbbell": _dumbbell}
CATEGORY_WORDS = {  # every noun a caption may use for a category (to recover the category from text)
    "table": ("table",), "chair": ("chair", "armchair"), "stool": ("stool", "footstool"), "sofa": ("sofa", "couch"),
    "lamp": ("lamp",), "mug": ("mug", "cup", "tumbler"), "vase": ("vase",), "tree": ("tree",),
    "mushroom": ("mushroom", "toadstool"), "cactus": ("cactus",), "snowman": ("snowman",), "house": ("house",),
    "car": ("car", "sedan", "pickup truck", "van", "minivan"), "rocket": ("rocket", "spaceship"),
    "dumbbell": ("dumbbell", "hand weight")}


# ------------------------------------------------------------------ captions
# Like 3DTopia's captions, one sentence per object; here written from the attributes, in
# three sentence shapes with synonyms and shuffled traits. The main colour is always the
# first colour named; "plain" objects name no second colour.

_COLOUR_BEFORE_NOUN = {
    "plain": ("{c}", "{c}", "plain {c}", "solid {c}"),
    "striped": ("{c} and {c2} striped", "{c}-and-{c2} striped"),
    "checkered": ("{c} and {c2} checkered", "{c}-and-{c2} checkered"),
    "dotted": ("{c} and {c2} dotted", "{c} and {c2} polka-dot", "{c} and {c2} spotted"),
    "two-tone": ("{c}", "two-tone {c}"),  # the accent parts are named after the noun
    "gradient": ("{c}-to-{c2} gradient", "{c} to {c2} faded")}
_COLOUR_AFTER_NOUN = {
    "plain": ("painted {c}", "in {c}", "coloured {c}", "in plain {c}"),
    "striped": ("with {c} and {c2} stripes", "painted {c} with {c2} stripes", "in {c} with {c2} stripes"),
    "checkered": ("with a {c} and {c2} checkerboard pattern", "in {c} and {c2} checks",
                  "painted in {c} and {c2} checkers"),
    "dotted": ("in {c} with {c2} dots", "painted {c} with {c2} polka dots", "in {c} covered in {c2} spots"),
    "two-tone": ("in {c}", "painted {c}"),
    "gradient": ("fading from {c} to {c2}", "with a {c} to {c2} gradient",
                 "shading from {c} at the bottom to {c2} at the top")}
_FINISH_WORDS = {"matte": ("matte", "dull"), "glossy": ("glossy", "shiny")}
_OPENINGS = ("", "", "", "a 3D model of ", "a render of ", "this is ")


def _join(phrases):
    """["with four legs", "with a round top"] -> "with four legs and a round top"."""
    phrases = [p[5:] if i and p.startswith("with ") and phrases[i - 1].startswith("with ") else p
               for i, p in enumerate(phrases)]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _caption(rng, look, colour, secondary, pattern, finish):
    """One sentence naming the category, the colours, the pattern and every shape trait."""
    fill = {"c": colour, "c2": secondary}
    noun, shape = _pick(rng, look["nouns"]), int(rng.integers(3))
    before, after = [], []  # trait phrases before and after the noun
    for i in rng.permutation(len(look["traits"])):
        pre, post = look["traits"][i]
        use_pre = bool(pre) and (not post or (shape != 2 and rng.random() < 0.5))
        (before if use_pre else after).append(_pick(rng, pre if use_pre else post))
    if rng.random() < 0.3:
        before.insert(0, _pick(rng, _FINISH_WORDS[finish]))
    accent = " with " + look["accent"].format(**fill) if pattern == "two-tone" else ""
    if shape == 0:  # "a tall red and white striped table, with four legs and a round top"
        head = " ".join(["a"] + before + [_pick(rng, _COLOUR_BEFORE_NOUN[pattern]).format(**fill), noun]) + accent
        text = _pick(rng, _OPENINGS) + head + (" " + _join(after) if after else "")
    elif shape == 1:  # "a tall table painted red with white stripes, with four legs"
        head = " ".join(["a"] + before + [noun, _pick(rng, _COLOUR_AFTER_NOUN[pattern]).format(**fill)]) + accent
        text = _pick(rng, _OPENINGS) + head + (", " + _join(after) if after else "")
    else:  # "red and white striped table, tall, with four legs"
        head = _pick(rng, _COLOUR_BEFORE_NOUN[pattern]).format(**fill) + " " + noun + accent
        text = ", ".join([head] + before + ([_join(after)] if after else []))
    text = with_article(text)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def with_article(text: str) -> str:
    """"a orange mug" -> "an orange mug": "an" before a vowel (not before "one")."""
    return re.sub(r"\b([Aa]) (?=[aeiou])(?!one)", r"\1n ", text)


def _prompts(rng, look, colour, secondary, pattern, finish):
    """The other ways people describe the object: ``("a red chair", "red armchair",
    "a red and white striped chair", "a chair", <a paraphrase of the full sentence>)``.
    Drawn from their own generator, so the object and its caption do not change."""
    fill = {"c": colour, "c2": secondary}
    forms = [f"a {colour} {_pick(rng, look['nouns'])}", f"{colour} {_pick(rng, look['nouns'])}",
             f"a {_pick(rng, _COLOUR_BEFORE_NOUN[pattern]).format(**fill)} {_pick(rng, look['nouns'])}",
             f"a {_pick(rng, look['nouns'])}"]
    forms = [with_article(f) for f in forms]
    forms = [f[0].upper() + f[1:] if rng.random() < 0.3 else f for f in forms]
    return tuple(forms) + (_caption(rng, look, colour, secondary, pattern, finish),)


def prompt_forms(seed: int) -> list:
    """Every prompt the world writes for one object: its caption first, then ``ProceduralObject.prompts``."""
    obj = make_object(seed)
    return [obj.caption, *obj.prompts]


# ------------------------------------------------------------------ the world: objects and splits

def split_of(seed: int) -> str:
    """The split of a seed, from a hash of it: about 80 % train, 10 % val, 10 % test."""
    u = np.random.default_rng([int(seed), 0x5A3D]).random()
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


def heldout_combinations() -> set:
    """The (category, colour) pairs that never occur in train; a quarter of val and test is drawn from them."""
    return set(HELDOUT_PAIRS)


def _contrast(rng, colour):  # a second colour that reads as different from the first
    rgb = np.array(COLOURS[colour])
    return _pick(rng, [c for c in COLOURS if np.linalg.norm(np.array(COLOURS[c]) - rgb) > 0.35])


def _bounds(parts, yaw):
    """Exact world-axis bounding box of the solid parts turned by ``yaw``, from their support functions."""
    c, s = math.cos(yaw), math.sin(yaw)
    solid, lo, hi = [p for p in parts if not p.carve], [], []
    for v in ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0)):  # the world axes in the model frame, Rz(yaw)^T e_k
        hi.append(max(p.support(v) for p in solid))
        lo.append(-max(p.support(tuple(-a for a in v)) for p in solid))
    return np.array(lo), np.array(hi)


def _palette(parts, look, colour, secondary, pattern):
    """Per part: main colour, second colour, whether the pattern applies (see ``Part.role``)."""
    rgb = {**COLOURS, **DETAIL_COLOURS}
    main = (rgb[colour], rgb[secondary or colour], 0.0 if pattern in ("plain", "two-tone") else 1.0)
    if pattern == "two-tone":
        accent = (rgb[secondary], rgb[secondary], 0.0)
    else:
        accent = (rgb[look["accent_default"]],) * 2 + (0.0,) if look["accent_default"] else main
    specs = [main if p.role == "main" else accent if p.role == "accent" else (rgb[p.role], rgb[p.role], 0.0)
             for p in parts]
    return tuple(torch.tensor([spec[k] for spec in specs]) for k in range(3))


def make_object(seed: int) -> ProceduralObject:
    """The procedural object of a seed: every choice is drawn from ``numpy.random.default_rng(seed)``."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seeds are non-negative integers, got {seed}")
    rng, split = np.random.default_rng(seed), split_of(seed)
    if split != "train" and rng.random() < HELDOUT_SHARE:
        category, colour = _pick(rng, sorted(HELDOUT_PAIRS))
    else:
        category = _pick(rng, CATEGORIES)
        colour = _pick(rng, [c for c in COLOURS if split != "train" or (category, c) not in HELDOUT_PAIRS])
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=PATTERN_WEIGHTS))]
    secondary = None if pattern == "plain" else _contrast(rng, colour)
    finish = _pick(rng, tuple(FINISHES))
    parts, shape, look = _BUILDERS[category](rng)
    yaw = math.radians(rng.uniform(-30.0, 30.0))
    caption = _caption(rng, look, colour, secondary, pattern, finish)
    prompts = _prompts(np.random.default_rng([seed, 0xC0DE]), look, colour, secondary, pattern, finish)

    # scale to the largest extent EXTENT, centre in x and y, stand on FLOOR_Z
    lo, hi = _bounds(parts, yaw)
    scale = EXTENT / float(np.max(hi - lo))
    offset = (-scale * (lo[0] + hi[0]) / 2, -scale * (lo[1] + hi[1]) / 2, FLOOR_Z - scale * lo[2])
    attributes = {"colour": colour, "secondary_colour": secondary, "pattern": pattern, "finish": finish, **shape,
                  "yaw_deg": round(math.degrees(yaw), 2)}
    return ProceduralObject(seed, category, attributes, caption, split, FINISHES[finish], parts=parts,
                            scale=scale, offset=tuple(float(o) for o in offset), yaw=yaw,
                            z_range=(FLOOR_Z, FLOOR_Z + scale * float(hi[2] - lo[2])),
                            palette=_palette(parts, look, colour, secondary, pattern), prompts=prompts)


def objects_in_split(split: str, count: int, start: int = 0) -> list:
    """The first ``count`` objects of ``split`` among the seeds ``start, start + 1, ...``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    objects, seed = [], int(start)
    while len(objects) < count:
        if split_of(seed) == split:
            objects.append(make_object(seed))
        seed += 1
    return objects
