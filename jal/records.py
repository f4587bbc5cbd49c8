"""Training records placed in tables: the records of some directories (jal.record.scan, as Records), the table
cell each belongs to (dataset, noise column, loss), the protocol its accuracy measures, and the names and order
the tables give datasets, columns and losses.
"""

import os
import re
import sys
from collections import defaultdict
from pathlib import Path

from jal import record as records
from jal.record import Record, Status
from jal.util import REPO_ROOT

# config name -> the paper's name; loss_label() falls back to "NCE+NEW" style for names not listed here
LOSS_LABELS = {
    "ce": "CE", "fl": "FL", "mae": "MAE", "mse": "MSE", "gce": "GCE", "rce": "RCE", "sce": "SCE",
    "nce": "NCE", "nfl": "NFL", "aul": "AUL", "agce": "AGCE", "ael": "AEL", "nnce": "NNCE", "nnfl": "NNFL",
    "amse": "AMSE", "nce_rce": "NCE+RCE", "nce_mae": "NCE+MAE", "nfl_rce": "NFL+RCE", "nfl_mae": "NFL+MAE",
    "nce_agce": "NCE+AGCE", "nce_aul": "NCE+AUL", "nce_ael": "NCE+AEL", "anl_ce": "ANL-CE",
    "anl_fl": "ANL-FL", "jal_ce": "JAL-CE", "jal_fl": "JAL-FL", "ldr_kl": "LDR-KL", "ce_lc": "CE+LC",
    "ce_eps_mae": "CE_ε+MAE", "fl_eps_mae": "FL_ε+MAE", "nlnl": "NLNL", "agce_mae": "AGCE+MAE",
}
# the paper's row order; losses not listed follow (those in LOSS_LABELS first, then alphabetically)
LOSS_ORDER = ["ce", "fl", "gce", "nlnl", "sce", "nce_rce", "nfl_rce", "nce_mae", "nfl_mae", "nce_agce", "nce_aul",
              "nce_ael", "ldr_kl", "ce_lc", "ce_eps_mae", "fl_eps_mae", "anl_ce", "anl_fl", "jal_ce", "jal_fl",
              "nce", "amse", "agce_mae"]  # the last three: the JAL paper's ablation
LOSS_ORDER += [name for name in LOSS_LABELS if name not in LOSS_ORDER]

DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "synthetic": "Synthetic"}
# the published CIFAR-N rows say cifar10n/cifar100n; our records say cifar10/cifar100 with human noise
DATASET_ALIASES = {"cifar10n": "cifar10", "cifar100n": "cifar100"}
NOISE_ORDER = ["none", "symmetric", "asymmetric", "instance", "human"]
NOISE_SHORT = {"symmetric": "Sym", "asymmetric": "Asym", "instance": "IDN", "human": "Human"}
HUMAN_LABEL_ORDER = ["aggre", "rand1", "rand2", "rand3", "worst", "noisy"]


def loss_label(loss):
    """JAL-CE; a run with settings beyond its cell keeps them beside the name: JAL-CE [loss.passive.a=30]."""
    loss, _, settings = loss.partition(" ")
    return LOSS_LABELS.get(loss, loss.upper().replace("_", "+")) + (f" {settings}" if settings else "")


def noise_column(noise_type, noise_rate=0.0, noise_labels=None):
    """The table column a run or a published figure belongs to, as (noise_type, rate, labels)."""
    if noise_type == "human":
        return ("human", None, noise_labels)  # the label set names the column; its rate is a measurement
    if noise_type in ("none", "clean") or not noise_rate:
        return ("none", 0.0, None)
    return (noise_type, round(float(noise_rate), 4), None)


def record_cell(record: Record):
    """The (dataset, column, loss) cell a training record belongs to. Runs with settings beyond their cell
    (a sweep of loss.passive.a) are other experiments: their loss reads `jal_ce [loss.passive.a=30]`."""
    dataset = DATASET_ALIASES.get(record.dataset, record.dataset)
    column = noise_column(record.noise_type, record.noise_rate or 0.0, record.noise_labels)
    return dataset, column, record.loss + (f" [{record.settings}]" if record.settings else "")


