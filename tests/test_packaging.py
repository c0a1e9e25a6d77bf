"""Repository rules: environment.yml mirrors pyproject, notebooks are stored clean."""
import json
import re
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO_ROOT
from sar3d_core.tutorials import list_notebooks, notebook_has_outputs

NOTEBOOKS = list_notebooks()


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env_lines = (REPO_ROOT / "environment.yml").read_text().split("pip:", 1)[1].splitlines()
    listed = {_name(line.strip()[2:]) for line in env_lines if line.strip().startswith("- ") and "-e ." not in line}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_there_are_tutorials():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("01_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs_and_has_parameters(path):
    assert not notebook_has_outputs(path), f"{path.name} holds outputs: clear them before committing"
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "fast = False" in "".join(tagged[0]["source"]), \
        f"{path.name} needs one cell tagged 'parameters' that sets fast = False"
    missing = [i for i, c in enumerate(nb["cells"]) if not c.get("id")]
    assert not missing, f"{path.name}: cells {missing} have no id (nbformat 4.5 wants one; `nbformat.validator.normalize`)"


def test_cli_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "sar3d_core.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("render", "data", "tutorials"):
        assert command in out


def test_pyproject_lists_every_package():
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "sar3d_core").rglob("__init__.py")}
    assert listed == found, f"pyproject.toml's [tool.setuptools] packages {sorted(listed)}: the tree has {sorted(found)}"
