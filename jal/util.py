"""What the training code and its tools share: files written atomically (with the permissions open() gives,
so a shared results folder can be read by others), the one line for a file that cannot be written or read,
durations in words, the machine a run trains on and the commit it was trained from (both in every record),
and a run's config as `python -m jal.train` composes it.

torch and Hydra are imported where they are used: jal.tables and jal.precision_report write files without them.
"""

import errno
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

from jal.errors import CannotWrite
from jal.paths import CONFIG_DIR, REPO_ROOT  # noqa: F401  (jal.util.CONFIG_DIR: where many read it)

# ---------------------------------------------------------------------------------------------------
# Files written atomically: a reader, or a crash mid-write, never sees half a file


# What makes a folder refuse a file, in words; the file that could not be written is never half there.
FULL = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is used up"}
REFUSED = {errno.EROFS: "a read-only file system", errno.EACCES: "not writable", errno.EPERM: "not writable",
           errno.ENOTDIR: "a file stands where a folder should be",
           errno.EISDIR: "a folder stands where the file should be"}


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
    fix = (f"free space in {path.parent}" if full else f"move the folder {path} away" if err.errno == errno.EISDIR
           else f"make {existing_folder(path.parent)} writable")
    return CannotWrite(f"{path.name} in {path.parent}", FULL.get(err.errno) or REFUSED[err.errno],
                       fix + " or write elsewhere", full)


def existing_folder(folder: str | Path) -> Path:
    """`folder`, or the nearest folder above it that exists (where it would be made)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


# The free space a write needs before it starts: the files a run writes before its first checkpoint (labels.npz:
# three arrays of CIFAR's 50,000 int64 labels, 1.2 MB; config.yaml, train.log, .lock and Hydra's multirun.yaml:
# a few KB), with room to spare. A disk with less cannot start a run cleanly. The first checkpoint is not
# counted (13 MB for the CIFAR-10 CNN, ~170 MB for ResNet-34 with its momentum: the model is not built when
# this is checked); one that does not fit ends the run in one line at its first epoch end, as any full disk.
MIN_FREE = 4 * 2**20


def write_refusal(folder: str | Path) -> tuple[str, bool] | None:
    """Why no file can be made in `folder`, or in the nearest folder above it that exists, in words, and
    whether it is a full disk; None when files can be made there. Asked of the folder itself (a folder made and
    removed at once): permissions alone miss a file system that takes no files (/proc, /sys) and root on a
    share that maps it to nobody; and the disk must have MIN_FREE left (root may use the blocks kept for it)."""
    folder = existing_folder(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder", False
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is read-only or not writable", False
    try:
        os.rmdir(new_name(f"{folder}/.jal-probe", "", lambda name: os.mkdir(name, 0o700)))
    except OSError as err:
        if err.errno in FULL:
            return f"{FULL[err.errno]} ({folder})", True
        if err.errno in REFUSED:
            return f"{folder} is read-only or not writable", False
        return f"{folder} takes no new files ({os.strerror(err.errno)}: a file system such as /proc)", False
    try:
        disk = os.statvfs(folder)
    except OSError:
        return None
    free = (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) * disk.f_frsize
    if disk.f_blocks and free < MIN_FREE:  # no blocks at all: a file system that reports no size
        return f"no space left on the disk ({free / 2**20:.1f} MB free, a write needs {MIN_FREE // 2**20} MB)", True
    return None


def writable(folder: str | Path) -> bool:
    """Whether files can be made in `folder` (write_refusal)."""
    return write_refusal(folder) is None


def new_name(prefix: str, suffix: str, make) -> str:
    """make(name) with a fresh name `<prefix>.<8 random hex digits><suffix>` until one is new; that name."""
    while True:
        name = f"{prefix}.{secrets.token_hex(4)}{suffix}"
        try:
            make(name)
            return name
        except FileExistsError:
            continue


def atomic_save(path: str | Path, save, suffix: str = "") -> None:
    """save(tmp) to a temporary file beside `path`, then rename it to `path` (removed if save fails). The file
    gets the permissions open() would give it (0666 less the umask: a shared folder's other users read it;
    tempfile.mkstemp would make it 0600). A full disk or a folder that refuses the file raises CannotWrite
    (one line); `path` stays as it was."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        tmp = new_name(f"{path.parent}/.{path.name}", suffix, lambda name: os.close(os.open(name, flags, 0o666)))
    except OSError as err:
        raise (cannot_write(path, err) if write_fault(err) else err) from None
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
    if (refused := write_refusal(images.parent)) is None:
        return
    raise CannotWrite(f"{images.name} (downloaded and prepared there) in {images.parent}", refused[0],
                      f"put {images.name} (x_train, y_train, x_test, y_test) there, or point JAL_DATA_DIR (data_dir) "
                      "at a folder you can write", refused[1])


class LogFile(logging.FileHandler):
    """A run's train.log (Hydra's job logging, configs/train.yaml; jal.fuse's members): a line that the disk
    refuses (full, read-only) is dropped instead of printed as a `--- Logging error ---` traceback. The run's
    next checkpoint or record write meets the same fault and ends the command in one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if write_fault(sys.exc_info()[1]) is None:
            super().handleError(record)

    def close(self) -> None:  # the lines still buffered meet the same fault: dropped too (the file is closed)
        try:
            super().close()
        except OSError as err:
            if write_fault(err) is None:
                raise


# ---------------------------------------------------------------------------------------------------
# Files that cannot be read: by whom, and why


def permission_denied(err: BaseException) -> bool:
    """Whether this user's lack of permission (EACCES, EPERM) caused `err` (itself, or along its chain)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM):
            return True
        err = err.__cause__ or err.__context__
    return False


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a name here (a share's files, a container)
        return str(uid)


def unreadable(path: str | Path, err: BaseException, damaged: str, elsewhere: str = "give out_root a folder of "
               "your own") -> str:
    """The one line for a file that could not be read (an OSError) or parsed (any other error), by its cause:
    this user may not read it, or a folder above it (a permission problem: whose it is, its mode, and the fix:
    its owner's chmod, or `elsewhere`; never damage, never a restart, which would move another's files aside);
    it is gone, or a folder stands in its place; else its bytes are damaged, and `damaged` says what to do."""
    path = Path(path)
    if permission_denied(err):
        refuses = next((folder for folder in reversed(path.absolute().parents)
                        if folder.is_dir() and not os.access(folder, os.X_OK)), path)
        try:
            stat = refuses.stat()
            owner, mode = user_name(stat.st_uid), f", mode {stat.st_mode & 0o7777:04o}"
        except OSError:
            owner, mode = "its owner", ""
        what, chmod = ("", f"chmod a+r {path}") if refuses == path else (f"the folder {refuses}, ",
                                                                         f"chmod a+rx {refuses}")
        return (f"{path} cannot be read by user {user_name(os.geteuid())}: permission denied ({what}owner {owner}"
                f"{mode}); ask {owner} to let others read it ({chmod}), or {elsewhere}")
    if isinstance(err, FileNotFoundError):
        return f"{path} is gone: moved or deleted while it was read; start the command again"
    if isinstance(err, IsADirectoryError):
        return f"{path} is a folder, not the file: move it away"
    said = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    return f"{path} is damaged ({type(err).__name__}{': ' * bool(said)}{said}): {damaged}"


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
