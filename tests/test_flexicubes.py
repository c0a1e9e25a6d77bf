"""FlexiCubes (paper Sec. 4.1, Eq. 9): the generated tables, one rule at a time, and the mesh they give."""
import itertools
import math
from collections import Counter

import numpy as np
import pytest
import torch

from sar3d_core import flexicubes as fcm
from sar3d_core.flexicubes import (CHECK_TABLE, CORNER_OFFSETS, CUBE_EDGES, DMC_TABLE, EDGE_CORNERS, NUM_VD_TABLE,
                                   FlexiCubes, deform)

torch.set_num_threads(1)

DMC = DMC_TABLE.tolist()
NUM = NUM_VD_TABLE.tolist()
CHECK = CHECK_TABLE.tolist()
BODY_DIAGONAL_CASES = (126, 189, 219, 231)


def vertex_sets(case: int) -> set:
    """The dual vertices of ``case`` as a set of frozensets of edge ids."""
    return {frozenset(e for e in DMC[case][v] if e >= 0) for v in range(NUM[case])}


def crossed(case: int) -> set:
    return {e for e, (a, b) in enumerate(EDGE_CORNERS) if (case >> a & 1) != (case >> b & 1)}


def face_cycles():
    """Each face as (axis, side, its 4 corners in order around it)."""
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for side in range(2):
            yield axis, side, [side << axis | a << u | b << v for a, b in ((0, 0), (1, 0), (1, 1), (0, 1))]


def alternating_faces(case: int) -> list:
    return [(axis, side) for axis, side, cyc in face_cycles()
            if all((case >> cyc[i] & 1) != (case >> cyc[(i + 1) % 4] & 1) for i in range(4))]


def cube_symmetries():
    """The 48 symmetries of the cube: (axis permutation, reflections, corner map)."""
    for perm in itertools.permutations(range(3)):
        for flip in itertools.product((0, 1), repeat=3):
            def corner(i):
                c = CORNER_OFFSETS[i]
                return sum((c[perm[k]] ^ flip[k]) << k for k in range(3))
            yield perm, flip, [corner(i) for i in range(8)]


def closed_manifold_problem(faces_tx3: torch.Tensor):
    """None when the triangles form a closed, consistently oriented 2-manifold; else what is wrong.

    Every directed edge must occur once and its reverse once (watertight, one orientation), and
    the triangles around each vertex must form one cycle (no pinched vertex).
    """
    faces = faces_tx3.tolist()
    directed = Counter((t[i], t[(i + 1) % 3]) for t in faces for i in range(3))
    for (a, b), n in directed.items():
        if n != 1 or directed.get((b, a), 0) != 1:
            return f"edge {a}-{b} is used {n} times one way and {directed.get((b, a), 0)} the other"
    link = {}
    for t in faces:
        for i in range(3):
            link.setdefault(t[i], {})[t[(i + 1) % 3]] = t[(i + 2) % 3]
    for vtx, nxt in link.items():
        start = cur = next(iter(nxt))
        steps = 0
        while True:
            cur, steps = nxt[cur], steps + 1
            if cur == start:
                break
        if steps != len(nxt):
            return f"vertex {vtx} has {len(nxt)} triangles in more than one fan"
    return None


def trimesh_of(v, f):
    import trimesh
    return trimesh.Trimesh(v.detach().cpu().numpy(), f.cpu().numpy(), process=False)


# --------------------------------------------------------------------------- tables
def test_numbering_of_corners_edges_and_cases():
    assert CORNER_OFFSETS[5] == (1, 0, 1) and CORNER_OFFSETS[6] == (0, 1, 1)
    assert CUBE_EDGES.tolist() == [[0, 1], [1, 5], [4, 5], [0, 4], [2, 3], [3, 7], [6, 7], [2, 6], [2, 0], [3, 1],
                                   [7, 5], [6, 4]]
    # the 12 pairs are the 12 cube edges (corners one bit apart), each once
    assert len({frozenset(p) for p in EDGE_CORNERS}) == 12
    assert all(bin(a ^ b).count("1") == 1 for a, b in EDGE_CORNERS)
    # case = sum of 2**i over inside corners: corner 0 alone is case 1, cut by edges (0,1), (0,4), (2,0)
    assert vertex_sets(1) == {frozenset({0, 3, 8})}
    assert DMC_TABLE.shape == (256, 4, 7) and DMC_TABLE.dtype == torch.long
    assert NUM_VD_TABLE.shape == (256,) and CHECK_TABLE.shape == (256, 5)
    assert NUM[0] == NUM[255] == 0


