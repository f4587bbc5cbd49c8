"""The schema of every setting: dataclasses in Hydra's ConfigStore, named in the defaults list of each config.

Hydra checks types and keys while it composes (`noise.rate=abc`, `trainer.epoch=3` fail there); the value
rules in each dataclass's __post_init__ run when `check_config` turns the composed config into these objects,
before any data loads. Every failure reads as one line: `one_line(err)` for any error composing or checking.
`python -m jal.train` composes and checks once before torch loads (check_command_line), so a wrong setting
fails in a fraction of a second and Hydra makes no run directory for it; so does a missing data file.

A config file takes its schema with `- /schema/<name>@_here_` in its defaults list (configs/loss/jal_ce.yaml
also types its active and passive terms with `@active`, `@passive`).
"""

import dataclasses
import math
import os
import re
import socket
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from jal.util import CONFIG_DIR, compose_run

# CIFAR-N label sets per dataset (configs/noise/human.yaml)
HUMAN_LABEL_SETS = {"cifar10": ("aggre", "worst", "rand1", "rand2", "rand3"), "cifar100": ("noisy",)}


class ConfigError(ValueError):
    """A wrong setting: reported as one line that names the fix."""


class BadValue(ConfigError):
    """A value outside its rule; `key` is relative to its section until check_config prefixes the section."""

    def __init__(self, key: str, value, rule: str, example):
        super().__init__(key, value, rule, example)
        self.key, self.value, self.rule, self.example = key, value, rule, example

    def __str__(self):
        return f"{self.key}={self.value} {self.rule}: e.g. {self.key}={self.example}"


def require(ok: bool, key: str, value, rule: str, example) -> None:
    if not ok:
        raise BadValue(key, value, rule, example)


def require_positive(key: str, value, example, strict: bool = True) -> None:
    ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
    require(ok, key, value, "must be finite and > 0" if strict else "must be finite and >= 0", example)


# ---------------------------------------------------------------------------------------------------
# The run: seed, paths, trainer, optimiser (configs/train.yaml)

# trainer.compile: off, on (torch.compile's default mode) or one of its modes (reduce-overhead = CUDA graphs)
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainerConfig:
    epochs: int = 120
    batch_size: int = 128
    eval_batch_size: int = 256
    eval_every: int = 1
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    compile: Any = False
    threads: Optional[int] = None
    progress: bool = True
    stop_at: Optional[float] = None
    pause_after: Optional[int] = None
    deterministic: bool = False
    restart: bool = False

    def __post_init__(self):
        require(self.epochs >= 1, "epochs", self.epochs, "must be >= 1", 120)
        require(self.batch_size >= 2, "batch_size", self.batch_size,
                "must be >= 2 (BatchNorm trains on batches)", 128)
        require(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1", 256)
        require(self.eval_every >= 1, "eval_every", self.eval_every, "must be >= 1", 1)
        require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, "device", self.device,
                "is not auto, cpu, cuda or cuda:N", "cuda:0")
        require(self.precision in ("auto", "bf16", "fp32", "fp64"), "precision", self.precision,
                "is not auto, bf16, fp32 or fp64", "fp32")
        require(self.threads is None or self.threads >= 1, "threads", self.threads,
                "must be >= 1 (or null: torch's default)", 1)
        require(self.compile in COMPILE_MODES, "compile", self.compile,
                f"is not true, false or one of {', '.join(COMPILE_MODES[2:])}", "reduce-overhead")
        require(self.pause_after is None or self.pause_after >= 1, "pause_after", self.pause_after,
                "must be >= 1 epochs (or null: never)", 60)
        require(self.stop_at is None or self.stop_at >= 0, "stop_at", self.stop_at,
                "must be unix seconds >= 0 (or null: never)", 1767225600)


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    l1: float = 0.0
    grad_clip: float = 5.0

    def __post_init__(self):
        require_positive("lr", self.lr, 0.01)
        require(0 <= self.momentum < 1, "momentum", self.momentum, "is outside [0, 1)", 0.9)
        require_positive("weight_decay", self.weight_decay, 1e-4, strict=False)
        require_positive("l1", self.l1, 5e-5, strict=False)
        require_positive("grad_clip", self.grad_clip, 5.0)


