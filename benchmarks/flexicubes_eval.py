"""Meshes of the test objects: marching cubes on the NeRF field vs FlexiCubes after the fine-tune (Sec. 4.1).

For each of the first ``--count`` objects of a built test split, the base VQVAE encodes the 6
input views; then, at each grid resolution:

* ``marching-cubes (NeRF)``: ``meshing.extract_mesh`` on the base field (the shipped path);
* ``flexicubes (NeRF, unit weights)``: the same field through FlexiCubes with all weights 1 and
  no deformation (Dual Marching Cubes; ``extract_mesh(mesher="flexicubes")``), the starting
  point of the fine-tune;
* ``flexicubes (fine-tuned)``: ``SAR3DFlexiCubes.mesh`` (the fine-tuned decoder copy and heads).

Against the exact surface of each procedural object (``ar_eval.exact_points``, normals from
its SDF): Chamfer distance (the project's: mean squared nearest distance both ways, x 10^3) on
``--points`` area-weighted samples, normal consistency (mean ``|n . n_nearest|`` both ways, face
normals on the mesh), watertight share (``trimesh.Trimesh.is_watertight``), faces per mesh and
CPU seconds per mesh (the extraction from the decoded planes: field queries and meshing, one
torch thread; planes decoding not included, it is the same for all). Objects without a surface
count as failures and are left out of the means.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/flexicubes_eval.py \\
        --model data_samples/flexicubes_tiny --data ~/.cache/sar3d/proc_test_64 --count 50 --resolutions 32 64
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from sar3d_core.ar_eval import exact_points, test_records
from sar3d_core.data import MultiViewDataset
from sar3d_core.flexicubes_train import FlexiCubesObjective, SAR3DFlexiCubes
from sar3d_core.meshing import extract_mesh
from sar3d_core.metrics import chamfer_distance
from sar3d_core.training import find_checkpoint, load_checkpoint
from sar3d_core.vqvae import SAR3DVQVAE
from sar3d_core.world import make_object, sdf_normals

METHODS = ("marching-cubes (NeRF)", "flexicubes (NeRF, unit weights)", "flexicubes (fine-tuned)")


def load_model(model_folder=None, run=None, vqvae_folder=None) -> SAR3DFlexiCubes:
    """An exported model, or the newest checkpoint of a training run (with its base VQVAE)."""
    if model_folder:
        base = SAR3DVQVAE.from_pretrained(vqvae_folder).eval() if vqvae_folder else None
        return SAR3DFlexiCubes.from_pretrained(model_folder, base)
    meta = json.loads((Path(run) / "objective.json").read_text())
    base = SAR3DVQVAE.from_pretrained(vqvae_folder or meta["vqvae"]).eval()
    model = SAR3DFlexiCubes.from_vqvae(base, meta["vqvae"], code_channels=meta["settings"]["code_channels"])
    load_checkpoint(find_checkpoint(run), FlexiCubesObjective(model))
    return model.eval()


def mesh_scores(mesh, pts_N3: torch.Tensor, normals_N3: np.ndarray, n: int, seed: int) -> dict:
    import trimesh

    samples, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    samples = np.asarray(samples, dtype=np.float32)
    mesh_n = np.asarray(mesh.face_normals)[face]
    cd = float(chamfer_distance(torch.from_numpy(samples), pts_N3))
    _, to_exact = cKDTree(pts_N3.numpy()).query(samples)
    _, to_mesh = cKDTree(samples).query(pts_N3.numpy())
    nc = 0.5 * (np.abs((mesh_n * normals_N3[to_exact]).sum(-1)).mean()
                + np.abs((normals_N3 * mesh_n[to_mesh]).sum(-1)).mean())
    return {"chamfer": cd, "nc": float(nc), "watertight": bool(mesh.is_watertight), "faces": int(len(mesh.faces))}


def timed(fn):
    torch.set_num_threads(1)
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def evaluate(model: SAR3DFlexiCubes, data, count: int, resolutions, points: int = 2048) -> dict:
    base = model.base
    records = test_records(data, count)
    ds = MultiViewDataset(data, size=base.cfg.image_size)
    by_seed = {seed: i for i, (_, _, seed) in enumerate(ds.items)}
    exact = exact_points(records, points)
    rows = {(m, r): [] for m in METHODS for r in resolutions}
    failed = {(m, r): 0 for m in METHODS for r in resolutions}
    S = base.triplane_settings.num_samples
    for i, rec in enumerate(tqdm(records, desc="objects", unit="obj")):
        item = ds[by_seed[int(rec["seed"])]]
        obj = make_object(int(rec["seed"]))
        normals = sdf_normals(obj.sdf, exact[i]).numpy()
        with torch.no_grad():
            f_hat = base.encode(item["encoder_input"][None], item["input_c"][None]).f_hat
            nerf_planes, fc_planes = base.decode_fhat(f_hat), model.decode_fhat(f_hat)
        for r in resolutions:
            makers = {METHODS[0]: lambda: extract_mesh(base.field, nerf_planes, S, r, mesher="marching-cubes"),
                      METHODS[1]: lambda: extract_mesh(base.field, nerf_planes, S, r, mesher="flexicubes"),
                      METHODS[2]: lambda: model.mesh(fc_planes, r)}  # r: the grid the others use, too
            for name, make in makers.items():
                try:
                    mesh, cpu, wall = timed(make)
                except ValueError:
                    failed[(name, r)] += 1
                    continue
                rows[(name, r)].append({"object": int(rec["seed"]), **mesh_scores(mesh, exact[i], normals, points, seed=i),
                                        "cpu": cpu, "wall": wall})
    out = []
    # paired per object against marching cubes at the same grid (objects where both have a surface)
    paired = {}
    for (name, r), rs in rows.items():
        ref = {x["object"]: x["chamfer"] for x in rows[(METHODS[0], r)]}
        ref_nc = {x["object"]: x["nc"] for x in rows[(METHODS[0], r)]}
        d = np.array([x["chamfer"] - ref[x["object"]] for x in rs if x["object"] in ref]) * 1e3
        dn = np.array([x["nc"] - ref_nc[x["object"]] for x in rs if x["object"] in ref])
        paired[(name, r)] = {"chamfer_x1e3_minus_mc": float(d.mean()) if len(d) else float("nan"),
                             "chamfer_x1e3_minus_mc_sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
                             "better_than_mc_share": float((d < 0).mean()) if len(d) else float("nan"),
                             "normal_consistency_minus_mc": float(dn.mean()) if len(dn) else float("nan"),
                             "normal_consistency_minus_mc_sem": float(dn.std(ddof=1) / np.sqrt(len(dn))) if len(dn) > 1 else float("nan")}
    for (name, r), rs in rows.items():
        a = {k: np.array([x[k] for x in rs], dtype=np.float64) for k in ("chamfer", "nc", "watertight", "faces", "cpu", "wall")}
        sem = lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
        out.append({"method": name, "resolution": r, "objects": len(rs), "failed": failed[(name, r)],
                    "chamfer_x1e3": float(a["chamfer"].mean() * 1e3), "chamfer_x1e3_sem": sem(a["chamfer"] * 1e3),
                    "chamfer_x1e3_median": float(np.median(a["chamfer"]) * 1e3),
                    "normal_consistency": float(a["nc"].mean()), "normal_consistency_sem": sem(a["nc"]),
                    "watertight_share": float(a["watertight"].mean()), "faces_per_mesh": float(a["faces"].mean()),
                    "cpu_seconds_per_mesh": float(a["cpu"].mean()), "wall_seconds_per_mesh": float(a["wall"].mean()),
                    **paired[(name, r)], "per_object": rs})
    return {"rows": out, "objects": len(records), "points": points}


def format_table(result: dict) -> str:
    lines = ["| mesher | grid | Chamfer x10^3 (mean +- s.e.; median) | vs MC, paired (better on) | normal consistency "
             "| NC vs MC, paired | watertight | faces | CPU s / mesh | failed |", "|---" * 10 + "|"]
    for r in result["rows"]:
        vs = ("-" if r["method"] == METHODS[0] else
              f"{r['chamfer_x1e3_minus_mc']:+.3f} +- {r['chamfer_x1e3_minus_mc_sem']:.3f} ({100 * r['better_than_mc_share']:.0f}%)")
        vs_nc = ("-" if r["method"] == METHODS[0] else
                 f"{r['normal_consistency_minus_mc']:+.3f} +- {r['normal_consistency_minus_mc_sem']:.3f}")
        lines.append(f"| {r['method']} | {r['resolution']} | {r['chamfer_x1e3']:.3f} +- {r['chamfer_x1e3_sem']:.3f}; "
                     f"{r['chamfer_x1e3_median']:.3f} | {vs} | {r['normal_consistency']:.3f} +- "
                     f"{r['normal_consistency_sem']:.3f} | {vs_nc} | {100 * r['watertight_share']:.0f}% | "
                     f"{r['faces_per_mesh']:.0f} | {r['cpu_seconds_per_mesh']:.3f} | {r['failed']} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="data_samples/flexicubes_tiny", help="an exported SAR3DFlexiCubes folder")
    p.add_argument("--run", default=None, help="instead of --model: a training run folder (its newest checkpoint)")
    p.add_argument("--vqvae", default=None, help="the base VQVAE folder (default: the one the model names)")
    p.add_argument("--data", default=str(Path("~/.cache/sar3d/proc_test_64").expanduser()))
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--resolutions", type=int, nargs="+", default=[32])
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--json", default="benchmarks/results/flexicubes_eval.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(None if args.run else args.model, args.run, args.vqvae)
    t0 = time.perf_counter()
    result = evaluate(model, Path(args.data).expanduser(), args.count, args.resolutions, args.points)
    result.update(command=" ".join(["benchmarks/flexicubes_eval.py"] + (argv if argv is not None else sys.argv[1:])),
                  model=args.run or args.model, base_vqvae=model.vqvae_checkpoint,
                  base_fingerprint=model.base_fingerprint, seconds=round(time.perf_counter() - t0, 1),
                  protocol="exact surfaces of the procedural test objects (ar_eval.exact_points), area-weighted mesh "
                           "samples; Chamfer: mean squared nearest distance both ways; normal consistency: mean "
                           "|n . n_nearest| both ways (face normals; exact normals from the SDF); CPU seconds: the "
                           "extraction from decoded planes on one torch thread")
    table = format_table(result)
    result["table"] = table
    print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
