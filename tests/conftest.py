"""Shared test helpers."""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference_data"


def reference_path(*parts) -> Path:
    """A path inside ../shared/reference_data, or skip the test with the reason."""
    path = REFERENCE_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real reference sample {path} is absent (it lives outside the repository, in ../shared)")
    return path
