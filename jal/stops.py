"""Pausing a run: trainer.stop_at, trainer.pause_after and the stop signals (SIGTERM, SIGUSR1, SIGUSR2: SLURM's
warning before its time limit, preemption, submitit's signal). A signal is only recorded; the run pauses at
the next epoch end, its checkpoint written. Under SLURM the job is then requeued, whichever signal came
first (docs/clusters.md); elsewhere the process exits 0 and the same command continues the run.
"""

import logging
import os
import signal
import subprocess
import threading
import time

from omegaconf import DictConfig

log = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopSignals:
    """The stop signals a process received, in order: the first names the pause, and once one has come every
    later run in the process pauses too (a sweep's runs through the basic launcher). `python -m jal.train`
    keeps one per process (PROCESS_STOPS); a test passes its own, so nothing it sends outlives it."""

    def __init__(self):
        self.received: list[int] = []

    def request_stop(self, signum: int, frame=None) -> None:
        """Signal handler: pause at the next epoch end. A later signal never replaces the first (SLURM's
        USR2 before its time limit, then SIGTERM: the run is still paused, and requeued, once)."""
        self.received.append(signum)

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None

    def install(self) -> dict:
        """request_stop for STOP_SIGNALS; returns the handlers it replaced (none off the main thread, where
        Python cannot set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.request_stop) for sig in STOP_SIGNALS}


PROCESS_STOPS = StopSignals()  # what this process received (python -m jal.train, a launcher's worker)


def stop_reason(cfg: DictConfig, epochs_done: int, stops: StopSignals) -> str | None:
    """Why the run must pause now, having done `epochs_done` epochs, if it must: a stop signal, trainer.stop_at
    has passed, or trainer.pause_after epochs are done."""
    if stops.first is not None:
        return signal.Signals(stops.first).name
    stop_at = cfg.trainer.get("stop_at")
    if stop_at is not None and time.time() >= stop_at:
        return f"the deadline {time.strftime('%Y-%m-%d %H:%M', time.localtime(stop_at))} (trainer.stop_at) passed"
    pause_after = cfg.trainer.get("pause_after")
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


def restore_handlers(previous: dict, stops: StopSignals, signalled_before: int) -> None:
    """Put the replaced handlers back after the runs of one train_fusion call. If a stop signal came during
    it (the first of the process): under SLURM the job is requeued (requeue), elsewhere the first signal is
    handed on to the handler it replaced (a launcher's), now that the checkpoint is written."""
    hand_on = stops.first if signalled_before == 0 and stops.received else None
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
