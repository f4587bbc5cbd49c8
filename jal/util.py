"""What the training code and its tools share: files written atomically, durations in words, the machine a
run trains on and the commit it was trained from (both in every record), and a run's config as
`python -m jal.train` composes it.

torch and Hydra are imported where they are used: jal.tables and jal.precision_report write files without them.
"""

import errno
import json
import os
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


# ---------------------------------------------------------------------------------------------------
# Files written atomically: a reader, or a crash mid-write, never sees half a file


# What makes a folder refuse a file, in words; the file that could not be written is never half there.
FULL = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is used up"}
REFUSED = {errno.EROFS: "a read-only file system", errno.EACCES: "not writable", errno.EPERM: "not writable",
           errno.ENOTDIR: "a file stands where a folder should be"}


class CannotWrite(ValueError):
    """A file that its folder refuses (a full disk, a read-only or unwritable folder): one line naming the
    folder and the fix. `fix` says what to do, in the words of the setting that chose the folder."""

    def __init__(self, what: str, reason: str, fix: str, full: bool = False):
        self.what, self.reason, self.full = what, reason, full
        super().__init__(f"cannot write {what}: {reason}; {fix}")

    def with_fix(self, fix: str) -> "CannotWrite":
        return CannotWrite(self.what, self.reason, fix, self.full)


def write_fault(err: BaseException) -> OSError | None:
    """The OSError of a full disk or a refusing folder that caused `err` (itself, or along its chain: torch
    wraps the OSError of its file in a RuntimeError), or None."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in FULL | REFUSED:
            return err
        err = err.__cause__ or err.__context__
    return None


def interrupted(err: BaseException) -> bool:
    """Whether a KeyboardInterrupt caused `err` (itself, or along its chain)."""
    while err is not None:
        if isinstance(err, KeyboardInterrupt):
            return True
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return False


def cannot_write(path: str | Path, err: OSError) -> CannotWrite:
    """The one line for `path` refused with `err` (write_fault), naming its folder and the fix."""
    path = Path(path)
    full = err.errno in FULL
    fix = f"free space in {path.parent}" if full else f"make {existing_folder(path.parent)} writable"
    return CannotWrite(f"{path.name} in {path.parent}", FULL.get(err.errno) or REFUSED[err.errno],
                       fix + " or write elsewhere", full)


def existing_folder(folder: str | Path) -> Path:
    """`folder`, or the nearest folder above it that exists (where it would be made)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def writable(folder: str | Path) -> bool:
    """Whether files can be made in `folder`, or in the nearest folder above it that exists: not on a read-only
    file system, and with write permission for this user (root has it anywhere)."""
    folder = existing_folder(folder)
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def atomic_save(path: str | Path, save, suffix: str = "") -> None:
    """save(tmp) to a temporary file beside `path`, then rename it to `path` (removed if save fails). A full
    disk or a folder that refuses the file raises CannotWrite (one line); `path` stays as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:
        raise (cannot_write(path, err) if write_fault(err) else err) from None
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if fault := write_fault(err):
            raise cannot_write(path, fault) from None
        if interrupted(err):  # Ctrl-C inside torch.save: its zip writer's __exit__ raises a RuntimeError over it
            raise KeyboardInterrupt from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_save(path, lambda tmp: Path(tmp).write_text(text, newline=""))  # newline="": written as given


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def atomic_save_npz(path: str | Path, **arrays) -> None:
    import numpy as np

    atomic_save(path, lambda tmp: np.savez(tmp, **arrays), ".npz")  # np.savez appends .npz to other names


def check_data_folder(images: Path) -> None:
    """The folder the prepared images go into (torchvision's download too) can be written: else one line
    naming it and the fix, before anything is downloaded."""
    if writable(images.parent):
        return
    refuses = existing_folder(images.parent)
    reason = f"{refuses} is not a folder" if not refuses.is_dir() else f"{refuses} is read-only or not writable"
    raise CannotWrite(f"{images.name} (downloaded and prepared there) in {images.parent}", reason,
                      f"put {images.name} (x_train, y_train, x_test, y_test) there, or point JAL_DATA_DIR (data_dir) "
                      "at a folder you can write")


# ---------------------------------------------------------------------------------------------------
# Durations in words (the plan's and sweeps' ETAs), where and from what a run trains


def duration(seconds: float) -> str:
    """A time span in words for people: 45 s, 12 min, 3.5 h, 4 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def git_commit() -> str | None:
    """The checkout's commit (short), None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------------
# A run's config, composed as `python -m jal.train` composes it


def compose_run(overrides: list[str], config_name: str = "train"):
    """The config of `python -m jal.train <overrides>`, Hydra's node included, with Hydra's runtime set to
    it. It resolves on its own, as a launch resolves it (`OmegaConf.to_yaml(cfg, resolve=True)`): its
    `${hydra:...}` interpolations (run_name, the logger's tags) read its own Hydra node, not Hydra's runtime
    (which holds whichever config was composed last), and that node's output_dir is its run directory."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, list(overrides), return_hydra_config=True)
    for key in cfg:
        if key != "hydra":
            read_own_hydra_node(cfg, key)
    with open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = "${hydra.run.dir}"  # as Hydra's run_job sets it (made absolute there)
    HydraConfig.instance().set_config(cfg)
    return cfg


def read_own_hydra_node(node, key) -> None:
    """`${hydra:job.override_dirname}` -> `${hydra.job.override_dirname}` in node[key] and below."""
    from omegaconf import OmegaConf

    child = node._get_node(key)
    if OmegaConf.is_config(child) and not child._is_interpolation() and not child._is_none():
        for sub in child.keys() if OmegaConf.is_dict(child) else range(len(child)):
            read_own_hydra_node(child, sub)
    elif isinstance(raw := child._value(), str) and "${hydra:" in raw:
        node[key] = raw.replace("${hydra:", "${hydra.")
