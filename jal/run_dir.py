"""One directory, one experiment: what makes a run's directory trustworthy.

A run directory is named by its experiment (jal.experiment.run_name), and every file inside says which
experiment wrote it: result.json (jal/record.py) and checkpoint.pt carry the config and the identity's
fingerprint (jal.experiment.identity). Here, what keeps the directory's files trustworthy:

- a directory whose files hold another experiment is never skipped or resumed (check_same);
- an exclusive lock (.lock, flock: the OS drops it when the process ends, so a killed run leaves none
  behind), so two processes never train one run;
- checkpoint.pt and the one before it (checkpoint.prev.pt): one bad write costs at most an epoch;
- damaged files are named in one line; trainer.restart=true moves everything aside (*.damaged). A file this
  user may not read is named as a permission problem (jal.util.unreadable), never as damage.
"""

import errno
import fcntl
import os
import shlex
import socket
import time
from pathlib import Path

import numpy as np

from jal.errors import AnotherExperiment, UnreadableFile
from jal.experiment import differences, identity_of
from jal.record import RESTART_FIX, RESULT
from jal.util import (
    CannotWrite,
    atomic_save,
    cannot_write,
    permission_denied,
    unreadable,
    write_fault,
    write_refusal,
)

CHECKPOINT, PREVIOUS, LABELS, LOCK = "checkpoint.pt", "checkpoint.prev.pt", "labels.npz", ".lock"
WANDB_ID = "wandb_id.txt"  # the id of the directory's W&B run (jal/wandb_run.py): a restart moves it aside too
RUN_FILES = (RESULT, CHECKPOINT, PREVIOUS, LABELS, WANDB_ID)


class RunBusy(Exception):
    """Another process holds the run's lock."""






def cannot_read(path: Path, err: BaseException) -> UnreadableFile:
    """The one line for a run's file that could not be read or parsed (jal.util.unreadable)."""
    conflict = UnreadableFile(unreadable(path, err, RESTART_FIX))
    conflict.permission = permission_denied(err)
    return conflict


def restart_alone(line: str, task: list[str]) -> str:
    """A line's restart advice (`trainer.restart=true`) for one run of a sweep or a fusion, as the command that
    restarts that run alone (`task`: its overrides, Hydra's task overrides): given to the sweep or jal.fuse,
    trainer.restart=true would move every run's files aside and train them all again, finished ones too."""
    overrides = " ".join(shlex.quote(o) for o in task if o.partition("=")[0].lstrip("+~") != "trainer.restart")
    return line.replace("trainer.restart=true", f"`python -m jal.train {overrides} trainer.restart=true` (that run "
                        "alone)")


# ---------------------------------------------------------------------------------------------------
# Identity


def check_same(recorded: dict | None, asked: dict, path: Path) -> None:
    """Raise unless the file at `path` (a record or a checkpoint), whose experiment is `recorded`
    (jal.experiment.identity_of; None: it says none), belongs to the asked experiment."""
    if recorded is None:
        raise AnotherExperiment(f"{path} says nothing of the experiment that wrote it: move the directory away, "
                                "or trainer.restart=true to move its files aside and train from scratch")
    if recorded != asked:
        raise AnotherExperiment(f"{path.parent} holds another experiment ({differences(recorded, asked)}): "
                                "give the run its own out_root or override, or trainer.restart=true to move "
                                "its files aside and train this one from scratch")


# ---------------------------------------------------------------------------------------------------
# Reading what a directory holds


def load_checkpoint(path: Path) -> dict:
    """A checkpoint as saved by save_checkpoint (on the CPU); a damaged one raises one line naming it."""
    import torch  # here, not at the top: the sweep's plan reads records without loading torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(state, dict) or "epoch" not in state:
            raise ValueError("not a checkpoint of jal.train")
        return state
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors... for a cut file
        raise cannot_read(path, err) from None


def latest_checkpoint(run_dir: Path, asked: dict, warn=print, mend: bool = True) -> dict | None:
    """The newest readable checkpoint of this experiment (checkpoint.pt, else the one before it), None if
    the run never finished an epoch. A damaged newest one with a good previous one costs an epoch, not the run
    (mend: it is moved aside as *.damaged; the sweep's plan only looks)."""
    newest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not newest.exists():
        if not previous.exists():
            return None
        newest = previous  # the process stopped between moving the old one aside and writing the new one
        if mend:  # (where hard links are missing, jal.run_dir.save_checkpoint): the newest is checkpoint.pt again
            os.replace(previous, run_dir / CHECKPOINT)
            newest = run_dir / CHECKPOINT
    try:
        state = load_checkpoint(newest)
    except UnreadableFile as damaged:
        if newest == previous or not previous.exists() or damaged.permission:  # not damaged: kept as it is
            raise
        warn(f"{damaged}; resuming from {previous} instead")
        if mend:
            os.replace(newest, newest.with_name(newest.name + ".damaged"))
        state = load_checkpoint(previous)
        newest = previous
    check_same(identity_of(state), asked, newest)
    return state


