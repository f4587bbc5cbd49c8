"""Train a sweep's runs fused, at most K at a time: `python -m jal.fuse --fuse K <overrides>`.

    python -m jal.fuse --fuse 8 dataset=cifar10 loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8 seed=123,124
    python -m jal.fuse --fuse 8 hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 <overrides>
    python -m jal.fuse --fuse 8 hydra/launcher=slurm hydra.launcher.partition=a100 <overrides>

takes the runs `python -m jal.train -m <overrides>` would train (jal.multirun.plan_runs: the same directories,
the same configs), skips the finished ones and groups the others into fusions of at most K runs that can
train together (jal.multirun.fusions: the same fixed settings, the same epoch reached). Each fusion trains as
one network (jal.train.train_fusion), launched as the overrides' Hydra launcher launches a plain sweep's runs:

- basic (the default): one fusion after another in this process;
- joblib (hydra/launcher=joblib): fusions side by side, hydra.launcher.n_jobs at a time, each in its own
  worker process (joblib's loky backend, as hydra-joblib-launcher uses) with trainer.threads torch threads;
- submitit (hydra/launcher=slurm, or local for the same code path on this machine): one fusion per task of
  a SLURM job array, submitted with the launcher config's partition, time limit, GPUs, CPUs and memory
  (configs/hydra/launcher/), as hydra-submitit-launcher submits them. A task that SLURM signals before its
  time limit, or preempts, pauses its fusion at the next epoch end and is requeued; the requeued task
  continues the fusion from its members' checkpoints.

Where a fusion trains, it prints a line per fusion epoch (the epoch's time and the fusion's ETA), and each
member's train.log gets its lines as a run alone's Hydra job logging writes them (its epoch lines, its
precision, resuming and pausing). This process prints a line per member as its fusion ends, with the sweep's
ETA, and a closing summary. Each member writes the files a run alone writes; a stop signal or
trainer.stop_at pauses the fusion at an epoch end, and the same command continues it.
"""

import argparse
import contextlib
import copy
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from jal import launch
from jal.config import ConfigError
from jal.config_check import one_line
from jal.record import ENDED, Record, Status, ending
from jal.util import CONFIG_DIR, LogFile, duration

CONSOLE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default job logging's


# ---------------------------------------------------------------------------------------------------
# One fusion, where it trains: its members' train.log and a line per epoch


def run_log(cfg: DictConfig, run_dir: Path) -> tuple[str, logging.Formatter] | None:
    """The file and format of the log a run alone writes under Hydra's job logging (hydra.job_logging's file
    handler: ${hydra.runtime.output_dir}/${hydra.job.name}.log, train.log), or None without one."""
    if "hydra" not in cfg or "file" not in cfg.hydra.job_logging.get("handlers", {}):
        return None
    node = copy.deepcopy(cfg)  # the run's config, its Hydra node's output_dir set as Hydra's run_job sets it
    with read_write(node.hydra), open_dict(node.hydra):
        node.hydra.runtime.output_dir = str(run_dir)
    node = node.hydra
    spec = node.job_logging.handlers.file
    formatter = node.job_logging.formatters.get(spec.get("formatter", ""), {})
    return spec.filename, logging.Formatter(formatter.get("format"), formatter.get("datefmt"))


class RunLog(LogFile):
    """A member's train.log (appended to, as Hydra's file handler does), opened at its first line; a line a full
    disk refuses is dropped (jal.util.LogFile)."""

    def __init__(self, filename: str, run_dir: Path, members: set[str]):
        super().__init__(filename, delay=True)
        self.run_dir, self.members = str(run_dir), members
        self.addFilter(self.mine)

    def mine(self, record: logging.LogRecord) -> bool:
        """Records about this member, and those about no member of the fusion (about another: not); never
        jal.console's (what this command decided about a run it does not train) nor submitit's (the SLURM
        task's own lines: its log)."""
        named = getattr(record, "run_dir", None)  # jal.run.about
        mine = named not in self.members or named == self.run_dir
        return mine and record.name != "jal.console" and str(record.name).split(".")[0] != "submitit"

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class EpochLines(logging.Handler):
    """A console line per fusion epoch, at the first member's epoch line (the members train each epoch
    together): the epoch's time and the fusion's ETA, at the pace of its epochs so far."""

    def __init__(self, task: "FusionTask"):
        super().__init__()
        self.task, self.seen, self.first, self.since = task, set(), None, None

    def emit(self, record: logging.LogRecord) -> None:
        epoch_record = getattr(record, "epoch_record", None)
        if epoch_record is None or epoch_record["epoch"] in self.seen:
            return
        epoch, work = epoch_record["epoch"], self.task.work
        self.seen.add(epoch)
        if self.first is None:  # the fusion's first epoch here (a resumed fusion starts later)
            self.first, self.since = epoch - 1, time.time() - epoch_record["seconds"]
        done, left = work[self.first] - work[epoch], work[epoch]
        eta = f"ETA {duration((time.time() - self.since) * left / done)}" if left and done else "fusion done"
        from tqdm import tqdm  # a progress bar open (trainer.progress): printed above it

        tqdm.write(f"[fusion {self.task.number}/{self.task.of}] epoch {epoch}/{len(work) - 1}: "
                   f"{epoch_record['seconds']:.1f} s, {epoch_record['images_per_second']:.0f} images/s a run "
                   f"({eta})", file=sys.stdout)
        sys.stdout.flush()


