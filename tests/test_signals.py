"""Stop signals and Ctrl-C from a command's first line to its last (jal/stops.py; docs/runs.md, "Pause and
continue"): a stop signal before training, or between two runs, ends the command with its pause lines and
summary (exit 0); Ctrl-C at any moment is one line (exit 130); a second stop while the command closes after a
pause is only recorded; a second SIGTERM in one epoch stops at once (exit 143) and the same command resumes
the run to the uninterrupted result. A lost rank and Ctrl-C under torchrun: tests/test_distributed.py.

Each signal comes at a moment the test chooses, sent by the process to itself, never after a sleep: while the
command line is composed (a Hydra plugin that signals as Hydra loads it, hook()), after each call of
jal.train.train_fusion (a driver that wraps it, DRIVER), or at a training step (conftest.CEThatSignalsAsTold).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose_train, given_once
from test_train import assert_same_training

from jal import stops as jal_stops
from jal import train as jal_train

TINY = ["dataset=synthetic", "logger=none", "trainer.progress=false", "trainer.threads=1", "dataset.train_size=32",
        "dataset.test_size=16", "trainer.batch_size=32", "trainer.epochs=1"]  # one step, one epoch
COMMANDS = {"run": ["-m", "jal.train"], "sweep": ["-m", "jal.train", "-m", "seed=1,2"],
            "fusions": ["-m", "jal.fuse", "--fuse", "1", "seed=1,2"]}  # the sweep's two runs in two fusions
RECORDS = ("result.json", "checkpoint.pt", "labels.npz")

# A Hydra plugin module: Hydra imports every module under hydra_plugins when it first composes a config
# (hydra.core.plugins), so this one signals its process exactly then.
PLUGIN = "import os, signal\nos.kill(os.getpid(), getattr(signal, os.environ['SIGNAL_WHEN_COMPOSED']))\n"

# Runs `python -m <module> <args>` in this process, jal.train.train_fusion wrapped to send the process
# $SIGNAL_AFTER_TRAINING each time it returns: between two runs of a sweep, and after the last.
DRIVER = """
import os, runpy, signal, sys, warnings
from jal import train
trained = train.train_fusion
def train_fusion_then_signal(*args, **kwargs):
    results = trained(*args, **kwargs)
    os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL_AFTER_TRAINING"]))
    return results
train.train_fusion = train_fusion_then_signal
warnings.filterwarnings("ignore", message="'jal.train' found in sys.modules")  # imported above, on purpose
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def command(tmp_path: Path, name: str, *extra: str, driver: bool = False, **env: str) -> subprocess.CompletedProcess:
    """`python -m <the command> TINY out_root=tmp_path/out *extra` (through DRIVER when `driver`), with `env`."""
    argv = COMMANDS[name]
    if driver:
        (tmp_path / "drive.py").write_text(DRIVER)
        argv = [str(tmp_path / "drive.py"), argv[1], *argv[2:]]
    paths = [str(REPO), str(REPO / "tests"), *([str(tmp_path / "hook")] if (tmp_path / "hook").exists() else [])]
    settings = given_once([*TINY, f"out_root={tmp_path / 'out'}", *extra])  # a test's own values replace TINY's
    return subprocess.run([sys.executable, *argv, *settings], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths), **env),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a shell


def hook(tmp_path: Path) -> None:
    """The plugin that signals while the command line is composed, on the command's PYTHONPATH."""
    plugin = tmp_path / "hook" / "hydra_plugins" / "signal_when_composed"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text(PLUGIN)


def lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def count(done: subprocess.CompletedProcess, text: str) -> int:
    return sum(text in line for line in lines(done))


def written(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name in RECORDS]


NO_RUN = ("interrupted (Ctrl-C) while no run was training in this process: the same command continues (finished runs "
          "are skipped, the others resume from their last checkpoint)")


