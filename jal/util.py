"""What the training code and its tools share: files written atomically, durations in words, the machine a
run trains on and the commit it was trained from (both in every record), and a run's config as
`python -m jal.train` composes it.

torch and Hydra are imported where they are used: jal.tables and jal.precision write files without them.
"""

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


# ---------------------------------------------------------------------------------------------------
# Files written atomically: a reader, or a crash mid-write, never sees half a file


def atomic_save(path: str | Path, save, suffix: str = "") -> None:
    """save(tmp) to a temporary file beside `path`, then rename it to `path` (removed if save fails)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_save(path, lambda tmp: Path(tmp).write_text(text, newline=""))  # newline="": written as given


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def atomic_save_npz(path: str | Path, **arrays) -> None:
    import numpy as np

    atomic_save(path, lambda tmp: np.savez(tmp, **arrays), ".npz")  # np.savez appends .npz to other names


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


@contextlib.contextmanager
def hydra_runtime(cfg):
    """Inside, `${hydra:...}` resolves against `cfg`'s own Hydra node where it carries one (composed by
    compose_run, the sweep's plan or a test), else against the running app's; yields that node. The runtime
    set before is set again after (Hydra's runtime has no unset: the first one set stays)."""
    from hydra.core.hydra_config import HydraConfig

    if "hydra" not in cfg:
        yield HydraConfig.get()
        return
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg.hydra
    finally:
        if saved is not None:
            HydraConfig.instance().set_config(saved)
