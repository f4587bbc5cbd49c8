"""The per-loss rules that pick values from other settings, and the resolvers the config files call them
through: the eps-Softmax table (`${jal.eps_softmax:...}`) and the regularisation (`${jal.l1:...}`,
`${jal.weight_decay:...}`). A run's directory name has its own resolver (`${jal.run_name:}`, jal/experiment.py).
"""

from omegaconf import OmegaConf

from jal.config import ConfigError

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
