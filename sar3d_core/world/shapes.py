"""Signed-distance geometry of the procedural world: primitives, parts and objects.

The procedural world (``world``) stands in for the paper's training data (Sec. 5.1). This
module holds what its objects are made of and how they are measured: the SDF primitives
and their surface samplers, ``Part`` (a placed primitive) and ``ProceduralObject`` (its
SDF, colour field and surface samples); ``objects`` decides which objects exist.

* Geometry: an object is a union of parts (boxes, spheres, ellipsoids, domes, cylinders,
  capped cones, tori, capsules), minus optional "carve" parts (the inside of a mug):
  ``f(p) = max(min_i f_i(p), -min_j g_j(p))``. Each ``f_i`` is an exact distance except the
  ellipsoid, whose ``min(r) (|p / r| - 1)`` is a Lipschitz-1 bound. Hard min/max of
  Lipschitz-1 functions is Lipschitz-1 with the right zero set, so ``f`` is a Lipschitz-1
  lower bound of the distance, ``|f(p)| <= dist(p, surface)``: sphere tracing never overshoots.
* Placement (DESIGN.md §4): world up is +z; every object is scaled so its largest extent is
  ``EXTENT`` (0.84), centred in x and y, stands on ``FLOOR_Z`` (-0.42) and lies inside
  the object box ``[-0.45, 0.45]^3`` (``cameras.OBJECT_BOX``). A yaw of up to 30 degrees
  varies the pose; "front" is -y.
* Colour: ``color(p)`` is the colour of the nearest part, patterns are functions of the world
  position (stripes along z, 3D checkers, a 3D lattice of dots, a vertical gradient).
* Surface samples: every primitive's surface is sampled analytically, in proportion to its
  area, and points hidden inside other parts are rejected: uniform by area on the union.

Everything is a function of the object and the sampling seed: SDF values and surface samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

EXTENT = 0.84  # the largest side of every object's bounding box
FLOOR_Z = -0.42  # every object stands on this plane
# pattern sizes in world units: stripes (period, share of the second colour), checker cells,
# dots on a body-centred cubic lattice (any plane through it cuts dots, see ``color``)
STRIPE_PERIOD, STRIPE_SHARE, CHECKER, DOT_PERIOD, DOT_RADIUS = 0.14, 0.4, 0.1, 0.14, 0.045


# ------------------------------------------------------------------ primitives
# Every primitive lives in its own frame: centred at the origin, symmetric about the z axis
# (boxes about the planes). ``size`` holds lengths only, so scaling them scales the shape.

# The SDFs below use in-place operations on their own temporaries (never on the inputs): a
# sphere tracer calls them ~40 times per view on ~50k points, and on a CPU the cost is the
# number of passes over memory. Each docstring or comment gives the formula.

def _norm(a, b, c=None):  # sqrt(a^2 + b^2 (+ c^2)), a new tensor
    out = (a * a).addcmul_(b, b)
    return (out if c is None else out.addcmul_(c, c)).sqrt_()


def _sdf_box(x, y, z, hx, hy, hz, r=0.0):
    """Box of half sizes h with edges rounded by r (exact): with ``q = |p| - (h - r)``,
    ``|max(q, 0)| + min(max(q_x, q_y, q_z), 0) - r``."""
    qx, qy, qz = x.abs().sub_(hx - r), y.abs().sub_(hy - r), z.abs().sub_(hz - r)
    inside = torch.maximum(qx, qy)
    inside = torch.maximum(inside, qz, out=inside).clamp_max_(0)
    return _norm(qx.clamp_min_(0), qy.clamp_min_(0), qz.clamp_min_(0)).add_(inside).sub_(r)


def _sdf_sphere(x, y, z, r):  # |p| - r (exact)
    return _norm(x, y, z).sub_(r)


def _sdf_ellipsoid(x, y, z, a, b, c):
    """``min(a, b, c) (|p / (a, b, c)| - 1)``: not the distance but a Lipschitz-1 bound of it
    (``|p / r|`` changes at most ``1 / min(r)`` per unit step) with the exact zero set."""
    k = (x * x).mul_(1 / a ** 2).addcmul_(y, y, value=1 / b ** 2).addcmul_(z, z, value=1 / c ** 2).sqrt_()
    return k.sub_(1.0).mul_(min(a, b, c))


def _sdf_dome(x, y, z, a, b, c):  # the upper half (z >= 0) of the ellipsoid: max(f_ellipsoid, -z)
    return torch.maximum(_sdf_ellipsoid(x, y, z, a, b, c), -z)


def _sdf_cylinder(x, y, z, r, h):
    """Radius r, half height h (exact): with ``d = (|p_xy| - r, |z| - h)``,
    ``|max(d, 0)| + min(max(d_0, d_1), 0)``."""
    dr, dz = _norm(x, y).sub_(r), z.abs().sub_(h)
    inside = torch.maximum(dr, dz).clamp_max_(0)
    return _norm(dr.clamp_min_(0), dz.clamp_min_(0)).add_(inside)


def _sdf_cone(x, y, z, r1, r2, h):
    """Capped cone, radius r1 at z = -h and r2 at z = +h (exact). In the (radius, z) half
    plane the section is a trapezoid: the distance is the smaller of the distances to the
    nearer cap (``ca``) and to the slanted side (``cb``); inside both means negative."""
    q = _norm(x, y)
    ca_x = (q - torch.full_like(z, r2).masked_fill_(z < 0, r1)).clamp_min_(0)
    ca_y = z.abs().sub_(h)
    # the side runs from (r2, h) to (r1, -h): points (r2, h) - t (r2 - r1, 2h), t in [0, 1]
    kx, ky = r2 - r1, 2 * h
    kk = kx * kx + ky * ky
    t = (q * (-kx / kk)).add_(z, alpha=-ky / kk).add_((r2 * kx + h * ky) / kk).clamp_(0, 1)
    cb_x, cb_y = torch.add(q, t, alpha=kx).sub_(r2), torch.add(z, t, alpha=ky).sub_(h)
    inside = (cb_x < 0) & (ca_y < 0)
    d = torch.minimum(ca_x.mul_(ca_x).addcmul_(ca_y, ca_y), cb_x.mul_(cb_x).addcmul_(cb_y, cb_y)).sqrt_()
    return torch.where(inside, -d, d)


def _sdf_torus(x, y, z, R, r):  # ring of radius R in the xy plane, tube radius r: |(|p_xy| - R, z)| - r (exact)
    return _norm(_norm(x, y).sub_(R), z).sub_(r)


def _sdf_capsule(x, y, z, r, h):  # segment from z = -h to z = +h, radius r: |p - clamp(z) e_z| - r (exact)
    return _norm(x, y, z - z.clamp(-h, h)).sub_(r)


_SDF = {"box": _sdf_box, "sphere": _sdf_sphere, "ellipsoid": _sdf_ellipsoid, "dome": _sdf_dome,
        "cylinder": _sdf_cylinder, "cone": _sdf_cone, "torus": _sdf_torus, "capsule": _sdf_capsule}


def _unit_vectors(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _disc(rng, n, a, b, z):  # uniform on the ellipse x^2/a^2 + y^2/b^2 <= 1 at height z
    rho, phi = np.sqrt(rng.random(n)), rng.random(n) * 2 * np.pi
    return np.stack([a * rho * np.cos(phi), b * rho * np.sin(phi), np.full(n, float(z))], 1)


def _rejection(rng, n, propose):
    """Draw ``n`` points from ``propose(m) -> (points, accept_probability)`` by rejection."""
    out, count = [], 0
    while count < n:
        pts, prob = propose(2 * (n - count) + 16)
        pts = pts[rng.random(len(pts)) < prob]
        out.append(pts)
        count += len(pts)
    return np.concatenate(out)[:n]


def _ellipsoid_stretch(u, a, b, c):
    """Area element of the map u -> (a u_x, b u_y, c u_z) from the unit sphere, per unit area."""
    return a * b * c * np.sqrt((u[:, 0] / a) ** 2 + (u[:, 1] / b) ** 2 + (u[:, 2] / c) ** 2)


_FIBONACCI = None


def _ellipsoid_area(a, b, c):  # quadrature of the stretch over a Fibonacci sphere (error ~1e-6)
    global _FIBONACCI
    if _FIBONACCI is None:
        i = np.arange(20000) + 0.5
        z, phi = 1 - 2 * i / 20000, np.pi * (1 + 5 ** 0.5) * i
        _FIBONACCI = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    return 4 * np.pi * _ellipsoid_stretch(_FIBONACCI, a, b, c).mean()


def _components(shape, size):
    """The surface of a primitive as ``[(area, sampler(rng, n) -> (n, 3) local points)]``."""
    if shape == "box":
        h, r = np.array(size[:3]), size[3] if len(size) > 3 else 0.0
        inner = h - r
        comps = []
        for i in range(3):  # the two flat faces normal to axis i, then the 4 edges along axis i
            j, k = (i + 1) % 3, (i + 2) % 3

            def face(rng, n, i=i):
                p = (rng.random((n, 3)) * 2 - 1) * inner
                p[:, i] = np.where(rng.random(n) < 0.5, -h[i], h[i])
                return p

            def edge(rng, n, i=i, j=j, k=k):
                p, theta = np.empty((n, 3)), rng.random(n) * np.pi / 2
                p[:, i] = (rng.random(n) * 2 - 1) * inner[i]
                p[:, j] = np.where(rng.random(n) < 0.5, -1, 1) * (inner[j] + r * np.cos(theta))
                p[:, k] = np.where(rng.random(n) < 0.5, -1, 1) * (inner[k] + r * np.sin(theta))
                return p
            comps += [(8 * inner[j] * inner[k], face), (4 * np.pi * r * inner[i], edge)]

        def corner(rng, n):  # the 8 corners together make one sphere of radius r
            u = _unit_vectors(rng, n)
            return np.sign(u) * inner + r * u
        return comps + [(4 * np.pi * r * r, corner)]
    if shape == "sphere":
        return [(4 * np.pi * size[0] ** 2, lambda rng, n: size[0] * _unit_vectors(rng, n))]
    if shape in ("ellipsoid", "dome"):
        radii = np.array(size)
        upper = shape == "dome"

        def propose(rng, m):
            u = _unit_vectors(rng, m)
            if upper:
                u[:, 2] = np.abs(u[:, 2])
            return u * radii, _ellipsoid_stretch(u, *radii) * radii.min() / radii.prod()
        shell = lambda rng, n: _rejection(rng, n, lambda m: propose(rng, m))
        area = _ellipsoid_area(*radii)
        if not upper:
            return [(area, shell)]
        return [(area / 2, shell), (np.pi * radii[0] * radii[1], lambda rng, n: _disc(rng, n, *radii[:2], 0.0))]
    if shape in ("cylinder", "cone"):
        r1, r2, h = (size[0], size[0], size[1]) if shape == "cylinder" else size

        def side(rng, n):
            u, phi = rng.random(n), rng.random(n) * 2 * np.pi
            rho = np.sqrt(r1 * r1 + u * (r2 * r2 - r1 * r1))  # area up to rho grows like rho^2
            t = (rho - r1) / (r2 - r1) if abs(r2 - r1) > 1e-12 else u
            return np.stack([rho * np.cos(phi), rho * np.sin(phi), -h + 2 * h * t], 1)
        return [(np.pi * (r1 + r2) * math.hypot(r1 - r2, 2 * h), side),
                (np.pi * r1 * r1, lambda rng, n: _disc(rng, n, r1, r1, -h)),
                (np.pi * r2 * r2, lambda rng, n: _disc(rng, n, r2, r2, h))]
    if shape == "torus":
        R, r = size

        def propose(rng, m):  # tube angle phi has density proportional to R + r cos(phi)
            phi, theta = rng.random(m) * 2 * np.pi, rng.random(m) * 2 * np.pi
            rho = R + r * np.cos(phi)
            pts = np.stack([rho * np.cos(theta), rho * np.sin(theta), r * np.sin(phi)], 1)
            return pts, rho / (R + r)
        return [(4 * np.pi ** 2 * R * r, lambda rng, n: _rejection(rng, n, lambda m: propose(rng, m)))]
    if shape == "capsule":
        r, h = size

        def caps(rng, n):
            u = r * _unit_vectors(rng, n)
            u[:, 2] += np.where(u[:, 2] < 0, -h, h)
            return u
        return [(4 * np.pi * r * h, lambda rng, n: _components("cylinder", (r, h))[0][1](rng, n)),
                (4 * np.pi * r * r, caps)]
    raise ValueError(f"unknown primitive {shape!r}")


def _support(shape, size, v):
    """Support function ``max_{q in shape} v . q`` of a primitive, for a local direction v."""
    vx, vy, vz = v
    rho, norm = math.hypot(vx, vy), math.sqrt(vx * vx + vy * vy + vz * vz)
    if shape == "box":
        hx, hy, hz, r = (*size, 0.0)[:4]
        return (hx - r) * abs(vx) + (hy - r) * abs(vy) + (hz - r) * abs(vz) + r * norm
    if shape == "sphere":
        return size[0] * norm
    if shape in ("ellipsoid", "dome"):
        a, b, c = size
        return math.sqrt((a * vx) ** 2 + (b * vy) ** 2 + (c * vz if shape == "ellipsoid" or vz > 0 else 0) ** 2)
    if shape == "cylinder":
        return size[0] * rho + size[1] * abs(vz)
    if shape == "cone":
        r1, r2, h = size
        return max(r1 * rho - h * vz, r2 * rho + h * vz)
    if shape == "torus":
        return size[0] * rho + size[1] * norm
    return size[0] * norm + size[1] * abs(vz)  # capsule


# ------------------------------------------------------------------ parts and objects

@dataclass(frozen=True)
class Part:
    """A primitive placed in the object's model frame.

    The local z axis points along the model axis ``axis``, then the local frame is turned by
    ``spin`` radians about it. ``role``: "main" (main colour and pattern), "accent" (second
    colour when the pattern is two-tone) or a fixed colour name. ``carve`` parts are removed.
    """

    shape: str
    size: tuple
    center: tuple = (0.0, 0.0, 0.0)
    axis: str = "z"
    spin: float = 0.0
    role: str = "main"
    carve: bool = False

    def to_local(self, x, y, z, translate=True):
        """Model coordinates (tensors or floats) -> local ones; never modifies its inputs."""
        if translate:  # skipping zero shifts saves passes over memory
            cx, cy, cz = self.center
            x, y, z = x - cx if cx else x, y - cy if cy else y, z - cz if cz else z
        if self.axis == "x":
            x, y, z = y, z, x
        elif self.axis == "y":
            x, y, z = z, x, y
        if self.spin:
            c, s = math.cos(self.spin), math.sin(self.spin)
            x, y = x * c + y * s, y * c - x * s
        return x, y, z

    def from_local(self, q_n3):
        """Local points ``(n, 3)`` (numpy) -> model coordinates: the inverse of ``to_local``."""
        x, y, z = q_n3[:, 0], q_n3[:, 1], q_n3[:, 2]
        if self.spin:
            c, s = math.cos(self.spin), math.sin(self.spin)
            x, y = x * c - y * s, x * s + y * c
        if self.axis == "x":
            x, y, z = z, x, y
        elif self.axis == "y":
            x, y, z = y, z, x
        return np.stack([x, y, z], 1) + np.array(self.center)

    def distance(self, x, y, z):  # the primitive's SDF at model points, in model units
        return _SDF[self.shape](*self.to_local(x, y, z), *self.size)

    def support(self, v):  # max over the part of v . p, for a model direction v
        return float(np.dot(self.center, v)) + _support(self.shape, self.size, self.to_local(*v, translate=False))


@dataclass
class ProceduralObject:
    """One captioned object of the procedural world; build it with ``world.make_object(seed)``.

    ``attributes`` (JSON) holds the colour, second colour, pattern, finish, the category's
    shape attributes and the yaw; ``shininess`` (0 matte .. 1) weights the renderer's specular
    term. ``parts`` are in model units, placed in the world by ``world = scale Rz(yaw) model +
    offset``; ``palette`` holds per part the main colour ``(P, 3)``, second colour ``(P, 3)``
    and whether the pattern applies ``(P,)``.
    """

    seed: int
    category: str
    attributes: dict
    caption: str
    split: str
    shininess: float
    parts: list = field(default_factory=list, repr=False)
    scale: float = 1.0
    offset: tuple = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    z_range: tuple = (FLOOR_Z, FLOOR_Z + EXTENT)  # world heights of the bottom and the top (for gradients)
    palette: tuple = field(default=None, repr=False)
    prompts: tuple = ()  # the caption's other forms: short prompts as people type them and a paraphrase

    def _to_model(self, p_N3):
        """World -> model coordinates, ``m = Rz(yaw)^T (p - offset) / scale``, as three (N,) tensors."""
        a, b = math.cos(self.yaw) / self.scale, math.sin(self.yaw) / self.scale
        (ox, oy, oz), (px, py, pz) = self.offset, p_N3.unbind(1)
        return ((px * a).add_(py, alpha=b).add_(-(a * ox + b * oy)),
                (py * a).sub_(px, alpha=b).add_(b * ox - a * oy),
                (pz * (1 / self.scale)).add_(-oz / self.scale))

    def _distances(self, p_N3):  # per-part distances in model units
        x, y, z = self._to_model(p_N3)
        return [part.distance(x, y, z) for part in self.parts]

    def _sdf(self, p_N3):
        solid, carved = None, None  # union: hard min (a smooth min would break the bound)
        for part, d in zip(self.parts, self._distances(p_N3)):
            if part.carve:
                carved = d if carved is None else torch.minimum(carved, d, out=carved)
            else:
                solid = d if solid is None else torch.minimum(solid, d, out=solid)
        if carved is not None:
            solid = torch.maximum(solid, carved.neg_(), out=solid)  # subtraction: f = max(f_solid, -f_carve)
        return solid.mul_(self.scale)

    def sdf(self, p_N3: torch.Tensor) -> torch.Tensor:
        """Signed distance ``(N,)`` float32 at world points ``(N, 3)``, negative inside.

        A Lipschitz-1 lower bound of the distance, ``|sdf(p)| <= dist(p, surface)``, with the
        exact zero set; it equals the distance outside the object wherever the nearest part is
        neither an ellipsoid nor carved (float64 input is evaluated in float64)."""
        p = torch.as_tensor(p_N3)
        return self._sdf(p if p.dtype == torch.float64 else p.float()).float()

    def color(self, p_N3: torch.Tensor) -> torch.Tensor:
        """Albedo ``(N, 3)`` in [0, 1] of points on or near the surface: the colour of the
        nearest part, with the object's pattern drawn in world coordinates."""
        p = torch.as_tensor(p_N3).float()
        best_N, nearest_N = None, None
        for i, d_N in enumerate(self._distances(p)):
            d_N = d_N.abs_()
            if best_N is None:
                best_N, nearest_N = d_N, torch.zeros(len(d_N), dtype=torch.long)
            else:
                nearest_N.masked_fill_(d_N < best_N, i)
                torch.minimum(best_N, d_N, out=best_N)
        c1_P3, c2_P3, patterned_P = self.palette
        c1_N3, c2_N3 = c1_P3[nearest_N], c2_P3[nearest_N]
        pattern = self.attributes["pattern"]
        if pattern not in ("striped", "checkered", "dotted", "gradient"):
            return c1_N3
        x, y, z = p.unbind(1)
        if pattern == "striped":  # horizontal bands; the second colour takes STRIPE_SHARE of each period
            w_N = ((z / STRIPE_PERIOD).remainder_(1.0) < STRIPE_SHARE).float()
        elif pattern == "checkered":  # 3D checkerboard of cells CHECKER wide
            w_N = (torch.floor(x / CHECKER) + torch.floor(y / CHECKER) + torch.floor(z / CHECKER)).remainder_(2)
        elif pattern == "dotted":
            # balls of radius DOT_RADIUS around a body-centred cubic lattice: the cube corners
            # and centres. Every axis-aligned plane passes within DOT_PERIOD / 4 < DOT_RADIUS of
            # a layer of balls, so flat faces get dots too; balls never touch (0.87 P > 2 R).
            near_N = None
            for shift in (0.0, 0.5):
                f = [v / DOT_PERIOD + shift for v in (x, y, z)]
                d_N = _norm(*[v - v.round() for v in f])
                near_N = d_N if near_N is None else torch.minimum(near_N, d_N)
            w_N = (near_N < DOT_RADIUS / DOT_PERIOD).float()
        else:  # the main colour at the bottom, the second one at the top
            w_N = ((z - self.z_range[0]) / (self.z_range[1] - self.z_range[0])).clamp_(0, 1)
        w_N = w_N.mul_(patterned_P[nearest_N])
        return c1_N3.add_((c2_N3 - c1_N3).mul_(w_N[:, None]))

    def sample_surface(self, n: int, seed: int = 0) -> torch.Tensor:
        """``(n, 3)`` world points uniform by area on the visible surface, exact up to float32.

        Every primitive's surface is sampled analytically, in proportion to its area; points
        inside another part (or, for a carved part, outside the solid) are rejected, which
        leaves points uniform over the surface of the union."""
        rng = np.random.default_rng([self.seed, int(seed), 2025])
        comps = [(part, sampler) for part in self.parts for _, sampler in _components(part.shape, part.size)]
        areas = np.array([area for part in self.parts for area, _ in _components(part.shape, part.size)])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        kept, count = [], 0
        while count < n:
            counts = rng.multinomial(max(2 * (n - count), 256), areas / areas.sum())
            model = np.concatenate([part.from_local(sampler(rng, k))
                                    for (part, sampler), k in zip(comps, counts) if k])
            world = np.stack([c * model[:, 0] - s * model[:, 1], s * model[:, 0] + c * model[:, 1], model[:, 2]], 1)
            world = world * self.scale + np.array(self.offset)
            on_surface = self._sdf(torch.from_numpy(world)).abs().numpy() < 1e-9  # float64: ~1e-16 on the surface
            kept.append(world[on_surface])
            count += int(on_surface.sum())
        points = np.concatenate(kept)
        return torch.from_numpy(points[rng.permutation(len(points))[:n]]).float()

    def to_dict(self) -> dict:
        return {"seed": self.seed, "category": self.category, "attributes": dict(self.attributes),
                "caption": self.caption, "split": self.split}
