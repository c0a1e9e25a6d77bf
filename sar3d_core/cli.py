"""The ``sar3d`` command line (DESIGN.md §8).

Each command prints a one-line error and exits with status 2 on bad input.
Subcommands import their modules lazily so ``sar3d --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
UP_HELP = ("up axis of an OBJ/PLY/STL/OFF input: z (default, the world's up) or y; glTF/GLB files are +Y up "
           "by their specification and always turned to +Z up")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error that says what is wrong and where the help is (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value
    return parse


def _float_in(low: float, high: float = math.inf, *, low_open: bool = False):
    """An argparse ``type``: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ((value > low if low_open else value >= low) and value <= high and math.isfinite(value)):
            wanted = (f"in {'(' if low_open else '['}{low:g}, {high:g}]" if high < math.inf
                      else f"{'>' if low_open else '>='} {low:g}")
            raise argparse.ArgumentTypeError(f"{text} must be a finite number {wanted}")  # NaN fails every test
        return value
    return parse


def _prompt(text: str) -> str:
    """An argparse ``type``: a prompt with words in it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty: give words, e.g. 'a 3D model of a chair coloured red'")
    return text



def _cmd_render(args) -> None:
    from .data import load_views
    from .render import render_grid

    mv = load_views(args.input, num_views=args.views, size=args.size, up=args.up)
    render_grid(mv, args.out, with_depth=args.depth)
    print(f"wrote {args.out}: {mv.num_views} views of {args.size} px from {args.input}"
          + (f" ({mv.caption})" if mv.caption else ""))


def _cmd_data_build(args) -> None:
    from .data import default_cache_dir
    from .world import build_dataset

    out = Path(args.out) if args.out else default_cache_dir() / f"proc_{args.split}_{args.size}"
    build_dataset(out, args.count, size=args.size, split=args.split, start=args.start, workers=args.workers)
    print(f"dataset of {args.count} {args.split} objects at {args.size} px in {out}")


def _cmd_data_check(args) -> None:
    from .data import load_views
    from .views import multiview_consistency

    size = args.size or (None if Path(args.input).is_dir() else 128)  # folders: as stored
    mv = load_views(args.input, num_views=args.views, size=size, up=args.up)
    stats = multiview_consistency(mv, tol_px=args.tol_px)
    print(f"{args.input}: {mv.num_views} views at {mv.size[0]} px, {stats['num_points']} back-projected points; "
          f"inside the other views' masks ({args.tol_px} px): {stats['inside_mask']:.2%}; "
          f"free-space consistent ({stats['tol_depth']} units): {stats['free_space']:.2%}")


def _load_vqvae(path):
    from .vqvae import SAR3DVQVAE
    from .vqvae_train import DEFAULT_CHECKPOINT, load_default

    return (SAR3DVQVAE.from_pretrained(path).eval() if path else load_default()), str(path or DEFAULT_CHECKPOINT)


def _cmd_encode(args) -> None:
    from .data import load_views
    from .quantizer import tokens_to_sequence
    from .tokens import encode_multiview, save_tokens

    model, ckpt = _load_vqvae(args.checkpoint)
    mv = load_views(args.input, num_views=model.cfg.num_input_views, size=model.cfg.image_size, up=args.up)
    seq = tokens_to_sequence(encode_multiview(model, mv, args.refine_steps))
    seed = int(args.input[5:]) if args.input.startswith("proc:") else -1
    save_tokens(args.out, seq, model.cfg, [args.input], [mv.caption or ""], [seed], ckpt, model.fingerprint(),
                args.refine_steps)
    print(f"wrote {args.out}: {seq.shape[1]} tokens over scales {list(model.cfg.scales)} from {args.input}")


REFINE_HELP = ("refine each object's tokens on its input views for this many steps (SAR3DVQVAE.encode_refined; "
               "about 0.1 s a step on one CPU core; default 0: the encoder's one pass)")
MESH_OUT_SUFFIXES = (".glb", ".obj", ".ply")
MESHER_HELP = ("surface extractor: marching-cubes (default) or flexicubes (with the decoder fine-tune made for this "
               "VQVAE, data_samples/flexicubes_tiny or --flexicubes DIR; Dual Marching Cubes with unit weights on "
               "the field when there is none)")
FLEXICUBES_HELP = "a FlexiCubes fine-tune folder for --mesher flexicubes (default: the shipped one, if made for this VQVAE)"


def _check_flexicubes_option(args) -> None:
    """``--flexicubes DIR``: only with ``--mesher flexicubes``, and a checkpoint folder (checked before any model loads)."""
    if args.flexicubes is None:
        return
    if args.mesher != "flexicubes":
        raise ValueError("--flexicubes DIR goes with --mesher flexicubes")
    from .checkpoints import read_meta
    from .flexicubes_train import CONFIG_NAME, FORMAT, WEIGHTS_NAME

    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (Path(args.flexicubes) / name).is_file():
            raise FileNotFoundError(f"--flexicubes {args.flexicubes} has no {name}: is it a SAR3DFlexiCubes checkpoint?")
    read_meta(Path(args.flexicubes) / CONFIG_NAME, FORMAT)


def _run_options(t, out: str, ckpt_every: int, export_help: str,
                 out_help: str = "run folder (checkpoints, log.jsonl, loss.png)",
                 resume_help: str = "continue from the run folder's checkpoint") -> None:
    """The run-folder options every ``sar3d train`` subcommand on ``training.train`` shares."""
    t.add_argument("--out", default=out, help=out_help)
    t.add_argument("--ckpt-every", type=_int_at_least(1), default=ckpt_every)
    t.add_argument("--resume", action="store_true", help=resume_help)
    t.add_argument("--export", default=None, help=export_help)
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads")


def _check_mesh_out(path, option: str = "--mesh") -> Path:
    out = Path(path)
    if out.suffix.lower() not in MESH_OUT_SUFFIXES:
        raise ValueError(f"{option} {out}: write a mesh file (.glb, .obj or .ply)")
    return out


def _cmd_decode(args) -> None:
    import numpy as np
    from PIL import Image

    from .cameras import orbit_cameras
    from .tokens import decode_views, load_tokens, tokens_of

    if args.out is None and args.mesh is None:
        raise ValueError("give --out PNG (rendered views) and/or --mesh FILE (.glb, .obj or .ply)")
    if args.mesh is not None:
        _check_mesh_out(args.mesh)
    elif args.mesher is not None:
        raise ValueError(f"--mesher {args.mesher} needs --mesh FILE")
    _check_flexicubes_option(args)
    load_tokens(args.tokens)  # a missing or corrupt file fails here, before the model loads
    model, _ = _load_vqvae(args.checkpoint)
    loaded = load_tokens(args.tokens, model.cfg, model.fingerprint())
    if not 0 <= args.index < len(loaded["seed"]):
        raise ValueError(f"--index {args.index} is out of range: {args.tokens} holds {len(loaded['seed'])} object(s)")
    K = len(loaded["schedule"])
    scales = K if args.scales is None else args.scales
    if not 1 <= scales <= K:
        raise ValueError(f"--scales {args.scales} must be between 1 and {K}")
    if args.views < 1:
        raise ValueError(f"--views {args.views} must be at least 1")
    tokens = tokens_of(loaded, args.index)
    if args.out is not None:
        c = orbit_cameras([360.0 * v / args.views for v in range(args.views)], [20.0] * args.views)
        out = decode_views(model, tokens, c, args.size, scales)
        row = out["rgb"].clamp(0, 1).permute(2, 0, 3, 1).flatten(1, 2)  # (H, V*W, 3)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((row.numpy() * 255).round().astype(np.uint8)).save(args.out)
        print(f"wrote {args.out}: object {args.index} ({loaded['source'][args.index]}) from scales 1..{scales}, "
              f"{args.views} views of {args.size or model.cfg.image_size} px")
    if args.mesh is not None:
        import time

        import torch

        from .meshing import extract_mesh
        from .render import save_mesh

        from .flexicubes_train import finetune_for

        mesher = args.mesher or "marching-cubes"
        start = time.perf_counter()
        fc = finetune_for(model, args.flexicubes) if mesher == "flexicubes" else None
        with torch.no_grad():
            if fc is not None:
                mesh = fc.mesh(fc.decode_tokens(tokens, scales), args.mesh_resolution)
                mesher = f"flexicubes (decoder fine-tune {fc.name})"
            else:
                planes = model.decode_tokens(tokens, scales)
                mesh = extract_mesh(model.field, planes, model.triplane_settings.num_samples, args.mesh_resolution or 48,
                                    mesher)
                mesher += " (unit weights, no fine-tune for this VQVAE)" if mesher == "flexicubes" else ""
        seconds = time.perf_counter() - start
        save_mesh(mesh, args.mesh)  # .glb: stored +Y up, as glTF says (render.load_mesh reads it back +Z up)
        print(f"wrote {args.mesh}: object {args.index} from scales 1..{scales}, {mesher}, {len(mesh.vertices)} "
              f"vertices, {len(mesh.faces)} faces ({seconds:.2f} s)")


def _cmd_data_tokenize(args) -> None:
    from .tokens import tokenize_dataset

    model, ckpt = _load_vqvae(args.checkpoint)
    r = tokenize_dataset(model, args.data, args.out, batch_size=args.batch_size, checkpoint=ckpt,
                         refine_steps=args.refine_steps, refine_rays=args.refine_rays, limit=args.limit)
    print(f"wrote {r['path']}: {r['objects']} objects in {r['seconds']} s ({r['objects_per_second']} objects/s)")


def _cmd_data_token_draws(args) -> None:
    import json as _json

    from .ar_train import load_generator, write_token_draws
    from .generate import Pipeline
    from .tokens import load_tokens

    seeds = None
    if args.data:
        index = Path(args.data) / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{args.data}: no index.json; give a built data set folder")
        seeds = [int(o["seed"]) for o in _json.loads(index.read_text(encoding="utf-8"))["objects"]]
    model, meta = load_generator(args.generator)  # checked before the condition encoder loads
    if meta["condition"] != "text" or model.next_token:
        raise ValueError(f"{args.generator} is not a next-scale text generator: token draws need one")
    truth = load_tokens(args.tokens)
    if truth["schedule"] != tuple(model.scales[k][0] for k in range(len(model.scales))) \
            or truth["codebook_size"] != model.codebook_size:
        raise ValueError(f"{args.tokens} holds tokens of scales {truth['schedule']} with {truth['codebook_size']} "
                         f"codes, not the generator's: tokenize with its VQVAE ({meta.get('vqvae_checkpoint', '?')})")
    if args.keep and max(args.keep) >= len(model.scales):
        raise ValueError(f"--keep {max(args.keep)}: keep fewer than the generator's {len(model.scales)} scales")
    gen = Pipeline.from_pretrained(args.generator)
    path = write_token_draws(gen, args.tokens, args.out, seeds=seeds, draws=args.draws, seed=args.seed, keep=args.keep)
    rows = len(args.keep) if args.keep else args.draws
    print(f"wrote {path}: {rows} draws for each of {len(seeds) if seeds else 'all the'} objects")


def _cmd_tutorials(args) -> None:
    from .tutorials import run_all

    times = run_all(Path(args.out), fast=args.fast, only=args.only)
    print(f"{len(times)} tutorials executed in {sum(times.values()):.0f} s; HTML in {args.out}/")


# ------------------------------------------------------------------------------ evaluation
def _read_clouds(path: str, name: str):
    """``points (N, P, 3)`` from an .npz file, checked with numpy only (errors before torch loads)."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} {path}: no such file (expected an .npz holding `points` of shape (N, P, 3))")
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle a file a user hands over
            arrays = {k: npz[k] for k in npz.files if k == "points"}
            names = npz.files
    except (OSError, ValueError, EOFError, TypeError, AttributeError, zipfile.BadZipFile):  # TypeError: an .npy
        raise ValueError(f"{name} {path} is not a readable .npz archive") from None
    if "points" not in arrays:
        raise ValueError(f"{name} {path} holds no array `points` (it holds: {', '.join(names) or 'nothing'})")
    points = arrays["points"]
    if points.ndim != 3 or points.shape[-1] != 3 or 0 in points.shape:
        raise ValueError(f"{name} {path}: `points` has shape {points.shape}, expected (N, P, 3) with N, P >= 1")
    if not np.issubdtype(points.dtype, np.number) or not np.isfinite(points).all():
        raise ValueError(f"{name} {path}: `points` must be finite numbers")
    return points


