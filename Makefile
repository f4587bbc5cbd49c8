# The README's commands. Each target sets itself up from nothing: `make install` creates .venv once.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
# Where runs and tests read data from (docs/protocol.md section 6); torchvision downloads CIFAR there if absent.
export JAL_DATA_DIR ?= data

# Sweep settings, each optional (defaults in scripts/sweep.sh): PRESET=paper|quick (paper with CUDA, quick
# without), LAUNCHER=basic|joblib|local|slurm (basic with CUDA; joblib, one run per core, without), JOBS,
# THREADS (torch threads per run), SEEDS, LOSSES; DRY_RUN=1 prints the plan of the sweep and stops.
# MINUTES=N: the sweep pauses after N minutes (every run at its next epoch end); the same command continues it.
# PRECISION=fp32|bf16|auto: trainer.precision of every run (default: the preset's; quick: auto, bf16 on CPUs with bf16 hardware).
# CELLS=headline (reproduce-cifar10): the paper's main-table cells only, seed 123 first.
# FUSE=K: each sweep's runs trained fused, at most K per fusion (python -m jal.fuse), launched by LAUNCHER:
# basic one fusion at a time, joblib JOBS side by side, slurm one SLURM task per fusion.
# SLURM='partition=debug gpus_per_node=0': with LAUNCHER=slurm, configs/hydra/launcher/slurm.yaml's settings.
# OUT=DIR: DIR takes results/'s place: the runs train into DIR/runs (quick: DIR/quick/runs) and the table is
# made from them into DIR/<table> (quick CIFAR-10: DIR/quick), the layout of results/, whose records and tables
# stay as they are (docs/sweeps.md).
SWEEP_SETTINGS := PRESET LAUNCHER JOBS THREADS SEEDS LOSSES DRY_RUN MINUTES CELLS FUSE PRECISION SLURM OUT
SWEEP = MAKE_TARGET=$@ PYTHON=$(abspath $(PYTHON)) $(foreach v,$(SWEEP_SETTINGS),$(if $($(v)),$(v)=$($(v))))
# A variable given on the command line that nothing reads (LOSS=ce for LOSSES=ce, OUTPUT=dir) would be ignored
# without a word: any that is none of the settings, the other variables below or Make's own stops make in one
# line, naming the setting it is closest to. A new variable of this Makefile or its scripts goes in one list.
OTHER_SETTINGS := JAL_DATA_DIR RECORDS FIGURES BENCH_OUT A_VALUES STOP_AT PYTHON VENV
# make tune reads its own settings (below) and, of the sweeps', JOBS THREADS PRECISION DRY_RUN OUT
TUNE_SETTINGS := DATASET LOSS TRIALS OVERRIDES JOBS THREADS PRECISION DRY_RUN OUT
SETTINGS := $(if $(filter tune,$(MAKECMDGOALS)),$(TUNE_SETTINGS),$(SWEEP_SETTINGS))
MAKES_OWN := MAKEFLAGS GNUMAKEFLAGS MAKEFILES MAKE SHELL .SHELLFLAGS
GIVEN := $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v)))
UNKNOWN := $(firstword $(filter-out $(SETTINGS) $(OTHER_SETTINGS) $(MAKES_OWN),$(GIVEN)))
CLOSEST = $(shell python3 -c 'import difflib, sys; m = difflib.get_close_matches(sys.argv[1].upper(), \
	sys.argv[2].split(), 1, 0.6); print(m[0] if m else "")' '$(UNKNOWN)' '$(SETTINGS) $(OTHER_SETTINGS)')
$(if $(UNKNOWN),$(error $(UNKNOWN)=$($(UNKNOWN)) is not a setting$(if $(CLOSEST),: did you mean \
	$(CLOSEST)=$($(UNKNOWN))?,.) Settings: $(SETTINGS); also $(OTHER_SETTINGS) (docs/sweeps.md)))

.PHONY: install test test-all test-full test-slurm lint tune reproduce-cifar10 reproduce-cifar100 reproduce-cifar10-idn \
	reproduce-cifar100-idn reproduce-cifar10n reproduce-cifar100n reproduce-ablation reproduce-webvision reproduce-clothing1m \
	notebooks bench gpu-check clean

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[dev,slurm,parallel]'
	touch $@

# Two test tiers (pyproject.toml's markers), each in two pytest-xdist workers, a whole test file at a time (a
# file's module fixtures are trained once). make test: the tests that stay in this process, about two minutes;
# make test-all: those and the tests marked full, slow or slurm (processes, signals, tmpfs, torchrun, notebooks,
# real data, long runs; the slurm ones skip without a cluster); make test-full: those alone (.ci/run).
TEST_IN_PARALLEL := -n 2 --dist loadfile
test: install
	$(PYTHON) -m pytest $(TEST_IN_PARALLEL)

test-all: install
	$(PYTHON) -m pytest $(TEST_IN_PARALLEL) -m ''

