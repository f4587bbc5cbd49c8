"""Stopping a command: trainer.stop_at, trainer.pause_after, the stop signals (SIGTERM, SIGUSR1, SIGUSR2:
SLURM's warning before its time limit, preemption, submitit's signal) and Ctrl-C.

- A stop signal is recorded; the run pauses at the next epoch end, its checkpoint written, and later runs of
  the process are not started. Under SLURM the job is then requeued, whichever signal came first
  (docs/clusters.md); elsewhere the command exits 0 and the same command continues the run.
- A second SIGTERM before the pause, outside SLURM, stops at once as Ctrl-C does (Terminated, exit status
  143): what `kill` twice, or a scheduler's impatience, asks for when an epoch is long. Only SIGTERM counts:
  SLURM's USR2 then TERM is one stop (requeued once); under SLURM however many come the run finishes its epoch
  (the requeue needs its paused record; SLURM kills after its grace time anyway).
- Ctrl-C stops at once: each run says where it stopped (jal.train.train_fusion), exit status 130.

The commands (python -m jal.train, jal-train, python -m jal.fuse, jal-fuse) handle these from their first line
to their last (jal/__init__.py calls handle_command_signals before anything else loads, `command` runs their
body): a signal before training, or between two runs, still pauses in words, and a second stop while the
command closes after a pause is only recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

log = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
CTRL_C = 130  # the shell's exit status for a command ended by SIGINT


class Terminated(KeyboardInterrupt):
    """A second SIGTERM before the pause (outside SLURM): the run stops at once, as after Ctrl-C (its last
    checkpoint kept, no record written: it is no failure), and the command exits as a shell expects of a
    command ended by SIGTERM."""
    exit_status = 128 + signal.SIGTERM
    cause = "a second SIGTERM stops at once"  # at the end of each run's line (jal.distributed.where_stopped)
    how = "stopped by a second SIGTERM"  # the command's line, when no run was training (no_run_line)


class StopSignals:
    """The stop signals a process received, in order: the first names the pause, and once one has come every
    later run in the process pauses too (a sweep's runs through the basic launcher). The commands keep one per
    process (PROCESS_STOPS); a test passes its own, so nothing it sends outlives it."""

    def __init__(self):
        self.received: list[int] = []
        self.handed_on = False  # the first signal handed on already (restore_handlers: once per process)
        self.closing = False  # a pause is being written, or the runs were not started: later signals are recorded
        self.interrupted = False  # Ctrl-C or a stop at once came: the command is ending
        self.stopped_by: KeyboardInterrupt | None = None  # the stop at once that came (its exit status)
        self.exit_instead = False  # before a command's body runs (its modules loading): a stop at once exits

    def request_stop(self, signum: int, frame=None) -> None:
        """Signal handler: pause at the next epoch end. A later signal never replaces the first (SLURM's
        USR2 before its time limit, then SIGTERM: the run is still paused, and requeued, once); a second
        SIGTERM before the pause stops at once (Terminated), outside SLURM."""
        self.received.append(signum)
        if (signum == signal.SIGTERM and self.received.count(signal.SIGTERM) >= 2 and not self.closing
                and not self.interrupted and not slurm_batch_job()):
            self.stop_at_once(Terminated())

    def interrupt(self, signum: int, frame=None) -> None:
        """A command's SIGINT handler: Ctrl-C stops at once (KeyboardInterrupt, as Python's own handler); one
        that comes while the command ends after the first (torchrun hands the terminal's on to its workers,
        which got it already) is ignored, so the lines saying where the runs stopped are written whole."""
        if not self.interrupted:
            self.stop_at_once(KeyboardInterrupt())

    def stop_at_once(self, err: KeyboardInterrupt) -> None:
        self.interrupted, self.stopped_by = True, err
        if self.exit_instead:  # no run is started yet and no `command` is there to catch it: its line, exit
            print(no_run_line(err), flush=True)
            raise SystemExit(exit_status(err, self))
        raise err

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None

    def install(self) -> dict:
        """request_stop for STOP_SIGNALS; returns the handlers it replaced (none off the main thread, where
        Python cannot set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.request_stop) for sig in STOP_SIGNALS}


