"""Hydra multirun sweeps through the basic and the submitit (local, as on SLURM) launchers, their table,
a second sweep skipping every finished run, and the notebook on the records they wrote; the plan before a
sweep (jal.plan, scripts/sweep.sh) and the progress lines and summary during it."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR, REPO, compose_train, given_once
from hydra import initialize_config_dir
from test_notebook import FIGURES, run_notebook

from jal import device as jal_device
from jal import plan, tables
from jal.experiment import plain_config
from jal.multirun import plan_runs, sweep_jobs
from jal.progress import Progress
from jal.records import load_records
from jal.run import percent
from jal.util import duration

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


# the cell, then the settings given that are not part of it (sorted by key): one directory per experiment
SETTINGS = "dataset.test_size=32,dataset.train_size=64,trainer.epochs=2"
CELLS = [f"synthetic/symmetric_{rate}/{loss}/seed123/{SETTINGS}" for loss in ("ce", "jal_ce") for rate in (0.2, 0.8)]


@pytest.fixture(scope="module")
def basic_sweep_run(tmp_path_factory):
    out_root = tmp_path_factory.mktemp("basic")
    return out_root, multirun(out_root).stdout


@pytest.fixture(scope="module")
def basic_sweep(basic_sweep_run):
    return basic_sweep_run[0]


@pytest.mark.full  # python -m jal.train -m (basic_sweep)
def test_basic_launcher_sweep_writes_one_record_per_cell(basic_sweep):
    records = records_of(basic_sweep)
    # each run's directory is a function of its cell (dataset/noise/loss/seed) and the settings given
    expected = {basic_sweep / cell / "result.json" for cell in CELLS}
    assert set(records) == expected
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "finished" and len(record["history"]) == 2


def run_files(out_root: Path) -> dict[Path, bytes]:
    """Every file a run wrote (its lock file aside: an empty file the OS locks, not part of the run)."""
    return {p: p.read_bytes() for p in sorted(out_root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.full  # python -m jal.train -m
def test_sweep_started_again_skips_every_run(basic_sweep):
    before, files = records_of(basic_sweep), run_files(basic_sweep)
    done = multirun(basic_sweep)
    assert records_of(basic_sweep) == before  # no record was rewritten
    # nor any other file: a finished run's train.log gains no line (committed logs stay as they were trained)
    assert run_files(basic_sweep) == files
    assert done.stdout.count("finished already") + done.stderr.count("finished already") == 4
    assert not re.search(r"^\[\d/4\]", done.stdout, re.M)  # a skipped run gets no progress line: the plan counted it
    assert "Sweep summary: 4 runs: 4 finished, 0 failed, 0 paused, 0 not run to an end" in done.stdout


@pytest.mark.full  # basic_sweep
def test_table_of_the_sweep_has_four_cells(basic_sweep, tmp_path):
    assert tables.main([str(basic_sweep), "--out", str(tmp_path), "--expect-seeds", "1"]) in (None, 0)
    rows = tables.summarise(load_records([basic_sweep]), expect_seeds=1)
    # the runs' settings beyond their cells (tiny sizes) keep them apart from the paper's rows
    assert {(r["loss"], r["noise_rate"]) for r in rows} == {(f"{loss} [{SETTINGS}]", rate) for loss in ("ce", "jal_ce")
                                                           for rate in (0.2, 0.8)}
    assert all(r["runs"] == 1 for r in rows)
    for row in rows:  # the cell's mean is the one run's last-epoch accuracy
        loss = row["loss"].split()[0]
        path = basic_sweep / f"synthetic/symmetric_{row['noise_rate']}/{loss}/seed123/{SETTINGS}/result.json"
        assert row["mean"] == pytest.approx(json.loads(path.read_text())["last_test_acc"])
    table = (tmp_path / "table.md").read_text()
    assert f"| CE [{SETTINGS}] |" in table and f"| JAL-CE [{SETTINGS}] |" in table and "Sym 0.8" in table


@pytest.mark.slow  # 25 s; submitit's path is also tested through the fused sweeps (tests/test_fused.py)
def test_submitit_local_launcher_runs_the_same_sweep(tmp_path, basic_sweep):
    done = multirun(tmp_path, "hydra/launcher=local")
    # Each run's line comes from its own submitit process (its log), its n/N counted from the records on disk:
    # a count kept in memory would read 1 in every process. The last run to end sees all four.
    logs = "".join(p.read_text() for p in tmp_path.glob(".submitit/*/*_log.out"))
    counts = [int(n) for n in re.findall(r"^\[(\d)/4\] synthetic/", logs, re.M)]
    assert len(counts) == 4 and max(counts) == 4 and min(counts) >= 1
    assert "Sweep summary: 4 runs: 4 finished, 0 failed" in done.stdout  # from the launching process
    local = {p.relative_to(tmp_path): json.loads(p.read_text()) for p in records_of(tmp_path)}
    basic = {p.relative_to(basic_sweep): json.loads(p.read_text()) for p in records_of(basic_sweep)}
    assert set(local) == set(basic)
    for name in local:  # same cells, same seeds, same CPU: the same training
        assert local[name]["last_test_acc"] == basic[name]["last_test_acc"]
        assert local[name]["history"][0]["train_loss"] == pytest.approx(basic[name]["history"][0]["train_loss"])


@pytest.mark.full  # basic_sweep, a notebook kernel
def test_notebook_runs_on_the_sweep_records(basic_sweep, tmp_path, monkeypatch):
    run_notebook([basic_sweep], tmp_path, monkeypatch)
    written = {p.name for p in Path(tmp_path).iterdir()}
    assert "amse_lower_bound.png" in written
    assert any(name.startswith("accuracy_vs_noise") for name in written)
    drawable = {*FIGURES, *(name.replace("cifar10", "synthetic") for name in FIGURES)}
    assert len(written) >= 3 and "figures.json" in written and written - {"figures.json"} <= drawable


# ---------------------------------------------------------------------------------------------------
# The runs planned (jal.multirun) and the progress callback (jal.progress)


@pytest.mark.full  # basic_sweep
def test_plan_is_exactly_the_runs_the_sweep_wrote(basic_sweep):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = plan_runs(TINY + [f"out_root={basic_sweep}"])
    assert [r.name for r in runs] == CELLS
    assert [r.dir for r in runs] == [basic_sweep / cell for cell in CELLS]
    assert {r.dir for r in runs} == {p.parent for p in records_of(basic_sweep)}


@pytest.mark.full  # composes every job
def test_planned_configs_equal_a_full_composition_of_each_job(tmp_path):
    """Jobs that differ only in values share one composition: each must equal its own full composition."""
    overrides = TINY + ["seed=1,2", f"out_root={tmp_path}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = plan_runs(overrides)
    jobs = sweep_jobs(overrides)
    assert len(runs) == len(jobs) == 8
    for run, job in zip(runs, jobs):
        full = compose_train(job)  # sets Hydra's runtime so run_name resolves
        assert plain_config(run.cfg) == plain_config(full)
        assert run.name == full.run_name


@pytest.mark.full  # basic_sweep
def test_progress_line_per_run_and_summary(basic_sweep_run):
    out_root, stdout = basic_sweep_run
    # each run's closing line, in a run alone's words (and no second one from the run: `-> <directory>`)
    lines = re.findall(r"^\[(\d)/4\] (\S+): finished: test accuracy ([\d.]+)% \(epoch 2\) \((.*)\)$", stdout, re.M)
    assert [(int(n), cell) for n, cell, _, _ in lines] == list(enumerate(CELLS, 1))  # the basic launcher: in order
    for _, cell, acc, _ in lines:
        assert float(acc) == round(json.loads((out_root / cell / "result.json").read_text())["last_test_acc"], 2)
    assert [eta.split()[0] for *_, eta in lines] == ["ETA", "ETA", "ETA", "sweep"]
    assert stdout.count("finished: test accuracy") == 4 and " -> " not in stdout
    assert "Sweep summary: 4 runs: 4 finished, 0 failed, 0 paused, 0 not run to an end" in stdout


@pytest.mark.full  # basic_sweep
def test_each_run_logs_a_line_per_epoch_into_its_train_log_not_the_console(basic_sweep_run):
    out_root, stdout = basic_sweep_run
    for cell in CELLS:
        history = json.loads((out_root / cell / "result.json").read_text())["history"]
        lines = re.findall(r"- (epoch .*), [\d.]+ img/s", (out_root / cell / "train.log").read_text())
        assert lines == [f"epoch {h['epoch']}/2: train loss {h['train_loss']:.4f}, fits its labels "
                         f"{percent(h['train_acc_noisy'])}, memorised {percent(h['train_memorised'])}, "
                         f"test {percent(h['test_acc'])}" for h in history]
    assert "epoch 1/2" not in stdout


def test_summary_names_failed_and_paused_runs(tmp_path, capsys):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = plan_runs(TINY + [f"out_root={tmp_path}"])
    progress = Progress()
    progress.start(runs)
    records = [dict(status="finished", last_test_acc=50.0), dict(status="failed", error="FloatingPointError: boom"),
               dict(status="paused")]
    for run, record in zip(runs, records):  # the fourth run has no record
        run.dir.mkdir(parents=True)
        (run.dir / "result.json").write_text(json.dumps(record))
    progress.summary()
    assert capsys.readouterr().out.splitlines() == [
        "Sweep summary: 4 runs: 1 finished, 1 failed, 1 paused, 1 not run to an end",
        "  where   1 finished run: 1 trained on another machine",  # a record that names no host
        f"  failed  {CELLS[1]}: FloatingPointError: boom",
        f"  paused  {CELLS[2]} (starting the sweep again resumes it)",
        f"  not run to an end  {CELLS[3]} (new)",
        "",
    ]


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_eta_counts_the_epochs_of_runs_in_flight(tmp_path):
    """Parallel runs end together: when the first of two ends the other is nearly done too, so the ETA comes
    from the work done and left (epochs, checkpoints), not from whole runs ended (which says 3 x elapsed)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = plan_runs(TINY + [f"out_root={tmp_path}", "trainer.eval_every=2"])
    epoch_1, epoch_2 = 64, 64 + 32 / 3  # 64 training images; the 32 test images, a third each, after epoch 2
    assert runs[0].work_left_after_each_epoch() == [epoch_1 + epoch_2, epoch_2, 0]
    for run in runs:
        run.dir.mkdir(parents=True)
    # the fourth run paused in an earlier sweep after epoch 1: its record stays "paused" while it continues
    paused = runs[3].dir / "result.json"
    paused.write_text(json.dumps(dict(status="paused")))
    os.utime(paused, (time.time() - 3600,) * 2)
    # checkpoints of their own experiment (the plan reads them as the run does, jal.multirun.Run.checkpoint)
    torch.save({"epoch": 1, **runs[3].experiment().as_dict()}, runs[3].dir / "checkpoint.pt")
    progress = Progress()
    progress.start(runs)
    progress.started -= 100  # the sweep has run for 100 s: the first run finished, the second is in epoch 2
    (runs[0].dir / "result.json").write_text(json.dumps(dict(status="finished", last_test_acc=50.0)))
    torch.save({"epoch": 1, **runs[1].experiment().as_dict()}, runs[1].dir / "checkpoint.pt")
    done, left = (epoch_1 + epoch_2) + epoch_1, epoch_2 + (epoch_1 + epoch_2) + epoch_2
    assert progress.ended() == [str(runs[0].dir)]
    assert progress.eta() == f"ETA {duration(100 * left / done)}" == "ETA 2 min"
    for run in runs:
        (run.dir / "result.json").write_text(json.dumps(dict(status="finished", last_test_acc=50.0)))
    assert progress.eta() == "sweep done"