@dataclass
class TrainConfig:
    """The primary config: typed run settings; each group (dataset, noise, loss, ...) brings its own schema."""

    seed: int = 123
    data_dir: str = "data"
    out_root: str = "outputs"
    run_name: str = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: Any = MISSING
    dataset: Any = MISSING
    noise: Any = MISSING
    loss: Any = MISSING
    logger: Any = MISSING



# ---------------------------------------------------------------------------------------------------
# Groups: dataset, noise, logger


@dataclass
class DatasetConfig:
    name: str = MISSING
    num_classes: int = MISSING
    train_size: int = MISSING
    epochs: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    l1_amse: float = MISSING
    l1_nnce: float = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    rotation: float = 0.0
    human_labels: str = MISSING
    subset: Optional[int] = None
    test_subset: Optional[int] = None

    def __post_init__(self):
        k = self.num_classes
        require(k >= 2, "num_classes", k, "must be >= 2", 10)
        require(self.epochs >= 1, "epochs", self.epochs, "must be >= 1", 120)
        require_positive("lr", self.lr, 0.01)
        for key in ("weight_decay", "l1_amse", "l1_nnce", "rotation"):
            require_positive(f"{key}", getattr(self, key), 0.0, strict=False)
        for key in ("mean", "std"):
            values = getattr(self, key)
            require(len(values) == 3, f"{key}", values, "needs one value per RGB channel", [0.5, 0.5, 0.5])
        require(min(self.std) > 0, "std", self.std, "must be > 0", [0.25, 0.25, 0.25])
        if self.subset is not None:  # a class-balanced subset: subset // K images of each class
            require(k <= self.subset <= self.train_size, "subset", self.subset,
                    f"is outside [num_classes, train_size] = [{k}, {self.train_size}]", max(k, 2000))
        if self.test_subset is not None:
            require(self.test_subset >= k, "test_subset", self.test_subset,
                    f"is below the number of classes ({k})", max(k, 1000))


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    test_size: int = 128

    def __post_init__(self):
        require(self.train_size >= 2, "train_size", self.train_size, "must be >= 2", 256)
        require(self.test_size >= 1, "test_size", self.test_size, "must be >= 1", 128)
        super().__post_init__()


@dataclass
class NoiseConfig:
    type: str = MISSING
    rate: Optional[float] = None
    tag: str = MISSING

    def __post_init__(self):
        if self.rate is not None:
            require(0 <= self.rate < 1, "rate", self.rate, "is outside [0, 1)", 0.4)


@dataclass
class ClassNoiseConfig(NoiseConfig):  # symmetric, asymmetric
    rate: float = 0.4
    sampling: str = "exact"

    def __post_init__(self):
        super().__post_init__()
        require(self.sampling in ("exact", "per_sample"), "sampling", self.sampling,
                "is not exact or per_sample", "exact")


@dataclass
class InstanceNoiseConfig(NoiseConfig):
    rate: float = 0.4
    generate: bool = False


@dataclass
class HumanNoiseConfig(NoiseConfig):
    labels: str = MISSING


@dataclass
class LoggerConfig:
    name: str = "none"

    def __post_init__(self):
        require(self.name in ("none", "wandb"), "name", self.name, "is not none or wandb", "none")


@dataclass
class WandbConfig(LoggerConfig):
    project: str = "jal"
    entity: Optional[str] = None
    mode: str = "offline"
    group: str = MISSING
    tags: list[str] = MISSING

    def __post_init__(self):
        super().__post_init__()
        require(self.mode in ("online", "offline", "disabled"), "mode", self.mode,
                "is not online, offline or disabled", "offline")


# ---------------------------------------------------------------------------------------------------
# Losses: one schema per class of jal.losses, with its constructor's arguments


@dataclass
class LossConfig:  # CE, NCE, RCE
    _target_: str = MISSING
    num_classes: int = MISSING


@dataclass
class FocalConfig(LossConfig):  # FL, NFL
    gamma: float = 0.5

    def __post_init__(self):
        require_positive("gamma", self.gamma, 0.5, strict=False)


@dataclass
class NNCEConfig(LossConfig):
    min_prob: float = 1e-8

    def __post_init__(self):
        require(0 < self.min_prob < 1, "min_prob", self.min_prob, "is outside (0, 1)", 1e-8)


@dataclass
class NNFLConfig(NNCEConfig):
    gamma: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        require_positive("gamma", self.gamma, 0.5, strict=False)


