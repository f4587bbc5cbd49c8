"""Shared test helpers: compose the training config the way `python -m jal.train` does; the guard of the test
tiers (`make test` in-process, `make test-all` the rest: pyproject.toml's markers)."""

import _posixsubprocess
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jal.losses import CE
from jal.util import compose_run

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: pytest-xdist, a worker per core, each one thread (its
    torch.set_num_threads(1)  # subprocesses too); a test that needs more threads sets them itself
    os.environ["OMP_NUM_THREADS"] = "1"


# ---------------------------------------------------------------------------------------------------
# The two tiers. `make test` runs the tests not marked full, slow or slurm, in this process: a test there that
# starts a process or sends a signal fails, naming what it started (the guard cannot go stale as a list of
# tests would). Exempt: `git`, the record's commit (jal.util.git_commit, a few ms, in every training run).

FULL_TIER = ("full", "slow", "slurm")  # markers of the tests only `make test-all` runs
SPAWNS = {"os.system", "os.posix_spawn", "os.spawn", "os.exec", "os.fork", "os.forkpty"}
SIGNALS = {"os.kill", "os.killpg", "signal.pthread_kill"}
_guard = {"on": False, "seen": []}


def _audit(event: str, args: tuple) -> None:
    if not _guard["on"]:
        return
    if event == "subprocess.Popen":  # (executable, args, cwd, env); args a list, or a string with shell=True
        argv = args[1].split() if isinstance(args[1], (str, bytes)) else list(args[1])
        if Path(os.fsdecode(argv[0])).name != "git":
            _guard["seen"].append(f"started {' '.join(map(os.fsdecode, argv))}")
    elif event in SPAWNS:
        _guard["seen"].append(f"started a process ({event} {args})")
    elif event in SIGNALS:
        _guard["seen"].append(f"sent a signal ({event} {args})")


def _fork_exec(*args, _real=_posixsubprocess.fork_exec):
    """multiprocessing's and joblib's (loky) worker processes start here, with no audit event of their own
    (subprocess.Popen has its own and its own reference to the real function)."""
    if _guard["on"]:
        _guard["seen"].append(f"started a worker process: {' '.join(map(os.fsdecode, args[0]))}")
    return _real(*args)


sys.addaudithook(_audit)
_posixsubprocess.fork_exec = _fork_exec


def _fast_tier_phase(item):
    """Around a fast-tier test's setup, call or teardown (its module fixtures included): no process, no signal."""
    if any(item.get_closest_marker(name) for name in FULL_TIER):
        return (yield)
    _guard.update(on=True, seen=[])
    try:
        result = yield
    finally:
        _guard["on"] = False
    if _guard["seen"]:
        pytest.fail(f"{item.nodeid} is in make test's in-process tier but {'; '.join(_guard['seen'])[:600]}: "
                    f"mark it @pytest.mark.full (make test-all) or keep it in this process", pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _fast_tier_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _fast_tier_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    return (yield from _fast_tier_phase(item))


# ---------------------------------------------------------------------------------------------------
# Data


def shared_data_dir() -> Path | None:
    """$JAL_DATA_DIR when it is set and holds the real CIFAR-10 (docs/protocol.md section 6), else None."""
    candidate = os.environ.get("JAL_DATA_DIR")
    if candidate and (Path(candidate) / "cifar10.npz").is_file():
        return Path(candidate)
    return None


def small_cifar10(n: int = 20) -> dict:
    """A valid cifar10.npz of n training and n test images, two of each class."""
    rng = np.random.default_rng(0)
    labels = np.arange(n, dtype=np.uint8) % 10
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return dict(x_train=images, y_train=labels, x_test=images, y_test=labels)


@pytest.fixture
def cifar10_file_for_the_plan(tmp_path_factory, monkeypatch):
    """The table scripts' plan (python -m jal.plan) stops when $JAL_DATA_DIR/cifar10.npz is missing, before it
    plans anything, and never reads the file: without the real one, a stand-in of small_cifar10() there lets a
    test of the scripts' commands run on a fresh clone. $JAL_DATA_DIR as it is when the real one is there."""
    if shared_data_dir() is None:
        folder = tmp_path_factory.mktemp("stand_in_data")
        np.savez(folder / "cifar10.npz", **small_cifar10())
        monkeypatch.setenv("JAL_DATA_DIR", str(folder))


def compose_train(overrides: list[str]):
    """The composed config of one run, with Hydra's runtime set as in a real launch; a test's base overrides and
    its own each given once (given_once)."""
    return compose_run(given_once(list(overrides)))


def given_once(overrides: list[str]) -> list[str]:
    """A test's base overrides and its own as one command line gives them: each setting once, the test's value
    in the base's place (a setting given twice is refused: jal.config_check.check_given_once)."""
    last = {}
    for override in overrides:
        last[override.partition("=")[0].lstrip("+")] = override
    return list(last.values())


@pytest.fixture
def synthetic_run(tmp_path):
    """compose for a small, fast synthetic run that logs nothing remotely."""

    def make(*overrides: str):
        base = ["dataset=synthetic", "logger=none", "trainer.progress=false", f"out_root={tmp_path}"]
        return compose_train(base + list(overrides))

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy machine (restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def loss_turns_nan_after(criterion, calls: int) -> None:
    """Fault injection: from its (calls + 1)-th call on, `criterion` returns NaN (a diverging run)."""
    made, real = [], criterion.forward

    def forward(logits, targets):
        made.append(1)
        loss = real(logits, targets)
        return loss * float("nan") if len(made) > calls else loss

    criterion.forward = forward


class CEThatTurnsNaN(CE):
    """Fault injection through the config (loss._target_=conftest.CEThatTurnsNaN): CE until its 3rd call, NaN
    from then on (a run of 2 steps an epoch diverges in epoch 2)."""

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, logits, targets):
        self.calls += 1
        loss = super().forward(logits, targets)
        return loss * float("nan") if self.calls > 2 else loss


class CEThatStops(CE):
    """Fault injection through the config (loss._target_=conftest.<a subclass>): CE that, at its `at_call`-th
    call (a training step), sends this process `stop` (a signal number) or raises KeyboardInterrupt (Ctrl-C)."""
    at_call, stop = 1, None

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, logits, targets):
        self.calls += 1
        if self.calls == self.at_call:
            if self.stop is None:
                raise KeyboardInterrupt
            os.kill(os.getpid(), self.stop)
        return super().forward(logits, targets)


class CEThatGetsSIGUSR1InEpoch1(CEThatStops):
    stop = signal.SIGUSR1


class CEThatTakesItsTime(CE):
    """CE whose every call (a training step) takes at least `seconds` more: a run of a known length on any
    machine (the SLURM time-limit test needs one longer than SLURM's warning), with CE's arithmetic."""
    seconds = 1.25

    def forward(self, logits, targets):
        time.sleep(self.seconds)
        return super().forward(logits, targets)


class CEThatIsInterruptedInEpoch1(CEThatStops):
    at_call = 1


class CEThatIsInterruptedInEpoch2(CEThatStops):
    at_call = 2  # a run of one step an epoch


class TinyNet(torch.nn.Module):
    """A small network without BatchNorm (model._target_=conftest.TinyNet): its step on a batch split over
    processes is the step on the whole batch up to the order of sums (tests/test_distributed.py)."""

    def __init__(self, num_classes: int, image_size: int = 32):  # image_size: the model config's, unused
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                                          torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                                          torch.nn.Linear(32, num_classes))

    def forward(self, x):
        return self.layers(x)


