"""jal.tables, jal.records and jal.fidelity: cell statistics, published figures beside them, table files, bad input."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jal import tables
from jal.fidelity import fidelity, findings, kendall_tau_b, render_fidelity
from jal.noise import asked_noise_rate
from jal.records import load_records, loss_label

# (loss, noise_rate) -> last_test_acc of seeds 123, 124, 125 on CIFAR-10 symmetric noise
ACCURACIES = {
    ("gce", 0.2): [86.1, 86.9, 87.3],
    ("gce", 0.8): [24.0, 26.5],         # seed 125 failed
    ("jal_ce", 0.2): [88.0, 88.6],      # seed 125 missing
    ("jal_ce", 0.8): [64.2, 65.9, 66.1],
}
ACCURACIES_CE_08 = [18.0, 19.5, 20.1]  # CE only at 0.8 (record_dir)


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
    for seed, accuracy in zip((123, 124, 125), ACCURACIES_CE_08):
        write_record(root / "ce_sym0.8" / str(seed), loss="ce", noise_rate=0.8, seed=seed,
                     last_test_acc=accuracy)
    return root


def cell(rows, loss, rate):
    (row,) = [r for r in rows if r["loss"] == loss and r["noise_rate"] == rate]
    return row


def test_summarise_statistics_and_flags(record_dir):
    rows = tables.summarise(load_records([record_dir]))
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
    (row,) = tables.summarise(load_records([tmp_path]))
    assert row["mean"] == 58.0 and row["std"] is None and row["missing"] == 0  # the one seed its records have


def test_clean_column_may_expect_fewer_seeds(tmp_path):
    """A CPU-sized sweep runs clean with one seed: that cell is complete, a noisy cell with one is not."""
    write_record(tmp_path / "clean", loss="ce", noise_type="none", noise_rate=0.0, seed=123, last_test_acc=80.0)
    write_record(tmp_path / "noisy", loss="ce", noise_rate=0.4, seed=123, last_test_acc=58.0)
    clean, noisy = tables.summarise(load_records([tmp_path]), expect_seeds=3, expect_clean_seeds=1)
    assert (clean["noise_type"], clean["missing"], clean["issues"]) == ("none", 0, [])
    assert (noisy["missing"], noisy["issues"]) == (2, ["1/3 runs finished (seeds 123)"])
    clean, _ = tables.summarise(load_records([tmp_path]), expect_seeds=3)  # the clean column expects three too
    assert clean["missing"] == 2
    markdown = tables.render_markdown(tables.summarise(load_records([tmp_path]), 3, expect_clean_seeds=1))
    assert "Runs expected per cell: Clean: 1 (--expect-clean-seeds); Sym 0.4: 3 (--expect-seeds)." in markdown


def test_rerun_seed_replaces_older_run(tmp_path):
    write_record(tmp_path / "old", loss="ce", noise_rate=0.4, seed=123, last_test_acc=10.0)
    write_record(tmp_path / "failed", loss="ce", noise_rate=0.4, seed=123, status="failed", error="killed")
    write_record(tmp_path / "new", loss="ce", noise_rate=0.4, seed=123, last_test_acc=50.0)
    os.utime(tmp_path / "old" / "result.json", (1, 1))  # written long before the rerun
    (row,) = tables.summarise(load_records([tmp_path]))
    assert (row["runs"], row["mean"], row["failed"]) == (1, 50.0, 0)
    assert any("kept the newest" in issue and issue.endswith("new)") for issue in row["issues"])


def test_a_cell_mixing_precisions_says_so(tmp_path):
    for seed, precision in ((123, "fp32"), (124, "bf16"), (125, "fp32")):
        write_record(tmp_path / f"s{seed}", loss="ce", noise_rate=0.4, seed=seed, last_test_acc=58.0,
                     precision=precision)
    write_record(tmp_path / "jal", loss="jal_ce", noise_rate=0.4, seed=123, last_test_acc=60.0, precision="fp32")
    rows = tables.summarise(load_records([tmp_path]))
    ce, jal = cell(rows, "ce", 0.4), cell(rows, "jal_ce", 0.4)
    assert ce["precisions"] == ["bf16", "fp32"] and jal["precisions"] == ["fp32"]
    assert "runs differ in precision: bf16 (seeds 124); fp32 (seeds 123, 125)" in ce["issues"]
    assert not any("precision" in issue for issue in jal["issues"])
    markdown = tables.render_markdown(rows, with_fidelity=False)
    assert "precision: bf16, fp32 (mixed within 1 cell: CE Sym 0.4)." in markdown
    assert "- CE, Sym 0.4: runs differ in precision" in markdown


def test_one_precision_is_named_under_the_table(tmp_path):
    write_record(tmp_path / "s123", loss="ce", noise_rate=0.4, seed=123, last_test_acc=58.0, precision="bf16")
    write_record(tmp_path / "old", loss="ce", noise_rate=0.8, seed=123, last_test_acc=20.0)  # no precision field
    markdown = tables.render_markdown(tables.summarise(load_records([tmp_path])), with_fidelity=False)
    assert "precision: bf16, unrecorded." in markdown


def test_a_realised_noise_rate_off_the_asked_one_marks_its_cell(tmp_path):
    """Symmetric 0.4 on 200 images per class changes 36% of the labels (exact sampling rounds each class pair's
    count down): more than 1 pp off, so the cell is marked and its runs listed; asymmetric 0.4 changes 20% of
    CIFAR-10's labels (half the classes flip), which is what it asks, and 39.6% at symmetric 0.4 is within 1 pp."""
    flips = [[0.0] * 10 for _ in range(10)]  # the record's transition matrix: only its size is read here
    write_record(tmp_path / "a", loss="ce", noise_rate=0.4, seed=123, last_test_acc=50.0, realised_noise_rate=0.36)
    write_record(tmp_path / "b", loss="ce", noise_rate=0.4, seed=124, last_test_acc=52.0, realised_noise_rate=0.396)
    write_record(tmp_path / "c", loss="ce", noise_rate=0.8, seed=123, last_test_acc=20.0, realised_noise_rate=0.792)
    write_record(tmp_path / "d", loss="ce", noise_type="asymmetric", noise_rate=0.4, seed=123, last_test_acc=60.0,
                 realised_noise_rate=0.2, noise_transition=flips)
    rows = tables.summarise(load_records([tmp_path]))
    assert [r["noise_gap"] for r in rows] == [True, False, False]  # Sym 0.4, Sym 0.8, Asym 0.4
    assert [issue for issue in rows[0]["issues"] if issue.startswith(
        "realised noise rate off the one asked by more than 1 pp: seed 123 36.0% of labels changed, 40.0% asked (")]
    markdown = tables.render_markdown(rows, with_fidelity=False)
    assert ("| CE | **51.00 ± 1.41**ⁿ (58.05, −7.05) | **20.00** (19.74, +0.26) | **60.00** (73.85, −13.85) |"
            in markdown)
    assert "\nⁿ The realised noise rate of a run of this cell is more than 1 pp off the one asked" in markdown
    assert asked_noise_rate("human", None, 10) is None


