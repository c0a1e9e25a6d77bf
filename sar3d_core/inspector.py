"""Per-scale token inspector: what each scale of the multi-scale 3D tokens holds (paper Sec. 4.1,
Algorithms 1 and 2, Fig. 2).

Algorithm 1 turns the latent triplane ``f`` of one object into token maps ``r_1..r_K``, coarse
to fine; Algorithm 2 sums ``f_hat_k = sum_{j <= k} phi_j(z_j)``. Stopping Algorithm 2 at scale
``k`` and decoding shows what the first k scales know. For one object and each scale k:

* the three planes' token maps (code ids, coloured by id; ids in an HTML table with hover);
* the relative residual left after scale k, ``||f - f_hat_k|| / ||f||`` (Alg. 1 line 8), and
  how many distinct codes each scale uses;
* the object decoded from scales 1..k: rendered views, and a k3d mesh (marching cubes,
  ``meshing.extract_mesh``) or coloured points where the field has no surface yet;
* edits: scale k replaced by another object's tokens or by random codes, decoded next to
  the original; or scales k..K drawn again by a next-scale generator (Sec. 4.2) given the kept
  scales 1..k-1, through the hook ``resample_fn(tokens, k, seed) -> tokens``
  (``generate.Pipeline.resample_fn(prompt)``).

``TokenInspector`` is the ipywidgets app; ``static_figure`` tells the same per-scale story as
one matplotlib figure where widgets cannot render (papermill, HTML exports).
"""
from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb

from .cameras import orbit_cameras
from .config import NUM_PLANES
from .tokens import decode_views, load_tokens, tokens_of

PLANES = ("xy", "xz", "yz")  # triplane order (triplane.py); rows of a map run along v, columns along u
GENERATOR_MISSING = "no generator given (resample_fn)"


@dataclass
class Inspection:
    """The tokens of one object and how much of its latent each scale leaves unexplained."""
    source: str
    tokens: list  # K LongTensors (1, 3, s_k, s_k)
    residual_norms: list  # K floats: relative residual after scale k
    residual_of: str  # "f" (encoded views) or "f_hat_K" (a token file: the continuous f is unknown)
    caption: str | None = None


@torch.no_grad()
def load_object(model, spec: str, index: int = 0) -> Inspection:
    """Tokens of ``proc:<seed>``, a chunk or G-Objaverse folder, a mesh file, or a token file
    (``tokens.npz`` or ``tokens.npz#i`` for object i). Raises FileNotFoundError / ValueError."""
    from .data import load_views

    spec = str(spec).strip()
    path, _, idx = spec.partition("#") if ".npz#" in spec else (spec, "", "")
    if path.endswith(".npz"):
        loaded = load_tokens(Path(path).expanduser(), model.cfg, model.fingerprint())  # schedule, codebook, writer
        i = int(idx) if idx else index
        if not 0 <= i < len(loaded["seed"]):
            raise ValueError(f"{path} holds {len(loaded['seed'])} object(s): index {i} is out of range")
        tokens = tokens_of(loaded, i)
        # ||f_hat_K - f_hat_k|| / ||f_hat_K||: the residual with respect to the full token set
        prefixes = model.quantizer.fhat_prefixes(tokens)
        full = prefixes[-1]
        norms = [float((full - f).norm() / full.norm().clamp_min(1e-12)) for f in prefixes]
        return Inspection(spec, tokens, norms, "f_hat_K", loaded["caption"][i] or None)
    cfg = model.cfg
    mv = load_views(spec, num_views=cfg.num_input_views, size=cfg.image_size)
    q = model.encode_views(mv)
    return Inspection(spec, [t.cpu() for t in q.tokens], q.residual_norms.tolist(), "f", mv.caption)


def distinct_codes(tokens: list) -> list[int]:
    """Distinct code ids per scale (all three planes together)."""
    return [int(t.unique().numel()) for t in tokens]


def edit_scale(tokens: list, k: int, codebook_size: int, donor: list | None = None,
               seed: int | None = None) -> list:
    """A copy of ``tokens`` with scale ``k`` (1-based) taken from ``donor`` or, without one,
    drawn uniformly from the codebook with ``seed``. The input is never modified."""
    out = [t.clone() for t in tokens]
    if donor is not None:
        if donor[k - 1].shape != out[k - 1].shape:
            raise ValueError(f"the donor's scale {k} has shape {tuple(donor[k - 1].shape)}, "
                             f"expected {tuple(out[k - 1].shape)}")
        out[k - 1] = donor[k - 1].clone()
    else:
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        out[k - 1] = torch.randint(0, codebook_size, out[k - 1].shape, generator=g)
    return out


