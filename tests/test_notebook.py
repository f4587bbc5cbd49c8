"""notebooks/results.ipynb runs top to bottom on one protocol's records and writes its figures; the committed
figures are what it draws from the committed records."""

import json
import os
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from jal.records import one_protocol, protocol, protocol_label

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"
FIGURES = ["accuracy_vs_noise_cifar10.png", "test_acc_per_epoch_cifar10.png", "memorisation_cifar10.png",
           "amse_lower_bound.png"]


def write_fake_records(directory, subset=2000):
    """result.json records as the training entrypoint writes them: CE and JAL-CE on CIFAR-10, clean,
    symmetric 0.4/0.8 and asymmetric 0.4, two seeds, five epochs of history, the test set tested at epochs 2, 4
    and 5 only (test_acc None between, as the quick preset's every 3rd epoch), and one failed run.
    Swap this for a real tiny training sweep by pointing JAL_RECORDS at its output directory instead."""
    directory = Path(directory)
    tested = {2, 4, 5}
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
                            "train_memorised": float(m),
                            "test_acc": float(c - 30 * rate * (not robust)) if e in tested else None,
                            "lr": 0.01, "images_per_second": 350.0, "seconds": 1.0}
                           for e, c, m in zip(epochs, clean, memorised)]
                record = {"status": "finished", "dataset": "cifar10", "model": "cnn8", "loss": loss,
                          "noise_type": noise_type, "noise_rate": rate, "noise_labels": None, "seed": seed,
                          "epochs": 5, "last_test_acc": history[-1]["test_acc"],
                          "best_test_acc": max(h["test_acc"] for h in history if h["test_acc"] is not None),
                          "realised_noise_rate": rate,
                          "wall_seconds": 5.0, "images_per_second": 350.0, "device": "cpu",
                          "precision": "fp32",
                          "git_commit": "test", "subset": subset, "config": {}, "history": history}
                run_dir = directory / "cifar10" / f"{noise_type}_{rate}" / loss / f"seed{seed}"
                run_dir.mkdir(parents=True)
                (run_dir / "result.json").write_text(json.dumps(record))
    failed = directory / "cifar10" / "symmetric_0.8" / "ce" / "seed125"
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


@pytest.mark.full  # a notebook kernel
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
    drawn = json.loads((tmp_path / "figures" / "figures.json").read_text())["figures"]
    assert set(drawn) == set(FIGURES)
    # each figure of the records says its protocol and how many runs it draws; every loss in every panel
    accuracy = drawn["accuracy_vs_noise_cifar10.png"]
    assert accuracy["title"] == "CIFAR-10, 5 epochs on 2,000 training images: 16 runs (fp32)"
    assert [panel["title"] for panel in accuracy["panels"]] == ["symmetric noise", "asymmetric noise"]
    assert all(panel["legend"] == ["CE", "JAL-CE"] for panel in accuracy["panels"])
    # test accuracy per epoch at the epochs the runs tested (2, 4, 5), the mean over the two finished seeds
    per_epoch = drawn["test_acc_per_epoch_cifar10.png"]
    assert per_epoch["title"] == "CIFAR-10, 5 epochs on 2,000 training images: 4 runs (fp32)"
    curves = {line["label"]: line["xy"] for line in per_epoch["panels"][0]["lines"]}
    for loss, label in (("ce", "CE"), ("jal_ce", "JAL-CE")):
        histories = [json.loads((tmp_path / "records" / "cifar10" / "symmetric_0.8" / loss / f"seed{seed}" /
                                 "result.json").read_text())["history"] for seed in (123, 124)]
        means = [np.mean([h[e - 1]["test_acc"] for h in histories]) for e in (2, 4, 5)]
        assert curves[label] == [[e, pytest.approx(m, abs=1e-4)] for e, m in zip((2, 4, 5), means)]


