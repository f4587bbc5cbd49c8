"""`python -m jal.train ARGS` and `jal-train ARGS` checked before torch loads and before Hydra makes the run's
directory: the config (jal.config_check), the data files it reads (downloading CIFAR where torchvision can),
and a folder it can write; a wrong setting costs a fraction of a second and leaves nothing behind. Hydra's
printing flags (--help, --cfg, shell completion) are answered here too, without torch.
"""

import os
import socket
import sys
import typing
from pathlib import Path

from jal.config_check import check_config, share_config_store
from jal.errors import ConfigError, boundary
from jal.experiment import TORCHVISION, data_files
from jal.paths import CONFIG_DIR
from jal.util import check_data_folder, compose_run, writable


def check_data_files(cfg) -> None:
    """The files a run of `cfg` reads first are there (jal.experiment.data_files): a missing one raises
    FileNotFoundError naming it; missing CIFAR images are downloaded, as a run would, or raise naming what goes
    where. Their contents are checked as the run reads them."""
    for file in data_files(cfg):
        if file.path.exists():
            continue
        if not file.downloadable:
            raise FileNotFoundError(file.missing())
        name, folder = cfg.dataset.name, file.path.parent
        check_data_folder(file.path)
        if not (folder / TORCHVISION[name]).is_dir() and not can_reach(CIFAR_HOST):  # sooner than torchvision
            raise FileNotFoundError(f"{file.path} is missing and {name} could not be downloaded (no connection to "
                                    f"{CIFAR_HOST}); put {name}.npz (x_train, y_train, x_test, y_test) in {folder} "
                                    "or point JAL_DATA_DIR at a folder holding it")
        from jal.data import _download_and_prepare  # torchvision: only when the images must be fetched

        _download_and_prepare(name, file.path)


CIFAR_HOST = "www.cs.toronto.edu"  # where torchvision downloads CIFAR-10 and CIFAR-100 from


def can_reach(host: str, timeout: float = 3.0) -> bool:
    """Whether a connection to host:443 opens (true behind a proxy, which only a download can tell)."""
    if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_run_writable(cfg) -> None:
    """A run that must write into its directory where no file can be made (a read-only out_root) is refused in
    one line before Hydra opens its train.log there; a finished run of this experiment is still skipped."""
    from jal import record as records
    from jal.run_dir import check_writable

    run_dir = Path(cfg.hydra.run.dir)
    if writable(run_dir):
        return
    record = records.read(run_dir)  # the run itself checks it is this experiment (jal.run.finished_already)
    if record is None or record.status != records.Status.FINISHED:
        check_writable(run_dir)


# Hydra's flags that compose the config and print something, training nothing: --help, --hydra-help, --cfg,
# --info and shell completion (-sc install=bash, and the query each Tab sends).
HYDRA_PRINT_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def check_command_line(argv: list[str] | None = None) -> None:
    """`python -m jal.train ARGS` and `jal-train ARGS`: compose and check the run's config first, exiting with one
    line when it is wrong. This runs before torch loads and before Hydra makes the run's directory: a wrong
    setting costs a fraction of a second and leaves nothing behind. Hydra's printing flags (HYDRA_PRINT_FLAGS)
    are answered here too, by Hydra itself but without torch (a Tab's completion must not wait for it);
    sweeps (-m) and Hydra's other flags are left to Hydra in jal.train."""
    argv = sys.argv[1:] if argv is None else argv
    share_config_store()
    if any(arg.split("=", 1)[0] in HYDRA_PRINT_FLAGS for arg in argv):
        answer_without_training()
    with boundary():
        check_group_choices([arg for arg in argv if not arg.startswith("-")])  # a sweep's too: Hydra's traceback
    if any(arg.startswith("-") for arg in argv):
        return
    with boundary():
        cfg = compose_run(argv)  # Hydra's runtime set: logger.tags name the loss through ${hydra:...}
        check_config(cfg)
        check_data_files(cfg)
        check_run_writable(cfg)


def check_group_choices(overrides: list[str]) -> None:
    """A config group given a number or true/false (`dataset=3`), which Hydra refuses with a ValueError that
    names no override: the line an unknown option gets."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        group = override.key_or_group
        values = getattr(override.value(), "list", [override.value()])  # a sweep's values: a ChoiceSweep's list
        if (CONFIG_DIR / group).is_dir() and (wrong := [v for v in values if isinstance(v, (int, float, bool))]):
            options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
            raise ConfigError(f"unknown {group} {str(wrong[0]).lower()!r}; choose one of: {', '.join(options)}")


def answer_without_training() -> typing.NoReturn:
    """Hydra's app on sys.argv with a task function that never runs: Hydra prints what a printing flag asks
    for and returns. Named as jal.train's main so that the help's title and the job's name are the same."""
    import hydra

    def main(cfg) -> None:
        raise SystemExit("error: no run here: only Hydra's printing flags come this way (jal.config_check)")

    main.__module__, main.__qualname__ = "jal.train", "main"  # Hydra names the app and job after the module
    hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")(main)()
    sys.exit(0)
