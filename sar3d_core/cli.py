"""The ``sar3d`` command line (DESIGN.md §8).

Each command prints a one-line error and exits with status 2 on bad input.
Subcommands import their modules lazily so ``sar3d --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_render(args) -> None:
    from .data import load_views
    from .render import render_grid

    mv = load_views(args.input, num_views=args.views, size=args.size)
    render_grid(mv, args.out, with_depth=args.depth)
    print(f"wrote {args.out}: {mv.num_views} views of {args.size} px from {args.input}"
          + (f" ({mv.caption})" if mv.caption else ""))


def _cmd_data_build(args) -> None:
    from .data import build_dataset, default_cache_dir

    out = Path(args.out) if args.out else default_cache_dir() / f"proc_{args.split}_{args.size}"
    build_dataset(out, args.count, size=args.size, split=args.split, start=args.start, workers=args.workers)
    print(f"dataset of {args.count} {args.split} objects at {args.size} px in {out}")


def _cmd_data_check(args) -> None:
    from .data import load_views
    from .views import multiview_consistency

    size = args.size or (None if Path(args.input).is_dir() else 128)  # folders: as stored
    mv = load_views(args.input, num_views=args.views, size=size)
    stats = multiview_consistency(mv, tol_px=args.tol_px)
    print(f"{args.input}: {mv.num_views} views at {mv.size[0]} px, {stats['num_points']} back-projected points; "
          f"inside the other views' masks ({args.tol_px} px): {stats['inside_mask']:.2%}; "
          f"free-space consistent ({stats['tol_depth']} units): {stats['free_space']:.2%}")


def _cmd_tutorials(args) -> None:
    from .tutorials import run_all

    times = run_all(Path(args.out), fast=args.fast, only=args.only)
    print(f"{len(times)} tutorials executed in {sum(times.values()):.0f} s; HTML in {args.out}/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sar3d", description="SAR3D step by step: data, models and tutorials.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("render", help="render an object to a grid of views")
    p.add_argument("input", help="proc:<seed>, a mesh file, a chunk folder or a G-Objaverse object folder")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--views", type=int, default=6, help="number of views (default 6)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--depth", action="store_true", help="add a row of depth maps")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("data", help="data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser("build", help="render a procedural data set into a cache folder")
    b.add_argument("--count", type=int, required=True, help="number of objects")
    b.add_argument("--out", default=None, help="output folder (default: the cache folder)")
    b.add_argument("--size", type=int, default=64, help="image size (default 64)")
    b.add_argument("--split", default="train", choices=["train", "val", "test"])
    b.add_argument("--start", type=int, default=0, help="skip the first START objects of the split")
    b.add_argument("--workers", type=int, default=1, help="rendering processes, one torch thread each (default 1)")
    b.set_defaults(func=_cmd_data_build)

    b = data_sub.add_parser("check", help="multi-view consistency of an object's depth, masks and cameras")
    b.add_argument("input", help="proc:<seed>, a chunk folder, a G-Objaverse object folder or a mesh file")
    b.add_argument("--views", type=int, default=12, help="views to use (default 12, or all there are)")
    b.add_argument("--size", type=int, default=None, help="resize to this size first (default: as stored)")
    b.add_argument("--tol-px", type=int, default=2, help="mask tolerance in pixels (default 2)")
    b.set_defaults(func=_cmd_data_check)

    p = sub.add_parser("tutorials", help="execute the tutorials with papermill into a folder, with HTML")
    p.add_argument("--out", default="build", help="output folder (default build/)")
    p.add_argument("--fast", action="store_true", help="the shrunken CI version of every notebook")
    p.add_argument("--only", default=None, help="run only notebooks whose name contains this")
    p.set_defaults(func=_cmd_tutorials)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sar3d {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
