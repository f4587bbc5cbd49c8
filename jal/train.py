"""Train one cell of the paper's tables: `python -m jal.train [hydra overrides]`.

    python -m jal.train dataset=cifar10 loss=jal_ce noise=symmetric noise.rate=0.8
    python -m jal.train -m loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8 seed=123,124,125

Read top to bottom: prepare the data (clean and noisy labels, on the device), build model, loss and
optimiser from the composed config, then train with the whole step on the device, reading metrics back
once per epoch. One training loop trains K runs fused (train_fusion, class Fusion: the K models stacked and
called at once under torch.vmap, each member the same experiment as its run alone); a run alone is a
fusion of one, trained with its plain model and SGD (`python -m jal.fuse` trains a sweep fused).
Each run writes into its directory (a function of its cell, see configs/train.yaml): result.json (atomic),
labels.npz (the noisy labels it trained on) and checkpoint.pt (every epoch, atomic, the one before kept as
checkpoint.prev.pt). Starting a run again resumes from its checkpoint and a finished run
is skipped, but only when the directory holds the same experiment (jal/run_dir.py: run identity, one process
per run, damaged files; trainer.restart=true trains from scratch).

Time-boxed: at the first epoch end past trainer.stop_at (unix seconds), or after SIGTERM/SIGUSR1/SIGUSR2
(SLURM's warning before its time limit, preemption, submitit's signal), the run (a whole fusion) pauses:
checkpoint kept, result.json status "paused", exit 0. Started again, it continues where it stopped. Under
SLURM the job is then requeued instead, whichever signal came first (jal.stops.restore_handlers), and the
requeued job continues it. Ctrl-C stops it at once: a line names the epoch of its last checkpoint, exit
status 130; started again, it resumes from there. So does a second SIGTERM before the pause (exit 143; not
under SLURM); all from the command's first line to its last (jal.stops). A run alone ends with the line
`finished: test accuracy 64.32% (epoch 120) -> <its directory>` (a sweep's runs: their progress lines).
"""

if __name__ == "__main__":  # `python -m jal.train`: a wrong setting fails in one line before torch loads
    from jal.preflight import check_command_line

    check_command_line()  # its stop signals and Ctrl-C handled already (jal/__init__.py, jal.stops)

import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from tqdm import tqdm

from jal import distributed, run, tune
from jal import stops as stop_signals
from jal.config_check import check_config
from jal.device import run_device
from jal.errors import DirectoryConflict, RunDiverged, boundary
from jal.estimate import work_left_after_each_epoch
from jal.experiment import check_fusable
from jal.fuse.rejoin import check_same_epoch, rejoin
from jal.noise import noise_gap
from jal.progress_bar import BAR_FORMAT, bar_postfix
from jal.record import Record, Status, ending
from jal.run import (
    Member,
    about,
    build_member,
    close_unended,
    drop_diverged,
    end_epoch,
    finished_record,
    load_training_data,
    pause_settings,
    paused_record,
    wall,
    write_last_record,
    write_predictions,
)
from jal.run_dir import restart_alone
from jal.step import Fusion, correct_predictions, train_one_epoch
from jal.stops import restore_handlers, stop_reason
from jal.util import CONFIG_DIR, CannotWrite

log = logging.getLogger(__name__)
console = logging.getLogger("jal.console")  # lines about runs this command does not train: jal/run.py


def shown_path(path) -> str:
    """A directory as the user can `cd` into it: relative to the working directory when it lies under it."""
    relative = os.path.relpath(path)
    return str(path) if relative == ".." or relative.startswith(".." + os.sep) else relative