@pytest.mark.full  # python -m jal.train -m
def test_a_diverging_run_fails_alone_and_the_sweep_goes_on(tmp_path):
    """optim.lr=1e30 diverges: its record says failed (with the epoch), one line says why, no traceback, and the
    sweep's other run still trains; the summary lists the failure and the sweep exits 1 (docs/runs.md)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "jal.train", "-m", *TINY[:6], "loss=ce", "noise=symmetric",
                           "noise.rate=0.2", "optim.lr=1e30,0.01", f"out_root={tmp_path}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    diverged = f"synthetic/symmetric_0.2/ce/seed123/{SETTINGS.replace(',trainer', ',optim.lr=1e+30,trainer')}"
    record = json.loads((tmp_path / diverged / "result.json").read_text())
    error = record["error"]  # one step per epoch: epoch 1's loss is finite, the step it takes is not
    assert record["status"] == "failed" and record["epoch"] == 2
    assert error.startswith("RunDiverged: non-finite training loss in epoch 2 of ")
    assert f"{diverged}: failed: {error} (" in done.stdout
    converged = diverged.replace("1e+30", "0.01")
    assert json.loads((tmp_path / converged / "result.json").read_text())["status"] == "finished"
    lines = done.stdout.strip().splitlines()
    summary = lines.index("Sweep summary: 2 runs: 1 finished, 1 failed, 0 paused, 0 not run to an end")
    # the finished run's lines first (where it trained; 64 images: symmetric 0.2's exact counts flip none of ~6 a
    # class, and the summary says so), the failure last, nearest the prompt
    assert lines[summary + 1:] == ["  where   1 finished run: 1 trained here",
                                   f"  noise   {converged}: symmetric 0.2 on 64 images realises 0: exact sampling "
                                   "flips int(0.2/9 x 6) = 0 images of each class to each other class; noise.sampling="
                                   "per_sample draws per image (more than 1 pp off: its table cell is marked)",
                                   f"  failed  {diverged}: {error}"]


@pytest.mark.full  # bash scripts/sweep.sh, two sweeps
def test_a_table_script_with_a_failed_run_trains_its_other_sweeps_writes_its_table_and_exits_1(tmp_path):
    """A sweep that exits 1 (a run diverged) does not stop the script: the next sweep trains, the table step
    runs, and the script then exits 1 with one line saying how many sweeps had a failure."""
    script = tmp_path / "reproduce_tiny.sh"
    tiny = " ".join(TINY[:6])
    script.write_text(f"source {REPO}/scripts/sweep.sh\n"
                      f"multirun {tiny} loss=ce noise=symmetric noise.rate=0.2 optim.lr=1e30 out_root={tmp_path}\n"
                      f"multirun {tiny} loss=ce noise=symmetric noise.rate=0.8 out_root={tmp_path}\n"
                      "run_sweeps\necho 'the table'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PRESET", "LAUNCHER", "JOBS", "THREADS", "DRY_RUN")}
    env.update(PYTHON=sys.executable, PRESET="paper", LAUNCHER="basic", OMP_NUM_THREADS="1",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("the table")
    assert done.stderr.rstrip().endswith("1 of 2 sweeps had a run that failed or is blocked: see their summaries "
                                         "above")
    records = {p.parent.parent.parent.parent.name: json.loads(p.read_text())["status"]
               for p in tmp_path.rglob("result.json")}
    assert records == {"symmetric_0.2": "failed", "symmetric_0.8": "finished"}


def sweep_script(out_root: Path, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """A table script's sweep through scripts/sweep.sh with DRY_RUN=1 and the settings given (none: defaults)."""
    script = tmp_path / "reproduce_tiny.sh"
    # EXTRA: more overrides, in place of TINY's of the same key (a key is given once), e.g. a subset the tiny
    # dataset holds (the quick preset's 10000 images it does not)
    overrides = given_once([*TINY, *settings.pop("EXTRA", "").split()])
    script.write_text(f"source {REPO}/scripts/sweep.sh\nmultirun {' '.join(overrides)} "
                      f"out_root={out_root}\nrun_sweeps\n"
                      "echo 'not reached'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PRESET", "LAUNCHER", "JOBS", "THREADS")}
    env.update(PYTHON=sys.executable, DRY_RUN="1", OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"),
               **settings)
    done = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not reached" not in done.stdout
    assert done.stdout.rstrip().endswith("DRY_RUN=1: stopping before the first run.")
    return done


