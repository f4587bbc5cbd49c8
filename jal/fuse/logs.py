"""One fusion, where it trains: each member's train.log (as a run alone's Hydra job logging writes it) and a
console line per fusion epoch with the fusion's ETA."""

import contextlib
import logging
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from jal.util import LogFile, duration

CONSOLE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default job logging's


def run_log(hydra: DictConfig | None, run_dir: Path) -> tuple[str, logging.Formatter] | None:
    """The file and format of the log a run alone writes under Hydra's job logging (from the run's Hydra node:
    hydra.job_logging's file handler, ${hydra.runtime.output_dir}/${hydra.job.name}.log, train.log), or None
    without one."""
    if hydra is None or "file" not in hydra.job_logging.get("handlers", {}):
        return None
    node = OmegaConf.create({"hydra": OmegaConf.to_container(hydra)})  # its interpolations read `hydra.`
    node.hydra.runtime.output_dir = str(run_dir)  # as Hydra's run_job sets it
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

    def __init__(self, task):
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
def fusion_logging(task):
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
        if (spec := run_log(cfg.get("hydra"), run_dir)) is not None:
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
