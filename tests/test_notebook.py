"""notebooks/results.ipynb runs top to bottom on one protocol's records and writes its figures; the committed
figures are what it draws from the committed records."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from jal import figures
from jal.figures import Sweep, figures_dir
from jal.record import this_host
from jal.records import load_records, one_protocol, protocol, protocol_label
from jal.tables import load_published

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
                          "precision": "fp32", "host": this_host() if seed == 123 else "another-host",
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
    assert "16 finished runs: 8 trained here, 8 trained on another machine" in text  # seed 123's named this host
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
    assert accuracy["title"].splitlines() == [
        "CIFAR-10: last-epoch test accuracy against noise rate",
        "ours: 5 epochs on 2,000 training images, tested on the whole test set; 16 runs (fp32): 8 trained here, 8 "
        "trained on another machine",
        "published: 120 epochs on the whole training set, tested on the whole test set, the paper's protocol; from "
        "the JAL paper and the ε-Softmax paper"]
    assert [panel["title"] for panel in accuracy["panels"]] == [
        "ours: symmetric noise", "ours: asymmetric noise", "published: symmetric noise", "published: asymmetric noise"]
    assert accuracy["legend"] == ["CE", "JAL-CE", "ours (± std over seeds)", "published (± std where given)"]
    # test accuracy per epoch at the epochs the runs tested (2, 4, 5), the mean over the two finished seeds
    per_epoch = drawn["test_acc_per_epoch_cifar10.png"]
    assert per_epoch["title"].splitlines()[1] == \
        "ours: 5 epochs on 2,000 training images, tested on the whole test set; 4 runs (fp32): 2 trained here, 2 " \
        "trained on another machine"
    curves = {line["label"]: line["xy"] for line in per_epoch["panels"][0]["lines"]}
    for loss, label in (("ce", "CE"), ("jal_ce", "JAL-CE")):
        histories = [json.loads((tmp_path / "records" / "cifar10" / "symmetric_0.8" / loss / f"seed{seed}" /
                                 "result.json").read_text())["history"] for seed in (123, 124)]
        means = [np.mean([h[e - 1]["test_acc"] for h in histories]) for e in (2, 4, 5)]
        assert curves[label] == [[e, pytest.approx(m, abs=1e-4)] for e, m in zip((2, 4, 5), means)]


# A user's own sweep, as `jal-train -m ... dataset.subset=500 optim.lr=0.02 trainer.batch_size=64 trainer.epochs=1`
# writes it: settings beyond the cells in every record (Hydra's override_dirname: keys sorted), one epoch, one seed
USER = "dataset.subset=500,optim.lr=0.02,trainer.batch_size=64,trainer.epochs=1"
USER_CELLS = {  # (loss, settings) -> (noise type, rate) -> last-epoch test accuracy
    ("ce", USER): {("none", 0.0): 40.0, ("symmetric", 0.2): 35.0, ("symmetric", 0.4): 30.0,
                   ("symmetric", 0.8): 15.0, ("asymmetric", 0.4): 33.0},
    ("jal_ce", USER): {("none", 0.0): 41.0, ("symmetric", 0.4): 34.0, ("symmetric", 0.8): 20.0,
                       ("asymmetric", 0.4): 36.0},
    ("jal_ce", USER.replace(",optim", ",loss.passive.a=10,optim")): {("symmetric", 0.4): 32.0,
                                                                     ("symmetric", 0.8): 18.0},
}


def write_user_sweep(directory):
    for (loss, settings), cells in USER_CELLS.items():
        for (noise_type, rate), accuracy in cells.items():
            history = [{"epoch": 1, "train_loss": 2.0, "train_acc_noisy": 20.0, "train_acc_clean_subset": 25.0,
                        "train_acc_corrupted_subset": 12.0, "train_memorised": 11.0, "test_acc": accuracy}]
            record = {"status": "finished", "dataset": "cifar10", "model": "cnn8", "loss": loss, "settings": settings,
                      "noise_type": noise_type, "noise_rate": rate, "noise_labels": None, "seed": 1, "epochs": 1,
                      "last_test_acc": accuracy, "realised_noise_rate": rate, "precision": "fp32", "subset": 500,
                      "config": {"dataset": {"subset": 500, "test_subset": None}}, "history": history}
            run_dir = directory / "cifar10" / f"{noise_type}_{rate}" / loss / "seed1" / settings
            run_dir.mkdir(parents=True)
            (run_dir / "result.json").write_text(json.dumps(record))


def boxes_overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_the_figures_of_a_users_sweep_can_be_read(tmp_path):
    """Legends with short names, outside every axes and inside the figure; panel titles apart; one-epoch panels
    that say why they draw no curve; ours and the published figures in panels of their own; a line only between
    neighbouring rates that both have runs."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_user_sweep(tmp_path / "sweep")
    sweep = Sweep.of(load_records([tmp_path / "sweep"]), load_published())
    figures = {name: getattr(sweep, name)("cifar10") for name in ("accuracy_vs_noise", "test_acc_per_epoch",
                                                                  "memorisation")}
    for name, fig in figures.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        assert len(legends) == 1, name
        box = legends[0].get_window_extent(renderer)
        assert not any(boxes_overlap(box, ax.get_window_extent(renderer)) for ax in fig.axes), name
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
        titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        assert not any(boxes_overlap(a, b) for i, a in enumerate(titles) for b in titles[i + 1:]), name
        assert "settings of every run: dataset.subset=500, optim.lr=0.02, trainer.batch_size=64, trainer.epochs=1" \
            in fig.get_suptitle(), name  # said once, not in every legend entry
    accuracy = figures["accuracy_vs_noise"]
    assert [t.get_text() for t in accuracy.legends[0].get_texts()] == [
        "CE", "JAL-CE a=10", "JAL-CE", "ours (± std over seeds)", "published (± std where given)"]  # the table's order
    assert [ax.get_title() for ax in accuracy.axes] == [
        "ours: symmetric noise", "ours: asymmetric noise", "published: symmetric noise", "published: asymmetric noise"]
    assert ("ours: 1 epoch on 500 training images, tested on the whole test set; 11 runs (fp32): 11 trained on another "
            "machine\npublished: 120 epochs "
            "on the whole training set, tested on the whole test set, the paper's protocol") in accuracy.get_suptitle()

    def lines(ax):  # (colour, xy) of each line drawn with a line style; errorbar's markers have none
        return [(matplotlib.colors.to_hex(line.get_color()), line.get_xydata().tolist()) for line in ax.lines
                if line.get_linestyle() not in ("None", "", " ") and len(line.get_xdata()) > 1]

    colors = {loss: matplotlib.colors.to_hex(c) for loss, c in sweep.colors("cifar10").items()}
    ours_sym, ours_asym, theirs_sym, theirs_asym = accuracy.axes
    # CE ran clean, at 0.2 and 0.4: a line through those three; 0.4 -> 0.8 crosses 0.6, never run: no line.
    # JAL-CE skipped 0.2: no line at all. Asymmetric: 0 and 0.4 only, 0.1-0.3 never run: no line.
    assert lines(ours_sym) == [(colors[f"ce [{USER}]"], [[0.0, 40.0], [0.2, 35.0], [0.4, 30.0]])]
    assert lines(ours_asym) == []
    # the published figures: CE at every rate of both grids, a line through them; JAL-CE only at symmetric 0.4,
    # 0.8 and asymmetric 0.2, 0.4: markers, no line (0.6 and 0.3 were not published)
    ce, jal = colors[f"ce [{USER}]"], colors[f"jal_ce [{USER}]"]
    for ax, grid in ((theirs_sym, [0.0, 0.2, 0.4, 0.6, 0.8]), (theirs_asym, [0.0, 0.1, 0.2, 0.3, 0.4])):
        assert [[x for x, _ in xy] for color, xy in lines(ax)] == [grid] and lines(ax)[0][0] == ce
        assert {(x, y) for line in ax.lines if matplotlib.colors.to_hex(line.get_color()) == jal
                for x, y in line.get_xydata().tolist()} >= ({(0.4, 87.53), (0.8, 65.43)} if ax is theirs_sym
                                                            else {(0.2, 89.11), (0.4, 79.54)})
    # one epoch: each loss a point with a marker, and the panel says why there is no curve
    for name in ("test_acc_per_epoch", "memorisation"):
        for ax in figures[name].axes:
            assert [t.get_text() for t in ax.texts] == ["one tested epoch (epoch 1): no curve to draw, a point each"]
            assert ax.lines and all(line.get_marker() not in (None, "None", "") for line in ax.lines)
    assert [ax.get_title() for ax in figures["memorisation"].axes] == ["CE", "JAL-CE"]
    for fig in figures.values():
        plt.close(fig)


