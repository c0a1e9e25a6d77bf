"""The shipped checkpoints by name: one place that says what lies in ``data_samples/`` and loads it.

Every shipped model is a folder of safetensors weights and a JSON config, written by its
class's ``save_pretrained`` and read by its ``from_pretrained`` (nothing is unpickled), and
each folder's ``training.json`` (or ``metrics.json``) records the command that made it.

    >>> from sar3d_core.checkpoints import SHIPPED, load_shipped
    >>> vqvae = load_shipped("vqvae_tiny_lift")      # a SAR3DVQVAE, in eval mode
    >>> gen = load_shipped("ar_text_tiny")           # a generate.Pipeline with its VQVAE

``SHIPPED`` maps each name to what it is; ``shipped_path(name)`` gives its folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_SAMPLES = Path(__file__).resolve().parent.parent / "data_samples"


@dataclass(frozen=True)
class Shipped:
    kind: str  # "vqvae", "generator", "condition_encoder", "feature_net", "captioner", "flexicubes"
    what: str  # one line for a learner


SHIPPED = {
    "vqvae_tiny_lift": Shipped("vqvae", "the default VQVAE, the tiny preset's: geometric lifting, colour stream and "
                                        "readout, l2-normalised codes (tutorial 02); the generators read its tokens"),
    "vqvae_tiny_colour": Shipped("vqvae", "the same without lifting, readout and l2 codes (tutorial 02 compares them)"),
    "vqvae_single_scale_lift": Shipped("vqvae", "one scale at the latent size, fine-tuned from vqvae_tiny_lift: "
                                                "the next-token baseline's VQVAE"),
    "ar_text_tiny": Shipped("generator", "next-scale text-to-3D transformer (Sec. 4.2)"),
    "ar_image_tiny": Shipped("generator", "next-scale image-to-3D transformer (Sec. 4.2)"),
    "ar_text_next_token_tiny": Shipped("generator", "the next-token (raster) text-to-3D baseline"),
    "tiny_clip": Shipped("condition_encoder", "the tiny CLIP that encodes prompts and condition images"),
    "feature_net": Shipped("feature_net", "the offline evaluation network: FID/KID features, category and colour"),
    "captioner_tiny": Shipped("captioner", "SAR3D-LLM: captions from the first K-2 scales (Sec. 4.3)"),
    "flexicubes_tiny": Shipped("flexicubes", "SAR3D-FlexiCubes: vqvae_tiny_lift's decoder fine-tuned with FlexiCubes "
                                             "heads (Sec. 4.1, Eq. 9); reads the same tokens"),
}


def read_meta(path, fmt: str) -> dict:
    """A checkpoint's ``config.json`` as a dict whose ``"format"`` is ``fmt``; ValueError (one line
    naming the file) when it is not valid JSON or holds another format."""
    import json

    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path} has format {got!r}, expected {fmt!r}")
    return meta


def load_weights(model, path, what: str = "its config") -> None:
    """Load a ``model.safetensors`` into ``model``; ValueError (one line naming the file) when it is
    unreadable or its tensors do not match the model's names and shapes (``what`` they should fit)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    own = model.state_dict()
    bad = sorted(set(own) ^ set(tensors)) + sorted(k for k in set(own) & set(tensors)
                                                    if own[k].shape != tensors[k].shape)
    if bad:
        raise ValueError(f"weights in {path} do not fit {what}: {bad[:5]}")
    model.load_state_dict(tensors)


def shipped_path(name: str) -> Path:
    """The folder of shipped checkpoint ``name``; ValueError for an unknown name, FileNotFoundError
    when the folder is not there."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped checkpoint called {name!r}: choose one of {', '.join(sorted(SHIPPED))}")
    folder = DATA_SAMPLES / name
    if not folder.is_dir():
        raise FileNotFoundError(f"the shipped checkpoint {name} is missing from {DATA_SAMPLES}: "
                                f"its training.json (in the repository history) holds the command that makes it")
    return folder


def load_shipped(name: str):
    """Load shipped checkpoint ``name`` with its class's ``from_pretrained``, in eval mode."""
    folder = shipped_path(name)
    kind = SHIPPED[name].kind
    if kind == "vqvae":
        from .vqvae import SAR3DVQVAE

        return SAR3DVQVAE.from_pretrained(folder).eval()
    if kind == "generator":
        from .generate import Pipeline

        return Pipeline.from_pretrained(folder)
    if kind == "condition_encoder":
        from .conditioning import ConditionEncoder

        return ConditionEncoder.tiny_clip(folder)
    if kind == "feature_net":
        from .featnet import FeatureNet

        return FeatureNet.from_pretrained(folder).eval()
    if kind == "flexicubes":
        from .flexicubes_train import SAR3DFlexiCubes

        return SAR3DFlexiCubes.from_pretrained(folder)
    from .captioner import SAR3DCaptioner

    return SAR3DCaptioner.from_pretrained(folder).eval()
