"""The Makefile's variables: a variable nothing reads is refused in one line, and OUT=DIR sends a table's runs and
table to DIR in results/'s layout (scripts/sweep.sh), leaving results/ as it is."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

# What the Makefile's refusal must name: every variable the table scripts read (scripts/sweep.sh's header)
SWEEP_SETTINGS = "PRESET LAUNCHER JOBS THREADS SEEDS LOSSES DRY_RUN MINUTES CELLS FUSE PRECISION SLURM OUT".split()
OTHER_SETTINGS = "JAL_DATA_DIR RECORDS FIGURES BENCH_OUT A_VALUES STOP_AT PYTHON VENV".split()


def make_n(*args: str) -> subprocess.CompletedProcess:
    """`make -n ARGS` in the repository: what make would run, nothing run. Without the MAKEFLAGS of a make that
    runs the tests (its command-line variables would reach this make as command-line variables too)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return subprocess.run(["make", "-n", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("given, suggested", [("LOSS=ce,gce", "LOSSES=ce,gce"), ("SEED=1", "SEEDS=1"),
                                              ("OUTPUT=my_runs", "OUT=my_runs"), ("out=my_runs", "OUT=my_runs"),
                                              ("colour=red", None)])
@pytest.mark.full  # make -n
@pytest.mark.parametrize("target", ["reproduce-cifar10", "notebooks", "lint"])
def test_a_variable_nothing_reads_stops_make_in_one_line_naming_the_settings(given, suggested, target):
    done = make_n(target, "DRY_RUN=1", given)
    assert done.returncode == 2 and done.stdout == "", done.stdout  # stopped before any command
    (line,) = done.stderr.splitlines()
    assert re.fullmatch(r"Makefile:\d+: \*\*\* (.*)\.  Stop\.", line), line
    assert f" {given} is not a setting" in line
    assert (f"did you mean {suggested}?" in line) == (suggested is not None) and line.count("did you mean") <= 1
    named = set(line.split("Settings: ", 1)[1].replace(";", " ").replace(",", " ").split())
    assert set(SWEEP_SETTINGS + OTHER_SETTINGS) <= named, sorted(set(SWEEP_SETTINGS + OTHER_SETTINGS) - named)


@pytest.mark.parametrize("given", [f"{v}=1" for v in SWEEP_SETTINGS + OTHER_SETTINGS]
                         + ["MAKEFLAGS=-s", "SHELL=/bin/bash", "-j2"])
@pytest.mark.full  # make -n
def test_every_setting_and_makes_own_variables_are_taken(given):
    done = make_n("-o", ".venv/.installed", "reproduce-cifar10", given)
    assert done.returncode == 0 and "not a setting" not in done.stderr, done.stderr
    if given.split("=")[0] in SWEEP_SETTINGS:  # the table script gets it
        script = re.escape("bash scripts/reproduce_cifar10.sh")
        assert re.search(rf"(^|\s){given}(\s.*)? {script}$", done.stdout, re.M), done.stdout


# ----------------------------------------------------------------------------- OUT=DIR


TABLE_SCRIPTS = ["reproduce_cifar10.sh", "reproduce_cifar100.sh", "reproduce_idn.sh cifar10",
                 "reproduce_idn.sh cifar100", "reproduce_cifarn.sh cifar10", "reproduce_cifarn.sh cifar100",
                 "reproduce_ablation.sh", "reproduce_real_world.sh webvision", "reproduce_real_world.sh clothing1m",
                 "precision_check.sh"]


def script_commands(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A table script run to its end with a stand-in python that echoes the plan, training and table commands
    (and the a sweep's plot) instead of running them, and answers sweep.sh's device probe (`-c`) with no CUDA
    and 4 cores: a second, not the import of torch."""
    python = tmp_path / "python"
    echoed = '"-m jal.plan"|"-m jal.train"|"-m jal.tables"|"-m jal.precision_report"|scripts/*'
    python.write_text(f'#!/bin/bash\ncase "$1 $2" in {echoed}) echo "$@";; "-c "*) echo 0 4;; *) exit 9;; esac\n')
    python.chmod(0o755)
    unset = ("PRESET", "LAUNCHER", "JOBS", "THREADS", "SEEDS", "LOSSES", "CELLS", "FUSE", "OUT", "MINUTES", "SLURM")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(["bash", *f"scripts/{script}".split()], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHON": str(python), "LAUNCHER": "basic", "DRY_RUN": "0", **env})


def commands(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith(("-m jal.", "scripts/"))]


@pytest.mark.full  # bash scripts/reproduce_cifar10.sh
@pytest.mark.parametrize("preset", ["paper", "quick"])
@pytest.mark.parametrize("script", TABLE_SCRIPTS)
def test_out_puts_a_tables_runs_and_table_where_results_has_them_under_the_folder_given(script, preset, tmp_path):
    """OUT=DIR: the same runs and tables as without it, each path under results/ now under DIR (a sweep without an
    out_root of its own gets out_root=DIR/<the preset's out_root under results/>), and nothing under results/."""
    if "real_world" in script and preset == "quick":
        pytest.skip("the real-world tables have the paper's protocol only")
    out = tmp_path / "mine"
    as_committed = commands(script_commands(script, tmp_path, PRESET=preset))
    done = script_commands(script, tmp_path, PRESET=preset, OUT=str(out))
    into_out = commands(done)
    preset_root = (REPO / "configs" / "experiment" / f"{preset}.yaml").read_text().split("out_root: ")[1].split()[0]
    added = f"out_root={out}/{preset_root.removeprefix('results/')}"
    for command in into_out:
        if command.startswith(("-m jal.train", "-m jal.plan")):  # each sweep's overrides open with experiment=
            sweeps = re.split(r"\s(?=experiment=)", command)[1:]
            assert sweeps and all(len(re.findall(rf"(?<!\S)out_root={re.escape(str(out))}/", s)) == 1
                                  for s in sweeps), command
    as_results = [[w.replace(f"{out}/", "results/") for w in c.split() if w != added] for c in into_out]
    assert as_results == [c.split() for c in as_committed]
    assert not any("results/" in c for c in into_out)
    table = into_out[-1].split("--out ")[1].split()[0] if "ablation" not in script else f"{out}/" + (
        "quick/ablation" if preset == "quick" else "ablation")  # the a sweep's table is in a_sweep/ beside it
    assert f"OUT={out}: runs into " in done.stdout and f", the table into {table}; results/ is left as it is.\n" \
        in done.stdout


@pytest.mark.full  # bash scripts/reproduce_cifar10.sh
def test_the_plan_line_says_where_the_runs_and_the_table_go(tmp_path):
    done = script_commands("reproduce_cifar10.sh", tmp_path, PRESET="quick", DRY_RUN="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Runs into results/quick/runs/cifar10, the table into results/quick (OUT=DIR: both "
                                  "under DIR instead).\n-m jal.plan ")
    done = script_commands("reproduce_cifar10.sh", tmp_path, OUT="my_runs", DRY_RUN="1")
    if done.stdout.startswith("No CUDA device"):  # the quick preset: its own folder under OUT, as under results/
        assert done.stdout.startswith("No CUDA device: the CPU-sized preset (PRESET=quick, my_runs/quick). "
                                      "PRESET=paper forces the paper's protocol.\nOUT=my_runs: runs into "
                                      "my_runs/quick/runs/cifar10, the table into my_runs/quick; results/ is left as "
                                      "it is.\n")
    assert done.stdout.rstrip().endswith("DRY_RUN=1: stopping before the first run.")
    assert not (REPO / "my_runs").exists()


@pytest.mark.full  # bash scripts/reproduce_cifar10.sh
@pytest.mark.parametrize("out", ["results/mine", "results/quick", "./results/runs/../quick"])
def test_out_inside_results_is_refused_in_one_line(out, tmp_path):
    done = script_commands("reproduce_cifar10.sh", tmp_path, PRESET="quick", OUT=out, DRY_RUN="1")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"error: OUT={out} lies inside results/, beside the committed records and tables: give a "
                           "folder outside it, e.g. OUT=my_results\n")


@pytest.mark.full  # bash scripts/reproduce_cifar10.sh
def test_out_results_is_the_default(tmp_path):
    default = commands(script_commands("reproduce_cifar10.sh", tmp_path, PRESET="quick"))
    assert commands(script_commands("reproduce_cifar10.sh", tmp_path, PRESET="quick", OUT="./results/")) == default


@pytest.mark.full  # make -n
def test_make_notebooks_reads_the_records_under_out():
    done = make_n("-o", ".venv/.installed", "notebooks", "OUT=my_runs")
    assert done.returncode == 0, done.stderr
    assert "-m jal.figures my_runs/quick/runs" in done.stdout
    done = make_n("-o", ".venv/.installed", "notebooks", "OUT=my_runs", "PRESET=paper")
    assert "-m jal.figures my_runs/runs" in done.stdout