class CEThatSignalsRank1(CE):
    """CE that, when `at_call` is set (by a test, in the process of rank 1 of a run across processes), sends that
    process SIGUSR1 at its at_call-th call: a stop signal to one rank only (tests/test_distributed.py)."""
    at_call = None

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, logits, targets):
        self.calls += 1
        if self.calls == self.at_call and torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().forward(logits, targets)


class CEThatIsWarnedThenPreemptedInEpoch1(CE):
    """SLURM's USR2 before the time limit at the first training step, SIGTERM (preemption) at the second: two
    stop signals in one epoch (a run of 2 steps an epoch)."""

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, logits, targets):
        self.calls += 1
        if self.calls in (1, 2):
            os.kill(os.getpid(), signal.SIGUSR2 if self.calls == 1 else signal.SIGTERM)
        return super().forward(logits, targets)


class CEThatSignalsAsTold(CE):
    """CE that sends signals at the training steps (calls) $JAL_TEST_SIGNALS names, counted in each process:
    `3:SIGTERM,4:SIGTERM` (two SIGTERMs in the second epoch of a run of 2 steps an epoch), `7:SIGKILL@1` (on
    rank 1 only, of a run across processes), `7:SIGINT@1:parent` (to its parent: Ctrl-C in the terminal reaches
    torchrun, which hands it on to its workers). Without the variable it is CE: the same command started again
    (the same experiment, in the same directory) trains on untouched (tests/test_signals.py and
    tests/test_distributed.py)."""

    def __init__(self, num_classes: int):
        super().__init__(num_classes)
        self.calls, self.signals = 0, {}
        for item in filter(None, os.environ.get("JAL_TEST_SIGNALS", "").split(",")):
            call, what, *to = item.split(":")
            name, _, rank = what.partition("@")
            self.signals[int(call)] = (getattr(signal, name), int(rank) if rank else None, to == ["parent"])

    def forward(self, logits, targets):
        self.calls += 1
        if self.calls in self.signals:
            sig, rank, to_parent = self.signals[self.calls]
            if rank is None or (torch.distributed.is_initialized() and torch.distributed.get_rank() == rank):
                os.kill(os.getppid() if to_parent else os.getpid(), sig)
        return super().forward(logits, targets)