def train_locked(members: list[Member], stops: stop_signals.StopSignals, apart: bool = False) -> list[Record]:
    """Train the prepared members (their locks held) as one fusion to the end, a pause or their failure.
    `apart`: a member whose labels.npz is damaged is blocked (jal.run.blocked) and the others train on."""
    results = {}
    block = (lambda m, err: results.__setitem__(m, run.blocked(m.cfg, m.run_dir, err))) if apart else None
    data, x_test, y_test = distributed.rank_zero_first(load_training_data, members, block)  # rank 0 writes labels
    training = [m for m in members if m not in results]
    if not training:
        return [results[m] for m in members]
    for m, y_noisy in zip(training, data.y_noisy):
        build_member(m, y_noisy)
    check_same_epoch(training)
    distributed.wrap(training, data.y_noisy.shape[1])  # across processes: DDP; alone, nothing
    cfg, precision, fused = training[0].cfg, training[0].precision, len(training)
    settings = training[0].settings  # the step's values the fusion shares (jal.experiment.check_fusable)
    fusion, started = Fusion(training), time.perf_counter()
    epoch, epochs = training[0].start_epoch, cfg.trainer.epochs
    work = work_left_after_each_epoch(cfg)  # the bar's time left (jal.estimate)
    progress = tqdm(range(epoch, epochs), initial=epoch, total=epochs,
                    disable=not cfg.trainer.progress or not distributed.is_main(),
                    desc=training[0].cell.short_name() if fused == 1 else f"fusion of {fused}",
                    bar_format=BAR_FORMAT, postfix=bar_postfix([m.history for m in training], work) or None,
                    dynamic_ncols=True, file=sys.stderr)
    try:
        for epoch in progress:
            reasons = (stop_reason(epoch, stops, **pause_settings(m.cfg.trainer)) for m in fusion.members)
            reason = next(filter(None, reasons), None)
            reason, received = distributed.agreed_stop(reason, stops.first)  # any rank's stop pauses all
            if received is not None and stops.first is None:  # another rank's signal, taken as this rank's own:
                stops.request_stop(received)  # rank 0 hands it on to the launcher (submitit requeues from rank 0)
            if reason:
                stops.closing = True  # a second SIGTERM from here on is only recorded: the pause is written
                progress.close()  # before an epoch = at the last one's end, its checkpoint written
                for m in fusion.members:  # the whole fusion pauses
                    paused = paused_record(m, epoch, reason, wall(m, started))
                    results[m] = write_last_record(m, paused, fused)
                    log.info("%s %s", m.name, ending(results[m]), extra=about(m.run_dir))
                return [results[m] for m in members]
            for m in fusion.members:  # this epoch trains them together (a kill, a pause never lowers the count)
                m.fused = max(m.fused, len(fusion.members))
            epoch_start = time.perf_counter()
            sums = distributed.summed(train_one_epoch(fusion, settings, precision, data, epoch))
            sums = sums.tolist()  # once per epoch: the only host-device sync of the epoch's training
            if any(not math.isfinite(s[0]) for s in sums):
                sums, data = drop_diverged(fusion, data, sums, epoch, results, fused)
                if not fusion.members:
                    break
            train_seconds = time.perf_counter() - epoch_start
            lr = fusion.optimizer.param_groups[0]["lr"]
            fusion.scheduler.step()
            distributed.sync_buffers(fusion.members)  # across processes: rank 0's BatchNorm statistics
            correct = correct_predictions(fusion, x_test, y_test, data.stats, settings, precision, epoch)
            fusion.unstack()  # into each member's plain model and SGD: its checkpoint as a run alone saves it
            names = [m.name for m in fusion.members]
            for m, member_sums, member_correct in zip(fusion.members, sums, correct):
                end_epoch(m, epoch, member_sums, member_correct, len(x_test), lr, train_seconds, epoch_start, started,
                          names)
            progress.set_postfix_str(bar_postfix([m.history for m in fusion.members], work))
        for m in fusion.members:
            write_predictions(m, data)  # its training set's predictions (jal.mislabelled), before its record
            results[m] = write_last_record(m, finished_record(m, wall(m, started)), fused)
        return [results[m] for m in members]
    except BaseException as err:
        progress.close()  # the lines that follow start on a line of their own
        stopped = distributed.lost_peer(err) or err  # another rank's process ended: the run stopped, not failed
        close_unended(fusion.members, results, stopped, epoch, fused)
        if stopped is not err:
            raise stopped from None
        raise


def by_epoch(members: list) -> list[list]:
    """(index, Member) pairs grouped by the epoch each resumes from, lowest first: runs planned together that
    another process advanced meanwhile (a plain run of one of them) train apart, each group a fusion of its own."""
    groups = {}
    for i, m in members:
        groups.setdefault(m.state["epoch"] if m.state else 0, []).append((i, m))
    if len(groups) > 1:
        log.warning("runs planned as one fusion are at epochs %s now (another process trained some of them "
                    "meanwhile): each epoch's runs train as a fusion of their own", sorted(groups))
    return [groups[epoch] for epoch in sorted(groups)]


