"""Results tables: our runs beside the published figures.

Every training run writes <run_dir>/result.json. This module averages the last-epoch test accuracy over
seeds for each (dataset, noise setting, loss) cell and lays the cells out as in the paper, rows = losses
and columns = noise settings, with the published figure and our difference beside each of ours:

    python -m jal.tables outputs/ multirun/ --out results/ [--published PATH] [--expect-seeds 3]

writes results/table.md (the fidelity score, then one table per dataset and protocol, failed and missing runs
listed under it; each cell expects the seeds the records of its column have, or --expect-seeds),
results/table.csv (one row per cell) and results/fidelity.json (the fidelity score: how closely our cells
follow the published figures, see jal.fidelity). The published figures are read from
results/published_results.csv.
"""

import argparse
import csv
import functools
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from jal.fidelity import fidelity, findings, render_fidelity, render_findings
from jal.noise import noise_gap
from jal.record import Origin, Status, origin, provenance_line
from jal.records import (
    DATASET_ALIASES,
    DATASET_LABELS,
    MIXED,
    cell_sort_key,
    column_header,
    column_sort_key,
    dataset_sort_key,
    load_records,
    loss_label,
    loss_sort_key,
    noise_column,
    protocol,
    protocol_label,
    protocol_name,
    record_cell,
    settings_of,
    written_at,
)
from jal.util import CONFIG_DIR, REPO_ROOT, atomic_write_text

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

CSV_COLUMNS = ["dataset", "loss", "loss_label", "noise_type", "noise_rate", "noise_labels", "protocol", "mean", "std",
               "runs", "failed", "published", "published_std", "published_source", "difference"]

NOISE_MARK = "ⁿ"  # beside a cell with a run whose realised noise rate is off the asked one (jal.noise.noise_gap)
OTHER_PROTOCOL = "ᴾ"  # beside a published figure measured under another protocol than the cell's


@functools.cache
def published_protocol(dataset):
    """The protocol the published figures of a dataset measure: the paper's, the dataset config's epochs on the
    whole training and test sets (configs/dataset/<dataset>.yaml; docs/protocol.md); None without a config."""
    path = CONFIG_DIR / "dataset" / f"{dataset}.yaml"
    return (OmegaConf.load(path).epochs, None, None) if path.is_file() else None


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
    """The published row to put beside our (dataset, column, loss) cell, by SOURCE_PRIORITY; None if none. A row
    with settings beyond its cell (`jal_ce [loss.passive.a=30]`) gets its loss's figure."""
    loss = loss.partition(" ")[0]
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


