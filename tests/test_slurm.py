"""The README's cluster commands against a real single-node SLURM (scripts/slurm/start.sh; `make test-slurm`):
sweeps and fused sweeps train what the basic launcher trains; a run stopped by SLURM (its time limit, a
USR2, `scontrol requeue`, a preempting job) is requeued and ends bit for bit as if uninterrupted; a killed
task fails its runs in one line and the launcher returns. Marked `slurm` (not in plain `make test`); skipped
when no cluster answers. Every wait has a timeout: a test that hangs fails instead."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, given_once

pytestmark = pytest.mark.slurm
if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode != 0:
    pytestmark = [pytestmark, pytest.mark.skip(reason="no SLURM cluster answers (sinfo): `make test-slurm` starts "
                                                      "one (as root)")]

# Tiny synthetic runs, one CPU each: the node has 2. fp64: no float roundoff question in "bit for bit".
TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32",
        "logger=none", "trainer.progress=false", "trainer.threads=1", "noise=symmetric", "noise.rate=0.4"]
# What the README's cluster section gives on a node without GPUs (make: SLURM='partition=debug ...').
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
TIMINGS = ("images_per_second", "seconds")
RESUMED = re.compile(r"\]\[INFO\] - resuming synthetic/\S+ from epoch [1-7]$", re.M)  # a requeued task's line
WAIT = 420  # seconds: the longest any command or state is waited for


def command(module: str, out_root: Path, *overrides: str, fuse: int = 0) -> list[str]:
    """The command line of TINY, out_root and the overrides, each key once (a later value in its place)."""
    head = [sys.executable, "-m", module] + (["--fuse", str(fuse)] if fuse else ["-m"])
    return head + given_once([*TINY, f"out_root={out_root}", *overrides])


def env() -> dict:
    tests = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))  # conftest's losses
    return dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="1", PYTHONPATH=tests)


def run(cmd: list[str], timeout: float = WAIT) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    print(done.stdout[-3000:], done.stderr[-3000:])
    return done


def records(root: Path) -> dict:
    return {p.parent.relative_to(root): json.loads(p.read_text()) for p in root.glob("synthetic/**/result.json")}


def assert_same_runs(got_root: Path, want_root: Path, count: int) -> None:
    """The same runs, finished, with the same history (timings aside) and the same final weights, bit for bit."""
    got, want = records(got_root), records(want_root)
    assert len(got) == count and set(got) == set(want)
    for name in want:
        assert got[name]["status"] == "finished", got[name]
        strip = lambda r: [{k: v for k, v in h.items() if k not in TIMINGS} for h in r["history"]]  # noqa: E731
        assert strip(got[name]) == strip(want[name])
        a, b = (torch.load(root / name / "checkpoint.pt", weights_only=True)["model"] for root in (got_root, want_root))
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def wait_for(what: str, check, timeout: float = WAIT, every: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if result := check():
            return result
        time.sleep(every)
    pytest.fail(f"waited {timeout} s for {what}")


def job_ids(out_root: Path) -> list[str]:
    """The SLURM jobs submitit made for the sweep: its folders .submitit/<job> (<job>_<task> in an array)."""
    return sorted(p.name for p in (out_root / ".submitit").glob("*") if re.fullmatch(r"\d+(_\d+)?", p.name))


def epochs_checkpointed(out_root: Path) -> int:
    """The fewest epochs a run of the sweep has checkpointed (0 before every run has one)."""
    found = list(out_root.glob("synthetic/**/checkpoint.pt"))
    if not found:
        return 0
    try:
        return min(torch.load(p, weights_only=True)["epoch"] for p in found)
    except (RuntimeError, EOFError, OSError):  # written meanwhile
        return 0


def requeues(job: str) -> int:
    """How many times SLURM started the job again (sacct keeps a row per start of a requeued job)."""
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-j", job, "-o", "JobID,State"], capture_output=True,
                         text=True, timeout=60).stdout
    return sum("REQUEUE" in line or "PREEMPT" in line for line in out.splitlines())


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    """The reference: the same runs through the basic launcher (one process, no SLURM)."""
    root = tmp_path_factory.mktemp("basic")
    done = run(command("jal.train", root, "loss=ce,jal_ce", "trainer.epochs=2"))
    assert done.returncode == 0
    return root


@pytest.fixture(scope="module")
def basic_long(tmp_path_factory):
    """The reference of the runs that are stopped: 8 epochs uninterrupted."""
    root = tmp_path_factory.mktemp("basic_long")
    assert run(command("jal.train", root, "loss=ce", "trainer.epochs=8")).returncode == 0
    return root


def test_a_sweep_trains_on_slurm_what_the_basic_launcher_trains(basic, tmp_path):
    done = run(command("jal.train", tmp_path, "loss=ce,jal_ce", "trainer.epochs=2", *SLURM))
    assert done.returncode == 0 and "Sweep summary: 2 runs: 2 finished, 0 failed" in done.stdout
    assert_same_runs(tmp_path, basic, 2)
    for log in tmp_path.glob("synthetic/**/train.log"):  # the run's own lines only
        text = log.read_text()
        assert "][jal.epochs][INFO] - epoch 2/2: " in text and "submitit" not in text


def test_a_fused_sweep_trains_on_slurm_what_the_basic_launcher_trains(tmp_path):
    """FUSE=2 over 4 runs: 2 fusions, a task each; the reference is the same fused sweep through the basic
    launcher, trained meanwhile beside it (fused runs equal fused runs bit for bit, not runs alone)."""
    sweep = ["loss=ce,jal_ce", "trainer.epochs=2", "seed=123,124"]
    reference = subprocess.Popen(command("jal.fuse", tmp_path / "basic", *sweep, fuse=2), cwd=REPO, env=env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = run(command("jal.fuse", tmp_path / "slurm", *sweep, *SLURM, fuse=2))
        assert reference.wait(timeout=WAIT) == 0
    finally:
        reference.kill()
    assert done.returncode == 0, done.stderr
    assert "Fused sweep summary: 4 runs trained here: 4 finished, 0 failed" in done.stdout
    assert "one SLURM task each (submitit: a job array" in done.stdout
    assert_same_runs(tmp_path / "slurm", tmp_path / "basic", 4)
    for log in (tmp_path / "slurm").glob("synthetic/**/train.log"):
        assert "submitit" not in log.read_text()


def start_and_stop(tmp_path: Path, stop, *extra: str) -> subprocess.CompletedProcess:
    """Launch an 8-epoch run on SLURM; once it has checkpointed an epoch, `stop(job id)`; wait for the launcher."""
    launcher = subprocess.Popen(command("jal.train", tmp_path, "loss=ce", "trainer.epochs=8", *SLURM, *extra),
                                cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        (job,) = wait_for("the job to be submitted", lambda: job_ids(tmp_path), timeout=60)
        wait_for("the run's first checkpoint", lambda: epochs_checkpointed(tmp_path) >= 1)
        stop(job)
        out, _ = launcher.communicate(timeout=WAIT)
    finally:
        if launcher.poll() is None:  # failed meanwhile: leave no job behind
            launcher.kill()
            subprocess.run(["scancel", *job_ids(tmp_path)], timeout=60)
    print(out[-4000:])
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, out, "")


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, timeout=60)


@pytest.mark.parametrize("how", ["USR2 then TERM", "scontrol requeue"])  # USR2 alone: the time-limit test
def test_a_stopped_run_is_requeued_and_ends_as_uninterrupted(basic_long, tmp_path, how):
    """USR2: SLURM's warning before the time limit (submitit's signal); TERM: what `scontrol requeue` and a
    preemption send; several in one epoch: the job is still requeued once, whichever came first."""
    def stop(job):
        if how == "scontrol requeue":
            scontrol("requeue", job)
        for signal_name in how.split(" then ") if "then" in how or how == "USR2" else []:
            subprocess.run(["scancel", "--signal", signal_name, job], check=True, timeout=60)
            time.sleep(0.5)

    done = start_and_stop(tmp_path, stop)
    assert done.returncode == 0 and "Sweep summary: 1 run: 1 finished" in done.stdout
    assert_same_runs(tmp_path, basic_long, 1)
    log = next(tmp_path.glob("synthetic/**/train.log")).read_text()
    assert re.search(r"paused after epoch \d: SIG(USR2|TERM)", log) and RESUMED.search(log) and "submitit" not in log


@pytest.mark.parametrize("grace", [0, 60])
def test_a_preempted_run_is_requeued_and_ends_as_uninterrupted(basic_long, tmp_path, grace):
    """A job of the higher-priority partition `high` takes the node: debug's job gets SIGTERM and GraceTime s."""
    scontrol("update", "PartitionName=debug", f"GraceTime={grace}")
    preempting = []

    def stop(job):
        out = subprocess.run(["sbatch", "-p", "high", "-c", "2", "-o", "/dev/null", "--wrap", "sleep 3"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        preempting.append(out.split()[-1])

    try:
        done = start_and_stop(tmp_path, stop)
    finally:
        scontrol("update", "PartitionName=debug", "GraceTime=60")
    assert done.returncode == 0 and "Sweep summary: 1 run: 1 finished" in done.stdout
    assert_same_runs(tmp_path, basic_long, 1)
    assert RESUMED.search(next(tmp_path.glob("synthetic/**/train.log")).read_text())


def test_a_run_past_its_time_limit_is_requeued_and_ends_as_uninterrupted(tmp_path):
    """A real time limit: 2 minutes, SLURM's warning (USR2) 60 s before it (SLURM sends it up to ~30 s early,
    so 30-60 s into each task); the run is longer than that on any machine (each of its 4 steps an epoch
    sleeps 1.25 s: 100 s of training), and its reference trains meanwhile, beside it."""
    longer = ["loss=ce", "loss._target_=conftest.CEThatTakesItsTime", "trainer.epochs=20", "dataset.train_size=128"]
    reference = subprocess.Popen(command("jal.train", tmp_path / "basic", *longer), cwd=REPO, env=env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = run(command("jal.train", tmp_path / "slurm", *longer, *SLURM, "hydra.launcher.timeout_min=2",
                           "hydra.launcher.signal_delay_s=60"))
        assert reference.wait(timeout=WAIT) == 0
    finally:
        reference.kill()
    assert done.returncode == 0 and "Sweep summary: 1 run: 1 finished" in done.stdout
    assert_same_runs(tmp_path / "slurm", tmp_path / "basic", 1)
    log = next((tmp_path / "slurm").glob("synthetic/**/train.log")).read_text()  # paused where the warning came
    assert "paused after epoch" in log and "SIGUSR2" in log and re.search(r"- resuming synthetic/\S+ from epoch "
                                                                          r"(1[0-9]|[1-9])$", log, re.M), log


def test_a_killed_task_fails_its_runs_in_one_line_and_the_launcher_returns(tmp_path):
    launcher = subprocess.Popen(command("jal.fuse", tmp_path, "loss=ce,jal_ce", "trainer.epochs=8", *SLURM, fuse=2),
                                cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        (job,) = wait_for("the job to be submitted", lambda: job_ids(tmp_path), timeout=60)
        wait_for("the fusion's first checkpoint", lambda: epochs_checkpointed(tmp_path) >= 1)
        # killed as the kernel's out-of-memory killer kills: SIGKILL to the task's process (scancel would
        # cancel the job instead, and SIGTERM would pause the fusion)
        pids = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, timeout=60).stdout
        tasks = [pid for pid in re.findall(r"^(\d+)\s", pids, re.M)
                 if "submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
        assert tasks, pids
        for pid in tasks:
            os.kill(int(pid), 9)
        out, _ = launcher.communicate(timeout=WAIT)
    finally:
        launcher.kill()
    print(out[-4000:])
    assert launcher.returncode == 1
    failed = re.findall(r"^\[fusion 1/1\] (.*): failed: (.*)$", out, re.M)
    assert len(failed) == 2 and "Traceback" not in out
    assert failed[0][1].startswith(f"its task {job} failed: SLURM job {job} ended ")
    assert f"; its log: {tmp_path}/.submitit/{job}/{job}_0_log.err (ETA " in failed[0][1], failed
    assert "Fused sweep summary: 2 runs trained here: 0 finished, 2 failed" in out
