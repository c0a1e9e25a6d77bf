"""Execute the numbered tutorials with papermill (DESIGN.md §6-7).

Notebooks are stored without outputs in ``notebooks/``. Executed copies go to
``build/`` (git-ignored) with an HTML rendering beside each. ``fast=True`` is the
papermill parameter that shrinks the work for CI.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def list_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered tutorials ``NN_*.ipynb`` in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def notebook_has_outputs(path: Path) -> bool:
    """True if any code cell of the stored notebook holds outputs or an execution count."""
    nb = json.loads(Path(path).read_text())
    return any(
        cell.get("outputs") or cell.get("execution_count") is not None
        for cell in nb.get("cells", []) if cell.get("cell_type") == "code"
    )


def run_notebook(path: Path, out_dir: Path, fast: bool = True, html: bool = True,
                 timeout: int = 1200, parameters: dict | None = None) -> tuple[Path, float]:
    """Execute one notebook with papermill into ``out_dir``; returns (executed path, seconds)."""
    import papermill

    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    params = {"fast": fast, **(parameters or {})}
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path), str(out), parameters=params, cwd=str(path.parent),
        kernel_name="python3", progress_bar=False, execution_timeout=timeout,
    )
    seconds = time.perf_counter() - start
    if html:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_filename(str(out))
        out.with_suffix(".html").write_text(body, encoding="utf-8")
    return out, seconds


def run_all(out_dir: Path = REPO_ROOT / "build", fast: bool = False, only: str | None = None) -> dict[str, float]:
    """Execute every tutorial (or those whose name contains ``only``); returns seconds per notebook."""
    from tqdm.auto import tqdm

    notebooks = [p for p in list_notebooks() if only is None or only in p.name]
    if not notebooks:
        raise FileNotFoundError(f"no tutorials match {only!r} in {NOTEBOOK_DIR}")
    times = {}
    for nb in tqdm(notebooks, desc="tutorials", unit="notebook"):
        _, seconds = run_notebook(nb, out_dir, fast=fast)
        times[nb.name] = seconds
        print(f"{nb.name}: {seconds:.1f} s ({'fast' if fast else 'full'} mode) -> {Path(out_dir) / nb.name}")
    return times
