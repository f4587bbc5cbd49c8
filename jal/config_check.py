"""A composed config checked before anything runs: each schema's value rules (their __post_init__, jal/config.py),
the rules across sections (a setting nothing would read, real-world data with synthetic noise, a human label
set the dataset lacks, a CUDA device this machine lacks). Hydra checks types and keys while it composes; every
failure is one line (jal.errors). The command line's checks before torch loads: jal/preflight.py.
"""

import dataclasses
import inspect
import typing
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from jal.config import REAL_WORLD, BadValue, ConfigError, RunConfig, require
from jal.experiment import PRECOMPUTED_INSTANCE_RATES, check_out_root, given_settings
from jal.paths import CONFIG_DIR
from jal.resolvers import L1_TERMS, loss_terms

# CIFAR-N label sets per dataset (configs/noise/human.yaml)
HUMAN_LABEL_SETS = {"cifar10": ("aggre", "worst", "rand1", "rand2", "rand3"), "cifar100": ("noisy",)}

# Sections with a schema, nested loss terms before the combination (so an error names its full key).
SECTIONS = ("trainer", "optim", "dataset", "noise", "logger", "loss.active", "loss.passive", "loss")


def check_config(cfg) -> None:
    """The value rules of every section (each schema's __post_init__), then the rules across sections.
    Raises ConfigError; reads no data."""
    given = given_settings(cfg)  # the settings given on the command line, which several rules read
    check_out_root(cfg.out_root)
    if "hydra" in cfg:
        check_given_once(list(cfg.hydra.overrides.task))
    top = {f.name for f in dataclasses.fields(RunConfig)}
    if extra := sorted(set(cfg.keys()) - top - {"hydra"}):  # `+foo=1`: no setting of a run reads it
        raise ConfigError(f"unknown setting '{extra[0]}'; valid keys at the top level: {', '.join(sorted(top))}")
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
    check_given_values(cfg, given)
    check_arguments(cfg, given)
    kind, name = cfg.noise.type, cfg.dataset.name
    if name in REAL_WORLD and kind != "none":
        raise ConfigError(f"noise={kind} on dataset={name}: its labels are noisy already (real-world noise) and "
                          "no synthetic noise is drawn on them; drop the noise setting (noise=none)")
    if kind == "human" and cfg.noise.labels not in HUMAN_LABEL_SETS.get(name, ()):
        valid = ", ".join(f"{d}: {'|'.join(s)}" for d, s in HUMAN_LABEL_SETS.items())
        raise ConfigError(f"no human label set {cfg.noise.labels!r} for dataset {name}; valid noise.labels ({valid})")
    check_own_data(cfg, given)
    check_nothing_ignored(cfg, given)
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0", 123)
    device = cfg.trainer.device
    if device.startswith("cuda"):
        import torch  # only here: composing and checking the rest needs no torch

        index = int(device.partition(":")[2] or 0)
        require(index < torch.cuda.device_count(), "trainer.device", device,
                f"is not among this machine's {torch.cuda.device_count()} CUDA devices", "auto")


def check_given_once(overrides: list[str]) -> None:
    """A setting given twice on one command line is refused, naming both values: Hydra would train the last one
    while the run's directory named both (a sweep: the last values, silently)."""
    given = {}
    for line in overrides:
        key, is_value, value = line.partition("=")
        if not is_value or key.startswith("~"):
            continue
        key = key.lstrip("+")
        if key in given:
            raise ConfigError(f"{key} is given twice ({key}={given[key]} and {key}={value}): give it once")
        given[key] = value


def check_arguments(cfg, given: dict[str, str]) -> None:
    """A class built from a section without a schema (the model: `_target_` and its arguments) takes every
    setting given in it: `+model.foo=1` is refused here, before anything is written, not by the class once the
    run's directory, lock, config and labels are there. Only sections a setting was given in are looked at (their
    class is imported: the model's brings torch)."""
    from hydra.utils import get_object

    for section in sorted({key.rpartition(".")[0] for key in given if "." in key}):
        node = OmegaConf.select(cfg, section)
        if not OmegaConf.is_dict(node) or OmegaConf.get_type(node) is not dict or "_target_" not in node:
            continue  # not a class's arguments, or a schema's (checked above)
        try:
            target = get_object(node._target_)
        except Exception:  # noqa: BLE001 (a target that does not import: building the class names it)
            continue
        takes = inspect.signature(target).parameters
        if any(p.kind == p.VAR_KEYWORD for p in takes.values()):
            continue
        if extra := sorted(key for key in node.keys() if not str(key).startswith("_") and key not in takes):
            raise ConfigError(f"unknown setting '{section}.{extra[0]}': {node._target_} takes no argument "
                              f"{extra[0]!r}; valid keys in {section}: {', '.join(sorted(takes))}")
