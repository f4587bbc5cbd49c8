"""notebooks/results.ipynb runs top to bottom on a small set of records and writes its figures."""

import json
import os
from pathlib import Path

import nbformat
import numpy as np
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"
FIGURES = ["accuracy_vs_noise_cifar10.png", "test_acc_per_epoch_cifar10.png", "memorisation_cifar10.png",
           "amse_lower_bound.png"]


def write_fake_records(directory):
    """result.json records as the training entrypoint writes them: CE and JAL-CE on CIFAR-10, clean,
    symmetric 0.4/0.8 and asymmetric 0.4, two seeds, five epochs of history, and one failed run.
    Swap this for a real tiny training sweep by pointing JAL_RECORDS at its output directory instead."""
    directory = Path(directory)
    settings = [("none", 0.0), ("symmetric", 0.4), ("symmetric", 0.8), ("asymmetric", 0.4)]
    for loss, robust in (("ce", False), ("jal_ce", True)):
        for noise_type, rate in settings:
            for seed in (123, 124):
                rng = np.random.default_rng(seed)
                epochs = np.arange(1, 6)
                clean = 40 + 10 * epochs + rng.normal(0, 1, 5)
                memorised = np.zeros(5) if robust else 5.0 * epochs * rate  # CE fits the wrong labels
                history = [{"epoch": int(e), "train_loss": 2.0 / e, "train_acc_noisy": float(c * (1 - rate)),
                            "train_acc_clean_subset": float(c),
                            "train_acc_corrupted_subset": float(c - 2 * m),
                            "train_memorised": float(m), "test_acc": float(c - 30 * rate * (not robust)),
                            "lr": 0.01, "images_per_second": 350.0, "seconds": 1.0}
                           for e, c, m in zip(epochs, clean, memorised)]
                record = {"status": "finished", "dataset": "cifar10", "model": "cnn8", "loss": loss,
                          "noise_type": noise_type, "noise_rate": rate, "noise_labels": None, "seed": seed,
                          "epochs": 5, "last_test_acc": history[-1]["test_acc"],
                          "best_test_acc": max(h["test_acc"] for h in history), "realised_noise_rate": rate,
                          "wall_seconds": 5.0, "images_per_second": 350.0, "device": "cpu",
                          "precision": "fp32",
                          "git_commit": "test", "subset": 2000, "config": {}, "history": history}
                run_dir = directory / f"{loss}_{noise_type}{rate}" / str(seed)
                run_dir.mkdir(parents=True)
                (run_dir / "result.json").write_text(json.dumps(record))
    failed = directory / "ce_symmetric0.8" / "125"
    failed.mkdir(parents=True)
    (failed / "result.json").write_text(json.dumps({
        "status": "failed", "error": "RuntimeError: loss is NaN", "dataset": "cifar10", "model": "cnn8",
        "loss": "ce", "noise_type": "symmetric", "noise_rate": 0.8, "noise_labels": None, "seed": 125}))


def run_notebook(records, figures, monkeypatch):
    monkeypatch.setenv("JAL_RECORDS", os.pathsep.join(map(str, records)))
    monkeypatch.setenv("JAL_FIGURES", str(figures))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is the venv's own kernel: jupyter_client runs a kernelspec's "python" as sys.executable
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return notebook


def test_notebook_runs_and_writes_figures(tmp_path, monkeypatch):
    write_fake_records(tmp_path / "records")
    notebook = run_notebook([tmp_path / "records"], tmp_path / "figures", monkeypatch)
    for name in FIGURES:
        assert (tmp_path / "figures" / name).stat().st_size > 1000, name
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "17 records (16 finished)" in text and "skipped" not in text
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == len(FIGURES)  # each figure is also shown
    markdown = [output["data"]["text/markdown"] for output in outputs if "text/markdown" in output.get("data", {})]
    # the fidelity cell: JAL-CE above CE in every noisy column, as published; clean has no published JAL-CE
    assert "Whole table: 7 of 7 cells with a published figure have ours, in 4 columns. Kendall's τ 1.00 (over the 3" \
        in markdown[0] and "| CIFAR-10 | Clean | 1/1 | n/a |" in markdown[0]
    # then the paper's findings these records can test: JAL-CE above CE at symmetric 0.8 and asymmetric 0.4
    assert "| CIFAR-10 Asym 0.4: JAL-CE ≥ CE | +12.00 (0.15) | +5.69 | yes |" in markdown[1]
    assert "Fidelity" not in markdown[2] and "| Loss | Clean |" in markdown[2]  # the table, shown once


def test_notebook_without_records(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    notebook = run_notebook([tmp_path / "empty"], tmp_path / "figures", monkeypatch)
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["amse_lower_bound.png"]
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "no result.json" in text and "nothing to tabulate" in text and "no fidelity score" in text


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count")
               for cell in notebook.cells if cell.cell_type == "code")
