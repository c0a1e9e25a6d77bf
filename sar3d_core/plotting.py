"""Figures shared by the tutorials: camera frustums in 3D, image grids and training curves (matplotlib).

Static matplotlib figures render everywhere (JupyterLab, papermill, the HTML in build/);
interactive k3d views are added by the tutorials where a widget front end exists.
"""
from __future__ import annotations

import fnmatch
import itertools
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .cameras import camera_rays, unpack_camera


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def draw_box(ax, half: float = 0.45, **kw) -> None:
    """The object box ``[-half, half]^3`` as a wireframe on a 3D axis."""
    kw = {"color": "0.6", "lw": 0.8, **kw}
    for a, b in itertools.combinations(itertools.product((-half, half), repeat=3), 2):
        if sum(x != y for x, y in zip(a, b)) == 1:
            ax.plot(*zip(a, b), **kw)


def draw_cameras(ax, c, size: float = 0.25, labels: bool = True, colors=None) -> None:
    """Camera frustums of ``c (V, 25)``: centre, image-plane rectangle at depth ``size``, and the up (-y) tick."""
    c2w, K = (_np(m) for m in unpack_camera(c))
    colors = colors or plt.cm.tab20(np.linspace(0, 1, len(c2w)))
    for i, (m, k) in enumerate(zip(c2w, K)):
        o, R = m[:3, 3], m[:3, :3]
        corners = [R @ np.array([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], 1.0]) * size + o
                   for u, v in ((0, 0), (1, 0), (1, 1), (0, 1))]
        for p in corners:
            ax.plot(*zip(o, p), color=colors[i], lw=0.8)
        ax.plot(*zip(*(corners + corners[:1])), color=colors[i], lw=1.2)
        ax.plot(*zip(o, o - R[:, 1] * size * 0.6), color=colors[i], lw=2)  # "up" in the image
        if labels:
            ax.text(*o, str(i), fontsize=8, color=colors[i])


def draw_rays(ax, c, height: int, width: int, length: float = 2.0, every: int = 1, **kw) -> None:
    """A few pixel rays of one camera ``c (25,)`` as line segments of the given length."""
    o, d = (_np(t) for t in camera_rays(c, height, width))
    kw = {"color": "tab:orange", "lw": 0.5, "alpha": 0.7, **kw}
    for v in range(0, height, every):
        for u in range(0, width, every):
            ax.plot(*zip(o[v, u], o[v, u] + length * d[v, u]), **kw)


def equal_3d(ax, half: float = 2.0) -> None:
    ax.set_xlim(-half, half), ax.set_ylim(-half, half), ax.set_zlim(-half, half)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x"), ax.set_ylabel("y"), ax.set_zlabel("z (up)")


def to_image(t) -> np.ndarray:
    """``(C, H, W)`` tensor -> ``(H, W)`` or ``(H, W, 3)`` array for imshow."""
    a = _np(t)
    return a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)


def image_grid(rows, row_titles=None, col_titles=None, cmap="viridis", size: float = 1.6, symmetric=False):
    """Show a grid of images: ``rows`` is a list of lists of ``(C, H, W)`` tensors or arrays."""
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            img = to_image(row[j])
            if img.ndim == 2 and symmetric:
                lim = np.abs(img).max() or 1.0
                ax.imshow(img, cmap="coolwarm", vmin=-lim, vmax=lim)
            else:
                ax.imshow(np.clip(img, 0, 1) if img.ndim == 3 else img, cmap=cmap)
            if col_titles and i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
            if row_titles and j == 0 and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def _log_rows(log) -> list[dict]:
    """Log rows from a list of dicts, a ``log.jsonl`` file, a ``training.json`` record (its ``"log"``)
    or a run / checkpoint folder holding either."""
    from .training import read_log

    if not isinstance(log, (str, Path)):
        return list(log)
    path = Path(log)
    if path.is_dir():
        found = [path / name for name in ("log.jsonl", "training.json") if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path}: no log.jsonl or training.json in this folder")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such log file")
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "log" not in record:
            raise ValueError(f"{path}: a training record without a 'log' list of rows")
        return list(record["log"])
    return read_log(path)


def plot_training_log(log, keys="loss", ax=None, *, smooth: int = 1, x: str = "step", labels=None,
                      ylabel: str | None = None, title: str | None = None, **plot_kw):
    """One line per logged scalar against ``x`` (default the step); returns the axis.

    ``log``: rows as ``training.read_log`` returns them (a list of dicts), or a path to a
    ``log.jsonl``, to a checkpoint's ``training.json`` or to a folder holding one of them.
    ``keys``: a key or a list of keys; a key may be a glob pattern (``"acc_s*"``: every
    matching key, in natural order). Rows without a key are skipped for that line.
    ``smooth``: a trailing moving average over this many logged points (1: raw values).
    ``labels``: legend labels, one per resolved key (default the keys). A key that no row
    holds raises a one-line ValueError naming the keys there are.
    """
    rows = _log_rows(log)
    if not rows:
        raise ValueError("the log has no rows: nothing to plot")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth={smooth!r}: a window of at least 1 logged point")
    available = list(dict.fromkeys(k for r in rows for k in r))
    natural = lambda k: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)]  # noqa: E731
    resolved = []
    for key in [keys] if isinstance(keys, str) else list(keys):
        found = sorted(fnmatch.filter(available, key), key=natural) if any(c in key for c in "*?[") else (
            [key] if key in available else [])
        if not found:
            raise ValueError(f"no logged value {key!r}: the log holds {', '.join(available)}")
        resolved += [k for k in found if k not in resolved]
    if x not in available:
        raise ValueError(f"no logged value {x!r} for the x axis: the log holds {', '.join(available)}")
    labels = resolved if labels is None else list(labels)
    if len(labels) != len(resolved):
        raise ValueError(f"{len(labels)} labels for {len(resolved)} keys ({', '.join(resolved)})")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in zip(resolved, labels):
        pts = np.array([(r[x], r[key]) for r in rows if x in r and r.get(key) is not None], dtype=float)
        if len(pts) == 0:
            raise ValueError(f"no row holds both {x!r} and {key!r}")
        y = pts[:, 1]
        if smooth > 1:
            c = np.concatenate([[0.0], np.cumsum(y)])
            i = np.arange(1, len(y) + 1)
            y = (c[i] - c[np.maximum(i - smooth, 0)]) / np.minimum(i, smooth)
        ax.plot(pts[:, 0], y, label=label, **plot_kw)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel if ylabel is not None else (resolved[0] if len(resolved) == 1 else "value"))
    if title:
        ax.set_title(title)
    if len(resolved) > 1:
        ax.legend(fontsize=7, ncol=2)
    return ax
