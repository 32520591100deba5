# Two entry points: `make run` (the main job on the embedded synthetic dataset) and
# `make test` (the test suite). Both create or refresh the local virtual environment.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv clean

venv: $(STAMP)

# Reinstall when the package metadata or the Cython sources change, so the
# extension is always rebuilt from the current .pyx.
$(STAMP): pyproject.toml setup.py $(CONSTRAINTS) $(wildcard clusteralign/*/*.pyx)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) setuptools wheel "cython>=3.0"
	$(BIN)/python -m pip install -qq $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-build-isolation -e ".[test,slurm]"
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --resources gpu=1 --cores all

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info clusteralign/eval/_rank.c clusteralign/eval/*.so
