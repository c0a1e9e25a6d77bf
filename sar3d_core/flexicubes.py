"""FlexiCubes: a differentiable triangle mesh from signed values on a grid (paper Sec. 4.1, Eq. 9).

SAR3D (Sec. 4.1) turns the decoded triplane into a mesh with FlexiCubes (Shen et al.,
"Flexible Isosurface Extraction for Gradient-Based Mesh Optimization", SIGGRAPH 2023,
Sec. 4) and regularises it with FlexiCubes' ``L_dev`` (SAR3D Eq. 9). This module is a
plain-PyTorch reading of that method (CPU or CUDA, no kaolin).

The grid
    ``construct_voxel_grid(res)`` gives the grid vertices ``x_nx3`` spanning
    ``[-0.5, 0.5]^3`` and the cubes ``cube_fx8`` (grid-vertex ids of each cube's 8 corners).
    Corner ``i`` of a cube sits at offset ``(i & 1, i >> 1 & 1, i >> 2 & 1)`` along
    ``(x, y, z)``; its 12 edges are numbered as in ``CUBE_EDGES``. A corner is *inside*
    when its value ``s < 0`` (``s = 0`` counts as outside); the cube's *case* is
    ``sum(2**i for inside corners i)``, 0..255. An edge is *crossed* when one end is
    inside and the other outside.

Dual Marching Cubes (the base of FlexiCubes)
    Marching Cubes puts mesh vertices on the crossed edges and triangles inside each cube.
    The dual method puts the vertices *inside* the cubes instead: one *dual vertex* per
    piece of surface in a cube, and one quad per crossed interior grid edge, joining the dual
    vertices of the 4 cubes around that edge (the ones whose surface piece cuts it). Which
    crossed edges belong to the same piece is a per-case table, ``DMC_TABLE``:

    * each connected group (along cube edges) of inside corners is one piece, joined to the
      crossed edges that touch the group;
    * except the four cases whose two *outside* corners are opposite ends of a body diagonal
      (126, 189, 219, 231): the inside corners form a ring there, whose single piece would
      touch the mesh in two separate fans (a pinched vertex), so the groups of *outside*
      corners are used instead (two pieces of 3 edges).

    Dual vertices of a case are listed by their smallest edge id and each one's edges in
    ascending order (padding -1); ``NUM_VD_TABLE`` counts them.

Ambiguous faces (``CHECK_TABLE``)
    A cube face whose corners alternate inside/outside can be cut two ways, and the two
    cubes sharing it must agree. The rule above separates the two inside corners of such a
    face, except in cubes with 5 or 6 inside corners and exactly one ambiguous face: there
    the inside corners are joined through the cube, and the case is *flagged* (with the
    face's outward normal as direction). One flagged cube next to an unflagged one is
    fine; two flagged cubes sharing the face would glue the same pair of dual vertices by
    four quads (a non-manifold edge), so both switch to the replacement case
    ``255 - case``: the same crossed edges grouped by the outside corners.

Where the vertices go (the "flexible" part, FlexiCubes Sec. 4)
    * the crossing on the edge between corners ``a`` and ``b`` (Eq. 2) is
      ``p = (s_b alpha_b x_a - s_a alpha_a x_b) / (s_b alpha_b - s_a alpha_a)``, with a weight
      ``alpha_fx8`` per cube corner (all ones: linear interpolation of ``s``);
    * a dual vertex is the ``beta``-weighted mean of its crossings (Eq. 3), ``beta_fx12``
      being a weight per cube edge;
    * each quad is cut into two triangles along the diagonal whose two cubes have the larger
      product of ``gamma_f`` (a weight per cube; ``gamma_0 gamma_2 >= gamma_1 gamma_3``
      picks the diagonal 0-2); when training, each quad is instead cut into four triangles
      around an extra vertex, the ``gamma``-weighted mean of its four corners, so that
      gradients reach both diagonals;
    * the grid vertices themselves may move: the caller passes ``deform(x_nx3, d_nx3, res)``
      (an offset bounded by ``tanh`` to half a cell) as ``x_nx3``.

    The weights are used as given (no ``1 + tanh`` inside): they must be positive, and
    ``None`` means all ones. A model that predicts them maps its raw outputs to positive
    values first (e.g. ``exp`` or ``1 + 0.99 tanh``).

Orientation and the regulariser
    The quad of a crossed edge is ordered counter-clockwise seen from the edge's outside
    end, so triangle normals point outwards (towards ``s > 0``); the surface is closed when
    ``s > 0`` on the grid boundary. ``L_dev`` (FlexiCubes Sec. 4.2, SAR3D Eq. 9) is, for each
    dual vertex, the mean absolute deviation of its distances to its edge crossings from
    their mean, averaged over the dual vertices: it is 0 when a vertex is equally far from all
    its crossings and grows as the weights drag it towards some of them, which discourages
    the folded, badly shaped triangles that extreme weights produce.

Not included: FlexiCubes' tetrahedral and adaptive-resolution variants, and any mapping of
raw network outputs to weights (see above).

The tables are built at import from the two rules above (``dual_vertex_edges``,
``ambiguous_faces``), not typed in.
"""
from __future__ import annotations

