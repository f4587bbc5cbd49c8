"""How closely our cells follow the published figures: the fidelity score (Kendall's tau-b of the losses'
ranking per column, cells within 1 pp and within 2 published std, the mean absolute difference) and the
paper's findings our cells can test, each with its markdown for table.md and the notebook.
"""

import numpy as np

from jal.records import (
    DATASET_LABELS,
    column_header,
    column_sort_key,
    dataset_sort_key,
    loss_label,
    protocol_name,
)


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
    not whether the losses come in the published order. Nor are rows of two protocols ranked together: where a
    dataset's rows hold several (their `protocol`, jal.tables.summarise), a column is scored per protocol.
    """
    columns, all_differences = [], []
    for dataset in sorted({r["dataset"] for r in rows}, key=dataset_sort_key):
        here = [r for r in rows if r["dataset"] == dataset]
        keys = sorted({r.get("protocol") for r in here}, key=str)
        for key, column in sorted(((k, c) for k in keys for c in {r["column"] for r in here}),
                                  key=lambda kc: (column_sort_key(kc[1]), str(kc[0]))):
            cells = [r for r in here if r["column"] == column and r.get("protocol") == key
                     and r["published"] is not None]
            if not cells:
                continue
            compared = [r for r in cells if r["mean"] is not None]
            differences = [r["mean"] - r["published"] for r in compared]
            with_std = [r for r in compared if r["published_std"] is not None]
            all_differences += differences
            columns.append({
                "dataset": dataset, "protocol": None if len(keys) == 1 else protocol_name(key),
                "column": column_header(column), "noise_type": column[0], "noise_rate": column[1],
                "noise_labels": column[2],
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
        protocol = f" ({c['protocol']})" if c.get("protocol") else ""
        lines.append(f"| {DATASET_LABELS.get(c['dataset'], c['dataset'])}{protocol} | {c['column']} | "
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