def test_paused_run_is_missing_not_failed(tmp_path):
    write_record(tmp_path / "s123", loss="ce", noise_rate=0.4, seed=123, last_test_acc=58.0)
    write_record(tmp_path / "s124", loss="ce", noise_rate=0.4, seed=124, status="paused", epoch=37, epochs=120,
                 reason="trainer.stop_at=1 passed")
    (row,) = tables.summarise(load_records([tmp_path]))  # the paused run's seed is one the sweep asked
    assert (row["runs"], row["failed"], row["missing"], row["mean"]) == (1, 0, 1, 58.0)
    assert row["issues"][0] == "1/2 runs finished (seeds 123)"
    assert any(issue.startswith("paused (seed 124) after epoch 37 of 120") for issue in row["issues"])


def test_published_figure_and_source(record_dir):
    rows = tables.summarise(load_records([record_dir]))
    jal = cell(rows, "jal_ce", 0.8)  # in the JAL paper's own table
    assert (jal["published"], jal["published_source"]) == (65.43, "jal2025_main")
    assert jal["difference"] == pytest.approx(np.mean(ACCURACIES[("jal_ce", 0.8)]) - 65.43)
    gce = cell(rows, "gce", 0.2)  # only in the epsilon-softmax table
    assert (gce["published"], gce["published_std"]) == (86.87, 0.06)
    assert gce["published_source"] == "epssoftmax2024_main"
    assert gce["difference"] == pytest.approx(np.mean(ACCURACIES[("gce", 0.2)]) - 86.87)
    assert cell(rows, "jal_ce", 0.2)["published"] is None  # no published JAL-CE at sym 0.2
    # the ablation rows stand beside the ablation losses' cells, labelled as the ablation table's
    published = tables.load_published()
    nce = [r for r in published if r["loss"] == "nce"]
    assert nce and all(r["source"] == "jal2025_ablation" for r in nce)
    ablation = tables.pick_published(published, "cifar10", ("symmetric", 0.4, None), "nce")
    assert (ablation["mean"], ablation["source"]) == (69.37, "jal2025_ablation")
    assert tables.pick_published(published, "cifar10", ("symmetric", 0.8, None), "agce_mae")["mean"] == 44.61
    # the eps-Softmax paper's baselines have their losses now
    ldr = tables.pick_published(published, "cifar100", ("symmetric", 0.6, None), "ldr_kl")
    assert (ldr["mean"], ldr["std"], ldr["source"]) == (22.59, 0.23, "epssoftmax2024_main")
    # anl2023's cells are in the JAL and eps-Softmax tables too, which come first
    assert tables.pick_published(published, "cifar10", ("symmetric", 0.8, None), "anl_ce")["source"] == "jal2025_main"
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
    assert loss_of["AMSE (ablation)"] == "amse" and loss_of["LDR-KL"] == "ldr_kl"
    assert (loss_of["CEeps+MAE"], loss_of["FLeps+MAE"], loss_of["CE+LC"]) == ("ce_eps_mae", "fl_eps_mae", "ce_lc")
    assert (loss_of["NLNL"], loss_of["AGCE+MAE (ablation)"]) == ("nlnl", "agce_mae")
    assert all(r["loss"] for r in rows)  # every published row has a loss this project trains