WORK = 2 * 64 + 2 * 32 / 3  # a TINY run: two epochs of 64 images, each tested on 32 (a third of an image each)


def own_speed(out_root: Path) -> float:
    """The pace of the finished records under out_root: their work over their epochs' seconds (jal.estimate)."""
    histories = [json.loads(p.read_text())["history"] for p in out_root.rglob("result.json")]
    return len(histories) * WORK / sum(h["seconds"] for history in histories for h in history)


@pytest.fixture
def three_of_four_finished(basic_sweep, tmp_path):
    out_root = tmp_path / "runs"
    shutil.copytree(basic_sweep, out_root)
    shutil.rmtree(out_root / CELLS[3])
    return out_root


@pytest.mark.skipif(torch.cuda.is_available(), reason="the defaults without CUDA")
@pytest.mark.full  # bash scripts/sweep.sh
def test_plan_without_cuda_defaults_to_parallel_single_threaded_quick_runs(three_of_four_finished, tmp_path):
    started = time.time()
    out = sweep_script(three_of_four_finished, tmp_path, EXTRA="dataset.subset=60").stdout
    assert out.startswith("No CUDA device: the CPU-sized preset (PRESET=quick, results/quick). "
                          "PRESET=paper forces the paper's protocol.\nPlan of reproduce_tiny: preset quick\n")
    assert f"  launcher   joblib ({len(os.sched_getaffinity(0))} runs at a time), torch threads per run: 1\n" in out
    # the records trained on the whole set; a subset is another experiment, in its own directories
    assert "  runs       4 in 1 sweep: 0 finished already, 4 to train\n" in out
    # the records ran with torch's default threads, not one: the speed is probed for seconds (in the run's batches:
    # its 60 images), and kept
    probed = re.search(r"  speed      cnn8: (\d+) images/s per run \(jal.estimate: probed just now \(\S+ \S+\): "
                       r"(\d+) training steps of 60 random images in [\d.]+ s, kept in (\S+); no run here yet\)", out)
    assert probed and int(probed[2]) >= 2 and probed[3] == str(tmp_path / "cache" / "jal" / "speeds.json")
    again = sweep_script(three_of_four_finished, tmp_path, EXTRA="dataset.subset=60").stdout
    assert f"  speed      cnn8: {probed[1]} images/s per run (jal.estimate: a probe kept (" in again
    assert not (three_of_four_finished / CELLS[3]).exists()  # nothing ran
    assert time.time() - started < 120  # two plans, one probe: ~40 s on an idle 2-core machine; a busy one is slower