@pytest.mark.full  # python -m jal.train
@pytest.mark.parametrize("name, stop", [("run", "SIGTERM"), ("sweep", "SIGUSR1"), ("fusions", "SIGUSR2")])
def test_a_stop_signal_while_the_command_line_is_composed_ends_it_with_its_pause_lines(tmp_path, name, stop):
    """Before: killed by the signal's default action (the handlers came with the first run's training)."""
    hook(tmp_path)
    done = command(tmp_path, name, SIGNAL_WHEN_COMPOSED=stop)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    assert not written(tmp_path)  # nothing trained
    if name == "run":
        assert count(done, f"not started: {stop}") == 1 and len(lines(done)) == 1, lines(done)
    elif name == "sweep":
        assert count(done, f": not started: the sweep is stopping ({stop})") == 2
        assert count(done, "Sweep summary: 2 runs: 0 finished, 0 failed, 0 paused, 2 not run to an end") == 1
        assert count(done, f"stopped by {stop}: starting the sweep again continues it") == 1
    else:
        assert [count(done, f"[fusion {n}/2] synthetic/clean/ce/seed{n}/") for n in (1, 2)] == [1, 1]
        assert count(done, f": not started: {stop} (") == 2  # each fusion's line (then the sweep's ETA)
        assert count(done, "Fused sweep summary: 2 runs trained here: 0 finished, 0 failed, 0 paused, 2 not run to "
                           "an end") == 1
        assert count(done, f"stopped by {stop}: the same command continues the sweep") == 1


@pytest.mark.full  # python -m jal.train
@pytest.mark.parametrize("name", COMMANDS)
def test_ctrl_c_while_the_command_line_is_composed_is_one_line_and_exit_status_130(tmp_path, name):
    """Before: a KeyboardInterrupt traceback of dozens of lines."""
    hook(tmp_path)
    done = command(tmp_path, name, SIGNAL_WHEN_COMPOSED="SIGINT")
    assert done.returncode == 130 and lines(done) == [NO_RUN], lines(done)


def test_the_commands_are_told_from_a_librarys_use():
    """jal/__init__.py installs the command's handlers for these command lines (sys.orig_argv) alone."""
    for argv in (["python", "-m", "jal.train", "loss=ce"], ["python", "-u", "-m", "jal.fuse"], ["py", "-mjal.train"],
                 ["python", "-X", "importtime", "-m", "jal.train"], ["python", "/venv/bin/jal-fuse", "--fuse", "2"]):
        assert jal_stops.started_as_command(argv), argv
    for argv in (["python", "-m", "pytest", "jal.train"], ["python", "-c", "import jal"], ["py", "x.py", "jal.fuse"],
                 ["python", "-m", "submitit.core._submit"], ["python"], ["python", "-m", "jal.plan"]):
        assert not jal_stops.started_as_command(argv), argv


@pytest.mark.full  # python -m jal.train in a driver
@pytest.mark.parametrize("name, stop", [("sweep", "SIGTERM"), ("fusions", "SIGUSR1"), ("sweep", "SIGINT")])
def test_a_stop_between_two_runs_ends_the_sweep_with_its_pause_lines_and_summary(tmp_path, name, stop):
    """The signal comes after the first run finished and before the second starts, and again after the second
    (the command is then closing: only recorded). Before: killed by the signal (exit -15, -10), or for Ctrl-C
    no line but the sweep's summary."""
    done = command(tmp_path, name, driver=True, SIGNAL_AFTER_TRAINING=stop)
    said = done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, said
    first, second = (tmp_path / "out" / compose_train(TINY + [f"seed={s}"]).run_name for s in (1, 2))
    assert json.loads((first / "result.json").read_text())["status"] == "finished"
    assert not written(second)
    if stop == "SIGINT":
        assert done.returncode == 130 and count(done, NO_RUN) == 1, said
        assert count(done, "interrupted") == 1 and "summary" not in said  # its one line
        return
    assert done.returncode == 0, said
    if name == "sweep":
        assert count(done, f"{second.relative_to(tmp_path / 'out')}: not started: the sweep is stopping ({stop})") == 1
        assert count(done, "Sweep summary: 2 runs: 1 finished, 0 failed, 0 paused, 1 not run to an end") == 1
        assert count(done, f"stopped by {stop}: starting the sweep again continues it") == 1
    else:
        assert count(done, f"[fusion 2/2] {second.relative_to(tmp_path / 'out')}: not started: {stop}") == 1
        assert count(done, "Fused sweep summary: 2 runs trained here: 1 finished, 0 failed, 0 paused, 1 not run to "
                           "an end") == 1
        assert count(done, f"stopped by {stop}: the same command continues the sweep") == 1


