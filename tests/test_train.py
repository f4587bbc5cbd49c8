"""The training entrypoint: records, resume, pause (stop_at, signals), Ctrl-C, what a run says (its bar, its
closing line), skip, W&B, non-finite losses, one-line errors. The data and its augmentation: test_data.py."""

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, compose_train, loss_turns_nan_after, shared_data_dir

from jal import device as jal_device
from jal import progress_bar as jal_progress_bar
from jal import run as jal_run
from jal import step as jal_step
from jal import stops as jal_stops
from jal import train as jal_train
from jal.experiment import Cell
from jal.losses import CE

RESULT_KEYS = {"dataset", "model", "loss", "noise_type", "noise_rate", "seed", "epochs", "last_test_acc",
               "best_test_acc", "realised_noise_rate", "wall_seconds", "images_per_second", "device", "precision",
               "git_commit", "history", "status", "config"}
EPOCH_KEYS = {"epoch", "train_loss", "train_acc_noisy", "train_acc_clean_subset", "train_acc_corrupted_subset",
              "train_memorised", "test_acc", "lr", "images_per_second"}


def run_dir_of(cfg) -> Path:
    return Path(cfg.out_root) / cfg.run_name


@pytest.mark.full  # trains
def test_two_epoch_run_writes_a_complete_record(synthetic_run):
    cfg = synthetic_run("loss=jal_ce", "noise=symmetric", "noise.rate=0.4", "seed=7")
    result = jal_train.train(cfg, run_dir_of(cfg))
    on_disk = json.loads((run_dir_of(cfg) / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result.to_json()))
    assert RESULT_KEYS <= set(on_disk)
    # where, how and when it was trained (jal/record.py): this machine, its threads, local times with their offset
    assert result.host == socket.gethostname() and result.threads == torch.get_num_threads()
    started, ended = (datetime.datetime.fromisoformat(t) for t in (result.started, result.ended))
    assert started.tzinfo is not None and started <= ended <= datetime.datetime.now().astimezone()
    assert (result.dataset, result.model, result.loss, result.noise_type) == (
        "synthetic", "cnn8", "jal_ce", "symmetric")
    assert result.noise_rate == 0.4 and result.seed == 7 and result.epochs == 2
    assert len(result.history) == 2 and all(EPOCH_KEYS <= set(h) for h in result.history)
    assert result.last_test_acc == result.history[-1]["test_acc"]
    if result.device == "cpu" and os.path.exists("/proc/cpuinfo"):  # the machine, not just "cpu"
        assert result.device_name.endswith(f", {len(os.sched_getaffinity(0))} cores")
    assert result.best_test_acc == max(h["test_acc"] for h in result.history)
    # exact sampling: 9 * int(0.4 / 9 * n_i) flips per class i, and the record says what the labels hold
    labels = np.load(run_dir_of(cfg) / "labels.npz")
    expected_flips = sum(9 * int(0.4 / 9 * n) for n in np.bincount(labels["clean"], minlength=10))
    assert np.sum(labels["noisy"] != labels["clean"]) == expected_flips
    assert result.realised_noise_rate == pytest.approx(expected_flips / len(labels["clean"]))
    # cosine schedule stepped per epoch: lr 0.01 in epoch 1, 0.005 in epoch 2 of 2
    assert [h["lr"] for h in result.history] == pytest.approx([0.01, 0.005])
    # the JAL-CE run trains with L1 and no L2 (docs/protocol.md section 1)
    assert result.config["optim"]["l1"] == 5e-5 and result.config["optim"]["weight_decay"] == 0.0


