"""The paired precision check: the same cells and seeds trained in bf16 and in fp32, the difference per cell.

    python -m jal.precision_report results/precision/runs results/quick/runs --out results/precision [--expect-seeds 3]
        [--cells-from results/precision/runs]

Records (result.json, found recursively under the directories given) are read by their contents, never by
their directory names: a cell is (dataset, noise column, loss, epochs, training subset), and each record's
`precision` field says which side of the pair it is on (a record without one is left out, and said so).
Within a cell only the seeds finished in both precisions are compared: the same seed means the same
subset, noisy labels and initialisation, so the pair differs in precision alone.

Per cell: fp32 and bf16 mean ± std (unbiased) of the last-epoch test accuracy over those seeds; the
difference of the means, bf16 − fp32, beside twice the larger of the two stds (the bound); the per-seed
differences' mean ± std; minutes per run and training images/s in each precision, and the machines.
The verdict: bf16 may become the default only when every cell has --expect-seeds paired seeds and no
cell moves by more than its bound; with fewer seeds it decides nothing.

Writes <out>/table.md, <out>/table.csv (one row per cell) and <out>/summary.json (cells and verdict).
"""

import argparse
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from jal.record import Record, Status
from jal.records import (
    DATASET_ALIASES,
    DATASET_LABELS,
    cell_sort_key,
    column_header,
    load_records,
    loss_label,
    noise_column,
    written_at,
)
from jal.util import atomic_write_text

PRECISIONS = ("fp32", "bf16")
CSV_COLUMNS = ["dataset", "noise_type", "noise_rate", "noise_labels", "loss", "loss_label", "epochs", "subset",
               "seeds", "fp32_mean", "fp32_std", "bf16_mean", "bf16_std", "difference", "bound", "within",
               "paired_mean", "paired_std", "fp32_wall_seconds", "bf16_wall_seconds", "fp32_images_per_second",
               "bf16_images_per_second"]


def cell_of(record: Record) -> tuple:
    """(dataset, noise column, loss, epochs, subset) from the record's own fields; settings beyond the cell
    (a `settings` field naming non-default overrides) keep it apart, except the precision itself."""
    dataset = DATASET_ALIASES.get(record.dataset, record.dataset)
    column = noise_column(record.noise_type, record.noise_rate or 0.0, record.noise_labels)
    settings = record.settings or ""
    if isinstance(settings, str):
        settings = ",".join(s for s in settings.split(",") if s and not s.startswith("trainer.precision="))
    loss = record.loss + (f" [{settings}]" if settings else "")
    return dataset, column, loss, record.epochs, record.subset


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    a = np.asarray(values, dtype=float)
    return (float(a.mean()) if len(a) else None), (float(a.std(ddof=1)) if len(a) > 1 else None)


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def pair_cells(records: list[Record], expect_seeds: int = 3, cells: set | None = None) -> list[dict]:
    """One row per cell that has a finished run in either precision (see the module's docstring); with
    `cells`, only those (the cells trained for the check, when the other side's records hold more)."""
    runs = defaultdict(lambda: {p: {} for p in PRECISIONS})  # cell -> precision -> seed -> newest record
    unrecorded = defaultdict(int)
    for r in records:
        if r.status != Status.FINISHED or r.last_test_acc is None:
            continue
        cell = cell_of(r)
        if cells is not None and cell not in cells:
            continue
        if r.precision not in PRECISIONS:
            unrecorded[cell] += 1
            continue
        by_seed = runs[cell][r.precision]
        old = by_seed.get(r.seed)
        if old is None or written_at(r) >= written_at(old):
            by_seed[r.seed] = r
    rows = []
    for cell in sorted(runs, key=lambda c: (cell_sort_key(c[:3]), str(c[3]), str(c[4]))):
        dataset, column, loss, epochs, subset = cell
        sides = runs[cell]
        seeds = sorted(set(sides["fp32"]) & set(sides["bf16"]), key=str)
        fp32 = [float(sides["fp32"][s].last_test_acc) for s in seeds]
        bf16 = [float(sides["bf16"][s].last_test_acc) for s in seeds]
        fp32_mean, fp32_std = _stats(fp32)
        bf16_mean, bf16_std = _stats(bf16)
        paired_mean, paired_std = _stats([b - f for b, f in zip(bf16, fp32)])
        difference = bf16_mean - fp32_mean if seeds else None
        bound = 2 * max(fp32_std, bf16_std) if fp32_std is not None and bf16_std is not None else None
        issues = []
        if len(seeds) < expect_seeds:
            issues.append(f"{len(seeds)}/{expect_seeds} seeds in both precisions"
                          + (f" (seeds {', '.join(map(str, seeds))})" if seeds else ""))
        for precision in PRECISIONS:
            alone = sorted(set(sides[precision]) - set(seeds), key=str)
            if alone:
                issues.append(f"{precision} only: seeds {', '.join(map(str, alone))} (not compared)")
        if unrecorded.get(cell):
            issues.append(f"{unrecorded[cell]} finished runs without a precision field (left out)")
        paired_runs = {p: [sides[p][s] for s in seeds] for p in PRECISIONS}
        rows.append({
            "dataset": dataset, "column": column, "header": column_header(column), "noise_type": column[0],
            "noise_rate": column[1], "noise_labels": column[2], "loss": loss, "loss_label": loss_label(loss),
            "epochs": epochs, "subset": subset, "seeds": seeds,
            "fp32_mean": fp32_mean, "fp32_std": fp32_std, "bf16_mean": bf16_mean, "bf16_std": bf16_std,
            "difference": difference, "bound": bound,
            "within": None if bound is None else bool(abs(difference) <= bound + 1e-9),
            "paired_mean": paired_mean, "paired_std": paired_std,
            **{f"{p}_wall_seconds": _mean(r.wall_seconds for r in paired_runs[p]) for p in PRECISIONS},
            **{f"{p}_images_per_second": _mean(r.images_per_second for r in paired_runs[p])
               for p in PRECISIONS},
            "device_names": {p: sorted({str(r.device_name) for r in paired_runs[p]}) for p in PRECISIONS},
            "issues": issues,
        })
    return rows


