"""Checking a composed config and the command line, before anything runs, and every error as one line.

Hydra checks types and keys while it composes (`noise.rate=abc`, `trainer.epoch=3` fail there); the value
rules in each schema's __post_init__ (jal/config.py) run when `check_config` turns the composed config into
these objects, before any data loads. Every failure reads as one line: `one_line(err)` for any error composing
or checking. `python -m jal.train` composes and checks once before torch loads (check_command_line), so a wrong
setting fails in a fraction of a second and Hydra makes no run directory for it; so does a missing data file.
"""

import dataclasses
import os
import socket
import sys
import typing
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from jal.config import REAL_WORLD, BadValue, ConfigError, require
from jal.experiment import PRECOMPUTED_INSTANCE_RATES, TORCHVISION, check_out_root, data_files, given_settings
from jal.resolvers import L1_TERMS, loss_terms
from jal.util import CONFIG_DIR, CannotWrite, check_data_folder, compose_run, writable

# CIFAR-N label sets per dataset (configs/noise/human.yaml)
HUMAN_LABEL_SETS = {"cifar10": ("aggre", "worst", "rand1", "rand2", "rand3"), "cifar100": ("noisy",)}

# Sections with a schema, nested loss terms before the combination (so an error names its full key).
SECTIONS = ("trainer", "optim", "dataset", "noise", "logger", "loss.active", "loss.passive", "loss")


def check_config(cfg) -> None:
    """The value rules of every section (each schema's __post_init__), then the rules across sections.
    Raises ConfigError; reads no data."""
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0", 123)
    check_out_root(cfg.out_root)
    for section in SECTIONS:
        node = OmegaConf.select(cfg, section)
        if OmegaConf.is_dict(node) and OmegaConf.get_type(node) is not dict:  # a section with a schema
            fields = {f.name for f in dataclasses.fields(OmegaConf.get_type(node))}
            if extra := sorted(set(node.keys()) - fields):  # `+loss.tt=2`: no argument of the class reads it
                raise ConfigError(f"unknown setting '{section}.{extra[0]}'; valid keys in {section}: "
                                  f"{', '.join(sorted(fields))}")
            try:
                OmegaConf.to_object(node)  # builds the dataclass: its __post_init__ checks the values
            except BadValue as err:
                err.key = f"{section}.{err.key}"
                raise
            except OmegaConfBaseException as err:  # a missing value, an interpolation that does not resolve
                cause = err  # a rule of a resolver above raised it: its own line, not OmegaConf's wrapping
                while cause is not None and not isinstance(cause, ConfigError):
                    cause = cause.__cause__ or cause.__context__
                if cause is not None:
                    raise cause from None
                raise ConfigError(f"{err.full_key}: {err.msg.splitlines()[0]}") from None
    check_nothing_ignored(cfg)
    kind, name = cfg.noise.type, cfg.dataset.name
    if name in REAL_WORLD and kind != "none":
        raise ConfigError(f"noise={kind} on dataset={name}: its labels are noisy already (real-world noise) and "
                          "no synthetic noise is drawn on them; drop the noise setting (noise=none)")
    if kind == "human" and cfg.noise.labels not in HUMAN_LABEL_SETS.get(name, ()):
        valid = ", ".join(f"{d}: {'|'.join(s)}" for d, s in HUMAN_LABEL_SETS.items())
        raise ConfigError(f"no human label set {cfg.noise.labels!r} for dataset {name}; valid noise.labels ({valid})")
    check_own_data(cfg)
    device = cfg.trainer.device
    if device.startswith("cuda"):
        import torch  # only here: composing and checking the rest needs no torch

        index = int(device.partition(":")[2] or 0)
        require(index < torch.cuda.device_count(), "trainer.device", device,
                f"is not among this machine's {torch.cuda.device_count()} CUDA devices", "auto")


LARGEST_FOR_CNN8 = 64  # pixels: the 8-layer CNN (made for CIFAR's 32) up to here, ResNet-50 beyond (jal/models.py)


