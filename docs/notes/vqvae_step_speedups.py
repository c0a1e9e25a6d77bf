"""The two changes that cut the VQVAE's step cost, each against the code it replaced, in one
process on the same inputs (1 thread, 4 objects, the shipped preset's sizes):

- ``sample_rays``: the supervised rays drawn by ``topk`` instead of two full ``argsort``s of
  the 4 x 12 x 64 x 64 pixel scores (the same pixels; tied scores may come in another order);
- ``lift_to_planes``: the weighted pixel values built once, features first, instead of a
  ``cat`` and a transposed product per plane (bitwise the same maps).

    python docs/notes/vqvae_step_speedups.py [--repeats 20]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from sar3d_core.cameras import unproject_depth
from sar3d_core.data import MultiViewDataset, default_cache_dir
from sar3d_core.encoder import LIFT_AXES, LIFT_FEATURES, OBJECT_BOX, lift_to_planes
from sar3d_core.vqvae_train import SUPERVISED_VIEWS, objective_preset, sample_rays


def sample_rays_argsort(mask_BV1HW, n, object_share, generator):
    """The previous ``sample_rays``: full argsorts."""
    B, V, _, H, W = mask_BV1HW.shape
    m = round(n * float(object_share))
    uniform = torch.rand(B, V * H * W, generator=generator).argsort(-1)
    if m <= 0:
        return uniform[:, :n]
    near = F.max_pool2d((mask_BV1HW.flatten(0, 1) > 0.5).float(), 5, stride=1, padding=2).reshape(B, -1)
    scores = torch.rand(B, V * H * W, generator=generator) + near
    return torch.cat([scores.argsort(-1, descending=True)[:, :m], uniform[:, :n - m]], 1)


def lift_to_planes_cat(rgb_BV3HW, depth_BVHW, c_BV25, resolution, bound=OBJECT_BOX):
    """The previous ``lift_to_planes`` body: a cat and a transposed product per plane."""
    B, R = rgb_BV3HW.shape[0], int(resolution)
    pts_BN3 = unproject_depth(depth_BVHW.float(), c_BV25.float()).reshape(B, -1, 3)
    rgb_BN3 = rgb_BV3HW.float().permute(0, 1, 3, 4, 2).reshape(B, -1, 3)
    valid_BN = (depth_BVHW.reshape(B, -1) > 0) & (pts_BN3.abs() <= bound).all(-1)
    cell_BN3 = ((pts_BN3 + bound) / (2 * bound) * R).floor().long().clamp(0, R - 1)
    maps = []
    for u, v, n in LIFT_AXES:
        index_BN = cell_BN3[..., v] * R + cell_BN3[..., u]
        w_BN = valid_BN.float()
        values_BN5 = torch.cat([rgb_BN3, torch.ones_like(w_BN)[..., None], (pts_BN3[..., n] / bound)[..., None]], -1)
        acc_B5M = torch.zeros(B, LIFT_FEATURES, R * R, dtype=values_BN5.dtype)
        acc_B5M.scatter_add_(2, index_BN[:, None].expand(-1, LIFT_FEATURES, -1),
                             (values_BN5 * w_BN[..., None]).transpose(1, 2))
        count_B1M = acc_B5M[:, 3:4]
        mean_B5M = acc_B5M / count_B1M.clamp(min=1.0)
        mean_B5M[:, 3:4] = 1 - torch.exp(-count_B1M / 4)
        maps.append(mean_B5M.reshape(B, LIFT_FEATURES, R, R))
    return torch.stack(maps, 1)


def median_ms(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * sorted(ts)[len(ts) // 2]


p = argparse.ArgumentParser()
p.add_argument("--repeats", type=int, default=20)
a = p.parse_args()
torch.set_num_threads(1)
ds = MultiViewDataset(default_cache_dir() / "proc_train_64", size=64, target_views=SUPERVISED_VIEWS)
batch = torch.utils.data.default_collate([ds[j] for j in range(4)])
s = objective_preset("tiny")
mask, x, c = batch["target_mask"], batch["encoder_input"], batch["input_c"]

new = sample_rays(mask, s.rays, s.object_ray_share, torch.Generator().manual_seed(0))
old = sample_rays_argsort(mask, s.rays, s.object_ray_share, torch.Generator().manual_seed(0))
print(f"sample_rays: the same pixels as the argsort version: {torch.equal(new.sort(1).values, old.sort(1).values)}")
for name, fn in (("argsort", sample_rays_argsort), ("topk", sample_rays)):
    ms = median_ms(lambda: fn(mask, s.rays, s.object_ray_share, torch.Generator().manual_seed(0)), a.repeats)
    print(f"  {name:8s} {ms:6.1f} ms a batch")
for R in (8, 32):  # the colour readout's and the encoder's lifting resolution
    same = torch.equal(lift_to_planes(x[:, :, :3], x[:, :, 3], c, R), lift_to_planes_cat(x[:, :, :3], x[:, :, 3], c, R))
    print(f"lift_to_planes at {R} x {R}: bitwise the same maps: {same}")
    for name, fn in (("cat", lift_to_planes_cat), ("current", lift_to_planes)):
        print(f"  {name:8s} {median_ms(lambda: fn(x[:, :, :3], x[:, :, 3], c, R), a.repeats):6.1f} ms a batch")
