"""FlexiCubes field heads and the decoder-only fine-tune (paper Sec. 4.1, Eq. 9; SAR3D-FlexiCubes, Table 1).

SAR3D trains its VQVAE by volume rendering (Eq. 8), then fine-tunes it "to the hybrid
representation Flexicubes [57]" with the extra loss

    L_flex = lambda_normal L_normal + lambda_reg L_reg                                  (Eq. 9)

and, "similar to LATTE3D, we only fine-tune the decoder" (Sec. 4.1).

**The base VQVAE is never modified.** ``SAR3DFlexiCubes`` holds a trainable *copy* of the
base VQVAE's triplane decoder and field plus ``FlexiCubesHeads``; the encoder, the quantizer
and its codebook stay the base's, frozen and shared (referenced, never copied, trained or
saved). So tokens keep their meaning, every generator trained on the base's tokens stays
valid, and the base's ``fingerprint()`` never changes. A checkpoint (format
``sar3d-flexicubes/1``) records the base's name and fingerprint and refuses any other base.

The heads, from the field's trunk features ``h(x)`` (``TriplaneField.trunk_features``) at the
grid vertices of ``flexicubes.FlexiCubes.construct_voxel_grid`` scaled to the box ``[-b, b]^3``:

* **SDF**: ``s(x) = 1/2 - alpha(x) + r(h(x))`` with ``alpha = 1 - exp(-sigma delta)`` the
  opacity of one renderer bin (``meshing``) and ``r`` a bounded linear layer initialised to zero, so
  at the start the zero level of ``s`` is the NeRF surface that
  ``meshing.extract_mesh(mesher="flexicubes")`` extracts; ``s < 0`` inside.
* **deformation** ``d(x)``, a linear layer initialised to zero; the vertex moves by
  ``tanh(d) / 2`` cells (``flexicubes.deform``): always less than half a cell.
* **the 21 weights of a cube** (12 beta, 8 alpha, 1 gamma, FlexiCubes Sec. 4) from its 8
  corners: ``w = 1 + 0.99 tanh(W [c(x_0), ..., c(x_7)])`` with a 4-channel code
  ``c(x) = linear(h(x))`` per corner and ``W`` initialised to zero: all ones at the start
  (Dual Marching Cubes), always in ``(0.01, 1.99)``.

The residual is bounded, ``r = rho tanh(.)`` with ``rho = 1/4``: it moves the level set where
the NeRF is undecided (``|1/2 - alpha| < rho``) and cannot open surfaces in clearly empty or
solid space. The heads' last layers start at zero and are scaled by ``gain = 10``: under Adam
that is ten times the learning rate of the pre-trained copy, which should move slowly (the
VQVAE ended its training at 1e-4; a fine-tune at a higher rate first undoes some of it).

Grid vertices on the box's faces count as empty (``s = 1/2``) and do not move, so meshes are
closed, as in ``meshing``. Only the cubes the surface crosses enter FlexiCubes (every cube
around a crossed edge is one of them), so the grid's other cubes cost one pass of ``s``.

**Rendering the mesh on the CPU.** Visibility comes from ray casting (embree through
trimesh); the hit is then recomputed in torch from the hit triangle's three vertices
(Moller-Trumbore), so the planar depth and the face normal are differentiable in the
vertices; the colour is the field's colour at the hit point (white where the ray misses; the
point is detached, so colour trains the colour, not the geometry). Whether a ray hits is a
step function of the vertices; the silhouette's gradient comes from ``s`` instead: a ray's
soft mask is ``sigmoid(-min_k s_grid(p_k) / tau)`` over ``K`` stratified samples ``p_k``
along it inside the box, ``s_grid`` being the trilinear interpolation of the grid values
FlexiCubes meshes. Reading the continuous field there instead let the loss sharpen a thin part
(a lamp's stem) below the grid's reach: it vanished from the mesh, and on two training objects
25 steps made the lamp's Chamfer 0.33 -> 0.59 x 10^-3 where the grid reading gives 0.18.

**The objective** (``FlexiCubesObjective``; weights in ``FlexiCubesSettings``; the paper
gives no numbers) on ``rays`` rays per object over its 6 supervision views, half of them on
or near the object:

    L = w_rgb L1(rgb) + w_depth L1(depth) + w_mask L1(mask)      Eq. 8's render terms, on the mesh
      + lambda_normal L1(normal)                                  Eq. 9: MAE of the world normals
      + lambda_reg L_reg                                          Eq. 9
      + w_sdf L_sdf                                               our addition (below)

    L_reg = L_dev / cell + w_sign L_sign + w_weights mean (w - 1)^2

``L_dev`` is FlexiCubes' regulariser (Sec. 4.2, ``flexicubes.FlexiCubes``) in cell widths;
``L_sign`` (the sign regulariser of nvdiffrec / FlexiCubes' examples) is a binary
cross-entropy on every grid edge whose ends differ in sign, pushing ``s`` at each end towards
the other end's side (fewer, cleaner crossings: no floaters); the last term keeps the weights
near 1. Depth and normals count on rays where both the mesh and the target hit (target mask
above 1/2). Render weights rgb 1, depth 0.5, mask 1 are the VQVAE's (``vqvae.DEFAULT_LOSS_WEIGHTS``);
``lambda_normal = 1/2`` puts the normal MAE (about 0.1 at the start) level with the RGB term
(about 0.05); ``lambda_reg = 1/2`` with ``w_sign = 0.05`` and ``w_weights = 0.1`` keeps ``L_reg``
(``L_dev`` about 0.03 cells, ``L_sign`` about 0.7) a small share of the loss, a brake rather
than a goal; ``w_sdf = 1``.

``L_sdf`` (**our addition, a CPU training aid** like ``vqvae_train``'s ``L_3D``): procedural
objects have an exact SDF, so the sign of ``s_grid`` is pushed towards it by a binary
cross-entropy of the soft occupancy ``sigmoid(-s_grid / tau)`` against ``[sdf < 0]`` at points
near the surface (moved by one cell) and uniform in the box. Only the sign is supervised, not
the slope (an L1 towards a scaled exact SDF spent the copy's capacity on reshaping ``s`` away
from its zero level). Items without a procedural seed (``seed < 0``) skip it.

``train_flexicubes`` runs it through ``training.train`` (resume, DDP, log) and exports the
fine-tuned model; every random draw comes from ``training.step_generator(step)``.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .cameras import camera_rays, ray_box_interval, ray_depth_scale
from .flexicubes import FlexiCubes, deform
from .training import TrainConfig, is_main_process, step_generator, train

FORMAT = "sar3d-flexicubes/1"
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
LEVEL = 0.5  # the surface: a renderer bin half opaque (meshing)


@dataclass
class FlexiCubesSettings:
    resolution: int = 32  # cubes per side of the training grid
    code_channels: int = 4  # per-corner code the cube weights are read from
    rays: int = 384  # rays per object over its supervision views
    object_ray_share: float = 0.5  # share of them on or near the object's mask
    silhouette_samples: int = 16  # samples of s per ray for the soft mask
    silhouette_tau: float = 0.05  # temperature of the soft mask and the SDF aid's occupancy, in units of s
    sdf_points: int = 1024  # exact-SDF points per object, half near the surface
    rgb: float = 1.0
    depth: float = 0.5
    mask: float = 1.0
    normal: float = 0.5  # lambda_normal
    reg: float = 0.5  # lambda_reg
    sign: float = 0.05  # w_sign inside L_reg
    weights: float = 0.1  # w_weights inside L_reg
    sdf: float = 1.0  # our exact-SDF aid; 0 turns it off


# ---------------------------------------------------------------------------- the heads
class FlexiCubesHeads(nn.Module):
    """SDF residual and deformation per grid vertex, 21 weights per cube (see the module doc).

    The last layers start at zero and their outputs are multiplied by ``gain``: under Adam
    that gives the new heads ``gain`` times the learning rate of the pre-trained decoder copy,
    so they learn fast while the copy drifts slowly.
    """

    def __init__(self, hidden: int, code_channels: int = 4, seed: int = 0, gain: float = 10.0, rho: float = 0.25):
        super().__init__()
        self.gain, self.rho = float(gain), float(rho)
        with torch.random.fork_rng(devices=[]):  # the same initial weights for the same seed; the caller's RNG untouched
            torch.manual_seed(seed)
            self.sdf_residual = nn.Linear(hidden, 1)
            self.deformation = nn.Linear(hidden, 3)
            self.code = nn.Linear(hidden, code_channels)
            self.cube_weights = nn.Linear(8 * code_channels, 21)
        for layer in (self.sdf_residual, self.deformation, self.cube_weights):  # start as the NeRF surface, Dual MC
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def residual(self, h_Nh: torch.Tensor) -> torch.Tensor:
        """``r(h) = rho tanh(.)`` in ``(-rho, rho)``, added to ``1/2 - alpha``: ``(...,)``."""
        return self.rho * torch.tanh(self.gain * self.sdf_residual(h_Nh)[..., 0])

    def offset(self, h_Nh: torch.Tensor) -> torch.Tensor:
        """``d(h)`` ``(..., 3)``, the raw deformation (``flexicubes.deform`` bounds it)."""
        return self.gain * self.deformation(h_Nh)

    def weights(self, h_corners_M8h: torch.Tensor):
        """``beta (M, 12)``, ``alpha (M, 8)``, ``gamma (M,)`` and all 21 ``(M, 21)`` of cubes from their
        corners' trunk features ``(M, 8, hidden)``."""
        raw = self.gain * self.cube_weights(self.code(h_corners_M8h).flatten(-2))
        w = 1 + 0.99 * torch.tanh(raw)  # positive, 1 at the start
        return w[:, :12], w[:, 12:20], w[:, 20], w


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an int of at least 2 cells per side, got {resolution!r}")
    return int(resolution)


