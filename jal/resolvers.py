"""Every resolver the config files call (`${name:...}`), registered with OmegaConf on import: the name of a
run's directory (configs/train.yaml: run_name and override_dirname), built from which settings are the
experiment (NOT_THE_EXPERIMENT: the one definition the run's identity, the runs a fusion may hold and the
config records store derive from too), and the per-loss rules (the eps-Softmax table, the regularisation).
"""

import dataclasses
import re

from omegaconf import OmegaConf

from jal.config import ConfigError, WandbConfig

# ---------------------------------------------------------------------------------------------------
# The run directory's name

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
    "trainer.pause_after": True,
    "trainer.restart": True, "data_dir": False, "trainer.threads": False, "trainer.device": False,
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
# Rules that pick values from other settings: the eps-Softmax table, the regularisation


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
    ("webvision", "symmetric"): {None: (0.015, 0.3, 1e3)},  # real-world noise: noise=none, the row of rate 0
    ("clothing1m", "symmetric"): {None: (0.012, 0.1, 1e3)},
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


# The regularisation rule (docs/protocol.md section 1, the reference's get_weight_decay_config), keyed by the
# loss's terms, so that every loss, a new one too, gets it without a file of its own: L1 on all parameters
# and no L2 when a term is AMSE (strength dataset.l1_amse, checked first), NNCE or NNFL (dataset.l1_nnce);
# otherwise L2 weight decay dataset.weight_decay. MSE (AMSE's a = 1) is its own class and takes L2. A dataset
# whose L1 strength is 0 gives those losses its L2 too: the real-world recipes (every loss L2, no L1).
L1_TERMS = {"jal.losses.AMSE": "l1_amse", "jal.losses.NNCE": "l1_nnce", "jal.losses.NNFL": "l1_nnce"}


def loss_terms(loss) -> list[str]:
    """The _target_ of a loss config and of its active and passive terms."""
    return [node["_target_"] for node in (loss, loss.get("active"), loss.get("passive"))
            if OmegaConf.is_dict(node) and "_target_" in node]


def regularization(loss, dataset) -> tuple[float, float]:
    """(l1, weight_decay) for a loss config and a dataset config."""
    keys = {L1_TERMS[t] for t in loss_terms(loss) if t in L1_TERMS}
    l1 = float(dataset["l1_amse" if "l1_amse" in keys else "l1_nnce"]) if keys else 0.0
    return (l1, 0.0) if l1 > 0 else (0.0, float(dataset.weight_decay))


# ---------------------------------------------------------------------------------------------------
# The resolvers the config files call


def _eps_softmax_resolver(key: str, dataset: str, noise_type: str, rate) -> float:
    return eps_softmax_hyperparameters(dataset, noise_type, rate)[("alpha", "beta", "m").index(key)]


for _name, _resolver in {
    "jal.eps_softmax": _eps_softmax_resolver,
    "jal.l1": lambda loss, dataset: regularization(loss, dataset)[0],
    "jal.weight_decay": lambda loss, dataset: regularization(loss, dataset)[1],
}.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)