@pytest.mark.full  # trains
def test_killed_run_resumes_to_the_uninterrupted_result(synthetic_run, tmp_path, monkeypatch):
    overrides = ("loss=nce_rce", "noise=asymmetric", "noise.rate=0.3", "trainer.epochs=3", "dataset.train_size=64",
                 "dataset.test_size=32", "trainer.batch_size=32")
    cfg = synthetic_run(*overrides)
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")

    save = jal_run.save_checkpoint

    def save_then_die(path, obj):  # the process is killed right after its first checkpoint
        save(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(jal_run, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        jal_train.train(cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "result.json").exists()
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(jal_run, "save_checkpoint", save)
    resumed = jal_train.train(cfg, tmp_path / "resumed")

    assert_same_training(uninterrupted, tmp_path / "uninterrupted", resumed, tmp_path / "resumed")


def assert_same_training(a, a_dir: Path, b, b_dir: Path) -> None:
    """Two finished runs trained identically: the same history (but timings) and bitwise the same weights."""
    def deterministic(history):
        return [{k: v for k, v in h.items() if k not in ("images_per_second", "seconds")} for h in history]

    assert a.status == b.status == "finished"
    assert deterministic(a.history) == deterministic(b.history)
    final = [torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (a_dir, b_dir)]
    for name in final[0]:
        torch.testing.assert_close(final[0][name], final[1][name], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------
# Pausing: trainer.stop_at, stop signals


@pytest.mark.full  # trains
def test_paused_run_continues_to_the_uninterrupted_result(synthetic_run, tmp_path, one_torch_thread):
    cfg = synthetic_run("loss=jal_ce", "noise=symmetric", "noise.rate=0.4", "trainer.epochs=3",
                        "dataset.train_size=96", "dataset.test_size=32")
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")

    cfg.trainer.pause_after = 1
    paused = jal_train.train(cfg, tmp_path / "paused")
    assert paused.status == "paused" and paused.epoch == 1 and paused.epochs == 3
    assert paused.reason == "trainer.pause_after=1 epochs done"
    assert paused.loss == "jal_ce" and paused.seed == 123
    assert json.loads((tmp_path / "paused" / "result.json").read_text()) == paused.to_json()
    assert torch.load(tmp_path / "paused" / "checkpoint.pt", weights_only=True)["epoch"] == 1

    cfg.trainer.pause_after = None  # the same run started again, to its end
    continued = jal_train.train(cfg, tmp_path / "paused")
    assert_same_training(uninterrupted, tmp_path / "uninterrupted", continued, tmp_path / "paused")


def test_run_past_its_stop_at_exits_before_loading_data(synthetic_run, monkeypatch):
    deadline = int(time.time()) - 1
    cfg = synthetic_run(f"trainer.stop_at={deadline}")
    monkeypatch.setattr(jal_run, "load_dataset", lambda *a, **k: pytest.fail("a run past stop_at loads nothing"))
    result = jal_train.train(cfg, run_dir_of(cfg))
    local = datetime.datetime.fromtimestamp(deadline).strftime("%Y-%m-%d %H:%M")  # the time it was set to, here
    assert result.status == "not started" and result.reason == f"the deadline {local} (trainer.stop_at) passed"
    assert not (run_dir_of(cfg) / "result.json").exists() and not (run_dir_of(cfg) / "checkpoint.pt").exists()


@pytest.mark.full  # sends SIGUSR1
def test_sigusr1_pauses_at_the_epoch_end_and_is_handed_to_the_previous_handler(synthetic_run, one_torch_thread):
    """SLURM's warning arrives mid-epoch (after its training steps): the epoch completes, its evaluation and
    checkpoint are done, the run pauses; then the handler that was there before (a launcher's, e.g.
    submitit's requeue) gets the signal."""
    cfg = synthetic_run("trainer.epochs=3", "dataset.train_size=64", "dataset.test_size=32",
                        "loss._target_=conftest.CEThatGetsSIGUSR1InEpoch1")  # at its first step
    handed_on, stops = [], jal_stops.StopSignals()  # this test's, not the process's (PROCESS_STOPS)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handed_on.append(signum))
    try:
        result = jal_train.train(cfg, run_dir_of(cfg), stops)
        restored = signal.getsignal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert result.status == "paused" and result.epoch == 1 and result.reason == "SIGUSR1"
    assert torch.load(run_dir_of(cfg) / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert handed_on == [signal.SIGUSR1] and restored != stops.request_stop
    assert jal_stops.PROCESS_STOPS.received == []  # nothing outlives the test
    # later runs with the same stops (a sweep through the basic launcher, one process) pause before they start
    later = synthetic_run("trainer.epochs=3", "seed=5")
    assert jal_train.train(later, run_dir_of(later), stops).status == "not started"
    # nothing written but the lock file; the signal handed on once only
    assert [p.name for p in run_dir_of(later).iterdir()] == [".lock"] and handed_on == [signal.SIGUSR1]


@pytest.mark.full  # sends USR2, TERM
def test_under_slurm_a_stop_signal_pauses_then_requeues_the_job_whichever_came_first(synthetic_run, tmp_path,
                                                                                     monkeypatch, one_torch_thread):
    """A SLURM batch job ($SLURM_JOB_ID) warned by USR2, then preempted (SIGTERM) in the same epoch: the run
    pauses at the epoch end, asks for the job to be requeued once and leaves without a result (a launcher then
    waits for the requeued task). Before, the last signal won and a SIGTERM ended the job with a "paused"
    result, never requeued. scontrol: a stand-in that records its calls."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.calls\n')
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    cfg = synthetic_run("trainer.epochs=3", "dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32",
                        "loss._target_=conftest.CEThatIsWarnedThenPreemptedInEpoch1")
    stops = jal_stops.StopSignals()
    with pytest.raises(SystemExit) as left:
        jal_train.train(cfg, run_dir_of(cfg), stops)
    calls = (tmp_path / "scontrol.calls").read_text().splitlines()
    assert left.value.code == 0 and calls == ["show job -o 42", "requeue 42"]  # not cancelled: requeued
    assert stops.received == [signal.SIGUSR2, signal.SIGTERM]  # requeued once, for the first
    record = json.loads((run_dir_of(cfg) / "result.json").read_text())
    assert record["status"] == "paused" and record["reason"] == "SIGUSR2" and record["epoch"] == 1
    assert torch.load(run_dir_of(cfg) / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) != stops.request_stop  # handlers put back


@pytest.mark.full  # python -m jal.train -m
def test_sweep_past_its_stop_at_trains_nothing_and_exits_0_in_seconds(tmp_path):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "jal.train", "-m", "dataset=synthetic", "logger=none", "trainer.progress=false",
         "loss=ce,jal_ce", "noise=symmetric", "noise.rate=0.2,0.8", f"trainer.stop_at={int(time.time()) - 1}",
         f"out_root={tmp_path}"], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
        text=True, timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert (done.stdout + done.stderr).count("not started: the deadline ") == 4  # its local time (trainer.stop_at)
    assert done.stdout.count(": not started: the sweep is stopping (trainer.stop_at passed or a stop signal)") == 4
    assert not [p for p in tmp_path.rglob("*") if p.name in ("result.json", "checkpoint.pt", "labels.npz")]
    assert seconds < 60  # Hydra's start-up and four runs that load nothing (a second or two alone)


@pytest.mark.full  # python -m jal.train, SIGTERM
def test_sigterm_mid_run_leaves_a_resumable_checkpoint_and_the_continued_run_finishes(tmp_path):
    run_dir = tmp_path / "synthetic/clean/ce/seed123/dataset.test_size=32,dataset.train_size=64,trainer.epochs=12"
    command = [sys.executable, "-m", "jal.train", "dataset=synthetic", "dataset.train_size=64",
               "dataset.test_size=32", "trainer.epochs=12", "trainer.threads=1", "logger=none",
               "trainer.progress=false", f"out_root={tmp_path}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    record = json.loads((run_dir / "result.json").read_text())
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert record["status"] == "paused" and record["reason"] == "SIGTERM" and 1 <= record["epoch"] < 12
    assert state["epoch"] == record["epoch"] == len(state["history"])

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    name = run_dir.relative_to(tmp_path)  # the run's lines name it so, its train.log no machine's path
    assert f"resuming {name} from epoch {record['epoch']}" in done.stdout + done.stderr
    log = (run_dir / "train.log").read_text()
    assert f"{name} paused after epoch {record['epoch']}: SIGTERM; the same command continues it" in log
    assert str(tmp_path) not in log
    final = json.loads((run_dir / "result.json").read_text())
    assert final["status"] == "finished" and [h["epoch"] for h in final["history"]] == list(range(1, 13))
    assert final["history"][: record["epoch"]] == state["history"]  # the epochs before the pause are kept


# ---------------------------------------------------------------------------------------------------
# What a run says: its progress bar, its closing line, where Ctrl-C stopped it


def rendered_bar(desc: str, postfix: str, n: int, total: int, elapsed: float) -> str:
    """The bar train_locked draws, as tqdm renders it in an 80-column terminal."""
    from tqdm import tqdm

    return tqdm.format_meter(n, total, elapsed, ncols=80, prefix=desc, bar_format=jal_progress_bar.BAR_FORMAT,
                             postfix=postfix)


def bar_cells(line: str) -> int:
    return len(line.split(" |", 1)[1].split("| ", 1)[0])


def history(*test_accs, seconds: float = 1.0) -> list[dict]:
    return [dict(epoch=e, test_acc=acc, seconds=seconds) for e, acc in enumerate(test_accs, 1)]


def evenly(epochs: int) -> list[float]:
    """Work left after each of `epochs` epochs of one image each (jal.estimate.work_left_after_each_epoch's form)."""
    return [float(epochs - e) for e in range(epochs + 1)]


def test_progress_bar_shows_the_run_the_bar_the_time_left_and_the_last_accuracy_in_80_columns():
    from jal.estimate import work_left_after_each_epoch

    cell = dict(dataset="cifar10", model="cnn8", loss="jal_ce", noise_type="symmetric", noise_rate=0.8,
                noise_labels=None, seed=123)
    short_name = lambda fields: Cell(**fields).short_name()  # noqa: E731
    assert short_name(cell) == "jal_ce sym0.8 s123"
    # the quick preset: 10,000 images, 12 epochs, tested after every 3rd (a tested image a third of a trained one):
    # 3 epochs in 300 s did 10,000 + 10,000 + 13,333 images, 100,000 are left: 900 s at that pace. The last
    # accuracy evaluated shows in an epoch not evaluated too (eval_every).
    from omegaconf import OmegaConf

    quick = OmegaConf.create({"dataset": {"name": "cifar10", "subset": 10000, "test_subset": None},
                              "trainer": {"epochs": 12, "eval_every": 3}})
    work = work_left_after_each_epoch(quick)
    assert work[3] == pytest.approx(100000)
    postfix = jal_progress_bar.bar_postfix([history(None, None, 64.321, seconds=100.0)], work)
    line = rendered_bar("jal_ce sym0.8 s123", postfix, 3, 12, 300)
    assert line.startswith("jal_ce sym0.8 s123 |") and line.endswith("| 3/12 [05:00, ETA 15 min, test 64.32%]")
    assert len(line) == 80 and bar_cells(line) == 21
    # the longest names there are (loss, human label set), a five-digit seed, 10 h gone, 10 h left: still whole,
    # the bar a few cells
    longest = max((p.stem for p in (REPO / "configs/loss").glob("*.yaml")), key=len)
    for noise_type, rate, labels in (("human", 0.4, "worst"), ("asymmetric", 0.45, None), ("none", 0.0, None)):
        name = short_name(dict(cell, loss=longest, noise_type=noise_type, noise_rate=rate,
                                         noise_labels=labels, seed=12345))
        postfix = jal_progress_bar.bar_postfix([history(*[100.0] * 100, seconds=360.0)], evenly(200))
        line = rendered_bar(name, postfix, 100, 200, 36000)
        assert len(line) <= 80 and bar_cells(line) >= 3 and line.endswith("[10:00:00, ETA 10.0 h, test 100.00%]"), line
    assert short_name(dict(cell, noise_type="human", noise_labels="worst")) == "jal_ce human-worst s123"
    assert short_name(dict(cell, noise_type="none", noise_rate=0.0)) == "jal_ce clean s123"
    # a fusion: its members' range, at the pace of the epochs they train together; before the first epoch nothing
    members = [history(61.2, seconds=30.0), history(64.32, seconds=30.0), history(62.0, seconds=30.0)]
    line = rendered_bar("fusion of 16", jal_progress_bar.bar_postfix(members, evenly(120)), 1, 120, 30)
    assert line.endswith("| 1/120 [00:30, ETA 60 min, test 61.20-64.32%]"), line
    assert jal_progress_bar.bar_postfix([[]], evenly(3)) == ""
    assert jal_progress_bar.bar_postfix([history(None)], evenly(3)) == "ETA 2 s"


def test_the_bar_and_the_sweeps_lines_give_one_eta():
    """A sweep of one run: the progress line's ETA (the work done since the sweep started) and the bar's (the run's
    epochs) are jal.estimate's one formula, so the same pace gives the same words."""
    from jal.estimate import eta_words

    work = evenly(12)
    postfix = jal_progress_bar.bar_postfix([history(*[None] * 4, seconds=75.0)], work)
    assert postfix == eta_words(work[0] - work[4], work[4], 4 * 75.0) == "ETA 10 min"


def train_command(out_root: Path | str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jal.train", "dataset=synthetic", "dataset.test_size=32", "trainer.batch_size=32",
            "trainer.threads=1", "logger=none", f"out_root={out_root}", *extra]


@pytest.mark.parametrize("progress", ["true", "false"])
@pytest.mark.full  # python -m jal.train
def test_a_run_alone_ends_with_its_accuracy_and_its_directory(tmp_path, progress):
    """Started from any folder (here: the one holding its out_root), the closing line names the directory as
    one can `cd` into it from there; the console only: train.log holds no path of this machine."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(train_command("runs", "dataset.train_size=64", "trainer.epochs=2",
                                        f"trainer.progress={progress}"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = Path("runs/synthetic/clean/ce/seed123/dataset.test_size=32,dataset.train_size=64,"
                   "trainer.batch_size=32,trainer.epochs=2")
    record = json.loads((tmp_path / run_dir / "result.json").read_text())
    closing = f"finished: test accuracy {record['last_test_acc']:.2f}% (epoch 2) -> {run_dir}"
    assert done.stdout.strip().splitlines()[-1].endswith(f"[jal.console][INFO] - {closing}")
    assert "finished: test accuracy" not in (tmp_path / run_dir / "train.log").read_text()
    bar = "ce clean s123 |██████████| 2/2 [" in done.stderr  # its last state (not a terminal: 10 cells)
    assert bar == (progress == "true")


@pytest.mark.full  # python -m jal.train, SIGINT
def test_ctrl_c_says_where_the_run_stopped_exits_130_and_the_same_command_resumes(tmp_path):
    # an epoch of one step; 1000 epochs: the run never finishes before Ctrl-C, however fast the machine
    command = train_command(tmp_path, "dataset.train_size=32", "trainer.epochs=1000")
    name = ("synthetic/clean/ce/seed123/dataset.test_size=32,dataset.train_size=32,trainer.batch_size=32,"
            "trainer.epochs=1000")
    run_dir = tmp_path / name
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def interrupt_once(ready) -> tuple[int, str, str]:
        """Start the command, wait until ready() (at most 2 min), press Ctrl-C: (exit status, stdout, stderr)."""
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not ignored
        try:
            deadline = time.monotonic() + 120
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"still running 60 s after Ctrl-C: {stdout[-2000:]} {stderr[-2000:]}")
        finally:
            proc.kill()
        return proc.returncode, stdout, stderr

    status, stdout, stderr = interrupt_once(lambda: (run_dir / "checkpoint.pt").exists())
    epoch = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    line = f"{name} interrupted after its checkpoint of epoch {epoch}/1000: the same command resumes it from there"
    assert status == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    assert line in stdout and line in (run_dir / "train.log").read_text()
    assert not (run_dir / "result.json").exists()  # an interruption is no failure: nothing for the tables

    def checkpointed_past(epoch: int) -> bool:  # an epoch's line comes after the checkpoint of the one before
        log = (run_dir / "train.log").read_text()
        return "resuming" in log and f"epoch {epoch + 2}/1000:" in log.split("resuming", 1)[1]

    status, stdout, stderr = interrupt_once(lambda: checkpointed_past(epoch))
    assert f"resuming {name} from epoch {epoch}" in stdout
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert status == 130, stderr[-3000:]
    assert state["epoch"] > epoch and [h["epoch"] for h in state["history"]] == list(
        range(1, state["epoch"] + 1))
    assert f"interrupted after its checkpoint of epoch {state['epoch']}/1000" in stdout


@pytest.mark.parametrize("stop_in_epoch", [1, 2])
@pytest.mark.full  # trains
def test_an_interrupted_fusion_says_each_members_last_checkpoint(synthetic_run, tmp_path, caplog, stop_in_epoch):
    # one step an epoch; the first member's loss raises KeyboardInterrupt (Ctrl-C) in its epoch `stop_in_epoch`
    stopping = f"loss._target_=conftest.CEThatIsInterruptedInEpoch{stop_in_epoch}"
    cfgs = [synthetic_run("trainer.epochs=3", "dataset.train_size=32", "dataset.test_size=16", f"seed={seed}", *loss)
            for seed, loss in ((1, [stopping]), (2, []))]
    with pytest.raises(KeyboardInterrupt):
        jal_train.train_fusion(cfgs, [tmp_path / "a", tmp_path / "b"])
    said = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    where = ("interrupted before its first checkpoint: the same command starts it again" if stop_in_epoch == 1 else
             "interrupted after its checkpoint of epoch 1/3: the same command resumes it from there")
    assert said == [f"{cfg.run_name} {where}" for cfg in cfgs]


@pytest.mark.full  # trains
def test_finished_run_is_skipped(synthetic_run, monkeypatch):
    cfg = synthetic_run("trainer.epochs=1")
    first = jal_train.train(cfg, run_dir_of(cfg))
    monkeypatch.setattr(jal_run, "load_dataset", lambda *a, **k: pytest.fail("a finished run must not train"))
    assert jal_train.train(cfg, run_dir_of(cfg)) == first


@pytest.mark.full  # trains
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_run, monkeypatch):
    cfg = synthetic_run("trainer.epochs=3")
    build = jal_step.build_training

    def loss_turns_nan_in_epoch_2(*args):
        model, step_model, criterion, optimizer, scheduler = build(*args)
        loss_turns_nan_after(criterion, 2)  # 256 images in batches of 128: the 3rd call is epoch 2's first
        return model, step_model, criterion, optimizer, scheduler

    monkeypatch.setattr(jal_run, "build_training", loss_turns_nan_in_epoch_2)
    with pytest.raises(jal_train.RunDiverged, match="non-finite training loss in epoch 2"):
        jal_train.train(cfg, run_dir_of(cfg))
    state = torch.load(run_dir_of(cfg) / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and np.isfinite(state["history"][0]["train_loss"])
    record = json.loads((run_dir_of(cfg) / "result.json").read_text())  # a record the tables flag as failed
    assert record["status"] == "failed" and "non-finite" in record["error"] and record["loss"] == "ce"
    assert record["epoch"] == 2


@pytest.mark.full  # bash scripts/reproduce_cifar10.sh, make -n
@pytest.mark.usefixtures("cifar10_file_for_the_plan")  # the plan stops without a cifar10.npz
def test_minutes_gives_every_run_of_the_sweep_one_deadline_and_headline_runs_seed_123_first(tmp_path):
    """make reproduce-cifar10 MINUTES=3 CELLS=headline: the commands it would run (a stand-in python prints
    the training and table commands instead of running them)."""
    make = subprocess.run(["make", "-n", "reproduce-cifar10", "MINUTES=3", "CELLS=headline"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert "MINUTES=3" in make.stdout and "CELLS=headline" in make.stdout, make.stdout
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\ncase "$1 $2" in "-m jal.train"|"-m jal.tables") echo "$@";; '
                      f'*) exec {sys.executable} "$@";; esac\n')
    python.chmod(0o755)
    before = time.time()
    env = dict(os.environ, PYTHON=str(python), MINUTES="3", CELLS="headline", PRESET="paper", LAUNCHER="basic")
    done = subprocess.run(["bash", "scripts/reproduce_cifar10.sh"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runs = [line.split() for line in done.stdout.splitlines() if line.startswith("-m jal.train")]
    stop_at = {int(a.split("=")[1]) for run in runs for a in run if a.startswith("trainer.stop_at=")}
    (deadline,) = stop_at  # one deadline, on every multirun
    assert before + 180 - 2 <= deadline <= time.time() + 180 + 2
    cells = [(a["seed"], a["noise"], a["noise.rate"]) for a in (dict(x.split("=", 1) for x in run if "=" in x)
                                                              for run in runs)]
    assert cells == [(seed, noise, rates) for seed in ("123", "124", "125")
                     for noise, rates in (("symmetric", "0.4,0.8"), ("asymmetric", "0.2,0.4"))]
    assert all("loss=ce,nce_rce,anl_ce,anl_fl,jal_ce,jal_fl" in run for run in runs)
    assert done.stdout.splitlines()[-1].startswith("-m jal.tables results/runs/cifar10 --out results/cifar10")
    bad = subprocess.run(["bash", "scripts/reproduce_cifar10.sh"], cwd=REPO, env={**env, "MINUTES": "7.5"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: MINUTES=7.5: give a whole number of minutes, e.g. " \
        "MINUTES=8" and "jal.train" not in bad.stdout


def test_slurm_launcher_asks_for_the_signal_before_the_limit_and_requeues():
    cfg = compose_train(["hydra/launcher=slurm", "dataset=synthetic"])
    launcher = cfg.hydra.launcher
    assert launcher.signal_delay_s >= 60 and launcher.max_num_timeout > 0
    assert signal.SIGUSR2 in jal_stops.STOP_SIGNALS  # submitit's signal (SUBMITIT_PREEMPT_SIGNAL, default USR2)


def test_deterministic_asks_torch_for_repeatable_kernels(synthetic_run, monkeypatch):
    from jal.gpu_check import global_determinism_restored

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with global_determinism_restored():
        jal_device.set_determinism(torch.device("cpu"), True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()  # the default leaves torch's settings alone
    jal_device.set_determinism(torch.device("cpu"), False)
    assert not torch.are_deterministic_algorithms_enabled()


# ---------------------------------------------------------------------------------------------------
# trainer.compile


@pytest.mark.full  # torch.compile
def test_compiled_model_serves_training_and_evaluation(synthetic_run, monkeypatch, one_torch_thread):
    """trainer.compile=<mode>: the training step and the evaluation both call the torch.compile'd model."""
    calls, modes = [], []

    class Recorder(torch.nn.Module):  # stands in for torch.compile's wrapper (compiling takes a minute on a CPU)
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            calls.append("train" if self.model.training else "eval")
            return self.model(x)

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: modes.append(mode) or Recorder(model))
    cfg = synthetic_run("trainer.compile=reduce-overhead", "trainer.epochs=1", "dataset.train_size=64",
                        "dataset.test_size=32")
    result = jal_train.train(cfg, run_dir_of(cfg))
    assert modes == ["reduce-overhead"] and result.status == "finished"
    assert calls == ["train"] * 1 + ["eval"] * 1  # 64 images: one training batch; 32: one evaluation batch


def test_unknown_compile_mode_is_a_one_line_error(synthetic_run):
    cfg = synthetic_run("trainer.compile=fastest")
    with pytest.raises(jal_run.ConfigError, match="trainer.compile=fastest is not true, false or one of "
                                                    "default, reduce-overhead"):
        jal_train.check_config(cfg)


@pytest.mark.slow
def test_compiled_run_trains_as_the_eager_run(synthetic_run, tmp_path, one_torch_thread):
    overrides = ("trainer.epochs=2", "dataset.train_size=64", "dataset.test_size=32", "loss=jal_ce")
    eager = jal_train.train(synthetic_run(*overrides), tmp_path / "eager")
    compiled = jal_train.train(synthetic_run(*overrides, "trainer.compile=true"), tmp_path / "compiled")
    for a, b in zip(eager.history, compiled.history):  # fused kernels round differently: close, not equal
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    assert compiled.history[-1]["test_acc"] == pytest.approx(eager.history[-1]["test_acc"], abs=100 / 32)


# ---------------------------------------------------------------------------------------------------
# L1 regularisation


def test_l1_gradient_equals_the_gradient_of_the_penalty_in_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    (loss + 5e-5 * sum(p.abs().sum() for p in model.parameters())).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    jal_step.add_l1_gradient(list(model.parameters()), 5e-5)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


# ---------------------------------------------------------------------------------------------------
# Real data (skipped without cifar10.npz in JAL_DATA_DIR)


@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="needs cifar10.npz in JAL_DATA_DIR")
def test_real_cifar10_subset_learns_well_above_chance(tmp_path):
    cfg = compose_train(["dataset=cifar10", "dataset.subset=2000", "trainer.epochs=3", "logger=none",
                         "trainer.progress=false", f"data_dir={shared_data_dir()}", f"out_root={tmp_path}"])
    result = jal_train.train(cfg, tmp_path / "run")
    assert result.last_test_acc > 30  # chance is 10%


@pytest.mark.full  # trains
def test_eval_every_evaluates_on_schedule_and_the_last_epoch_without_changing_training(synthetic_run):
    """trainer.eval_every=3 over 4 epochs: test accuracy after epochs 3 and 4 only, the same figures as a run that
    evaluates every epoch (evaluation draws no random numbers and leaves the weights alone)."""
    common = ("trainer.epochs=4", "dataset.train_size=64", "dataset.test_size=32", "noise=symmetric",
              "noise.rate=0.4")
    every = synthetic_run(*common, "trainer.eval_every=1")
    every_run = jal_train.train(every, run_dir_of(every).parent / "every")
    sparse = synthetic_run(*common, "trainer.eval_every=3")
    sparse_run = jal_train.train(sparse, run_dir_of(sparse))
    tested = [h["test_acc"] for h in sparse_run.history]
    assert tested[:2] == [None, None] and None not in tested[2:]
    assert tested[2:] == [h["test_acc"] for h in every_run.history][2:]
    assert [h["train_loss"] for h in sparse_run.history] == [h["train_loss"] for h in every_run.history]
    assert sparse_run.last_test_acc == tested[-1] and sparse_run.best_test_acc == max(tested[2:])


class ThreadCountingCE(CE):
    """CE that notes torch's intra-op thread count at each call: the threads the run computed with."""
    seen: list[int] = []

    def forward(self, logits, targets):
        ThreadCountingCE.seen.append(torch.get_num_threads())
        return super().forward(logits, targets)


@pytest.mark.full  # trains
def test_trainer_threads_sets_torchs_intra_op_threads(synthetic_run):
    """trainer.threads=N: the run computes with N intra-op threads (a CPU sweep runs one-thread jobs side by side);
    null leaves torch's setting alone. The loss, given by the config, reads the count inside the training step."""
    small = ("trainer.epochs=1", "dataset.train_size=64", "dataset.test_size=16",
             f"loss._target_={__name__}.ThreadCountingCE")  # 64 images: one training step
    previous, seen = torch.get_num_threads(), {}
    try:
        for threads, before in ((3, 1), (None, 2)):
            torch.set_num_threads(before)
            ThreadCountingCE.seen = []
            cfg = synthetic_run(*small, f"trainer.threads={threads or 'null'}", f"seed={before}")
            assert jal_train.train(cfg, run_dir_of(cfg)).status == "finished"
            seen[threads] = ThreadCountingCE.seen
    finally:
        torch.set_num_threads(previous)
    assert seen == {3: [3], None: [2]}