@pytest.mark.full  # python -m jal.train in a driver
def test_a_second_stop_after_the_pause_is_only_recorded(tmp_path):
    """SIGUSR2 at the first step pauses the run after epoch 1; another comes as it closes. Before: killed by it
    (exit -12) after its paused record."""
    done = command(tmp_path, "run", "trainer.epochs=3", "loss._target_=conftest.CEThatSignalsAsTold", driver=True,
                   JAL_TEST_SIGNALS="1:SIGUSR2", SIGNAL_AFTER_TRAINING="SIGUSR2")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    run_dir = tmp_path / "out" / compose_train(TINY + ["trainer.epochs=3",
                                                       "loss._target_=conftest.CEThatSignalsAsTold"]).run_name
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "paused" and record["epoch"] == 1 and record["reason"] == "SIGUSR2"
    assert count(done, "paused after epoch 1: SIGUSR2; the same command continues it") == 1


def test_the_second_sigterm_before_the_pause_stops_at_once_outside_slurm(monkeypatch):
    """The rule (jal.stops.StopSignals.request_stop), signal by signal: SIGTERMs count, not other signals
    (SLURM's USR2 then TERM is one stop, requeued once: tests/test_slurm.py); under SLURM none stops at once
    (docs/clusters.md: however many follow, the epoch ends); after the pause none does."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    term, usr1, usr2 = signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2
    for before in ([usr2], [usr1, usr2], []):
        stops = jal_stops.StopSignals()
        for signum in before + [term]:
            stops.request_stop(signum)
        with pytest.raises(jal_stops.Terminated):
            stops.request_stop(term)
        assert stops.received == before + [term, term] and stops.interrupted
        stops.request_stop(term)  # a third, while it stops: recorded
    closing = jal_stops.StopSignals()
    closing.request_stop(term)
    closing.closing = True  # the pause is being written (jal.train.train_locked)
    closing.request_stop(term)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    slurm = jal_stops.StopSignals()
    for signum in (usr2, term, term, term):
        slurm.request_stop(signum)
    assert closing.received == [term, term] and slurm.received == [usr2, term, term, term]
    assert jal_stops.exit_status(jal_stops.Terminated(), slurm) == 143
    assert jal_stops.exit_status(KeyboardInterrupt(), closing) == 130


@pytest.mark.full  # python -m jal.train
def test_a_second_sigterm_in_one_epoch_stops_at_once_and_the_run_resumes_to_the_uninterrupted_result(
        tmp_path, monkeypatch, one_torch_thread):
    """Two SIGTERMs at the two steps of epoch 2: the run stops there (exit 143, one line naming the checkpoint
    of epoch 1, no record: it did not fail); the same command resumes it to the uninterrupted run's history
    and weights, bit for bit. Before: the second SIGTERM was one more request to pause at the epoch end."""
    overrides = given_once(TINY + ["dataset.train_size=64", "trainer.epochs=3",
                                   "loss._target_=conftest.CEThatSignalsAsTold"])
    done = subprocess.run([sys.executable, "-m", "jal.train", *overrides, f"out_root={tmp_path}"], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1", JAL_TEST_SIGNALS="3:SIGTERM,4:SIGTERM",
                                   PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")])),
                          capture_output=True, text=True, timeout=300)
    cfg = compose_train(overrides + [f"out_root={tmp_path}"])
    run_dir = tmp_path / cfg.run_name
    line = (f"{cfg.run_name} interrupted after its checkpoint of epoch 1/3: the same command resumes it from there "
            "(a second SIGTERM stops at once)")
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert count(done, line) == 1 and count(done, "interrupted") == 1 and line in (run_dir / "train.log").read_text()
    assert not (run_dir / "result.json").exists()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1

    monkeypatch.delenv("JAL_TEST_SIGNALS", raising=False)  # the same command again: plain CE from here
    resumed = jal_train.train(cfg, run_dir)
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")
    assert_same_training(uninterrupted, tmp_path / "uninterrupted", resumed, run_dir)


@pytest.mark.full  # python -m jal.train -m with joblib, twice
@pytest.mark.parametrize("sigterms", [1, 2])
def test_a_joblib_sweep_goes_on_after_a_sigterm_and_a_second_ends_its_wait(tmp_path, sigterms):
    """With the joblib launcher the command only waits for its workers: one SIGTERM to it is recorded and both
    runs train to the end (exit 0); a second ends the wait at once (exit 143, one line, the workers gone), and
    the same command resumes both runs from their checkpoints to the end."""
    argv = [sys.executable, "-m", "jal.train", "-m", *given_once(
        [*TINY, "trainer.epochs=8", "loss._target_=conftest.CEThatTakesItsTime", "seed=1,2", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", f"out_root={tmp_path}"])]  # 8 epochs of one step of at least 1.25 s each
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    sweep = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.rglob("checkpoint.pt")) and time.time() < deadline:  # a worker's first epoch
            time.sleep(0.1)
        for _ in range(sigterms):
            sweep.send_signal(signal.SIGTERM)
            time.sleep(0.5)
        signalled = time.time()
        out, err = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    records = sorted(tmp_path.rglob("result.json"))
    if sigterms == 1:
        assert sweep.returncode == 0 and "Traceback" not in err, err[-2000:]
        assert "Sweep summary: 2 runs: 2 finished, 0 failed, 0 paused, 0 not run to an end" in out
        assert len(records) == 2 and not any("paused" in p.read_text() for p in tmp_path.rglob("train.log"))
        return
    assert sweep.returncode == 143 and time.time() - signalled < 60 and not records, (out, err[-2000:])
    assert out.strip().splitlines()[-1] == ("stopped by a second SIGTERM while no run was training in this process: "
                                            "the same command continues (finished runs are skipped, the others "
                                            "resume from their last checkpoint)")
    assert "Traceback" not in err and "Warning" not in err, err[-2000:]
    again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Sweep summary: 2 runs: 2 finished" in again.stdout, again.stderr[-2000:]
    resumed = [p.read_text() for p in tmp_path.rglob("train.log")]
    assert len(resumed) == 2 and all(re.search(r"- resuming synthetic/\S+ from epoch [1-7]$", log, re.M)
                                     for log in resumed), resumed


@pytest.mark.full  # scontrol show job
def test_under_slurm_a_stop_before_training_requeues_the_job_too(synthetic_run, tmp_path, monkeypatch):
    """A SLURM batch job signalled while its command starts (USR2, the time limit near): its run is not started
    and the job is requeued, as when the signal comes mid-epoch (jal.stops.restore_handlers: whichever signal
    came first, once). Before: only a signal during the run's training was handed on; this one ended the job
    with its run not started and never requeued. scontrol: a stand-in that records its calls."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    stops = jal_stops.StopSignals()
    stops.request_stop(signal.SIGUSR2)  # before train_fusion installs its handlers
    cfg = synthetic_run()
    with pytest.raises(SystemExit) as left:
        jal_train.train(cfg, tmp_path / "run", stops)
    assert left.value.code == 0 and (tmp_path / "scontrol.calls").read_text().splitlines() == [
        "show job -o 42", "requeue 42"]
    assert not written(tmp_path)
    later = synthetic_run("seed=5")  # the process's later runs: not started, and no second requeue
    assert jal_train.train(later, tmp_path / "later", stops).status == "not started"
    assert len((tmp_path / "scontrol.calls").read_text().splitlines()) == 2
