"""A run's Weights & Biases run: which W&B run a training logs to, the group and tags that name its protocol,
and the one console line that says where it is. W&B is imported only when a run logs to it.

One training of one run directory is one W&B run. Its id (the cell's name and a random suffix) is drawn when the
directory's training first starts W&B and kept in the directory, in WANDB_ID (jal/run_dir.py), as W&B's resume
guide does: wandb.init(id=<the kept id>, resume="allow"). W&B drops a resumed run's rows at steps it holds
already, so an id that outlived its training (one made of the run's name alone) would silently lose the history
of every later training of that name. Why a file of its own, written before wandb.init, and not the checkpoint:
- killed before its first checkpoint, or between an epoch's W&B row and its checkpoint: the same command continues
  the same W&B run (the rows it logs again are the ones W&B holds, and the same numbers: a resume is bit for bit),
  where an id kept in the checkpoint would leave a crashed W&B run behind and start a second one;
- paused, failed or requeued: the file is there, the same command continues the W&B run with the checkpoint;
- trainer.restart=true moves it aside with the run's other files (RUN_FILES), deleted outputs delete it, a new
  out_root never had it: each is a fresh W&B run; a finished run is skipped before W&B starts;
- a fusion: each member has its own directory, so its own file and W&B run; the ranks > 0 of a run across
  processes start none and write nothing (jal.run.Member.writes);
- it needs no torch to read: `cat wandb_id.txt` says which W&B run holds the directory's history.
"""

import logging
import os
import re
import secrets
import string
from pathlib import Path

from jal.run_dir import WANDB_ID
from jal.util import atomic_write_text

WANDB_ID_RESERVED = ":;,#?/'"  # characters W&B refuses in a run id
WANDB_NAME_MAX = 128  # W&B refuses longer run names (and ids)
WANDB_TAG_MAX = 64  # W&B refuses longer tags
SUFFIX_CHARS, SUFFIX_LENGTH = string.ascii_lowercase + string.digits, 8  # wandb.util.generate_id's: 36^8 = 2.8e12

# What the W&B run is and where (its console line): jal.console, the console only (configs/train.yaml); the id
# stays in the run directory's WANDB_ID file, the offline folder's path would be this machine's in train.log.
console = logging.getLogger("jal.console")


def new_wandb_run_id(run_name: str) -> str:
    """A fresh W&B run id for a training of `run_name`: the name with the characters W&B refuses as '-', cut to
    W&B's length, and a random suffix (`cifar10-symmetric_0.8-jal_ce-seed123-k3v9q0xa`): two trainings never
    share one, wherever and whenever they run."""
    readable = re.sub(f"[{re.escape(WANDB_ID_RESERVED)}]", "-", run_name)
    suffix = "".join(secrets.choice(SUFFIX_CHARS) for _ in range(SUFFIX_LENGTH))
    return f"{readable[:WANDB_NAME_MAX - SUFFIX_LENGTH - 1]}-{suffix}"


def usable_id(text: str) -> bool:
    return 0 < len(text) <= WANDB_NAME_MAX and text == text.strip() and not any(c in WANDB_ID_RESERVED for c in text)


def wandb_run_id(run_dir: Path, run_name: str) -> tuple[str, bool]:
    """(the W&B run id of the training in `run_dir`, whether it continues one): the id its WANDB_ID file keeps,
    else a new one, written there before W&B starts (a kill between the two continues it, never orphans it)."""
    path = Path(run_dir) / WANDB_ID
    if path.exists():
        kept = path.read_text(errors="replace").strip()
        if usable_id(kept):
            return kept, True
        console.warning("%s holds no W&B run id (%r): this training logs to a new W&B run", path, kept[:40],
                        extra={"run_dir": str(run_dir)})
    run_id = new_wandb_run_id(run_name)
    atomic_write_text(path, run_id + "\n")
    return run_id, False


def protocol(config: dict, precision: str) -> list[str]:
    """What a cell's figures depend on beyond the cell and its settings (of a run's resolved config, as records
    store it): epochs, the training and test subsets and the precision that trains (`auto` resolved), e.g.
    ["120 ep", "train full", "test full", "fp32"]."""
    dataset = config["dataset"]
    return [f"{config['trainer']['epochs']} ep", f"train {dataset.get('subset') or 'full'}",
            f"test {dataset.get('test_subset') or 'full'}", precision]


def group_and_tags(config: dict, precision: str) -> tuple[str, list[str]]:
    """The W&B group, logger.group then the protocol ("cifar10 | 120 ep | train full | test full | fp32"), so a
    smoke run never sits in a group of another protocol, whatever logger.group says; the tags, logger.tags and the
    protocol's (each cut to W&B's 64 characters)."""
    steps, logger = protocol(config, precision), config["logger"]
    tags = [str(tag)[:WANDB_TAG_MAX] for tag in logger["tags"]]
    return " | ".join([str(logger["group"]), *steps]), list(dict.fromkeys(tags + steps))


def offline_parts(run_dir: Path, run_id: str) -> list[Path]:
    """The offline folders of one W&B run in `run_dir`, oldest first (one per command that trained it)."""
    return sorted(Path(run_dir).glob(f"wandb/offline-run-*-{run_id}"))


def where(run, run_dir: Path, continued: bool) -> str:
    """The console line of a W&B run: its id, new or continued, and its URL, or its offline folder and the
    command that uploads all its parts (W&B syncs a resumed run's parts in the order they were written)."""
    head = f"W&B run {run.id} ({'continued' if continued else 'new'})"
    if not run.offline:
        return f"{head}: {run.url}"
    return (f"{head}, offline in {run.sync_dir}; to upload it: wandb sync "
            f"{Path(run_dir) / 'wandb' / f'offline-run-*-{run.id}'}")


def start_wandb(exp, run_dir: Path):
    """The W&B run of this training of `run_dir`, a run of the experiment `exp` (jal.experiment.Experiment: its
    name, resolved config and the precision that trains), started and said on the console; None when the run
    logs to no W&B."""
    logger = exp.config["logger"]
    if (logger["name"] != "wandb" or logger.get("mode") == "disabled"
            or os.environ.get("WANDB_MODE") == "disabled"):  # e.g. a bare GPU host: no wandb package needed
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")  # its own lines: the one below says what they said
    run_id, continued = wandb_run_id(run_dir, exp.name)
    unsynced = [p for p in offline_parts(run_dir, run_id) if not list(p.glob("*.wandb.synced"))]
    if continued and logger["mode"] == "online" and unsynced:  # W&B would drop their rows once synced after these
        console.warning("W&B run %s continues online, but %d offline part(s) of it are not uploaded yet: W&B drops "
                        "their epochs if they are synced after this; `wandb sync %s` first, or keep "
                        "WANDB_MODE=offline", run_id, len(unsynced), " ".join(map(str, unsynced)),
                        extra={"run_dir": str(run_dir)})
    group, tags = group_and_tags(exp.config, exp.precision)
    name = exp.name if len(exp.name) <= WANDB_NAME_MAX else exp.name[:WANDB_NAME_MAX - 1] + "…"
    run = wandb.init(
        project=logger["project"], entity=logger["entity"], mode=logger["mode"], group=group, tags=tags,
        name=name, dir=str(run_dir), config=exp.config, id=run_id, resume="allow",
        # create_new: a fusion holds one W&B run per member in this process, and one's start must not finish
        # another's (each run is finished by its member, jal.run.write_last_record / close_unended)
        reinit="create_new",
    )
    console.info("%s", where(run, run_dir, continued), extra={"run_dir": str(run_dir)})
    return run
