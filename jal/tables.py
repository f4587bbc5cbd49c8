"""Results tables: our runs beside the published figures.

Every training run writes <run_dir>/result.json. This module averages the last-epoch test accuracy over
seeds for each (dataset, noise setting, loss) cell and lays the cells out as in the paper, rows = losses
and columns = noise settings, with the published figure and our difference beside each of ours:

    python -m jal.tables outputs/ multirun/ --out results/ [--published PATH] [--expect-seeds 3]

writes results/table.md (the fidelity score, then one table per dataset, failed and missing runs listed
under it), results/table.csv (one row per cell) and results/fidelity.json (the fidelity score: how closely
our cells follow the published figures, see fidelity()). The published figures are read from
results/published_results.csv.
"""

import argparse
import csv
import io
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from jal.util import REPO_ROOT, atomic_write_text

DEFAULT_PUBLISHED = REPO_ROOT / "results" / "published_results.csv"

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

# Which published figure goes beside a cell: the first of these sources that has it. Each source covers
# one kind of noise, so one list serves all columns; the JAL paper's ablation table is the only source of
# its rows (NCE, AMSE and AGCE+MAE alone), and anl2023's two cells are also in sources listed before it.
# Marks are the compact per-cell source tags used in table.md.
SOURCE_PRIORITY = ["jal2025_main", "jal2025_idn", "jal2025_cifarn",
                   "epssoftmax2024_main", "epssoftmax2024_idn", "epssoftmax2024_cifarn", "jal2025_ablation", "anl2023"]
SOURCE_MARKS = {"jal2025_main": "", "jal2025_idn": "", "jal2025_cifarn": "",
                "epssoftmax2024_main": "†", "epssoftmax2024_idn": "†", "epssoftmax2024_cifarn": "‡",
                "jal2025_ablation": "§", "anl2023": "¶"}
SOURCE_NOTES = {
    "jal2025_main": "JAL paper, main table", "jal2025_idn": "JAL paper, instance-dependent noise table",
    "jal2025_cifarn": "JAL paper, CIFAR-N table, epoch not stated",
    "epssoftmax2024_main": "ε-Softmax paper, NeurIPS 2024, same authors and protocol: main table",
    "epssoftmax2024_idn": "ε-Softmax paper: instance-dependent noise table",
    "epssoftmax2024_cifarn": "ε-Softmax paper: CIFAR-N table, best epoch over 5 runs, not last epoch over 3",
    "jal2025_ablation": "JAL paper, ablation table", "anl2023": "Active Negative Loss paper, NeurIPS 2023",
}
# Losses whose published figure may not measure the loss we train: marked * beside the figure, explained
# under the table.
PUBLISHED_CAVEATS = {
    "nlnl": ("NLNL: ours is negative learning alone (the NL stage, as the reference's NLNL class computes it); "
             "the published figure may come from the original three-stage method (NL, selective NL, selective PL)"),
}

CSV_COLUMNS = ["dataset", "loss", "loss_label", "noise_type", "noise_rate", "noise_labels", "mean", "std",
               "runs", "failed", "published", "published_std", "published_source", "difference"]


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


NOISE_GAP = 0.01  # a realised noise rate further than this from the one asked is marked (1 pp)
NOISE_MARK = "ⁿ"


def asked_noise_rate(record):
    """The share of training labels the asked noise changes (None: human noise asks no rate): the rate for
    symmetric and instance-dependent noise; for asymmetric noise the rate times the share of classes that
    have a flip (half of CIFAR-10's: 0.4 asks 0.2), the classes being balanced as CIFAR's and our subsets are."""
    kind, rate = record.get("noise_type"), float(record.get("noise_rate") or 0.0)
    if kind in ("none", "clean"):
        return 0.0
    if kind in ("symmetric", "instance"):
        return rate
    if kind == "asymmetric" and record.get("noise_transition"):
        from jal.noise import asymmetric_mapping

        classes = len(record["noise_transition"])
        try:
            return rate * len(asymmetric_mapping(classes)) / classes
        except ValueError:  # no mapping for this many classes
            return None
    return None