@contextlib.contextmanager
def fusion_logging(task: "FusionTask"):
    """While the fusion trains: each member's train.log, the epoch lines to them and to EpochLines only (not
    the console: configs/train.yaml's jal.epochs), the other records of jal.train on the console too.
    Works in this process and in a launcher's worker (a fresh process: a console handler is added)."""
    root, epochs = logging.getLogger(), logging.getLogger("jal.epochs")
    added_console = not root.handlers
    if added_console:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        root.addHandler(console)
    saved = root.level, epochs.level, epochs.propagate
    if root.level > logging.INFO:  # a fresh process: WARNING
        root.setLevel(logging.INFO)
    epochs.setLevel(logging.INFO)
    epochs.propagate = False
    members = {str(d) for d in task.run_dirs}
    handlers, logged = [], set()
    for cfg, run_dir in zip(task.cfgs, task.run_dirs):
        if str(run_dir) in logged:  # a run named twice trains once (jal.train.train_fusion): one log
            continue
        logged.add(str(run_dir))
        if (spec := run_log(cfg, run_dir)) is not None:
            handler = RunLog(spec[0], run_dir, members)
            handler.setFormatter(spec[1])
            handlers.append(handler)
    lines = EpochLines(task)
    for handler in handlers:
        root.addHandler(handler)
        epochs.addHandler(handler)
    epochs.addHandler(lines)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            epochs.removeHandler(handler)
            handler.close()
        epochs.removeHandler(lines)
        root.setLevel(saved[0])
        epochs.setLevel(saved[1])
        epochs.propagate = saved[2]
        if added_console:
            root.removeHandler(console)


