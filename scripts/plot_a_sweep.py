"""The a-sweep of scripts/reproduce_ablation.sh as a figure: JAL-CE's last-epoch test accuracy against AMSE's a,
one line per noise setting, with the bound of jal.theory.amse_min_a (AMSE asymmetric for a >= bound) marked.

    python scripts/plot_a_sweep.py results/ablation/a_sweep   # reads table.csv, writes a_sweep.png, bound.md
"""

import csv
import re
import sys
from pathlib import Path

from jal.theory import amse_min_a


def a_of(loss):
    """AMSE's a from a table row's loss, e.g. `jal_ce [loss.passive.a=30]` (the run's settings beyond its cell)."""
    return float(re.search(r"loss\.passive\.a=([0-9.e+-]+)", loss).group(1))


def main(directory):
    directory = Path(directory)
    with open(directory / "table.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["mean"] and "loss.passive.a=" in r["loss"]]
    series = {}
    for r in rows:
        series.setdefault((r["noise_type"], float(r["noise_rate"])), []).append(
            (a_of(r["loss"]), float(r["mean"]), float(r["std"] or 0)))
    bounds = {setting: amse_min_a(setting[0], setting[1], 10) for setting in series}
    lines = ["# AMSE's a: the asymmetry bound (jal.theory.amse_min_a, CIFAR-10)", "",
             "| noise | bound: AMSE asymmetric for a >= | a swept (finished) |", "|---|---|---|"]
    for t, rate in sorted(series):
        swept = ", ".join(f"{a:g}" for a, _, _ in sorted(series[(t, rate)]))
        lines.append(f"| {t} {rate:g} | {bounds[(t, rate)]:.4g} | {swept} |")
    (directory / "bound.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    protocols = sorted({r.get("protocol") or "protocol unrecorded" for r in rows})
    for (t, rate), points in sorted(series.items()):
        a, mean, std = zip(*sorted(points))
        line = ax.errorbar(a, mean, yerr=std, marker="o", capsize=3, label=f"{t} {rate:g}")[0]
        ax.axvline(bounds[(t, rate)], color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"bound a = {bounds[(t, rate)]:.3g} ({t} {rate:g})")
    ax.set_xscale("log")
    ax.set_xlabel("AMSE's a (JAL-CE), the values swept")
    ax.set_ylabel("last-epoch test accuracy (%)")
    ax.set_title("; ".join(protocols), fontsize=8)  # what the accuracies measure (jal.tables' protocol column)
    fig.legend(fontsize=8, loc="outside right center")  # beside the axes, never over the points
    fig.savefig(directory / "a_sweep.png", dpi=120)
    print(f"wrote {directory / 'a_sweep.png'} and {directory / 'bound.md'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/ablation/a_sweep")
