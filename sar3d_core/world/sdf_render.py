"""The renderer of the procedural world: sphere tracing of signed distance functions.

Any object with ``.sdf(p (N, 3)) -> (N,)`` and ``.color(p) -> (N, 3)`` (the procedural
objects of ``shapes``) is rendered from the cameras of DESIGN.md §4 into a ``views.MultiView``
with the camera model, shading (``render.shade``) and pixel assembly (``render._assemble``)
that ``render.render_mesh`` uses for real meshes, so the two kinds of input look alike.

Sphere tracing marches each ray by the distance to the surface, ``t_{k+1} = t_k + f(o + t_k d)``,
which never overshoots when ``f`` is a distance or a Lipschitz-1 bound of it (Hart 1996).
Normals are the SDF gradient by central differences, ``n = grad f / |grad f|``,
``df/dx ~ (f(p + h e_x) - f(p - h e_x)) / 2h``.
"""
from __future__ import annotations

import math

import torch

from ..cameras import camera_rays, ray_box_interval, ray_depth_scale
from ..render import Lighting, _assemble, _check_cameras, _check_size, shade
from ..views import MultiView

MARCH_BOUND = 0.5  # rays are marched inside [-0.5, 0.5]^3: the object box 0.45 (cameras.OBJECT_BOX) plus a margin


def _eval_sdf(sdf, p_N3) -> torch.Tensor:
    dist = torch.as_tensor(sdf(p_N3)).float()
    if dist.shape != (p_N3.shape[0],):
        raise ValueError(f"obj.sdf returned shape {tuple(dist.shape)} for {p_N3.shape[0]} points: expected (N,)")
    return dist


def sphere_trace(sdf, o_N3, d_N3, t_near_N, t_far_N, *, max_steps=64, eps=1e-4, refine_steps=12) -> torch.Tensor:
    """Distance along each ray to the surface ``sdf = 0`` -> ``t (N,)``, ``inf`` where it misses.

    A ray stops as a hit when ``f(p) < eps`` and as a miss when it leaves ``[t_near, t_far]``;
    only the rays still marching are evaluated (the active set is compacted every step).
    Rays still marching after ``max_steps`` graze a face at a few degrees, where sphere
    tracing slows to a factor ``1 - sin(angle)`` per step; ``_refine_grazing`` finishes them.
    """
    t_hit_N = torch.full_like(t_near_N, math.inf)
    idx = torch.arange(t_near_N.shape[0])
    # one row per marching ray, so that compacting the active set is a single gather:
    # origin (3), direction (3), t, t_far, and the previous sample t_prev, f_prev (for the refinement)
    ray_N10 = torch.cat([o_N3, d_N3, t_near_N[:, None], t_far_N[:, None], t_near_N[:, None],
                         torch.full_like(t_near_N, math.inf)[:, None]], dim=1)
    for _ in range(max_steps):
        if idx.numel() == 0:
            return t_hit_N
        o, d, t = ray_N10[:, :3], ray_N10[:, 3:6], ray_N10[:, 6]
        dist = _eval_sdf(sdf, torch.addcmul(o, t[:, None], d))
        hit = dist < eps
        t_hit_N[idx[hit]] = t[hit]
        ray_N10[:, 8], ray_N10[:, 9] = t, dist
        ray_N10[:, 6] += dist  # t_{k+1} = t_k + f(o + t_k d)
        keep = torch.nonzero(~hit & (ray_N10[:, 6] < ray_N10[:, 7])).squeeze(1)
        idx, ray_N10 = idx[keep], ray_N10[keep]
    if idx.numel():
        o, d, t, t_far, t_prev, f_prev = ray_N10.split([3, 3, 1, 1, 1, 1], dim=1)
        t_hit_N[idx] = _refine_grazing(sdf, o, d, t_prev[:, 0], f_prev[:, 0], t[:, 0], t_far[:, 0], eps, refine_steps)
    return t_hit_N


def _refine_grazing(sdf, o, d, a, fa, b, t_far, eps, steps):
    """Secant-accelerated sphere tracing, then bisection once a step lands inside, for unfinished rays.

    Near a face seen at a grazing angle the SDF along the ray is close to linear, so the
    secant root ``b - f_b (b - a) / (f_b - f_a)`` of the last two samples lands on it in a
    step or two, where sphere steps would take hundreds. A step is at least the safe sphere
    step ``f_b`` and at most ``16 f_b`` (so it cannot leap over a part). A hit needs
    ``|f| < eps`` or a sign change (then bisected); so no ray that stays outside the surface
    is called a hit. Rays unresolved after ``steps`` count as misses.
    """
    fb = _eval_sdf(sdf, o + b[:, None] * d)
    t_hit = torch.where(fb.abs() < eps, b, torch.full_like(b, math.inf))
    alive = torch.isinf(t_hit)
    inside = alive & (fb < 0)  # a root is bracketed in [a, b]
    for _ in range(steps):
        secant = fb * (b - a) / (fa - fb).clamp(min=1e-12)
        step = torch.where(fb < fa, torch.clamp(secant, min=fb, max=16 * fb), fb)  # sphere step unless approaching
        t_new = torch.where(inside, 0.5 * (a + b), b + step)
        f_new = _eval_sdf(sdf, o + t_new[:, None] * d)
        found = alive & (f_new.abs() < eps)
        t_hit = torch.where(found, t_new, t_hit)
        # secant: (a, b) <- (b, new); bisection: the new sample replaces the end of its sign
        shift = alive & ~inside
        new_a = alive & inside & (f_new > 0)
        new_b = shift | (alive & inside & (f_new <= 0))
        a = torch.where(shift, b, torch.where(new_a, t_new, a))
        fa = torch.where(shift, fb, torch.where(new_a, f_new, fa))
        b, fb = torch.where(new_b, t_new, b), torch.where(new_b, f_new, fb)
        alive = alive & ~found & (inside | (f_new < 0) | (t_new < t_far))
        inside = alive & (inside | (f_new < 0))
    return torch.where(inside, a, t_hit)  # still bracketed: the outer end of the last bracket