@dataclass
class FusionTask:
    """One fusion of the sweep, as a launcher runs it: fusion `number` of `of`, its members' configs and run
    directories as planned (jal.multirun.plan_runs), and the work left after each of their epochs (their ETA).
    Picklable: joblib and submitit run it in another process."""
    number: int
    of: int
    cfgs: list
    run_dirs: list
    names: list
    work: list = field(default_factory=list)

    def __call__(self) -> tuple[int, list]:
        """(number, each member's record). An error of the fusion is its members' (failed), not the sweep's."""
        from hydra.core.utils import setup_globals

        from jal import train  # torch loads here, in the process that trains

        setup_globals()  # Hydra's resolvers (${hydra:...} in run_name), in a worker process too
        with fusion_logging(self):
            try:
                return self.number, train.train_fusion(self.cfgs, self.run_dirs)
            except Exception as err:  # its members' records say failed where it got so far (train_fusion)
                error = f"{type(err).__name__}: {one_line(err)}"
                if isinstance(err, (ValueError, FileNotFoundError)):  # a setting or a file: one line says it
                    logging.getLogger("jal.fuse").error("fusion %d/%d: %s", self.number, self.of, error)
                else:
                    logging.getLogger("jal.fuse").exception("fusion %d/%d", self.number, self.of)
                return self.number, [Record(status=Status.FAILED, error=error) for _ in self.cfgs]

    def checkpoint(self, *args, **kwargs):
        """submitit, on SLURM's signal before the time limit or on preemption (after the fusion paused at an
        epoch end): requeue the same fusion, which continues from its members' checkpoints."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def fusion_tasks(groups: list) -> list[FusionTask]:
    """The fusions of a sweep (jal.multirun.fusions: lists of jal.multirun.Run) as tasks a launcher runs."""
    return [FusionTask(n, len(groups), [r.cfg for r in group], [r.dir for r in group], [r.name for r in group],
                       group[0].work_left_after_each_epoch()) for n, group in enumerate(groups, 1)]


# ---------------------------------------------------------------------------------------------------
# Launching the fusions: basic, joblib, submitit (jal.launch)


def launch_fusions(tasks: list[FusionTask], launcher: dict):
    """Train the fusions with the launcher; yields (task, its members' records) as each fusion ends."""
    if not tasks:
        return
    kind = launch.kind(launcher)
    by_number = {task.number: task for task in tasks}
    if kind == "basic":
        for task in tasks:
            yield task, task()[1]
    elif kind == "joblib":
        from joblib import Parallel, delayed

        parallel = Parallel(**launch.joblib_settings(launcher), return_as="generator_unordered")
        for number, results in parallel(delayed(task)() for task in tasks):
            yield by_number[number], results
    else:
        import submitit

        try:
            jobs = launch.submit(tasks, launcher)
        except submitit.core.utils.FailedJobError as err:  # sbatch refused: its reason in one line
            raise ConfigError(f"sbatch refused the fusions: {launch.failed_job(err)}") from None
        ids = ", ".join(sorted({job.job_id.split("_")[0] for job in jobs}))  # a SLURM array: one id
        print(f"submitted {len(jobs)} fusion{'s' * (len(jobs) != 1)}: job {ids} (logs in "
              f"{jobs[0].paths.folder.parent})", flush=True)
        job_task = {job.job_id: task for job, task in zip(jobs, tasks)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=5):
            task = job_task[job.job_id]
            try:
                yield task, job.result()[1]
            except Exception as err:  # the task itself failed (killed, out of memory, out of requeues)
                error = f"its task {job.job_id} failed: {launch.failed_job(err)}"
                yield task, [Record(status=Status.FAILED, error=error) for _ in task.cfgs]


def summary_lines(runs: list) -> None:
    """The fused sweep summary's lines after its counts, as a plain sweep's (jal.progress): where the sweep's
    finished runs trained (those finished before it too: some may have come with the repository), and each run
    whose realised noise rate is more than 1 pp off the asked one, with the count rule that makes it."""
    from jal.noise import noise_gap
    from jal.record import provenance_line

    finished = {run.name: record for run in runs if (record := run.status()[1]) is not None
                and record.status == Status.FINISHED}
    if finished:
        what = "finished run" + "s" * (len(finished) != 1)
        print(f"  where   {provenance_line(list(finished.values()), what)}")
    for name, record in finished.items():
        if gap := noise_gap(record):
            print(f"  noise   {name}: {gap.line} (more than 1 pp off: its table cell is marked)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuse", type=int, default=8, help="at most this many runs per fusion (default 8)")
    parser.add_argument("overrides", nargs="*", help="the overrides of `python -m jal.train -m`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=CONSOLE_FORMAT, stream=sys.stdout)
    from jal import multirun  # the plan's imports load here, after the arguments: --help answers sooner
    from jal.progress import Progress

    results = []
    try:
        # job_name: the job's name as `python -m jal.train` has it (its train.log, a SLURM job's name)
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
            runs = multirun.plan_runs(args.overrides)
            groups = multirun.fusions(runs, args.fuse)
            launcher = launch.settings(runs[0].cfg)
            print(f"{multirun.runs_(len(runs))}: {len(runs) - sum(map(len, groups))} finished already, "
                  f"{len(groups)} fusion{'s' * (len(groups) != 1)} of at most {args.fuse} to train, "
                  f"{launch.how_fusions_run(runs[0].cfg)}", flush=True)
            tasks = fusion_tasks(groups)
            progress = Progress()  # the sweep's ETA from its runs' checkpoints, as a plain sweep's
            progress.start(runs)
            for task, ended in launch_fusions(tasks, launcher):
                eta = progress.eta()
                for name, result in zip(task.names, ended):  # in the words of a run alone's closing line
                    print(f"[fusion {task.number}/{task.of}] {name}: {ending(result)} ({eta})", flush=True)
                    results.append(result)
    except (ConfigError, ValueError, FileNotFoundError, HydraException, OmegaConfBaseException) as err:
        raise SystemExit(f"error: {one_line(err)}") from None
    except KeyboardInterrupt:  # Ctrl-C: each member has said where it stopped (jal.train); no traceback
        raise SystemExit(130) from None
    counts = {s: sum(r.status == s for r in results) for s in ENDED}
    print(f"Fused sweep summary: {multirun.runs_(len(results))} trained here: " + ", ".join(
        f"{n} {s}" for s, n in counts.items()) + f", {len(results) - sum(counts.values())} not run to an end")
    summary_lines(runs)
    if counts[Status.FAILED]:
        sys.exit(1)


if __name__ == "__main__":
    main()
