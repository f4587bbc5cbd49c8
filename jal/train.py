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
requeued job continues it.
Ctrl-C stops it at once: a line names the epoch of its last checkpoint, exit status 130; started again, it
resumes from there. A run alone ends with the line `finished: test accuracy 64.32% (epoch 120) -> <its
directory>` (a sweep's runs: their progress lines, jal/progress.py and jal/fuse.py).
"""

if __name__ == "__main__":  # `python -m jal.train`: a wrong setting fails in one line before torch loads
    from jal.config_check import check_command_line

    check_command_line()

import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from jal import distributed, run, tune
from jal import stops as stop_signals
from jal.config_check import check_config, one_line
from jal.device import run_device
from jal.experiment import check_fusable
from jal.progress_bar import BAR_FORMAT, bar_postfix
from jal.record import Record, Status, ending
from jal.run import (
    Member,
    RunDiverged,
    about,
    build_member,
    check_same_epoch,
    close_unended,
    drop_diverged,
    end_epoch,
    finished_record,
    load_training_data,
    paused_record,
    rejoin,
    wall,
    write_last_record,
    write_predictions,
)
from jal.step import Fusion, correct_predictions, train_one_epoch
from jal.stops import restore_handlers, stop_reason
from jal.util import CONFIG_DIR, CannotWrite

log = logging.getLogger(__name__)
console = logging.getLogger("jal.console")  # lines about runs this command does not train: jal/run.py


def shown_path(path) -> str:
    """A directory as the user can `cd` into it: relative to the working directory when it lies under it."""
    relative = os.path.relpath(path)
    return str(path) if relative == ".." or relative.startswith(".." + os.sep) else relative


def train_locked(members: list[Member], stops: stop_signals.StopSignals) -> list[Record]:
    """Train the prepared members (their locks held) as one fusion to the end, a pause or their failure."""
    data, x_test, y_test = distributed.rank_zero_first(load_training_data, members)  # rank 0 writes labels.npz
    for m, y_noisy in zip(members, data.y_noisy):
        build_member(m, y_noisy)
    check_same_epoch(members)
    distributed.wrap(members, data.y_noisy.shape[1])  # across processes: DDP; alone, nothing
    cfg, precision, fused, results = members[0].cfg, members[0].precision, len(members), {}
    fusion, started = Fusion(members), time.perf_counter()
    epoch, epochs = members[0].start_epoch, cfg.trainer.epochs
    progress = tqdm(range(epoch, epochs), initial=epoch, total=epochs,
                    disable=not cfg.trainer.progress or not distributed.is_main(),
                    desc=members[0].cell.short_name() if fused == 1 else f"fusion of {fused}",
                    bar_format=BAR_FORMAT, postfix=bar_postfix([m.history for m in members]) or None,
                    dynamic_ncols=True, file=sys.stderr)
    try:
        for epoch in progress:
            reason = next(filter(None, (stop_reason(m.cfg, epoch, stops) for m in fusion.members)), None)
            reason, received = distributed.agreed_stop(reason, stops.first)  # any rank's stop pauses all
            if received is not None and stops.first is None:  # another rank's signal, taken as this rank's own:
                stops.request_stop(received)  # rank 0 hands it on to the launcher (submitit requeues from rank 0)
            if reason:
                progress.close()  # before an epoch = at the last one's end, its checkpoint written
                for m in fusion.members:  # the whole fusion pauses
                    paused = paused_record(m, epoch, reason, wall(m, started))
                    results[m] = write_last_record(m, paused, fused)
                    log.info("%s %s", m.name, ending(results[m]), extra=about(m.run_dir))
                return [results[m] for m in members]
            epoch_start = time.perf_counter()
            sums = distributed.summed(train_one_epoch(fusion, cfg, precision, data, epoch))
            sums = sums.tolist()  # once per epoch: the only host-device sync of the epoch's training
            if any(not math.isfinite(s[0]) for s in sums):
                sums, data = drop_diverged(fusion, data, sums, epoch, results, fused)
                if not fusion.members:
                    break
            train_seconds = time.perf_counter() - epoch_start
            lr = fusion.optimizer.param_groups[0]["lr"]
            fusion.scheduler.step()
            distributed.sync_buffers(fusion.members)  # across processes: rank 0's BatchNorm statistics
            correct = correct_predictions(fusion, x_test, y_test, data.stats, cfg, precision, epoch)
            fusion.unstack()  # into each member's plain model and SGD: its checkpoint as a run alone saves it
            names = [m.name for m in fusion.members]
            for m, member_sums, member_correct in zip(fusion.members, sums, correct):
                end_epoch(m, epoch, member_sums, member_correct, len(x_test), lr, train_seconds, epoch_start, started,
                          names)
            progress.set_postfix_str(bar_postfix([m.history for m in fusion.members]))
        for m in fusion.members:
            write_predictions(m, data)  # its training set's predictions (jal.mislabelled), before its record
            results[m] = write_last_record(m, finished_record(m, wall(m, started)), fused)
        return [results[m] for m in members]
    except BaseException as err:
        progress.close()  # the lines that follow start on a line of their own
        close_unended(fusion.members, results, err, epoch, fused)
        raise



def train_fusion(cfgs: list[DictConfig], run_dirs: list, stops: stop_signals.StopSignals | None = None) -> list[Record]:
    """Train the runs described by `cfgs` into `run_dirs` together, one fused model (see Fusion); returns each
    one's record: finished, paused, failed (a non-finite loss fails its member only), running elsewhere, or
    finished already (skipped, not fused). Each member writes what it would write alone, with `fused: K`.
    `stops`: the stop signals received (default: this process's); one that comes meanwhile pauses the runs
    at the next epoch end, and under SLURM then requeues the job (jal.stops.restore_handlers)."""
    stops = stops or stop_signals.PROCESS_STOPS
    signalled_before, previous = len(stops.received), stops.install()
    members = []  # (index, Member) of the runs prepared to train here
    try:
        for cfg in cfgs:
            check_config(cfg)  # before anything is read or written: a wrong setting leaves no record
        check_fusable(cfgs)
        distributed.start(run_device(cfgs[0].trainer.device).type, len(cfgs))  # torchrun, SLURM tasks: a rank each
        with contextlib.ExitStack() as locks:
            results, first = {}, {}  # first: the index each directory is first named at (a run named twice: once)
            for i, (cfg, run_dir) in enumerate(zip(cfgs, map(Path, run_dirs))):
                if first.setdefault(run_dir, i) != i:
                    continue
                # across processes rank 0 alone locks and prepares the run; every rank gets what it decided
                prepared = distributed.on_rank_zero(run.lock_and_prepare, locks, cfg, run_dir, stops)
                if isinstance(prepared, Record):  # finished already, not started (stop_at passed, a signal), busy
                    results[i] = prepared
                else:
                    distributed.adopt(prepared)
                    members.append((i, prepared))
            if members:
                rejoin([m for _, m in members])
                for i, result in zip([i for i, _ in members], train_locked([m for _, m in members], stops)):
                    results[i] = result
        return [results[first[Path(run_dir)]] for run_dir in run_dirs]
    except KeyboardInterrupt:  # Ctrl-C: each run says where it stopped (the command line exits with 130)
        for _, m in members:
            log.warning("%s %s", m.name, run.interrupted(m), extra=about(m.run_dir))
        raise
    except CannotWrite as err:  # a full disk: one line, with where the same command resumes once there is room
        raise run.unwritable(err, [m for _, m in members]) from None
    finally:
        restore_handlers(previous, stops, signalled_before)


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
    split) stops in one line; one that fails or is trained elsewhere ends a single run with an error but lets the
    other runs of a multirun go on."""
    alone = HydraConfig.get().mode != RunMode.MULTIRUN
    try:
        if not alone and tune.is_search(HydraConfig.get()):  # also checked before the first trial (jal.progress)
            tune.check_selects_on_validation(cfg)
        result = train(cfg, HydraConfig.get().runtime.output_dir)
    except (ValueError, FileNotFoundError, HydraException) as err:  # wrong settings, missing files, a class
        # that refuses its arguments (Hydra's `Error in call to target`): one line, no traceback
        raise SystemExit(f"error: {one_line(err)}") from None
    except RunDiverged as err:  # its record says failed; the sweep's summary lists it
        if alone:
            raise SystemExit(f"error: {err}") from None
        log.error("%s", err)
        return None
    if result.status == Status.RUNNING_ELSEWHERE:
        if alone:
            raise SystemExit(f"not started: {result.reason}")
        console.warning("not started: %s", result.reason)  # the other process writes its train.log
    if alone and result.status == Status.FINISHED:
        # the console only (train.log ends with the last epoch's line, and holds no path of this machine); in a
        # multirun the sweep's progress line says it (jal.progress.Progress), a paused run has said it already
        console.info("%s -> %s", ending(result), shown_path(HydraConfig.get().runtime.output_dir))
    return tune.objective(cfg, result)  # None when paused


if __name__ == "__main__":
    # Hydra prints a failed composition (a wrong type, key or option) over several lines; with
    # HYDRA_FULL_ERROR it raises instead, and the error is printed here as one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Call main from the importable module jal.train, not from __main__: cluster launchers (submitit) pickle
    # the task function, which then travels by reference instead of dragging this whole module along.
    from jal.train import main as importable_main

    try:
        importable_main()
    except (HydraException, OmegaConfBaseException) as err:
        sys.exit(f"error: {one_line(err)}")
    except Exception as err:  # a SLURM task failed, or sbatch refused (submitit): its reason and log, one line
        if not type(err).__module__.startswith("submitit"):
            raise
        from jal.launch import failed_job

        sys.exit(f"error: a SLURM task of the sweep failed: {failed_job(err)}")
    except KeyboardInterrupt:  # Ctrl-C: the run has said where it stopped (train_fusion); no traceback
        sys.exit(130)  # the shell's status for a command ended by SIGINT