@pytest.mark.skipif(torch.cuda.is_available(), reason="speeds from CPU records")
@pytest.mark.full  # bash scripts/sweep.sh
def test_plan_with_settings_given_uses_them_and_the_records_speed(three_of_four_finished, tmp_path):
    out = sweep_script(three_of_four_finished, tmp_path, PRESET="paper", LAUNCHER="basic").stdout
    assert out.startswith("Plan of reproduce_tiny: preset paper\n")
    assert "  launcher   basic (one run at a time), torch threads per run: all cores (trainer.threads=null)\n" in out
    assert "  runs       4 in 1 sweep: 3 finished already, 1 to train\n" in out and "warning" not in out
    speed = own_speed(three_of_four_finished)
    assert "  precision  fp32 (trainer.precision=fp32)\n" in out
    assert f"  speed      cnn8: {speed:.0f} images/s per run (jal.estimate: this machine's own: 3 finished runs here " \
           f"on {jal_device.device_name(torch.device('cpu'))}, same model, precision and threads per run)\n" in out
    assert "  finished   3 finished runs: 3 trained here\n" in out  # nothing to retrain elsewhere: no hint
    assert f"  time left  about {duration(WORK / speed)}: 1 run, 149 training images" in out
    # in bf16 the fp32 records are neither its runs (its directories end in bf16) nor its speed
    out = sweep_script(three_of_four_finished, tmp_path, PRESET="paper", LAUNCHER="basic", PRECISION="bf16").stdout
    assert "  precision  bf16 (trainer.precision=bf16)\n" in out and "0 finished already, 4 to train" in out
    assert re.search(r"  speed      cnn8: \d+ images/s per run \(jal.estimate: probed just now", out)
    # ... but it says that the fp32 records of three of its cells would do
    assert ("  fp32       3 of the 4 runs to train in bf16 have a finished fp32 record of the same cell (its directory "
            "without /bf16): PRECISION=fp32 (trainer.precision=fp32) would reuse them instead\n") in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="speeds from CPU records")