def grid_trilinear(s_grid_BRRR: torch.Tensor, pts_BN3: torch.Tensor, bound: float) -> torch.Tensor:
    """Trilinear interpolation of grid values ``(B, R+1, R+1, R+1)`` (indexed ``[x, y, z]``, the
    vertices of ``construct_voxel_grid`` spanning ``[-b, b]^3``) at world points -> ``(B, N)``."""
    uvw = (pts_BN3 / bound).flip(-1)  # grid_sample's last axis (W) is the first index's neighbour: z, y, x
    out = F.grid_sample(s_grid_BRRR[:, None], uvw[:, :, None, None].to(s_grid_BRRR.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)  # (B, 1, N, 1, 1)
    return out[:, 0, :, 0, 0]


class SAR3DFlexiCubes(nn.Module):
    """A trainable copy of a VQVAE's decoder and field plus ``FlexiCubesHeads`` (module doc).

    The base VQVAE is referenced, not registered: it is not in ``parameters()`` or
    ``state_dict()``, so no optimizer reaches it and it is never saved here.
    """

    def __init__(self, vqvae, code_channels: int = 4, vqvae_checkpoint: str = "", resolution: int = 32):
        super().__init__()
        self._base = [vqvae]  # a list: not a submodule
        self.decoder = copy.deepcopy(vqvae.decoder).requires_grad_(True)  # the base may be frozen
        self.field = copy.deepcopy(vqvae.field).requires_grad_(True)
        self.heads = FlexiCubesHeads(self.field.density_head.in_features, code_channels)
        self.code_channels, self.resolution = int(code_channels), int(resolution)
        self.num_samples = vqvae.triplane_settings.num_samples
        self.vqvae_checkpoint = str(vqvae_checkpoint)
        self.base_fingerprint = vqvae.fingerprint()
        self.flexicubes = FlexiCubes()
        self.config = None  # training.train records dataclass configs; ours is in config.json
        self.name = "untrained FlexiCubes heads"  # the checkpoint folder's name once loaded

    @classmethod
    def from_vqvae(cls, vqvae, vqvae_checkpoint: str = "", **kwargs) -> "SAR3DFlexiCubes":
        return cls(vqvae, vqvae_checkpoint=vqvae_checkpoint, **kwargs)

    @property
    def base(self):
        """The base VQVAE (frozen, shared)."""
        return self._base[0]

    # ------------------------------------------------------------------ fields
    def decode_fhat(self, f_hat_B3Chw: torch.Tensor) -> torch.Tensor:
        """The fine-tuned decoder: latent triplane -> feature planes ``(B, 3, F, H, W)``."""
        return self.decoder(f_hat_B3Chw)

    def decode_tokens(self, tokens: list, num_scales: int | None = None) -> torch.Tensor:
        """The base quantizer's Alg. 2, then the fine-tuned decoder."""
        return self.decode_fhat(self.base.quantizer.tokens_to_fhat(tokens, num_scales))

    def sdf(self, planes_B3FHW: torch.Tensor, pts_BN3: torch.Tensor):
        """``(s (B, N), h (B, N, hidden))``: the SDF head and the trunk features at world points."""
        f = self.field
        h = f.trunk_features(planes_B3FHW, pts_BN3)
        # sigma as in TriplaneField.query (the points lie in the box)
        sigma = f.density_scale * F.softplus(f.density_head(h)[..., 0] + f.density_bias)
        alpha = 1 - torch.exp(-sigma * (2 * f.bound / self.num_samples))
        # s = level - opacity + r(h): negative inside, r = 0 at the start (the NeRF surface)
        return LEVEL - alpha + self.heads.residual(h), h

    def _grid(self, res: int, device):
        x_unit, cube_fx8 = self.flexicubes.construct_voxel_grid(res, device=device)
        return x_unit, cube_fx8, (x_unit.abs() == 0.5).any(-1)  # construct_voxel_grid puts box faces at +-0.5

    def surface(self, planes_13FHW: torch.Tensor, resolution: int, training: bool = False) -> dict:
        """FlexiCubes on one object's planes: ``vertices (V, 3)`` world, ``faces (T, 3)``, ``l_dev``
        (in cell widths), ``s_grid (R+1, R+1, R+1)`` (s at every grid vertex, indexed ``[x, y, z]``;
        with gradient when grad is enabled), ``s_edges (E, 2)`` (s at both ends of the crossed grid
        edges) and ``weights (M, 21)`` of the surface cubes. ValueError on NaN; an empty mesh (no
        faces) without a surface."""
        res = _check_resolution(resolution)
        bound = self.field.bound
        x_unit, cube_fx8, on_face = self._grid(res, planes_13FHW.device)
        x_all = x_unit * (2 * bound)
        h_all = None
        if torch.is_grad_enabled():  # training: every grid value enters the losses (s_grid)
            s_all, h_all = (v[0] for v in self.sdf(planes_13FHW, x_all[None]))
        else:  # in chunks: fine grids
            s_all = torch.cat([self.sdf(planes_13FHW, x_all[None, i:i + 65536])[0][0] for i in range(0, len(x_all), 65536)])
        if torch.isnan(s_all).any():
            raise ValueError(f"the SDF is NaN at {int(torch.isnan(s_all).sum())} of {s_all.numel()} grid points: "
                             "its surface is undefined there")
        s_all = torch.where(on_face, torch.full_like(s_all, LEVEL), s_all)  # the box's faces are empty
        out = {"s_grid": s_all.reshape(res + 1, res + 1, res + 1), "vertices": x_unit.new_zeros((0, 3)),
               "faces": torch.zeros((0, 3), dtype=torch.long, device=x_unit.device), "l_dev": x_unit.new_zeros(()),
               "s_edges": x_unit.new_zeros((0, 2)), "weights": x_unit.new_zeros((0, 21))}
        inside = (s_all < 0)[cube_fx8].sum(-1)
        surf_cubes = cube_fx8[(inside > 0) & (inside < 8)]
        if len(surf_cubes) == 0:
            return out
        # only the surface cubes' corners, with local ids (FlexiCubes takes any subset of a grid)
        ids, cube_local = torch.unique(surf_cubes, return_inverse=True)
        h = h_all[ids] if h_all is not None else self.sdf(planes_13FHW, x_all[ids][None])[1][0]
        s_local = s_all[ids]
        d_local = self.heads.offset(h) * (~on_face[ids])[:, None]  # box faces do not move
        x_world = deform(x_unit[ids], d_local, res) * (2 * bound)
        beta, alpha, gamma, w = self.heads.weights(h[cube_local])
        verts, faces, l_dev = self.flexicubes(x_world, s_local, cube_local, res, beta, alpha, gamma, training=training)
        edges = torch.tensor([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1],
                             device=x_unit.device)
        s_ends = s_local[cube_local[:, edges]].reshape(-1, 2)  # (M * 12, 2)
        crossed = (s_ends[:, 0] < 0) != (s_ends[:, 1] < 0)
        out.update(vertices=verts, faces=faces, l_dev=l_dev * res, s_edges=s_ends[crossed], weights=w)
        return out

    @torch.no_grad()
    def mesh(self, tokens_or_planes, resolution: int | None = None):
        """A ``trimesh.Trimesh`` of one object with vertex colours (the field's colour at the vertices).

        ``tokens_or_planes``: a multi-scale token list (batch of one) of the base VQVAE, or feature
        planes ``(1, 3, F, H, W)`` of *this* model's decoder (``decode_tokens`` / ``decode_fhat``).
        ``resolution``: grid cells per side, by default the grid the heads were trained on (their
        deformation and weights are in its cells; a finer grid measured worse, benchmarks/flexicubes_eval.py).
        ValueError for a resolution below 2, several objects, NaN in the SDF or no surface.
        """
        import trimesh

        res = _check_resolution(self.resolution if resolution is None else resolution)
        planes = self.decode_tokens(tokens_or_planes) if isinstance(tokens_or_planes, (list, tuple)) else tokens_or_planes
        if planes.ndim != 5 or planes.shape[0] != 1 or planes.shape[1] != 3:
            raise ValueError(f"planes have shape {tuple(planes.shape)}: mesh one object at a time (1, 3, F, H, W)")
        out = self.surface(planes, res, training=False)
        if len(out["faces"]) == 0:
            raise ValueError("the SDF has no surface in the box (one sign over the whole grid, the box's faces "
                             f"counting as empty); try a finer resolution than {res}")
        verts = out["vertices"]
        rgb = self.field.query(planes, verts[None])[1][0].clamp(0, 1).cpu().numpy()
        colors = np.concatenate([(rgb * 255).round(), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
        return trimesh.Trimesh(verts.cpu().numpy(), out["faces"].cpu().numpy(), vertex_colors=colors, process=False)

    @torch.no_grad()
    def render(self, planes_13FHW: torch.Tensor, c_V25: torch.Tensor, size: int, resolution: int | None = None,
               mesh=None) -> dict:
        """The FlexiCubes mesh of one object seen from cameras ``c (V, 25)`` at ``size`` px, one ray per
        pixel, as the fine-tune renders it: embree visibility, the field's colour at the hit point,
        white where a ray misses -> ``rgb (V, 3, H, W)``, ``mask (V, 1, H, W)``, ``mesh``. ``mesh``:
        one already made by ``mesh`` (else it is made here). ValueError as ``mesh``."""
        mesh = self.mesh(planes_13FHW, resolution) if mesh is None else mesh
        c = c_V25.to(planes_13FHW.dtype)
        V = c.shape[0]
        origins, dirs = camera_rays(c, size, size)
        o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        verts = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64)
        faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)
        hit, t, _, _ = ray_mesh_hits(verts, faces, o.double(), d.double())
        rgb = torch.ones(o.shape[0], 3)
        if hit.any():
            idx = hit.nonzero()[:, 0]
            point = (o[idx].double() + t[:, None] * d[idx].double()).to(planes_13FHW.dtype)
            rgb[idx] = self.field.query(planes_13FHW, point[None])[1][0].clamp(0, 1).float().cpu()
        rgb = rgb.reshape(V, size, size, 3).permute(0, 3, 1, 2)
        mask = hit.reshape(V, 1, size, size).float()
        return {"rgb": rgb, "mask": mask, "mesh": mesh}

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, folder, extra: dict | None = None) -> Path:
        """``model.safetensors`` (decoder, field, heads) and ``config.json`` in ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT, "vqvae_config": self.base.cfg.to_dict(), "vqvae_checkpoint": self.vqvae_checkpoint,
                "vqvae_fingerprint": self.base_fingerprint, "code_channels": self.code_channels,
                "resolution": self.resolution, **(extra or {})}
        tmp_w, tmp_c = folder / f".{WEIGHTS_NAME}.tmp", folder / f".{CONFIG_NAME}.tmp"
        save_file(tensors, str(tmp_w), metadata={"format": FORMAT})
        tmp_c.write_text(json.dumps(meta, indent=2))
        os.replace(tmp_w, folder / WEIGHTS_NAME)  # renamed last: no half-written checkpoint
        os.replace(tmp_c, folder / CONFIG_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder, vqvae=None) -> "SAR3DFlexiCubes":
        """Load a ``save_pretrained`` folder on top of its base VQVAE ``vqvae`` (default: the one its
        config names, found as ``generate.find_vqvae`` does). ValueError when ``vqvae``'s fingerprint
        is not the recorded one: the decoder copy was fine-tuned for another VQVAE's latents."""
        from .checkpoints import load_weights, read_meta

        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} has no {name}: is it a SAR3DFlexiCubes checkpoint?")
        meta = read_meta(folder / CONFIG_NAME, FORMAT)
        if vqvae is None:
            from .generate import find_vqvae
            from .vqvae import SAR3DVQVAE

            vqvae = SAR3DVQVAE.from_pretrained(find_vqvae(meta["vqvae_checkpoint"])).eval()
        have = vqvae.fingerprint()
        if have != meta["vqvae_fingerprint"]:
            raise ValueError(f"{folder} was fine-tuned from the VQVAE {meta['vqvae_checkpoint']!r} (fingerprint "
                             f"{meta['vqvae_fingerprint']}), not from this one ({have}): pass that VQVAE")
        model = cls(vqvae, meta["code_channels"], meta["vqvae_checkpoint"], meta.get("resolution", 32))
        load_weights(model, folder / WEIGHTS_NAME, "the base VQVAE's decoder and field")
        model.name = folder.name
        return model.eval()