# ---------------------------------------------------------------------------------------------------
# Writing


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """checkpoint.pt, written atomically, with the one it replaces kept as checkpoint.prev.pt. checkpoint.pt is
    there at every moment: the one it replaces is linked to checkpoint.prev.pt before the new one is renamed
    over it (a kill between the two renames leaves both; without hard links, moved and then replaced)."""
    import torch

    newest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS

    def link_newest(tmp):
        os.unlink(tmp)
        os.link(newest, tmp)

    def save(tmp):
        with open(tmp, "wb") as file:  # a Python file: a full disk raises its OSError (torch's own writer: no errno)
            torch.save(state, file)
        if not newest.exists():  # only once the new one is written: a failed write keeps the newest as it is
            return
        if previous.exists() and os.path.samefile(newest, previous):  # a kill after the link: renaming one
            previous.unlink()  # link of a file over another is a no-op that would leave the temporary link
        try:
            atomic_save(previous, link_newest)
        except (OSError, CannotWrite) as err:  # a file system without hard links (EPERM there reads as refused)
            if getattr(err, "full", False):
                raise
            os.replace(newest, previous)

    atomic_save(newest, save, ".pt")


def remove_temp_files(run_dir: Path) -> list[str]:
    """The temporary files of writes a kill cut short (jal.util.atomic_save's `.<name>.*`): removed when the run
    starts again, under its lock (no write of this run is under way); their names."""
    removed = []
    for name in (*RUN_FILES, "config.yaml", "predictions.npz"):  # the last a finished run's (jal.mislabelled)
        for tmp in run_dir.glob(f".{name}.*"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    return removed


def move_aside(run_dir: Path) -> list[str]:
    """trainer.restart=true: rename the run's files to *.damaged (the last such copy replaced); their names."""
    moved = []
    for name in RUN_FILES:
        if (run_dir / name).exists():
            os.replace(run_dir / name, run_dir / f"{name}.damaged")
            moved.append(name)
    return moved


# ---------------------------------------------------------------------------------------------------
# One process per run


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path`, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, as open() makes files: others take it too
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


UNWRITABLE_FIX = ("a run trains only where it can write: make the folder writable, or give out_root a writable "
                  "folder (a finished run is still read where it is)")
FULL_FIX = "free space there or give out_root another folder (a finished run is still read where it is)"


def check_writable(run_dir: Path) -> None:
    """Refuse, in one line, a run that must write into `run_dir` where no file can be made (a read-only
    out_root, a full disk, /proc): before Hydra opens its train.log there, which would fail in a screen of
    tracebacks."""
    if (refused := write_refusal(run_dir)) is not None:
        reason, full = refused
        raise CannotWrite(f"the run's files in {run_dir}", reason, FULL_FIX if full else UNWRITABLE_FIX, full)


def lock_refused(path: Path, err: OSError) -> CannotWrite:
    """The one line for a lock its folder refuses (write_fault), with the fix for the run."""
    refused = cannot_write(path, err)
    return refused if err.errno == errno.EISDIR else refused.with_fix(FULL_FIX if refused.full else UNWRITABLE_FIX)


class RunLock:
    """An exclusive flock on <run_dir>/.lock for as long as the `with` block (or the process) lasts. The
    file names the holder (host, pid, since when) for whoever finds it taken."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:  # a folder that refuses the lock refuses the run's files too: nothing trains there
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = try_lock(self.path)
        except OSError as err:
            if not write_fault(err):
                raise
            raise lock_refused(self.path, err) from None
        if self.fd is None:
            raise RunBusy(f"{self.path.parent} is being trained by another process ({holder(self.path)}): "
                          "not starting it twice")
        try:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        except OSError as err:  # a disk full already: the run's files would not fit either
            self.__exit__()
            if not write_fault(err):
                raise
            raise lock_refused(self.path, err) from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "holder unknown"
    except OSError:
        return "holder unknown"


def held_elsewhere(run_dir: Path) -> str | None:
    """Who holds the run's lock, when a process holds it now; None when it is free (or there is none)."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return None
    fd = try_lock(path)
    if fd is None:
        return holder(path)
    os.close(fd)
    return None


# ---------------------------------------------------------------------------------------------------
# What the directory holds: the labels it trained on


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """A run's labels.npz (noisy, clean, indices, and val_indices where it holds rows out for validation); a
    damaged or unreadable one raises its one line."""
    try:
        with np.load(path) as stored:
            keys = ("noisy", "clean", "indices") + (("val_indices",) if "val_indices" in stored else ())
            return {key: stored[key] for key in keys}
    except Exception as err:  # a cut or foreign file: zipfile, KeyError, ValueError...
        raise cannot_read(path, err) from None


def check_labels(path: Path, noisy: np.ndarray, clean: np.ndarray, subset: np.ndarray, **held_out) -> None:
    """The labels a run trained on so far must be the ones it draws now (they follow from its config), and so must
    the rows it holds out (`val_indices=...`, where it holds some out)."""
    stored, asked = read_labels(path), dict(noisy=noisy, clean=clean, indices=subset, **held_out)
    same = stored.keys() == asked.keys() and all(np.array_equal(stored[key], value) for key, value in asked.items())
    if not same:
        raise AnotherExperiment(f"{path} holds other labels than this run draws (another experiment or another "
                                "data file): trainer.restart=true moves it aside and trains the run from scratch")