@pytest.mark.full  # bash scripts/sweep.sh
def test_plan_of_new_cells_estimates_from_the_finished_records_beside_them(three_of_four_finished, tmp_path):
    """Cells none of which has run yet (here symmetric 0.5) take the speed of the other cells' records in the
    same output folder, not a probe."""
    out = sweep_script(three_of_four_finished, tmp_path, PRESET="paper", LAUNCHER="basic",
                       EXTRA="noise.rate=0.5").stdout
    assert "  runs       2 in 1 sweep: 0 finished already, 2 to train\n" in out
    assert f"  speed      cnn8: {own_speed(three_of_four_finished):.0f} images/s per run (jal.estimate: this " \
           "machine's own: 3 finished runs here" in out


@pytest.mark.full  # bash scripts/sweep.sh
def test_plan_of_fused_runs_says_how_the_launcher_trains_the_fusions(three_of_four_finished, tmp_path):
    """FUSE=K with any launcher: the plan counts the fusions and says how they train (jal.fuse)."""
    # SLURM: what a cluster without GPUs needs, where one answers here (make test-slurm leaves its cluster running)
    out = sweep_script(three_of_four_finished, tmp_path, PRESET="paper", LAUNCHER="slurm", FUSE="2",
                       SLURM="partition=debug gpus_per_node=0 cpus_per_task=1 mem_gb=1",
                       EXTRA="noise.rate=0.5").stdout  # 2 runs to train, the speed from the records beside them
    assert re.search(r"^  launcher   fusions one SLURM task each \(submitit: a job array, at most 64 tasks at a "
                     r"time; partition=debug, nodes=1, gpus_per_node=0, cpus_per_task=1, mem_gb=1, "
                     r"timeout_min=120\)$", out, re.M)
    assert "  fusions    1 of at most 2 runs, each trained as one network (python -m jal.fuse; sizes 2)" in out
    assert "this machine's own: 3 finished runs here" in out or torch.cuda.is_available()


@pytest.mark.full  # basic_sweep
def test_resumed_sweep_counts_the_runs_finished_before(three_of_four_finished):
    stdout = multirun(three_of_four_finished).stdout
    assert re.findall(r"^\[\d/4\] .*$", stdout, re.M) == [
        f"[4/4] {CELLS[3]}: finished: test accuracy "
        f"{json.loads((three_of_four_finished / CELLS[3] / 'result.json').read_text())['last_test_acc']:.2f}% "
        "(epoch 2) (sweep done)"]
    assert "Sweep summary: 4 runs: 4 finished, 0 failed, 0 paused, 0 not run to an end" in stdout


# scripts/gpu_pool.sh: cells side by side until one deadline, on a host without launcher plugins