LARGEST_FOR_CNN8 = 64  # pixels: the 8-layer CNN (made for CIFAR's 32) up to here, ResNet-50 beyond (jal/models.py)


def check_own_data(cfg, given: dict[str, str]) -> None:
    """A dataset of yours (jal/own_data.py) with what fits it: its labels as given (not claimed clean), noise that
    needs no CIFAR class map nor images in memory, the settings read from the data left to it; a model that
    fits the images' size; and a validation split only where the run records the rows it holds out."""
    kind, name, own, given = cfg.noise.type, cfg.dataset.name, cfg.dataset.get("format"), given
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


def check_nothing_ignored(cfg, given: dict[str, str]) -> None:
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


# Settings a config group sets, which no value given alone may change: the group's name for what it is (another
# name would read another dataset's files, or record another noise than the labels carry), the directory name
# of the noise (noise.tag follows noise.rate), a loss's class count (the dataset's) and its terms (its config's)
SET_BY_GROUP = {"dataset.name": "dataset", "noise.type": "noise", "logger.name": "logger",
                "loss.active": "loss", "loss.passive": "loss"}
FOLLOWS_DATASET = ("loss.num_classes", "loss.active.num_classes", "loss.passive.num_classes")
BOOLEANS = ("true", "false")


def check_given_values(cfg, given: dict[str, str]) -> None:
    """The values given on the command line that composing lets through but no run could honour: a setting its
    config group sets (SET_BY_GROUP), a loss's class count, a true/false setting given a number (OmegaConf reads
    `3` as true), a class (`loss._target_`) that names no class of a module found here."""
    for key, value in given.items():
        group = SET_BY_GROUP.get(key)
        choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}") if group else None
        if key == "noise.tag":
            raise ConfigError(f"noise.tag={value} is not a setting: it names the run's directory after the noise "
                              "asked (noise.type and noise.rate); drop it")
        if group and value != choice:
            options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
            listed = (f"<one of {', '.join(options)}>" if len(options) <= 8
                      else f"<one of configs/{group}/'s {len(options)}>")
            raise ConfigError(f"{key}={value} is set by the {group} config ({group}={choice}), not by itself: "
                              f"choose {group}={listed} instead")
        if key in FOLLOWS_DATASET and value != str(cfg.dataset.num_classes):
            raise ConfigError(f"{key}={value} follows dataset.num_classes ({cfg.dataset.num_classes} classes of "
                              f"dataset={cfg.dataset.name}): drop it")
        parent, _, field = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if OmegaConf.is_dict(node) and is_boolean(OmegaConf.get_type(node), field) \
                and value.lower() not in BOOLEANS:
            raise ConfigError(f"{key}={value} is not true or false: e.g. {key}=false")
        if field == "_target_" and (missing := missing_class(value)):
            raise ConfigError(f"{key}={value}: {missing} (a loss's class comes with its config: loss=<name>)")


def is_boolean(schema, field: str) -> bool:
    """Whether the schema's field holds true or false (bool, or bool or None)."""
    hint = typing.get_type_hints(schema).get(field) if dataclasses.is_dataclass(schema) else None
    return hint is bool or hint == typing.Optional[bool]


def missing_class(target: str) -> str | None:
    """Why `module.Class` names no class that can be built here, or None: its module cannot be found, or its
    source defines no such name (read, not imported: jal.losses would load torch)."""
    import ast
    import importlib.util

    module, _, name = target.rpartition(".")
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"no module {module!r} to take {name!r} from" if module else "not a module.Class path"
    try:
        tree = ast.parse(Path(spec.origin).read_text())
    except (OSError, TypeError, ValueError, SyntaxError):  # no source to read: the run imports it
        return None
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    return None if name in defined else f"{module} defines no {name!r}"


def share_config_store() -> None:
    """Hydra deep-copies its config repository, the ConfigStore with every schema included, at each composition
    and for each config group that --help or a Tab's completion lists (two thirds of a --help's time). The
    store is read only through ConfigStore.load, which returns a copy of the node it loads, so the copies can
    share the one store: a composition yields the same config, sooner."""
    ConfigStore.__deepcopy__ = lambda self, memo: self