def _cmd_eval_points(args) -> None:
    gen, ref = _read_clouds(args.gen, "GEN"), _read_clouds(args.ref, "REF")
    if not args.no_emd and gen.shape[1] != ref.shape[1]:
        raise ValueError(f"GEN has {gen.shape[1]} points per cloud and REF {ref.shape[1]}: EMD is a bijection and "
                         "needs equal counts (resample both, or pass --no-emd for Chamfer only)")
    if args.emd_points < 1:
        raise ValueError(f"--emd-points {args.emd_points} must be at least 1")
    from .metrics import format_point_cloud_table, point_cloud_metrics

    result = point_cloud_metrics(gen, ref, normalize=None if args.normalize == "none" else args.normalize,
                                 emd=not args.no_emd, emd_max_points=args.emd_points, seed=args.seed,
                                 progress=sys.stderr.isatty())
    print(format_point_cloud_table({f"{Path(args.gen).name} vs {Path(args.ref).name}": result}))
    if args.json:
        Path(args.json).write_text(json.dumps({"gen": str(args.gen), "ref": str(args.ref), **result}, indent=1))
        print(f"wrote {args.json}")


def _read_image_set(folder: str, name: str, size: int):
    """``(N, 3, size, size)`` float RGB on white: a built data set / chunk / G-Objaverse folder
    (the target views of every object) or a folder of images (alpha composited on white,
    padded with white to a square, resized)."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{name} {path}: no such folder (expected a folder of PNG images or a data set folder)")
    import numpy as np
    import torch
    from PIL import Image

    from .data import MultiViewDataset

    try:
        dataset = MultiViewDataset(path, size=size)
    except FileNotFoundError:  # not a data set: a folder of images
        dataset = None
    if dataset is not None:
        return torch.cat([dataset[i]["target_rgb"] for i in range(len(dataset))]), f"{len(dataset)} objects x 6 target views"
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{name} {path} holds no PNG/JPEG images and is not a data set folder")
    images = []
    for file in files:
        try:
            im = Image.open(file)
            im.load()
        except OSError as err:
            raise ValueError(f"{name} {file} is not a readable image ({err})") from None
        rgba = im.convert("RGBA")  # RGB gets alpha 255; palette / LA transparency becomes alpha
        square = Image.new("RGBA", (max(rgba.size),) * 2, (255, 255, 255, 255))
        square.alpha_composite(rgba, ((square.width - rgba.width) // 2, (square.height - rgba.height) // 2))
        rgb = square.convert("RGB").resize((size, size), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(images), f"{len(files)} images"


def _cmd_eval_images(args) -> None:
    import warnings

    if args.size < 16:
        raise ValueError(f"--size {args.size} must be at least 16 pixels")
    if args.inception and not Path(args.inception).is_file():
        raise FileNotFoundError(f"--inception {args.inception}: no such file (pytorch-fid's "
                                "pt_inception-2015-12-05-6726825d.pth)")
    gen, gen_what = _read_image_set(args.gen, "GEN", args.size)
    ref, ref_what = _read_image_set(args.ref, "REF", args.size)
    for name, x in (("GEN", gen), ("REF", ref)):
        if len(x) < 2:
            raise ValueError(f"{name} has {len(x)} image: FID and KID need at least 2 per set")
    from .metrics import fid_from_features, inception_features, kid_from_features

    progress = sys.stderr.isatty()
    if args.inception:
        network = "inception-v3-fid (pytorch-fid weights)"
        f_gen, f_ref = (inception_features(x, weights_path=args.inception, progress=progress) for x in (gen, ref))
        note = "comparable with published FID/KID only if the reference set and image protocol match too"
    else:
        from .featnet import FeatureNet, load_default

        net = FeatureNet.from_pretrained(args.featnet) if args.featnet else load_default()
        network = net.name
        f_gen, f_ref = net.features(gen), net.features(ref)
        note = "offline feature network: compares runs of this project, never the paper's Inception numbers"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's "singular matrix" from sqrtm: said below in words
        fid = fid_from_features(f_gen, f_ref, feature_network=network)
    kid = kid_from_features(f_gen, f_ref, num_subsets=args.kid_subsets, subset_size=args.kid_subset_size,
                            seed=args.seed, feature_network=network)
    print(f"GEN {args.gen}: {gen_what}; REF {args.ref}: {ref_what}; {args.size} px")
    print(f"FID {fid['FID']:.3f}   KID {kid['KID']:.5f} +- {kid['KID-std']:.5f} "
          f"(x100: {100 * kid['KID']:.3f} %; {kid['num_subsets']} subsets of {kid['subset_size']})")
    print(f"feature network: {network} ({note})")
    if min(len(f_gen), len(f_ref)) <= f_gen.shape[1]:
        print(f"note: {min(len(f_gen), len(f_ref))} images for {f_gen.shape[1]} feature dimensions: the covariances are "
              "singular and FID is biased upward; compare FIDs only at equal set sizes (KID is unbiased)")
    if args.json:
        Path(args.json).write_text(json.dumps({"gen": str(args.gen), "ref": str(args.ref), "size": args.size,
                                               "num_images": [len(gen), len(ref)], **fid, **kid}, indent=1))
        print(f"wrote {args.json}")


def _cmd_eval_table1(args) -> None:
    import torch

    from . import ar_eval

    torch.set_num_threads(args.threads)
    settings = dict(ar_eval.TABLE1_FAST) if args.fast else {}
    result = ar_eval.table1(args.data, args.limit, seed=args.seed, **settings)
    print(ar_eval.format_table1(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


def _cmd_train_featnet(args) -> None:
    from .featnet import main as train_main

    options = {"--out": args.out, "--objects": args.objects, "--views": args.views, "--epochs": args.epochs,
               "--seed": args.seed, "--batch-size": args.batch_size, "--eval-count": args.eval_count,
               "--layout-from": args.layout_from, "--threads": args.threads}
    # only what was given: the defaults stay those of sar3d_core.featnet
    train_main([str(a) for k, v in options.items() if v is not None for a in (k, v)])


def _cmd_train_vqvae(args) -> None:
    import torch

    from .config import SAR3DConfig
    from .data import default_cache_dir
    from .training import TrainConfig
    from .vqvae_train import objective_preset, train_vqvae
    from .world import build_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = SAR3DConfig.paper() if args.preset == "paper" else SAR3DConfig.tiny()
    if args.extra:
        try:
            extra = json.loads(args.extra)
        except json.JSONDecodeError as err:
            raise ValueError(f"--extra is not valid JSON ({err}): give a dict such as "
                             '\'{"triplane": {"colour_channels": 8}}\'')
        if not isinstance(extra, dict):
            raise ValueError(f"--extra must be a JSON dict of component settings, got {type(extra).__name__}")
        # merged one level deep: '{"encoder": {"lift_resolution": 0}}' changes that one option of the preset
        cfg.extra = {k: ({**cfg.extra.get(k, {}), **v} if isinstance(v, dict) else v)
                     for k, v in {**cfg.extra, **extra}.items()}
    if args.single_scale:
        from .vqvae_train import single_scale_config

        cfg = single_scale_config(cfg)
    data = Path(args.data) if args.data else default_cache_dir() / f"proc_train_{cfg.image_size}"
    if not args.data and not (data / "index.json").is_file():
        print(f"building the training set: {args.objects} procedural objects at {cfg.image_size} px in {data}")
        build_dataset(data, args.objects, size=cfg.image_size, split="train", workers=os.cpu_count() or 1)
    given = {"rays": args.rays, "gan_start": args.gan_start, "colour_weight": args.colour_weight,
             "readout_weight": args.readout_weight, "object_ray_share": args.object_ray_share,
             "occupancy_weight": 0.0 if args.no_occupancy else None, "supersample": args.supersample}
    settings = objective_preset(args.preset, **{k: v for k, v in given.items() if v is not None})
    train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            out_dir=args.out, ckpt_every=args.ckpt_every, device=args.device,
                            lr_decay_from=args.lr_decay_from, lr_final=args.lr_final, cpu_bf16=args.bf16_cpu)
    train_vqvae(data, cfg, train_cfg, settings, resume=args.resume, export=args.export, init=args.init,
                decoder_only=args.decoder_only, encoder_only=args.encoder_only, token_draws=args.token_draws,
                token_draw_share=args.token_draw_share)
    if args.export:
        print(f"exported the VQVAE to {args.export}")


def _cmd_train_ar(args) -> None:
    import dataclasses

    import torch

    from .ar_train import train_ar
    from .conditioning import load_condition_encoder
    from .training import TrainConfig
    from .transformer import TransformerSettings

    from .tokens import load_tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    written_by = load_tokens(args.tokens)["checkpoint"]  # a missing or corrupt file fails here, before any model
    if not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data}: no such folder (the data set the tokens were made from)")
    if args.init:  # before any model loads
        from .ar_train import load_generator

        load_generator(args.init)
    vqvae_folder = args.vqvae
    if vqvae_folder is None:  # default: the VQVAE that wrote the token file, when it is here
        from .generate import find_vqvae

        try:
            vqvae_folder = find_vqvae(written_by) if written_by else None
        except FileNotFoundError:
            vqvae_folder = None
    vqvae, _ = _load_vqvae(vqvae_folder)
    encoder = load_condition_encoder(args.encoder)
    settings = TransformerSettings.from_config(vqvae.cfg, args.cond)
    sizes = {k: v for k, v in (("depth", args.depth), ("width", args.width), ("num_heads", args.heads)) if v}
    settings = dataclasses.replace(settings, **sizes) if sizes or not args.init else None  # --init: its own
    train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            out_dir=args.out, ckpt_every=args.ckpt_every, device=args.device,
                            weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                            lr_decay_from=args.lr_decay_from, lr_final=args.lr_final)
    train_ar(args.tokens, args.data, vqvae, encoder, args.cond, train_cfg, next_token=args.next_token,
             settings=settings, resume=args.resume, export=args.export, prompt_forms=not args.captions_only,
             init=args.init)
    if args.export:
        print(f"exported the generator to {args.export}")


def _cmd_train_flexicubes(args) -> None:
    import torch

    from .flexicubes_train import FlexiCubesSettings, train_flexicubes
    from .training import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.data).expanduser().exists():
        raise FileNotFoundError(f"--data {args.data}: no such folder (build it with `sar3d data build`)")
    given = {"resolution": args.resolution, "rays": args.rays, "sdf": args.sdf_weight, "normal": args.normal_weight,
             "reg": args.reg_weight}
    settings = FlexiCubesSettings(**{k: v for k, v in given.items() if v is not None})
    train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            out_dir=args.out, ckpt_every=args.ckpt_every, device=args.device)
    options = {k: getattr(args, k.lstrip("-").replace("-", "_")) for k in (
        "--init", "--data", "--steps", "--batch-size", "--lr", "--resolution", "--rays", "--sdf-weight",
        "--normal-weight", "--reg-weight", "--seed",
        "--out", "--ckpt-every", "--export", "--device", "--threads")}
    command = " ".join(["sar3d train flexicubes"] + [f"{k} {v}" for k, v in options.items() if v is not None]
                       + (["--resume"] if args.resume else []))  # recorded in the export's training.json
    train_flexicubes(args.init, Path(args.data).expanduser(), train_cfg, export=args.export, settings=settings,
                     resume=args.resume, command=command)
    if args.export:
        print(f"exported the FlexiCubes decoder to {args.export}")


CONDITION_MODES = ("RGB", "RGBA", "P", "PA")  # PIL modes of a colour image (P: a palette of RGB colours)
MIN_CONDITION_SIDE, MAX_CONDITION_ASPECT = 32, 2.0


def _check_condition_image(path, mode: str, w: int, h: int) -> None:
    """A condition image for ``generate --image``: colour (RGB, or RGBA composited on white), at least
    ``MIN_CONDITION_SIDE`` pixels a side and no more than ``MAX_CONDITION_ASPECT`` times wider than tall
    (or taller than wide). The generators learned from square colour renders of one object; the
    library's ``encode_image`` takes any array, but a file a person passes is checked first."""
    if mode not in CONDITION_MODES:
        raise ValueError(f"--image {path} has PIL mode {mode}, not RGB or RGBA: give a colour image (RGB, or RGBA on "
                         f"white), e.g. convert it with PIL's Image.convert('RGB')")
    if min(w, h) < MIN_CONDITION_SIDE or max(w, h) > MAX_CONDITION_ASPECT * min(w, h):
        raise ValueError(f"--image {path} is {w} x {h} pixels: give a view of the object at least "
                         f"{MIN_CONDITION_SIDE} pixels a side and roughly square (at most {MAX_CONDITION_ASPECT:g}:1; "
                         f"it is padded with white to a square), e.g. a crop around the object")


