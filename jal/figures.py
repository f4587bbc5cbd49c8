"""The figures of notebooks/results.ipynb, drawn from one protocol's records; where they go; and

    python -m jal.figures RECORD_DIR... [--out DIR]      # make notebooks [RECORDS=dir1:dir2] [FIGURES=dir]

which runs the notebook on those records and prints where it wrote each figure.

Each figure reads alone: its title names the dataset, the protocol of its runs and how many it draws, and the
settings every run shares; the published figures, measured under the paper's protocol, have panels of their own;
markers stand where runs exist, and a line joins two noise rates only when no rate of the grid between them went
unrun; legends (short names) lie outside the axes; a panel with nothing to draw says why.
"""

import argparse
import json
import os
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import matplotlib
except ModuleNotFoundError:  # a plain install: the figures come with the dev extras
    raise SystemExit("jal.figures: matplotlib is not installed: make install (pip install -e '.[dev]')") from None

from jal.record import Status, provenance_line
from jal.records import (
    DATASET_LABELS,
    dataset_sort_key,
    load_records,
    loss_sort_key,
    noise_column,
    one_protocol,
    protocol_label,
    record_cell,
    short_loss_labels,
    written_at,
)
from jal.tables import SOURCE_PRIORITY, pick_published, published_protocol, summarise
from jal.util import REPO_ROOT

PAPER_RATES = {"symmetric": [0.0, 0.2, 0.4, 0.6, 0.8], "asymmetric": [0.0, 0.1, 0.2, 0.3, 0.4]}
SOURCE_NAMES = {"jal2025": "the JAL paper", "epssoftmax2024": "the ε-Softmax paper", "anl2023": "the ANL paper"}
MEMORISATION = {"train_acc_clean_subset": "clean samples: accuracy",
                "train_acc_corrupted_subset": "corrupted samples: clean label",
                "train_memorised": "corrupted samples: noisy label (memorised)"}
LEGEND_WIDTH = 30  # characters a legend entry is wrapped at, however long a user's settings make it


def figures_dir(record_dirs):
    """Where the figures of these records go: `figures/` beside a preset's `runs/` (results/quick/runs ->
    results/quick/figures, results/runs -> results/figures), else inside the first record directory (outputs ->
    outputs/figures: ignored by git as the records are, never a new folder at the repository's root)."""
    first = Path(record_dirs[0]).resolve()
    return first.parent / "figures" if first.name == "runs" and first.parent != REPO_ROOT else first / "figures"