def train_fusion(cfgs: list[DictConfig], run_dirs: list, stops: stop_signals.StopSignals | None = None) -> list[Record]:
    """Train the runs described by `cfgs` into `run_dirs` together, one fused model (see Fusion); returns each
    one's record: finished, paused, failed (a non-finite loss fails its member only), running elsewhere,
    finished already (skipped, not fused), or, of two runs or more, blocked (a damaged file of its own: the
    others train on; a run alone raises it). Each member writes what it would write alone, with `fused: K`
    (the most runs that trained an epoch of it together).
    `stops`: the stop signals received (default: this process's); one that comes meanwhile pauses the runs
    at the next epoch end, and under SLURM then requeues the job (jal.stops.restore_handlers)."""
    stops = stops or stop_signals.PROCESS_STOPS
    previous = stops.install()
    members = []  # (index, Member) of the runs prepared to train here
    try:
        for cfg in cfgs:
            check_config(cfg)  # before anything is read or written: a wrong setting leaves no record
        check_fusable(cfgs)
        distributed.start(run_device(cfgs[0].trainer.device).type, len(cfgs))  # torchrun, SLURM tasks: a rank each
        apart = len(set(map(Path, run_dirs))) > 1  # a run's own damaged file blocks it alone
        with contextlib.ExitStack() as locks:
            results, first = {}, {}  # first: the index each directory is first named at (a run named twice: once)
            for i, (cfg, run_dir) in enumerate(zip(cfgs, map(Path, run_dirs))):
                if first.setdefault(run_dir, i) != i:
                    continue
                # across processes rank 0 alone locks and prepares the run; every rank gets what it decided
                prepared = distributed.on_rank_zero(run.lock_and_prepare, locks, cfg, run_dir, stops, apart)
                if isinstance(prepared, Record):  # finished already, not started (stop_at passed, a signal), busy
                    results[i] = prepared
                else:
                    distributed.adopt(prepared)
                    members.append((i, prepared))
            if members:
                rejoin([m for _, m in members])
                for group in by_epoch(members):
                    for i, result in zip([i for i, _ in group], train_locked([m for _, m in group], stops, apart)):
                        results[i] = result
        return [results[first[Path(run_dir)]] for run_dir in run_dirs]
    except KeyboardInterrupt as err:  # Ctrl-C, a second SIGTERM, a lost rank: each run says where it stopped
        if members:
            stop_signals.reported(err)  # first: a Ctrl-C handed on meanwhile (torchrun's) adds no line of its own
        for _, m in members:
            if line := distributed.where_stopped(err, run.interrupted(m)):  # rank 0's (it writes the checkpoints)
                log.warning("%s %s", m.name, line, extra=about(m.run_dir))
        raise
    except CannotWrite as err:  # a full disk: one line, with where the same command resumes once there is room
        raise run.unwritable(err, [m for _, m in members]) from None
    finally:
        restore_handlers(previous, stops)


def train(cfg: DictConfig, run_dir: str | Path, stops: stop_signals.StopSignals | None = None) -> Record:
    """Train the run described by `cfg` into `run_dir`; returns its result record (finished or paused).
    A stop signal meanwhile pauses it at the next epoch end. A run alone is a fusion of one."""
    result = train_fusion([cfg], [run_dir], stops)[0]
    if result.status == Status.FAILED:  # alone, a diverged run is an error (main prints it in one line)
        raise RunDiverged(result.error.removeprefix("RunDiverged: "))
    return result


# ---------------------------------------------------------------------------------------------------
# Command line


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One run's last-epoch accuracy on its noisy validation split where it holds one out, else on the test set
    (jal.tune.objective: what a search's sweeper maximises; None when it did not finish). A run that cannot train
    here (a wrong setting, a missing file, a directory of another experiment, a search without a validation
    split) stops in one line; one that fails, is trained elsewhere or is blocked (a damaged file of its own) ends
    a single run with an error but lets the other runs of a multirun go on."""
    alone = HydraConfig.get().mode != RunMode.MULTIRUN
    with boundary():  # wrong settings, missing files, a class that refuses its arguments: one line
        if not alone and tune.is_search(HydraConfig.get()):  # also checked before the first trial (jal.progress)
            tune.check_selects_on_validation(cfg)
        try:
            result = train(cfg, HydraConfig.get().runtime.output_dir)
        except RunDiverged as err:  # its record says failed; a sweep goes on, and its summary lists it
            if alone:
                raise
            log.error("%s", err)
            return None
        except DirectoryConflict as err:  # a damaged file of its own: the sweep's other runs go on, and its
            if alone:  # summary lists this one as blocked (jal.multirun.Run.blocked)
                raise
            console.error("%s: %s", Status.BLOCKED, restart_alone(str(err), list(cfg.hydra.overrides.task)))
            return None
    if result.status == Status.RUNNING_ELSEWHERE:
        if alone:
            raise SystemExit(f"not started: {result.reason}")
        console.warning("not started: %s", result.reason)  # the other process writes its train.log
    if alone and result.status == Status.FINISHED:
        # the console only (train.log ends with the last epoch's line, and holds no path of this machine); in a
        # multirun the sweep's progress line says it (jal.progress.Progress), a paused run has said it already
        console.info("%s -> %s", ending(result), shown_path(HydraConfig.get().runtime.output_dir))
        if gap := noise_gap(result):  # a sweep's summary says it per run (jal.progress, jal.fuse)
            console.warning("noise: %s (more than 1 pp off the asked rate)", gap.line)
    return tune.objective(cfg, result)  # None when paused


if __name__ == "__main__":
    # Hydra prints a failed composition (a wrong type, key or option) over several lines; with
    # HYDRA_FULL_ERROR it raises instead, and the error is printed here as one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Call main from the importable module jal.train, not from __main__: cluster launchers (submitit) pickle
    # the task function, which then travels by reference instead of dragging this whole module along.
    from jal.train import main as importable_main

    def command_line() -> None:
        with boundary():  # what Hydra raises composing, a SLURM task's failure: one line
            importable_main()

    stop_signals.command(command_line)  # Ctrl-C, a second SIGTERM, a lost rank: one line and its exit status