def noise_gap(record):
    """(realised, asked) when a run's realised noise rate is more than NOISE_GAP from the asked one, else None.
    E.g. symmetric 0.4 on 200 images per class changes 36%: `exact` sampling flips int(0.4/9 x 200) = 8, not
    8.9, images of each class to each other class."""
    realised, asked = record.get("realised_noise_rate"), asked_noise_rate(record)
    if realised is None or asked is None or abs(float(realised) - asked) <= NOISE_GAP + 1e-9:
        return None
    return float(realised), asked


def record_cell(record):
    """The (dataset, column, loss) cell a training record belongs to. Runs with settings beyond their cell
    (a sweep of loss.passive.a) are other experiments: their loss reads `jal_ce [loss.passive.a=30]`."""
    dataset = DATASET_ALIASES.get(record["dataset"], record["dataset"])
    column = noise_column(record["noise_type"], record.get("noise_rate") or 0.0, record.get("noise_labels"))
    settings = record.get("settings")
    return dataset, column, record["loss"] + (f" [{settings}]" if settings else "")


def protocol(record):
    """What a finished record's accuracy measures: (epochs, training subset, test subset), None = the whole set.
    Runs of two protocols (the quick preset's 12 epochs on 10,000 images, the paper's 120 on all 50,000) must not
    share a cell or a figure. Precision is not part of it: bf16 and fp32 runs of one protocol agree
    (results/precision/), and the table says which cells mix them."""
    dataset = (record.get("config") or {}).get("dataset") or {}
    return record.get("epochs"), record.get("subset", dataset.get("subset")), dataset.get("test_subset")


def protocol_label(key):
    epochs, subset, test_subset = key
    label = f"{epochs} epochs on " + ("the whole training set" if subset is None else f"{subset:,} training images")
    return label + ("" if test_subset is None else f", {test_subset:,} test images")


def one_protocol(records):
    """{dataset: protocol} of the finished records; a one-line SystemExit naming the protocols and where their
    records lie when one dataset's runs hold two. (Paused and failed records carry no subset: not counted.)"""
    found = defaultdict(lambda: defaultdict(list))  # dataset -> protocol -> the sweep directories of its runs
    for record in records:
        if record.get("status") == "finished":
            run_dir = record["run_dir"]  # a sweep's runs lie in <sweep>/<dataset>/<noise>/<loss>/seed<seed>
            cut = run_dir.rfind(f"/{record['dataset']}/")
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


def load_records(dirs):
    """Every result.json under the given directories (recursively), each dict with run_dir added."""
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    records, seen = [], set()
    for directory in map(Path, dirs):
        if not directory.is_dir():
            raise SystemExit(f"jal.tables: {directory} is not a directory")
        paths = sorted(directory.rglob("result.json"))
        if not paths:
            raise SystemExit(f"jal.tables: no result.json under {directory} "
                             "(each training run writes <run_dir>/result.json)")
        for path in paths:
            if path.resolve() in seen:  # overlapping directories given
                continue
            seen.add(path.resolve())
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                print(f"jal.tables: skipping unreadable {path}: {error}", file=sys.stderr)
                continue
            if not isinstance(record, dict) or not {"dataset", "loss", "noise_type"} <= record.keys():
                print(f"jal.tables: skipping {path}: no dataset/loss/noise_type", file=sys.stderr)
                continue
            record["run_dir"] = str(path.parent)
            record["result_mtime"] = path.stat().st_mtime  # to keep the newest of two runs of one seed
            records.append(record)
    return records