DEFAULT_FLEXICUBES = Path(__file__).resolve().parent.parent / "data_samples" / "flexicubes_tiny"


def finetune_for(vqvae, folder=None):
    """The FlexiCubes fine-tune of ``vqvae``: ``folder`` (default the shipped ``flexicubes_tiny``)
    loaded on top of it, or None when there is none or it was made for another VQVAE (fingerprint).
    A ``folder`` given explicitly must load: its errors are raised."""
    if folder is not None:
        return SAR3DFlexiCubes.from_pretrained(folder, vqvae)
    if not (DEFAULT_FLEXICUBES / WEIGHTS_NAME).is_file():
        return None
    meta = json.loads((DEFAULT_FLEXICUBES / CONFIG_NAME).read_text())
    if meta.get("vqvae_fingerprint") != vqvae.fingerprint():
        return None
    return SAR3DFlexiCubes.from_pretrained(DEFAULT_FLEXICUBES, vqvae)


# ---------------------------------------------------------------------------- mesh rendering
def ray_mesh_hits(vertices_V3: torch.Tensor, faces_T3: torch.Tensor, origins_R3: torch.Tensor, dirs_R3: torch.Tensor):
    """First hits of rays on a triangle mesh: ``(hit (R,) bool, t (H,), normal (H, 3), tri (H,))``.

    Which triangle a ray hits comes from embree (``trimesh.ray.ray_pyembree``), without gradient;
    ``t`` (distance along the unit ray) and the unit face normal are then recomputed from that
    triangle's vertices (Moller-Trumbore), differentiable in ``vertices_V3``.
    """
    import trimesh
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    R = origins_R3.shape[0]
    hit = torch.zeros(R, dtype=torch.bool, device=origins_R3.device)
    if len(faces_T3) == 0 or R == 0:
        e = vertices_V3.new_zeros(0)
        return hit, e, vertices_V3.new_zeros((0, 3)), torch.zeros(0, dtype=torch.long, device=hit.device)
    mesh = trimesh.Trimesh(vertices_V3.detach().cpu().double().numpy(), faces_T3.cpu().numpy(), process=False)
    tri, ray = RayMeshIntersector(mesh).intersects_id(origins_R3.detach().cpu().double().numpy(),
                                                      dirs_R3.detach().cpu().double().numpy(), multiple_hits=False)
    tri = torch.as_tensor(tri, dtype=torch.long, device=hit.device)
    ray = torch.as_tensor(ray, dtype=torch.long, device=hit.device)
    hit[ray] = True
    order = torch.argsort(ray)  # hits in ray order
    tri, ray = tri[order], ray[order]
    v0, v1, v2 = (vertices_V3[faces_T3[tri, k]] for k in range(3))
    o, d = origins_R3[ray].to(v0.dtype), dirs_R3[ray].to(v0.dtype)
    e1, e2 = v1 - v0, v2 - v0
    # Moller-Trumbore: o + t d = v0 + u e1 + v e2  =>  t = (e2 . q) / (e1 . p), p = d x e2, q = (o - v0) x e1
    p = torch.linalg.cross(d, e2, dim=-1)
    q = torch.linalg.cross(o - v0, e1, dim=-1)
    t = (e2 * q).sum(-1) / (e1 * p).sum(-1)
    normal = F.normalize(torch.linalg.cross(e1, e2, dim=-1), dim=-1)  # FlexiCubes' faces point outwards
    return hit, t, normal, tri


