"""The record of a run, result.json: written when a run ends (finished, paused or failed), read to skip,
resume, plan, summarise and tabulate. This module alone reads, writes and scans records; everyone else holds a
`Record`, whose `status` is a `Status`.

A record says what the run is (its cell and its experiment: config, fingerprint, precision), how far it got,
its figures, and where and how it was trained (machine, commit, threads, when). `origin` tells a record trained
on this machine from one that came with the repository (committed under results/) or from another machine:
plans, summaries, tables and figures count them apart.
"""

import dataclasses
import datetime
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from pathlib import Path

from jal.errors import UnreadableFile
from jal.experiment import Cell, identity_of
from jal.util import REPO_ROOT, atomic_write_json, permission_denied, unreadable

RESULT = "result.json"


class Status(str, Enum):
    """How a run stands. The first three are written into result.json; the others are what a command finds
    in a directory without an ended record, or reports of a run it did not train, and are never written."""
    FINISHED = "finished"   # trained to its last epoch
    PAUSED = "paused"       # stopped at an epoch end (a deadline, a stop signal): the same command continues it
    FAILED = "failed"       # the run itself failed (a non-finite loss, an error in its training)
    NEW = "new"             # nothing trained yet
    STARTED = "started"     # a checkpoint, no record: killed, or training now
    UNREADABLE = "unreadable"  # its result.json cannot be read
    ANOTHER = "another experiment"  # the directory holds another experiment's record
    NOT_STARTED = "not started"  # a stop came (signal, deadline) before it trained
    RUNNING_ELSEWHERE = "running elsewhere"  # another process holds its lock
    BLOCKED = "blocked"     # cannot train until something is fixed (no space, a damaged file): nothing failed

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        """Written as the run's last record: it trains no further unless started again."""
        return self in ENDED


ENDED = (Status.FINISHED, Status.FAILED, Status.PAUSED)


class Origin(str, Enum):
    """Where a record's numbers were made, as seen from this checkout on this machine."""
    HERE = "trained here"
    REPOSITORY = "came with the repository"
    ELSEWHERE = "trained on another machine"


# What every record adds to test_acc for a real-world run: its top-5 and WebVision's ILSVRC12 accuracies
REAL_WORLD_ACCURACIES = ("test_acc_top5", "imagenet_acc", "imagenet_acc_top5")


@dataclass(eq=False, kw_only=True)
class Record:
    """result.json, typed. Fields that are None are not written; keys this version does not know are kept."""
    status: Status
    # the cell (Cell.FIELDS)
    dataset: str | None = None
    model: str | None = None
    loss: str | None = None
    noise_type: str | None = None
    noise_rate: float | None = None
    noise_labels: str | None = None
    seed: int | None = None
    settings: str | None = None
    # how far it got: epochs done when paused, the epoch it failed in, why
    epoch: int | None = None
    epochs: int | None = None
    reason: str | None = None
    error: str | None = None
    # its figures (finished)
    subset: int | None = None
    last_test_acc: float | None = None
    best_test_acc: float | None = None
    last_test_acc_top5: float | None = None
    last_imagenet_acc: float | None = None
    last_imagenet_acc_top5: float | None = None
    last_val_acc: float | None = None  # accuracy on a held-out split against its given (noisy) labels, where the
    best_val_acc: float | None = None  # dataset holds one out (each epoch's: history's val_acc)
    realised_noise_rate: float | None = None
    noise_transition: list | None = None
    wall_seconds: float | None = None
    images_per_second: float | None = None
    # where and how it was trained
    device: str | None = None
    device_name: str | None = None
    host: str | None = None
    threads: int | None = None
    started: str | None = None   # local time with its offset, ISO 8601: when this training began
    ended: str | None = None     # when it wrote this record
    git_commit: str | None = None
    precision_reason: str | None = None
    # the experiment (jal.experiment.Experiment.as_dict) and how many runs trained fused with it
    precision: str | None = None
    fingerprint: str | None = None
    config: dict | None = None
    fused: int | None = None
    history: list | None = None
    extra: dict = field(default_factory=dict)  # keys of a newer or older version, kept as read
    run_dir: Path | None = field(default=None, repr=False)  # where it was read from (not written)

    def __eq__(self, other) -> bool:  # the same record: the same contents, wherever it was read from
        return isinstance(other, Record) and self.to_json() == other.to_json()

    __hash__ = None

    @property
    def cell(self) -> Cell:
        return Cell(**{key: getattr(self, key) for key in Cell.FIELDS})

    def identity(self) -> dict | None:
        """The experiment it records (jal.experiment.identity_of), None for a record that stores no config."""
        return identity_of(dict(config=self.config, precision=self.precision or "fp32"))

    def to_json(self) -> dict:
        # None is left out, but where records have always said it: the cell's label set, a finished run's subset
        kept_when_none = ("noise_labels", "subset") if self.status == Status.FINISHED else ("noise_labels",)
        written = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "run_dir") or (value is None and f.name not in kept_when_none):
                continue
            written[f.name] = value.value if isinstance(value, Status) else value
        return written | self.extra

    @classmethod
    def from_json(cls, data: dict, run_dir: Path | None = None) -> "Record":
        """A record as read from result.json; ValueError for one without a status this version knows."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "run_dir"}
        values = {k: v for k, v in data.items() if k in known}
        if data.get("status") not in [s.value for s in ENDED]:
            raise ValueError(f"its status {data.get('status')!r} is none of {', '.join(s.value for s in ENDED)}")
        values["status"] = Status(data["status"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known}, run_dir=run_dir)


def ending(record: Record) -> str:
    """How a run ended, in the words of its closing line: a run alone's (jal.train), a sweep's progress line per
    run (jal.progress) and a fused sweep's per member (jal.fuse)."""
    status, reason = record.status, record.reason
    if status == Status.FINISHED:  # a dataset of yours may have no test set, and may hold out a validation split
        epoch = f" (epoch {record.epochs})" if record.epochs else ""
        test = "no test set" if record.last_test_acc is None else f"test accuracy {record.last_test_acc:.2f}%"
        val = "" if record.last_val_acc is None else f", noisy validation accuracy {record.last_val_acc:.2f}%"
        return f"finished: {test}{val}{epoch}"
    if status == Status.FAILED:
        return f"failed: {record.error or 'no error recorded'}"
    if status == Status.PAUSED:
        after = f" after epoch {record.epoch}" if record.epoch is not None else ""
        return f"paused{after}" + (f": {reason}" if reason else "") + "; the same command continues it"
    if status == Status.NOT_STARTED:
        return f"not started: {reason}"
    if status == Status.BLOCKED:
        return f"blocked: {reason}"
    return status.value + (f" ({reason})" if reason else "")