def summarise(records, expect_seeds=None, published=None, expect_clean_seeds=None):
    """One row per (dataset, noise column, loss) cell of the records (jal.record.Record): mean/std of
    last_test_acc over seeds, published figure, and the finished records it averages (`records`).

    Each cell expects the seeds that the records of its sweep have: those of its dataset and settings, whatever
    their loss, noise column or status (a sweep asks every cell for the same seeds), the clean column apart (a
    CPU-sized sweep runs it with one seed). `expect_seeds` expects that many runs per cell instead, and
    `expect_clean_seeds` (default: the same) in the clean column.

    A cell also appears with runs = 0 when its loss was run at other noise settings of the dataset and
    its noise setting for other losses, but not this combination. Rows carry `issues`, human-readable
    lines about failed, missing or duplicated runs, and `protocol`, what their accuracy measures
    (records.protocol; MIXED when the cell's runs hold several; a cell without a finished run takes its row's).
    """
    published = load_published() if published is None else published
    cells, asked = defaultdict(list), defaultdict(set)
    for record in records:
        cell = record_cell(record)
        cells[cell].append(record)
        asked[cell[0], cell[1][0] == "none", record.settings or ""].add(record.seed)
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
            if record.status == Status.FINISHED and record.last_test_acc is not None:
                finished_by_seed[record.seed].append(record)
            else:
                unfinished.append(record)
        finished = []
        for seed, runs in sorted(finished_by_seed.items(), key=lambda item: str(item[0])):
            runs.sort(key=written_at)
            finished.append(runs[-1])  # a rerun of a seed replaces the older run rather than counting twice
            if len(runs) > 1:
                newest = runs[-1].run_dir
                issues.append(f"seed {seed}: {len(runs)} finished runs, kept the newest ({newest})")
        # a failed seed that later finished is not a failure of the cell; a paused run (trainer.stop_at, a stop
        # signal) is one still to finish: missing, not failed
        unfinished = [r for r in unfinished if r.seed not in finished_by_seed]
        failed = [r for r in unfinished if r.status != Status.PAUSED]
        for record in unfinished:
            if record.status == Status.PAUSED:
                issues.append(f"paused (seed {record.seed}) after epoch {record.epoch} of "
                              f"{record.epochs}: {record.run_dir}; run the same command again to continue")
        for record in failed:
            error = str(record.error or f"status {record.status}, no last_test_acc").strip()
            error = error.splitlines()[-1] if error else ""  # the last line of a traceback says what broke
            issues.append(f"failed (seed {record.seed}): {record.run_dir}: {error[:200]}")
        accuracies = np.array([float(r.last_test_acc) for r in finished])
        seeds_asked = None
        if column[0] == "none" and expect_clean_seeds is not None:
            expected, expected_from = expect_clean_seeds, "--expect-clean-seeds"
        elif expect_seeds is not None:
            expected, expected_from = expect_seeds, "--expect-seeds"
        else:
            expected_from = "records"
            seeds_asked = sorted(asked[dataset, column[0] == "none", settings_of(loss)], key=str)
            expected = len(seeds_asked)
        if len(finished) == 0 and not unfinished:
            issues.insert(0, "no runs")
        elif len(finished) < expected:
            seeds = ", ".join(str(r.seed) for r in finished)
            unrun = [str(s) for s in seeds_asked or [] if s not in {r.seed for r in cells[key]}]
            issues.insert(0, f"{len(finished)}/{expected} runs finished" + (f" (seeds {seeds})" if seeds else "")
                          + (f"; no run of seed{'s' * (len(unrun) > 1)} {', '.join(unrun)}" if unrun else ""))
        protocols = sorted({protocol(r) for r in finished}, key=str)
        if len(protocols) > 1:
            issues.append("runs of several protocols: " + "; ".join(
                f"{protocol_label(p)} (seeds {', '.join(str(r.seed) for r in finished if protocol(r) == p)})"
                for p in protocols))
        precisions = sorted({r.precision or "unrecorded" for r in finished})
        if len(precisions) > 1:  # bf16 and fp32 runs averaged into one cell: say which seeds are which
            seeds = {p: ", ".join(str(r.seed) for r in finished if (r.precision or "unrecorded") == p)
                     for p in precisions}
            issues.append("runs differ in precision: " + "; ".join(f"{p} (seeds {seeds[p]})" for p in precisions))

        gaps = [(r.seed, gap) for r in finished if (gap := noise_gap(r))]
        if gaps:
            issues.append("realised noise rate off the one asked by more than 1 pp: " + "; ".join(
                f"seed {seed} {gap.realised:.1%} of labels changed, {gap.asked:.1%} asked" for seed, gap in gaps)
                + f" ({gaps[0][1].line})")
        noise_type, rate, labels = column
        if noise_type == "human":  # report the measured rate of the label set
            realised = [r.realised_noise_rate if r.realised_noise_rate is not None else r.noise_rate for r in finished]
            realised = [float(x) for x in realised if x is not None]
            rate = round(float(np.mean(realised)), 4) if realised else None
        mean = float(accuracies.mean()) if len(accuracies) else None
        std = float(accuracies.std(ddof=1)) if len(accuracies) > 1 else None
        reference = pick_published(published, dataset, column, loss)
        rows.append({
            "dataset": dataset, "loss": loss, "loss_label": loss_label(loss),
            "noise_type": noise_type, "noise_rate": rate, "noise_labels": labels,
            "mean": mean, "std": std, "runs": len(finished), "failed": len(failed),
            "missing": max(0, expected - len(finished)), "expected": expected, "expected_from": expected_from,
            "seeds_asked": seeds_asked,
            "published": reference["mean"] if reference else None,
            "published_std": reference["std"] if reference else None,
            "published_source": reference["source"] if reference else None,
            "difference": mean - reference["mean"] if reference and mean is not None else None,
            "column": column, "header": column_header(column),
            "seeds": [r.seed for r in finished], "protocols": protocols, "records": finished,
            "protocol": protocols[0] if len(protocols) == 1 else MIXED if protocols else None,
            "precisions": precisions, "noise_gap": bool(gaps),
            "issues": issues,
        })
    for r in rows:  # a cell without a finished run: its row's protocol, else its dataset's, when there is one
        if r["protocol"] is None:
            for scope in ((r["dataset"], r["loss"]), (r["dataset"],)):
                found = {o["protocol"] for o in rows if (o["dataset"], o["loss"])[:len(scope)] == scope
                         and o["protocols"] and o["protocol"] != MIXED}
                if len(found) == 1:
                    r["protocol"] = found.pop()
                    break
    return rows