def test_every_published_loss_has_a_config_and_every_figure_a_labelled_source():
    published = tables.load_published()
    configs = {p.stem for p in (tables.REPO_ROOT / "configs" / "loss").glob("*.yaml")}
    assert {r["loss"] for r in published} <= configs
    assert {r["source"] for r in published} <= set(tables.SOURCE_PRIORITY) == set(tables.SOURCE_NOTES)
    assert set(tables.SOURCE_MARKS) == set(tables.SOURCE_PRIORITY)


def test_nlnl_published_figure_is_flagged(tmp_path):
    write_record(tmp_path / "nlnl", loss="nlnl", noise_rate=0.4, seed=123, last_test_acc=60.0)
    markdown = tables.render_markdown(tables.summarise(load_records([tmp_path])))
    line = next(line for line in markdown.splitlines() if line.startswith("| NLNL"))
    assert "(63.90†*, −3.90)" in line
    assert "three-stage method" in markdown and "ε-Softmax paper" in markdown


def test_loss_labels():
    assert loss_label("anl_ce") == "ANL-CE" and loss_label("nce_agce") == "NCE+AGCE"
    assert loss_label("my_new") == "MY+NEW"


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


@pytest.mark.full  # python -m jal.tables
def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no result.json"):
        tables.main([str(tmp_path), "--out", str(tmp_path / "out")])
    result = subprocess.run([sys.executable, "-m", "jal.tables", str(tmp_path), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "no result.json" in result.stderr



# ---- a user's own sweep: seeds, protocols, settings ----

USER = "dataset.subset=500,trainer.epochs=1"  # a CPU user's sweep: its settings beyond the cells


def write_user_sweep(root, seeds=(1,), losses=("ce", "jal_ce"), rates=(0.4, 0.8), settings=USER, epochs=1,
                     subset=500, test_subset=None, accuracy=lambda loss, rate: 30.0 + 10 * (loss == "jal_ce") - rate):
    """Records as `jal-train -m loss=... noise.rate=... seed=... dataset.subset=500 trainer.epochs=1` writes them."""
    for loss in losses:
        for rate in rates:
            for seed in seeds:
                write_record(root / settings / f"{loss}_{rate}" / f"seed{seed}", loss=loss, noise_rate=rate, seed=seed,
                             last_test_acc=accuracy(loss, rate), settings=settings, epochs=epochs, subset=subset,
                             config={"dataset": {"subset": subset, "test_subset": test_subset}})


def test_expected_seeds_are_the_seeds_of_the_sweeps_own_records(tmp_path):
    """A one-seed sweep is complete (not "1/3 runs finished"); a sweep of two seeds missing one run says which."""
    write_user_sweep(tmp_path / "one")
    rows = tables.summarise(load_records([tmp_path / "one"]))
    assert [(r["expected"], r["missing"], r["issues"]) for r in rows] == [(1, 0, [])] * 4
    markdown = tables.render_markdown(rows)
    assert "All cells complete." in markdown and "/3 runs" not in markdown
    assert "Runs expected per cell: seed 1 (the seeds its sweep's records have: same settings, noisy or clean;" \
        in markdown
    # another sweep, of AMSE's a with two seeds, beside it: its cells expect its own seeds
    write_user_sweep(tmp_path / "two", seeds=(1, 2), losses=("jal_ce",), settings=f"{USER},loss.passive.a=10")
    (tmp_path / "two" / f"{USER},loss.passive.a=10" / "jal_ce_0.8" / "seed2" / "result.json").unlink()
    rows = tables.summarise(load_records([tmp_path]))
    short = [r for r in rows if r["loss"].endswith("a=10]") and r["noise_rate"] == 0.8]
    assert [(r["expected"], r["issues"]) for r in short] == [(2, ["1/2 runs finished (seeds 1); no run of seed 2"])]
    assert all(r["issues"] == [] for r in rows if "passive" not in r["loss"])  # the one-seed sweep: still complete
    # asked for explicitly, the count is the one given
    assert {r["missing"] for r in tables.summarise(load_records([tmp_path / "one"]), expect_seeds=3)} == {2}


def test_the_best_is_chosen_within_one_protocol(tmp_path):
    """Rows of a 1-epoch sweep and of the 120-epoch protocol stand in two tables, each with its own best: a
    1-epoch CE above a 120-epoch JAL-CE does not take JAL-CE's bold."""
    write_record(tmp_path / "paper" / "ce", loss="ce", noise_rate=0.8, seed=123, last_test_acc=19.0)
    write_record(tmp_path / "paper" / "jal", loss="jal_ce", noise_rate=0.8, seed=123, last_test_acc=64.0)
    write_user_sweep(tmp_path / "user", losses=("ce", "nce_rce"), rates=(0.8,), settings="trainer.epochs=1",
                     subset=None, accuracy=lambda loss, rate: {"ce": 70.0, "nce_rce": 50.0}[loss])
    rows = tables.summarise(load_records([tmp_path]))
    markdown = tables.render_markdown(rows)
    assert "The records hold 2 protocols: a table each, the best of ours chosen within it." in markdown
    one = markdown.index("### 1 epoch on the whole training set, tested on the whole test set")
    paper = markdown.index("### 120 epochs on the whole training set, tested on the whole test set")
    assert one < paper  # the smaller protocol first
    short, full = markdown[one:paper], markdown[paper:]
    assert "| CE [trainer.epochs=1] | **70.00** (19.74ᴾ, +50.26) |" in short
    assert "| NCE+RCE [trainer.epochs=1] | 50.00 (54.99ᴾ, −4.99) |" in short
    assert "| JAL-CE | **64.00** (65.43, −1.43) |" in full and "| CE | 19.00 (19.74, −0.74) |" in full
    assert "ᴾ" not in full  # the paper's protocol: its published figures are of its own
    # the fidelity score ranks the losses of one protocol at a time
    columns = fidelity(rows)["columns"]
    assert [(c["protocol"], c["losses"]) for c in columns] == [
        ("1 epoch on the whole training set, tested on the whole test set",
         ["ce [trainer.epochs=1]", "nce_rce [trainer.epochs=1]"]),
        ("120 epochs on the whole training set, tested on the whole test set", ["ce", "jal_ce"])]


def test_a_cell_pooling_two_protocols_is_no_candidate_for_best(tmp_path):
    write_record(tmp_path / "a", loss="ce", noise_rate=0.8, seed=123, last_test_acc=90.0, epochs=12, subset=10000)
    write_record(tmp_path / "b", loss="ce", noise_rate=0.8, seed=124, last_test_acc=20.0)
    write_record(tmp_path / "c", loss="jal_ce", noise_rate=0.8, seed=123, last_test_acc=60.0)
    rows = tables.summarise(load_records([tmp_path]))
    ce = cell(rows, "ce", 0.8)
    assert ce["protocol"] == "mixed" and ce["issues"][-1] == (
        "runs of several protocols: 12 epochs on 10,000 training images, tested on the whole test set (seeds 123); "
        "120 epochs on the whole training set, tested on the whole test set (seeds 124)")
    markdown = tables.render_markdown(rows)
    assert "| CE | 55.00 ± 49.50 (19.74ᴾ, +35.26) |" in markdown and "| JAL-CE | **60.00** (65.43, −5.43) |" in markdown


def test_rows_with_settings_show_the_published_figure_of_their_cell(tmp_path):
    """A user's 1-epoch sweep on 500 images: CE and JAL-CE at symmetric 0.4 and 0.8 have published figures, shown
    beside the rows and marked as measured under another protocol; a setting of the paper's protocol is not."""
    write_user_sweep(tmp_path / "user")
    write_record(tmp_path / "a30" / "jal", loss="jal_ce", noise_rate=0.8, seed=1, last_test_acc=64.0,
                 settings="loss.passive.a=30")
    rows = tables.summarise(load_records([tmp_path / "user"]))
    assert [(r["loss"], r["noise_rate"], r["published"]) for r in rows] == [
        (f"ce [{USER}]", 0.4, 58.05), (f"ce [{USER}]", 0.8, 19.74),
        (f"jal_ce [{USER}]", 0.4, 87.53), (f"jal_ce [{USER}]", 0.8, 65.43)]
    markdown = tables.render_markdown(rows)
    assert "No cell has a published figure" not in markdown
    assert "Whole table: 4 of 4 cells with a published figure have ours, in 2 columns." in markdown
    assert f"| CE [{USER}] | 29.60 (58.05ᴾ, −28.45) | 29.20 (19.74ᴾ, +9.46) |" in markdown
    assert ("ᴾ Published under another protocol than ours: 120 epochs on the whole training set, tested on the whole "
            "test set, where ours is 1 epoch on 500 training images, tested on the whole test set.") in markdown
    same = tables.render_markdown(tables.summarise(load_records([tmp_path / "a30"])))
    assert "| JAL-CE [loss.passive.a=30] | **64.00** (65.43, −1.43) |" in same and "ᴾ" not in same


def test_the_header_names_the_training_and_the_test_subset(tmp_path):
    write_user_sweep(tmp_path, subset=2000, test_subset=1000, settings="dataset.subset=2000,dataset.test_subset=1000")
    rows = tables.summarise(load_records([tmp_path]))
    markdown = tables.render_markdown(rows)
    assert ("4 finished runs, 0 failed; epochs: 1; training subset: 2000; test subset: 1000; precision: unrecorded."
            in markdown)
    assert "where ours is 1 epoch on 2,000 training images, tested on 1,000 test images." in markdown
    tables.write_tables(rows, tmp_path / "out")
    with open(tmp_path / "out" / "table.csv", newline="") as f:
        protocols = {r["protocol"] for r in csv.DictReader(f)}
    assert protocols == {"1 epoch on 2,000 training images, tested on 1,000 test images"}


# ---- fidelity score ----

def score_row(loss, column, mean, published, published_std=None, dataset="cifar10"):
    """The fields of a summarise() row that fidelity() reads."""
    return {"dataset": dataset, "loss": loss, "column": column, "mean": mean, "published": published,
            "published_std": published_std}


SYM8, SYM4, ASYM4 = ("symmetric", 0.8, None), ("symmetric", 0.4, None), ("asymmetric", 0.4, None)


def test_kendall_tau_b_by_hand():
    # pairs of [1,2,2,3] vs [1,3,2,4]: 5 concordant, 0 discordant, 1 tied in ours only -> 5/sqrt(5 * 6)
    assert kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / np.sqrt(30))
    # [3,1,2] vs [1,2,3]: (0,1) and (0,2) discordant, (1,2) concordant -> (1 - 2) / 3
    assert kendall_tau_b([3, 1, 2], [1, 2, 3]) == pytest.approx(-1 / 3)
    # a pair tied on both sides drops out of both sides of the denominator: 2 / sqrt(2 * 2)
    assert kendall_tau_b([1, 1, 2], [5, 5, 7]) == pytest.approx(1.0)
    assert kendall_tau_b([4, 4, 4], [1, 2, 3]) is None  # no ranking on our side
    assert kendall_tau_b([1.0], [2.0]) is None and kendall_tau_b([], []) is None


def test_fidelity_counts_at_the_boundaries():
    rows = [score_row("ce", SYM8, 16.03, 15.03),          # 1 pp above, 1.0000000000000018 in floats
            score_row("gce", SYM8, 24.81, 25.82, 1.03),   # 1.01 pp below; exactly 2 std below (25.82 - 2.06)
            score_row("sce", SYM8, 24.79, 25.82, 0.5),    # 1.03 pp below; 1.03 > 2 std
            score_row("jal_ce", SYM8, 64.43, 65.43, 0.0)]  # exactly 1 pp below; std 0 is known: not within
    rows[1]["mean"] = 25.82 - 2 * 1.03
    (column,) = fidelity(rows)["columns"]
    assert (column["within_1pp"], column["within_2std"], column["with_std"]) == (2, 1, 3)
    assert column["compared"] == column["published"] == 4
    assert column["mean_abs_difference"] == pytest.approx((1 + 2.06 + 1.03 + 1) / 4)
    # ours 16.03 < 23.76 < 24.79 < 64.43, published 15.03 < 25.82 = 25.82 < 65.43: 5 concordant, 1 tied
    assert column["tau"] == pytest.approx(5 / np.sqrt(30))


def test_fidelity_missing_cells_and_whole_table():
    rows = [  # sym 0.8: tau 5/sqrt(30) over 4 losses (6 pairs); a loss with no run; a loss with no figure
        *[score_row(loss, SYM8, ours, theirs) for loss, ours, theirs in
          [("ce", 1, 1), ("gce", 2, 3), ("sce", 2, 2), ("nce_rce", 3, 4)]],
        score_row("anl_ce", SYM8, None, 50.0), score_row("jal_ce", SYM8, 70.0, None),
        # sym 0.4: tau -1/3 over 3 losses (3 pairs)
        *[score_row(loss, SYM4, ours, theirs, 1.0) for loss, ours, theirs in
          [("ce", 3, 1), ("gce", 1, 2), ("sce", 2, 3)]],
        score_row("ce", ASYM4, 10.0, 10.5),  # one loss: no tau, still counted
        score_row("ce", ("none", 0.0, None), 90.0, None),  # no published figure: no column
    ]
    score = fidelity(rows)
    by_column = {c["column"]: c for c in score["columns"]}
    assert list(by_column) == ["Sym 0.4", "Sym 0.8", "Asym 0.4"]
    sym8 = by_column["Sym 0.8"]
    assert (sym8["published"], sym8["compared"], sym8["losses"]) == (5, 4, ["ce", "gce", "sce", "nce_rce"])
    assert sym8["tau"] == pytest.approx(5 / np.sqrt(30)) and sym8["with_std"] == 0
    assert by_column["Sym 0.4"]["tau"] == pytest.approx(-1 / 3)
    assert by_column["Asym 0.4"]["tau"] is None and by_column["Asym 0.4"]["within_1pp"] == 1
    table = score["table"]
    assert table["tau"] == pytest.approx((6 * 5 / np.sqrt(30) + 3 * (-1 / 3)) / 9)  # weighted by pairs
    assert (table["columns"], table["ranked_columns"], table["published"], table["compared"]) == (3, 2, 9, 8)
    # |differences|: sym 0.8 0, 1, 0, 1; sym 0.4 2, 1, 1 (std 1: all within 2 std); asym 0.4 0.5
    assert (table["within_1pp"], table["within_2std"], table["with_std"]) == (7, 3, 3)
    assert table["mean_abs_difference"] == pytest.approx(6.5 / 8)


def test_fidelity_without_published_figures():
    score = fidelity([score_row("ce", SYM8, 20.0, None)])
    assert score["columns"] == [] and score["table"]["tau"] is None
    assert score["table"]["mean_abs_difference"] is None
    assert "No cell has a published figure" in render_fidelity(score)


def test_fidelity_in_table_md_and_json(record_dir, tmp_path):
    out = tmp_path / "out"
    tables.main([str(record_dir), "--out", str(out)])
    # Sym 0.2: CE has no run, GCE 86.767 vs 86.87 ± 0.06, JAL-CE no published figure.
    # Sym 0.8: CE 19.2 vs 19.74, GCE 25.25 vs 25.82 ± 1.03, JAL-CE 65.4 vs 65.43: same order, tau 1.
    score = json.loads((out / "fidelity.json").read_text())
    sym2, sym8 = score["columns"]
    assert (sym2["column"], sym2["published"], sym2["compared"], sym2["tau"]) == ("Sym 0.2", 2, 1, None)
    assert (sym2["within_1pp"], sym2["within_2std"], sym2["with_std"]) == (1, 1, 1)
    assert sym2["mean_abs_difference"] == pytest.approx(86.87 - 86.1 / 3 - 86.9 / 3 - 87.3 / 3)
    assert (sym8["column"], sym8["tau"], sym8["within_1pp"], sym8["within_2std"], sym8["with_std"]) == \
        ("Sym 0.8", 1.0, 3, 1, 1)
    assert sym8["mean_abs_difference"] == pytest.approx((0.54 + 0.57 + 0.03) / 3)
    assert score["table"] == pytest.approx({
        "columns": 2, "ranked_columns": 1, "published": 5, "compared": 4, "tau": 1.0, "within_1pp": 4,
        "within_2std": 2, "with_std": 2, "mean_abs_difference": (86.87 - 260.3 / 3 + 0.54 + 0.57 + 0.03) / 4})
    markdown = (out / "table.md").read_text()
    assert markdown.index("## Fidelity to the published figures") < markdown.index("## CIFAR-10")
    assert ("Whole table: 4 of 5 cells with a published figure have ours, in 2 columns. Kendall's τ 1.00 "
            "(over the 1 column with a τ); within 1 pp: 4/4; within 2 published std: 2/2; mean |ours − published| "
            "0.31 pp.") in markdown
    assert "| CIFAR-10 | Sym 0.2 | 1/2 | n/a | 1/1 | 1/1 | 0.10 |" in markdown
    assert "| CIFAR-10 | Sym 0.8 | 3/3 | 1.00 | 3/3 | 1/1 | 0.38 |" in markdown
    assert not list(out.glob(".fidelity*"))


def test_findings_check_the_papers_claims_on_our_cells(record_dir):
    rows = tables.summarise(load_records([record_dir]))
    (jal_vs_ce,) = findings(rows)  # NCE+RCE and asymmetric 0.4 have no runs here: not listed
    ce, jal = ACCURACIES_CE_08, ACCURACIES[("jal_ce", 0.8)]
    assert jal_vs_ce["difference"] == pytest.approx(np.mean(jal) - np.mean(ce))  # 65.4 - 19.2 = 46.2
    assert jal_vs_ce["twice_larger_std"] == pytest.approx(2 * max(np.std(jal, ddof=1), np.std(ce, ddof=1)))
    assert jal_vs_ce["published_difference"] == pytest.approx(65.43 - 19.74)
    assert jal_vs_ce["holds"] is True and jal_vs_ce["runs"] == [3, 3]
    assert jal_vs_ce["finding"] == "CIFAR-10 Sym 0.8: JAL-CE ≥ CE + 5 pp, by more than 2 × the larger std"
    sym08 = ("symmetric", 0.8, None)
    claims = [("cifar10", sym08, "ce", "jal_ce", None, False),         # reversed: does not hold
              ("cifar10", sym08, "gce", "ce", 6.0, False),            # 25.25 - 19.2 = 6.05 >= 6: holds
              ("cifar10", sym08, "gce", "ce", 7.0, False),            # but not by 7
              ("cifar10", sym08, "gce", "ce", 6.0, True)]             # and by more than 2 std (3.54)
    reversed_, gce_6, gce_7, gce_significant = findings(rows, claims)
    assert (reversed_["holds"], gce_6["holds"], gce_7["holds"]) == (False, True, False)
    assert reversed_["finding"] == "CIFAR-10 Sym 0.8: CE > JAL-CE" and gce_7["finding"].endswith("GCE ≥ CE + 7 pp")
    assert gce_significant["twice_larger_std"] == pytest.approx(2 * np.std([24.0, 26.5], ddof=1))
    assert gce_significant["holds"] is True and gce_significant["runs"] == [2, 3]


def test_findings_need_two_seeds_to_judge_the_std(tmp_path):
    for loss, accuracy in (("ce", 20.0), ("jal_ce", 30.0)):
        write_record(tmp_path / loss, loss=loss, noise_rate=0.8, seed=123, last_test_acc=accuracy)
    rows = tables.summarise(load_records([tmp_path]))
    (finding,) = findings(rows)
    assert (finding["difference"], finding["twice_larger_std"], finding["holds"]) == (10.0, None, None)
    markdown = tables.render_markdown(rows)
    assert "| CIFAR-10 Sym 0.8: JAL-CE ≥ CE + 5 pp, by more than 2 × the larger std | +10.00 | +45.69 | " \
           "not yet: needs 2+ seeds of each |" in markdown
    tables.write_tables(rows, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "fidelity.json").read_text())["findings"] == [finding]