def cell_label(row: dict) -> str:
    return f"{DATASET_LABELS.get(row['dataset'], row['dataset'])} {row['header']} {row['loss_label']}"


def verdict(rows: list[dict], expect_seeds: int = 3) -> dict:
    """complete: every cell has expect_seeds paired seeds and a bound; moved: the cells outside their bound;
    bf16_ok: complete and none moved (only then may bf16 become the default)."""
    complete = bool(rows) and all(len(r["seeds"]) >= expect_seeds and r["within"] is not None for r in rows)
    moved = [cell_label(r) for r in rows if r["within"] is False]
    return {"complete": complete, "moved": moved, "bf16_ok": complete and not moved, "cells": len(rows),
            "expect_seeds": expect_seeds}


def verdict_line(v: dict) -> str:
    if v["moved"]:
        return (f"**fp32 stays**: {len(v['moved'])} of {v['cells']} cells move by more than twice the larger "
                f"seed std ({'; '.join(v['moved'])})" + ("." if v["complete"] else ", and the check is incomplete."))
    if not v["complete"]:
        return (f"**No decision yet**: not every cell has {v['expect_seeds']} seeds in both precisions; no cell "
                "has moved by more than twice the larger seed std so far, but partial evidence decides nothing.")
    return (f"**bf16 may become the default**: none of the {v['cells']} cells moves by more than twice the larger "
            f"seed std ({v['expect_seeds']} seeds each).")