def check_own_data(cfg) -> None:
    """A dataset of yours (jal/own_data.py) with what fits it: its labels as given (not claimed clean), noise that
    needs no CIFAR class map nor images in memory, the settings read from the data left to it; a model that
    fits the images' size; and a validation split only where the run records the rows it holds out."""
    kind, name, own, given = cfg.noise.type, cfg.dataset.name, cfg.dataset.get("format"), given_settings(cfg)
    if kind == "as_given" and not own:
        raise ConfigError(f"noise=as_given keeps the labels of a dataset of yours (dataset=folder or arrays) as "
                          f"given; those of dataset={name} are {'real-world noise' if name in REAL_WORLD else 'clean'}:"
                          " noise=none trains on them")
    if own and kind in ("none", "asymmetric") or own == "folder" and kind == "instance":
        why = {"none": "says the labels are clean, which the run cannot know: drop it (noise=as_given, the default, "
                       "records them as given)",
               "asymmetric": "flips pairs of CIFAR's classes (jal.noise.ASYMMETRIC_PAIRS), not of yours: draw "
                             "noise=symmetric on them",
               "instance": "draws from the images' pixels, which a folder does not hold in memory: pack the images "
                           "into an .npz (dataset=arrays)"}[kind]
        raise ConfigError(f"noise={kind} on dataset={own} {why}")
    for key in ("num_classes", "digest", "format") + (("image_size",) if own == "arrays" else ()):  # mean, std: may
        if own and f"dataset.{key}" in given:  # be set (ImageNet's for model=resnet50_imagenet)
            raise ConfigError(f"dataset.{key}={given[f'dataset.{key}']} is read from the data (jal/own_data.py), "
                              f"not set: drop it")
    if name in REAL_WORLD and cfg.dataset.val_fraction:
        raise ConfigError(f"dataset.val_fraction={cfg.dataset.val_fraction} on dataset={name}: its training labels are "
                          "read from its file lists and no labels.npz records a split; validate on its test sets")
    size = OmegaConf.select(cfg, "model.image_size")
    if OmegaConf.select(cfg, "model._target_") == "jal.models.CNN8" and size and size > LARGEST_FOR_CNN8:
        raise ConfigError(f"{size}-pixel images are large for the 8-layer CNN (model=cnn8, made for CIFAR's 32, up to "
                          f"{LARGEST_FOR_CNN8}): add model=resnet50 (from scratch) or model=resnet50_imagenet "
                          "(ImageNet weights, downloaded once)" + (", or dataset.image_size=32" if own == "folder"
                                                                    else ""))


# The noise types whose labels read noise.rate, and the rates of the precomputed instance-dependent label sets
# (jal.run.make_labels: other rates, and synthetic data, are drawn by the generator)
RATED_NOISES = ("symmetric", "asymmetric", "instance")


def check_nothing_ignored(cfg) -> None:
    """A setting the run would not read trains another experiment than the one asked for, silently (clean
    labels under a noise rate): refused in one line. Values first, then the settings given on the command line
    that nothing reads in this config."""
    kind, rate, name = cfg.noise.type, cfg.noise.rate, cfg.dataset.name
    if kind == "none" and rate:  # the schema of noise=none keeps rate 0 for the records
        raise ConfigError(f"noise.rate={rate} is ignored by noise=none, which trains on clean labels: add "
                          f"noise=symmetric (or {', '.join(RATED_NOISES[1:])}) to train at this rate")
    if kind == "human" and rate is not None:
        raise ConfigError(f"noise.rate={rate} is ignored by noise=human: its label set (noise.labels="
                          f"{cfg.noise.labels}) is the noise; drop noise.rate, or choose noise.labels")
    given = given_settings(cfg)
    if not given:
        return
    loss = f"loss={cfg.hydra.runtime.choices.loss}"
    unread = {}  # a setting -> why nothing reads it, and the way out
    if kind != "human":
        unread["dataset.human_labels"] = f"noise={kind} (it picks the label set of noise=human): drop it"
    elif "noise.labels" in given:
        unread["dataset.human_labels"] = "noise.labels, given too: drop one"
    if name != "synthetic":
        unread["dataset.train_size"] = (f"dataset={name}, which trains on its file's whole training set: "
                                        f"dataset.subset={given.get('dataset.train_size')} trains on a "
                                        "class-balanced subset of that many")
    for setting, derived in (("dataset.epochs", "trainer.epochs"), ("dataset.lr", "optim.lr")):
        if derived in given:
            unread[setting] = f"{derived}, given too: drop one"
    l1_keys = {L1_TERMS[t] for t in loss_terms(cfg.loss) if t in L1_TERMS}
    used = "l1_amse" if "l1_amse" in l1_keys else "l1_nnce" if l1_keys else "weight_decay"
    for key in ("weight_decay", "l1_amse", "l1_nnce"):
        if key != used:
            penalty = "L1" if l1_keys else "L2"
            unread[f"dataset.{key}"] = (f"{loss}, which takes {penalty} at dataset.{used} (jal.resolvers."
                                        f"regularization): set dataset.{used} instead")
        elif (derived := "optim.l1" if l1_keys else "optim.weight_decay") in given:
            unread[f"dataset.{key}"] = f"{derived}, given too: drop one"
    precomputed = name in HUMAN_LABEL_SETS and rate in PRECOMPUTED_INSTANCE_RATES  # CIFAR-10 and CIFAR-100
    if kind == "instance" and not precomputed and given.get("noise.generate", "").lower() == "false":
        unread["noise.generate"] = (f"noise.rate={rate} on {name}: precomputed labels exist for rates "
                                    f"{', '.join(map(str, PRECOMPUTED_INSTANCE_RATES))} of CIFAR only, the "
                                    "generator draws the others: drop it")
    for setting, why in unread.items():
        if setting in given:
            raise ConfigError(f"{setting}={given[setting]} is ignored by {why}")


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def expected_type(schema, key: str) -> str:
    """What the schema's field `key` holds, in words ("a number or null"), from the dataclass's type hints."""
    hint = typing.get_type_hints(schema).get(key) if dataclasses.is_dataclass(schema) else None
    optional = type(None) in typing.get_args(hint)
    if optional:  # Optional[float] = Union[float, None]
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return TYPE_NAMES.get(hint, "of another type") + (" or null" if optional else "")