PROCESS_STOPS = StopSignals()  # what this process received (the commands, a launcher's worker)


# ---------------------------------------------------------------------------------------------------
# The commands: their signals handled from the first line to the last

COMMAND_MODULES = ("jal.train", "jal.fuse")  # python -m jal.train, python -m jal.fuse (torchrun's workers too)
COMMAND_SCRIPTS = ("jal-train", "jal-fuse")  # their console scripts (pyproject.toml)


def started_as_command(argv: list[str]) -> bool:
    """Whether the interpreter's command line (sys.orig_argv) runs one of the commands: `python [options] -m
    jal.train ...` or a console script `jal-fuse ...`; not a library's use (a test, a notebook, a worker)."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None) in COMMAND_MODULES
        if arg.startswith("-m"):
            return arg[2:] in COMMAND_MODULES
        if arg in ("-X", "-W"):  # an option with its value apart
            next(args, None)
        elif arg == "-c" or arg == "-":
            return False
        elif not arg.startswith("-"):
            return Path(arg).name in COMMAND_SCRIPTS
    return False


def handle_command_signals() -> None:
    """A command's handlers, for the whole process: stop signals recorded in PROCESS_STOPS (train_fusion keeps
    them in place), Ctrl-C through StopSignals.interrupt (unless the command was started with SIGINT ignored:
    a background job of a script). Until `command` runs the body, a stop at once exits with its line."""
    if threading.current_thread() is not threading.main_thread():
        return
    PROCESS_STOPS.exit_instead = True
    PROCESS_STOPS.install()
    # A stop at once ends joblib's wait with its workers' semaphores still held: multiprocessing's resource
    # tracker (a process of its own, started with this interpreter's -W options) frees them and would warn that
    # it did, under the command's one line.
    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, PROCESS_STOPS.interrupt)


def command(body: Callable[[], object]) -> NoReturn:
    """Run a command's body and exit: 0 when it returns (a finished or paused run, a sweep done or stopped by a
    signal; the body exits otherwise itself, e.g. 1 when a run failed); after Ctrl-C 130, after a second
    SIGTERM 143, after a lost rank 1 (jal.distributed.PeerLost), each with one line: the runs' own (where each
    stopped, jal.train.train_fusion), or this one when no run was training."""
    handle_command_signals()
    PROCESS_STOPS.exit_instead = False  # from here a stop at once raises, and is caught below
    try:
        body()
    except KeyboardInterrupt as err:  # Ctrl-C, a second SIGTERM, a lost rank
        PROCESS_STOPS.interrupted = True  # later Ctrl-Cs are ignored, a sweep's summary is not printed
        if not was_reported(err) and speaks_for_the_run():
            print(no_run_line(err), flush=True)
        sys.exit(exit_status(err, PROCESS_STOPS))
    sys.exit(0)


def speaks_for_the_run() -> bool:
    """A process alone, or rank 0 of a run across processes (torchrun's RANK, a SLURM job step's SLURM_PROCID:
    jal.distributed.launched), which says what the command's line says for all ranks."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def reported(err: BaseException) -> None:
    """Mark a stop at once whose runs say where they stopped: the command adds no line of its own."""
    err.reported = True


def was_reported(err: BaseException | None) -> bool:
    """Whether the runs said where they stopped: for `err`, or for the stop it was raised over (a Ctrl-C
    that came while they said it)."""
    while err is not None:
        if getattr(err, "reported", False):
            return True
        err = err.__context__
    return False


def exit_status(err: KeyboardInterrupt, stops: StopSignals) -> int:
    """A lost rank's own status, else that of the stop at once that came (a second SIGTERM's, also when
    jal.util.atomic_save raised a plain KeyboardInterrupt in its place), else Ctrl-C's."""
    return getattr(err, "exit_status", None) or getattr(stops.stopped_by, "exit_status", None) or CTRL_C