def gpu_pool(out_root: Path, *cells: str, **env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PY=sys.executable, DATASET="synthetic", **env)
    done = subprocess.run(["bash", "scripts/gpu_pool.sh", str(out_root), *cells], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow  # 25 s: a GPU host's tool, run by make test-all
def test_gpu_pool_trains_every_cell_and_seed_and_packs_the_records(tmp_path):
    tiny = "dataset.train_size=64 dataset.test_size=32 trainer.epochs=2 noise=symmetric"
    done = gpu_pool(tmp_path / "runs", f"loss=ce {tiny} noise.rate=0.8", f"loss=jal_ce {tiny} noise.rate=0.2",
                    DEADLINE=str(int(time.time()) + 3600), SEEDS="1,2", BRING=str(tmp_path / "bring.tgz"))
    expected = {f"symmetric_{rate}/{loss}/seed{seed}/{SETTINGS}"
                for loss, rate in (("ce", 0.8), ("jal_ce", 0.2)) for seed in (1, 2)}
    records = {str(p.parent.relative_to(tmp_path / "runs" / "synthetic")): json.loads(p.read_text())
               for p in (tmp_path / "runs").rglob("result.json")}
    assert set(records) == expected and {r["status"] for r in records.values()} == {"finished"}
    assert done.stdout.count(": finished ") == 4  # the closing list, one line per record
    packed = subprocess.run(["tar", "tzf", str(tmp_path / "bring.tgz")], capture_output=True, text=True).stdout
    assert packed.count("result.json") == 4 and "checkpoint.pt" not in packed  # finished: no checkpoint to bring


@pytest.mark.full  # bash scripts/gpu_pool.sh
def test_gpu_pool_starts_nothing_when_the_deadline_is_near(tmp_path):
    done = gpu_pool(tmp_path / "runs", "loss=ce dataset.train_size=64", DEADLINE=str(int(time.time()) + 30),
                    MIN_LEFT="60")
    assert "not started (deadline near): loss=ce dataset.train_size=64 seed=123" in done.stdout
    assert not list((tmp_path / "runs").rglob("result.json"))


# ---------------------------------------------------------------------------------------------------
# The plan sees what is there: data files, fp32 records a bf16 plan would retrain, GPU work on a CPU


def plan_output(overrides: list[str], capsys, *extra: str) -> str:
    plan.main(["--name", "reproduce_test", " ".join(overrides), *extra])
    return capsys.readouterr().out


def test_a_plan_lists_a_missing_data_file_and_a_sweep_stops_at_one_it_cannot_fetch(tmp_path, monkeypatch, capsys):
    """DRY_RUN=1 (no --download): the plan, then the missing images under "not there yet", exit 0, nothing fetched.
    Before a sweep (--download): a file torchvision cannot fetch (the CIFAR-10N labels) stops it in one line."""
    from jal import estimate

    monkeypatch.setattr(estimate, "probe", lambda cfg, device: dict(images_per_second=10.0, steps=2, batch=32,
                                                                   seconds=6.4, measured="2026-12-05 14:02"))
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "data"))
    out = plan_output(["dataset=cifar100", "loss=ce", f"out_root={tmp_path}"], capsys)
    path = tmp_path / "data" / "cifar100.npz"
    assert out.splitlines()[-1] == (
        f"not there yet: {path} is missing: put cifar100.npz (the images; docs/protocol.md section 6) there or point "
        "JAL_DATA_DIR at a folder holding it; the sweep (without DRY_RUN=1) first downloads it with torchvision")
    assert "  time left  about " in out and not (tmp_path / "data").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar10.npz").touch()  # the images are there, the CIFAR-10N labels are not
    with pytest.raises(SystemExit) as stop:
        plan_output(["noise=human", "noise.labels=worst", "loss=ce", f"out_root={tmp_path}"], capsys, "--download")
    labels = tmp_path / "data" / "cifar10n_labels.npz"
    assert str(stop.value) == (f"error: {labels} is missing: put cifar10n_labels.npz "
                               "(the CIFAR-10N labels; docs/protocol.md section 6) there or point JAL_DATA_DIR at a "
                               "folder holding it")


@pytest.mark.full  # basic_sweep
def test_plan_on_a_bf16_cpu_counts_the_fp32_records_it_would_retrain(three_of_four_finished, monkeypatch, capsys):
    """trainer.precision=auto on a CPU with bf16 hardware (its flags given, not this machine's): the runs go to
    <cell>/bf16, and the plan says that three of them have a finished fp32 record PRECISION=fp32 would reuse."""

    monkeypatch.setattr(jal_device, "cpu_flags", lambda *args: {"avx512f", "amx_bf16"})
    monkeypatch.setenv("XDG_CACHE_HOME", str(three_of_four_finished / "cache"))
    overrides = TINY + [f"out_root={three_of_four_finished}", "trainer.precision=auto", "trainer.device=cpu"]
    out = plan_output(overrides, capsys)
    assert "  precision  bf16 (auto: bf16 autocast, the CPU has bf16 hardware (amx_bf16 in its flags))\n" in out
    assert "0 finished already, 4 to train" in out
    assert "  fp32       3 of the 4 runs to train in bf16 have a finished fp32 record of the same cell" in out
    monkeypatch.setattr(jal_device, "cpu_flags", lambda *args: {"avx512f"})  # no bf16 hardware: fp32, no such line
    out = plan_output(overrides, capsys)
    assert "3 finished already, 1 to train" in out and "  fp32  " not in out