def sdf_normals(sdf, p_N3, h=5e-4) -> torch.Tensor:
    """Unit gradient of the SDF by central differences -> ``(N, 3)``."""
    offsets_63 = torch.cat([torch.eye(3), -torch.eye(3)]) * h
    f_6N = _eval_sdf(sdf, (p_N3[None] + offsets_63[:, None]).reshape(-1, 3)).reshape(6, -1)
    grad_N3 = ((f_6N[:3] - f_6N[3:]) / (2 * h)).T  # (f(p + h e) - f(p - h e)) / 2h
    return torch.nn.functional.normalize(grad_N3, dim=-1)


def _object_shininess(obj, p_N3):
    """The object's shininess in [0, 1]: an attribute, a per-point method, or ``attributes['shininess']``."""
    s = getattr(obj, "shininess", None)
    if s is None:
        attributes = getattr(obj, "attributes", None)
        s = attributes.get("shininess", 0.0) if isinstance(attributes, dict) else 0.0
    if callable(s):
        s = s(p_N3)
    return torch.as_tensor(s, dtype=torch.float32).clamp(0.0, 1.0)


@torch.no_grad()
def render_sdf(obj, c, height: int, width: int, *, max_steps: int = 64, eps: float = 1e-4,
               supersample: int = 1, lighting: Lighting | None = None, bound: float = MARCH_BOUND,
               chunk: int = 1 << 18) -> MultiView:
    """Sphere-trace an object with ``.sdf(p (N, 3)) -> (N,)`` and ``.color(p) -> (N, 3)``.

    ``c (V, 25)`` cameras; all rays of all views are marched together, ``chunk`` rays at a
    time, inside the box ``[-bound, bound]^3``. ``supersample=s`` traces ``s x s`` rays per
    pixel and averages them (see ``_assemble``). Returns a ``MultiView`` of ``height x width``.
    """
    for name in ("sdf", "color"):
        if not callable(getattr(obj, name, None)):
            raise TypeError(f"{type(obj).__name__} has no {name}() method: render_sdf needs obj.sdf(p) and obj.color(p)")
    height, width, s = _check_size(height, width, supersample)
    c = _check_cameras(c)
    Hs, Ws = height * s, width * s
    origins, dirs = camera_rays(c, Hs, Ws)
    o_N3, d_N3 = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    scale_N = ray_depth_scale(c, Hs, Ws).reshape(-1)
    N = o_N3.shape[0]
    hit_N = torch.zeros(N, dtype=torch.bool)
    depth_N, normal_N3, rgb_N3 = torch.zeros(N), torch.zeros(N, 3), torch.ones(N, 3)
    for start in range(0, N, chunk):
        sl = slice(start, start + chunk)
        o, d = o_N3[sl], d_N3[sl]
        t_near, t_far = ray_box_interval(o, d, -bound, bound)
        inside = torch.nonzero(t_near < t_far).squeeze(1)  # rays that cross the object box
        t = sphere_trace(obj.sdf, o[inside], d[inside], t_near[inside], t_far[inside],
                         max_steps=max_steps, eps=eps)
        found = torch.isfinite(t)
        rays, t = start + inside[found], t[found]
        p_M3 = o_N3[rays] + t[:, None] * d_N3[rays]
        normal = sdf_normals(obj.sdf, p_M3)
        albedo = torch.as_tensor(obj.color(p_M3)).float().reshape(-1, 3).clamp(0.0, 1.0)
        hit_N[rays] = True
        depth_N[rays] = t / scale_N[rays]  # planar z = t / |(x, y, 1)|
        normal_N3[rays] = normal
        rgb_N3[rays] = shade(albedo, normal, d_N3[rays], _object_shininess(obj, p_M3), lighting)
    return _assemble(hit_N, depth_N, normal_N3, rgb_N3, c, height, width, s,
                     caption=getattr(obj, "caption", None), source=f"sdf:{type(obj).__name__}")