def no_run_line(err: KeyboardInterrupt) -> str:
    """The line of a stop at once while no run was training in this process (the command starting, between
    two runs of a sweep, the parent of a sweep whose runs train in worker processes)."""
    return (f"{getattr(err, 'how', 'interrupted (Ctrl-C)')} while no run was training in this process: the same "
            "command continues (finished runs are skipped, the others resume from their last checkpoint)")


# ---------------------------------------------------------------------------------------------------
# Pausing a run


def stop_reason(epochs_done: int, stops: StopSignals, *, stop_at: float | None,
                pause_after: int | None) -> str | None:
    """Why the run must pause now, having done `epochs_done` epochs, if it must: a stop signal, its trainer.stop_at
    (unix seconds, None: no deadline) has passed, or its trainer.pause_after epochs (None: no pause) are done."""
    if stops.first is not None:
        return signal.Signals(stops.first).name
    if stop_at is not None and time.time() >= stop_at:
        return f"the deadline {time.strftime('%Y-%m-%d %H:%M', time.localtime(stop_at))} (trainer.stop_at) passed"
    if pause_after is not None and epochs_done >= pause_after:
        return f"trainer.pause_after={pause_after} epochs done"
    return None
def slurm_batch_job() -> str | None:
    """The id of the SLURM batch job this process runs in (SLURM can requeue it), or None: not under SLURM."""
    return os.environ.get("SLURM_JOB_ID")


def requeue(previous: dict, job_id: str) -> None:
    """Under SLURM, after a stop signal paused the run at an epoch end (its checkpoint written): ask for the job
    to be requeued whichever signal came (USR2 before the time limit, SIGTERM on preemption or `scontrol
    requeue`), and leave without a result, so that a launcher waits for the requeued task, which continues
    from the checkpoint. submitit's requeue handler (its SIGUSR2's) does it the submitit way (its own
    checkpoint of the task, the count of time-outs left); else `scontrol requeue`. Returns only when the
    requeue could not be asked for (the run then stays paused, as outside SLURM)."""
    state = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    if " JobState=CANCELLED" in state.stdout:  # scancel sends SIGTERM too: a cancelled job stays cancelled
        log.info("SLURM job %s was cancelled: not requeued; the same command continues the run", job_id)
        return
    handler = previous.get(signal.SIGUSR2)
    if getattr(handler, "__name__", "") == "checkpoint_and_try_requeue":  # submitit's SignalHandler
        log.info("requeueing SLURM job %s: the requeued job continues from the checkpoint", job_id)
        try:
            handler(signal.SIGUSR2, None)  # exits (SystemExit) once requeued
        except subprocess.SubprocessError as err:  # scontrol refused (SLURM requeues a preempted job itself)
            log.warning("scontrol requeue %s failed (%s): leaving the job to SLURM, which requeues a preempted job "
                        "itself", job_id, str(err).rstrip("."))
            raise SystemExit(1) from None
        return  # submitit decided not to requeue (out of requeues): it raised, or we return a paused record
    done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        log.info("requeued SLURM job %s: the requeued job continues from the checkpoint", job_id)
        raise SystemExit(0)
    log.warning("could not requeue SLURM job %s (%s): the same command continues the run", job_id,
                (done.stderr or done.stdout).strip().splitlines()[-1:] or "scontrol failed")


def restore_handlers(previous: dict, stops: StopSignals) -> None:
    """Put the replaced handlers back after the runs of one train_fusion call (in a command: its own, kept to
    its end). The first call to end after the process's first stop signal (that came during it, or before it:
    the runs were not started) hands it on, once: under SLURM the job is requeued (requeue), elsewhere the
    signal goes to the handler it replaced (a launcher's), now that the checkpoint is written. From then on
    the process is closing: a second SIGTERM is only recorded."""
    hand_on = stops.first if stops.received and not stops.handed_on else None
    stops.handed_on |= hand_on is not None
    stops.closing |= bool(stops.received)
    try:
        if hand_on is not None and (job_id := slurm_batch_job()):
            requeue(previous, job_id)  # our handlers stay in place meanwhile: more signals are only recorded
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    handler = previous.get(hand_on)
    if hand_on is not None and callable(handler) and not isinstance(getattr(handler, "__self__", None),
                                                                    StopSignals):
        handler(hand_on, None)
