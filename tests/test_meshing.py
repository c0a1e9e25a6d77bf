"""Marching-cubes surfaces of the triplane field (paper Sec. 4.1)."""
import math

import pytest
import torch

from sar3d_core.meshing import extract_mesh, surface_level
from sar3d_core.metrics import chamfer_distance, sample_mesh_surface


class SphereField:
    """A duck-typed field: density far above the surface level inside a sphere, 0 outside."""
    bound = 0.45

    def __init__(self, radius=0.3, density=200.0):
        self.radius, self.density = radius, density

    def query(self, planes, pts):
        inside = (pts.norm(dim=-1) < self.radius).float()
        rgb = torch.zeros(*pts.shape[:-1], 3)
        rgb[..., 0] = 1.0
        return inside * self.density, rgb


def sphere_points(n, r):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(n, 3, generator=g)
    return r * v / v.norm(dim=-1, keepdim=True)


def test_sphere_surface_is_found_with_outward_normals_and_colours():
    field = SphereField()
    mesh = extract_mesh(field, torch.zeros(1, 3, 1, 2, 2), num_samples=24, resolution=48)
    assert mesh.is_watertight
    assert mesh.volume > 0  # outward-facing triangles
    assert abs(mesh.volume - 4 / 3 * math.pi * 0.3 ** 3) / (4 / 3 * math.pi * 0.3 ** 3) < 0.1
    cd = chamfer_distance(sample_mesh_surface(mesh, 2000, seed=0).float(), sphere_points(2000, 0.3))
    assert cd < 1e-3  # cells are 0.019 wide
    assert (mesh.visual.vertex_colors[:, 0] == 255).all() and (mesh.visual.vertex_colors[:, 1] == 0).all()


def test_empty_field_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(SphereField(density=0.0), torch.zeros(1, 3, 1, 2, 2), num_samples=24, resolution=16)
    with pytest.raises(ValueError, match="one object"):
        extract_mesh(SphereField(), torch.zeros(2, 3, 1, 2, 2), num_samples=24)


def test_surface_level_is_half_opacity_of_one_bin():
    level, delta = surface_level(24, 0.45), 0.9 / 24
    assert abs((1 - math.exp(-level * delta)) - 0.5) < 1e-12
