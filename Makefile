# Two entry points: `make run` (the main job on the embedded synthetic dataset) and
# `make test` (the test suite). Both create or refresh the local virtual environment.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS_STAMP := $(VENV)/.peers
# fast-reid's PyPI release pins torch 1.13 and torchvision 0.14: pip refuses it beside this
# project's torch, so it is installed without its dependencies (docs/performance.md).
FASTREID := fastreid==1.4.0
# The `peers` extra's requirements, from pyproject.toml.
PEERS_EXTRA = $(BIN)/python -c "import tomllib; \
  print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['peers'])"

.PHONY: run test test-fast venv peers peer-wheels workflow-wheels clean

venv: $(STAMP)

# Reinstall when the package metadata or the Cython sources change, so the
# extension is always rebuilt from the current .pyx.
$(STAMP): pyproject.toml setup.py $(CONSTRAINTS) $(wildcard clusteralign/*/*.pyx)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) setuptools wheel "cython>=3.0"
	$(BIN)/python -m pip install -qq $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-build-isolation -e ".[test,slurm]"
	touch $@

# The peer toolkits benchmarks/peer_speed.py compares with: the `peers` extra's requirements
# (named, so that the project itself is not reinstalled and rebuilt), then fast-reid.
peers: $(PEERS_STAMP)

$(PEERS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -qq $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) --no-build-isolation $$($(PEERS_EXTRA))
	$(BIN)/python -m pip install -qq --no-deps $(FASTREID)
	touch $@

# The peers' wheels in .wheels/, for a machine without internet (benchmarks/peer_wheels.sh).
peer-wheels: $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/peer_wheels.sh download .wheels

# Snakemake's wheels in .wheels/workflow/, for a GPU machine without it or internet
# (benchmarks/workflow_wheels.sh, used by benchmarks/gpu_workflow.sh).
workflow-wheels: $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/workflow_wheels.sh download .wheels/workflow

run: $(STAMP)
	$(BIN)/snakemake --resources gpu=1 --cores all

# The peers are installed too, so that the peer benchmark's test runs rather than skips.
test: $(STAMP) $(PEERS_STAMP)
	CLUSTERALIGN_REQUIRE_PEERS=1 $(BIN)/python -m pytest

# The inner loop: every test that neither trains nor runs Snakemake (about a minute on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) .wheels build *.egg-info clusteralign/eval/_rank.c clusteralign/eval/*.so