def test_a_finding_within_twice_the_std_does_not_hold(tmp_path):
    for loss, accuracies in (("ce", (20.0, 24.0)), ("jal_ce", (25.0, 27.0))):
        for seed, accuracy in zip((123, 124), accuracies):
            write_record(tmp_path / f"{loss}{seed}", loss=loss, noise_rate=0.8, seed=seed, last_test_acc=accuracy)
    rows = tables.summarise(load_records([tmp_path]))
    claim = ("cifar10", ("symmetric", 0.8, None), "jal_ce", "ce", None, True)
    (finding,) = findings(rows, [claim])
    # 26 - 22 = 4 > 0, but CE's std is sqrt(8) = 2.83: 4 < 5.66
    assert finding["difference"] == 4.0 and finding["twice_larger_std"] == pytest.approx(2 * 8 ** 0.5)
    assert finding["holds"] is False and finding["finding"].endswith("JAL-CE > CE, by more than 2 × the larger std")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Committed tables are derived state: each must be what jal.tables makes of the committed records.
COMMITTED_TABLES = [  # (table, its records, the flags that made it)
    ("results/quick", "results/quick/runs/cifar10", ["--expect-seeds", "3", "--expect-clean-seeds", "1"]),
    ("results/cifar10", "results/runs/cifar10", ["--expect-seeds", "3"]),
]