def _cmd_generate(args) -> None:
    import torch

    from .cameras import orbit_cameras
    from .generate import DEFAULT_IMAGE, DEFAULT_TEXT, Pipeline
    from .render import save_mesh

    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.text is None) == (args.image is None):
        raise ValueError("give --text PROMPT or --image FILE (one of the two)")
    if args.image is None and (args.candidates or args.refine_from or args.fit_steps):
        raise ValueError("--candidates, --refine-from and --fit-steps work with a condition image: use them with --image")
    if args.refine_from == 1:
        raise ValueError("--refine-from K keeps scales 1..K-1 and draws the rest again: K is at least 2 (0: off)")
    from .generate import IMAGE_SAMPLING, TEXT_SAMPLING

    shipped = IMAGE_SAMPLING if args.image is not None else TEXT_SAMPLING
    sampling = {k: shipped.get(k) if getattr(args, k) is None else getattr(args, k)
                for k in ("cfg", "cfg_schedule", "candidates", "refine_from", "fit_steps")}
    if sampling["candidates"] == 1 or not sampling["refine_from"]:
        sampling["refine_from"] = None
    ckpt = args.checkpoint or (DEFAULT_TEXT if args.text is not None else DEFAULT_IMAGE)
    if args.image is not None:
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"{args.image}: no such image")
        from PIL import Image

        try:  # before the models load
            with Image.open(args.image) as im:
                im.verify()
            with Image.open(args.image) as im:  # verify() leaves the file unusable: open it again
                mode, (w, h) = im.mode, im.size
        except Exception as err:  # PIL raises many kinds on a damaged file
            raise ValueError(f"--image {args.image} is not a readable PNG/JPEG image "
                             f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
        _check_condition_image(args.image, mode, w, h)
    out = _check_mesh_out(args.out, "--out")
    _check_flexicubes_option(args)
    gen = Pipeline.from_pretrained(ckpt, args.vqvae)
    cams = orbit_cameras([45.0 * v for v in range(8)], [20.0] * 8) if args.views else None
    res = gen.generate(text=args.text, image=args.image, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                       cameras=cams, mesh=True, mesh_resolution=args.mesh_resolution, mesher=args.mesher,
                       flexicubes=args.flexicubes, **sampling)
    mesh = res.meshes[0]
    if mesh is None:
        raise ValueError("the sampled object has no surface (try another --seed or a larger --cfg)")
    save_mesh(mesh, out)  # .glb: stored +Y up, as glTF says (render.load_mesh reads it back +Z up)
    best = (f"; best of {sampling['candidates']} by agreement with the condition view"
            + (f", then {sampling['candidates']} more from scale {sampling['refine_from']}" if sampling["refine_from"] else "")
            if sampling["candidates"] > 1 else "")
    best += f"; then fitted to the condition view for {sampling['fit_steps']} steps" if sampling["fit_steps"] else ""
    print(f"wrote {out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces ({res.mesher}); generator "
          f"{res.model}, condition encoder {gen.encoder.name}; CFG {sampling['cfg']:g} "
          f"({sampling['cfg_schedule']}){best}")
    if args.views:
        import numpy as np
        from PIL import Image

        row = res.views["rgb"][0].clamp(0, 1).permute(2, 0, 3, 1).flatten(1, 2)  # (H, V*W, 3)
        Path(args.views).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((row.numpy() * 255).round().astype(np.uint8)).save(args.views)
        print(f"wrote {args.views}: {res.views['rgb'].shape[1]} views around the object")
    print("time: " + res.timing_line())


def _cmd_bench_metrics(args) -> None:
    import torch

    from .metrics import benchmark_point_cloud_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    benchmark_point_cloud_metrics(args.num, args.points)


def _cmd_bench_sampling(args) -> None:
    import torch

    from .generate import DEFAULT_NEXT_TOKEN, DEFAULT_TEXT, Pipeline, benchmark_sampling

    if args.threads:
        torch.set_num_threads(args.threads)
    ns = Pipeline.from_pretrained(args.checkpoint or DEFAULT_TEXT, args.vqvae)
    nt = None if args.no_next_token else Pipeline.from_pretrained(args.next_token_checkpoint or DEFAULT_NEXT_TOKEN,
                                                                   args.next_token_vqvae)
    r = benchmark_sampling(ns, nt, prompt=args.prompt, repeats=args.repeats, cfg=args.cfg)
    r["next_scale_generator"], r["next_token_generator"] = ns.name, (nt.name if nt else None)
    print(f"sampling one object with CFG {args.cfg} on {r['threads']} threads (median of {args.repeats}):")
    print(f"  next-scale  {r['next_scale_tokens']} tokens in {r['next_scale_passes']} passes: "
          f"{1000 * r['next_scale_s']:.1f} ms")
    if nt is not None:
        print(f"  next-token  {r['next_token_tokens']} tokens in {r['next_token_tokens']} passes: "
              f"{1000 * r['next_token_s']:.1f} ms  -> next-scale is {r['speedup']:.1f}x faster")
    print(f"  one teacher-forced forward over the sequence (CFG batch 2): {1000 * r['teacher_forced_s']:.1f} ms "
          f"-> sampling / forward = {r['sampling_over_forward']:.2f}")
    passes = ", ".join(f"{n}: {v:.1f}" for n, v in zip(r["next_scale_pass_tokens"], r["next_scale_pass_ms"]))
    print(f"  next-scale passes, new tokens: ms  {passes}  (about {r['pass_fixed_ms']:.1f} ms a pass "
          f"+ {r['pass_ms_per_token']:.3f} ms a token)")
    if nt is not None:
        print(f"  next-token passes: {r['next_token_pass_ms']:.2f} ms each (median)")
        print(f"  speed-up the passes allow: {r['pass_count_ratio']:.0f}x the passes x {r['pass_cost_ratio']:.2f} the "
              f"cost of a pass = {r['speedup_bound']:.1f}x; measured {r['speedup']:.1f}x (the rest: work outside "
              f"the passes, paid per step)")
    stages = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in r["end_to_end_stages_s"].items())
    print(f"  text -> mesh end to end: {1000 * r['end_to_end_s']:.0f} ms median ({stages})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2))
        print(f"wrote {args.json}")


# ------------------------------------------------------------------------------ SAR3D-LLM (Sec. 4.3)
def _captioner_folder(folder):
    from .captioner import DEFAULT_CHECKPOINT

    return Path(folder) if folder else DEFAULT_CHECKPOINT


def _cmd_caption(args) -> None:
    import torch

    from .captioner import SAR3DCaptioner, input_sequences

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = _captioner_folder(args.checkpoint)
    K = len(SAR3DCaptioner.read_config(folder)["schedule"])  # a bad --scales fails before any model loads
    if args.scales is not None and not 1 <= args.scales <= K:
        raise ValueError(f"--scales {args.scales} must be between 1 and {K}, the scales of the captioner's tokens")
    captioner = SAR3DCaptioner.from_pretrained(folder)
    sequences, _ = input_sequences(captioner, args.inputs, args.vqvae, args.up)
    captions = captioner.caption(sequences, keep=args.scales, greedy=not args.sample, temperature=args.temperature,
                                 top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                                 max_new_tokens=args.max_new_tokens)
    for text in captions:
        print(" ".join(text.split()))  # one line per input


def _cmd_train_captioner(args) -> None:
    import torch

    from .captioner import CaptionerSettings, StageSettings, train_captioner
    from .tokens import load_tokens
    from .training import TrainConfig, is_main_process

    if args.threads:
        torch.set_num_threads(args.threads)
    written_by = load_tokens(args.tokens)["checkpoint"]  # a missing or corrupt file fails here, before any model
    if args.data and not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data}: no such folder (the data set the tokens were made from)")
    vqvae_folder = args.vqvae
    if vqvae_folder is None and written_by:  # default: the VQVAE that wrote the token file, when it is here
        from .generate import find_vqvae

        try:
            vqvae_folder = find_vqvae(written_by)
        except FileNotFoundError:
            vqvae_folder = None
    vqvae, checkpoint = _load_vqvae(vqvae_folder)
    base = StageSettings.paper() if args.preset == "paper" else StageSettings()
    steps = tuple(args.steps) if args.steps else ((0,) + base.steps[1:] if args.llm else base.steps)
    stages = StageSettings(steps=steps, lr=tuple(args.lr) if args.lr else base.lr, warmup=base.warmup,
                           colour_weight=args.colour_word_weight, twin_weight=args.twin_weight)
    settings = CaptionerSettings(width=args.width, layers=args.layers, heads=args.heads,
                                 intermediate=args.intermediate or int(8 * args.width / 3) // 8 * 8, keep=args.keep,
                                 position_embedding=args.position_embedding, fhat_input=args.fhat_input)
    train_cfg = TrainConfig(steps=max(max(steps), 1), batch_size=args.batch_size, seed=args.seed, out_dir=args.out,
                            ckpt_every=args.ckpt_every, device=args.device)
    train_captioner(args.tokens, vqvae, train_cfg, args.data, settings, stages, llm=args.llm, resume=args.resume,
                    export=args.export, vqvae_checkpoint=checkpoint, init=args.init)
    if args.export and is_main_process():
        print(f"exported the captioner to {args.export}")


