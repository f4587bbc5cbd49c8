"""jal.launch, the one place that knows the launchers: each launcher's kind, how many runs it trains at once
here, and how the plan and jal.fuse say it trains runs and fusions."""

import os

import pytest
from conftest import compose_train

from jal import launch

CORES = len(os.sched_getaffinity(0))
ELSEWHERE = "(runs on the machines it submits to: no estimate here)"


@pytest.mark.parametrize("overrides, kind, at_once, runs, fusions", [
    ([], "basic", 1, "basic (one run at a time)", "one at a time in one process (the basic launcher)"),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "joblib", 2, "joblib (2 runs at a time)",
     "2 at a time side by side (joblib, a process each)"),
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-1"], "joblib", CORES, f"joblib ({CORES} runs at a time)",
     f"{CORES} at a time side by side (joblib, a process each)"),  # joblib's -1: every core
    (["hydra/launcher=local"], "local", None, f"LocalLauncher {ELSEWHERE}",
     "a process each on this machine (submitit's local executor)"),
    (["hydra/launcher=slurm", "hydra.launcher.partition=a100"], "slurm", None, f"SlurmLauncher {ELSEWHERE}",
     "one SLURM task each (submitit: a job array, at most 64 tasks at a time; partition=a100, nodes=1, "
     "gpus_per_node=1, cpus_per_task=8, mem_gb=32, timeout_min=120)"),
])
def test_each_launcher_has_its_kind_its_runs_at_once_here_and_its_words(overrides, kind, at_once, runs, fusions):
    cfg = compose_train(["dataset=synthetic", "trainer.threads=1", *overrides])
    launcher = launch.settings(cfg)
    assert (launch.kind(launcher), launch.at_once(launcher), launch.how_runs_run(launcher)) == (kind, at_once, runs)
    each = "" if kind == "slurm" else ", 1 torch thread each"  # a SLURM task's threads: its cpus_per_task
    assert launch.how_fusions_run(cfg) == fusions + each
