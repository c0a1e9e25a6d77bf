# The two quick-start commands (README): `make tutorials` and `make test`.
# Each creates .venv and installs the project with its dev extras when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FAST ?= 0

.PHONY: tutorials test install clean-build

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Execute every tutorial with papermill into build/ and render HTML beside it.
# `make tutorials FAST=1` runs the shrunken CI version.
tutorials: $(STAMP)
	$(PY) -m sar3d_core.cli tutorials --out build $(if $(filter 1,$(FAST)),--fast,)

# Unit, reference and property tests, plus every notebook in fast mode.
test: $(STAMP)
	$(PY) -m pytest -q

clean-build:
	rm -rf build
