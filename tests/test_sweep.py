"""Hydra multirun sweeps through the basic and the submitit (local, as on SLURM) launchers, their table,
a second sweep skipping every finished run, and the notebook on the records they wrote."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_notebook import FIGURES, run_notebook

from jal import tables

TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=2", "logger=none",
        "trainer.progress=false", "loss=ce,jal_ce", "noise=symmetric", "noise.rate=0.2,0.8"]


def multirun(out_root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "jal.train", "-m", *TINY, f"out_root={out_root}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records_of(out_root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in sorted(out_root.rglob("result.json"))}


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    out_root = tmp_path_factory.mktemp("basic")
    multirun(out_root)
    return out_root


def test_basic_launcher_sweep_writes_one_record_per_cell(basic_sweep):
    records = records_of(basic_sweep)
    # each run's directory is a function of its cell: dataset/noise/loss/seed
    expected = {basic_sweep / f"synthetic/symmetric_{r}/{loss}/seed123/result.json"
                for r in (0.2, 0.8) for loss in ("ce", "jal_ce")}
    assert set(records) == expected
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "finished" and len(record["history"]) == 2


def test_sweep_started_again_skips_every_run(basic_sweep):
    before = records_of(basic_sweep)
    done = multirun(basic_sweep)
    assert records_of(basic_sweep) == before  # no record was rewritten
    assert done.stdout.count("finished already") + done.stderr.count("finished already") == 4


def test_table_of_the_sweep_has_four_cells(basic_sweep, tmp_path):
    assert tables.main([str(basic_sweep), "--out", str(tmp_path), "--expect-seeds", "1"]) in (None, 0)
    rows = tables.summarise(tables.load_records([basic_sweep]), expect_seeds=1)
    assert {(r["loss"], r["noise_rate"]) for r in rows} == {(loss, rate) for loss in ("ce", "jal_ce")
                                                           for rate in (0.2, 0.8)}
    assert all(r["runs"] == 1 for r in rows)
    for row in rows:  # the cell's mean is the one run's last-epoch accuracy
        path = basic_sweep / f"synthetic/symmetric_{row['noise_rate']}/{row['loss']}/seed123/result.json"
        assert row["mean"] == pytest.approx(json.loads(path.read_text())["last_test_acc"])
    table = (tmp_path / "table.md").read_text()
    assert "| CE |" in table and "| JAL-CE |" in table and "Sym 0.8" in table


def test_submitit_local_launcher_runs_the_same_sweep(tmp_path, basic_sweep):
    multirun(tmp_path, "hydra/launcher=local")
    local = {p.relative_to(tmp_path): json.loads(p.read_text()) for p in records_of(tmp_path)}
    basic = {p.relative_to(basic_sweep): json.loads(p.read_text()) for p in records_of(basic_sweep)}
    assert set(local) == set(basic)
    for name in local:  # same cells, same seeds, same CPU: the same training
        assert local[name]["last_test_acc"] == basic[name]["last_test_acc"]
        assert local[name]["history"][0]["train_loss"] == pytest.approx(basic[name]["history"][0]["train_loss"])


def test_notebook_runs_on_the_sweep_records(basic_sweep, tmp_path, monkeypatch):
    run_notebook([basic_sweep], tmp_path, monkeypatch)
    written = {p.name for p in Path(tmp_path).iterdir()}
    assert "amse_lower_bound.png" in written
    assert any(name.startswith("accuracy_vs_noise") for name in written)
    assert len(written) >= 2 and set(written) <= set(FIGURES) | {n.replace("cifar10", "synthetic") for n in FIGURES}