def shown(path):
    """A path as figures.json and the console show it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def newest(runs):
    """One run per cell and seed, the newest (a rerun replaces the older run, as in the table)."""
    kept = {}
    for r in sorted(runs, key=written_at):
        kept[record_cell(r), r.seed] = r
    return list(kept.values())


def history_curve(runs, key):
    """Epochs, mean and std (unbiased, 0 with one run) over seeds of one per-epoch history field, at the epochs
    where every run has it: the quick preset tests every 3rd epoch (test_acc None between), the training fields
    come every epoch."""
    series = [{h.get("epoch", i + 1): h[key] for i, h in enumerate(r.history or []) if h.get(key) is not None}
              for r in runs]
    series = [s for s in series if s]
    epochs = sorted(set.intersection(*map(set, series))) if series else []
    if not epochs:
        return None
    values = np.array([[s[e] for e in epochs] for s in series], dtype=float)
    std = values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(len(epochs))
    return np.array(epochs), values.mean(axis=0), std


def note(ax, text):
    """Why a panel shows no curve, in the panel."""
    ax.text(0.5, 0.97, text, transform=ax.transAxes, ha="center", va="top", fontsize=9, color="0.3", wrap=True,
            bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9})


def legend_outside(fig, handles, labels, where="outside right center", **kwargs):
    """One legend for the figure, beside the axes (never over them): constrained layout makes room for it."""
    labels = [textwrap.fill(label, LEGEND_WIDTH, subsequent_indent="  ") for label in labels]
    kwargs.setdefault("ncols", 1 + len(labels) // 16)  # a long list in columns rather than past the figure's edge
    return fig.legend(handles, labels, loc=where, fontsize=8, title_fontsize=8, **kwargs)


def draw_points(ax, grid, points, color, filled):
    """Markers (± std bars) at the rates with a value; a line only through neighbours of `grid` that both have
    one, so no line crosses a rate that was never run."""
    rates = sorted(points)
    ax.errorbar(rates, [points[r][0] for r in rates], yerr=[points[r][1] for r in rates], color=color, marker="o",
                mfc=color if filled else "white", linestyle="none", capsize=3, markersize=5)
    stretch = []
    for rate in [*sorted(grid), None]:
        if rate in points:
            stretch.append(rate)
            continue
        if len(stretch) > 1:
            ax.plot(stretch, [points[r][0] for r in stretch], color=color, linestyle="-" if filled else "--",
                    linewidth=1.2)
        stretch = []


@dataclass
class Sweep:
    """One protocol's records as the figures read them: the table's cells, the finished runs (the newest of each
    cell and seed), each dataset's protocol, the published figures."""
    rows: list
    finished: list
    protocols: dict
    published: list

    @classmethod
    def of(cls, records, published):
        finished = newest(r for r in records if r.status == Status.FINISHED)
        return cls(summarise(records, published=published) if records else [], finished, one_protocol(records),
                   published)

    def datasets(self):
        return sorted({r["dataset"] for r in self.rows}, key=dataset_sort_key)

    def runs_at(self, dataset, column, loss):
        return [r for r in self.finished if record_cell(r) == (dataset, column, loss)]

    def losses(self, dataset):
        return sorted({r["loss"] for r in self.rows if r["dataset"] == dataset}, key=loss_sort_key)

    def colors(self, dataset):
        """One colour per loss in every figure of a dataset, in the table's row order."""
        import matplotlib.pyplot as plt

        losses = self.losses(dataset)
        palette = plt.cm.tab10 if len(losses) <= 10 else plt.cm.tab20
        return {loss: palette(i % palette.N) for i, loss in enumerate(losses)}

    def heading_lines(self, dataset, what, runs):
        """A figure's title, a line each: what it shows; the protocol of our runs and how many it draws, by
        precision and by where they trained (jal.record.origin); the settings every run of the dataset shares.
        Every line a figure says about where its numbers came from belongs here."""
        runs = newest(runs)
        precisions = Counter(r.precision or "precision unrecorded" for r in runs).most_common()
        counted = precisions[0][0] if len(precisions) == 1 else ", ".join(f"{n} {p}" for p, n in precisions)
        where = provenance_line(runs, "").partition(": ")[2]  # 8 trained here, 3 came with the repository
        lines = [f"{DATASET_LABELS.get(dataset, dataset)}: {what}",
                 f"ours: {protocol_label(self.protocols[dataset])}; {len(runs)} run{'s' * (len(runs) != 1)} "
                 f"({counted}){': ' + where if where else ''}"]
        if shared := short_loss_labels(self.losses(dataset))[1]:
            lines.append(textwrap.shorten(f"settings of every run: {shared}", 110, placeholder=" ..."))
        return lines

    def heaviest_column(self, dataset, kinds):
        """The noisiest column of these noise types with finished runs (ties: earlier kind first), or None."""
        columns = {c for d, c, _ in map(record_cell, self.finished) if d == dataset and c[0] in kinds}
        return max(columns, key=lambda c: (c[1] or 0.0, -kinds.index(c[0])), default=None)

    def accuracy_vs_noise(self, dataset):
        """Last-epoch test accuracy against the noise rate, a column of panels per noise type: ours on top, the
        published figures (another protocol, unless ours is the paper's) below on the same scale. None without
        symmetric or asymmetric runs."""
        import matplotlib.pyplot as plt

        here = [r for r in self.rows if r["dataset"] == dataset and r["runs"]]
        kinds = [kind for kind in PAPER_RATES if any(r["noise_type"] == kind for r in here)]
        if not kinds:
            return None
        colors, (labels, _) = self.colors(dataset), short_loss_labels(self.losses(dataset))
        fig, axes = plt.subplots(2, len(kinds), figsize=(4.4 * len(kinds) + 2.6, 7.8), squeeze=False, sharey=True,
                                 layout="constrained")
        sources, drawn = set(), []
        for (ours_ax, theirs_ax), kind in zip(axes.T, kinds):
            cells = [r for r in here if r["noise_type"] in (kind, "none")]
            grid = set(PAPER_RATES[kind]) | {r["noise_rate"] for r in cells}
            losses = sorted({r["loss"] for r in cells}, key=loss_sort_key)
            for loss in losses:
                ours = {r["noise_rate"]: (r["mean"], r["std"] or 0.0) for r in cells if r["loss"] == loss}
                draw_points(ours_ax, grid, ours, colors[loss], filled=True)
                drawn += [run for r in cells if r["loss"] == loss for run in self.runs_at(dataset, r["column"], loss)]
                theirs = {rate: pick_published(self.published, dataset, noise_column(kind, rate), loss)
                          for rate in PAPER_RATES[kind]}
                theirs = {rate: ref for rate, ref in theirs.items() if ref}
                sources |= {ref["source"] for ref in theirs.values()}
                draw_points(theirs_ax, PAPER_RATES[kind], {rate: (ref["mean"], ref["std"] or 0.0)
                                                           for rate, ref in theirs.items()}, colors[loss], filled=False)
            if not theirs_ax.lines:
                note(theirs_ax, "no published figure for these losses at these noise rates")
            for ax, whose in ((ours_ax, "ours"), (theirs_ax, "published")):
                ax.set(title=f"{whose}: {kind} noise", xticks=sorted(grid))
                ax.tick_params(labelsize=8)
                ax.grid(alpha=0.3)
        for row, whose in zip(axes, ("ours", "published")):
            row[0].set_ylabel(f"{whose}: last-epoch test accuracy (%)")
        fig.supxlabel("noise rate (markers: rates with runs; a line joins two rates only when none between them "
                      "went unrun)", fontsize=9)
        theirs = published_protocol(dataset)
        named = sorted({SOURCE_NAMES.get(s.split("_")[0], s) for s in sources},
                       key=lambda n: min(SOURCE_PRIORITY.index(s) for s in sources
                                         if SOURCE_NAMES.get(s.split("_")[0], s) == n))
        lines = self.heading_lines(dataset, "last-epoch test accuracy against noise rate", drawn)
        lines.insert(2, "published: " + (f"{protocol_label(theirs)}, the paper's protocol" if theirs else "none")
                     + (f"; from {' and '.join(named)}" if named else ""))
        fig.suptitle("\n".join(lines), fontsize=9)
        handles = [matplotlib.lines.Line2D([], [], color=colors[loss], marker="o") for loss in labels]
        handles += [matplotlib.lines.Line2D([], [], color="0.3", marker="o", linestyle=style, mfc=fill)
                    for style, fill in (("-", "0.3"), ("--", "white"))]
        legend_outside(fig, handles, [*labels.values(), "ours (± std over seeds)", "published (± std where given)"],
                       title="loss")
        return fig

    def per_epoch_axes(self, ax, curves, colors, labels):
        """Each loss's mean (± std band) against the epoch; a note where every run tested one epoch only."""
        tested = sorted({int(e) for epochs, _, _ in curves.values() for e in epochs})
        few = len(tested) <= 15  # a few tested epochs (the quick preset: every 3rd) are marked and are the ticks
        for loss, (epochs, mean, std) in curves.items():
            ax.plot(epochs, mean, marker="o" if few else None, markersize=3, color=colors.get(loss), label=labels[loss])
            ax.fill_between(epochs, mean - std, mean + std, color=colors.get(loss), alpha=0.15)
        if len(tested) == 1:
            note(ax, f"one tested epoch (epoch {tested[0]}): no curve to draw, a point each")
        if few:
            ax.set_xticks(tested)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)

    def test_acc_per_epoch(self, dataset):
        """Test accuracy per epoch of every loss at the noisiest setting with runs; None without history."""
        import matplotlib.pyplot as plt

        column = self.heaviest_column(dataset, ["symmetric", "asymmetric", "instance", "human", "none"])
        losses = [loss for loss in self.losses(dataset) if self.runs_at(dataset, column, loss)]
        curves = {loss: history_curve(self.runs_at(dataset, column, loss), "test_acc") for loss in losses}
        curves = {loss: curve for loss, curve in curves.items() if curve is not None}
        if not curves:
            return None
        labels = short_loss_labels(self.losses(dataset))[0]
        fig, ax = plt.subplots(figsize=(8.5, 5), layout="constrained")
        self.per_epoch_axes(ax, curves, self.colors(dataset), labels)
        ax.set(xlabel="epoch", ylabel="test accuracy (%)")
        name = "clean" if column[0] == "none" else f"{column[0]} {column[2] or column[1]} noise"
        runs = [r for loss in curves for r in self.runs_at(dataset, column, loss)]
        fig.suptitle("\n".join(self.heading_lines(dataset, f"test accuracy per epoch, {name}", runs)), fontsize=9)
        legend_outside(fig, *ax.get_legend_handles_labels(), title="loss")
        return fig

    def memorisation(self, dataset):
        """CE and JAL-CE (else the first two losses) at the heaviest symmetric noise (else any noise): per epoch,
        the fit to the clean samples and to the corrupted ones' clean and noisy labels; None without it."""
        import matplotlib.pyplot as plt

        column = (self.heaviest_column(dataset, ["symmetric"])
                  or self.heaviest_column(dataset, ["asymmetric", "instance", "human"]))
        if column is None:
            return None
        present = [loss for loss in self.losses(dataset) if self.runs_at(dataset, column, loss)]
        labels = short_loss_labels(self.losses(dataset))[0]
        plain = sorted(present, key=lambda loss: " " in labels[loss])  # rows without settings of their own first
        chosen = [next((loss for loss in plain if loss.partition(" ")[0] == base), None) for base in ("ce", "jal_ce")]
        chosen = [loss for loss in chosen if loss]
        chosen = (chosen + [loss for loss in plain if loss not in chosen])[:2]
        curves = {loss: {key: history_curve(self.runs_at(dataset, column, loss), key) for key in MEMORISATION}
                  for loss in chosen}
        curves = {loss: {k: c for k, c in by_key.items() if c is not None} for loss, by_key in curves.items()}
        curves = {loss: by_key for loss, by_key in curves.items() if by_key}
        if not curves:
            return None
        fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.6), squeeze=False, sharey=True,
                                 layout="constrained")
        colors = dict(zip(MEMORISATION, plt.cm.tab10.colors))
        for ax, (loss, by_key) in zip(axes[0], curves.items()):
            self.per_epoch_axes(ax, by_key, colors, MEMORISATION)
            ax.set_title(textwrap.fill(labels[loss], 40), fontsize=10)
            ax.set_xlabel("epoch")
        axes[0][0].set_ylabel("% of training samples")
        name = f"{column[0]} {column[2] or column[1]} noise"
        runs = [r for loss in curves for r in self.runs_at(dataset, column, loss)]
        fig.suptitle("\n".join(self.heading_lines(dataset, f"memorisation on the training set, {name}", runs)),
                     fontsize=9)
        handles, names = axes[0][0].get_legend_handles_labels()
        legend_outside(fig, handles, names, where="outside lower center", ncols=3)
        return fig