# ---------------------------------------------------------------------------- the objective
def sdf_samples(seeds, n: int, noise: float, bound: float, generator: torch.Generator):
    """Points ``(B, n, 3)`` and exact SDF ``(B, n)`` of procedural objects: ``n // 2`` surface samples
    moved by ``N(0, noise^2)``, the rest uniform in the box."""
    from .vqvae_train import _procedural_object

    pts, dist = [], []
    for seed in seeds:
        obj = _procedural_object(int(seed))
        m = n // 2
        near = obj.sample_surface(m, seed=int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))).float()
        near = near + noise * torch.randn(m, 3, generator=generator)
        uniform = (torch.rand(n - m, 3, generator=generator) * 2 - 1) * bound
        p = torch.cat([near, uniform]).clamp(-bound, bound)
        pts.append(p)
        dist.append(obj.sdf(p))
    return torch.stack(pts), torch.stack(dist)


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``valid`` rows (0, still in the graph, when there are none)."""
    w = valid.to(x.dtype).reshape(valid.shape + (1,) * (x.ndim - valid.ndim))
    return (x * w).sum() / (w.sum() * (x.numel() // valid.numel())).clamp(min=1)


class FlexiCubesObjective(nn.Module):
    """Eq. 8's render terms on the mesh plus Eq. 9 (and our SDF aid) for one batch (module doc)."""

    def __init__(self, model: SAR3DFlexiCubes, settings: FlexiCubesSettings | None = None):
        super().__init__()
        self.model, self.settings = model, settings or FlexiCubesSettings()
        self.config = None

    def forward(self, batch: dict, step: int) -> dict:
        from .vqvae_train import sample_rays

        s, m = self.settings, self.model
        g = step_generator(step)
        base = m.base
        device = batch["encoder_input"].device
        with torch.no_grad():
            if next(base.parameters()).device != device:
                base.to(device)
            f_hat = base.encode(batch["encoder_input"], batch.get("input_c")).f_hat
        planes = m.decode_fhat(f_hat)
        B, V, _, H, W = batch["target_rgb"].shape
        bound, res = m.field.bound, s.resolution
        cell = 2 * bound / res

        # rays: half on or near the object, over the 6 supervision views
        index = sample_rays(batch["target_mask"], s.rays, s.object_ray_share, g).to(device)  # (B, n)
        origins, dirs = camera_rays(batch["target_c"], H, W)
        take = lambda x: x.reshape(B, V * H * W, -1).gather(1, index[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
        o_Bn3, d_Bn3 = take(origins), take(dirs)
        scale_Bn = take(ray_depth_scale(batch["target_c"], H, W)[..., None])[..., 0]
        rgb_t = take(batch["target_rgb"].movedim(2, -1))
        depth_t = take(batch["target_depth"].movedim(2, -1))[..., 0]
        mask_t = take(batch["target_mask"].movedim(2, -1))[..., 0]
        normal_t = take(batch["target_normal"].movedim(2, -1))

        # the mesh of each object, rendered at the rays
        rgb_p = torch.ones_like(rgb_t)
        depth_p, normal_p = torch.zeros_like(depth_t), torch.zeros_like(normal_t)
        hit_p = torch.zeros_like(mask_t, dtype=torch.bool)
        l_dev, s_edges, weights, faces, s_grids = [], [], [], [], []
        for b in range(B):
            out = m.surface(planes[b:b + 1], res, training=True)
            s_grids.append(out["s_grid"])
            faces.append(len(out["faces"]))
            l_dev.append(out["l_dev"])
            s_edges.append(out["s_edges"])
            weights.append(out["weights"])
            hit, t, normal, _ = ray_mesh_hits(out["vertices"], out["faces"], o_Bn3[b], d_Bn3[b])
            if hit.any():
                idx = hit.nonzero()[:, 0]
                # the colour trains the field's colour, not the geometry (its spatial gradient would move vertices)
                point = (o_Bn3[b, idx] + t[:, None] * d_Bn3[b, idx]).detach()
                colour = m.field.query(planes[b:b + 1], point[None])[1][0]
                rgb_p = rgb_p.index_put((torch.full_like(idx, b), idx), colour)
                depth_p = depth_p.index_put((torch.full_like(idx, b), idx), t / scale_Bn[b, idx])  # planar
                normal_p = normal_p.index_put((torch.full_like(idx, b), idx), normal)
                hit_p[b, idx] = True

        # soft silhouette from s along each ray (the mesh's hit is a step function of its vertices), s read
        # trilinearly from the grid values FlexiCubes meshes: what the grid cannot hold, the loss does not ask for
        s_grid = torch.stack(s_grids)  # (B, R+1, R+1, R+1)
        K = s.silhouette_samples
        near, far = ray_box_interval(o_Bn3, d_Bn3, -bound, bound)
        crosses = far > near
        far = torch.maximum(far, near)
        u = (torch.arange(K, device=device) + torch.rand(B, s.rays, K, generator=g).to(device)) / K
        t_BnK = near[..., None] + (far - near)[..., None] * u
        pts = (o_Bn3[:, :, None] + t_BnK[..., None] * d_Bn3[:, :, None]).reshape(B, -1, 3)
        s_BnK = grid_trilinear(s_grid, pts, bound).reshape(B, s.rays, K)
        mask_p = torch.sigmoid(-s_BnK.amin(-1) / s.silhouette_tau) * crosses

        terms = {}
        terms["rgb"] = F.l1_loss(rgb_p, rgb_t)
        terms["mask"] = F.l1_loss(mask_p, mask_t)
        both = hit_p & (mask_t > 0.5) & (depth_t > 0)
        terms["depth"] = _masked_mean((depth_p - depth_t).abs(), both)
        terms["normal"] = _masked_mean((normal_p - normal_t).abs(), both)  # MAE over the 3 components
        # L_reg: FlexiCubes' L_dev (cells), the sign regulariser on crossed grid edges, weights near 1
        s_e = torch.cat(s_edges)
        if len(s_e):
            # BCE(sigmoid(s_a), [s_b >= 0]) both ways: each crossing costs, so stray ones fade
            terms["sign"] = F.binary_cross_entropy_with_logits(s_e / LEVEL, (s_e.flip(-1) >= 0).to(s_e.dtype))
        else:
            terms["sign"] = planes.new_zeros(())
        terms["dev"] = torch.stack(l_dev).mean()
        w = torch.cat(weights)
        terms["weight_reg"] = ((w - 1) ** 2).mean() if len(w) else planes.new_zeros(())
        terms["reg"] = terms["dev"] + s.sign * terms["sign"] + s.weights * terms["weight_reg"]
        loss = (s.rgb * terms["rgb"] + s.depth * terms["depth"] + s.mask * terms["mask"]
                + s.normal * terms["normal"] + s.reg * terms["reg"])  # Eq. 8's render terms + Eq. 9
        seeds = [int(x) for x in batch["seed"]] if "seed" in batch else []
        if s.sdf > 0 and seeds and min(seeds) >= 0:
            pts, dist = sdf_samples(seeds, s.sdf_points, cell, bound, g)
            # the sign of s against the exact inside [sdf < 0], as a soft occupancy sigmoid(-s / tau)
            inside = (dist.to(device) < 0).to(planes.dtype)
            s_pts = grid_trilinear(s_grid, pts.to(device), bound)
            terms["sdf"] = F.binary_cross_entropy_with_logits(-s_pts / s.silhouette_tau, inside)
            loss = loss + s.sdf * terms["sdf"]
        # diagnostics: the mesh's own (hard) silhouette error and size
        terms["mask_mesh"] = (hit_p.to(mask_t.dtype) - mask_t).abs().mean().detach()
        terms["faces"] = float(np.mean(faces))
        terms["loss"] = loss
        return terms


# ---------------------------------------------------------------------------- training
_ITEM_KEYS = ("encoder_input", "input_c", "target_rgb", "target_depth", "target_mask", "target_normal", "target_c",
              "seed")


def _collate(items):
    return torch.utils.data.default_collate([{k: it[k] for k in _ITEM_KEYS} for it in items])


def train_flexicubes(init_vqvae_folder, data, train_cfg: TrainConfig, export=None,
                     settings: FlexiCubesSettings | None = None, resume: bool = False, command: str = "") -> dict:
    """Fine-tune a copy of the decoder of the VQVAE in ``init_vqvae_folder`` with FlexiCubes (module doc)
    on the data set ``data`` through ``training.train``; export the model (and ``training.json``) to
    ``export``. The base VQVAE is read, never written. Returns a summary."""
    from .data import MultiViewDataset
    from .vqvae import SAR3DVQVAE

    settings = settings or FlexiCubesSettings()
    _check_resolution(settings.resolution)
    t0 = time.perf_counter()
    vqvae = SAR3DVQVAE.from_pretrained(init_vqvae_folder).eval().requires_grad_(False)
    model = SAR3DFlexiCubes.from_vqvae(vqvae, vqvae_checkpoint=str(init_vqvae_folder),
                                       code_channels=settings.code_channels, resolution=settings.resolution)
    dataset = MultiViewDataset(data, size=vqvae.cfg.image_size)
    out_dir = Path(train_cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "objective.json").write_text(json.dumps(
        {"vqvae": str(init_vqvae_folder), "vqvae_fingerprint": model.base_fingerprint, "settings": asdict(settings)},
        indent=2))
    objective = FlexiCubesObjective(model, settings)
    t1 = time.perf_counter()
    rows = train(objective, dataset, lambda net, batch, step: net(batch, step), train_cfg, resume=resume,
                 collate_fn=_collate)
    t_train = time.perf_counter() - t1
    if vqvae.fingerprint() != model.base_fingerprint:  # the design's promise, checked where it could break
        raise RuntimeError("the base VQVAE changed during the fine-tune")
    summary = {"steps": train_cfg.steps, "setup_seconds": round(t1 - t0, 1), "train_seconds": round(t_train, 1),
               "seconds_per_step": round(t_train / max(1, train_cfg.steps), 3) if not resume else None,
               "data": str(data), "objects": len(dataset), "final": rows[-1] if rows else None}
    if export and is_main_process():
        model.save_pretrained(export, extra={"settings": asdict(settings)})
        (Path(export) / "training.json").write_text(json.dumps(
            {"command": command, **summary, "settings": asdict(settings), "train_config": asdict(train_cfg),
             "log": str(out_dir / "log.jsonl")}, indent=1))
    if is_main_process():
        print("summary " + json.dumps(summary))
    return summary
