"""Every tutorial executes end to end with papermill in fast mode (DESIGN.md §7)."""
import pytest

from sar3d_core.tutorials import list_notebooks, run_notebook


@pytest.mark.notebook
@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.name)
def test_notebook_executes_in_fast_mode(path, tmp_path):
    out, seconds = run_notebook(path, tmp_path, fast=True, html=False, timeout=600)
    assert out.exists()
    print(f"{path.name}: {seconds:.1f} s in fast mode")