def test_every_crossed_edge_is_in_exactly_one_dual_vertex_in_the_documented_order():
    for case in range(256):
        rows = DMC[case]
        vertices = [[e for e in rows[v] if e >= 0] for v in range(NUM[case])]
        assert sorted(e for v in vertices for e in v) == sorted(crossed(case))
        for v in range(4):  # -1 only as padding after the edges, unused rows all -1
            row = rows[v]
            n = len(vertices[v]) if v < NUM[case] else 0
            assert all(e >= 0 for e in row[:n]) and all(e == -1 for e in row[n:])
        assert all(v == sorted(v) for v in vertices)  # edges ascending
        assert [v[0] for v in vertices] == sorted(v[0] for v in vertices)  # vertices by smallest edge


def test_dual_vertices_are_the_groups_of_inside_corners():
    from scipy import ndimage

    for case in range(1, 255):
        if case in BODY_DIAGONAL_CASES:
            continue
        inside = np.zeros((2, 2, 2), dtype=bool)
        for i, (x, y, z) in enumerate(CORNER_OFFSETS):
            inside[x, y, z] = bool(case >> i & 1)
        labels, count = ndimage.label(inside)  # 6-connectivity: along cube edges
        label_of = [labels[c] for c in CORNER_OFFSETS]
        expected = {frozenset(e for e in crossed(case) if label_of[EDGE_CORNERS[e][0]] == k
                              or label_of[EDGE_CORNERS[e][1]] == k) for k in range(1, count + 1)}
        assert vertex_sets(case) == expected, case


def test_the_four_body_diagonal_cases_use_the_outside_corners():
    diagonal = [c for c in range(256) if bin(c).count("1") == 6
                and (lambda o: o[0] ^ o[1] == 7)([i for i in range(8) if not c >> i & 1])]
    assert tuple(diagonal) == BODY_DIAGONAL_CASES
    for case in diagonal:
        outside = [i for i in range(8) if not case >> i & 1]
        expected = {frozenset(e for e, pair in enumerate(EDGE_CORNERS) if o in pair) for o in outside}
        assert vertex_sets(case) == expected and all(len(v) == 3 for v in expected)
        # the inside-corner rule would have given one vertex of 6 edges
        assert len(crossed(case)) == 6


def test_check_table_flags_one_ambiguous_face_with_five_or_six_inside_corners():
    flagged = []
    for case in range(256):
        faces = alternating_faces(case)
        flag, dx, dy, dz, repl = CHECK[case]
        if len(faces) == 1 and bin(case).count("1") in (5, 6):
            axis, side = faces[0]
            normal = [0, 0, 0]
            normal[axis] = 1 if side else -1
            assert (flag, [dx, dy, dz], repl) == (1, normal, 255 - case), case
            flagged.append(case)
        else:
            assert CHECK[case] == [0, 0, 0, 0, 0], case
    # 12 face diagonals left outside with 6 inside; with 5 inside, 2 ways each to add an outside corner
    assert len(flagged) == 36
    # corners 0 and 3 outside: they are diagonal on the face z = 0
    assert CHECK[255 - 1 - 8] == [1, 0, 0, -1, 9]