@dataclass
class MAEConfig(LossConfig):
    scale: float = 2.0

    def __post_init__(self):
        require_positive("scale", self.scale, 2.0)


@dataclass
class GCEConfig(LossConfig):
    q: float = 0.7

    def __post_init__(self):
        require_positive("q", self.q, 0.7)


@dataclass
class AMSEConfig(LossConfig):
    a: float = 1.0
    q: float = 2.0  # the exponent; 2 is AMSE, others are the paper's ablation (the reference's AMSE_with_q)

    def __post_init__(self):  # a = 1 is plain MSE; a < 1 is not in the family (docs/protocol.md section 2)
        require(math.isfinite(self.a) and self.a >= 1, "a", self.a, "must be finite and >= 1 (AMSE)", 30.0)
        require_positive("q", self.q, 2.0)


@dataclass
class LDRKLConfig(LossConfig):
    threshold: float = 0.1
    lam: float = 1.0

    def __post_init__(self):
        require_positive("threshold", self.threshold, 0.1, strict=False)
        require_positive("lam", self.lam, 10.0)


@dataclass
class CELCConfig(LossConfig):
    delta: float = 2.5

    def __post_init__(self):
        require_positive("delta", self.delta, 2.5)


@dataclass
class EpsSoftmaxConfig(LossConfig):  # ECE
    m: float = 1e5

    def __post_init__(self):
        require_positive("m", self.m, 1e5, strict=False)


@dataclass
class EpsFocalConfig(EpsSoftmaxConfig):  # EFL
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require_positive("gamma", self.gamma, 0.1, strict=False)


@dataclass
class NLNLConfig(LossConfig):
    min_prob: float = 1e-5

    def __post_init__(self):
        require(0 < self.min_prob < 1, "min_prob", self.min_prob, "is outside (0, 1)", 1e-5)


@dataclass
class AELConfig(LossConfig):
    a: float = 2.5

    def __post_init__(self):
        require_positive("a", self.a, 2.5)


@dataclass
class AULConfig(LossConfig):
    a: float = 5.5
    q: float = 3.0

    def __post_init__(self):  # (a - p_y)^q needs a >= 1 for every p_y in [0, 1]
        require(math.isfinite(self.a) and self.a >= 1, "a", self.a, "must be finite and >= 1 (AUL)", 5.5)
        require_positive("q", self.q, 3.0)


@dataclass
class AGCEConfig(LossConfig):
    a: float = 0.6
    q: float = 0.6

    def __post_init__(self):
        require_positive("a", self.a, 0.6)
        require_positive("q", self.q, 0.6)


@dataclass
class ActivePassiveConfig:  # alpha * active + beta * passive
    _target_: str = MISSING
    alpha: float = 1.0
    beta: float = 1.0
    active: Any = MISSING
    passive: Any = MISSING

    def __post_init__(self):
        require_positive("alpha", self.alpha, 1.0, strict=False)
        require_positive("beta", self.beta, 1.0, strict=False)


# Stored as schema/<name>: kept out of the groups' own options, so `loss=...` lists only the YAML files.
SCHEMAS = {
    "train": TrainConfig,
    "dataset": DatasetConfig, "dataset_synthetic": SyntheticDatasetConfig,
    "noise": NoiseConfig, "noise_class": ClassNoiseConfig, "noise_instance": InstanceNoiseConfig,
    "noise_human": HumanNoiseConfig,
    "logger": LoggerConfig, "logger_wandb": WandbConfig,
    "loss/loss": LossConfig, "loss/focal": FocalConfig, "loss/nnce": NNCEConfig, "loss/nnfl": NNFLConfig,
    "loss/mae": MAEConfig, "loss/gce": GCEConfig, "loss/amse": AMSEConfig, "loss/ael": AELConfig,
    "loss/aul": AULConfig, "loss/agce": AGCEConfig, "loss/active_passive": ActivePassiveConfig,
    "loss/ldr_kl": LDRKLConfig, "loss/ce_lc": CELCConfig, "loss/eps_softmax": EpsSoftmaxConfig,
    "loss/eps_focal": EpsFocalConfig,
    "loss/nlnl": NLNLConfig,
}
for path, schema in SCHEMAS.items():
    group, _, name = f"schema/{path}".rpartition("/")
    ConfigStore.instance().store(group=group, name=name, node=schema)

