"""JAL-CE's and JAL-FL's values on each of the paper's datasets, as the paper trains them, for any PyTorch loop
(`from jal.losses import JALCE, paper_values`, docs/losses.md). The runs take the same values from the configs
(configs/loss, configs/dataset_loss, configs/dataset); tests/test_configs.py checks that the two agree."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperValues:
    """How the paper trains JAL-CE and JAL-FL on one dataset (docs/protocol.md sections 1, 2 and 7)."""

    num_classes: int
    alpha: float  # the active term's weight (NCE in JAL-CE, NFL in JAL-FL)
    beta: float  # AMSE's weight
    a: float  # AMSE's a
    l1: float  # l1 * sum |theta| over every parameter, added to the loss; 0: none
    weight_decay: float  # L2 in the optimiser; 0 where the L1 penalty is used
    gamma: float = 0.5  # NFL's focal exponent (JAL-FL)


# tests/test_configs.py checks each against what the Hydra configs compose for the dataset
PAPER_VALUES = {
    "cifar10": PaperValues(10, alpha=1.0, beta=1.0, a=30.0, l1=5e-5, weight_decay=0.0),
    "cifar100": PaperValues(100, alpha=5.0, beta=1.0, a=20.0, l1=5e-6, weight_decay=0.0),
    "webvision": PaperValues(50, alpha=50.0, beta=1.0, a=30.0, l1=0.0, weight_decay=3e-5),
    "clothing1m": PaperValues(14, alpha=5.0, beta=0.1, a=5.0, l1=0.0, weight_decay=1e-3),
}


def paper_values(dataset: str) -> PaperValues:
    """JAL-CE's and JAL-FL's values on one of the paper's datasets: cifar10, cifar100, webvision, clothing1m."""
    if dataset not in PAPER_VALUES:
        raise ValueError(f"the paper trains JAL on {', '.join(PAPER_VALUES)}, not {dataset!r}: on your own data "
                         f"give JALCE(num_classes, alpha, beta, a) yours")
    return PAPER_VALUES[dataset]