def _cmd_eval_captions(args) -> None:
    import torch

    from .caption_eval import evaluate_captioner, format_report
    from .captioner import SAR3DCaptioner
    from .config import SAR3DConfig
    from .tokens import load_tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    import importlib.util

    missing = [m for m in ("sacrebleu", "rouge_score") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"BLEU-4 and ROUGE-L need {' and '.join(missing)}: pip install sacrebleu rouge-score")
    load_tokens(args.tokens)  # a missing or corrupt file fails here, before the model loads
    captioner = SAR3DCaptioner.from_pretrained(_captioner_folder(args.checkpoint))
    loaded = load_tokens(args.tokens, SAR3DConfig.from_dict(captioner.meta["vqvae_config"]))
    captioner.check_fingerprint(loaded["vqvae_fingerprint"], f"the tokens of {args.tokens}")
    result = evaluate_captioner(captioner, loaded, args.limit, ablation=not args.no_ablation, blind=not args.no_blind,
                                batch_size=args.batch_size, progress=sys.stderr.isatty())
    result["tokens"] = str(args.tokens)
    print(format_report(result))
    for ex in result["examples"][:3]:
        print(f"  reference: {ex['reference']}\n  caption:   {ex['caption']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sar3d", description="SAR3D step by step: data, models and tutorials.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="render an object to a grid of views")
    p.add_argument("input", help="proc:<seed>, a mesh file, a chunk folder or a G-Objaverse object folder")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--views", type=_int_at_least(1), default=6, help="number of views (default 6)")
    p.add_argument("--size", type=_int_at_least(1), default=128, help="image size in pixels (default 128)")
    p.add_argument("--depth", action="store_true", help="add a row of depth maps")
    p.add_argument("--up", choices=["z", "y"], default="z", help=UP_HELP)
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("data", help="data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser("build", help="render a procedural data set into a cache folder")
    b.add_argument("--count", type=_int_at_least(1), required=True, help="number of objects (at least 1)")
    b.add_argument("--out", default=None, help="output folder (default: the cache folder)")
    b.add_argument("--size", type=_int_at_least(1), default=64, help="image size (default 64)")
    b.add_argument("--split", default="train", choices=["train", "val", "test"])
    b.add_argument("--start", type=_int_at_least(0), default=0, help="skip the first START objects of the split")
    b.add_argument("--workers", type=_int_at_least(1), default=os.cpu_count() or 1,
                   help="rendering processes, one torch thread each (default: one per CPU core)")
    b.set_defaults(func=_cmd_data_build)

    b = data_sub.add_parser("check", help="multi-view consistency of an object's depth, masks and cameras")
    b.add_argument("input", help="proc:<seed>, a chunk folder, a G-Objaverse object folder or a mesh file")
    b.add_argument("--views", type=_int_at_least(1), default=12, help="views to use (default 12, or all there are)")
    b.add_argument("--size", type=_int_at_least(1), default=None, help="resize to this size first (default: as stored)")
    b.add_argument("--tol-px", type=_int_at_least(0), default=2, help="mask tolerance in pixels (default 2)")
    b.add_argument("--up", choices=["z", "y"], default="z", help=UP_HELP)
    b.set_defaults(func=_cmd_data_check)

    b = data_sub.add_parser("tokenize", help="precompute the VQVAE tokens of a data set (the AR stage trains on them)")
    b.add_argument("data", help="a built data set folder, a chunk folder or a folder of chunks")
    b.add_argument("--out", required=True, help="output token file (.npz)")
    b.add_argument("--checkpoint", default=None, help="VQVAE checkpoint folder (default: the shipped tiny one)")
    b.add_argument("--batch-size", type=_int_at_least(1), default=16)
    b.add_argument("--refine-steps", type=_int_at_least(0), default=0, help=REFINE_HELP)
    b.add_argument("--refine-rays", type=_int_at_least(1), default=2048,
                   help="with --refine-steps: rays rendered per object and step (default 2048)")
    b.add_argument("--limit", type=_int_at_least(1), default=None, help="tokenize the first N objects only")
    b.set_defaults(func=_cmd_data_tokenize)

    b = data_sub.add_parser("token-draws", help="teacher-forced draws of a text generator on a token file (training "
                                                "data of a decoder that reads generated tokens)")
    b.add_argument("--generator", required=True, help="the next-scale text generator folder that draws")
    b.add_argument("--tokens", required=True, help="the objects' true tokens (sar3d data tokenize), the generator's VQVAE")
    b.add_argument("--data", default=None, help="draw for this built data set's objects only (default: every object "
                                                "of --tokens)")
    b.add_argument("--out", required=True, help="output token file (.npz), --draws rows per object")
    b.add_argument("--draws", type=_int_at_least(1), default=2)
    b.add_argument("--keep", type=_int_at_least(1), nargs="+", default=None, metavar="K",
                   help="instead of teacher-forced draws: one free sample per K given the object's true first K "
                        "scales (e.g. --keep 3 4)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_cmd_data_token_draws)

    p = sub.add_parser("encode", help="encode one object to multi-scale tokens (.npz)")
    p.add_argument("input", help="proc:<seed>, a mesh file, a chunk folder or a G-Objaverse object folder")
    p.add_argument("--out", required=True, help="output token file (.npz)")
    p.add_argument("--checkpoint", default=None, help="VQVAE checkpoint folder (default: the shipped tiny one)")
    p.add_argument("--up", choices=["z", "y"], default="z", help=UP_HELP)
    p.add_argument("--refine-steps", type=_int_at_least(0), default=0, help=REFINE_HELP)
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("decode", help="decode a token file to a grid of rendered views and/or a mesh")
    p.add_argument("tokens", help="a token file from `sar3d encode` or `sar3d data tokenize`")
    p.add_argument("--out", default=None, help="output PNG of the rendered views")
    p.add_argument("--mesh", default=None, help="also (or only) write the decoded surface as a mesh (.glb, .obj, .ply)")
    p.add_argument("--mesher", choices=["marching-cubes", "flexicubes"], default=None, help=MESHER_HELP)
    p.add_argument("--flexicubes", default=None, help=FLEXICUBES_HELP)
    p.add_argument("--mesh-resolution", type=_int_at_least(2), default=None,
                   help="mesh grid cells per side of the object box (at least 2; default 48, or the grid a "
                        "FlexiCubes fine-tune was trained on)")
    p.add_argument("--index", type=int, default=0, help="which object of the file (default 0)")
    p.add_argument("--scales", type=_int_at_least(1), default=None, help="decode only the first k scales (default all)")
    p.add_argument("--views", type=_int_at_least(1), default=6, help="orbit views (default 6)")
    p.add_argument("--size", type=_int_at_least(1), default=None, help="image size (default: the model's)")
    p.add_argument("--checkpoint", default=None, help="VQVAE checkpoint folder (default: the shipped tiny one)")
    p.set_defaults(func=_cmd_decode)

    p = sub.add_parser("tutorials", help="execute the tutorials with papermill into a folder, with HTML")
    p.add_argument("--out", default="build", help="output folder (default build/)")
    p.add_argument("--fast", action="store_true", help="the shrunken CI version of every notebook")
    p.add_argument("--only", default=None, help="run only notebooks whose name contains this")
    p.set_defaults(func=_cmd_tutorials)

    p = sub.add_parser("eval", help="evaluation metrics of the paper's Table 1 (Sec. 5.1)")
    eval_sub = p.add_subparsers(dest="eval_command", required=True)
    e = eval_sub.add_parser("points", help="COV, MMD and 1-NNA (Chamfer and EMD) of generated vs reference point clouds")
    e.add_argument("gen", help="GEN.npz holding `points` (N, P, 3): the generated shapes")
    e.add_argument("ref", help="REF.npz holding `points` (M, P, 3): the reference shapes")
    e.add_argument("--no-emd", action="store_true", help="Chamfer only (EMD costs about 0.15 s per pair at 1024 points)")
    e.add_argument("--emd-points", type=_int_at_least(1), default=1024,
                   help="EMD is exact up to this many points, else on a seeded random subset of them (default 1024)")
    e.add_argument("--normalize", default="bbox_unit_cube", choices=["bbox_unit_cube", "none"],
                   help="per-shape normalisation before the distances (default bbox_unit_cube)")
    e.add_argument("--seed", type=int, default=0, help="seed of the EMD subset (default 0)")
    e.add_argument("--json", default=None, metavar="OUT", help="also write the raw metrics to this JSON file")
    e.set_defaults(func=_cmd_eval_points)

    e = eval_sub.add_parser("images", help="FID and KID of generated vs reference renders")
    e.add_argument("gen", help="a folder of PNG images (RGBA composited on white) or a data set / chunk folder")
    e.add_argument("ref", help="the same for the reference set (data sets give their 6 target views per object)")
    e.add_argument("--inception", default=None, metavar="PATH",
                   help="pytorch-fid's Inception weights file: use Inception-V3 (as the paper) instead of "
                        "the shipped offline feature network")
    e.add_argument("--featnet", default=None, metavar="FOLDER",
                   help="a feature network checkpoint folder (default: the shipped data_samples/feature_net)")
    e.add_argument("--size", type=int, default=64, help="images are resized to this size first (default 64)")
    e.add_argument("--kid-subsets", type=_int_at_least(1), default=100, help="KID subsets (default 100)")
    e.add_argument("--kid-subset-size", type=_int_at_least(2), default=1000,
                   help="KID subset size, at least 2, clipped to the sets (default 1000)")
    e.add_argument("--seed", type=int, default=0, help="seed of the KID subsets (default 0)")
    e.add_argument("--json", default=None, metavar="OUT", help="also write the raw metrics to this JSON file")
    e.set_defaults(func=_cmd_eval_images)

    e = eval_sub.add_parser("captions", help="SAR3D-LLM captions: category / colour accuracy, BLEU-4, ROUGE-L, "
                                             "the scales ablation and a blind baseline")
    e.add_argument("tokens", help="token file of the objects to caption (e.g. the test split, sar3d data tokenize)")
    e.add_argument("--checkpoint", default=None, help="captioner folder (default: the shipped tiny one)")
    e.add_argument("--limit", type=_int_at_least(1), default=None, help="first N objects only")
    e.add_argument("--no-ablation", action="store_true", help="skip feeding 1..K scales")
    e.add_argument("--no-blind", action="store_true", help="skip the baseline with the 3D tokens zeroed")
    e.add_argument("--batch-size", type=_int_at_least(1), default=64)
    e.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads")
    e.add_argument("--json", default=None, metavar="OUT", help="also write the numbers to this JSON file")
    e.set_defaults(func=_cmd_eval_captions)

    e = eval_sub.add_parser("table1", help="the paper's Table 1 at toy scale, every row live from the shipped "
                                           "checkpoints, with bootstrap 95%% intervals")
    e.add_argument("--data", required=True, help="the built test split (sar3d data build --split test --count 100)")
    e.add_argument("--limit", type=_int_at_least(1), default=100, help="first N test objects, halved into "
                   "conditions and references (default 100; at least 8)")
    e.add_argument("--fast", action="store_true", help="100 bootstrap resamples and EMD on 64 points "
                   "(default 1000 and 256)")
    e.add_argument("--seed", type=int, default=0, help="seed of the halves, the samples and the resamples")
    e.add_argument("--threads", type=_int_at_least(1), default=1,
                   help="torch CPU threads (default 1; latency is measured with them)")
    e.add_argument("--json", default=None, metavar="OUT", help="also write the table to this JSON file")
    e.set_defaults(func=_cmd_eval_table1)

    p = sub.add_parser("train", help="train a model")
    train_sub = p.add_subparsers(dest="train_command", required=True)
    for (group, name), (module, what) in DELEGATED.items():  # listed here; main() runs them
        (eval_sub if group == "eval" else train_sub).add_parser(name, help=f"{what} (python -m sar3d_core.{module})")
    t = train_sub.add_parser("featnet", help="the offline feature network for FID/KID and attribute accuracy",
                             description="Train the offline feature network, as python -m sar3d_core.featnet "
                                         "(same options; an option left out takes that module's default).")
    # the options of sar3d_core.featnet.main (tests/test_eval_cli.py checks they match)
    t.add_argument("--out", help="checkpoint folder (default: the shipped data_samples/feature_net)")
    t.add_argument("--objects", type=_int_at_least(1), help="train- and val-split objects to render")
    t.add_argument("--views", type=_int_at_least(1), help="random views per object")
    t.add_argument("--epochs", type=_int_at_least(1), help="training epochs")
    t.add_argument("--seed", type=int, help="seed of the renders, the initialisation and the batches")
    t.add_argument("--batch-size", type=_int_at_least(1), help="renders per step")
    t.add_argument("--eval-count", type=_int_at_least(1), help="test-split objects for the held-out accuracy")
    t.add_argument("--layout-from", metavar="FOLDER",
                   help="a trained v1 network: keep it frozen and train a layout branch for its colour heads (v1.1)")
    t.add_argument("--threads", type=_int_at_least(1),
                   help="torch CPU threads (the SDF renderer is fastest on one thread on a busy 2-core machine)")
    t.set_defaults(func=_cmd_train_featnet)

    t = train_sub.add_parser("vqvae", help="the multi-scale 3D VQVAE (Sec. 4.1, Eq. 8)",
                             description="Train the 3D VQVAE with the project's training loop; works unchanged "
                                         "under torchrun --nproc_per_node=N (DDP).")
    t.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    t.add_argument("--data", default=None, help="a built data set folder or chunk folders (default: the cache "
                                                "folder proc_train_<size>, built with --objects objects if missing)")
    t.add_argument("--objects", type=int, default=2400, help="objects to build when --data is not given")
    t.add_argument("--steps", type=int, default=1800)
    t.add_argument("--batch-size", type=int, default=8, help="objects per step and process")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-decay-from", type=float, default=1.0,
                   help="fraction of the steps after which the learning rate falls linearly (default 1: constant)")
    t.add_argument("--lr-final", type=float, default=1.0,
                   help="the learning rate at the last step, as a multiple of --lr (default 1)")
    t.add_argument("--rays", type=int, default=512, help="random rays per object besides one 32x32 patch")
    t.add_argument("--gan-start", type=int, default=1200, help="step from which the PatchGAN term is on")
    t.add_argument("--no-occupancy", action="store_true", help="turn off the exact-occupancy 3D training aid")
    t.add_argument("--bf16-cpu", action="store_true",
                   help="bf16 autocast on the CPU as well (float32 by default; on CUDA bf16 is always on). "
                        "Faster on CPUs with AMX or AVX512-BF16; the weights stay float32")
    t.add_argument("--supersample", type=int, default=None,
                   help="render each supervised pixel as the mean of N x N sub-pixel rays, as the targets were "
                        "rendered (default: the preset's, 1)")
    t.add_argument("--colour-weight", type=float, default=None,
                   help="weight of the exact-colour 3D training aid (0 turns it off; default: the preset's)")
    t.add_argument("--readout-weight", type=float, default=None,
                   help="weight of the colour readout of the quantized latent (0 turns it off; default: the preset's)")
    t.add_argument("--object-ray-share", type=float, default=None,
                   help="share of the random rays drawn on and near the object (default: the preset's)")
    t.add_argument("--extra", default=None,
                   help='component settings as JSON, merged into the preset\'s extra option by option, e.g. '
                        '\'{"encoder": {"lift_resolution": 0}}\' (for ablations; the presets need none)')
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/vqvae_tiny", help="run folder (checkpoints, log.jsonl, loss.png)")
    t.add_argument("--ckpt-every", type=int, default=200)
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.add_argument("--export", default=None, help="write the trained VQVAE here (save_pretrained)")
    t.add_argument("--init", default=None, help="start from this VQVAE checkpoint folder")
    t.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the decoder and field only; the encoder and codebook stay frozen, so "
                        "the result keeps --init's tokens and fingerprint (every generator still reads it)")
    t.add_argument("--encoder-only", action="store_true",
                   help="with --init: train the encoder only; the codebook, decoder and field stay frozen (a "
                        "diagnostic: new tokens, which the shipped generators do not read)")
    t.add_argument("--token-draws", default=None, metavar="FILE",
                   help="with --decoder-only: a file of `sar3d data token-draws`; a share of the objects decode one "
                        "of their generator-drawn token maps instead of their encoding")
    t.add_argument("--token-draw-share", type=_float_in(0, 1, low_open=True), default=0.5,
                   help="with --token-draws: the share of the objects that read a draw (default 0.5)")
    t.add_argument("--single-scale", action="store_true",
                   help="one scale at the latent size: the VQVAE of the next-token baseline")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.set_defaults(func=_cmd_train_vqvae)

    t = train_sub.add_parser("ar", help="the next-scale AR generator on precomputed tokens (Sec. 4.2)",
                             description="Train the AR transformer on a token file (sar3d data tokenize) with "
                                         "the project's training loop; works under torchrun (DDP).")
    t.add_argument("--tokens", required=True, help="token file of the training set (sar3d data tokenize)")
    t.add_argument("--data", required=True, help="the data set folder the tokens were made from (captions, images)")
    t.add_argument("--cond", choices=["text", "image"], default="text")
    t.add_argument("--vqvae", default=None, help="the VQVAE that made the tokens (default: the one the token file "
                                                  "names, else the shipped tiny one)")
    t.add_argument("--encoder", default="tiny", choices=["tiny", "hub", "auto"],
                   help="condition encoder: the shipped tiny CLIP (default), the hub CLIP/DINOv2, or auto")
    t.add_argument("--next-token", action="store_true", help="the next-token baseline (single-scale tokens)")
    t.add_argument("--depth", type=_int_at_least(1), default=None, help="blocks (default: the VQVAE preset's)")
    t.add_argument("--width", type=_int_at_least(1), default=None, help="model width (default: the VQVAE preset's)")
    t.add_argument("--heads", type=_int_at_least(1), default=None, help="attention heads (default: the preset's)")
    t.add_argument("--steps", type=_int_at_least(1), default=3000)
    t.add_argument("--batch-size", type=_int_at_least(1), default=32, help="sequences per step and process")
    t.add_argument("--lr", type=_float_in(0, low_open=True), default=5e-4)
    t.add_argument("--weight-decay", type=_float_in(0), default=0.05)
    t.add_argument("--grad-clip", type=_float_in(0), default=2.0, help="max gradient norm (official: 2; 0: off)")
    t.add_argument("--lr-decay-from", type=_float_in(0, 1), default=0.0,
                   help="fraction of the steps after which the learning rate falls linearly (default 0: from the "
                        "start, as the official recipe; 1: constant)")
    t.add_argument("--lr-final", type=_float_in(0), default=0.1,
                   help="the learning rate at the last step, as a multiple of --lr (default 0.1, the official)")
    t.add_argument("--captions-only", action="store_true",
                   help="text models: train on the one caption per object, not on the world's short prompts too")
    t.add_argument("--init", default=None, metavar="FOLDER",
                   help="fine-tune: start from this generator (a `--export` folder of the same condition, size, "
                        "condition encoder and VQVAE; its size unless --depth/--width/--heads are given)")
    t.add_argument("--seed", type=int, default=0)
    _run_options(t, "runs/ar_text_tiny", 500, "write the trained generator here")
    t.set_defaults(func=_cmd_train_ar)

    t = train_sub.add_parser("captioner", help="SAR3D-LLM: LLaMA + projector on truncated token scales (Sec. 4.3)",
                             description="Train the captioner on a token file (sar3d data tokenize) in three stages: "
                                         "0 the tiny LLaMA on the captions alone (stand-in for Vicuna's pretraining), "
                                         "1 projector and special tokens with the LLM frozen, 2 everything; "
                                         "works under torchrun (DDP).")
    t.add_argument("--tokens", required=True, help="token file of the training set (sar3d data tokenize)")
    t.add_argument("--data", default=None, help="the data set folder the tokens were made from (checks the captions)")
    t.add_argument("--vqvae", default=None, help="the VQVAE that made the tokens (default: the one the token file "
                                                  "names, else the shipped tiny one)")
    t.add_argument("--llm", default=None, metavar="PATH",
                   help="a LLaMA-family checkpoint on disk (e.g. Vicuna-7B) instead of the tiny LLaMA; stage 0 is "
                        "then skipped unless --steps says otherwise; nothing is downloaded")
    t.add_argument("--preset", default="tiny", choices=["tiny", "paper"],
                   help="stage steps and learning rates (paper: 2e-3 then 2e-5, no stage 0)")
    t.add_argument("--steps", type=_int_at_least(0), nargs=3, default=None, metavar=("S0", "S1", "S2"),
                   help="steps of stages 0, 1 and 2 (0 skips a stage; default: the preset's)")
    t.add_argument("--lr", type=_float_in(0), nargs=3, default=None, metavar=("L0", "L1", "L2"),
                   help="peak learning rates of stages 0, 1 and 2 (cosine, 3%% warm-up; default: the preset's)")
    t.add_argument("--keep", type=_int_at_least(1), default=None, help="token scales fed (default K - 2, the paper's)")
    t.add_argument("--width", type=_int_at_least(8), default=192, help="tiny LLaMA width (default 192)")
    t.add_argument("--layers", type=_int_at_least(1), default=4, help="tiny LLaMA blocks (default 4)")
    t.add_argument("--heads", type=_int_at_least(1), default=4, help="tiny LLaMA attention heads (default 4)")
    t.add_argument("--intermediate", type=_int_at_least(1), default=None,
                   help="tiny LLaMA SwiGLU size (default 8/3 of the width)")
    t.add_argument("--position-embedding", action="store_true",
                   help="add a learned vector per 3D token position to the projected tokens (not in the paper)")
    t.add_argument("--fhat-input", action="store_true",
                   help="feed 2 x 2 patches of the accumulated latent f_hat after the kept scales instead of their "
                        "code vectors (not in the paper)")
    t.add_argument("--colour-word-weight", type=_float_in(0, low_open=True), default=1.0,
                   help="loss weight of the colour words in stages 1 and 2 (default 1: the official uniform loss; "
                        "not in the paper)")
    t.add_argument("--twin-weight", type=_float_in(0), default=0.0,
                   help="weight of a ranking loss that makes each caption likelier than its twin with the two "
                        "colours swapped (stages 1 and 2; default 0: none; not in the paper)")
    t.add_argument("--init", default=None, metavar="FOLDER",
                   help="continue from this trained captioner (e.g. --steps 0 0 N to train stage 2 further)")
    t.add_argument("--batch-size", type=_int_at_least(1), default=16, help="captions per step and process")
    t.add_argument("--seed", type=int, default=0)
    _run_options(t, "runs/captioner_tiny", 200, "write the trained captioner here",
                 out_help="run folder (stage0/, stage1/, stage2/)", resume_help="continue every stage from its checkpoint")
    t.set_defaults(func=_cmd_train_captioner)

    t = train_sub.add_parser("flexicubes", help="FlexiCubes heads and the decoder-only fine-tune (Sec. 4.1, Eq. 9)",
                             description="Fine-tune a copy of a VQVAE's decoder and field with FlexiCubes heads "
                                         "(the base VQVAE, its tokens and generators stay unchanged); works under "
                                         "torchrun (DDP).")
    t.add_argument("--init", default="data_samples/vqvae_tiny_lift", help="the base VQVAE checkpoint folder")
    t.add_argument("--data", required=True, help="a built procedural data set folder (sar3d data build)")
    t.add_argument("--steps", type=_int_at_least(1), default=500)
    t.add_argument("--batch-size", type=_int_at_least(1), default=4, help="objects per step and process")
    t.add_argument("--lr", type=_float_in(0, low_open=True), default=1e-4,
                   help="learning rate (the VQVAE ended its training at 1e-4; the heads learn 10x faster)")
    t.add_argument("--resolution", type=_int_at_least(2), default=None, help="FlexiCubes grid while training (32)")
    t.add_argument("--rays", type=_int_at_least(1), default=None, help="rays per object (384)")
    t.add_argument("--sdf-weight", type=_float_in(0), default=None,
                   help="weight of the exact-SDF training aid (our addition; 0 turns it off; default 1)")
    t.add_argument("--normal-weight", type=_float_in(0), default=None,
                   help="lambda_normal of Eq. 9, on the normals' mean absolute error (default 0.5)")
    t.add_argument("--reg-weight", type=_float_in(0), default=None,
                   help="lambda_reg of Eq. 9, on L_dev plus the sign and weight regularisers (default 0.5)")
    t.add_argument("--seed", type=int, default=0)
    _run_options(t, "runs/flexicubes_tiny", 100, "write the fine-tuned model here (with training.json)")
    t.set_defaults(func=_cmd_train_flexicubes)

    p = sub.add_parser("generate", help="text- or image-to-3D with a trained generator (Sec. 4.2)")
    p.add_argument("--text", type=_prompt, default=None, help="a prompt, e.g. 'a 3D model of a chair coloured red'")
    p.add_argument("--image", default=None,
                   help="a condition image: PNG/JPEG, RGB or RGBA (alpha on white), at least 32 pixels a side, "
                        "roughly square (at most 2:1; padded with white to a square)")
    p.add_argument("--out", required=True, help="mesh file to write (.glb, .obj or .ply)")
    p.add_argument("--views", default=None, help="also write a PNG strip of 8 views around the object")
    p.add_argument("--checkpoint", default=None, help="generator folder (default: the shipped tiny text/image one)")
    p.add_argument("--vqvae", default=None, help="its VQVAE folder (default: the shipped one)")
    p.add_argument("--cfg", type=_float_in(0), default=None,
                   help="guidance scale, >= 0 (default: text 4, the paper's; image 1, generate.IMAGE_SAMPLING)")
    p.add_argument("--cfg-schedule", default=None, choices=["linear", "constant"],
                   help="default: text linear (the official ramp); image constant")
    p.add_argument("--top-k", type=_int_at_least(0), default=10,
                   help="sample among the k most likely codes (default 10; 0 switches top-k off)")
    p.add_argument("--top-p", type=_float_in(0, 1, low_open=True), default=0.5,
                   help="nucleus sampling mass, in (0, 1] (default 0.5; 1 switches top-p off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=_int_at_least(1), default=None, metavar="N",
                   help="image only: draw N samples and keep the one whose render at the condition view (the "
                        "chunk layout's view 1: azimuth 60, elevation 7 degrees) agrees best with the image "
                        "(default 16, generate.IMAGE_SAMPLING; 1 draws one sample; our addition, not the paper's)")
    p.add_argument("--refine-from", type=_int_at_least(0), default=None, metavar="K",
                   help="image only, with N > 1: then keep scales 1..K-1 of the best sample, draw the rest N times "
                        "more and keep the best of those and it (default 4; 0: no second round)")
    p.add_argument("--fit-steps", type=_int_at_least(0), default=None, metavar="S",
                   help="image only: then refine the kept sample's tokens for S steps so that it renders the condition "
                        "image better (default 50, generate.IMAGE_SAMPLING; 0: off; our addition, not the paper's)")
    p.add_argument("--mesh-resolution", type=_int_at_least(2), default=None,
                   help="mesh grid cells per side of the object box (at least 2; default 48, or the grid a "
                        "FlexiCubes fine-tune was trained on)")
    p.add_argument("--mesher", choices=["marching-cubes", "flexicubes"], default="marching-cubes", help=MESHER_HELP)
    p.add_argument("--flexicubes", default=None, help=FLEXICUBES_HELP)
    p.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("caption", help="caption objects from their truncated token scales (SAR3D-LLM, Sec. 4.3)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="proc:<seed>, a mesh file, a chunk or G-Objaverse folder, or a token file (tokens.npz#i: "
                        "object i; tokens.npz: all of them); one caption per line, in input order")
    p.add_argument("--scales", type=_int_at_least(1), default=None,
                   help="token scales fed to the LLM (default: the checkpoint's, K - 2 as the paper)")
    p.add_argument("--checkpoint", default=None, help="captioner folder (default: the shipped tiny one)")
    p.add_argument("--vqvae", default=None, help="VQVAE that encodes non-token inputs (default: the one the "
                                                  "captioner names, else the shipped one)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=_float_in(0, low_open=True), default=1.0, help="sampling temperature")
    p.add_argument("--top-k", type=_int_at_least(0), default=0, help="sampling: the k likeliest words (0: all)")
    p.add_argument("--top-p", type=_float_in(0, 1, low_open=True), default=1.0, help="sampling: nucleus mass")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    p.add_argument("--max-new-tokens", type=_int_at_least(1), default=None,
                   help="longest caption in tokens (default: the checkpoint's)")
    p.add_argument("--up", choices=["z", "y"], default="z", help=UP_HELP)
    p.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads")
    p.set_defaults(func=_cmd_caption)

    p = sub.add_parser("bench", help="benchmarks")
    bench_sub = p.add_subparsers(dest="bench_command", required=True)
    b = bench_sub.add_parser("sampling", help="next-scale vs next-token sampling, compute floor, text -> mesh time")
    b.add_argument("--prompt", type=_prompt, default="a 3D model of a chair coloured red")
    b.add_argument("--checkpoint", default=None, help="next-scale text generator (default: the shipped one)")
    b.add_argument("--vqvae", default=None, help="its VQVAE (default: the shipped one)")
    b.add_argument("--next-token-checkpoint", default=None, help="next-token baseline (default: the shipped one)")
    b.add_argument("--next-token-vqvae", default=None, help="its single-scale VQVAE (default: the shipped one)")
    b.add_argument("--no-next-token", action="store_true", help="skip the baseline")
    b.add_argument("--repeats", type=_int_at_least(1), default=5)
    b.add_argument("--cfg", type=_float_in(0), default=4.0, help="guidance scale, >= 0 (default 4)")
    b.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads")
    b.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    b.set_defaults(func=_cmd_bench_sampling)
    b = bench_sub.add_parser("metrics", help="the cost of the point-cloud metrics (CD-based COV/MMD/1-NNA, one EMD pair)")
    b.add_argument("--num", type=_int_at_least(2), default=200, help="clouds per set (default 200)")
    b.add_argument("--points", type=_int_at_least(1), default=2048, help="points per cloud (default 2048)")
    b.add_argument("--threads", type=_int_at_least(1), default=None, help="torch CPU threads")
    b.set_defaults(func=_cmd_bench_metrics)
    return parser


# subcommands whose options belong to a module's own main (one implementation, reachable as
# ``sar3d ...`` and as ``python -m sar3d_core.<module>``); main() hands them the rest of the line
DELEGATED = {
    ("eval", "vqvae"): ("vqvae_eval", "reconstruction of a VQVAE checkpoint on a test split: PSNR, IoU, hue, "
                                      "Chamfer, beside the exact-object oracle"),
    ("eval", "generation"): ("ar_eval", "the generators on a test split: attribute accuracy, FID, COV/MMD, short "
                                        "prompts, image-to-3D PSNR"),
    ("train", "clip"): ("conditioning", "the tiny CLIP, the offline text and image condition encoder")}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for words, (module, _) in DELEGATED.items():
        if tuple(argv[:2]) == words:
            import importlib

            try:
                importlib.import_module(f".{module}", __package__).main(argv[2:])
            except SystemExit as exit_:
                return int(exit_.code or 0)
            except (ValueError, OSError, KeyError) as err:
                print(f"sar3d {' '.join(words)}: error: {' '.join(str(err).split())}", file=sys.stderr)
                return 2
            return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # a bad argument (one line on stderr, status 2) or --help (status 0)
        return int(exit_.code or 0)
    try:
        args.func(args)
    except (ValueError, OSError, KeyError) as err:  # OSError: FileNotFoundError, a folder given as a file, ...
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sar3d {args.command}: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