@pytest.mark.full  # times ResNet-34 steps
def test_plan_of_resnet34_runs_on_a_cpu_says_it_is_gpu_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = plan_output(["dataset=synthetic", "model=resnet34", "dataset.train_size=64", "trainer.epochs=200",
                       "trainer.device=cpu", "loss=ce", f"out_root={tmp_path}"], capsys)
    gpu = re.search(r"^  GPU work   ResNet-34 \(CIFAR-100's model\) on this CPU: about (.*) per run\. This table is "
                    r"GPU work: on a machine with a CUDA GPU the same command trains it \(make gpu-check first\)$",
                    out, re.M)
    assert gpu, out


def test_summary_says_a_realised_noise_rate_off_the_asked_one(tmp_path, capsys):
    """A run 1 pp or more off the asked rate gets a line naming the count rule that makes it (2,000 images, 200 a
    class: symmetric 0.2 flips int(0.2/9 x 200) = 4 images to each of 9 classes, 18%; 0.8 flips 17, 76.5%); the
    summary also says where the finished runs trained (here: this host's records)."""
    from jal.record import this_host

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = plan_runs(TINY + [f"out_root={tmp_path}"])
    progress = Progress()
    progress.start(runs)
    rates = [0.2, 0.8, 0.18, 0.765]  # the cells ask symmetric 0.2, 0.8, 0.2, 0.8
    for run, rate in zip(runs, rates):
        run.dir.mkdir(parents=True)
        (run.dir / "result.json").write_text(json.dumps(dict(
            status="finished", last_test_acc=50.0, noise_type="symmetric", noise_rate=float(run.cfg.noise.rate),
            realised_noise_rate=rate, subset=2000, noise_transition=[[0.0] * 10] * 10, host=this_host())))
    progress.summary()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "  where   4 finished runs: 4 trained here",
        f"  noise   {CELLS[2]}: symmetric 0.2 on 2,000 images realises 0.18: exact sampling flips int(0.2/9 x 200) = "
        "4 images of each class to each other class; noise.sampling=per_sample draws per image (more than 1 pp off: "
        "its table cell is marked)",
        f"  noise   {CELLS[3]}: symmetric 0.8 on 2,000 images realises 0.765: exact sampling flips int(0.8/9 x 200) = "
        "17 images of each class to each other class; noise.sampling=per_sample draws per image (more than 1 pp off: "
        "its table cell is marked)",
        ""]


# ----------------------------------------------------------------------------- the estimate and what a plan says


