"""A hyperparameter search: Hydra's Optuna sweeper (configs/hparams_search/) draws a loss's settings trial after
trial, each trial an ordinary run, and selects on the noisy validation split (dataset.val_fraction): the accuracy
on held-out training samples against their given labels, never the test set.

    python -m jal.train -m hparams_search=jal_ce dataset=cifar10 noise=symmetric noise.rate=0.4
    make tune DATASET=cifar10 LOSS=jal_ce TRIALS=20 OVERRIDES='noise=symmetric noise.rate=0.4'

Where a search writes: its folder is named as a run without the drawn settings would be, under the search's
out_root (`outputs/tune/cifar10/symmetric_0.4/jal_ce/seed123`, `${jal.search_dir:}`), each trial's directory
inside it by its drawn values (`loss.alpha=2.1,loss.beta=0.7,loss.passive.a=17.3`, `${jal.trial_dir:}`), and the
best trial's settings go to best_overrides.txt there, a line a `jal-train` command line takes.

Started again, the same search trains nothing new, without an Optuna storage: its sampler is seeded, so it draws
the same values from the same history, and every trial finished before is skipped and returns the figure its
record holds (jal.train.main), which is the history the first search saw. Asked for more trials, it replays the
finished ones and trains the rest. (A storage would instead add n_trials new trials to the study each time.)
Torch-free: the resolvers are registered whenever Hydra starts (hydra_plugins/jal_configs).
"""

from pathlib import Path
from types import SimpleNamespace

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from jal.config import ConfigError

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"  # Hydra's own: enumerates its jobs
BEST = "best_overrides.txt"


def is_search(hydra) -> bool:
    """Whether the sweeper of this Hydra node draws its jobs' values as it goes (Optuna, any sweeper but
    Hydra's basic one, which enumerates them up front)."""
    target = OmegaConf.select(hydra, "sweeper._target_")
    return target is not None and target != BASIC_SWEEPER


def drawn(hydra) -> dict[str, str]:
    """The settings the search draws, each with its range as written: hydra.sweeper.params' sweeps
    (`loss.alpha: tag(log, interval(0.5, 100.0))`); its plain values are fixed settings."""
    params = OmegaConf.select(hydra, "sweeper.params") or {}
    parser = OverridesParser.create()
    return {str(key): str(value) for key, value in params.items()
            if parser.parse_override(f"{key}={value}").is_sweep_override()}


def key_of(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def split_task(hydra) -> tuple[list[str], list[str]]:
    """A trial's command line (Hydra's task overrides) as (fixed settings, drawn settings)."""
    keys = drawn(hydra)
    task = list(hydra.overrides.task)
    return [o for o in task if key_of(o) not in keys], [o for o in task if key_of(o) in keys]


def search_dir(cfg, hydra) -> str:
    """The search's folder under out_root: the run name (jal.experiment.run_name) its trials would have without
    their drawn settings; the same for every trial and for the sweep itself."""
    from jal.experiment import run_name

    fixed, _ = split_task(hydra)
    without_drawn = SimpleNamespace(overrides=SimpleNamespace(task=fixed), runtime=hydra.runtime)
    return run_name(cfg, without_drawn)


def trial_dir(hydra) -> str:
    """A trial's directory in the search's folder: its drawn settings (trial_name); the sweep itself, which
    draws nothing, has none."""
    from jal.experiment import settings_name

    return settings_name(split_task(hydra)[1]) or "no_drawn_settings"


def trial_name(params: dict) -> str:
    """The directory of the trial that drew `params` ({key: value}), named as a run directory names its
    settings (sorted, one spelling per number: jal.experiment.settings_name)."""
    from jal.experiment import settings_name

    return settings_name([f"{key}={value}" for key, value in params.items()])


def _search_dir_resolver(*, _root_) -> str:
    from jal.experiment import hydra_node

    with hydra_node(_root_) as hydra:
        return search_dir(_root_, hydra)


def _trial_dir_resolver(*, _root_) -> str:
    from jal.experiment import hydra_node

    with hydra_node(_root_) as hydra:
        return trial_dir(hydra)


OmegaConf.register_new_resolver("jal.search_dir", _search_dir_resolver, replace=True)
OmegaConf.register_new_resolver("jal.trial_dir", _trial_dir_resolver, replace=True)


# ---------------------------------------------------------------------------------------------------
# What a search selects on


def val_fraction(cfg) -> float:
    """The share of the training set held out as the noisy validation split (0: none)."""
    return float(cfg.dataset.get("val_fraction") or 0.0)


def check_selects_on_validation(cfg) -> None:
    """A search without a validation split would pick its settings by their test accuracy: one line, and stop."""
    if not val_fraction(cfg):
        raise ConfigError("this search would select its settings on the test set: dataset.val_fraction is 0, no "
                          "validation split is held out; hold one out, e.g. dataset.val_fraction=0.1 (the "
                          "configs/hparams_search/ configs do), or sweep a grid with the basic sweeper instead")


def check_fixed(task: list[str]) -> None:
    """A search draws the settings its config's hydra.sweeper.params names; a sweep written on its command line
    (`noise.rate=0.2,0.4`, `loss.alpha=interval(1,10)`) would be drawn too, by Optuna, not enumerated: one line."""
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(task)):
        if override.is_sweep_override() and not override.is_hydra_override():
            raise ConfigError(f"{override.input_line}: a search draws only the settings under hydra.sweeper.params "
                              "(configs/hparams_search/); give this one a single value, and sweep it with a search "
                              "per value")


def objective(cfg, record) -> float | None:
    """What a run returns to its sweeper (jal.train.main): the last epoch's accuracy on the noisy validation
    split where one is held out, else its test accuracy; None when it did not finish."""
    return record.last_val_acc if val_fraction(cfg) else record.last_test_acc


# ---------------------------------------------------------------------------------------------------
# The best trial


def best_line(folder: Path, results: dict, trials: int, record) -> str:
    """The one line of a search's end, and best_overrides.txt written: the best trial's drawn settings (from the
    sweeper's optimization_results.yaml, `results`) as command-line overrides."""
    overrides = " ".join(f"{key}={value}" for key, value in results["best_params"].items())
    from jal.util import atomic_write_text

    atomic_write_text(folder / BEST, overrides + "\n")
    test = f", test accuracy {record.last_test_acc:.2f}%" if record is not None and record.last_test_acc else ""
    return (f"best of {trials} trials: validation accuracy {float(results['best_value']):.2f}% on its noisy labels"
            f"{test}, with {overrides} -> {folder / BEST}")
