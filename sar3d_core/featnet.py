"""An offline feature network for FID / KID and attribute accuracy on renders (paper Sec. 5.1, Table 1).

The paper scores generated objects by FID and KID on rendered views, i.e. on the 2048-d
pool features of an ImageNet Inception-V3 (``metrics.inception_features``). Those weights
come from the internet, and this project never downloads anything in tests or CI
(DESIGN.md §4). This module is the documented offline substitute: a small CNN trained on
64 px renders of the procedural world (``world``) to tell, from one RGB view on white,
the category, main and second colour, pattern, finish and the category's shape attributes
(``"lamp.shade"``, ``"table.legs"``...). It serves two purposes:

* FID / KID features when Inception weights are absent: ``net.features(images) -> (N, D)``,
  the globally pooled last conv layer (as Inception's pool3), fed to
  ``metrics.fid_from_features(..., feature_network=net.name)``. Every result must carry
  ``net.name`` ("sar3d-featnet-v1.1 (procedural renders, 64 px; colours read from a 4 x 4
  layout)" for the shipped one): such numbers compare runs of this project with each other,
  never with the paper's Inception numbers.
* Attribute accuracy of any set of renders (``attribute_accuracy``): does the render of a
  generated "red lamp with a cone shade" look like one to a classifier?

The shipped checkpoint is v1.1: the v1 network (body, features, category and shape heads)
plus a layout branch that reads the colour and pattern heads (``FeatureNet``), trained on
top of the frozen v1. Held-out accuracies (600 renders of test-split objects, in its
``metrics.json``): category 0.97, main colour 0.80 (v1: 0.72; 1.00 on plain objects, and on
a checkered one the two colours cover equal areas, so the main one is a guess), pattern 0.74,
finish 0.53 (matte vs glossy is chance at 64 px: ignore that head). v1.1's features, and so
every FID / KID, are v1's.

Never train a generator against this network (as a loss, a reward or for selection):
a metric that has been optimised stops measuring anything (Goodhart), and this one is small
enough to be fooled. The shipped checkpoint is ``data_samples/feature_net`` (safetensors +
JSON config + the held-out accuracies it measured); ``TRAIN_COMMAND`` retrains it in two
commands, v1 then its layout branch, through the project's one loop ``training.train``
(``FeatureObjective``, then ``LayoutObjective``; run folders ``runs/feature_net`` and
``runs/feature_net_layout`` with checkpoint, log and loss curve).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .training import TrainConfig, batches_per_epoch, is_main_process, objective_loss, step_generator, train, world_info
from .world import CATEGORIES, COLOURS, FINISHES, PATTERNS, make_object, objects_in_split, render_sdf, split_of

FORMAT = "sar3d-featnet"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data_samples" / "feature_net"
TRAIN_COMMAND = ("python -m sar3d_core.featnet --out runs/feature_net_v1_export && python -m sar3d_core.featnet "
                 "--layout-from runs/feature_net_v1_export --out data_samples/feature_net --epochs 20 "
                 "--batch-size 128 --threads 2")
DEFAULT_RUN = Path("runs") / "feature_net"  # the training run's folder (checkpoint, log.jsonl, loss.png)
LAYOUT_RUN = Path("runs") / "feature_net_layout"  # the same for a layout branch (--layout-from)
NONE = "none"  # the label of an absent value (the second colour of a plain object)
GENERAL_HEADS = {"category": CATEGORIES, "colour": tuple(COLOURS), "secondary_colour": tuple(COLOURS) + (NONE,),
                 "pattern": PATTERNS, "finish": tuple(FINISHES)}
NOT_LABELS = ("yaw_deg",)  # continuous attributes: not classified
LAYOUT_HEADS = ("colour", "secondary_colour", "pattern")  # what the layout branch of v1.1 reads
LAYOUT_NAME = "sar3d-featnet-v1.1 (procedural renders, 64 px; colours read from a 4 x 4 layout)"


def label_of(value) -> str:
    """An attribute value as a class name: ``None -> "none"``, ``True -> "yes"``, ``4 -> "4"``."""
    return NONE if value is None else ("yes" if value else "no") if isinstance(value, bool) else str(value)


def object_labels(obj) -> dict:
    """Head name -> class name for a procedural object (shape attributes as ``"<category>.<name>"``)."""
    return _labels_of({"category": obj.category, **obj.attributes})


def _labels_of(attributes: dict) -> dict:  # {"category": .., **obj.attributes} -> head labels
    out = {k: label_of(attributes.get(k)) for k in GENERAL_HEADS if k in attributes}
    category = attributes.get("category")
    out.update({f"{category}.{k}": label_of(v) for k, v in attributes.items()
                if k not in GENERAL_HEADS and k not in NOT_LABELS and k != "category" and "." not in k})
    out.update({k: label_of(v) for k, v in attributes.items() if "." in k})  # already head names
    return out


def vocabularies(labels) -> dict:
    """The general heads (from ``world``'s constants) plus one head per category shape attribute
    seen in ``labels`` (a list of ``object_labels``)."""
    shape_heads = {}
    for d in labels:
        for head, label in d.items():
            if head not in GENERAL_HEADS:
                shape_heads.setdefault(head, set()).add(label)
    return {**{k: list(v) for k, v in GENERAL_HEADS.items()},
            **{k: sorted(shape_heads[k]) for k in sorted(shape_heads)}}


@dataclass
class FeatureNetConfig:
    """Conv stack (3x3 conv, BatchNorm, ReLU) of ``widths`` / ``strides``; features = the last width.

    The default maps 64 px to 4 x 4 x 192 in 7 convs (about 0.5 M parameters, 30 M
    multiply-adds per image): small enough to train in minutes on 2 CPU cores. ``heads``:
    head name -> class names. There is no ``paper`` preset: the paper's network is Inception.
    """

    name: str = "sar3d-featnet-v1 (procedural renders, 64 px)"
    image_size: int = 64
    widths: tuple = (16, 32, 48, 64, 96, 128, 192)
    strides: tuple = (2, 1, 2, 1, 2, 1, 2)
    heads: dict = field(default_factory=lambda: {k: list(v) for k, v in GENERAL_HEADS.items()})
    # the layout branch (empty: none): these heads read a second conv stack whose last map is
    # flattened, not pooled, so they see where each colour sits (see ``FeatureNet``)
    layout_heads: tuple = ()
    layout_widths: tuple = (32, 32, 64, 64, 128, 128, 192)
    layout_hidden: int = 256

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureNetConfig":
        known, heads = {f.name for f in fields(cls)}, d.get("heads", {"category": [""]})
        if set(d) - known or len(d.get("widths", ())) != len(d.get("strides", ())) or not heads \
                or not all(isinstance(v, list) and v and all(isinstance(c, str) for c in v) for v in heads.values()):
            raise ValueError(f"not a FeatureNetConfig: {str(d)[:200]}")
        d = {**d, **{k: tuple(d.get(k, getattr(cls, k))) for k in ("widths", "strides", "layout_heads", "layout_widths")}}
        if set(d["layout_heads"]) - set(heads) or (d["layout_heads"] and len(d["layout_widths"]) != len(d["strides"])):
            raise ValueError(f"not a FeatureNetConfig: layout heads {d['layout_heads']} must be heads, and the "
                             f"layout branch needs one width per stride")
        return cls(**d)


def _conv_stack(widths, strides) -> nn.Sequential:
    """3x3 conv (no bias), BatchNorm, ReLU per (width, stride), from RGB."""
    layers, c_in = [], 3
    for width, stride in zip(widths, strides):
        layers += [nn.Conv2d(c_in, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c_in = width
    return nn.Sequential(*layers)


class FeatureNet(nn.Module):
    """Render -> features ``(N, D)`` -> one linear classifier per attribute head.

    With ``config.layout_heads`` (v1.1), those heads read a separate branch instead: its own
    conv stack down to 4 x 4, flattened (not averaged), then an MLP, trained for those heads
    alone. The main colour of a patterned object is a matter of layout and share (a gradient's
    is the one at the bottom, stripes' the wider band), which v1's shared, pooled features read
    poorly (``docs/notes/featnet_colour_probe.py``). The features (``features``, FID / KID) and
    the other heads never pass through the branch, so a branch added to a trained network leaves
    them unchanged.
    """

    def __init__(self, config: FeatureNetConfig | None = None):
        super().__init__()
        self.config = config = config or FeatureNetConfig()
        self.body = _conv_stack(config.widths, config.strides)
        c_in = config.widths[-1]
        # module names cannot hold ".": head "lamp.shade" is module "lamp__shade"
        self.heads = nn.ModuleDict({k.replace(".", "__"): nn.Linear(c_in, len(v)) for k, v in config.heads.items()
                                    if k not in config.layout_heads})
        if config.layout_heads:
            side = config.image_size
            for s in config.strides:
                side = (side - 1) // s + 1  # a 3x3 conv with padding 1
            self.layout = nn.Sequential(_conv_stack(config.layout_widths, config.strides), nn.Flatten(),
                                        nn.Linear(config.layout_widths[-1] * side * side, config.layout_hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(0.3))
            self.layout_heads = nn.ModuleDict({k.replace(".", "__"): nn.Linear(config.layout_hidden,
                                                                               len(config.heads[k]))
                                               for k in config.layout_heads})

    @property
    def name(self) -> str:
        return self.config.name

    def _prepare(self, images) -> torch.Tensor:
        x = torch.as_tensor(images)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"images have shape {tuple(x.shape)}: expected RGB (N, 3, H, W) in [0, 1] on white")
        if x.shape[-2:] != (self.config.image_size,) * 2:
            x = F.interpolate(x, size=(self.config.image_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
        return x * 2 - 1  # [0, 1] -> [-1, 1]

    def forward(self, images) -> tuple[torch.Tensor, dict]:
        """``images (N, 3, H, W)`` -> (features ``(N, D)``, head name -> logits ``(N, classes)``)."""
        x = self._prepare(images).to(next(self.parameters()).device)
        f_ND = self.body(x).mean(dim=(2, 3))  # global avg pool
        layout = self.layout_logits(x) if self.config.layout_heads else {}
        return f_ND, {k: layout[k] if k in layout else self.heads[k.replace(".", "__")](f_ND)
                      for k in self.config.heads}

    def layout_logits(self, x) -> dict:
        """The layout branch alone on prepared images ``x`` (``_prepare``): layout head -> logits."""
        z = self.layout(x)
        return {k: self.layout_heads[k.replace(".", "__")](z) for k in self.config.layout_heads}

    @torch.no_grad()
    def _in_batches(self, fn, images, batch_size: int) -> list:
        """``fn`` on each batch of ``images`` in eval mode (BatchNorm running statistics: one image's
        outputs never depend on its batch); the training mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            return [fn(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)

    def _batched(self, images, batch_size: int):
        outs = self._in_batches(self, images, batch_size)
        logits = {k: torch.cat([o[1][k] for o in outs]).cpu() for k in self.config.heads}
        return torch.cat([f for f, _ in outs]).cpu(), logits

    def features(self, images, batch_size: int = 256) -> torch.Tensor:
        """Features ``(N, D)`` for FID / KID; images are resized to ``image_size`` when needed.
        Only the body runs (never the layout branch)."""
        device = next(self.parameters()).device
        pooled = lambda x: self.body(self._prepare(x).to(device)).mean(dim=(2, 3)).cpu()  # noqa: E731
        return torch.cat(self._in_batches(pooled, images, batch_size))

    def predict(self, images, batch_size: int = 256) -> dict:
        """Head name -> predicted class per image; a shape head (``"lamp.shade"``) gives None
        where the predicted category is another one."""
        _, logits = self._batched(images, batch_size)
        out = {k: [self.config.heads[k][i] for i in v.argmax(1).tolist()] for k, v in logits.items()}
        for k in out:
            if "." in k:
                out[k] = [p if c == k.split(".")[0] else None for p, c in zip(out[k], out["category"])]
        return out

    def save_pretrained(self, folder) -> Path:
        """``folder/config.json`` + ``folder/model.safetensors`` (weights and BatchNorm statistics)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT, "version": 1, **asdict(self.config)}
        (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"), metadata={"format": FORMAT})
        return folder

    @classmethod
    def from_pretrained(cls, folder) -> "FeatureNet":
        """Load a folder written by ``save_pretrained``; FileNotFoundError or ValueError saying what is wrong."""
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: a feature network checkpoint holds "
                                        f"config.json and model.safetensors (train one with {TRAIN_COMMAND})")
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder / 'config.json'} is not valid JSON: {err}") from None
        if not isinstance(raw, dict) or raw.pop("format", None) != FORMAT or raw.pop("version", None) != 1:
            raise ValueError(f"{folder / 'config.json'} is not a {FORMAT} version 1 config")
        try:
            net = cls(FeatureNetConfig.from_dict(raw))
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{folder / 'config.json'} is not a valid feature network config: {err}") from None
        try:
            state = load_file(str(folder / "model.safetensors"))
        except Exception as err:  # safetensors raises its own error type on a damaged file
            raise ValueError(f"{folder / 'model.safetensors'} is not a readable safetensors file: {err}") from None
        expected = net.state_dict()
        bad = sorted(set(expected) ^ set(state))
        bad += [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if bad:
            raise ValueError(f"{folder / 'model.safetensors'} does not match its config.json "
                             f"(missing, extra or reshaped: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''})")
        net.load_state_dict(state)
        return net.eval()


def load_default() -> FeatureNet:
    """The shipped checkpoint ``data_samples/feature_net`` (v1.1), in eval mode."""
    if not (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        raise FileNotFoundError(f"the feature network checkpoint {DEFAULT_CHECKPOINT} is missing: "
                                f"train it with `{TRAIN_COMMAND}` (about 30 minutes on 2 CPU cores)")
    return FeatureNet.from_pretrained(DEFAULT_CHECKPOINT)


# ------------------------------------------------------------------------------ renders, labels
def random_views(rng: np.random.Generator, n: int) -> torch.Tensor:
    """``n`` cameras ``(n, 25)``: azimuth uniform, elevation -5..40 deg, radius 1.8..2.0, default fov."""
    from .cameras import orbit_cameras

    return orbit_cameras(rng.uniform(0, 360, n), rng.uniform(-5, 40, n), rng.uniform(1.8, 2.0, n))


def render_objects(objects, views_per_object: int, seed: int = 0, size: int = 64, supersample_share: float = 0.0,
                   progress: bool = True, desc: str = "renders") -> torch.Tensor:
    """Each object from ``views_per_object`` random views -> uint8 ``(len(objects) * V, 3, size, size)``;
    a share of the objects (drawn by ``seed``) is rendered with 2 x 2 supersampling."""
    rng, out = np.random.default_rng(seed), []
    for obj in tqdm(objects, desc=desc, unit="obj", disable=not progress):
        c = random_views(rng, views_per_object)
        s = 2 if rng.random() < supersample_share else 1
        out.append((render_sdf(obj, c, size, size, supersample=s).rgb * 255).round().to(torch.uint8))
    return torch.cat(out)


def _label_tensor(labels: list, heads: dict) -> torch.Tensor:
    """Labels (list of head -> class name) -> ``(N, heads)`` class indices, -1 where absent or unknown."""
    index = {k: {c: i for i, c in enumerate(v)} for k, v in heads.items()}
    return torch.tensor([[index[k].get(d[k], -1) if k in d else -1 for k in heads] for d in labels],
                        dtype=torch.long).reshape(len(labels), len(heads))


def training_objects(num_objects: int) -> list:
    """The first ``num_objects`` objects of the train and val splits (seeds 0, 1, ...; test is never used).

    Val is included on purpose: the (category, colour) pairs held out of train occur there,
    and a probe that never saw a green lamp learns "lamps are not green" (trained on train
    alone, colour accuracy was 0.77 on seen pairs and 0.43 on held-out pairs of the test split).
    """
    objects, seed = [], 0
    while len(objects) < num_objects:
        if split_of(seed) != "test":
            objects.append(make_object(seed))
        seed += 1
    return objects


def training_renders(num_objects: int, views_per_object: int, seed: int, size: int = 64,
                     supersample_share: float = 0.15, cache_dir=None, progress: bool = True):
    """Renders of ``training_objects(num_objects)`` -> (uint8 images, labels per image, seconds
    the rendering took). Rendered once into ``<cache>/featnet/`` (data.default_cache_dir);
    reused only while the objects' labels are unchanged (the procedural world may evolve)."""
    from .data import default_cache_dir

    objects = training_objects(num_objects)
    labels = [object_labels(o) for o in objects for _ in range(views_per_object)]
    path = Path(cache_dir or default_cache_dir() / "featnet") / \
        f"trainval_{num_objects}x{views_per_object}_{size}px_seed{seed}_ss{supersample_share}.pt"
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("labels") == json.dumps(labels) and cached["images"].shape == (len(labels), 3, size, size):
            return cached["images"], labels, cached.get("render_seconds")
        print(f"{path} was rendered from another version of the procedural world: rendering again")
    t0 = time.perf_counter()
    images = render_objects(objects, views_per_object, seed, size, supersample_share, progress, desc="train renders")
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # renamed into place: a kill or a second rank
    torch.save({"images": images, "labels": json.dumps(labels), "render_seconds": seconds}, tmp)
    os.replace(tmp, path)  # never leaves half a file
    return images, labels, seconds


# ------------------------------------------------------------------------------ augmentation
def gaussian_blur(x_NCHW: torch.Tensor, sigma_N: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (pixels) per image; sigma 0 leaves an image unchanged."""
    N, C, H, W = x_NCHW.shape
    t = torch.arange(-radius, radius + 1, dtype=x_NCHW.dtype, device=x_NCHW.device)
    k_NK = torch.exp(-t ** 2 / (2 * sigma_N.clamp_min(1e-3)[:, None] ** 2))  # exp(-t^2 / 2 sigma^2)
    k_NK = (k_NK / k_NK.sum(1, keepdim=True)).repeat_interleave(C, 0)
    x = F.pad(x_NCHW.reshape(1, N * C, H, W), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, k_NK[:, None, None, :], groups=N * C)  # along width
    return F.conv2d(x, k_NK[:, None, :, None], groups=N * C).reshape(N, C, H, W)  # along height


def augment(x_NCHW: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror, shift (+-4 px), scale (0.87..1.15), blur (sigma 0..1.2 px on half the images), pixel noise:
    views of the same object that a generator's blurry, off-centre renders resemble."""
    N, device = x_NCHW.shape[0], x_NCHW.device
    u = torch.rand(N, 6, generator=g).to(device)  # drawn on the generator's device, used on the images'
    scale, flip = 0.87 + 0.28 * u[:, 0], torch.where(u[:, 1] < 0.5, -1.0, 1.0)
    theta = torch.zeros(N, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = (u[:, 2:4] - 0.5) * 0.25  # +-0.125 of the half width = +-4 px at 64 px
    grid = F.affine_grid(theta, list(x_NCHW.shape), align_corners=False)
    x = F.grid_sample(x_NCHW - 1, grid, align_corners=False) + 1  # zero padding of x - 1: a white border
    x = gaussian_blur(x, torch.where(u[:, 4] < 0.5, 2.4 * u[:, 4], 0.0))
    return (x + 0.03 * u[:, 5, None, None, None] * torch.randn(x.shape, generator=g).to(device)).clamp(0, 1)


# ------------------------------------------------------------------------------ training, evaluation
def _loss(logits: dict, y_NH: torch.Tensor) -> torch.Tensor:
    """``1/N sum_i sum_{h labelled for i} CE(z_ih, y_ih)``: every image weighs the same, whatever its
    category's number of shape heads (a mean per head would give a category's 3 images of a
    batch the weight of all 64)."""
    total = sum(F.cross_entropy(z, y_NH[:, h], ignore_index=-1, reduction="sum")
                for h, z in enumerate(logits.values()))
    return total / len(y_NH)


def attribute_accuracy(net: FeatureNet, images, labels: list) -> dict:
    """Head -> share of images classified as labelled. ``labels[i]``: ``{"category": .., **obj.attributes}``
    or ``object_labels(obj)``; heads without any labelled image are left out."""
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    y_NH = _label_tensor([_labels_of(d) for d in labels], net.config.heads)
    _, logits = net._batched(images, 256)
    out = {}
    for h, (k, z) in enumerate(logits.items()):
        has = torch.tensor([k in _labels_of(d) for d in labels], dtype=torch.bool)
        if has.any():  # an unknown class name (-1) counts as wrong
            out[k] = float((z.argmax(1)[has] == y_NH[has, h]).float().mean())
    if "secondary_colour" in out and "colour" in out:
        # the two colours as a set: which one is "main" is not visible on a checkered object (half and half)
        p_N2 = torch.stack([logits[k].argmax(1) for k in ("colour", "secondary_colour")], 1)
        names = [net.config.heads["colour"], net.config.heads["secondary_colour"]]
        pairs = [{names[0][a], names[1][b]} - {NONE} for a, b in p_N2.tolist()]
        true = [{_labels_of(d).get("colour"), _labels_of(d).get("secondary_colour")} - {NONE} for d in labels]
        out["colour_pair"] = sum(a == b for a, b in zip(pairs, true)) / len(labels)
    return out


def evaluate_on_split(net: FeatureNet, split: str = "test", count: int = 300, views_per_object: int = 2,
                      seed: int = 1, blur_sigma: float = 0.0, progress: bool = True) -> dict:
    """Attribute accuracies on fresh renders of the first ``count`` objects of a held-out split
    (optionally blurred by ``blur_sigma`` px), plus ``category@heldout_pairs``: the category
    accuracy on the (category, colour) pairs that never occur in training."""
    from .world import HELDOUT_PAIRS

    objects = objects_in_split(split, count)
    images = render_objects(objects, views_per_object, seed, net.config.image_size, progress=progress,
                            desc=f"{split} renders").float() / 255
    if blur_sigma > 0:
        images = gaussian_blur(images, torch.full((len(images),), float(blur_sigma)))
    labels = [{"category": o.category, **o.attributes} for o in objects for _ in range(views_per_object)]
    acc = attribute_accuracy(net, images, labels)
    held = [i for i, d in enumerate(labels) if (d["category"], d["colour"]) in HELDOUT_PAIRS]
    if held:
        acc_held = attribute_accuracy(net, images[held], [labels[i] for i in held])
        acc.update({f"{k}@heldout_pairs": acc_held[k] for k in ("category", "colour")})
    return acc


class LabelledRenders(torch.utils.data.Dataset):
    """Renders (uint8 ``(N, 3, H, W)``) with their class indices per head (``(N, heads)``, -1 where absent)."""

    def __init__(self, images_N3HW: torch.Tensor, labels_NH: torch.Tensor):
        if images_N3HW.ndim != 4 or labels_NH.ndim != 2 or len(images_N3HW) != len(labels_NH):
            raise ValueError(f"need images (N, 3, H, W) and labels (N, heads), got {tuple(images_N3HW.shape)} "
                             f"and {tuple(labels_NH.shape)}")
        self.images, self.labels = images_N3HW, labels_NH

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"images": self.images[i], "labels": self.labels[i]}


class FeatureObjective(nn.Module):
    """``_loss`` of a ``FeatureNet`` on augmented renders (what ``training.train`` minimises); the
    augmentation draws from ``step_generator(step)``."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = net
        self.config = net.config  # recorded in the run's config.json

    def forward(self, batch: dict, step: int) -> dict:
        _, logits = self.net(augment(batch["images"].float() / 255, step_generator(step)))
        return {"loss": _loss(logits, batch["labels"])}


class LayoutObjective(FeatureObjective):
    """``FeatureObjective`` for a network whose body and pooled heads are frozen (a trained v1
    network with a new layout branch): only the branch learns, and the body's BatchNorm keeps its
    running statistics (it stays in eval mode while the loop calls ``train()``)."""

    def __init__(self, net: FeatureNet):
        super().__init__(net)
        for p in list(net.body.parameters()) + list(net.heads.parameters()):
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.body.eval()
        return self

    def forward(self, batch: dict, step: int) -> dict:
        x = augment(batch["images"].float() / 255, step_generator(step))
        logits = self.net.layout_logits(self.net._prepare(x))  # the frozen body need not run
        heads = list(self.net.config.heads)
        y_NH = batch["labels"][:, [heads.index(k) for k in logits]]
        return {"loss": _loss(logits, y_NH)}


def add_layout_branch(base: FeatureNet, heads=LAYOUT_HEADS, seed: int = 0, widths=None) -> FeatureNet:
    """A v1.1 network: ``base``'s body and other heads (copied), plus a fresh layout branch for ``heads``
    (conv ``widths``, one per stride of ``base``; default ``FeatureNetConfig.layout_widths``)."""
    if base.config.layout_heads:
        raise ValueError(f"{base.name} already has a layout branch: start from a v1 network")
    widths = tuple(widths or FeatureNetConfig.layout_widths)
    if len(widths) != len(base.config.strides):
        raise ValueError(f"the layout branch needs one width per stride ({len(base.config.strides)}), got {widths}")
    config = FeatureNetConfig(**{**asdict(base.config), "name": LAYOUT_NAME, "layout_heads": tuple(heads),
                                 "layout_widths": widths})
    net = new_feature_net(config, seed)
    missing, unexpected = net.load_state_dict(base.state_dict(), strict=False)
    if any(not k.startswith("layout") for k in missing) or \
            any(not k.startswith(tuple(f"heads.{h.replace('.', '__')}." for h in heads)) for k in unexpected):
        raise ValueError(f"cannot add a layout branch to this network (missing {missing[:3]}, extra {unexpected[:3]})")
    return net


def fit_feature_net(net: FeatureNet, dataset: LabelledRenders, cfg: TrainConfig, resume: bool = False,
                    layout_only: bool = False) -> list[dict]:
    """Train ``net`` in place through ``training.train`` (``FeatureObjective``; ``layout_only``: the
    layout branch alone, ``LayoutObjective``); leaves it in eval mode. Returns the log rows."""
    objective = LayoutObjective(net) if layout_only else FeatureObjective(net)
    rows = train(objective, dataset, objective_loss, cfg, resume=resume)
    net.eval()
    return rows


def feature_net_train_config(num_images: int, epochs: int, seed: int = 0, batch_size: int = 64, lr: float = 3e-3,
                             run_dir=DEFAULT_RUN) -> TrainConfig:
    """``epochs`` passes over ``num_images`` renders: Adam (AdamW without weight decay), torch's one-cycle
    schedule (15 % cosine warm-up, cosine decay; ``TrainConfig.schedule``), no gradient clipping; a checkpoint every 200 steps."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    steps = epochs * batches_per_epoch(num_images, batch_size, world_info()[1])
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0, grad_clip=0.0, log_every=10,
                       ckpt_every=200, seed=seed, out_dir=str(run_dir), betas=(0.9, 0.999), warmup=0.15,
                       schedule="one-cycle")


def new_feature_net(config: FeatureNetConfig, seed: int = 0) -> FeatureNet:
    """A freshly initialised ``FeatureNet``, the same for the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FeatureNet(config)


def train_feature_net(out_folder=DEFAULT_CHECKPOINT, num_objects: int = 3000, views_per_object: int = 4,
                      epochs: int = 10, seed: int = 0, batch_size: int = 64, lr: float = 3e-3,
                      eval_count: int = 300, config: FeatureNetConfig | None = None,
                      progress: bool = True, run_dir=DEFAULT_RUN, resume: bool = False,
                      layout_from=None) -> FeatureNet:
    """Render, train (``fit_feature_net``: run folder ``run_dir`` with checkpoint, ``log.jsonl`` and
    ``loss.png``; ``resume`` continues it), evaluate on the test split, save to ``out_folder``
    (checkpoint + ``metrics.json``). Returns the trained network in eval mode.

    ``layout_from``: a trained v1 checkpoint folder; its body and heads are kept frozen and only a
    new layout branch (``add_layout_branch``) is trained, which makes a v1.1 network with the same
    features (FID / KID) and category heads. The renders are the same for the same arguments."""
    base = FeatureNet.from_pretrained(layout_from) if layout_from else None  # bad input fails before rendering
    base_metrics = None
    if base is not None:
        net = add_layout_branch(base, seed=seed)  # checks the base before anything is rendered
        metrics_path = Path(layout_from) / "metrics.json"
        base_metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    t0 = time.perf_counter()
    images, labels, first_render_s = training_renders(num_objects, views_per_object, seed, progress=progress)
    render_s = time.perf_counter() - t0
    if base is None:
        net = new_feature_net(config or FeatureNetConfig(heads=vocabularies(labels)), seed)
    dataset = LabelledRenders(images, _label_tensor(labels, net.config.heads))
    cfg = feature_net_train_config(len(dataset), epochs, seed, batch_size, lr, run_dir)
    if is_main_process():
        print(f"{net.name}: {sum(p.numel() for p in net.parameters())} parameters, {len(net.config.heads)} heads, "
              f"{len(images)} renders of {num_objects} train objects ({render_s:.0f} s), {cfg.steps} steps")
    fit_feature_net(net, dataset, cfg, resume, layout_only=base is not None)
    train_s = time.perf_counter() - t0 - render_s
    if not is_main_process():  # under torchrun the ranks hold the same weights: one writer
        return net
    test = evaluate_on_split(net, "test", eval_count, progress=progress)
    test_blur = evaluate_on_split(net, "test", eval_count, blur_sigma=1.0, progress=progress)
    net.save_pretrained(out_folder)
    command = f"python -m sar3d_core.featnet --out {out_folder} --objects {num_objects} " \
              f"--views {views_per_object} --epochs {epochs} --seed {seed}" + \
              (f" --batch-size {batch_size} --layout-from {layout_from}" if base is not None else "")
    if base_metrics:  # the body's own command first: the branch needs that network
        command = f"{base_metrics['command']} && {command}"
    metrics = {"feature_network": net.name, "command": command,
               "train_renders": len(images), "render_seconds": round(first_render_s or render_s),
               "train_seconds": round(train_s), "steps": cfg.steps,
               "threads": torch.get_num_threads(), "test_split": {"objects": eval_count, "views_per_object": 2},
               "test_accuracy": {k: round(v, 4) for k, v in test.items()},
               "test_accuracy_blur_sigma_1px": {k: round(v, 4) for k, v in test_blur.items()}}
    if base_metrics:
        metrics["base_network"] = base_metrics
    (Path(out_folder) / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(json.dumps({k: metrics[k] for k in ("command", "render_seconds", "train_seconds")}))
    for k in ("category", "colour", "secondary_colour", "colour_pair", "pattern", "finish", "category@heldout_pairs",
              "colour@heldout_pairs"):
        print(f"  test {k:24s} {test.get(k, float('nan')):.3f}   (blurred 1 px: {test_blur.get(k, float('nan')):.3f})")
    return net


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="train the offline feature network (FID/KID features, "
                                "attribute accuracy)")
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder (default: the shipped one)")
    p.add_argument("--objects", type=int, default=3000, help="train and val objects to render (default 3000)")
    p.add_argument("--views", type=int, default=4, help="random views per object (default 4)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-count", type=int, default=300, help="test-split objects for the held-out accuracy")
    p.add_argument("--layout-from", default=None,
                   help="a trained v1 network: keep it frozen and train a layout branch for the colour heads (v1.1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a busy 2-core machine the SDF renderer runs "
                        "many times faster on one thread than on two)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_feature_net(args.out, args.objects, args.views, args.epochs, args.seed, batch_size=args.batch_size,
                      eval_count=args.eval_count, layout_from=args.layout_from,
                      run_dir=LAYOUT_RUN if args.layout_from else DEFAULT_RUN)


if __name__ == "__main__":
    main()