def one_line(err: BaseException) -> str:
    """The one line to print for an error composing or checking a config (Hydra's own spans a screen)."""
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    if isinstance(err, MissingConfigException) and err.options is not None:  # loss=foo
        group, _, option = (err.missing_cfg_file or "").rpartition("/")
        return f"unknown {group} {option!r}; choose one of: {', '.join(sorted(err.options))}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.parent_node is not None:  # trainer.epoch=3
        section = cause.full_key.rpartition(".")[0]
        valid = set(cause.parent_node.keys())
        if not section:  # the top level: its keys and the config groups
            valid |= {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
        where = f"in {section}" if section else "at the top level"
        return f"unknown setting {cause.full_key!r}; valid keys {where}: {', '.join(sorted(valid - {'hydra'}))}"
    if isinstance(cause, ValidationError) and cause.parent_node is not None:  # noise.rate=abc
        wanted = expected_type(OmegaConf.get_type(cause.parent_node), cause.key)
        try:  # the parent still holds the value the override tried to replace: an example of the right type
            example = cause.parent_node[cause.key]
        except OmegaConfBaseException:  # an interpolation that does not resolve here: as written
            example = OmegaConf.to_container(cause.parent_node, resolve=False)[cause.key]
        example = "null" if example is None else example
        value = "null" if cause.value is None else repr(cause.value)
        return f"{cause.full_key}={value} is not {wanted}: e.g. {cause.full_key}={example}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    parts = [lines[0] if lines else type(err).__name__]
    innermost = err  # Hydra wraps the error that stopped it (`Error in call to target ...:`): its cause says why
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    if innermost is not err and (inner_lines := str(innermost).strip().splitlines()):
        parts.append(f"{type(innermost).__name__}: {inner_lines[0]}")
    parts += [line.split(". ", 1)[-1].lower() for line in lines[1:] if "--multirun" in line]  # Hydra's hint
    return "; ".join(part.rstrip(":") for part in parts)


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
    if any(arg.startswith("-") for arg in argv):
        return
    try:
        cfg = compose_run(argv)  # Hydra's runtime set: logger.tags name the loss through ${hydra:...}
        check_config(cfg)
        check_data_files(cfg)
        check_run_writable(cfg)
    except (ConfigError, HydraException, OmegaConfBaseException, FileNotFoundError, CannotWrite) as err:
        sys.exit(f"error: {one_line(err)}")


def share_config_store() -> None:
    """Hydra deep-copies its config repository, the ConfigStore with every schema included, at each composition
    and for each config group that --help or a Tab's completion lists (two thirds of a --help's time). The
    store is read only through ConfigStore.load, which returns a copy of the node it loads, so the copies can
    share the one store: a composition yields the same config, sooner."""
    ConfigStore.__deepcopy__ = lambda self, memo: self


def answer_without_training() -> typing.NoReturn:
    """Hydra's app on sys.argv with a task function that never runs: Hydra prints what a printing flag asks
    for and returns. Named as jal.train's main so that the help's title and the job's name are the same."""
    import hydra

    def main(cfg) -> None:
        raise SystemExit("error: no run here: only Hydra's printing flags come this way (jal.config_check)")

    main.__module__, main.__qualname__ = "jal.train", "main"  # Hydra names the app and job after the module
    hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")(main)()
    sys.exit(0)