@pytest.mark.full  # a notebook kernel
def test_notebook_without_records(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    notebook = run_notebook([tmp_path / "empty"], tmp_path / "figures", monkeypatch)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["amse_lower_bound.png", "figures.json"]
    text = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "no result.json" in text and "nothing to tabulate" in text and "no fidelity score" in text


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count")
               for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.full  # a notebook kernel
def test_notebook_refuses_to_pool_two_protocols(tmp_path, monkeypatch):
    write_fake_records(tmp_path / "small", subset=2000)
    write_fake_records(tmp_path / "large", subset=5000)
    with pytest.raises(CellExecutionError) as error:
        run_notebook([tmp_path / "small", tmp_path / "large"], tmp_path / "figures", monkeypatch)
    message = next(line for line in str(error.value).splitlines() if "more than one protocol" in line)
    assert (f"CIFAR-10: 5 epochs on 2,000 training images (16 runs in {tmp_path / 'small'}), "
            f"5 epochs on 5,000 training images (16 runs in {tmp_path / 'large'})") in message
    assert "JAL_RECORDS=DIR" in message and "RECORDS=DIR" in message
    assert not (tmp_path / "figures").exists()  # nothing drawn


def test_protocol_is_epochs_and_subsets_not_precision():
    quick = {"status": "finished", "dataset": "cifar10", "loss": "ce", "noise_type": "none", "epochs": 12,
             "subset": 10000, "precision": "fp32", "run_dir": "/sweep/cifar10/clean/ce/seed123"}
    assert protocol(quick) == protocol({**quick, "precision": "bf16"}) == (12, 10000, None)
    assert protocol_label((120, None, None)) == "120 epochs on the whole training set"
    paused = {"status": "paused", "dataset": "cifar10", "loss": "ce", "noise_type": "none", "epochs": 120,
              "run_dir": "/other/cifar10/clean/ce/seed124"}  # no subset in a paused record: not counted
    assert one_protocol([quick, {**quick, "precision": "bf16"}, paused]) == {"cifar10": (12, 10000, None)}
    with pytest.raises(SystemExit, match=r"12 epochs on 10,000 training images \(1 runs in /sweep\), 120 epochs on "
                                         r"the whole training set \(1 runs in /paper\)"):
        one_protocol([quick, {**quick, "epochs": 120, "subset": None,
                                     "run_dir": "/paper/cifar10/clean/ce/seed123"}])


# The committed figure sets: each figures.json names the records its figures were drawn from
COMMITTED = sorted((REPO / "results").rglob("figures/figures.json"))


@pytest.fixture(scope="module", params=COMMITTED, ids=lambda p: str(p.parent.relative_to(REPO)))
def redrawn(request, tmp_path_factory):
    """(committed figure directory, the same figures drawn again into a temporary one from its records)."""
    committed = request.param.parent
    records = json.loads(request.param.read_text())["records"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        again = tmp_path_factory.mktemp("figures")
        run_notebook([REPO / d for d in records], again, monkeypatch)
    return committed, again


def test_committed_figure_sets():
    # results/quick/figures from the quick table's records, results/figures from the paper protocol's
    assert [p.parent.relative_to(REPO).as_posix() for p in COMMITTED] == ["results/figures", "results/quick/figures"]


@pytest.mark.full  # a notebook kernel (redrawn)
def test_committed_figures_plot_their_records(redrawn):
    """What each committed figure plots (figures.json: titles, every line's points, error bars and bands) is what
    the committed notebook draws from the committed records, and nothing else lies in the directory."""
    committed, again = redrawn
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in again.iterdir())
    ours, theirs = (json.loads((d / "figures.json").read_text()) for d in (committed, again))
    ours.pop("matplotlib"), theirs.pop("matplotlib")
    assert ours == theirs


@pytest.mark.full  # a notebook kernel (redrawn)
def test_committed_pngs_are_the_notebooks_drawing(redrawn):
    """The PNGs byte for byte (saved without the Software entry): only under the matplotlib that drew them, since
    another release may place a pixel differently; figures.json above is the check that holds under any."""
    committed, again = redrawn
    drawn_with = json.loads((committed / "figures.json").read_text())["matplotlib"]
    if drawn_with != matplotlib.__version__:
        pytest.skip(f"committed PNGs drawn with matplotlib {drawn_with}, this is {matplotlib.__version__}")
    for png in sorted(committed.glob("*.png")):
        assert png.read_bytes() == (again / png.name).read_bytes(), png.name
