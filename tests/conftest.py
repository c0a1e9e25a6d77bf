"""Shared test helpers."""
from pathlib import Path

import pytest

from sar3d_core.world import CATEGORIES, make_object

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DATA = REPO_ROOT.parent / "shared" / "reference_data"


def reference_path(*parts) -> Path:
    """A path inside ../shared/reference_data, or skip the test with the reason."""
    path = REFERENCE_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real reference sample {path} is absent (it lives outside the repository, in ../shared)")
    return path


@pytest.fixture(scope="session")
def first_objects():
    """The objects of seeds 0..499 (tests/test_shapes.py and tests/test_world.py share them)."""
    return [make_object(seed) for seed in range(500)]


@pytest.fixture(scope="session")
def one_per_category(first_objects):
    found = {}
    for obj in first_objects:
        found.setdefault(obj.category, obj)
    return [found[c] for c in CATEGORIES]


def run_torchrun(script, nproc: int = 2, timeout: int = 300):
    """Run ``script`` under ``torch.distributed.run`` (one thread per process, gloo on loopback)
    and return the finished process; the caller asserts on its return code."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(script)], env=env, capture_output=True, text=True, timeout=timeout)