def default_cameras(num_views: int = 4, elevation: float = 20.0) -> torch.Tensor:
    """``num_views`` cameras evenly around the object -> ``c (V, 25)``."""
    return orbit_cameras(np.arange(num_views) * 360.0 / num_views + 30.0, elevation)


def render_scales(model, tokens: list, k: int, c_V25: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """The object decoded from scales 1..k (Alg. 2 stopped at k): ``rgb (V, 3, H, W)``."""
    return decode_views(model, tokens, c_V25, size, num_scales=k)["rgb"].clamp(0, 1).cpu()


# --- pictures of tokens ---------------------------------------------------------------
def code_colors(ids) -> np.ndarray:
    """An RGB colour per code id, ``(...) -> (..., 3)`` in [0, 1]: hues spread by the golden
    ratio, so neighbouring ids look different (ids carry no order)."""
    ids = np.asarray(ids, dtype=np.float64)
    hue = (ids * 0.6180339887) % 1.0
    sat = 0.45 + 0.4 * ((ids * 0.37) % 1.0)
    return hsv_to_rgb(np.stack([hue, sat, np.full_like(hue, 0.95)], -1))


def token_table_html(tokens_k: torch.Tensor) -> str:
    """The three planes' maps ``(1 or none, 3, s, s)`` as coloured HTML tables of code ids (hover: plane, row, column)."""
    maps = tokens_k.reshape(NUM_PLANES, *tokens_k.shape[-2:]).cpu().numpy()
    hexes = np.vectorize(lambda r, g, b: f"#{r:02x}{g:02x}{b:02x}")(
        *np.moveaxis((code_colors(maps) * 255).round().astype(int), -1, 0))
    tables = []
    for p, name in enumerate(PLANES):
        rows = "".join(
            "<tr>" + "".join(
                f"<td title='plane {name}, row {i}, col {j}: code {maps[p, i, j]}' style='background-color:"
                f"{hexes[p, i, j]};padding:1px 3px;font-family:monospace;font-size:10px;text-align:right'>"
                f"{maps[p, i, j]}</td>" for j in range(maps.shape[2])) + "</tr>"
            for i in range(maps.shape[1]))
        tables.append(f"<div style='margin-right:12px'><b>plane {name}</b><table style='border-collapse:"
                      f"collapse'>{rows}</table></div>")
    return "<div style='display:flex;align-items:flex-start'>" + "".join(tables) + "</div>"


def png_bytes(rgb_V3HW: torch.Tensor, scale: int = 1) -> bytes:
    """Views side by side as one PNG (for ``ipywidgets.Image``), enlarged ``scale`` times."""
    from PIL import Image

    strip = np.concatenate([v.permute(1, 2, 0).numpy() for v in rgb_V3HW], axis=1)
    img = Image.fromarray((strip.clip(0, 1) * 255).round().astype(np.uint8))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def static_figure(model, insp: Inspection, c_V25: torch.Tensor | None = None, size: int | None = None,
                  annotate_up_to: int = 4):
    """Rows = scales 1..K; columns = token maps of the 3 planes, then views decoded from scales 1..k."""
    c_V25 = default_cameras() if c_V25 is None else c_V25
    K, V = len(insp.tokens), len(c_V25)
    codes = distinct_codes(insp.tokens)
    fig, axes = plt.subplots(K, 3 + V, figsize=(1.5 * (3 + V), 1.5 * K), squeeze=False)
    for k in range(1, K + 1):
        maps = insp.tokens[k - 1][0].numpy()
        rgb = render_scales(model, insp.tokens, k, c_V25, size)
        for p in range(NUM_PLANES):
            ax = axes[k - 1, p]
            ax.imshow(code_colors(maps[p]), interpolation="nearest")
            if maps.shape[-1] <= annotate_up_to:  # ids readable on the small maps
                for (i, j), v in np.ndenumerate(maps[p]):
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=6)
        for v in range(V):
            axes[k - 1, 3 + v].imshow(rgb[v].permute(1, 2, 0).numpy())
        axes[k - 1, 0].set_ylabel(f"k={k} ({maps.shape[-1]}x{maps.shape[-1]})\nres {insp.residual_norms[k - 1]:.2f}"
                                  f"\n{codes[k - 1]} codes", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    for j, title in enumerate([f"tokens {p}" for p in PLANES] + [f"view {v}" for v in range(V)]):
        axes[0, j].set_title(title, fontsize=8)
    fig.suptitle(f"{insp.source}: token maps and the object decoded from scales 1..k "
                 f"(res = residual of {insp.residual_of})", fontsize=9)
    fig.tight_layout()
    return fig


# --- the 3D view ----------------------------------------------------------------------
def _packed(rgb_N3) -> np.ndarray:
    c = (np.asarray(rgb_N3, dtype=np.float64).clip(0, 1) * 255).astype(np.uint32)[:, :3]
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


@torch.no_grad()
def k3d_objects(model, tokens: list, k: int, resolution: int = 32, max_points: int = 3000):
    """k3d drawables of the object decoded from scales 1..k: a vertex-coloured mesh, or the densest
    grid points where the field has no surface yet; and a note saying which."""
    import k3d

    from .meshing import extract_mesh, field_grid

    planes = model.decode_tokens(tokens, k)
    try:
        mesh = extract_mesh(model.field, planes, model.triplane_settings.num_samples, resolution)
        return [k3d.mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32),
                         colors=_packed(mesh.visual.vertex_colors / 255.0), side="double")], \
            f"mesh, {len(mesh.faces)} faces (marching cubes at {resolution}^3)"
    except ValueError as err:  # no surface: show where the field is densest instead
        sigma, axis = field_grid(model.field, planes, resolution)
        top = sigma.flatten().topk(min(max_points, sigma.numel())).indices
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)[top]
        rgb = model.field.query(planes, grid[None].to(planes.device))[1][0].cpu().numpy()
        return [k3d.points(grid.numpy().astype(np.float32), colors=_packed(rgb), point_size=0.02,
                           shader="flat")], f"no surface yet ({err}); showing the {len(top)} densest grid points"