def load_published(path=None):
    """The published figures: one dict per row of the CSV, mean/std as floats (std None when not given)."""
    path = Path(path) if path is not None else DEFAULT_PUBLISHED
    if not path.is_file():
        raise SystemExit(f"jal.tables: published figures not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["mean"] = float(row["mean"])
        row["std"] = float(row["std"]) if row["std"] else None
        if row["noise_type"] != "human":  # human rows name their label set in noise_rate
            row["noise_rate"] = float(row["noise_rate"])
        row.setdefault("loss", "")
    return rows


def pick_published(published, dataset, column, loss):
    """The published row to put beside our (dataset, column, loss) cell, by SOURCE_PRIORITY; None if none."""
    candidates = []
    for row in published:
        if row.get("loss") != loss or row["source"] not in SOURCE_PRIORITY:
            continue
        human = row["noise_type"] == "human"
        row_column = noise_column(row["noise_type"], None if human else row["noise_rate"],
                                  row["noise_rate"] if human else None)
        if DATASET_ALIASES.get(row["dataset"], row["dataset"]) == dataset and row_column == column:
            candidates.append(row)
    return min(candidates, key=lambda row: SOURCE_PRIORITY.index(row["source"]), default=None)


def summarise(records, expect_seeds=3, published=None, expect_clean_seeds=None):
    """One row per (dataset, noise column, loss) cell: mean/std of last_test_acc over seeds, published figure.

    `expect_seeds` runs are expected per cell; `expect_clean_seeds` (default: the same) in the clean column,
    which a CPU-sized sweep runs with one seed.

    A cell also appears with runs = 0 when its loss was run at other noise settings of the dataset and
    its noise setting for other losses, but not this combination. Rows carry `issues`, human-readable
    lines about failed, missing or duplicated runs.
    """
    published = load_published() if published is None else published
    cells = defaultdict(list)
    for record in records:
        cells[record_cell(record)].append(record)
    present = list(cells)
    for dataset in {d for d, _, _ in present}:
        columns = {c for d, c, _ in present if d == dataset}
        losses = {loss for d, _, loss in present if d == dataset}
        for column in columns:
            for loss in losses:
                cells.setdefault((dataset, column, loss), [])

    rows = []
    for key in sorted(cells, key=cell_sort_key):
        dataset, column, loss = key
        issues = []
        finished_by_seed, unfinished = defaultdict(list), []
        for record in cells[key]:
            if record.get("status") == "finished" and record.get("last_test_acc") is not None:
                finished_by_seed[record.get("seed")].append(record)
            else:
                unfinished.append(record)
        finished = []
        for seed, runs in sorted(finished_by_seed.items(), key=lambda item: str(item[0])):
            runs.sort(key=lambda r: r["result_mtime"])
            finished.append(runs[-1])  # a rerun of a seed replaces the older run rather than counting twice
            if len(runs) > 1:
                newest = runs[-1]["run_dir"]
                issues.append(f"seed {seed}: {len(runs)} finished runs, kept the newest ({newest})")
        # a failed seed that later finished is not a failure of the cell; a paused run (trainer.stop_at, a stop
        # signal) is one still to finish: missing, not failed
        unfinished = [r for r in unfinished if r.get("seed") not in finished_by_seed]
        failed = [r for r in unfinished if r.get("status") != "paused"]
        for record in unfinished:
            if record.get("status") == "paused":
                issues.append(f"paused (seed {record.get('seed')}) after epoch {record.get('epoch')} of "
                              f"{record.get('epochs')}: {record['run_dir']}; run the same command again to continue")
        for record in failed:
            error = str(record.get("error") or f"status {record.get('status')}, no last_test_acc").strip()
            error = error.splitlines()[-1] if error else ""  # the last line of a traceback says what broke
            issues.append(f"failed (seed {record.get('seed')}): {record['run_dir']}: {error[:200]}")
        accuracies = np.array([float(r["last_test_acc"]) for r in finished])
        expected = expect_seeds if column[0] != "none" or expect_clean_seeds is None else expect_clean_seeds
        if len(finished) == 0 and not unfinished:
            issues.insert(0, "no runs")
        elif len(finished) < expected:
            seeds = ", ".join(str(r.get("seed")) for r in finished)
            issues.insert(0, f"{len(finished)}/{expected} runs finished"
                          + (f" (seeds {seeds})" if seeds else ""))
        epochs = sorted({r.get("epochs") for r in finished}, key=str)
        subsets = sorted({r.get("subset") for r in finished}, key=str)
        if len(epochs) > 1 or len(subsets) > 1:
            issues.append(f"runs differ in epochs {epochs} or subset {subsets}")
        precisions = sorted({r.get("precision") or "unrecorded" for r in finished})
        if len(precisions) > 1:  # bf16 and fp32 runs averaged into one cell: say which seeds are which
            seeds = {p: ", ".join(str(r.get("seed")) for r in finished if (r.get("precision") or "unrecorded") == p)
                     for p in precisions}
            issues.append("runs differ in precision: " + "; ".join(f"{p} (seeds {seeds[p]})" for p in precisions))

        gaps = [(r.get("seed"), gap) for r in finished if (gap := noise_gap(r))]
        if gaps:
            issues.append("realised noise rate off the one asked by more than 1 pp: " + "; ".join(
                f"seed {seed} {realised:.1%} of labels changed, {asked:.1%} asked" for seed, (realised, asked) in gaps))
        noise_type, rate, labels = column
        if noise_type == "human":  # report the measured rate of the label set
            realised = [r.get("realised_noise_rate", r.get("noise_rate")) for r in finished]
            realised = [float(x) for x in realised if x is not None]
            rate = round(float(np.mean(realised)), 4) if realised else None
        mean = float(accuracies.mean()) if len(accuracies) else None
        std = float(accuracies.std(ddof=1)) if len(accuracies) > 1 else None
        reference = pick_published(published, dataset, column, loss)
        rows.append({
            "dataset": dataset, "loss": loss, "loss_label": loss_label(loss),
            "noise_type": noise_type, "noise_rate": rate, "noise_labels": labels,
            "mean": mean, "std": std, "runs": len(finished), "failed": len(failed),
            "missing": max(0, expected - len(finished)),
            "published": reference["mean"] if reference else None,
            "published_std": reference["std"] if reference else None,
            "published_source": reference["source"] if reference else None,
            "difference": mean - reference["mean"] if reference and mean is not None else None,
            "column": column, "header": column_header(column),
            "seeds": [r.get("seed") for r in finished], "epochs": epochs, "subsets": subsets,
            "precisions": precisions, "noise_gap": bool(gaps),
            "issues": issues,
        })
    return rows


def kendall_tau_b(x, y):
    """Kendall's tau-b of two equal-length sequences (ties in either count as neither concordant nor
    discordant and shrink the denominator); None with fewer than 2 items or when either is all ties."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    upper = np.triu_indices(len(x), k=1)  # every unordered pair once
    sx = np.sign(x[:, None] - x[None, :])[upper]
    sy = np.sign(y[:, None] - y[None, :])[upper]
    denominator = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float(np.sum(sx * sy) / denominator) if denominator else None


def within(difference, bound):
    return abs(difference) <= bound + 1e-9  # inclusive; the tolerance absorbs float rounding of ours − published


def fidelity(rows):
    """How closely our cells follow the published figures, per column and over the whole table.

    A cell is compared when it has both our mean and a published figure. Per (dataset, noise column) with
    at least one published figure: `tau`, Kendall's tau-b between our ranking of the losses and the
    published one over the compared cells (None with fewer than 2, or when either side is all ties);
    `within_1pp`, compared cells with |ours − published| <= 1 pp; `within_2std`, those within 2 published
    std, out of `with_std` compared cells whose published std is known; `mean_abs_difference` in pp.

    Whole table: the counts and the mean absolute difference pool every compared cell. Its tau is the mean
    of the columns' taus weighted by their number of loss pairs, n(n − 1)/2: without ties that is exactly
    Kendall's tau over all pairs of losses compared within the same column. Pooling the cells of all
    columns into one ranking is not used: it would mostly measure that accuracy falls as noise grows,
    not whether the losses come in the published order.
    """
    columns, all_differences = [], []
    for dataset in sorted({r["dataset"] for r in rows}, key=dataset_sort_key):
        here = [r for r in rows if r["dataset"] == dataset]
        for column in sorted({r["column"] for r in here}, key=column_sort_key):
            cells = [r for r in here if r["column"] == column and r["published"] is not None]
            if not cells:
                continue
            compared = [r for r in cells if r["mean"] is not None]
            differences = [r["mean"] - r["published"] for r in compared]
            with_std = [r for r in compared if r["published_std"] is not None]
            all_differences += differences
            columns.append({
                "dataset": dataset, "column": column_header(column), "noise_type": column[0],
                "noise_rate": column[1], "noise_labels": column[2],
                "published": len(cells), "compared": len(compared),
                "losses": [r["loss"] for r in compared],
                "tau": kendall_tau_b([r["mean"] for r in compared], [r["published"] for r in compared]),
                "within_1pp": sum(within(d, 1.0) for d in differences),
                "within_2std": sum(within(r["mean"] - r["published"], 2 * r["published_std"]) for r in with_std),
                "with_std": len(with_std),
                "mean_abs_difference": float(np.mean(np.abs(differences))) if differences else None,
            })
    ranked = [c for c in columns if c["tau"] is not None]
    pairs = [c["compared"] * (c["compared"] - 1) / 2 for c in ranked]
    table = {
        "columns": len(columns), "ranked_columns": len(ranked),
        "published": sum(c["published"] for c in columns), "compared": len(all_differences),
        "tau": float(np.average([c["tau"] for c in ranked], weights=pairs)) if ranked else None,
        "within_1pp": sum(c["within_1pp"] for c in columns),
        "within_2std": sum(c["within_2std"] for c in columns),
        "with_std": sum(c["with_std"] for c in columns),
        "mean_abs_difference": float(np.mean(np.abs(all_differences))) if all_differences else None,
    }
    return {"table": table, "columns": columns}


def render_fidelity(score):
    """The fidelity block at the top of table.md: whole-table figures, then one line per column."""
    def number(value, digits=2):
        return "n/a" if value is None else f"{value:.{digits}f}".replace("-", "−")

    def share(count, of):
        return f"{count}/{of}" if of else "n/a"

    t = score["table"]
    ranked = f"{t['ranked_columns']} column{'s' * (t['ranked_columns'] != 1)}"
    lines = ["## Fidelity to the published figures", ""]
    if not score["columns"]:
        return "\n".join(lines + ["No cell has a published figure: no fidelity score.", ""])
    lines += [
        (f"Whole table: {t['compared']} of {t['published']} cells with a published figure have ours, in "
         f"{t['columns']} columns. Kendall's τ {number(t['tau'])} (over the {ranked} with a τ); "
         f"within 1 pp: {share(t['within_1pp'], t['compared'])}; within 2 published std: "
         f"{share(t['within_2std'], t['with_std'])}; mean |ours − published| "
         f"{number(t['mean_abs_difference'])} pp."), "",
        ("Cells: ours / with a published figure. τ: Kendall's tau-b between our ranking of the losses and the "
         "published one in a column (n/a under 2 losses); whole-table τ: the columns' τ weighted by their "
         "number of loss pairs. Within 2 std counts only cells whose published std is known. Details in "
         "fidelity.json."), "",
        "| Dataset | Column | Cells | τ | Within 1 pp | Within 2 std | Mean abs. diff. (pp) |",
        "|---|---|---|---|---|---|---|"]
    for c in score["columns"]:
        lines.append(f"| {DATASET_LABELS.get(c['dataset'], c['dataset'])} | {c['column']} | "
                     f"{share(c['compared'], c['published'])} | {number(c['tau'])} | "
                     f"{share(c['within_1pp'], c['compared'])} | {share(c['within_2std'], c['with_std'])} | "
                     f"{number(c['mean_abs_difference'])} |")
    return "\n".join(lines + [""])


# The paper's findings that a table can test, as ordered pairs of cells: (dataset, noise column, the loss that
# should be better, the loss it should beat, by at least this many pp (None: strictly better), whether the
# difference must also exceed twice the larger std over seeds). The CPU-sized table's criteria (CALIBRATION.md);
# the paper's own gaps are far larger (CE 19.74 vs JAL-CE 65.43 at symmetric 0.8).
PAPER_FINDINGS = [
    ("cifar10", ("symmetric", 0.8, None), "jal_ce", "ce", 5.0, True),
    ("cifar10", ("symmetric", 0.8, None), "nce_rce", "ce", None, True),
    ("cifar10", ("asymmetric", 0.4, None), "jal_ce", "ce", 0.0, False),
]


def findings(rows, claims=None):
    """Each finding whose two cells have runs: our difference (better − worse), twice the larger std, the
    published difference, and whether it holds (None: it needs two seeds of each to judge the std)."""
    claims = PAPER_FINDINGS if claims is None else claims
    cell = {(r["dataset"], r["column"], r["loss"]): r for r in rows}
    checked = []
    for dataset, column, better, worse, margin, significant in claims:
        a, b = cell.get((dataset, column, better)), cell.get((dataset, column, worse))
        if a is None or b is None or a["mean"] is None or b["mean"] is None:
            continue
        difference = a["mean"] - b["mean"]
        noise = 2 * max(a["std"], b["std"]) if a["std"] is not None and b["std"] is not None else None
        holds = difference > 0 if margin is None else difference >= margin
        if significant:
            holds = None if noise is None else bool(holds and difference > noise)
        published = (a["published"] - b["published"]
                     if a["published"] is not None and b["published"] is not None else None)
        relation = (f"> {loss_label(worse)}" if margin is None else
                    f"≥ {loss_label(worse)}" + (f" + {margin:g} pp" if margin else ""))
        checked.append({
            "finding": f"{DATASET_LABELS.get(dataset, dataset)} {column_header(column)}: {loss_label(better)} "
                       f"{relation}" + (", by more than 2 × the larger std" if significant else ""),
            "difference": difference, "twice_larger_std": noise, "published_difference": published,
            "runs": [a["runs"], b["runs"]], "holds": holds})
    return checked


def render_findings(checked):
    lines = ["## The paper's findings in our cells", "",
             "| Finding | Ours: difference (2 × larger std) | Published difference | Holds |", "|---|---|---|---|"]
    signed = lambda x: f"{x:+.2f}".replace("-", "−")  # noqa: E731
    for f in checked:
        noise = f" ({f['twice_larger_std']:.2f})" if f["twice_larger_std"] is not None else ""
        published = "—" if f["published_difference"] is None else signed(f["published_difference"])
        holds = {True: "yes", False: "**no**", None: "not yet: needs 2+ seeds of each"}[f["holds"]]
        lines.append(f"| {f['finding']} | {signed(f['difference'])}{noise} | {published} | {holds} |")
    return "\n".join(lines) + "\n"


def render_markdown(rows, with_fidelity=True):
    """table.md: the fidelity score (unless with_fidelity=False), then one table per dataset, best mean per
    column in bold, issues listed under the table."""
    lines = ["# Last-epoch test accuracy (%)", "",
             ("Each cell: ours, mean ± std over seeds (unbiased; no std with one run), then "
              "(published figure, ours − published). Best of ours per column in **bold**; "
              "— = no finished run."), ""]
    if with_fidelity:
        lines += [render_fidelity(fidelity(rows))]
        if checked := findings(rows):
            lines += [render_findings(checked)]
    for dataset in sorted({r["dataset"] for r in rows}, key=dataset_sort_key):
        table = [r for r in rows if r["dataset"] == dataset]
        columns = sorted({r["column"] for r in table}, key=column_sort_key)
        losses = sorted({r["loss"] for r in table}, key=loss_sort_key)
        cell = {(r["loss"], r["column"]): r for r in table}
        best = {c: max((r["mean"] for r in table if r["column"] == c and r["mean"] is not None), default=None)
                for c in columns}
        runs = sum(r["runs"] for r in table)
        failed = sum(r["failed"] for r in table)
        epochs = sorted({e for r in table for e in r["epochs"]}, key=str)
        subsets = sorted({s for r in table for s in r["subsets"]}, key=str)
        subsets = ", ".join("full" if s is None else str(s) for s in subsets) or "—"
        precisions = sorted({p for r in table for p in r["precisions"]})
        mixed = [f"{r['loss_label']} {r['header']}" for r in table if len(r["precisions"]) > 1]
        precision = ", ".join(precisions) or "—"
        if mixed:
            precision += f" (mixed within {len(mixed)} cell{'s' * (len(mixed) != 1)}: {'; '.join(mixed)})"
        lines += [f"## {DATASET_LABELS.get(dataset, dataset)}", "",
                  (f"{runs} finished runs, {failed} failed; epochs: {', '.join(map(str, epochs)) or '—'}; "
                   f"training subset: {subsets}; precision: {precision}."), "",
                  "| Loss | " + " | ".join(column_header(c) for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for loss in losses:
            texts = []
            for column in columns:
                r = cell.get((loss, column))
                if r is None or r["mean"] is None:
                    text = "—"
                else:
                    text = f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "")
                    if best[column] is not None and r["mean"] == best[column]:
                        text = f"**{text}**"
                    if r.get("noise_gap"):
                        text += NOISE_MARK
                if r is not None and r["published"] is not None:
                    mark = SOURCE_MARKS[r["published_source"]] + ("*" if loss in PUBLISHED_CAVEATS else "")
                    if r["difference"] is None:
                        text += f" ({r['published']:.2f}{mark})"
                    else:
                        text += f" ({r['published']:.2f}{mark}, {r['difference']:+.2f})".replace("-", "−")
                texts.append(text)
            lines.append(f"| {loss_label(loss)} | " + " | ".join(texts) + " |")
        sources = {r["published_source"] for r in table if r["published_source"]}
        sources = sorted(sources, key=SOURCE_PRIORITY.index)
        if sources:
            marks = list(dict.fromkeys(SOURCE_MARKS[s] for s in sources))
            lines += ["", "Published figures: " + "; ".join(
                f"{mark or 'unmarked'} = " + ", ".join(f"{s} ({SOURCE_NOTES[s]})" for s in sources
                                                       if SOURCE_MARKS[s] == mark) for mark in marks) + "."]
        caveats = sorted({r["loss"] for r in table if r["published"] is not None} & set(PUBLISHED_CAVEATS))
        if caveats:
            lines += [""] + [f"\\* {PUBLISHED_CAVEATS[loss]}." for loss in caveats]
        if any(r.get("noise_gap") for r in table):
            lines += ["", f"{NOISE_MARK} The realised noise rate of a run of this cell is more than 1 pp off the one "
                          "asked (listed under Runs to check): the cell measures another noise level than its "
                          "column's."]
        issues = [f"- {r['loss_label']}, {r['header']}: {issue}" for r in table for issue in r["issues"]]
        lines += ["", "Runs to check:" if issues else "All cells complete.", *issues, ""]
    return "\n".join(lines)


def write_tables(rows, out_dir):
    """Writes table.md, table.csv and fidelity.json; returns the fidelity score."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "table.md", render_markdown(rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {k: round(row[k], 4) if isinstance(row[k], float) else row[k] for k in CSV_COLUMNS}
        writer.writerow({k: "" if v is None else v for k, v in values.items()})
    atomic_write_text(out_dir / "table.csv", buffer.getvalue())
    score = fidelity(rows)
    atomic_write_text(out_dir / "fidelity.json", json.dumps({**score, "findings": findings(rows)}, indent=1) + "\n")
    return score


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jal.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", help="directories searched recursively for result.json")
    parser.add_argument("--out", required=True, help="directory to write table.md, table.csv, fidelity.json into")
    parser.add_argument("--published", default=None,
                        help=f"published figures CSV (default {DEFAULT_PUBLISHED})")
    parser.add_argument("--expect-seeds", type=int, default=3, help="runs expected per cell (default 3)")
    parser.add_argument("--expect-clean-seeds", type=int, default=None,
                        help="runs expected per cell of the clean column (default: --expect-seeds)")
    args = parser.parse_args(argv)
    records = load_records(args.records)
    if not records:
        raise SystemExit("jal.tables: no readable result.json records")
    rows = summarise(records, expect_seeds=args.expect_seeds, published=load_published(args.published),
                     expect_clean_seeds=args.expect_clean_seeds)
    t = write_tables(rows, args.out)["table"]
    incomplete = sum(1 for r in rows if r["issues"])
    tau = "n/a" if t["tau"] is None else f"{t['tau']:.2f}"
    print(f"jal.tables: {len(records)} records -> {len(rows)} cells ({incomplete} with issues); "
          f"fidelity: tau {tau}, {t['within_1pp']}/{t['compared']} within 1 pp; "
          f"wrote table.md, table.csv and fidelity.json to {args.out}")


if __name__ == "__main__":
    main()