def render_markdown(rows: list[dict], expect_seeds: int = 3) -> str:
    fmt = lambda x, d=2: "—" if x is None else f"{x:.{d}f}"  # noqa: E731
    signed = lambda x: "—" if x is None else f"{x:+.2f}".replace("-", "−")  # noqa: E731
    pm = lambda m, s: "—" if m is None else fmt(m) + (f" ± {s:.2f}" if s is not None else "")  # noqa: E731
    v = verdict(rows, expect_seeds)
    lines = ["# bf16 against fp32, the same cells and seeds", "",
             ("Last-epoch test accuracy (%), mean ± std (unbiased) over the seeds finished in both precisions. "
              "bf16 − fp32: the difference of the means; bound: twice the larger of the two stds; a cell "
              "*moves* when |bf16 − fp32| exceeds it. Per seed: the mean ± std of the seed-by-seed "
              "differences (same subset, labels and initialisation). Minutes per run and training images/s: "
              "the records' own wall time and per-epoch training throughput."), "",
             verdict_line(v), "",
             "| Cell | Epochs × subset | Seeds | fp32 | bf16 | bf16 − fp32 | Bound | Moves | Per seed | "
             "min/run fp32 / bf16 | img/s fp32 / bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        moves = {True: "no", False: "**yes**", None: "n/a"}[r["within"]]
        minutes = "/".join(fmt(r[f"{p}_wall_seconds"] and r[f"{p}_wall_seconds"] / 60, 1) for p in PRECISIONS)
        ips = "/".join(fmt(r[f"{p}_images_per_second"], 0) for p in PRECISIONS)
        subset = "full" if r["subset"] is None else f"{r['subset']:,}"
        lines.append(f"| {cell_label(r)} | {r['epochs']} × {subset} | {', '.join(map(str, r['seeds'])) or '—'} | "
                     f"{pm(r['fp32_mean'], r['fp32_std'])} | {pm(r['bf16_mean'], r['bf16_std'])} | "
                     f"{signed(r['difference'])} | {fmt(r['bound'])} | {moves} | "
                     f"{signed(r['paired_mean'])}"
                     + (f" ± {r['paired_std']:.2f}" if r["paired_std"] is not None else "")
                     + f" | {minutes} | {ips} |")
    machines = {p: sorted({n for r in rows for n in r["device_names"][p]}) for p in PRECISIONS}
    lines += ["", "Machines: " + "; ".join(f"{p}: {', '.join(machines[p]) or '—'}" for p in PRECISIONS) + "."]
    issues = [f"- {cell_label(r)}: {issue}" for r in rows for issue in r["issues"]]
    lines += ["", "Cells to complete:" if issues else "All cells complete.", *issues, ""]
    return "\n".join(lines)


def write_tables(rows: list[dict], out_dir, expect_seeds: int = 3) -> dict:
    """table.md, table.csv and summary.json into out_dir; returns the verdict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "table.md", render_markdown(rows, expect_seeds))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {k: round(row[k], 4) if isinstance(row[k], float) else row[k] for k in CSV_COLUMNS}
        values["seeds"] = " ".join(map(str, row["seeds"]))
        writer.writerow({k: "" if v is None else v for k, v in values.items()})
    atomic_write_text(out_dir / "table.csv", buffer.getvalue())
    v = verdict(rows, expect_seeds)
    cells = [{k: (list(val) if k == "column" else val) for k, val in r.items()} for r in rows]
    atomic_write_text(out_dir / "summary.json", json.dumps({"verdict": v, "cells": cells}, indent=1) + "\n")
    return v


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m jal.precision_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", help="directories searched recursively for result.json")
    parser.add_argument("--out", required=True, help="directory to write table.md, table.csv, summary.json into")
    parser.add_argument("--expect-seeds", type=int, default=3, help="paired seeds needed per cell (default 3)")
    parser.add_argument("--cells-from", default=None, metavar="DIR",
                        help="only the cells with a record under DIR (the side trained for the check, when the "
                        "other side's directory holds a whole table)")
    args = parser.parse_args(argv)
    who = "jal.precision_report"
    cells = {cell_of(r) for r in load_records(args.cells_from, who)} if args.cells_from else None
    rows = pair_cells(load_records(args.records, who), args.expect_seeds, cells)
    if not rows:
        raise SystemExit("jal.precision_report: no finished runs with a precision field")
    v = write_tables(rows, args.out, args.expect_seeds)
    print(f"jal.precision_report: {len(rows)} cells; {verdict_line(v).replace('**', '')} Wrote table.md, table.csv and "
          f"summary.json to {args.out}")
    return v


if __name__ == "__main__":
    main()
