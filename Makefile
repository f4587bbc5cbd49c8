# The README's commands. Each target sets itself up from nothing: `make install` creates .venv once.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
export JAL_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),data)

# Sweep settings (see scripts/sweep.sh): PRESET=paper|quick, LAUNCHER=basic|joblib|local|slurm, JOBS, SEEDS, LOSSES
PRESET ?= paper
LAUNCHER ?= basic
JOBS ?= 2
SWEEP := PYTHON=$(abspath $(PYTHON)) PRESET=$(PRESET) LAUNCHER=$(LAUNCHER) JOBS=$(JOBS) $(if $(SEEDS),SEEDS=$(SEEDS)) $(if $(LOSSES),LOSSES=$(LOSSES))
# MINUTES=N: the sweep pauses after N minutes (every run at its next epoch end); the same command continues it.
# CELLS=headline (reproduce-cifar10): the paper's main-table cells only, seed 123 first.
SWEEP += $(if $(MINUTES),MINUTES=$(MINUTES)) $(if $(CELLS),CELLS=$(CELLS))

.PHONY: install test test-all lint reproduce-cifar10 reproduce-cifar100 reproduce-cifar10-idn reproduce-cifar10n \
	notebooks bench gpu-check clean

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev,slurm,parallel]'
	touch $@

test: install
	$(PYTHON) -m pytest

test-all: install  ## the slow tests too
	$(PYTHON) -m pytest -m ''

lint: install
	$(VENV)/bin/ruff check jal tests

reproduce-cifar10: install
	$(SWEEP) bash scripts/reproduce_cifar10.sh

reproduce-cifar100: install
	$(SWEEP) bash scripts/reproduce_cifar100.sh

reproduce-cifar10-idn: install
	$(SWEEP) bash scripts/reproduce_cifar10_idn.sh

reproduce-cifar10n: install
	$(SWEEP) bash scripts/reproduce_cifar10n.sh

notebooks: install  ## run notebooks/results.ipynb on results/ and save its figures under results/figures/
	JAL_RECORDS=results JAL_FIGURES=results/figures $(VENV)/bin/jupyter execute notebooks/results.ipynb

bench: install
	$(PYTHON) -m jal.bench --out results/bench

# On a GPU host, a few minutes: the CUDA checks, then the GPU benchmark into results/bench/{gpu_check,cuda}.json.
# No install step: a bare GPU host has PyTorch and the carried Hydra wheels (shared/gpu/setup.sh), not pip.
BENCH_OUT ?= results/bench
gpu-check:
	$(if $(wildcard $(PYTHON)),$(PYTHON),python3) -m jal.gpu_check --out $(BENCH_OUT)

clean:
	rm -rf outputs multirun .pytest_cache