def frontend_connected() -> bool:
    """Can widgets render here? True in a kernel started by a Jupyter server (JupyterLab,
    Notebook) or VS Code; False under papermill/nbconvert and plain Python.
    ``SAR3D_INTERACTIVE=0/1`` overrides."""
    forced = os.environ.get("SAR3D_INTERACTIVE")
    if forced is not None:
        return forced.lower() not in ("", "0", "false", "no")
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    if ip is None or "IPKernelApp" not in ip.config:
        return False
    # jupyter_server sets JPY_SESSION_NAME for the kernels it starts; papermill does not
    return "JPY_SESSION_NAME" in os.environ or "__vsc_ipynb_file__" in ip.user_ns


def _reason(err: Exception) -> str:
    """The message of an expected error (bad path, wrong schedule), with its type otherwise."""
    return str(err) if isinstance(err, (FileNotFoundError, ValueError)) else f"{type(err).__name__}: {err}"


# --- the app --------------------------------------------------------------------------
class TokenInspector:
    """The ipywidgets app for one object at a time (see the module doc).

    Drive it from Python as from the UI: ``load(spec)``, ``slider.value = k``,
    ``edit("object", donor="proc:3")`` or ``edit("random", seed=1)``. Bad input never raises:
    the reason is shown in ``message``. ``resample_fn(tokens, k, seed) -> tokens`` is the hook
    for a generator (Sec. 4.2; ``Pipeline.resample_fn``); without one the button is greyed out.
    """

    def __init__(self, model, source: str = "proc:0", c_V25: torch.Tensor | None = None, size: int | None = None,
                 resample_fn=None, show_3d: bool = True, mesh_resolution: int = 32):
        import ipywidgets as W

        self.model, self.resample_fn = model.eval(), resample_fn
        self.c = default_cameras() if c_V25 is None else c_V25
        self.size, self.show_3d, self.mesh_resolution = size, show_3d, mesh_resolution
        self.insp, self.k, self.rgb, self.edited_rgb, self.edited_tokens = None, None, None, None, None
        self.summary, self.edit_what = "", ""
        self._rendered, self._donors, self.plot = {}, {}, None
        K = len(model.cfg.scales)
        self.source = W.Text(value=source, description="object", layout=W.Layout(width="460px"),
                             placeholder="proc:<seed>, a chunk folder, a mesh file or tokens.npz[#i]")
        self.load_button = W.Button(description="Load", icon="folder-open")
        self.message = W.HTML()
        self.slider = W.IntSlider(value=K, min=1, max=K, description="scale k", continuous_update=False)
        self.info, self.token_maps, self.note3d = W.HTML(), W.HTML(), W.HTML()
        self.decoded, self.original_full, self.edited = (W.Image(format="png") for _ in range(3))
        self.view3d = W.Box()
        self.edit_mode = W.ToggleButtons(options=[("another object", "object"), ("random codes", "random")])
        self.donor = W.Text(value="proc:1", description="donor", layout=W.Layout(width="300px"))
        self.edit_seed = W.IntText(value=0, description="seed", layout=W.Layout(width="160px"))
        self.edit_button = W.Button(description="Replace scale k", button_style="warning")
        label = "Resample scales k..K" if resample_fn else f"Resample scales k..K ({GENERATOR_MISSING})"
        self.resample_button = W.Button(description=label, disabled=resample_fn is None, tooltip=label,
                                        layout=W.Layout(width="auto"))
        self.edit_note = W.HTML()
        self.load_button.on_click(lambda _: self.load(self.source.value))
        self.slider.observe(lambda change: self.show_scale(change["new"]), names="value")
        self.edit_button.on_click(lambda _: self.edit(self.edit_mode.value, self.donor.value, self.edit_seed.value))
        self.resample_button.on_click(lambda _: self.resample(self.edit_seed.value))
        title = W.HTML("<b>Per-scale 3D tokens</b> (SAR3D Sec. 4.1, Alg. 1-2): scale k shows the token maps "
                       "of r_k and the object decoded from scales 1..k")
        self.widget = W.VBox([
            title, W.HBox([self.source, self.load_button]), self.message, self.slider,
            W.HBox([self.token_maps, self.info]), W.HTML("<b>decoded from scales 1..k</b>"), self.decoded,
            self.note3d, self.view3d,
            W.HTML("<b>edit scale k</b> (decoded with all K scales, next to the original)"),
            W.HBox([self.edit_mode, self.donor, self.edit_seed]), W.HBox([self.edit_button, self.resample_button]),
            self.edit_note, W.HBox([W.VBox([W.HTML("original"), self.original_full]),
                                    W.VBox([W.HTML("edited"), self.edited])])])
        self.load(source)

    def _say(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#555"
        self.message.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    @staticmethod
    def _set_image(image, rgb_V3HW: torch.Tensor, height: int) -> None:
        """Views into an Image widget, enlarged (nearest) to about ``height`` px, shown at that size."""
        scale = max(1, round(height / rgb_V3HW.shape[-2]))
        image.value = png_bytes(rgb_V3HW, scale)
        image.width = str(rgb_V3HW.shape[0] * rgb_V3HW.shape[-1] * scale)

    def _render(self, tokens: list, k: int) -> torch.Tensor:
        return render_scales(self.model, tokens, k, self.c, self.size)

    def load(self, spec: str) -> bool:
        """Show a new object; on bad input keep the current one and say why."""
        try:
            insp = load_object(self.model, spec)
        except Exception as err:  # a widget callback must not end in a traceback nobody sees
            self._say(f"could not load {spec!r}: {_reason(err)}", error=True)
            return False
        self.insp, self._rendered, self.edited_tokens, self.edited_rgb = insp, {}, None, None
        self.source.value, self.edited.value, self.edit_note.value = insp.source, b"", ""
        K = len(insp.tokens)
        self._rendered[K] = self._render(insp.tokens, K)
        self._set_image(self.original_full, self._rendered[K], 96)
        self.summary = (f"{insp.source}: {sum(t.numel() for t in insp.tokens)} tokens over {K} scales"
                        + (f'; "{insp.caption}"' if insp.caption else ""))
        self._say(self.summary)
        self.show_scale(self.slider.value)
        return True

    def show_scale(self, k: int) -> None:
        """Token maps, residual, codebook usage, decoded views and 3D view for scale ``k``."""
        if self.insp is None:
            return
        self.k = k = int(k)
        tokens, cb = self.insp.tokens, self.model.cfg.codebook_size
        self.token_maps.value = token_table_html(tokens[k - 1])
        codes = distinct_codes(tokens)
        rows = "".join(
            f"<tr style='{'font-weight:bold;background:#ffe9a8' if j == k else ''}'><td>{j}</td>"
            f"<td>{t.shape[-2]}x{t.shape[-1]}</td><td>{t.numel()}</td><td>{codes[j - 1]}</td>"
            f"<td>{self.insp.residual_norms[j - 1]:.3f}</td></tr>" for j, t in enumerate(tokens, 1))
        every = int(torch.cat([t.flatten() for t in tokens]).unique().numel())
        self.info.value = (f"<table><tr><th>k</th><th>map</th><th>tokens</th><th>distinct codes</th>"
                           f"<th>residual</th></tr>{rows}</table><small>residual: relative norm of "
                           f"{self.insp.residual_of} left after scale k; {every} of {cb} codes used in all</small>")
        if k not in self._rendered:
            self._rendered[k] = self._render(tokens, k)
        self.rgb = self._rendered[k]
        self._set_image(self.decoded, self.rgb, 160)
        self.edit_note.value = f"edits replace the tokens of scale k = {k}" + (
            f"; shown below: {html.escape(self.edit_what)}" if self.edited_tokens is not None else "")
        if self.show_3d:
            self._update_3d(k)

    def _update_3d(self, k: int) -> None:
        try:
            import k3d
        except ImportError:
            self.note3d.value = "3D view: k3d is not installed"
            return
        objects, note = k3d_objects(self.model, self.insp.tokens, k, self.mesh_resolution)
        if self.plot is None:
            self.plot = k3d.plot(camera_auto_fit=True, grid_visible=False, height=360)
            self.view3d.children = [self.plot]
        for obj in list(self.plot.objects):
            self.plot -= obj
        for obj in objects:
            self.plot += obj
        self.note3d.value = (f"<b>3D, scales 1..{k}</b>: {html.escape(note)} <small>(k3d needs WebGL: an empty "
                             f"box means the browser has none)</small>")

    def _show_edit(self, tokens: list, what: str) -> None:
        self.edited_tokens, self.edit_what = tokens, what
        self.edited_rgb = self._render(tokens, len(tokens))
        self._set_image(self.edited, self.edited_rgb, 96)
        self.edit_note.value = f"shown below: {html.escape(what)}"
        self._say(self.summary)  # clears an earlier error

    def edit(self, mode: str = "object", donor: str = "proc:1", seed: int = 0) -> bool:
        """Replace scale k with ``donor``'s tokens (mode "object") or random codes (mode "random")."""
        if self.insp is None:
            return False
        k, cb = self.k, self.model.cfg.codebook_size
        try:
            if mode == "object":
                if donor not in self._donors:
                    self._donors[donor] = load_object(self.model, donor).tokens
                tokens, what = edit_scale(self.insp.tokens, k, cb, donor=self._donors[donor]), f"scale {k} from {donor}"
            elif mode == "random":
                tokens, what = edit_scale(self.insp.tokens, k, cb, seed=seed), f"scale {k}: random codes, seed {seed}"
            else:
                raise ValueError(f"unknown edit mode {mode!r}: use 'object' or 'random'")
        except Exception as err:
            self._say(f"edit failed: {_reason(err)}", error=True)
            return False
        self._show_edit(tokens, what)
        return True

    def resample(self, seed: int = 0) -> bool:
        """Scales k..K drawn again by ``resample_fn`` (the generator, Sec. 4.2) given scales 1..k-1."""
        if self.resample_fn is None:
            self._say(f"resampling needs the generator: {GENERATOR_MISSING}", error=True)
            return False
        try:
            tokens = self.resample_fn([t.clone() for t in self.insp.tokens], self.k, seed)
        except Exception as err:  # a user's callable: show whatever went wrong
            self._say(f"resample_fn failed: {_reason(err)}", error=True)
            return False
        self._show_edit(tokens, f"scales {self.k}..{len(tokens)} resampled by the generator (seed {seed})")
        return True

    def show(self, interactive: bool | None = None):
        """Display the app where widgets render, else the static per-scale figure; returns what was shown."""
        from IPython.display import display

        if (frontend_connected() if interactive is None else interactive) or self.insp is None:
            display(self.widget)
            return self.widget
        fig = static_figure(self.model, self.insp, self.c, self.size)
        display(fig)
        plt.close(fig)
        return fig