def now() -> str:
    """This moment in local time with its UTC offset, to the second (a record's started and ended)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def this_host() -> str:
    return socket.gethostname()


# ---------------------------------------------------------------------------------------------------
# Reading and writing one directory's record


RESTART_FIX = "trainer.restart=true moves it aside and trains the run from scratch"  # a run's damaged file


class UnreadableRecord(UnreadableFile):
    """result.json cannot be read (`permission`: this user may not) or parsed (damaged): one line naming it and
    the fix (jal.util.unreadable); `damaged` and `elsewhere` say what to do in the reader's words."""

    def __init__(self, path: Path, err: BaseException, damaged: str = RESTART_FIX,
                 elsewhere: str = "give out_root a folder of your own"):
        super().__init__(unreadable(path, err, damaged, elsewhere))
        self.permission = permission_denied(err)


def read(run_dir: Path, **advice) -> Record | None:
    """The directory's result.json, None if there is none; one that cannot be read raises UnreadableRecord (with
    `advice`: its damaged= and elsewhere= fixes)."""
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Record.from_json(data, Path(run_dir))
    except (OSError, ValueError, TypeError) as err:
        raise UnreadableRecord(path, err, **advice) from None


def write(run_dir: Path, record: Record) -> None:
    """result.json, atomically: a reader, or a kill mid-write, never sees half a record."""
    atomic_write_json(Path(run_dir) / RESULT, record.to_json())


def status(run_dir: Path, checkpoint: str = "checkpoint.pt") -> tuple[Status, Record | None]:
    """(status, record) of a directory: its record's status; without one STARTED (a checkpoint) or NEW; an
    unreadable record UNREADABLE."""
    try:
        record = read(run_dir)
    except UnreadableRecord:
        return Status.UNREADABLE, None
    if record is not None:
        return record.status, record
    return (Status.STARTED if (Path(run_dir) / checkpoint).exists() else Status.NEW), None


# ---------------------------------------------------------------------------------------------------
# Scanning: every record under some folders, and where each came from


def scan(folders, warn=lambda line: print(line, file=sys.stderr), **advice) -> list[Record]:
    """Every readable record under the folders (recursively), each once, in path order; an unreadable one is
    named by `warn` (with `advice`, as read's) and left out."""
    records, seen = [], set()
    for folder in map(Path, [folders] if isinstance(folders, (str, os.PathLike)) else folders):
        for path in sorted(folder.rglob(RESULT)):
            if path.resolve() in seen:  # overlapping folders given
                continue
            seen.add(path.resolve())
            try:
                record = read(path.parent, **advice)
            except UnreadableRecord as err:
                warn(f"skipping {err}")
                continue
            if record is not None:
                records.append(record)
    return records


@cache
def committed_files() -> frozenset[Path]:
    """The files of this checkout as committed (tracked by git and unchanged); none outside a git checkout."""
    def lines(*args) -> list[str]:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return []
        return done.stdout.splitlines() if done.returncode == 0 else []

    changed = set(lines("diff", "--name-only", "HEAD"))
    return frozenset(REPO_ROOT / name for name in lines("ls-files") if name not in changed)


def origin(record: Record) -> Origin:
    """Whether the record's numbers were made on this machine, came with the repository (its result.json
    committed and unchanged), or came from another machine (copied in; or a record from before records named
    their host, not known to be this machine's)."""
    if record.run_dir is not None and (Path(record.run_dir).resolve() / RESULT) in committed_files():
        return Origin.REPOSITORY
    return Origin.HERE if record.host == this_host() else Origin.ELSEWHERE


def origin_counts(records: list[Record]) -> dict[Origin, int]:
    counts = {o: 0 for o in Origin}
    for record in records:
        counts[origin(record)] += 1
    return counts


def provenance_line(records: list[Record], what: str = "finished records") -> str:
    """One line: how many of the records were trained here, came with the repository, or came from another
    machine, e.g. `90 finished records: 30 trained here, 60 came with the repository`."""
    counts = origin_counts(records)
    parts = [f"{n} {o.value}" for o, n in counts.items() if n]
    return f"{len(records)} {what}" + (f": {', '.join(parts)}" if parts else "")