def protocol(record: Record):
    """What a finished record's accuracy measures: (epochs, training subset, test subset), None = the whole set.
    Runs of two protocols (the quick preset's 12 epochs on 10,000 images, the paper's 120 on all 50,000) must not
    share a cell or a figure. Precision is not part of it: bf16 and fp32 runs of one protocol agree
    (results/precision/), and the table says which cells mix them."""
    dataset = (record.config or {}).get("dataset") or {}
    finished = record.status == Status.FINISHED  # a finished record says its subset, None for the whole set
    subset = record.subset if finished or record.subset is not None else dataset.get("subset")
    return record.epochs, subset, dataset.get("test_subset")


def protocol_label(key):
    """What a protocol is, training and test set both named: `12 epochs on 10,000 training images, tested on the
    whole test set`."""
    epochs, subset, test_subset = key
    train = "the whole training set" if subset is None else f"{subset:,} training images"
    test = "the whole test set" if test_subset is None else f"{test_subset:,} test images"
    return f"{epochs} epoch{'s' * (epochs != 1)} on {train}, tested on {test}"


MIXED = "mixed"  # the protocol of a table cell whose finished runs hold several (jal.tables.summarise)


def protocol_name(key):
    """A table row's protocol in words: protocol_label, or what a cell of MIXED or of no (None) protocol is."""
    if key == MIXED:
        return "cells pooling runs of several protocols"
    return "no finished run" if key is None else protocol_label(key)


# Hydra's override_dirname joins a run's settings beyond its cell as key=value,key=value (a value may hold commas:
# a list); records keep it as `settings`, and record_cell() shows it beside the loss: `jal_ce [loss.passive.a=30]`
SETTING = re.compile(r"([^=,\[\]]+)=((?:\[[^\]]*\]|[^,])*)")


def settings_of(loss):
    """The settings of a table row's loss: `loss.passive.a=30` of `jal_ce [loss.passive.a=30]`, "" of `jal_ce`."""
    settings = loss.partition(" ")[2]
    return settings[1:-1] if settings.startswith("[") else settings


def split_settings(settings):
    """[(key, value), ...] of a settings string such as `dataset.subset=500,trainer.epochs=1`."""
    return SETTING.findall(settings or "")


def short_loss_labels(losses):
    """Legend names that fit whatever settings a user's runs carry: ({loss: label}, shared). Settings every loss
    has with the same value are `shared` (`dataset.subset=500, trainer.epochs=1`, said once, beside the figure);
    each label keeps the loss's name and its other settings by their last key part (`JAL-CE a=30`), the whole key
    where two keys end alike."""
    settings = {loss: dict(split_settings(settings_of(loss))) for loss in losses}
    items = [set(s.items()) for s in settings.values()]
    shared = set.intersection(*items) if items else set()
    own = {loss: [(k, v) for k, v in s.items() if (k, v) not in shared] for loss, s in settings.items()}
    keys = {k for pairs in own.values() for k, _ in pairs}
    ends = defaultdict(set)
    for key in keys:
        ends[key.rsplit(".", 1)[-1]].add(key)
    short = {key: key.rsplit(".", 1)[-1] if len(ends[key.rsplit(".", 1)[-1]]) == 1 else key for key in keys}
    labels = {loss: " ".join([loss_label(loss.partition(" ")[0]), *(f"{short[k]}={v}" for k, v in own[loss])])
              for loss in losses}
    return labels, ", ".join(f"{k}={v}" for k, v in sorted(shared))


