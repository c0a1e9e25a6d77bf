"""Data formats and data sets: the multi-view input of the 3D VQVAE (paper Sec. 5.1; DESIGN.md §3).

The paper trains on G-Objaverse renders (Sec. 5.1: about 176K Objaverse objects, 40 views
each) with captions from 3DTopia, preprocessed into the SAR3D/LN3Diff "chunk" layout. This
module reads those formats into a ``views.MultiView`` and writes the same layout (in which
``world.build_dataset`` stores the procedural world), so one loader serves the real and the
small data:

* ``read_chunk`` / ``write_chunk``: one object, 12 views tiled left to right::

      raw_img.png     (H, 12 W, 3) RGB on white
      depth_alpha.jpg (2 H, 12 W)  top half: disparity as 8 bits, bottom half: alpha
      d_near_far.npy  (2, 12)      per view the disparity range of the 8 bits
      normal.png      (H, 12 W, 3) normals as v/255*2-1 in the G-buffer frame (see below)
      c.npy           (12, 25)     cameras (DESIGN.md §4); K[2,2] is 1/256 in the real data
      bbox.npy        (12, 4)      per view (row0, col0, row1, col1) of the object
      caption.txt, ins.txt         caption and object id (both optional when reading)
      depth.npz       (12, H, W)   float16 planar depth under key "depth" (compressed):
                                   this project's extra, preferred by read_chunk when present

  Depth: ``z = 1 / ((v/255) (d1 - d0) + d0)`` with ``d0, d1`` rows 0 and 1 of
  d_near_far.npy; row 0 is the disparity of the background (1/3, depth 3) so background
  decodes to z > 2.9 and is dropped (as in the official loader).
* ``read_gobjaverse``: raw G-Objaverse folders ``campos_512_v4/NNNNN/{NNNNN.png,
  NNNNN_nd.exr, NNNNN.json}``.
* ``read_mesh_views``: any mesh file, ray-cast by ``render.render_mesh``.

Facts measured on the reference samples (``../shared/reference_data``; tests/test_data.py):
both sources store normals in the G-buffer (Unity-style) frame; in the camera's world
frame the normal is ``(-R, -B, G)`` (median cosine with finite-difference normals of the
depth 0.99 for both). The G-Objaverse EXR depth is anti-aliased like a colour, i.e.
premultiplied by coverage (an edge pixel holds ``alpha * z``): dividing by the PNG alpha
brings the edge error from 50% to 0.5%. The chunk's JPEG depth has anti-aliasing spikes on
silhouettes; a 3x3 median-consistency test (2%) removes them (99.9% of back-projected
points then lie in the object box, against 99.0% without). Read this way, the depth of
each view, back-projected and projected into the others, lands inside their masks (2-px
tolerance) for 98.3% (chunk) and 99.6% (G-Objaverse) of pixels.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cameras import check_rigid, chunk_cameras, unpack_camera
from .views import MultiView

CHUNK_REQUIRED = ("raw_img.png", "depth_alpha.jpg", "d_near_far.npy", "normal.png", "c.npy")
BACKGROUND_DEPTH = 2.9  # decoded chunk depth beyond this is background (official loader)
BACKGROUND_DISPARITY = 1.0 / 3.0  # row 0 of d_near_far.npy in the real data: 8-bit value 0 = depth 3
ALPHA_NOISE = 0.05  # JPEG ringing: alpha below this is 0, above 1 - this is 1
DEPTH_MEDIAN_TOL = 0.02  # chunk depth must agree with its 3x3 median within 2% (drops silhouette spikes)
INPUT_VIEWS, TARGET_VIEWS = tuple(range(6)), tuple(range(6, 12))  # chunk layout (cameras.CHUNK_LAYOUT)
GOBJAVERSE_12 = (0, 4, 8, 12, 16, 20, 2, 6, 10, 14, 18, 22)  # 60-deg ring inputs, 30-deg offset targets
INDEX_NAME = "index.json"


def default_cache_dir() -> Path:
    """``$SAR3D_CACHE``, else ``~/.cache/sar3d``: where ``sar3d data build`` writes by default."""
    return Path(os.environ.get("SAR3D_CACHE") or Path.home() / ".cache" / "sar3d").expanduser()


# ---------------------------------------------------------------- small helpers
def _require(folder: Path, names, what: str) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{what} folder {folder} lacks {', '.join(missing)}")


def _load_npy(path: Path, shape=None, key=None) -> np.ndarray:
    """An array from a .npy file (or ``key`` of a .npz), checked for shape and NaN."""
    try:
        a = np.load(path, allow_pickle=False)  # never unpickle a user's file (DESIGN.md §4)
        a = a[key] if key is not None else a
    except Exception as err:
        raise ValueError(f"{path}: not a readable NumPy array file ({type(err).__name__}: {err})") from None
    if shape is not None and a.shape != shape:
        raise ValueError(f"{path} has shape {a.shape}: expected {shape}")
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        raise ValueError(f"{path} holds NaN or inf values")
    return a


def _load_image(path: Path, mode: str, shape=None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert(mode) if im.mode != mode else im)
    except Exception as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    if shape is not None and a.shape[:2] != shape:
        raise ValueError(f"{path} is {a.shape[1]}x{a.shape[0]} pixels: expected {shape[1]}x{shape[0]}")
    return a


def _untile(a: np.ndarray, V: int) -> np.ndarray:
    """``(H, V W, ...)`` -> ``(V, H, W, ...)``: views tiled left to right."""
    return np.stack(np.split(a, V, axis=1))


def _tile(a: np.ndarray) -> np.ndarray:
    return np.concatenate(list(a), axis=1)


def _gbuffer_to_world(n_VHW3: np.ndarray) -> np.ndarray:
    """G-buffer normal ``(R, G, B)`` -> world ``(-R, -B, G)`` (measured on both reference samples)."""
    return np.stack([-n_VHW3[..., 0], -n_VHW3[..., 2], n_VHW3[..., 1]], axis=-1)


def _world_to_gbuffer(n_VHW3: np.ndarray) -> np.ndarray:  # the inverse of _gbuffer_to_world
    return np.stack([-n_VHW3[..., 0], n_VHW3[..., 2], -n_VHW3[..., 1]], axis=-1)


def _to_multiview(rgb, depth, mask, normal_world, valid, c, caption, source) -> MultiView:
    """numpy ``(V, H, W[, 3])`` arrays -> ``MultiView``; normals unit where ``valid``, else 0."""
    n = torch.from_numpy(np.ascontiguousarray(normal_world, dtype=np.float32)).permute(0, 3, 1, 2)
    n = F.normalize(n, dim=1) * torch.from_numpy(valid)[:, None]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return MultiView(rgb=t(rgb).permute(0, 3, 1, 2).contiguous(), depth=t(depth)[:, None], mask=t(mask)[:, None],
                     normal=n.contiguous(), c=t(c), caption=caption or None, source=source)


def resize_views(mv: MultiView, size: int | None) -> MultiView:
    """Views resized to ``size x size``: area average for rgb and mask; depth and normals
    averaged over the pixels that hold a surface (so an edge keeps a real depth, not a blend
    with 0), as the supersampling of ``render._assemble`` does."""
    if size is None or tuple(mv.size) == (size, size):
        return mv
    area = lambda x: F.interpolate(x, size=(size, size), mode="area")  # noqa: E731
    has = (mv.depth > 0).float()
    w = area(has)
    depth = area(mv.depth * has) / w.clamp(min=1e-8)
    normal = area(mv.normal)  # normals are 0 off the surface: renormalising is the masked mean
    normal = F.normalize(normal, dim=1) * (normal.norm(dim=1, keepdim=True) > 1e-6)
    return replace(mv, rgb=area(mv.rgb), mask=area(mv.mask), depth=depth * (w > 0), normal=normal)


def _median_consistent(z: np.ndarray, valid: np.ndarray, tol: float) -> np.ndarray:
    """``valid`` minus the pixels whose depth is off the median of their valid 3x3 neighbours by > tol z."""
    zz = torch.from_numpy(np.where(valid, z, np.nan).astype(np.float32))[:, None]
    patches = F.unfold(F.pad(zz, (1, 1, 1, 1), value=float("nan")), 3)  # (V, 9, H W)
    med = torch.nanmedian(patches, dim=1).values.view(z.shape).numpy()
    return valid & (np.abs(z - med) <= tol * z)


# ---------------------------------------------------------------- SAR3D / LN3Diff chunks
def read_chunk(folder, size: int | None = None) -> MultiView:
    """Read a SAR3D/LN3Diff chunk folder (layout in the module docstring) -> ``MultiView``.

    mask = alpha (soft; JPEG noise under 5% clipped); depth and normals are kept where
    alpha >= 0.5 (depth also where it decodes below 2.9 and passes the median test);
    ``size`` resizes with ``resize_views``. Raises FileNotFoundError / ValueError naming the file.
    """
    folder = Path(folder)
    rgb_name = "raw_img.jpg" if (folder / "raw_img.jpg").is_file() and not (folder / "raw_img.png").is_file() \
        else "raw_img.png"  # chunks of more than 12 views store JPEG (official loader)
    _require(folder, (rgb_name,) + CHUNK_REQUIRED[1:], "chunk")
    c = _load_npy(folder / "c.npy")
    if c.ndim != 2 or c.shape[1] != 25 or c.shape[0] == 0:
        raise ValueError(f"{folder / 'c.npy'} has shape {c.shape}: expected (V, 25)")
    V = c.shape[0]
    check_rigid(unpack_camera(c)[0], name=f"c2w in {folder / 'c.npy'}")
    rgb8 = _load_image(folder / rgb_name, "RGB")
    H, VW = rgb8.shape[:2]
    if VW % V:
        raise ValueError(f"{folder / rgb_name} is {VW} pixels wide: not {V} tiled views (c.npy has {V} cameras)")
    W = VW // V
    da = _load_image(folder / "depth_alpha.jpg", "L", (2 * H, VW)).astype(np.float32)
    normal8 = _load_image(folder / "normal.png", "RGB", (H, VW))
    d01 = _load_npy(folder / "d_near_far.npy", (2, V)).astype(np.float64)

    alpha = _untile(da[H:], V) / 255.0
    mask = np.where(alpha < ALPHA_NOISE, 0.0, np.where(alpha > 1 - ALPHA_NOISE, 1.0, alpha))
    surface = alpha >= 0.5
    if (folder / "depth.npz").is_file():  # our float16 extra
        depth = _load_npy(folder / "depth.npz", (V, H, W), key="depth").astype(np.float32)
        if (depth < 0).any():
            raise ValueError(f"{folder / 'depth.npz'} holds negative depths")
    else:
        d0, d1 = d01[0][:, None, None], d01[1][:, None, None]
        # z = 1 / ((v / 255) (d1 - d0) + d0): 8-bit disparity between the two rows
        disparity = (_untile(da[:H], V) / 255.0) * (d1 - d0) + d0
        z = 1.0 / np.where(disparity > 0, disparity, np.inf)
        valid = _median_consistent(z, surface & (z > 0) & (z < BACKGROUND_DEPTH), DEPTH_MEDIAN_TOL)
        depth = np.where(valid, z, 0.0)
    normal = _gbuffer_to_world(_untile(normal8, V).astype(np.float32) / 255.0 * 2.0 - 1.0)
    caption = None
    for name in ("caption.txt", "caption_3dtopia.txt"):
        if (folder / name).is_file():
            caption = (folder / name).read_text(encoding="utf-8").strip()
            break
    mv = _to_multiview(_untile(rgb8, V) / 255.0, depth, mask, normal, surface, c, caption, str(folder))
    return resize_views(mv, size)


def _write_chunk_files(mv: MultiView, folder: Path, ins: str | None) -> None:
    """Write the chunk layout of ``mv`` into an existing (empty) folder."""
    V, _, H, W = mv.rgb.shape
    rgb8 = (mv.rgb.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    Image.fromarray(_tile(rgb8)).save(folder / "raw_img.png")
    mask = mv.mask[:, 0].clamp(0, 1).numpy()
    z = mv.depth[:, 0].double().numpy()
    has = z > 0
    d0 = np.full(V, BACKGROUND_DISPARITY)
    zmin = np.array([z[v][has[v]].min() if has[v].any() else 1.0 for v in range(V)])
    d1 = np.maximum(1.0 / zmin, d0 + 1e-3)  # the nearest surface point gets value 255
    disparity = 1.0 / np.where(has, z, np.inf)
    v8 = np.clip(np.round(255 * (disparity - d0[:, None, None]) / (d1 - d0)[:, None, None]), 0, 255)
    depth_alpha = np.concatenate([_tile(v8), _tile(np.round(mask * 255))]).astype(np.uint8)
    Image.fromarray(depth_alpha).save(folder / "depth_alpha.jpg", quality=95)
    np.save(folder / "d_near_far.npy", np.stack([d0, d1]))
    n = mv.normal.permute(0, 2, 3, 1).numpy()
    raw = np.where((np.linalg.norm(n, axis=-1) > 0.5)[..., None], _world_to_gbuffer(n), [0.0, 0.0, 1.0])
    Image.fromarray(_tile(np.round((raw + 1) / 2 * 255).clip(0, 255).astype(np.uint8))).save(folder / "normal.png")
    np.save(folder / "c.npy", mv.c.float().numpy())
    bbox = np.zeros((V, 4), dtype=np.int32)
    for v in range(V):
        rows, cols = np.nonzero(mask[v] >= 0.5)
        if len(rows):
            bbox[v] = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    np.save(folder / "bbox.npy", bbox)
    (folder / "caption.txt").write_text(mv.caption or "", encoding="utf-8")
    (folder / "ins.txt").write_text(ins if ins is not None else mv.source, encoding="utf-8")
    np.savez_compressed(folder / "depth.npz", depth=mv.depth[:, 0].numpy().astype(np.float16))


def write_chunk(mv: MultiView, folder, ins: str | None = None, overwrite: bool = False) -> Path:
    """Write ``mv`` in the chunk layout, atomically: files go to a temporary folder next
    to ``folder`` that is renamed into place at the end, so an error or Ctrl-C leaves
    nothing half-written. ``depth_alpha.jpg`` is lossy (8-bit disparity, JPEG; depths
    beyond 2.9 are lost); the extra ``depth.npz`` (float16, relative error under 1e-3)
    keeps the depth, and ``read_chunk`` prefers it."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"chunk folder {folder} exists (pass overwrite=True to replace it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the chunk gets the usual permissions
        _write_chunk_files(mv, tmp, ins)
        if folder.exists():  # overwrite: move the old one aside first, delete it last
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ---------------------------------------------------------------- raw G-Objaverse
def _gobjaverse_root(folder: Path) -> tuple[Path, list | None]:
    """The folder holding the ``NNNNN/`` view folders (``folder/campos_512_v4``, ``folder``,
    or the parent of a view folder ``NNNNN/``) and, for a view folder, its view id."""
    if (folder / "campos_512_v4").is_dir():
        return folder / "campos_512_v4", None
    if folder.name.isdigit() and (folder / f"{folder.name}.json").is_file():
        return folder.parent, [int(folder.name)]
    return folder, None


def _view_ids(root: Path) -> list[int]:
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def _is_gobjaverse(folder: Path) -> bool:
    root, _ = _gobjaverse_root(folder)
    return root.is_dir() and any((root / f"{i:05d}" / f"{i:05d}.json").is_file() for i in _view_ids(root))


def _read_exr_rgba(path: Path) -> dict:
    import OpenEXR

    try:
        channels = OpenEXR.File(str(path), separate_channels=True).channels()
    except Exception as err:
        raise ValueError(f"{path}: not a readable OpenEXR file ({type(err).__name__}: {err})") from None
    missing = [k for k in "RGBA" if k not in channels]
    if missing:
        raise ValueError(f"{path} lacks channel(s) {', '.join(missing)}: expected R, G, B (normal) and A (depth)")
    out = {k: np.asarray(channels[k].pixels, dtype=np.float32) for k in "RGBA"}
    if not all(np.isfinite(a).all() for a in out.values()):
        raise ValueError(f"{path} holds NaN or inf values")
    return out


def _gobjaverse_camera(path: Path) -> np.ndarray:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = meta["x"], meta["y"], meta["z"], meta["origin"]
        fov_x, fov_y = float(meta["x_fov"]), float(meta["y_fov"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a G-Objaverse camera (needs x, y, z, origin, x_fov, y_fov): {err!r}") from None
    check_rigid(torch.from_numpy(c2w), name=f"camera in {path}")
    # focal length in units of the image size: f = 0.5 / tan(fov / 2)
    K = np.array([[0.5 / np.tan(fov_x / 2), 0, 0.5], [0, 0.5 / np.tan(fov_y / 2), 0.5], [0, 0, 1.0]])
    return np.concatenate([c2w.ravel(), K.ravel()])


def read_gobjaverse(folder, views=None, size: int | None = None) -> MultiView:
    """Read raw G-Objaverse renders -> ``MultiView``.

    ``folder``: the object folder holding ``campos_512_v4/``, ``campos_512_v4`` itself, or
    one view folder ``NNNNN/``; ``views``: view ids (default all present, sorted). Per view: the RGBA PNG composited on
    white (straight alpha); mask = alpha; depth = EXR A / alpha where alpha >= 0.5 (the EXR
    depth is premultiplied by coverage), else 0; normal = (-R, -B, G) of the EXR;
    ``c2w`` has columns x, y, z, origin of the JSON.
    """
    folder = Path(folder)
    root, single = _gobjaverse_root(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"G-Objaverse folder {folder} does not exist")
    ids = [int(v) for v in views] if views is not None else single or _view_ids(root)
    if not ids:
        raise FileNotFoundError(f"G-Objaverse folder {folder} holds no view folders "
                                "NNNNN/ (NNNNN.png, NNNNN_nd.exr, NNNNN.json)")
    missing = [f"{i:05d}/{i:05d}{ext}" for i in ids for ext in (".png", "_nd.exr", ".json")
               if not (root / f"{i:05d}" / f"{i:05d}{ext}").is_file()]
    if missing:
        raise FileNotFoundError(f"G-Objaverse folder {root} lacks {', '.join(missing[:6])}"
                                + (f" and {len(missing) - 6} more" if len(missing) > 6 else ""))
    rgb, depth, mask, normal, cams = [], [], [], [], []
    for i in ids:
        stem = root / f"{i:05d}" / f"{i:05d}"
        exr = _read_exr_rgba(stem.with_name(stem.name + "_nd.exr"))
        shape = exr["A"].shape
        png = _load_image(stem.with_suffix(".png"), "RGBA", shape).astype(np.float32) / 255.0
        alpha = png[..., 3]
        rgb.append(png[..., :3] * alpha[..., None] + (1.0 - alpha[..., None]))  # on white
        surface = (alpha >= 0.5) & (exr["A"] > 0)
        depth.append(np.where(surface, exr["A"] / np.maximum(alpha, 1e-3), 0.0))
        mask.append(alpha)
        normal.append(_gbuffer_to_world(np.stack([exr["R"], exr["G"], exr["B"]], axis=-1)))
        cams.append(_gobjaverse_camera(stem.with_suffix(".json")))
    if len({a.shape for a in mask}) > 1:
        raise ValueError(f"G-Objaverse folder {root}: views of different sizes {sorted({a.shape for a in mask})}")
    depth = np.stack(depth)
    caption_file = root.parent / "caption.txt"
    caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else None
    mv = _to_multiview(np.stack(rgb), depth, np.stack(mask), np.stack(normal), depth > 0, np.stack(cams),
                       caption, str(root))
    return resize_views(mv, size)


# ---------------------------------------------------------------- meshes and dispatch
def read_mesh_views(path, c, height: int, width: int, *, supersample: int = 1, up: str = "z") -> MultiView:
    """Load a mesh file (``up``: the up axis of OBJ/PLY/STL/OFF; glTF is +Y up, see ``render.load_mesh``),
    fit it into the object box ``[-0.45, 0.45]^3`` and ray-cast it from ``c (V, 25)``."""
    from .render import load_mesh, normalize_mesh, render_mesh  # lazy: render imports trimesh

    mesh = normalize_mesh(load_mesh(path, up=up))
    return render_mesh(mesh, c, height, width, supersample=supersample, source=str(path))


def load_views(spec: str, num_views: int = 12, size: int = 64, up: str = "z") -> MultiView:
    """Views of ``spec``: ``proc:<seed>`` (a procedural object from ``chunk_cameras(seed)``),
    a chunk folder (holds c.npy), a G-Objaverse object folder or a mesh file. Procedural
    objects and meshes get the first ``num_views`` (1-12) chunk-layout cameras; folders give
    their first ``num_views`` views. ``up``: the up axis of an OBJ/PLY/STL/OFF file (``"z"``
    or ``"y"``; glTF/GLB are +Y up by their specification); other inputs are +Z up already."""
    from .render import MESH_EXTENSIONS, UP_AXES

    spec = str(spec)
    if num_views < 1:
        raise ValueError(f"num_views={num_views} must be at least 1")
    if up not in UP_AXES:
        raise ValueError(f"up={up!r}: the up axis of a mesh file is one of {', '.join(UP_AXES)}")
    if up != "z" and (spec.startswith("proc:") or Path(spec).suffix.lower() not in MESH_EXTENSIONS):
        raise ValueError(f"up={up!r} applies to mesh files only: {spec} is in the +Z-up world frame already")
    kinds = "proc:<seed>, a mesh file, a chunk folder or a G-Objaverse object folder"
    if spec.startswith("proc:"):
        try:
            seed = int(spec[5:])
        except ValueError:
            raise ValueError(f"{spec!r}: expected proc:<integer seed>") from None
        if num_views > 12:
            raise ValueError(f"num_views={num_views}: a procedural object is rendered from at most 12 chunk cameras")
        from .world import make_object, render_sdf

        obj = make_object(seed)
        mv = render_sdf(obj, chunk_cameras(seed)[:num_views], size, size, supersample=2)
        return replace(mv, caption=obj.caption, source=spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such file or folder (expected {kinds})")
    if path.is_dir():
        if (path / "c.npy").is_file():
            mv = read_chunk(path, size)
        elif _is_gobjaverse(path):
            mv = read_gobjaverse(path, size=size)
        else:
            raise ValueError(f"{spec}: a folder that is neither a chunk (no c.npy) "
                             "nor a G-Objaverse object (no NNNNN/NNNNN.json)")
        return mv.select(slice(0, num_views))
    if path.suffix.lower() in MESH_EXTENSIONS:
        if num_views > 12:
            raise ValueError(f"num_views={num_views}: a mesh is rendered from at most 12 chunk cameras")
        return read_mesh_views(path, chunk_cameras()[:num_views], size, size, supersample=2, up=up)
    raise ValueError(f"{spec}: unsupported input (expected {kinds}; mesh extensions {', '.join(MESH_EXTENSIONS)})")


# ---------------------------------------------------------------- data set index
def read_index(path: Path) -> dict:
    """A data set's ``index.json`` (see ``world.build_dataset``); ValueError, one line naming the file, when corrupt."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): rebuild the data set with `sar3d data build`, "
                         "or delete the file") from None
    objects = index.get("objects") if isinstance(index, dict) else None
    if not isinstance(objects, list) or not all(isinstance(e, dict) and "folder" in e and "seed" in e
                                                for e in objects):
        raise ValueError(f"{path} is not a data set index (no list of objects with folder and seed): rebuild the "
                         "data set with `sar3d data build`, or delete the file")
    return index


# ---------------------------------------------------------------- torch data set
class MultiViewDataset(torch.utils.data.Dataset):
    """Encoder inputs and supervision views of one object per item (Sec. 4.1).

    ``source``: a built procedural folder (holds index.json), one chunk or G-Objaverse
    folder, a folder of chunk folders, or a list of chunk / G-Objaverse folders.
    An item: ``encoder_input (6, 10, H, W)`` (RGB, depth, Plücker of the input views),
    ``input_c (6, 25)``, ``target_rgb / target_depth / target_mask / target_normal``,
    ``target_c (6, 25)``, ``caption`` ("" if none), ``seed`` (-1 unless procedural), ``id``.

    View choice (positions in the views read): ``input_views`` / ``target_views``; by
    default views 0-5 / 6-11 (the chunk layout) when an object has 12 views or more, and
    otherwise its available views cycled to 6 serve as both inputs and targets (the
    reference G-Objaverse sample has 6). G-Objaverse folders holding all 40 views are read
    at ``GOBJAVERSE_12`` (inputs every 60 deg of the ring, targets 30 deg off them).
    """

    def __init__(self, source, size: int | None = None, input_views=None, target_views=None):
        self.size, self.input_views, self.target_views = size, input_views, target_views
        self.items = []  # (kind, folder, seed)
        paths = [Path(p) for p in source] if isinstance(source, (list, tuple)) else [Path(source)]
        for path in paths:
            if (path / INDEX_NAME).is_file():
                index = read_index(path / INDEX_NAME)
                self.items += [("chunk", path / e["folder"], int(e["seed"])) for e in index["objects"]]
            elif (path / "c.npy").is_file():
                self.items.append(("chunk", path, -1))
            elif _is_gobjaverse(path):
                self.items.append(("gobjaverse", path, -1))
            elif path.is_dir() and (chunks := [p for p in sorted(path.iterdir())
                                               if (p / "c.npy").is_file() and not p.name.startswith(".")]):
                self.items += [("chunk", p, -1) for p in chunks]  # dot folders: temporary (write_chunk)
            else:
                raise FileNotFoundError(f"{path}: not a data set folder (index.json), a chunk folder (c.npy) "
                                        f"or a G-Objaverse object folder")

    def __len__(self) -> int:
        return len(self.items)

    def read(self, i: int) -> MultiView:
        kind, folder, _ = self.items[i]
        if kind == "chunk":
            return read_chunk(folder, self.size)
        root, single = _gobjaverse_root(folder)
        views = GOBJAVERSE_12 if not single and set(GOBJAVERSE_12) <= set(_view_ids(root)) else None
        return read_gobjaverse(folder, views=views, size=self.size)

    def __getitem__(self, i: int) -> dict:
        mv = self.read(i)
        V = mv.num_views
        cycled = [k % V for k in range(6)]
        inputs = list(self.input_views or (INPUT_VIEWS if V >= 12 else cycled))
        targets = list(self.target_views or (TARGET_VIEWS if V >= 12 else cycled))
        src, tgt = mv.select(inputs), mv.select(targets)
        kind, folder, seed = self.items[i]
        ins = folder / "ins.txt"
        return {
            "encoder_input": src.encoder_input(),  # (6, 10, H, W)
            "input_c": src.c,
            "target_rgb": tgt.rgb, "target_depth": tgt.depth, "target_mask": tgt.mask,
            "target_normal": tgt.normal, "target_c": tgt.c,
            "caption": mv.caption or "",
            "seed": seed,
            "id": (ins.read_text(encoding="utf-8").strip() if ins.is_file() else "") or folder.name,
        }


# ---------------------------------------------------------------- shipped samples
def sample_mug():
    """The shipped mesh sample: a red mug with a white handle (trimesh primitives, vertex
    colours), upright in the world frame: its axis along +z, the handle towards +x."""
    import trimesh

    body = trimesh.creation.cylinder(radius=0.25, height=0.6, sections=48)
    handle = trimesh.creation.torus(major_radius=0.16, minor_radius=0.04, major_sections=32, minor_sections=12)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    handle.apply_translation([0.27, 0.0, 0.0])
    body.visual.vertex_colors = [200, 40, 40, 255]
    handle.visual.vertex_colors = [240, 240, 240, 255]
    return trimesh.util.concatenate([body, handle])


def make_samples(out, count: int = 3, size: int = 64) -> list[Path]:
    """Write the small samples shipped in ``data_samples/``: the first ``count`` test-split
    objects as chunks (``chunks/<seed>/``) and a vertex-coloured mesh (``meshes/mug.glb``)
    built from trimesh primitives, so every reader has an input that needs no download."""
    from .render import save_mesh
    from .world import objects_in_split, render_sdf

    out = Path(out)
    written = []
    for obj in objects_in_split("test", count):
        mv = render_sdf(obj, chunk_cameras(obj.seed), size, size, supersample=2)
        written.append(write_chunk(replace(mv, caption=obj.caption), out / "chunks" / f"{obj.seed:06d}",
                                   ins=f"proc/test/{obj.seed}", overwrite=True))
    written.append(save_mesh(sample_mug(), out / "meshes" / "mug.glb"))  # stored +Y up, as glTF says
    return written


def __getattr__(name):  # data.build_dataset: the procedural data set's builder, imported on first use
    if name == "build_dataset":
        from .world.dataset import build_dataset

        return build_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