# A number in a setting's value as written (`=10.0`, `,1e-4`, `[0.5`), up to the next separator.
NUMBER = re.compile(r"(?<=[=,\[:])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?=[,\]]|$)")


def canonical_number(text: str) -> str:
    """One spelling per value: 10.0, 10 and 1e1 -> 10; 0.00010 and 1e-4 -> 0.0001 (Python's shortest repr)."""
    value = float(text)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def settings_name(settings: str) -> str:
    """Hydra's override_dirname with its numbers spelt one way: `loss.passive.a=10.0` and `loss.passive.a=10`
    set the same value, so they name one directory (and one row of the tables)."""
    return NUMBER.sub(lambda number: canonical_number(number.group()), settings)


# `${subdir:${hydra:job.override_dirname}}` in run_name: "/<settings>" when settings were given, else nothing,
# so the paper's grid keeps its plain cell directories (configs/train.yaml).
OmegaConf.register_new_resolver("subdir", lambda settings: f"/{settings_name(settings)}" if settings else "",
                                replace=True)


def precision_subdir(precision: str, device: str) -> str:
    """`${precision_subdir:${trainer.precision},${trainer.device}}` in run_name: "/bf16" where the run trains
    in bf16 (asked for, or `auto` on CUDA or a CPU with bf16 hardware: jal.device.choose_precision), "/fp64"
    where it trains in float64, nothing for fp32. A run's directory names its precision, so an fp32 record
    and a bf16 run of the same cell never share one, on whichever machine `auto` is resolved."""
    from jal.device import choose_precision, run_device  # torch: only when a run's directory is named

    chosen, _ = choose_precision(precision, run_device(device))
    return "" if chosen == "fp32" else f"/{chosen}"


OmegaConf.register_new_resolver("precision_subdir", precision_subdir, replace=True)


# ---------------------------------------------------------------------------------------------------
# Which settings are the experiment: the one definition the run's identity (jal/run_dir.py), the runs a fusion
# may hold, the config records store and the run directory's name (configs/train.yaml) all derive from

# Settings that say how or where a run is done, not what it computes, each with whether runs fused in one
# process may differ in it (True) or share it, being one per process (False). trainer.precision is replaced
# in the identity by the precision that trains (`auto` means different things on different machines).
NOT_THE_EXPERIMENT = {
    "out_root": True, "run_name": True, "logger": True, "trainer.progress": True, "trainer.stop_at": True,
    "trainer.pause_after": True, "trainer.restart": True, "data_dir": False, "trainer.threads": False,
    "trainer.device": False,
    "trainer.eval_batch_size": False, "trainer.compile": False, "trainer.channels_last": False,
    "trainer.deterministic": False, "trainer.precision": False,
}
MACHINE_PATHS = ("data_dir", "out_root")  # where this machine keeps data and runs: not in the records' config
# The experiment's settings that each member of a fusion has its own of (the step applies them per member).
PER_MEMBER = ("seed", "noise", "loss", "optim.l1", "optim.weight_decay", "optim.grad_clip", "dataset.weight_decay",
              "dataset.l1_amse", "dataset.l1_nnce")
MAY_DIFFER_IN_A_FUSION = PER_MEMBER + tuple(key for key, per_run in NOT_THE_EXPERIMENT.items() if per_run)
# Named by the run directory's cell already (dataset/noise/loss/seed), or by the preset's own out_root.
IN_THE_CELL = ("dataset", "noise", "noise.rate", "noise.labels", "loss", "seed", "experiment")


def not_in_the_directory_name() -> list[str]:
    """Hydra's override_dirname.exclude_keys (configs/train.yaml): the cell's settings and those that are not the
    experiment, a group's settings by name (Hydra excludes exact keys). run_name is no override; the precision
    that trains is named by precision_subdir instead."""
    groups = {"logger": [f"logger.{f.name}" for f in dataclasses.fields(WandbConfig) if f.name != "name"]}
    keys = [k for k in NOT_THE_EXPERIMENT if k != "run_name"]
    return list(IN_THE_CELL) + [k for key in keys for k in (key, *groups.get(key, ()))]


OmegaConf.register_new_resolver("jal.not_in_the_directory_name", not_in_the_directory_name, replace=True)


# ---------------------------------------------------------------------------------------------------
# Rules that pick values from other settings: resolvers used by the config files


