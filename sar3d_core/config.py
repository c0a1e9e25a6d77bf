"""Presets and token arithmetic (paper Sec. 4.1-4.3, Supp. B-C; DESIGN.md §2).

Every model in the project reads one `SAR3DConfig`. Two presets exist:

* ``paper``: the numbers of the paper: 256 px views, 6 input views, a latent
  triplane of ``3 x 8 x 16 x 16``, K = 10 scales ``1,2,3,4,5,6,8,10,13,16``, one
  shared codebook of V = 16384 entries, an AR transformer of depth 24 (image) or 16
  (text) and width ``64 x depth``, CFG scale 4, top-k 10, top-p 0.5.
* ``tiny``: sized for a 2-core CPU, trained in this repository and shipped. Beyond the
  sizes, it switches on the component options of ``TINY_EXTRA`` (``cfg.extra``): the
  colour stream of the encoder and decoder, geometric lifting of the input pixels into the
  planes (``encoder``), and l2-normalised code vectors (``quantizer``). A checkpoint's
  ``config.json`` spells its options out, so checkpoints saved before an option existed
  still load as they were trained.

The token arithmetic is shared by every tutorial: a schedule ``(s_1, ..., s_K)`` of
square scales gives ``3 * s_k^2`` tokens at scale k (three planes); the captioner of
Sec. 4.3 keeps the first ``K - 2`` scales, 765 of the paper's 2040 tokens (37.5%).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

NUM_PLANES = 3  # the triplane: xy, xz, yz


def _as_hw(scale) -> tuple[int, int]:
    """A scale is an int ``s`` (an ``s x s`` map) or a pair ``(h, w)``."""
    if isinstance(scale, int):
        hw = (scale, scale)
    else:
        hw = tuple(int(v) for v in scale)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"scale {scale!r} must be a positive int or a pair (h, w) of positive ints")
    return hw


def tokens_per_scale(schedule, planes: int = NUM_PLANES) -> list[int]:
    """Tokens at each scale for all planes: ``planes * h_k * w_k``.

    >>> tokens_per_scale([1, 2, 3, 4, 5, 6, 8, 10, 13, 16])
    [3, 12, 27, 48, 75, 108, 192, 300, 507, 768]
    """
    if len(schedule) == 0:
        raise ValueError("schedule is empty: give at least one scale, e.g. [1, 2, 4]")
    return [planes * h * w for h, w in map(_as_hw, schedule)]


def total_tokens(schedule, planes: int = NUM_PLANES) -> int:
    """Length of the whole multi-scale sequence (2040 for the paper's schedule)."""
    return sum(tokens_per_scale(schedule, planes))


def truncated_tokens(schedule, keep: int | None = None, planes: int = NUM_PLANES) -> tuple[int, float]:
    """Tokens in the first ``keep`` scales (default ``K - 2``, Sec. 4.3) and their share.

    The paper's schedule gives ``(765, 0.375)``.
    """
    per_scale = tokens_per_scale(schedule, planes)
    keep = len(per_scale) - 2 if keep is None else keep
    if not 1 <= keep <= len(per_scale):
        raise ValueError(f"keep={keep} must be between 1 and the number of scales ({len(per_scale)})")
    kept = sum(per_scale[:keep])
    return kept, kept / sum(per_scale)


# the component options of the tiny preset (encoder.EncoderSettings, triplane.TriplaneSettings, quantizer)
TINY_EXTRA = {
    "encoder": {"colour_latent_channels": 4, "lift_resolution": 32},
    "triplane": {"colour_channels": 8, "colour_latent_channels": 4, "colour_skip": True},
    "quantizer": {"l2_codes": True},
}


@dataclass
class SAR3DConfig:
    """All sizes of the pipeline. Use `SAR3DConfig.paper()` or `SAR3DConfig.tiny()`."""

    name: str = "tiny"
    # data (Sec. 4.1)
    image_size: int = 64
    num_input_views: int = 6
    num_supervision_views: int = 6
    in_channels: int = 10  # RGB (3) + depth (1) + Plücker (6)
    # latent triplane and quantizer (Sec. 4.1, Alg. 1-2)
    latent_channels: int = 8
    latent_size: int = 8
    scales: tuple = (1, 2, 3, 4, 6, 8)
    codebook_size: int = 1024
    beta: float = 0.25  # commitment weight
    # autoregressive transformer (Sec. 4.2, Supp. C)
    ar_depth_text: int = 4
    ar_depth_image: int = 4
    ar_width: int = 192
    cond_dropout: float = 0.1
    cfg_scale: float = 4.0
    top_k: int = 10
    top_p: float = 0.5
    extra: dict = field(default_factory=dict)

    @classmethod
    def paper(cls) -> "SAR3DConfig":
        return cls(
            name="paper", image_size=256, latent_channels=8, latent_size=16,
            scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), codebook_size=16384,
            ar_depth_text=16, ar_depth_image=24, ar_width=64 * 24,
        )

    @classmethod
    def tiny(cls) -> "SAR3DConfig":
        return cls(extra=json.loads(json.dumps(TINY_EXTRA)))  # a deep copy: callers may edit cfg.extra

    @classmethod
    def preset(cls, name: str) -> "SAR3DConfig":
        presets = {"paper": cls.paper, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}: choose one of {sorted(presets)}")
        return presets[name]()

    def __post_init__(self):
        self.scales = tuple(self.scales)
        if _as_hw(self.scales[-1]) != (self.latent_size, self.latent_size):
            raise ValueError(
                f"the last scale {self.scales[-1]} must equal the latent size {self.latent_size}"
            )

    # token arithmetic of this config
    def tokens_per_scale(self) -> list[int]:
        return tokens_per_scale(self.scales)

    def total_tokens(self) -> int:
        return total_tokens(self.scales)

    def truncated_tokens(self, keep: int | None = None) -> tuple[int, float]:
        return truncated_tokens(self.scales, keep)

    # serialisation next to every checkpoint
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SAR3DConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config has unknown fields {sorted(unknown)}: is it from another version?")
        return cls(**d)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path) -> "SAR3DConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return cls.from_dict(json.loads(path.read_text()))


def component_settings(cls, cfg: SAR3DConfig, key: str):
    """Settings of one component (a dataclass with a ``paper()`` preset) for ``cfg``:
    the preset of ``cfg.name``, overridden by the dict ``cfg.extra[key]``."""
    base = cls.paper() if cfg.name == "paper" else cls()
    overrides = dict(cfg.extra.get(key, {}))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"cfg.extra[{key!r}] has unknown keys {sorted(unknown)}: choose from {sorted(known)}")
    return dataclasses.replace(base, **overrides)