import warnings
import torch

# --------------------------------------------------------------------------- cube numbering
CORNER_OFFSETS = tuple((i & 1, i >> 1 & 1, i >> 2 & 1) for i in range(8))
# FlexiCubes' edge numbering (pairs of corners)
EDGE_CORNERS = ((0, 1), (1, 5), (4, 5), (0, 4), (2, 3), (3, 7), (6, 7), (2, 6), (2, 0), (3, 1), (7, 5), (6, 4))
# the axis each edge runs along, and its end with the smaller coordinate on that axis
EDGE_AXIS = tuple((a ^ b).bit_length() - 1 for a, b in EDGE_CORNERS)
EDGE_LOW = tuple(min(a, b) for a, b in EDGE_CORNERS)


def _edge_slot(e: int) -> int:
    """Where a cube sits around its edge ``e``, counter-clockwise seen from the edge's ``+axis`` end.

    With ``(a, b, c)`` a right-handed cyclic order of the axes, the cube holds the edge at its
    low or high ``b`` and ``c`` sides: ``(low, low)`` puts the cube at ``(+b, +c)`` of the
    edge (slot 0), then ``(high, low)``, ``(high, high)``, ``(low, high)`` turn by 90 degrees.
    """
    a = EDGE_AXIS[e]
    hb, hc = EDGE_LOW[e] >> (a + 1) % 3 & 1, EDGE_LOW[e] >> (a + 2) % 3 & 1
    return {(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}[(hb, hc)]


EDGE_SLOT = tuple(_edge_slot(e) for e in range(12))

# the 6 faces: (axis, side) with its corners and outward normal
FACES = tuple((axis, side) for axis in range(3) for side in range(2))


def face_corners(axis: int, side: int) -> tuple[int, ...]:
    return tuple(i for i in range(8) if i >> axis & 1 == side)


def face_normal(axis: int, side: int) -> tuple[int, int, int]:
    n = [0, 0, 0]
    n[axis] = 1 if side else -1
    return tuple(n)


# --------------------------------------------------------------------------- the rules
def crossed_edges(case: int) -> list[int]:
    """Edges with one inside and one outside corner."""
    return [e for e, (a, b) in enumerate(EDGE_CORNERS) if (case >> a & 1) != (case >> b & 1)]


def corner_groups(corners) -> list[frozenset]:
    """Connected groups of ``corners`` along cube edges (neighbours differ in one bit)."""
    left, groups = set(corners), []
    while left:
        stack = [left.pop()]
        group = set(stack)
        while stack:
            c = stack.pop()
            for k in range(3):
                nb = c ^ (1 << k)
                if nb in left:
                    left.remove(nb)
                    group.add(nb)
                    stack.append(nb)
        groups.append(frozenset(group))
    return groups


def groups_outside_corners(case: int) -> bool:
    """The four cases whose two outside corners are the ends of a body diagonal (126, 189, 219, 231)."""
    outside = [i for i in range(8) if not case >> i & 1]
    return len(outside) == 2 and outside[0] ^ outside[1] == 7


def dual_vertex_edges(case: int) -> list[tuple[int, ...]]:
    """The crossed edges of each dual vertex of ``case``, vertices by smallest edge id, edges ascending."""
    bit = 0 if groups_outside_corners(case) else 1
    corners = [i for i in range(8) if case >> i & 1 == bit]
    crossed = crossed_edges(case)
    vertices = [tuple(e for e in crossed if EDGE_CORNERS[e][0] in g or EDGE_CORNERS[e][1] in g)
                for g in corner_groups(corners)]
    return sorted(v for v in vertices if v)  # groups are disjoint: sorting tuples sorts by the first edge


def ambiguous_faces(case: int) -> list[tuple[int, int]]:
    """Faces ``(axis, side)`` whose corners alternate inside/outside around the face."""
    found = []
    for axis, side in FACES:
        inside = [c for c in face_corners(axis, side) if case >> c & 1]
        if len(inside) == 2 and bin(inside[0] ^ inside[1]).count("1") == 2:  # diagonal, not adjacent
            found.append((axis, side))
    return found


def check_entry(case: int) -> tuple[int, int, int, int, int]:
    """``(flag, dx, dy, dz, replacement)``: flagged when there is exactly one ambiguous face and
    5 or 6 inside corners; the direction is that face's outward normal. Unflagged: all zeros."""
    faces = ambiguous_faces(case)
    if len(faces) == 1 and bin(case).count("1") in (5, 6):
        return (1, *face_normal(*faces[0]), 255 - case)
    return (0, 0, 0, 0, 0)


def _build_tables():
    dmc = torch.full((256, 4, 7), -1, dtype=torch.long)
    num = torch.zeros(256, dtype=torch.long)
    check = torch.zeros(256, 5, dtype=torch.long)
    for case in range(256):
        vertices = dual_vertex_edges(case)
        num[case] = len(vertices)
        for v, edges in enumerate(vertices):
            dmc[case, v, :len(edges)] = torch.tensor(edges)
        check[case] = torch.tensor(check_entry(case))
    return dmc, num, check


DMC_TABLE, NUM_VD_TABLE, CHECK_TABLE = _build_tables()
CUBE_CORNERS = torch.tensor(CORNER_OFFSETS, dtype=torch.long)  # (8, 3)
CUBE_EDGES = torch.tensor(EDGE_CORNERS, dtype=torch.long)  # (12, 2)


# --------------------------------------------------------------------------- helpers
def _as_res(res) -> tuple[int, int, int]:
    """``res`` as three cube counts; ValueError below 2 (no interior grid edge, so no quad)."""
    r = (res,) * 3 if isinstance(res, int) else tuple(res)
    if len(r) != 3 or not all(isinstance(v, int) or (torch.is_tensor(v) and v.numel() == 1) for v in r):
        raise ValueError(f"res must be an int or three ints (cubes per axis), got {res!r}")
    r = tuple(int(v) for v in r)
    if min(r) < 2:
        raise ValueError(f"res must be at least 2 cubes per axis (a single cube has no interior edge), got {res!r}")
    return r


def deform(x_nx3: torch.Tensor, d_nx3: torch.Tensor, res) -> torch.Tensor:
    """Grid vertices moved by ``tanh(d) / 2`` cells along each axis (cells are ``1 / res`` wide).

    The offset is at most half a cell, so neighbouring vertices cannot pass each other; pass
    the result to ``FlexiCubes.__call__`` as its ``x_nx3`` (FlexiCubes Sec. 4: the grid
    deformation is learned along with ``s`` and the weights).
    """
    r = x_nx3.new_tensor(_as_res(res))
    return x_nx3 + torch.tanh(d_nx3) * (0.5 / r)


def _weights(w, shape, name, like: torch.Tensor) -> torch.Tensor:
    if w is None:
        return like.new_ones(shape)
    if tuple(w.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(w.shape)}, expected {shape}")
    return w.to(like.dtype)


class FlexiCubes:
    """Extract a triangle mesh from ``s`` on a grid of cubes (see the module doc).

    ``FlexiCubes()(x_nx3, s_n, cube_fx8, res)`` returns ``(vertices (V, 3), faces (T, 3) long,
    L_dev scalar)``. ``cube_fx8`` must use the corner order of ``construct_voxel_grid`` and
    share grid-vertex ids between neighbouring cubes (the cubes may be any subset of a grid, in
    any order). Each surface cube contributes its dual vertices (``NUM_VD_TABLE`` of its case);
    a vertex whose crossings all lie on the grid boundary is kept but used by no face.
    """

    deform = staticmethod(deform)

    def __init__(self):
        self._device_tables: dict = {}

    def _tables(self, device: torch.device) -> dict:
        key = str(device)
        if key not in self._device_tables:
            self._device_tables[key] = dict(
                dmc=DMC_TABLE.to(device), num=NUM_VD_TABLE.to(device), check=CHECK_TABLE.to(device),
                edges=CUBE_EDGES.to(device), axis=torch.tensor(EDGE_AXIS, device=device),
                low=torch.tensor(EDGE_LOW, device=device), slot=torch.tensor(EDGE_SLOT, device=device),
                pow2=2 ** torch.arange(8, device=device))
        return self._device_tables[key]

    @staticmethod
    def construct_voxel_grid(res, device=None, dtype: torch.dtype = torch.float32):
        """``(x_nx3, cube_fx8)``: the ``(rx+1)(ry+1)(rz+1)`` grid vertices spanning ``[-0.5, 0.5]^3``
        (vertex ``(i, j, k)`` has id ``(i (ry+1) + j)(rz+1) + k``) and the ``rx ry rz`` cubes,
        cube ``(i, j, k)`` at row ``(i ry + j) rz + k`` with corner ``c`` at ``(i, j, k) + CORNER_OFFSETS[c]``."""
        rx, ry, rz = _as_res(res)
        ii, jj, kk = torch.meshgrid(torch.arange(rx + 1, device=device), torch.arange(ry + 1, device=device),
                                    torch.arange(rz + 1, device=device), indexing="ij")
        x_nx3 = torch.stack([ii / rx, jj / ry, kk / rz], -1).reshape(-1, 3).to(dtype) - 0.5
        vid = torch.arange(x_nx3.shape[0], device=device).reshape(rx + 1, ry + 1, rz + 1)
        cube_fx8 = torch.stack([vid[dx:dx + rx, dy:dy + ry, dz:dz + rz] for dx, dy, dz in CORNER_OFFSETS],
                               -1).reshape(-1, 8)
        return x_nx3, cube_fx8

    def __call__(self, x_nx3: torch.Tensor, s_n: torch.Tensor, cube_fx8: torch.Tensor, res,
                 beta_fx12: torch.Tensor | None = None, alpha_fx8: torch.Tensor | None = None,
                 gamma_f: torch.Tensor | None = None, training: bool = False):
        """The mesh of ``s = 0`` on the cubes ``cube_fx8`` (all tensors on one device).

        ``x_nx3 (N, 3)``: grid vertices, already deformed if wanted (``deform``); ``s_n (N,)``:
        signed values, inside where ``s < 0``; ``cube_fx8 (F, 8)``: corner ids; ``res``: cubes per
        axis (int or 3 ints, each at least 2); ``beta_fx12 (F, 12)``, ``alpha_fx8 (F, 8)``,
        ``gamma_f (F,)``: positive weights used as given (None: ones); ``training``: four
        triangles per quad instead of two.

        Returns ``vertices (V, 3)`` (dual vertices cube by cube, each cube's in table order, then
        in training one mid-point per quad), ``faces (T, 3)`` long (two or four per quad, in
        order of the quad's grid edge) and ``L_dev`` (a scalar, 0 without a surface). ValueError
        for ``res`` below 2, NaN in ``s`` or mis-shaped inputs; a warning and an empty mesh when
        no cube has corners of both signs.
        """
        _as_res(res)
        if x_nx3.ndim != 2 or x_nx3.shape[1] != 3:
            raise ValueError(f"x_nx3 has shape {tuple(x_nx3.shape)}, expected (N, 3)")
        if s_n.numel() != x_nx3.shape[0]:
            raise ValueError(f"s_n has {s_n.numel()} values for {x_nx3.shape[0]} grid vertices")
        if cube_fx8.ndim != 2 or cube_fx8.shape[1] != 8:
            raise ValueError(f"cube_fx8 has shape {tuple(cube_fx8.shape)}, expected (F, 8)")
        s_n = s_n.reshape(-1).to(x_nx3.dtype)
        if torch.isnan(s_n).any():
            raise ValueError(f"s_n has {int(torch.isnan(s_n).sum())} NaN values; the surface is undefined there")
        num_cubes = cube_fx8.shape[0]
        beta_fx12 = _weights(beta_fx12, (num_cubes, 12), "beta_fx12", x_nx3)
        alpha_fx8 = _weights(alpha_fx8, (num_cubes, 8), "alpha_fx8", x_nx3)
        gamma_f = _weights(gamma_f, (num_cubes,), "gamma_f", x_nx3)
        t = self._tables(x_nx3.device)
        cube_fx8 = cube_fx8.long()

        # cases, and the surface cubes (neither all inside nor all outside)
        case_f = ((s_n < 0)[cube_fx8].long() * t["pow2"]).sum(-1)
        surf_s = torch.nonzero((case_f > 0) & (case_f < 255))[:, 0]
        if surf_s.numel() == 0:
            warnings.warn(f"FlexiCubes: no surface, s has one sign over all cubes (from {float(s_n.min()):.4g} "
                          f"to {float(s_n.max()):.4g}; inside is s < 0); returning an empty mesh", stacklevel=2)
            empty = x_nx3.new_zeros((0, 3))
            return empty, torch.zeros((0, 3), dtype=torch.long, device=x_nx3.device), x_nx3.new_zeros(())
        case_s = self._resolve_ambiguity(case_f[surf_s], cube_fx8[surf_s], t)

        # dual vertices: (vertex, crossed edge) pairs of every surface cube
        vmask_sx4 = torch.arange(4, device=x_nx3.device) < t["num"][case_s][:, None]
        v_cube = surf_s[:, None].expand(-1, 4)[vmask_sx4]  # (V,) cube of each dual vertex
        v_edges_vx7 = t["dmc"][case_s][vmask_sx4]
        num_v = v_cube.shape[0]
        pv, slot = torch.nonzero(v_edges_vx7 >= 0, as_tuple=True)
        pe = v_edges_vx7[pv, slot]  # (P,) local edge of each pair
        pc = v_cube[pv]
        ca, cb = t["edges"][pe, 0], t["edges"][pe, 1]
        ga, gb = cube_fx8[pc, ca], cube_fx8[pc, cb]
        wa = (s_n[ga] * alpha_fx8[pc, ca])[:, None]
        wb = (s_n[gb] * alpha_fx8[pc, cb])[:, None]
        cross_px3 = (wb * x_nx3[ga] - wa * x_nx3[gb]) / (wb - wa)  # Eq. 2
        beta_p = beta_fx12[pc, pe]
        vert_vx3 = (x_nx3.new_zeros((num_v, 3)).index_add(0, pv, beta_p[:, None] * cross_px3)
                    / x_nx3.new_zeros(num_v).index_add(0, pv, beta_p)[:, None])  # Eq. 3

        l_dev = self._deviation(vert_vx3, cross_px3, pv)

        # one quad per interior crossed grid edge: the 4 cubes around it, counter-clockwise
        low = cube_fx8[pc, t["low"][pe]]
        key = low * 3 + t["axis"][pe]
        keys, inv, count = torch.unique(key, return_inverse=True, return_counts=True)
        quad_kx4 = torch.full((keys.shape[0], 4), -1, dtype=torch.long, device=x_nx3.device)
        quad_kx4[inv, t["slot"][pe]] = pv
        interior = count == 4
        quad_kx4, low_k = quad_kx4[interior], keys[interior] // 3
        flip = s_n[low_k] >= 0  # the low end is outside: the outward normal is -axis
        quad_kx4 = torch.where(flip[:, None], quad_kx4[:, [0, 3, 2, 1]], quad_kx4)

        gamma_v = gamma_f[v_cube]
        vertices, faces = self._triangulate(vert_vx3, quad_kx4, gamma_v, training)
        return vertices, faces, l_dev

    @staticmethod
    def _resolve_ambiguity(case_s: torch.Tensor, cube_sx8: torch.Tensor, t: dict) -> torch.Tensor:
        """Replace the case of each flagged cube whose neighbour across the flagged face is flagged too.

        The neighbour's flagged face is the same face (it is its only ambiguous one), so the two
        cubes meet on a face with the same key: the id of the face's lowest grid vertex and its
        axis. A key seen twice among the flagged faces marks such a pair.
        """
        check_sx5 = t["check"][case_s]
        flagged = torch.nonzero(check_sx5[:, 0] == 1)[:, 0]
        if flagged.numel() == 0:
            return case_s
        direction = check_sx5[flagged, 1:4]
        axis = direction.abs().argmax(1)
        positive = direction.sum(1) > 0
        key_corner = torch.where(positive, 2 ** axis, torch.zeros_like(axis))  # the face's corner nearest (0,0,0)
        key = cube_sx8[flagged].gather(1, key_corner[:, None])[:, 0] * 3 + axis
        _, inv, count = torch.unique(key, return_inverse=True, return_counts=True)
        pair = count[inv] == 2
        case_s = case_s.clone()
        case_s[flagged[pair]] = check_sx5[flagged[pair], 4]
        return case_s

    @staticmethod
    def _deviation(vert_vx3: torch.Tensor, cross_px3: torch.Tensor, pv: torch.Tensor) -> torch.Tensor:
        """``L_dev``: mean over dual vertices of the mean absolute deviation of the distances to its crossings."""
        num_v = vert_vx3.shape[0]
        dist_p = torch.linalg.vector_norm(vert_vx3[pv] - cross_px3, dim=-1)
        count_v = torch.bincount(pv, minlength=num_v).to(dist_p.dtype)
        mean_v = dist_p.new_zeros(num_v).index_add(0, pv, dist_p) / count_v
        mad_v = dist_p.new_zeros(num_v).index_add(0, pv, (dist_p - mean_v[pv]).abs()) / count_v
        return mad_v.mean()

    @staticmethod
    def _triangulate(vert_vx3, quad_kx4, gamma_v, training: bool):
        """Two triangles per quad along the diagonal of larger ``gamma`` product, or, when
        training, four around the ``gamma``-weighted mean of the quad's corners."""
        g_kx4 = gamma_v[quad_kx4]
        if not training:
            diag02 = (g_kx4[:, 0] * g_kx4[:, 2] >= g_kx4[:, 1] * g_kx4[:, 3])[:, None]
            tri_a = torch.where(diag02, quad_kx4[:, [0, 1, 2]], quad_kx4[:, [0, 1, 3]])
            tri_b = torch.where(diag02, quad_kx4[:, [0, 2, 3]], quad_kx4[:, [1, 2, 3]])
            faces = torch.stack([tri_a, tri_b], 1).reshape(-1, 3)
            return vert_vx3, faces
        mid_kx3 = (g_kx4[..., None] * vert_vx3[quad_kx4]).sum(1) / g_kx4.sum(1, keepdim=True)
        mid = vert_vx3.shape[0] + torch.arange(quad_kx4.shape[0], device=quad_kx4.device)
        nxt = quad_kx4[:, [1, 2, 3, 0]]
        faces = torch.stack([quad_kx4, nxt, mid[:, None].expand(-1, 4)], -1).reshape(-1, 3)
        return torch.cat([vert_vx3, mid_kx3]), faces
