"""Figures shared by the tutorials: camera frustums in 3D and image grids (matplotlib).

Static matplotlib figures render everywhere (JupyterLab, papermill, the HTML in build/);
interactive k3d views are added by the tutorials where a widget front end exists.
"""
from __future__ import annotations

import itertools

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
