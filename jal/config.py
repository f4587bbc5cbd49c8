"""The schema of every setting (the datasets a user brings: jal/own_data.py): dataclasses in Hydra's ConfigStore,
named in the defaults list of each config (`- /schema/<name>@_here_`; configs/loss/jal_ce.yaml also types its
terms with `@active`, `@passive`), their value rules (each __post_init__, run by jal.config_check before any data
loads). The rules that pick values from other settings (the eps-Softmax table, the regularisation) are
jal.resolvers'.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from jal.errors import ConfigError  # noqa: F401  (config.ConfigError: its home was here)


class DataError(ConfigError):
    """A data file or folder that cannot be used as it is: one line naming it and what to do (a ConfigError: the
    setting naming the data is what changes)."""


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
    grad_clip: Optional[float] = 5.0  # null: no clip (the Clothing1M recipe)

    def __post_init__(self):
        require_positive("lr", self.lr, 0.01)
        require(0 <= self.momentum < 1, "momentum", self.momentum, "is outside [0, 1)", 0.9)
        require_positive("weight_decay", self.weight_decay, 1e-4, strict=False)
        require_positive("l1", self.l1, 5e-5, strict=False)
        if self.grad_clip is not None:
            require_positive("grad_clip", self.grad_clip, 5.0)


@dataclass
class RunConfig:
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
    val_fraction: float = 0.0  # share held out, scored against its given labels (docs/your-data.md); 0: none

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
        require(0 <= self.val_fraction <= 0.5, "val_fraction", self.val_fraction,
                "is outside [0, 0.5] (the share of the training set held out; 0: none)", 0.1)


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    test_size: int = 128

    def __post_init__(self):
        require(self.train_size >= 2, "train_size", self.train_size, "must be >= 2", 256)
        require(self.test_size >= 1, "test_size", self.test_size, "must be >= 1", 128)
        super().__post_init__()


REAL_WORLD = ("webvision", "clothing1m")
# What each real-world dataset's folder must hold, as its owners ship it (jal/real_world.py reads it); a missing
# file's line quotes it.
LAYOUTS = {
    "webvision": ("WebVision 1.0 as shipped (info.tar, val_images_256.tar, google_resized_256.tar): "
                  "<root>/info/{train_filelist_google.txt,val_filelist.txt,synsets.txt}, "
                  "<root>/google/q0001/000000.jpg ..., <root>/val_images_256/val000001.jpg ..."),
    "imagenet": ("ILSVRC12's validation images one folder per synset (as torchvision.datasets.ImageNet or "
                 "the usual valprep.sh lay them out): <imagenet_root>/val/n01440764/ILSVRC2012_val_00000293.JPEG ..."),
    "clothing1m": ("Clothing1M as shipped: <root>/annotations/{noisy_train_key_list.txt,clean_test_key_list.txt,"
                   "noisy_label_kv.txt,clean_label_kv.txt} and <root>/images/0/00/*.jpg ..."),
}


def missing_line(path, layout: str, what: str = "") -> str:
    root = "dataset.imagenet_root" if layout == "imagenet" else "dataset.root"
    return f"{path} is missing{what}: {root} must follow {LAYOUTS[layout]}"


def real_world_lists(dataset) -> list[tuple]:
    """(path, layout) of the files a real-world run reads first: its file lists (checked before torch loads)."""
    if dataset.name == "webvision":
        info = f"{dataset.root}/info"
        return [(f"{info}/{name}", "webvision") for name in
                ("train_filelist_google.txt", "val_filelist.txt", "synsets.txt")] + [
                (f"{dataset.imagenet_root}/val", "imagenet")]
    return [(f"{dataset.root}/annotations/{name}.txt", "clothing1m") for name in
            ("noisy_train_key_list", "clean_test_key_list", "noisy_label_kv", "clean_label_kv")]


@dataclass
class RealWorldDatasetConfig(DatasetConfig):
    """WebVision, Clothing1M (jal/real_world.py): image files in their owners' layout, decoded by DataLoader workers,
    and the recipe's optimiser settings that CIFAR's cosine schedule does not have."""
    root: str = MISSING
    imagenet_root: Optional[str] = None  # WebVision's second test set: ILSVRC12's validation images
    workers: int = 8
    image_size: int = 224
    resize: int = 256
    nesterov: bool = False
    lr_decay: float = MISSING  # the lr is multiplied by lr_decay every lr_decay_every epochs
    lr_decay_every: int = 1

    def __post_init__(self):
        super().__post_init__()
        require(self.workers >= 0, "workers", self.workers, "must be >= 0 (0: decode in the training process)", 8)
        require(self.resize >= 8, "resize", self.resize, "must be >= 8 pixels (and >= image_size)", 256)
        require(8 <= self.image_size <= self.resize, "image_size", self.image_size,
                f"must be in [8, resize={self.resize}]", 224)
        require(0 < self.lr_decay <= 1, "lr_decay", self.lr_decay, "is outside (0, 1]", 0.97)
        require(self.lr_decay_every >= 1, "lr_decay_every", self.lr_decay_every, "must be >= 1", 1)
        require(self.subset is None and self.test_subset is None, "subset", self.subset,
                "is not supported for the real-world datasets (their stand-ins are small already)", "null")


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
    a: float = MISSING  # no default, as jal.losses.AMSE: each config gives the paper's a (30 on CIFAR-10)
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


SCHEMAS = {  # stored as schema/<name>: out of the groups' own options, so `loss=...` lists only the YAML files
    "train": RunConfig,
    "dataset": DatasetConfig, "dataset_synthetic": SyntheticDatasetConfig,
    "dataset_real_world": RealWorldDatasetConfig,
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