test-full: install
	$(PYTHON) -m pytest $(TEST_IN_PARALLEL) -m 'full or slow or slurm'

# A single-node SLURM cluster on this machine (root; scripts/slurm/start.sh installs it), then the tests that
# run the README's cluster commands against it (tests/test_slurm.py); the cluster is left running
# (scripts/slurm/stop.sh stops it).
test-slurm: install
	bash scripts/slurm/start.sh $(if $(shell command -v slurmctld),,--install)
	$(PYTHON) -m pytest -m slurm --durations=0 tests/test_slurm.py

lint: install
	$(VENV)/bin/ruff check jal tests

reproduce-cifar10: install
	$(SWEEP) bash scripts/reproduce_cifar10.sh

reproduce-cifar100: install
	$(SWEEP) bash scripts/reproduce_cifar100.sh

reproduce-cifar10-idn: install
	$(SWEEP) bash scripts/reproduce_idn.sh cifar10

reproduce-cifar100-idn: install
	$(SWEEP) bash scripts/reproduce_idn.sh cifar100

reproduce-cifar10n: install
	$(SWEEP) bash scripts/reproduce_cifarn.sh cifar10

reproduce-cifar100n: install
	$(SWEEP) bash scripts/reproduce_cifarn.sh cifar100

reproduce-webvision: install  ## mini-WebVision + ILSVRC12, ResNet-50 (docs/protocol.md section 7): GPUs
	$(SWEEP) bash scripts/reproduce_real_world.sh webvision

reproduce-clothing1m: install  ## Clothing1M, ImageNet-pretrained ResNet-50 (docs/protocol.md section 7): GPUs
	$(SWEEP) bash scripts/reproduce_real_world.sh clothing1m

reproduce-ablation: install  ## the JAL paper's ablation cells and a sweep of AMSE's a, into results/ablation
	$(SWEEP) bash scripts/reproduce_ablation.sh

# An Optuna search of a loss's alpha, beta and a (configs/hparams_search/$(LOSS).yaml: jal_ce or jal_fl), TRIALS
# trials selected on a noisy validation split, into outputs/tune (OUT=DIR: DIR/tune); OVERRIDES='noise=symmetric
# noise.rate=0.4' adds settings of jal-train's; JOBS=N trains N trials at once (joblib). Its plan first (DRY_RUN=1:
# the plan only); the best trial's settings end in one line and in best_overrides.txt; started again, it trains
# nothing new (docs/your-data.md).
DATASET ?= cifar10
LOSS ?= jal_ce
TRIALS ?= 20
TUNE = hparams_search=$(LOSS) dataset=$(DATASET) hydra.sweeper.n_trials=$(TRIALS) $(if $(JOBS),hydra/launcher=joblib \
	hydra.launcher.n_jobs=$(JOBS) hydra.sweeper.n_jobs=$(JOBS) trainer.progress=false) $(if $(THREADS),trainer.threads=$(THREADS)) \
	$(if $(PRECISION),trainer.precision=$(PRECISION)) $(if $(OUT),out_root=$(OUT)/tune) $(OVERRIDES)
tune: install
	$(PYTHON) -m jal.plan --name "make tune" "$(strip $(TUNE))"
	$(if $(DRY_RUN),@echo "DRY_RUN=1: stopping before the first trial.",$(PYTHON) -m jal.train $(strip $(TUNE)))

# One protocol's records at a time (a cell mixing quick and paper runs would mean nothing): the PRESET's records
# (its out_root; default quick: the committed quick table; OUT=DIR: the same under DIR), or RECORDS=dir1:dir2. The
# figures go beside the records (jal.figures.figures_dir: a preset's runs/ gets figures/ next to it,
# results/quick/runs -> results/quick/figures; any other directory figures/ inside it, outputs -> outputs/figures),
# or into FIGURES=dir; a line names each figure written. Records of two protocols stop it in one line.
RECORDS ?= $(patsubst results/%,$(or $(OUT),results)/%,$(shell sed -n 's/^out_root: *//p' \
	configs/experiment/$(or $(PRESET),quick).yaml))
notebooks: install  ## run notebooks/results.ipynb on $(RECORDS), its figures beside them
	$(PYTHON) -m jal.figures $(subst :, ,$(RECORDS)) $(if $(FIGURES),--out $(FIGURES))

bench: install
	$(PYTHON) -m jal.bench --out results/bench

# On a GPU host, a few minutes: the CUDA checks, then the GPU benchmark into results/bench/{gpu_check,cuda}.json.
# No install step, so it also runs on a host without a package index where PyTorch and Hydra are installed.
BENCH_OUT ?= results/bench
gpu-check:
	$(if $(wildcard $(PYTHON)),$(PYTHON),python3) -m jal.gpu_check --out $(BENCH_OUT)

clean:
	rm -rf outputs multirun .pytest_cache