def test_tables_are_invariant_under_the_48_cube_symmetries():
    edge_id = {frozenset(p): e for e, p in enumerate(EDGE_CORNERS)}
    symmetries = list(cube_symmetries())
    assert len({tuple(m) for _, _, m in symmetries}) == 48
    for perm, flip, cmap in symmetries:
        assert all(bin(cmap[a] ^ cmap[b]).count("1") == 1 for a, b in EDGE_CORNERS)  # edges go to edges
        emap = [edge_id[frozenset((cmap[a], cmap[b]))] for a, b in EDGE_CORNERS]
        for case in range(256):
            image = sum(1 << cmap[i] for i in range(8) if case >> i & 1)
            mapped = {frozenset(emap[e] for e in v) for v in vertex_sets(case)}
            assert mapped == vertex_sets(image), (perm, flip, case)
            flag, *d, repl = CHECK[case]
            iflag, *idir, irepl = CHECK[image]
            assert flag == iflag
            if flag:
                assert idir == [d[perm[k]] * (-1 if flip[k] else 1) for k in range(3)]
                assert irepl == sum(1 << cmap[i] for i in range(8) if repl >> i & 1)


# --------------------------------------------------------------------------- extraction
def sphere_sdf(x, r=0.35):
    return x.norm(dim=-1) - r


def torus_sdf(x, big=0.3, small=0.12):
    return torch.stack([x[:, :2].norm(dim=-1) - big, x[:, 2]], -1).norm(dim=-1) - small


@pytest.mark.parametrize("name, sdf, res, euler", [("sphere", sphere_sdf, 24, 2), ("torus", torus_sdf, 32, 0)])
def test_smooth_shapes_give_closed_manifold_meshes_on_the_surface(name, sdf, res, euler):
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(res)
    assert x_nx3.min() == -0.5 and x_nx3.max() == 0.5 and cube_fx8.shape == (res ** 3, 8)
    v, f, l_dev = fc(x_nx3, sdf(x_nx3), cube_fx8, res)
    mesh = trimesh_of(v, f)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == euler
    assert closed_manifold_problem(f) is None
    assert sdf(v).abs().max() < 0.01  # within 1% of the unit box
    true_volume = 4 / 3 * math.pi * 0.35 ** 3 if name == "sphere" else 2 * math.pi ** 2 * 0.3 * 0.12 ** 2
    assert mesh.volume > 0 and abs(mesh.volume - true_volume) < 0.03 * true_volume  # normals point outwards
    assert l_dev.ndim == 0 and 0 < l_dev < 0.01