def one_protocol(found_records: list[Record]):
    """{dataset: protocol} of the finished records; a one-line SystemExit naming the protocols and where their
    records lie when one dataset's runs hold two. (Paused and failed records carry no subset: not counted.)"""
    found = defaultdict(lambda: defaultdict(list))  # dataset -> protocol -> the sweep directories of its runs
    for record in found_records:
        if record.status == Status.FINISHED:
            run_dir = str(record.run_dir)  # a sweep's runs lie in <sweep>/<dataset>/<noise>/<loss>/seed<seed>
            cut = run_dir.rfind(f"/{record.dataset}/")
            root = Path(run_dir[:cut] if cut > 0 else run_dir)
            found[record_cell(record)[0]][protocol(record)].append(
                str(root.relative_to(REPO_ROOT) if root.is_relative_to(REPO_ROOT) else root))
    mixed = {dataset: keys for dataset, keys in found.items() if len(keys) > 1}
    if mixed:
        def where(roots):
            roots = sorted(set(roots))
            return ", ".join(roots[:3]) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")

        by_size = lambda key: [float("inf") if v is None else v for v in key]  # None: the whole set
        listed = "; ".join(
            f"{DATASET_LABELS.get(dataset, dataset)}: "
            + ", ".join(f"{protocol_label(key)} ({len(keys[key])} runs in {where(keys[key])})"
                        for key in sorted(keys, key=by_size))
            for dataset, keys in sorted(mixed.items()))
        raise SystemExit(f"jal.tables: the records hold more than one protocol, which one cell or figure must not "
                         f"pool ({listed}); choose one protocol's records: JAL_RECORDS=DIR, make notebooks RECORDS=DIR")
    return {dataset: next(iter(keys)) for dataset, keys in found.items()}


def column_header(column):
    noise_type, rate, labels = column
    if noise_type == "none":
        return "Clean"
    if noise_type == "human":
        return f"Human {labels}"
    return f"{NOISE_SHORT.get(noise_type, noise_type)} {rate:g}"


def column_sort_key(column):
    noise_type, rate, labels = column
    kind = NOISE_ORDER.index(noise_type) if noise_type in NOISE_ORDER else len(NOISE_ORDER)
    label = HUMAN_LABEL_ORDER.index(labels) if labels in HUMAN_LABEL_ORDER else len(HUMAN_LABEL_ORDER)
    return (kind, noise_type, rate or 0.0, label, str(labels))


def loss_sort_key(loss):
    loss, _, settings = loss.partition(" ")
    return (LOSS_ORDER.index(loss), settings) if loss in LOSS_ORDER else (len(LOSS_ORDER), loss + settings)


def dataset_sort_key(dataset):
    names = list(DATASET_LABELS)
    return (names.index(dataset), "") if dataset in names else (len(names), dataset)


def cell_sort_key(cell):
    dataset, column, loss = cell
    return dataset_sort_key(dataset), loss_sort_key(loss), column_sort_key(column)


def load_records(dirs, who: str = "jal.tables") -> list[Record]:
    """Every record under the given directories (recursively, jal.record.scan) that names its cell; a directory
    that is missing or holds no result.json stops in one line, an unreadable or cell-less record is named and
    left out."""
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    for directory in map(Path, dirs):
        if not directory.is_dir():
            raise SystemExit(f"{who}: {directory} is not a directory")
        if not any(directory.rglob(records.RESULT)):
            raise SystemExit(f"{who}: no result.json under {directory} "
                             "(each training run writes <run_dir>/result.json)")
    found = []
    for r in records.scan(dirs, warn=lambda line: print(f"{who}: {line}", file=sys.stderr),
                          damaged="trainer.restart=true trains its run again", elsewhere="tabulate a copy"):
        if None in (r.dataset, r.loss, r.noise_type):
            print(f"{who}: skipping {r.run_dir / records.RESULT}: no dataset/loss/noise_type", file=sys.stderr)
            continue
        found.append(r)
    return found


def written_at(record: Record) -> float:
    """When its result.json was written (its file's mtime): of two runs of one seed, the newer one counts."""
    return (Path(record.run_dir) / records.RESULT).stat().st_mtime if record.run_dir else 0.0
