"""jal.launch, the one place that knows the launchers: each launcher's kind, how many runs it trains at once
here, and how the plan and jal.fuse say it trains runs and fusions."""

import os

import pytest
from conftest import compose_train

from jal import errors, launch

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
    launcher = launch.settings(cfg.hydra)
    assert (launch.kind(launcher), launch.at_once(launcher), launch.how_runs_run(launcher)) == (kind, at_once, runs)
    each = "" if kind == "slurm" else ", 1 torch thread each"  # a SLURM task's threads: its cpus_per_task
    assert launch.how_fusions_run(launcher, cfg.trainer.threads) == fusions + each


def test_a_failed_slurm_task_is_one_line_with_its_reason_and_its_log():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    raised = FailedJobError("Job (task=0) failed during processing with trace:\n----------------------\nTraceback "
                            "(most recent call last):\n  File \"x.py\", line 1\nValueError: loss.a=0.1 is too small\n\n"
                            "----------------------\nYou can check full logs with 'job.stderr(0)' and "
                            "'job.stdout(0)'or at paths:\n  - /o/.submitit/7_0/7_0_0_log.err\n  - /o/.submitit/7_0/"
                            "7_0_0_log.out")
    assert errors.failed_job(raised) == "ValueError: loss.a=0.1 is too small; its log: /o/.submitit/7_0/7_0_0_log.err"
    killed = UncompletedJobError("Job 9_1 (task: 0) with path /o/.submitit/9_1/9_1_0_result.pkl\nhas not produced "
                                 "any output (state: FAILED)\nError stream produced:\n----\nlots\nof lines")
    assert errors.failed_job(killed) == ("SLURM job 9_1 ended FAILED without a result (killed, out of memory, or out "
                                         "of time with no requeue left); its log: /o/.submitit/9_1/9_1_0_log.err")
    refused = FailedJobError("Job has failed with error message:\nsbatch: error: Invalid generic resource (gres) "
                             "specification\n")
    assert errors.failed_job(refused) == "sbatch: error: Invalid generic resource (gres) specification"


@pytest.mark.full  # runs a stand-in sinfo
def test_the_slurm_launcher_asks_for_no_more_than_the_nodes_have(tmp_path, monkeypatch):
    """sinfo of a node without GPUs, 2 CPUs and 16 GB (a stand-in: no cluster here): the default launcher's
    GPU is refused in one line naming the setting, before sbatch would refuse it with a traceback."""
    (tmp_path / "sinfo").write_text("#!/bin/sh\necho 'debug*|(null)|2|16000'\n")
    (tmp_path / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    launcher = launch.settings(compose_train(["hydra/launcher=slurm", "hydra.launcher.partition=debug"]).hydra)
    with pytest.raises(launch.ConfigError, match=r"^hydra.launcher.gpus_per_node=1: the nodes of partition debug "
                                                 r"have 0 GPUs at most \(sinfo\); set gpus_per_node=0 or fewer"):
        launch.check_fits(launcher)
    with pytest.raises(launch.ConfigError, match=r"^hydra.launcher.cpus_per_task=8: .* have 2 CPUs at most"):
        launch.check_fits(launcher | dict(gpus_per_node=0))
    launch.check_fits(launcher | dict(gpus_per_node=0, cpus_per_task=2, mem_gb=8))  # fits: nothing said