def test_random_sign_fields_give_closed_manifold_meshes():
    """Many ambiguous faces, flagged cubes next to flagged cubes included."""
    fc, res = FlexiCubes(), 5
    x_nx3, cube_fx8 = fc.construct_voxel_grid(res)
    ijk = torch.stack(torch.meshgrid(*[torch.arange(res + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    border = ((ijk == 0) | (ijk == res)).any(-1)
    flagged_pairs = 0
    for seed in range(120):
        g = torch.Generator().manual_seed(seed)
        s = torch.where(torch.rand(len(x_nx3), generator=g) < (0.3, 0.5, 0.7)[seed % 3], -1.0, 1.0)
        s = s * (0.5 + torch.rand(len(x_nx3), generator=g))
        s[border] = 1.0
        if not (s < 0).any():
            continue
        case = ((s < 0)[cube_fx8].long() << torch.arange(8)).sum(-1)
        flagged = torch.nonzero(CHECK_TABLE[case, 0] == 1)[:, 0]
        ijk_cube = torch.stack([flagged // res ** 2, flagged // res % res, flagged % res], -1)
        ni, nj, nk = (ijk_cube + CHECK_TABLE[case[flagged], 1:4]).unbind(-1)  # across the flagged face
        neighbour = (ni * res + nj) * res + nk  # always inside the grid: the border is outside
        flagged_pairs += int((CHECK_TABLE[case[neighbour], 0] == 1).sum()) // 2
        v, f, _ = fc(x_nx3, s, cube_fx8, res)
        assert closed_manifold_problem(f) is None, seed
    assert flagged_pairs > 20


def two_flagged_cubes():
    """A slab of inside vertices whose middle face has its two diagonal corners outside: the two
    cubes sharing that face both have 6 inside corners and are flagged towards each other."""
    res = (5, 4, 4)
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(res)
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r + 1) for r in res], indexing="ij"), -1).reshape(-1, 3)
    inside = ((ijk >= 1) & (ijk <= torch.tensor([3, 2, 2]))).all(-1)
    for hole in ((2, 1, 1), (2, 2, 2)):
        inside &= ~(ijk == torch.tensor(hole)).all(-1)
    s = torch.where(inside, -1.0, 1.0)
    return fc, x_nx3, s, cube_fx8, res


def test_two_flagged_neighbours_switch_to_the_replacement_case(monkeypatch):
    fc, x_nx3, s, cube_fx8, res = two_flagged_cubes()
    case = ((s < 0)[cube_fx8].long() << torch.arange(8)).sum(-1)
    flagged = torch.nonzero(CHECK_TABLE[case, 0] == 1)[:, 0]
    assert CHECK_TABLE[case[flagged], 1:4].tolist() == [[1, 0, 0], [-1, 0, 0]]
    v, f, _ = fc(x_nx3, s, cube_fx8, res)
    assert closed_manifold_problem(f) is None
    # each flagged cube now has the two dual vertices of its replacement case
    assert len(v) == int(NUM_VD_TABLE[case].sum()) + 2
    # without the check the shared face is glued by 4 quads to one pair of vertices
    monkeypatch.setattr(fcm, "CHECK_TABLE", torch.zeros_like(CHECK_TABLE))
    _, f_unchecked, _ = FlexiCubes()(x_nx3, s, cube_fx8, res)
    assert "edge" in (closed_manifold_problem(f_unchecked) or "")


def test_dual_vertex_is_the_beta_weighted_mean_of_alpha_weighted_crossings():
    """Eqs. 2 and 3 on the 2^3 grid whose only inside vertex is its centre: cube 0 has one dual
    vertex, joining the crossings on its 3 edges that end at the centre (its corner 7)."""
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    s = 0.2 + torch.rand(27, generator=g, dtype=torch.float64)
    s[13] = -0.4  # the centre
    beta = 0.5 + torch.rand(8, 12, generator=g, dtype=torch.float64)
    alpha = 0.5 + torch.rand(8, 8, generator=g, dtype=torch.float64)
    v, f, _ = fc(x_nx3, s, cube_fx8, 2, beta_fx12=beta, alpha_fx8=alpha)
    assert v.shape == (8, 3) and f.shape == (12, 3)  # one vertex per cube, a cube of 6 quads
    total, weight = 0, 0
    for e in (5, 10, 6):  # (3,7), (7,5), (6,7)
        a, b = EDGE_CORNERS[e]
        xa, xb = x_nx3[cube_fx8[0, a]], x_nx3[cube_fx8[0, b]]
        sa, sb = s[cube_fx8[0, a]] * alpha[0, a], s[cube_fx8[0, b]] * alpha[0, b]
        total = total + beta[0, e] * (sb * xa - sa * xb) / (sb - sa)
        weight = weight + beta[0, e]
    torch.testing.assert_close(v[0], total / weight)
    # unit weights: linear interpolation of s, the same as passing None
    v1, _, _ = fc(x_nx3, s, cube_fx8, 2, torch.ones(8, 12, dtype=torch.float64), torch.ones(8, 8, dtype=torch.float64))
    torch.testing.assert_close(v1, fc(x_nx3, s, cube_fx8, 2)[0])


def test_gamma_picks_the_diagonal_and_training_splits_quads_in_four():
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(2, dtype=torch.float64)
    s = x_nx3.norm(dim=-1) - 0.3
    gamma = 0.5 + torch.rand(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v, f, _ = fc(x_nx3, s, cube_fx8, 2, gamma_f=gamma)
    # vertex i belongs to cube i here; the two triangles of a quad share its diagonal
    for t1, t2 in f.reshape(-1, 2, 3).tolist():
        diagonal = set(t1) & set(t2)
        others = set(t1) ^ set(t2)
        assert len(diagonal) == 2 and gamma[list(diagonal)].prod() >= gamma[list(others)].prod()
    vt, ft, _ = fc(x_nx3, s, cube_fx8, 2, gamma_f=gamma, training=True)
    assert len(vt) == len(v) + 6 and len(ft) == 4 * 6
    quads = ft.reshape(6, 4, 3)[:, :, 0]  # each quad's corners, in order
    torch.testing.assert_close(vt[8:], (gamma[quads, None] * v[quads]).sum(1) / gamma[quads].sum(1, keepdim=True))
    mesh = trimesh_of(vt, ft)
    assert mesh.is_watertight and mesh.euler_number == 2 and mesh.volume > 0


def test_deform_stays_within_half_a_cell():
    x_nx3, _ = FlexiCubes.construct_voxel_grid((4, 5, 6))
    moved = deform(x_nx3, torch.full_like(x_nx3, 50.0), (4, 5, 6))
    offset = moved - x_nx3
    assert (offset <= 0.5 / torch.tensor([4.0, 5.0, 6.0]) + 1e-7).all()
    torch.testing.assert_close(deform(x_nx3, torch.zeros_like(x_nx3), 4), x_nx3)


def test_l_dev_is_zero_for_equidistant_crossings_and_grows_with_uneven_weights():
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(2, dtype=torch.float64)
    s = x_nx3.abs().sum(-1) - 0.3  # crossings at 0.3 along each axis from the centre
    _, _, l_even = fc(x_nx3, s, cube_fx8, 2)
    assert abs(float(l_even)) < 1e-12
    beta = torch.ones(8, 12, dtype=torch.float64)
    beta[:, 5] = 3.0  # edge (3,7): crossed in the two cubes whose corner 3 or 7 is the centre
    _, _, l_pulled = fc(x_nx3, s, cube_fx8, 2, beta_fx12=beta)
    # there, crossings at 0.3 u_k from the centre, vertex at 0.3 (3 u_1 + u_2 + u_3) / 5: distances
    # 0.06 (sqrt 6, sqrt 26, sqrt 26), whose mean absolute deviation is 0.06 * 4 (sqrt 26 - sqrt 6) / 9
    expected = 2 / 8 * 0.06 * 4 * (math.sqrt(26) - math.sqrt(6)) / 9
    assert l_pulled.ndim == 0 and abs(float(l_pulled) - expected) < 1e-12


def grad_setup(res=3):
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(res, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    s = (x_nx3 - torch.tensor([0.04, -0.03, 0.02], dtype=torch.float64)).norm(dim=-1) - 0.42
    s = s + 0.02 * torch.rand(len(s), generator=g, dtype=torch.float64)
    assert s.abs().min() > 0.01 and (s < 0).sum() >= 4  # no sign flips under the finite differences
    num_cubes = cube_fx8.shape[0]
    weights = {n: 0.5 + torch.rand(*shape, generator=g, dtype=torch.float64)
               for n, shape in (("beta", (num_cubes, 12)), ("alpha", (num_cubes, 8)), ("gamma", (num_cubes,)))}
    return fc, x_nx3, s, cube_fx8, res, weights


@pytest.mark.parametrize("wrt", ["s", "beta", "alpha", "deformation", "gamma"])
def test_vertex_positions_pass_gradcheck(wrt):
    fc, x_nx3, s, cube_fx8, res, w = grad_setup()

    def extract(t):
        args = dict(x_nx3=x_nx3, s_n=s, beta_fx12=w["beta"], alpha_fx8=w["alpha"], gamma_f=w["gamma"])
        if wrt == "deformation":
            args["x_nx3"] = deform(x_nx3, t, res)
        else:
            args[{"s": "s_n", "beta": "beta_fx12", "alpha": "alpha_fx8", "gamma": "gamma_f"}[wrt]] = t
        v, f, l_dev = fc(args.pop("x_nx3"), args.pop("s_n"), cube_fx8, res, **args, training=wrt == "gamma")
        return v, l_dev

    start = {"s": s, "beta": w["beta"], "alpha": w["alpha"], "gamma": w["gamma"],
             "deformation": 0.3 * torch.randn(x_nx3.shape, generator=torch.Generator().manual_seed(4),
                                              dtype=torch.float64)}[wrt]
    assert extract(start)[0].shape[0] > 8
    assert torch.autograd.gradcheck(extract, (start.clone().requires_grad_(),), eps=1e-6, atol=1e-5)


# --------------------------------------------------------------------------- sharp features
def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def box_sdf(p, half):
    q = p.abs() - torch.tensor(half)
    return q.clamp(min=0).norm(dim=-1) + q.max(-1).values.clamp(max=0)


def box_surface(half, n, g):
    """``n`` points uniform on the surface of the box ``[-half, half]``."""
    h = torch.tensor(half)
    areas = torch.stack([h[1] * h[2], h[0] * h[2], h[0] * h[1]]).repeat_interleave(2)
    face = torch.multinomial(areas, n, True, generator=g)
    p = (torch.rand(n, 3, generator=g) * 2 - 1) * h
    axis = face // 2
    p[torch.arange(n), axis] = (face % 2 * 2 - 1.0) * h[axis]
    return p


class RotatedBox:
    rot, half = rotation(0.17, 0.12, 0.08), (0.3, 0.22, 0.17)

    def sdf(self, p):
        return box_sdf(p @ self.rot, self.half)

    def surface(self, n, g):
        return box_surface(self.half, n, g) @ self.rot.T


class SlottedBox:
    """A box with a slot cut across its top, slightly rotated."""
    rot, half = rotation(0.05, 0.09, 0.03), (0.32, 0.25, 0.2)
    slot_centre, slot_half = (0.0, 0.0, 0.2), (0.09, 0.4, 0.12)

    def sdf(self, p):
        q = p @ self.rot
        return torch.maximum(box_sdf(q, self.half), -box_sdf(q - torch.tensor(self.slot_centre), self.slot_half))

    def surface(self, n, g):
        p = torch.cat([box_surface(self.half, 3 * n, g),
                       box_surface(self.slot_half, 3 * n, g) + torch.tensor(self.slot_centre)]) @ self.rot.T
        p = p[self.sdf(p).abs() < 1e-5]  # the parts of both surfaces that bound the solid
        return p[torch.randperm(len(p), generator=g)[:n]]


def sample_triangles(v, f, n, g):
    """``n`` points uniform on the mesh (differentiable in ``v``) and their triangles' unit normals."""
    tri = v[f]
    cross = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = cross.norm(dim=-1)
    idx = torch.multinomial(area.detach() + 1e-12, n, True, generator=g)
    r = torch.rand(n, 2, generator=g, dtype=v.dtype)
    r = torch.where(r.sum(1, keepdim=True) > 1, 1 - r, r)
    t = tri[idx]
    return t[:, 0] + r[:, :1] * (t[:, 1] - t[:, 0]) + r[:, 1:] * (t[:, 2] - t[:, 0]), cross[idx] / area[idx, None]


def nearest_chamfer(a, b):
    """Squared Chamfer distance of ``a`` and ``b`` and, for each point of ``a``, its nearest in ``b``."""
    with torch.no_grad():
        i = torch.addmm((b * b).sum(1)[None], a, b.T, alpha=-2).argmin(1)
        j = torch.addmm((a * a).sum(1)[None], b, a.T, alpha=-2).argmin(1)
    return ((a - b[i]) ** 2).sum(1).mean() + ((b - a[j]) ** 2).sum(1).mean(), i


@pytest.mark.parametrize("shape", [RotatedBox(), SlottedBox()], ids=["rotated_box", "slotted_box"])
def test_fitted_flexicubes_beat_marching_cubes_on_sharp_edges(shape):
    import trimesh
    from skimage.measure import marching_cubes

    from sar3d_core.metrics import chamfer_distance, sample_mesh_surface

    res, steps, n = 10, 200, 1000
    g = torch.Generator().manual_seed(0)
    target = shape.surface(n, g)
    eye = 1e-3 * torch.eye(3)
    target_normal = torch.stack([shape.sdf(target + e) - shape.sdf(target - e) for e in eye], 1)
    target_normal = target_normal / target_normal.norm(dim=1, keepdim=True)

    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(res)
    s0 = shape.sdf(x_nx3)
    s = s0.clone().requires_grad_()
    d = torch.zeros_like(x_nx3, requires_grad=True)
    log_beta = torch.zeros(len(cube_fx8), 12, requires_grad=True)
    log_alpha = torch.zeros(len(cube_fx8), 8, requires_grad=True)
    log_gamma = torch.zeros(len(cube_fx8), requires_grad=True)
    opt = torch.optim.Adam([s, d, log_beta, log_alpha, log_gamma], lr=0.02)
    for _ in range(steps):
        v, f, l_dev = fc(deform(x_nx3, d, res), s, cube_fx8, res, log_beta.exp(), log_alpha.exp(), log_gamma.exp(),
                         training=True)
        points, normals = sample_triangles(v, f, n, g)
        cd, nearest = nearest_chamfer(points, target)
        loss = cd + 1e-2 * (1 - (normals * target_normal[nearest]).sum(1)).mean() + 1e-3 * l_dev
        opt.zero_grad()
        loss.backward()
        opt.step()

    with torch.no_grad():
        v, f, _ = fc(deform(x_nx3, d, res), s, cube_fx8, res, log_beta.exp(), log_alpha.exp(), log_gamma.exp())
    fitted = trimesh_of(v, f)
    verts, faces, _, _ = marching_cubes(s0.reshape(res + 1, res + 1, res + 1).numpy(), 0.0, spacing=(1 / res,) * 3)
    mc = trimesh.Trimesh(verts - 0.5, faces, process=False)
    reference = shape.surface(5000, torch.Generator().manual_seed(1))
    cd_fitted = float(chamfer_distance(sample_mesh_surface(fitted, 5000, seed=2), reference))
    cd_mc = float(chamfer_distance(sample_mesh_surface(mc, 5000, seed=2), reference))
    assert fitted.is_watertight
    assert cd_fitted < 0.7 * cd_mc, (cd_fitted, cd_mc)


# --------------------------------------------------------------------------- bad input, devices
@pytest.mark.parametrize("res", [1, 0, (4, 1, 4)])
def test_res_below_two_is_refused(res):
    with pytest.raises(ValueError, match="at least 2"):
        FlexiCubes.construct_voxel_grid(res)
    x_nx3, cube_fx8 = FlexiCubes.construct_voxel_grid(2)
    with pytest.raises(ValueError, match="at least 2"):
        FlexiCubes()(x_nx3, sphere_sdf(x_nx3), cube_fx8, res)


def test_nan_values_are_refused():
    x_nx3, cube_fx8 = FlexiCubes.construct_voxel_grid(3)
    s = sphere_sdf(x_nx3)
    s[5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        FlexiCubes()(x_nx3, s, cube_fx8, 3)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_no_surface_warns_and_gives_an_empty_mesh(sign):
    x_nx3, cube_fx8 = FlexiCubes.construct_voxel_grid(3)
    with pytest.warns(UserWarning, match="no surface"):
        v, f, l_dev = FlexiCubes()(x_nx3, torch.full((len(x_nx3),), sign), cube_fx8, 3)
    assert v.shape == (0, 3) and f.shape == (0, 3) and f.dtype == torch.long
    assert l_dev.ndim == 0 and float(l_dev) == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    fc = FlexiCubes()
    x_nx3, cube_fx8 = fc.construct_voxel_grid(16)
    s = torus_sdf(x_nx3)
    v, f, l_dev = fc(x_nx3, s, cube_fx8, 16, training=True)
    vc, fcu, lc = fc(x_nx3.cuda(), s.cuda(), cube_fx8.cuda(), 16, training=True)
    torch.testing.assert_close(vc.cpu(), v)
    assert torch.equal(fcu.cpu(), f)
    torch.testing.assert_close(lc.cpu(), l_dev)