@pytest.mark.full  # python -m jal.train -m
@pytest.mark.skipif(torch.cuda.is_available(), reason="speeds on this CPU")
def test_plan_estimates_from_this_machines_epochs_then_a_probe_and_never_first_from_other_machines(
        three_of_four_finished, tmp_path, monkeypatch):
    """Records of another machine (here: naming another host) count as finished but set no speed while a probe
    can measure this machine; once an epoch has run here (the fourth run's checkpoint, 2 s for its first epoch)
    that epoch sets it; without a probe (a sweep's progress lines) the other machines' records do, named."""
    from jal import estimate
    from jal.device import device_name

    for path in three_of_four_finished.rglob("result.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "host": "gpu-node-7", "device_name": "NVIDIA H200"}))
    out = sweep_script(three_of_four_finished, tmp_path, PRESET="paper", LAUNCHER="basic").stdout
    assert ("  finished   3 finished runs: 3 trained on another machine: they count as done; OUT=DIR in the same "
            "command trains every run here instead, into a folder of yours\n") in out
    assert re.search(r"  speed      cnn8: \d+ images/s per run \(jal.estimate: probed just now", out), out
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
        runs = plan_runs(TINY + [f"out_root={three_of_four_finished}"])
    here = device_name(torch.device("cpu"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no_probe"))  # no probe kept
    other = estimate.run_speed(runs, here, probing=False)
    assert other.images_per_second == pytest.approx(own_speed(three_of_four_finished))
    assert other.source == "other machines' records (NVIDIA H200), not this machine: no run here yet and no probe"
    fourth = runs[3]
    fourth.dir.mkdir(parents=True)
    history = [{"epoch": 1, "test_acc": 10.0, "seconds": 2.0, "images_per_second": 40.0}]
    torch.save({"epoch": 1, "history": history, **fourth.experiment().as_dict()}, fourth.dir / "checkpoint.pt")
    own = estimate.run_speed(runs, here, probing=False)
    assert own.images_per_second == pytest.approx((64 + 32 / 3) / 2.0)  # its first epoch: 64 images, 32 tested
    assert own.source == (f"this machine's own: the epochs of 1 unfinished run here on {here}, same model, precision "
                          "and threads per run")


@pytest.mark.full  # make
def test_a_fresh_clones_plan_counts_the_records_that_came_with_the_repository_and_downloads_nothing(tmp_path):
    """`make reproduce-cifar10 DRY_RUN=1` with no data: the plan, how many of the finished runs came with the
    repository and how to train them here instead, the images under "not there yet"; nothing downloaded."""
    data = tmp_path / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env.update(JAL_DATA_DIR=str(data), XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    done = subprocess.run(["make", "-o", ".venv/.installed", "reproduce-cifar10", "DRY_RUN=1", "PRESET=quick",
                           f"PYTHON={sys.executable}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = re.search(r"^  finished   (\d+) finished runs: (\d+) came with the repository: they count as done; "
                         r"make reproduce-cifar10 OUT=DIR trains every run here instead, into a folder of yours$",
                         done.stdout, re.M)
    assert finished and int(finished[1]) == int(finished[2]) >= 30, done.stdout  # the fp32 or the bf16 records
    assert re.search(rf"^  runs       90 in 4 sweeps: {finished[1]} finished already", done.stdout, re.M)
    assert f"\nnot there yet: {data / 'cifar10.npz'} is missing: " in done.stdout
    assert list(data.iterdir()) == []


def test_a_real_world_plan_lists_the_pretrained_weights_and_downloads_nothing(tmp_path, monkeypatch, capsys):
    """`make reproduce-clothing1m DRY_RUN=1` offline: the ImageNet weights join the missing data under "not there
    yet", the plan ends normally, and nothing asks the network (a download would raise here)."""
    from jal import estimate

    def no_network(*args, **kwargs):
        raise AssertionError("the plan downloaded something")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(estimate, "probe", lambda cfg, device: dict(images_per_second=10.0, steps=2, batch=32,
                                                                   seconds=6.4, measured="2026-12-05 14:02"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plan.main(["--name", "reproduce_real_world", f"dataset=clothing1m loss=ce,gce out_root={tmp_path / 'runs'}"])
    out = capsys.readouterr().out
    assert "  runs       2 in 1 sweep: 0 finished already, 2 to train\n" in out
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert (f"not there yet: {weights} is missing: ResNet-50's ImageNet weights (https://download.pytorch.org/models/"
            "resnet50-11ad3fa6.pth); the sweep (without DRY_RUN=1) first downloads them") in out
    assert f"not there yet: {tmp_path / 'data' / 'clothing1m' / 'annotations'}" in out


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_the_probe_times_a_pretrained_model_without_its_weights(tmp_path, monkeypatch):
    """The probe builds the run's model as the run does, but never fetches its ImageNet weights: the same network
    and step, timed (here ResNet-50 on 32-pixel images, batch 4)."""
    from torchvision.models import _api

    from jal import estimate

    def no_network(*args, **kwargs):
        raise AssertionError("the probe downloaded the weights")

    monkeypatch.setattr(_api.WeightsEnum, "get_state_dict", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = compose_train(["dataset=clothing1m", "loss=ce", "logger=none", "dataset.image_size=32",
                         "dataset.resize=32", "trainer.batch_size=4", "trainer.device=cpu", "trainer.threads=1"])
    probed = estimate.probe(cfg, "this CPU", seconds=0.5)
    assert probed["batch"] == 4 and probed["steps"] >= 2 and probed["images_per_second"] > 0
    kept = json.loads((tmp_path / "cache" / "jal" / "speeds.json").read_text())
    assert list(kept) == ["this CPU | resnet50_imagenet | fp32 | batch=4 | threads=1"]


@pytest.mark.full  # python -m jal.train
@pytest.mark.skipif(torch.cuda.is_available(), reason="speeds from CPU records")
def test_a_sweeps_eta_before_any_of_its_work_is_the_estimate_of_a_run_here(three_of_four_finished, tmp_path,
                                                                          monkeypatch):
    """A sweep whose first run ended without training (failed at once): nothing measured yet, so the ETA is the
    work left at the speed jal.estimate gives a run here (this machine's records), one run at a time (basic)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
        runs = plan_runs(TINY + [f"out_root={three_of_four_finished}"])
    progress = Progress()
    progress.start(runs)
    assert progress.eta() == f"ETA about {duration(WORK / own_speed(three_of_four_finished))}"