@pytest.mark.parametrize("table_dir, records_dir, flags", COMMITTED_TABLES)
def test_committed_table_is_rebuilt_from_committed_records(table_dir, records_dir, flags, tmp_path):
    records = os.path.join(REPO, records_dir)
    if not os.path.isdir(records):
        pytest.skip(f"no committed records for {table_dir}")
    tables.main([records, "--out", str(tmp_path), *flags])
    for name in ("table.md", "table.csv", "fidelity.json"):
        with open(os.path.join(REPO, table_dir, name)) as committed, open(tmp_path / name) as rebuilt:
            assert committed.read() == rebuilt.read(), f"{table_dir}/{name} is stale: rebuild it with jal.tables"


def test_the_table_says_where_its_runs_trained(tmp_path):
    """Two runs this host trained and one another machine did: the header counts them apart and names the other
    machine; the committed tables count their records as come with the repository."""
    from jal.record import this_host

    for seed, host, device in ((123, this_host(), "this CPU"), (124, this_host(), "this CPU"),
                               (125, "gpu-node-7", "NVIDIA H200")):
        write_record(tmp_path / str(seed), loss="ce", noise_rate=0.8, seed=seed, last_test_acc=20.0, host=host,
                     device_name=device)
    markdown = tables.render_markdown(tables.summarise(load_records([tmp_path])), with_fidelity=False)
    assert ("\n3 finished runs: 2 trained here, 1 trained on another machine (those not trained here on NVIDIA "
            "H200).\n") in markdown
    committed = open(os.path.join(REPO, "results", "quick", "table.md")).read()
    assert "\n90 finished runs: 90 came with the repository (those not trained here on " in committed