def amse_bound_figure(num_classes_and_a=None):
    """Theorem 4.1's smallest a for which AMSE is asymmetric against the noise rate, for K = 10 and 100 classes,
    with the a the paper configures (30 on CIFAR-10, 20 on CIFAR-100)."""
    import matplotlib.pyplot as plt

    from jal.theory import amse_min_a

    def bound(kind, rate, num_classes):
        a_min = float(amse_min_a(kind, rate, num_classes))
        return a_min if np.isfinite(a_min) else float("nan")  # inf: no a works (the clean class is not the largest)

    configured = num_classes_and_a or {10: ("CIFAR-10", 30), 100: ("CIFAR-100", 20)}
    grids = {"symmetric": np.linspace(0.02, 0.88, 87), "asymmetric": np.linspace(0.02, 0.45, 44)}
    fig, axes = plt.subplots(1, len(configured), figsize=(12, 4.5), sharey=True, layout="constrained")
    for ax, (num_classes, (name, a)) in zip(axes, configured.items()):
        for kind, grid in grids.items():
            line, = ax.plot(grid, [bound(kind, rate, num_classes) for rate in grid], label=f"{kind} noise")
            rates = PAPER_RATES[kind][1:]
            ax.plot(rates, [bound(kind, rate, num_classes) for rate in rates], "o", color=line.get_color())
        ax.axhline(a, color="k", ls=":" if num_classes == 10 else "-.", label=f"a = {a} ({name})")
        ax.set(title=f"K = {num_classes}", xlabel="noise rate", yscale="log", ylim=(1, 1e3))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("smallest a for which AMSE is asymmetric")
    fig.suptitle("AMSE's asymmetry bound (Theorem 4.1, q = 2) against the noise rate", fontsize=9)
    found = {}  # label -> handle: the noise types once, each panel's configured a
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    legend_outside(fig, list(found.values()), list(found))
    bounds = {k: [f"{kind} {rate:g}: a >= {bound(kind, rate, k):.2f}"
                  for kind in grids for rate in PAPER_RATES[kind][1:]] for k in configured}
    return fig, bounds


