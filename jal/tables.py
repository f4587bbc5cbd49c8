"""Results tables: our runs beside the published figures.

Every training run writes <run_dir>/result.json. This module averages the last-epoch test accuracy over
seeds for each (dataset, noise setting, loss) cell and lays the cells out as in the paper, rows = losses
and columns = noise settings, with the published figure and our difference beside each of ours:

    python -m jal.tables outputs/ multirun/ --out results/ [--published PATH] [--expect-seeds 3]

writes results/table.md (the fidelity score, then one table per dataset, failed and missing runs listed
under it), results/table.csv (one row per cell) and results/fidelity.json (the fidelity score: how closely
our cells follow the published figures, see jal.fidelity). The published figures are read from
results/published_results.csv.
"""

import argparse
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from jal.fidelity import fidelity, findings, render_fidelity, render_findings
from jal.records import (
    DATASET_ALIASES,
    DATASET_LABELS,
    cell_sort_key,
    column_header,
    column_sort_key,
    dataset_sort_key,
    load_records,
    loss_label,
    loss_sort_key,
    noise_column,
    noise_gap,
    record_cell,
)
from jal.util import REPO_ROOT, atomic_write_text

DEFAULT_PUBLISHED = REPO_ROOT / "results" / "published_results.csv"

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

NOISE_MARK = "ⁿ"  # beside a cell with a run whose realised noise rate is off the asked one (records.noise_gap)


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