@pytest.mark.full  # python -m ipykernel_launcher
def test_a_users_figures_go_beside_the_records_and_the_command_says_where(tmp_path, monkeypatch, capsys):
    """`make notebooks RECORDS=outputs` draws into outputs/figures (ignored, as the records are), never into a
    new figures/ at the repository's root; the presets' runs/ keep their figures/ beside them; and the command
    prints where it wrote each figure."""
    assert figures_dir([REPO / "outputs"]) == REPO / "outputs" / "figures"
    assert figures_dir([REPO / "runs"]) == REPO / "runs" / "figures"
    assert figures_dir([REPO / "results" / "quick" / "runs"]) == REPO / "results" / "quick" / "figures"
    assert figures_dir([REPO / "results" / "runs", tmp_path]) == REPO / "results" / "figures"
    if shutil.which("git") and (REPO / ".git").exists():
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "outputs/figures/a.png"])
        assert ignored.returncode == 0
    write_user_sweep(tmp_path / "my_sweep")
    monkeypatch.setenv("JAL_RECORDS", ""), monkeypatch.setenv("JAL_FIGURES", "")  # restored after main sets them
    figures.main([str(tmp_path / "my_sweep")])
    out = tmp_path / "my_sweep" / "figures"
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out / 'accuracy_vs_noise_cifar10.png'}: CIFAR-10: last-epoch test accuracy against noise rate",
        f"wrote {out / 'test_acc_per_epoch_cifar10.png'}: CIFAR-10: test accuracy per epoch, symmetric 0.8 noise",
        f"wrote {out / 'memorisation_cifar10.png'}: CIFAR-10: memorisation on the training set, symmetric 0.8 noise",
        f"wrote {out / 'amse_lower_bound.png'}: AMSE's asymmetry bound (Theorem 4.1, q = 2) against the noise rate"]
    assert all((out / name).stat().st_size > 1000 for name in FIGURES)


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
    assert (f"CIFAR-10: 5 epochs on 2,000 training images, tested on the whole test set (16 runs in "
            f"{tmp_path / 'small'}), 5 epochs on 5,000 training images, tested on the whole test set (16 runs in "
            f"{tmp_path / 'large'})") in message
    assert "JAL_RECORDS=DIR" in message and "RECORDS=DIR" in message
    assert not (tmp_path / "figures").exists()  # nothing drawn