def plotted(fig):
    """What a figure draws, as data: its title and legend, each panel's title, labels, notes, each line's colour,
    label and points, each collection's outlines (error bars, ± std bands); rounded to 4 decimals."""
    def points(xy):
        return [[round(float(v), 4) if np.isfinite(v) else None for v in p] for p in np.asarray(xy, dtype=float)]
    suptitle = getattr(fig, "_suptitle", None)
    return {"title": suptitle.get_text() if suptitle else "",
            "legend": [t.get_text() for legend in fig.legends for t in legend.get_texts()],
            "panels": [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                        "notes": [t.get_text() for t in ax.texts],
                        "lines": [{"color": matplotlib.colors.to_hex(line.get_color()), "label": line.get_label(),
                                   "xy": points(line.get_xydata())} for line in ax.lines],
                        "collections": [points(path.vertices) for c in ax.collections for path in c.get_paths()]}
                       for ax in fig.axes]}


class FigureSet:
    """A directory of figures and its figures.json: what each plots (plotted), the records and protocols drawn
    from, the matplotlib that drew them (tests/test_notebook.py draws them again and compares)."""

    def __init__(self, directory, record_dirs, protocols):
        self.directory = Path(directory)
        self.about = {"records": [shown(d) for d in record_dirs], "matplotlib": matplotlib.__version__,
                      "protocols": {d: protocol_label(key) for d, key in protocols.items()}}
        self.figures = {}

    def save(self, fig, name):
        """The PNG (no Software entry, which names the matplotlib version: the same drawing gives the same bytes)
        and figures.json, a figure a line so that diffs say which changed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.directory / name, dpi=120, metadata={"Software": None})
        self.figures[name] = plotted(fig)
        lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in self.about.items()]
        figures = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.figures.items())
        (self.directory / "figures.json").write_text("{\n" + "\n".join(lines) + '\n "figures": {\n' + figures
                                                     + "\n }\n}\n")
        print(f"wrote {shown(self.directory / name)}")
        return self.directory / name


NOTEBOOK = REPO_ROOT / "notebooks" / "results.ipynb"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jal.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", help="record directories of one protocol, searched recursively")
    parser.add_argument("--out", default=None, help="where the figures go (default: jal.figures.figures_dir)")
    args = parser.parse_args(argv)
    one_protocol(load_records(args.records, "jal.figures"))  # a missing directory, no records, two protocols: here
    out = Path(args.out).resolve() if args.out else figures_dir(args.records)
    import nbformat
    from nbclient import NotebookClient

    os.environ["JAL_RECORDS"] = os.pathsep.join(str(Path(d).resolve()) for d in args.records)
    os.environ["JAL_FIGURES"] = str(out)
    NotebookClient(nbformat.read(NOTEBOOK, as_version=4), timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    drawn = json.loads((out / "figures.json").read_text())["figures"]
    for name, figure in drawn.items():
        print(f"wrote {shown(out / name)}: {figure['title'].splitlines()[0] if figure['title'] else name}")


if __name__ == "__main__":
    main()