def protocol_sort_key(key):
    """The smaller protocol first (fewer epochs, then images; None: the whole set); mixed cells, then cells of no
    protocol (no finished run anywhere in their row or dataset) last."""
    if key in (MIXED, None):
        return (key is None, 1, ())
    return (False, 0, tuple(float("inf") if v is None else v for v in key))


def protocol_text(key, table):
    """A protocol as a table says it; MIXED lists the protocols its cells pool."""
    if key == MIXED:
        pooled = sorted({p for r in table for p in r["protocols"]}, key=protocol_sort_key)
        return protocol_name(key) + ": " + "; ".join(map(protocol_label, pooled))
    return protocol_name(key)


def header_lines(table):
    """The lines under a table's heading, what its numbers are: runs, protocol (epochs, training and test subset),
    precision, the seeds each cell expects, and where the runs trained (here, with the repository, on another
    machine: jal.record.origin). Every line a table says about where its numbers came from
    belongs here."""
    runs = sum(r["runs"] for r in table)
    failed = sum(r["failed"] for r in table)
    finished = [record for r in table for record in r["records"]]
    keys = {p for r in table for p in r["protocols"]}
    epochs = ", ".join(sorted({str(e) for e, _, _ in keys})) or "—"
    subsets = ", ".join(sorted({"full" if s is None else str(s) for _, s, _ in keys})) or "—"
    tests = ", ".join(sorted({"full" if t is None else str(t) for _, _, t in keys})) or "—"
    precisions = sorted({p for r in table for p in r["precisions"]})
    mixed = [f"{r['loss_label']} {r['header']}" for r in table if len(r["precisions"]) > 1]
    precision = ", ".join(precisions) or "—"
    if mixed:
        precision += f" (mixed within {len(mixed)} cell{'s' * (len(mixed) != 1)}: {'; '.join(mixed)})"
    asked = defaultdict(list)  # what a cell expects -> the columns expecting it
    for r in table:
        if r["seeds_asked"] is None:
            seeds = f"{r['expected']} ({r['expected_from']})"
        else:
            seeds = f"seed{'s' * (len(r['seeds_asked']) != 1)} {', '.join(map(str, r['seeds_asked']))}"
        if r["header"] not in asked[seeds]:
            asked[seeds].append(r["header"])
    expected = next(iter(asked)) if len(asked) == 1 else "; ".join(
        f"{', '.join(headers)}: {seeds}" for seeds, headers in asked.items())
    derived = (" (the seeds its sweep's records have: same settings, noisy or clean; --expect-seeds N expects N)"
               if any(r["seeds_asked"] is not None for r in table) else "")
    return [f"{runs} finished runs, {failed} failed; epochs: {epochs}; training subset: {subsets}; "
            f"test subset: {tests}; precision: {precision}.",
            f"Runs expected per cell: {expected}{derived}.",
            f"{provenance_line(finished, 'finished runs')}{machines(finished)}."]


def machines(finished) -> str:
    """` (those on <device>; ...)`: the machines that runs not trained here name (records before they named one:
    none), so that a table says whose numbers it shows."""
    named = sorted({r.device_name for r in finished if r.device_name and origin(r) != Origin.HERE})
    return f" (those not trained here on {'; '.join(named)})" if named else ""


def render_cell(r, best, other_protocol):
    """One cell of table.md: ours (bold when best), then the published figure, its marks and ours − published."""
    if r is None or r["mean"] is None:
        text = "—"
    else:
        text = f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "")
        if best is not None and r["mean"] == best:
            text = f"**{text}**"
        if r.get("noise_gap"):
            text += NOISE_MARK
    if r is not None and r["published"] is not None:
        mark = SOURCE_MARKS[r["published_source"]] + ("*" if r["loss"].partition(" ")[0] in PUBLISHED_CAVEATS else "")
        mark += OTHER_PROTOCOL * other_protocol
        if r["difference"] is None:
            text += f" ({r['published']:.2f}{mark})"
        else:
            text += f" ({r['published']:.2f}{mark}, {r['difference']:+.2f})".replace("-", "−")
    return text