# The eps-Softmax losses' (alpha, beta, m) per dataset, noise type and rate: the reference's get_eps_softmax.
# A rate of None stands for every rate. Clean data takes the symmetric row at rate 0; the reference's
# "dependent" noise is our instance noise, which on CIFAR-100 takes the symmetric rows.
_C100_SYMMETRIC = {0.0: (0.1, 1.0, 1e4), 0.2: (0.05, 1.0, 1e4), 0.4: (0.03, 1.0, 1e4), 0.6: (0.00125, 1.0, 1e4),
                   0.8: (0.0075, 1.0, 1e4)}
EPS_SOFTMAX = {
    ("cifar10", "symmetric"): {None: (0.01, 5.0, 1e5)},
    ("cifar10", "asymmetric"): {None: (0.02, 5.0, 1e3)},
    ("cifar10", "instance"): {None: (0.045, 10.0, 1e5)},
    ("cifar100", "symmetric"): _C100_SYMMETRIC,
    ("cifar100", "instance"): _C100_SYMMETRIC,
    ("cifar100", "asymmetric"): {0.1: (0.015, 1.0, 1e2), 0.2: (0.007, 1.0, 1e2), 0.3: (0.005, 1.0, 1e2),
                                 0.4: (0.004, 1.0, 1e2)},
}
DATASET_STAND_INS = {"synthetic": "cifar10"}  # synthetic runs take CIFAR-10's hyperparameters


def eps_softmax_hyperparameters(dataset: str, noise_type: str, rate) -> tuple[float, float, float]:
    """(alpha, beta, m) of CE_eps+MAE / FL_eps+MAE for a dataset and noise setting; ConfigError if the
    reference gives none."""
    dataset = DATASET_STAND_INS.get(dataset, dataset)
    if noise_type == "none":
        noise_type, rate = "symmetric", 0.0
    rows = EPS_SOFTMAX.get((dataset, noise_type), {})
    rate = None if rate is None else round(float(rate), 4)
    values = rows.get(None) or rows.get(rate)
    if values is None:
        raise ConfigError(
            f"the reference gives no eps-Softmax hyperparameters for dataset={dataset} noise={noise_type} "
            f"noise.rate={rate}: set loss.alpha, loss.beta and loss.active.m yourself (e.g. loss.alpha=0.01 "
            f"loss.beta=5 loss.active.m=1e5), or use a setting of its table: "
            + "; ".join(f"{d} {n} {'any rate' if None in r else '/'.join(map(str, r))}"
                        for (d, n), r in EPS_SOFTMAX.items()))
    return values


def _eps_softmax_resolver(key: str, dataset: str, noise_type: str, rate) -> float:
    return eps_softmax_hyperparameters(dataset, noise_type, rate)[("alpha", "beta", "m").index(key)]


# The regularisation rule (docs/protocol.md section 1, the reference's get_weight_decay_config), keyed by the
# loss's terms, so that every loss, a new one too, gets it without a file of its own: L1 on all parameters
# and no L2 when a term is AMSE (strength dataset.l1_amse, checked first), NNCE or NNFL (dataset.l1_nnce);
# otherwise L2 weight decay dataset.weight_decay. MSE (AMSE's a = 1) is its own class and takes L2.
L1_TERMS = {"jal.losses.AMSE": "l1_amse", "jal.losses.NNCE": "l1_nnce", "jal.losses.NNFL": "l1_nnce"}


def loss_terms(loss) -> list[str]:
    """The _target_ of a loss config and of its active and passive terms."""
    return [node["_target_"] for node in (loss, loss.get("active"), loss.get("passive"))
            if OmegaConf.is_dict(node) and "_target_" in node]


def regularization(loss, dataset) -> tuple[float, float]:
    """(l1, weight_decay) for a loss config and a dataset config."""
    keys = {L1_TERMS[t] for t in loss_terms(loss) if t in L1_TERMS}
    if not keys:
        return 0.0, float(dataset.weight_decay)
    return float(dataset["l1_amse" if "l1_amse" in keys else "l1_nnce"]), 0.0


for _name, _resolver in {
    "jal.eps_softmax": _eps_softmax_resolver,
    "jal.l1": lambda loss, dataset: regularization(loss, dataset)[0],
    "jal.weight_decay": lambda loss, dataset: regularization(loss, dataset)[1],
}.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)


# ---------------------------------------------------------------------------------------------------
# Checking a composed config, and every error as one line