def test_protocol_is_epochs_and_subsets_not_precision():
    from dataclasses import replace

    from jal.record import Record, Status

    quick = Record(status=Status.FINISHED, dataset="cifar10", loss="ce", noise_type="none", epochs=12, subset=10000,
                   precision="fp32", run_dir=Path("/sweep/cifar10/clean/ce/seed123"))
    assert protocol(quick) == protocol(replace(quick, precision="bf16")) == (12, 10000, None)
    assert protocol_label((120, None, None)) == "120 epochs on the whole training set, tested on the whole test set"
    assert protocol_label((1, 500, 2000)) == "1 epoch on 500 training images, tested on 2,000 test images"
    paused = Record(status=Status.PAUSED, dataset="cifar10", loss="ce", noise_type="none", epochs=120,
                    run_dir=Path("/other/cifar10/clean/ce/seed124"))  # no subset in a paused record: not counted
    assert one_protocol([quick, replace(quick, precision="bf16"), paused]) == {"cifar10": (12, 10000, None)}
    with pytest.raises(SystemExit, match=r"12 epochs on 10,000 training images, tested on the whole test set \(1 runs "
                                         r"in /sweep\), 120 epochs on the whole training set, tested on the whole test "
                                         r"set \(1 runs in /paper\)"):
        one_protocol([quick, replace(quick, epochs=120, subset=None, run_dir=Path("/paper/cifar10/clean/ce/seed123"))])


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
