"""MultiView validation, the encoder input and the multi-view consistency check."""
import math

import pytest
import torch

from sar3d_core.cameras import chunk_cameras, look_at, pack_camera, plucker_embedding
from sar3d_core.views import MultiView, multiview_consistency, point_cloud
from sar3d_core.world import render_sdf


class Ball:
    """A sphere of radius 0.35 with a colour varying in x: an object with a known surface."""

    def sdf(self, p):
        return p.norm(dim=-1) - 0.35

    def color(self, p):
        return torch.stack([0.5 + p[:, 0], torch.full_like(p[:, 0], 0.3), 0.5 - p[:, 0]], -1).clamp(0, 1)


@pytest.fixture(scope="module")
def ball_views():
    return render_sdf(Ball(), chunk_cameras(3), 32, 32)


def test_encoder_input_is_rgb_depth_plucker(ball_views):
    x = ball_views.encoder_input()
    assert x.shape == (12, 10, 32, 32)
    assert torch.equal(x[:, :3], ball_views.rgb) and torch.equal(x[:, 3:4], ball_views.depth)
    assert torch.equal(x[:, 4:], plucker_embedding(ball_views.c, 32, 32))


def test_point_cloud_lies_on_the_surface(ball_views):
    pts, rgb, view = point_cloud(ball_views)
    assert len(pts) > 1000 and set(view.tolist()) == set(range(12))
    assert (pts.norm(dim=-1) - 0.35).abs().max() < 5e-3


def test_consistent_views_agree_and_a_wrong_camera_is_caught(ball_views):
    good = multiview_consistency(ball_views)
    assert good["inside_mask"] > 0.99 and good["free_space"] > 0.99
    # move one camera by 0.15 without re-rendering: its points no longer agree with the others
    c = ball_views.c.clone()
    c2w = c[2, :16].reshape(4, 4).clone()
    c2w[:3, 3] += torch.tensor([0.0, 0.0, 0.15])
    c[2, :16] = c2w.flatten()
    bad = multiview_consistency(MultiView(ball_views.rgb, ball_views.depth, ball_views.mask, ball_views.normal, c))
    assert bad["inside_mask_VV"][2].nanmean() < good["inside_mask_VV"][2].nanmean() - 0.05
    assert bad["free_space"] < good["free_space"]


def test_validation_names_the_problem(ball_views):
    mv = ball_views
    depth = mv.depth.clone()
    depth[0, 0, 5, 5] = math.nan
    with pytest.raises(ValueError, match="depth holds NaN"):
        MultiView(mv.rgb, depth, mv.mask, mv.normal, mv.c, source="x.png")
    with pytest.raises(ValueError, match="mask has shape"):
        MultiView(mv.rgb, mv.depth, mv.mask[:, :, :16], mv.normal, mv.c)
    with pytest.raises(ValueError, match="c has shape"):
        MultiView(mv.rgb, mv.depth, mv.mask, mv.normal, mv.c[:3])
    c = mv.c.clone()
    c[0, 0] *= 2  # a scaled rotation
    with pytest.raises(ValueError, match="not a rigid transform"):
        MultiView(mv.rgb, mv.depth, mv.mask, mv.normal, c)


def test_select_keeps_fields_together(ball_views):
    sub = ball_views.select([0, 5])
    assert sub.num_views == 2 and torch.equal(sub.c[1], ball_views.c[5])
    assert torch.equal(sub.depth[1], ball_views.depth[5])