# Sections with a schema, nested loss terms before the combination (so an error names its full key).
SECTIONS = ("trainer", "optim", "dataset", "noise", "logger", "loss.active", "loss.passive", "loss")


def check_config(cfg) -> None:
    """The value rules of every section (each schema's __post_init__), then the rules across sections.
    Raises ConfigError; reads no data."""
    require(cfg.seed >= 0, "seed", cfg.seed, "must be >= 0", 123)
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
    if kind == "human" and cfg.noise.labels not in HUMAN_LABEL_SETS.get(name, ()):
        valid = ", ".join(f"{d}: {'|'.join(s)}" for d, s in HUMAN_LABEL_SETS.items())
        raise ConfigError(f"no human label set {cfg.noise.labels!r} for dataset {name}; valid noise.labels ({valid})")
    device = cfg.trainer.device
    if device.startswith("cuda"):
        import torch  # only here: composing and checking the rest needs no torch

        index = int(device.partition(":")[2] or 0)
        require(index < torch.cuda.device_count(), "trainer.device", device,
                f"is not among this machine's {torch.cuda.device_count()} CUDA devices", "auto")


def given_settings(cfg) -> dict[str, str]:
    """The settings given on the command line, key -> value as written (Hydra's task overrides), where `cfg`
    carries its Hydra node (compose_run, a sweep's plan); empty for a config without it."""
    if "hydra" not in cfg:
        return {}
    return dict(line.lstrip("+~").partition("=")[::2] for line in cfg.hydra.overrides.task)


# The noise types whose labels read noise.rate, and the rates of the precomputed instance-dependent label sets
# (jal.run.make_labels: other rates, and synthetic data, are drawn by the generator)
RATED_NOISES = ("symmetric", "asymmetric", "instance")
PRECOMPUTED_INSTANCE_RATES = (0.2, 0.4, 0.6)


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
            unread[f"dataset.{key}"] = (f"{loss}, which takes {penalty} at dataset.{used} (jal.config."
                                        f"regularization): set dataset.{used} instead")
        elif (derived := "optim.l1" if l1_keys else "optim.weight_decay") in given:
            unread[f"dataset.{key}"] = f"{derived}, given too: drop one"
    precomputed = name != "synthetic" and rate in PRECOMPUTED_INSTANCE_RATES
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
    """The files a run of `cfg` reads from data_dir are there (jal.data.load_dataset, jal.run.make_labels):
    a missing label file raises FileNotFoundError naming it; missing images are downloaded, as a run would,
    or raise naming what goes where. Their contents are checked as the run reads them."""
    name, kind, data_dir = cfg.dataset.name, cfg.noise.type, Path(cfg.data_dir)
    if name == "synthetic":  # made in memory; its instance-dependent labels are always generated
        return
    labels = {"human": (f"{name}n_labels.npz", "CIFAR-N labels"),
              "instance": (f"{name}_idn_labels.npz", "precomputed instance-dependent labels")}.get(kind)
    if kind == "instance" and (cfg.noise.generate or cfg.noise.rate not in PRECOMPUTED_INSTANCE_RATES):
        labels = None  # drawn by the generator
    if labels and not (data_dir / labels[0]).is_file():
        raise FileNotFoundError(f"{data_dir / labels[0]} not found: put the {labels[1]} ({labels[0]}) there "
                                "(the data directory is set by JAL_DATA_DIR)")
    images = data_dir / f"{name}.npz"
    if images.is_file():
        return
    raw = data_dir / {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]  # torchvision's
    if not raw.is_dir() and not can_reach(CIFAR_HOST):  # seconds sooner than torchvision's own attempt
        raise FileNotFoundError(f"{images} is missing and {name} could not be downloaded (no connection to "
                                f"{CIFAR_HOST}); put {name}.npz (x_train, y_train, x_test, y_test) in {data_dir} "
                                "or point JAL_DATA_DIR at a folder holding it")
    from jal.data import _download_and_prepare  # torchvision: only when the images must be fetched

    _download_and_prepare(name, images)


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
    except (ConfigError, HydraException, OmegaConfBaseException, FileNotFoundError) as err:
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
        raise SystemExit("error: no run here: only Hydra's printing flags come this way (jal.config)")

    main.__module__, main.__qualname__ = "jal.train", "main"  # Hydra names the app and job after the module
    hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")(main)()
    sys.exit(0)
