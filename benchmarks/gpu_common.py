"""What the GPU check scripts share: synchronising timers and running every part of a check."""
from __future__ import annotations

import json
import traceback

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_parts(parts, out: str | None = None) -> dict:
    """Run ``part(result)`` for each part in turn, reporting a failed part and going on, and
    write the result to ``out``."""
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for part in parts:
        name = getattr(part, "__name__", None) or part.func.__name__  # a function or a functools.partial
        try:
            part(result)
        except Exception as err:  # report every part even when one fails
            result[name + "_error"] = repr(err)
            print(name, "FAILED", repr(err))
            traceback.print_exc()
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return result
