"""jal.tables: cell statistics, published figures beside them, table files, bad input."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jal import tables

# (loss, noise_rate) -> last_test_acc of seeds 123, 124, 125 on CIFAR-10 symmetric noise
ACCURACIES = {
    ("gce", 0.2): [86.1, 86.9, 87.3],
    ("gce", 0.8): [24.0, 26.5],         # seed 125 failed
    ("jal_ce", 0.2): [88.0, 88.6],      # seed 125 missing
    ("jal_ce", 0.8): [64.2, 65.9, 66.1],
}


def write_record(run_dir, **fields):
    record = {"status": "finished", "dataset": "cifar10", "model": "cnn8", "noise_type": "symmetric",
              "noise_labels": None, "epochs": 120, "subset": None, "history": [], **fields}
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(record))


@pytest.fixture
def record_dir(tmp_path):
    root = tmp_path / "runs"
    for (loss, rate), accuracies in ACCURACIES.items():
        for seed, accuracy in zip((123, 124, 125), accuracies):
            write_record(root / f"{loss}_sym{rate}" / str(seed), loss=loss, noise_rate=rate, seed=seed,
                         last_test_acc=accuracy)
    write_record(root / "gce_sym0.8" / "125", loss="gce", noise_rate=0.8, seed=125, status="failed",
                 error="Traceback ...\nRuntimeError: CUDA out of memory")
    # CE only at 0.8: its 0.2 cell is a missing combination
    for seed, accuracy in zip((123, 124, 125), (18.0, 19.5, 20.1)):
        write_record(root / "ce_sym0.8" / str(seed), loss="ce", noise_rate=0.8, seed=seed,
                     last_test_acc=accuracy)
    return root


def cell(rows, loss, rate):
    (row,) = [r for r in rows if r["loss"] == loss and r["noise_rate"] == rate]
    return row


def test_summarise_statistics_and_flags(record_dir):
    rows = tables.summarise(tables.load_records([record_dir]))
    assert len(rows) == 6  # 3 losses x 2 columns, including the missing CE at 0.2
    for (loss, rate), accuracies in ACCURACIES.items():
        row = cell(rows, loss, rate)
        assert row["runs"] == len(accuracies)
        assert row["mean"] == pytest.approx(np.mean(accuracies))
        assert row["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert cell(rows, "gce", 0.8)["failed"] == 1 and cell(rows, "gce", 0.8)["missing"] == 1
    assert any("CUDA out of memory" in issue for issue in cell(rows, "gce", 0.8)["issues"])
    assert cell(rows, "jal_ce", 0.2)["failed"] == 0 and cell(rows, "jal_ce", 0.2)["missing"] == 1
    assert cell(rows, "jal_ce", 0.8)["issues"] == [] and cell(rows, "jal_ce", 0.8)["missing"] == 0
    missing = cell(rows, "ce", 0.2)
    assert missing["runs"] == 0 and missing["mean"] is None and missing["issues"] == ["no runs"]
    assert [r["loss"] for r in rows if r["noise_rate"] == 0.8] == ["ce", "gce", "jal_ce"]  # the paper's order


def test_single_run_has_no_std(tmp_path):
    write_record(tmp_path / "run", loss="ce", noise_rate=0.4, seed=123, last_test_acc=58.0)
    (row,) = tables.summarise(tables.load_records([tmp_path]))
    assert row["mean"] == 58.0 and row["std"] is None and row["missing"] == 2


def test_rerun_seed_replaces_older_run(tmp_path):
    write_record(tmp_path / "old", loss="ce", noise_rate=0.4, seed=123, last_test_acc=10.0)
    write_record(tmp_path / "failed", loss="ce", noise_rate=0.4, seed=123, status="failed", error="killed")
    write_record(tmp_path / "new", loss="ce", noise_rate=0.4, seed=123, last_test_acc=50.0)
    os.utime(tmp_path / "old" / "result.json", (1, 1))  # written long before the rerun
    (row,) = tables.summarise(tables.load_records([tmp_path]))
    assert (row["runs"], row["mean"], row["failed"]) == (1, 50.0, 0)
    assert any("kept the newest" in issue and issue.endswith("new)") for issue in row["issues"])


def test_paused_run_is_missing_not_failed(tmp_path):
    write_record(tmp_path / "s123", loss="ce", noise_rate=0.4, seed=123, last_test_acc=58.0)
    write_record(tmp_path / "s124", loss="ce", noise_rate=0.4, seed=124, status="paused", epoch=37, epochs=120,
                 reason="trainer.stop_at=1 passed")
    (row,) = tables.summarise(tables.load_records([tmp_path]))
    assert (row["runs"], row["failed"], row["missing"], row["mean"]) == (1, 0, 2, 58.0)
    assert row["issues"][0] == "1/3 runs finished (seeds 123)"
    assert any(issue.startswith("paused (seed 124) after epoch 37 of 120") for issue in row["issues"])


def test_published_figure_and_source(record_dir):
    rows = tables.summarise(tables.load_records([record_dir]))
    jal = cell(rows, "jal_ce", 0.8)  # in the JAL paper's own table
    assert (jal["published"], jal["published_source"]) == (65.43, "jal2025_main")
    assert jal["difference"] == pytest.approx(np.mean(ACCURACIES[("jal_ce", 0.8)]) - 65.43)
    gce = cell(rows, "gce", 0.2)  # only in the epsilon-softmax table
    assert (gce["published"], gce["published_std"]) == (86.87, 0.06)
    assert gce["published_source"] == "epssoftmax2024_main"
    assert gce["difference"] == pytest.approx(np.mean(ACCURACIES[("gce", 0.2)]) - 86.87)
    assert cell(rows, "jal_ce", 0.2)["published"] is None  # no published JAL-CE at sym 0.2
    # the ablation rows are never put beside a cell, even where their loss matches
    published = tables.load_published()
    nce = [r for r in published if r["loss"] == "nce"]
    assert nce and all(r["source"] == "jal2025_ablation" for r in nce)
    assert tables.pick_published(published, "cifar10", ("symmetric", 0.4, None), "nce") is None
    human = tables.pick_published(published, "cifar10", ("human", None, "worst"), "jal_ce")
    assert (human["mean"], human["source"]) == (81.33, "jal2025_cifarn")


def test_published_csv_keeps_rows_and_maps_losses():
    with open(tables.DEFAULT_PUBLISHED, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["source", "dataset", "noise_type", "noise_rate", "method", "mean", "std", "epoch", "loss"]
    assert list(rows[0]) == columns
    assert len(rows) == 398
    loss_of = {r["method"]: r["loss"] for r in rows}
    assert loss_of["NCE+RCE"] == "nce_rce" and loss_of["JAL-CE"] == "jal_ce" and loss_of["AGCE"] == "agce"
    assert loss_of["AMSE (ablation)"] == "amse" and loss_of["LDR-KL"] == "" and loss_of["CEeps+MAE"] == ""


def test_loss_labels():
    assert tables.loss_label("anl_ce") == "ANL-CE" and tables.loss_label("nce_agce") == "NCE+AGCE"
    assert tables.loss_label("my_new") == "MY+NEW"


def test_main_writes_tables(record_dir, tmp_path):
    out = tmp_path / "out"
    tables.main([str(record_dir), "--out", str(out)])
    markdown = (out / "table.md").read_text()
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith("| Loss"))
    assert header == "| Loss | Sym 0.2 | Sym 0.8 |"
    jal_line = next(line for line in lines if line.startswith("| JAL-CE"))
    jal_mean, jal_std = np.mean(ACCURACIES[("jal_ce", 0.8)]), np.std(ACCURACIES[("jal_ce", 0.8)], ddof=1)
    expected = f"**{jal_mean:.2f} ± {jal_std:.2f}** (65.43, {jal_mean - 65.43:+.2f})".replace("-", "−")
    assert expected in jal_line
    assert f"**{np.mean(ACCURACIES[('jal_ce', 0.2)]):.2f}" in jal_line  # best of ours in both columns
    gce_line = next(line for line in lines if line.startswith("| GCE"))
    assert "**" not in gce_line and "(86.87†, " in gce_line
    assert next(line for line in lines if line.startswith("| CE")).startswith("| CE | — (75.47†) |")
    assert "† = epssoftmax2024_main" in markdown and "unmarked = jal2025_main" in markdown
    assert "CE, Sym 0.2: no runs" in markdown and "JAL-CE, Sym 0.2: 2/3 runs finished" in markdown
    assert "GCE, Sym 0.8: failed (seed 125)" in markdown
    with open(out / "table.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == tables.CSV_COLUMNS and len(written) == 6
    (gce,) = [r for r in written if r["loss"] == "gce" and r["noise_rate"] == "0.8"]
    assert (gce["runs"], gce["failed"], gce["loss_label"]) == ("2", "1", "GCE")
    assert gce["published_source"] == "epssoftmax2024_main"
    assert float(gce["mean"]) == pytest.approx(25.25)
    assert not list(out.glob(".table*"))  # no temporary files left behind


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no result.json"):
        tables.main([str(tmp_path), "--out", str(tmp_path / "out")])
    result = subprocess.run([sys.executable, "-m", "jal.tables", str(tmp_path), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "no result.json" in result.stderr