def render_table(table, key):
    """The markdown of one dataset's cells of one protocol: header lines, the table, its notes and issues."""
    dataset = table[0]["dataset"]
    columns = sorted({r["column"] for r in table}, key=column_sort_key)
    losses = sorted({r["loss"] for r in table}, key=loss_sort_key)
    cell = {(r["loss"], r["column"]): r for r in table}
    best = {c: max((r["mean"] for r in table if r["column"] == c and r["mean"] is not None), default=None)
            if key not in (MIXED, None) else None for c in columns}  # cells of one protocol only
    theirs = published_protocol(dataset)
    other = key is not None and key != theirs
    lines = [*header_lines(table), "",
             "| Loss | " + " | ".join(column_header(c) for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for loss in losses:
        lines.append(f"| {loss_label(loss)} | " + " | ".join(
            render_cell(cell.get((loss, c)), best[c], other) for c in columns) + " |")
    sources = sorted({r["published_source"] for r in table if r["published_source"]}, key=SOURCE_PRIORITY.index)
    if sources:
        marks = list(dict.fromkeys(SOURCE_MARKS[s] for s in sources))
        lines += ["", "Published figures: " + "; ".join(
            f"{mark or 'unmarked'} = " + ", ".join(f"{s} ({SOURCE_NOTES[s]})" for s in sources
                                                   if SOURCE_MARKS[s] == mark) for mark in marks) + "."]
        if other:
            lines += ["", f"{OTHER_PROTOCOL} Published under another protocol than ours: "
                          f"{protocol_label(theirs) if theirs else 'the paper’s'}, where ours is "
                          f"{protocol_text(key, table)}."]
    caveats = sorted({r["loss"].partition(" ")[0] for r in table if r["published"] is not None}
                     & set(PUBLISHED_CAVEATS))
    if caveats:
        lines += [""] + [f"\\* {PUBLISHED_CAVEATS[loss]}." for loss in caveats]
    if any(r.get("noise_gap") for r in table):
        lines += ["", f"{NOISE_MARK} The realised noise rate of a run of this cell is more than 1 pp off the one "
                      "asked (listed under Runs to check): the cell measures another noise level than its column's."]
    issues = [f"- {r['loss_label']}, {r['header']}: {issue}" for r in table for issue in r["issues"]]
    return lines + ["", "Runs to check:" if issues else "All cells complete.", *issues, ""]


def render_markdown(rows, with_fidelity=True):
    """table.md: the fidelity score (unless with_fidelity=False), then one table per dataset and protocol, best
    mean per column in bold, issues listed under the table."""
    lines = ["# Last-epoch test accuracy (%)", "",
             ("Each cell: ours, mean ± std over seeds (unbiased; no std with one run), then "
              "(published figure, ours − published). Best of ours per column of one protocol in **bold**; "
              "— = no finished run."), ""]
    if with_fidelity:
        lines += [render_fidelity(fidelity(rows))]
        if checked := findings(rows):
            lines += [render_findings(checked)]
    for dataset in sorted({r["dataset"] for r in rows}, key=dataset_sort_key):
        here = [r for r in rows if r["dataset"] == dataset]
        keys = sorted({r["protocol"] for r in here}, key=protocol_sort_key)
        lines += [f"## {DATASET_LABELS.get(dataset, dataset)}", ""]
        if len(keys) > 1:
            lines += [f"The records hold {len(keys)} protocols: a table each, the best of ours chosen within it.", ""]
        for key in keys:
            table = [r for r in here if r["protocol"] == key]
            if len(keys) > 1:
                lines += [f"### {protocol_text(key, table)[:1].upper()}{protocol_text(key, table)[1:]}", ""]
            lines += render_table(table, key)
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
        row = {**row, "protocol": protocol_text(row["protocol"], [row]) if row["protocol"] else ""}
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
    parser.add_argument("--expect-seeds", type=int, default=None,
                        help="runs expected per cell (default: the seeds the records of its column have)")
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
    print(f"jal.tables: {provenance_line(records, 'records')} -> {len(rows)} cells ({incomplete} with issues); "
          f"fidelity: tau {tau}, {t['within_1pp']}/{t['compared']} within 1 pp; "
          f"wrote table.md, table.csv and fidelity.json to {args.out}")


if __name__ == "__main__":
    main()
