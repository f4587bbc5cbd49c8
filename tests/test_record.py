"""The record of a run (jal/record.py): written and read back unchanged, its statuses, where it came from, and
the experiment it records (jal/experiment.py: the run's name, its out_root, its data files, its cell)."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, compose_train

from jal import experiment, record
from jal.config import ConfigError
from jal.record import Origin, Record, Status

COMMITTED = REPO / "results/quick/runs/cifar10/symmetric_0.8/jal_ce/seed123/result.json"


def a_record(**fields) -> Record:
    cell = dict(dataset="cifar10", model="cnn8", loss="jal_ce", noise_type="symmetric", noise_rate=0.8,
                noise_labels=None, seed=123, settings="")
    return Record(**({"status": Status.FINISHED} | cell | fields))


def test_a_record_is_written_and_read_back_unchanged_with_keys_it_does_not_know(tmp_path):
    written = a_record(epochs=2, last_test_acc=61.5, history=[{"epoch": 1}], host="here",
                       extra={"from_a_newer_version": [1, 2]})
    record.write(tmp_path, written)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["status"] == "finished" and data["from_a_newer_version"] == [1, 2]
    assert "epoch" not in data and data["noise_labels"] is None and data["subset"] is None  # as records always had
    read = record.read(tmp_path)
    assert read == written and read.run_dir == tmp_path and read.extra == {"from_a_newer_version": [1, 2]}
    assert read.status is Status.FINISHED and read.status == "finished"  # the enum is its word
    assert read.cell == experiment.Cell("cifar10", "cnn8", "jal_ce", "symmetric", 0.8, None, 123, "")


def test_every_committed_record_reads_and_writes_back_the_same_json(tmp_path):
    paths = sorted((REPO / "results").rglob("result.json"))
    assert len(paths) >= 90
    for path in paths:
        data = json.loads(path.read_text())
        assert Record.from_json(data).to_json() == data, path


def test_a_directory_says_how_its_run_stands(tmp_path):
    assert record.status(tmp_path) == (Status.NEW, None)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert record.status(tmp_path) == (Status.STARTED, None)
    record.write(tmp_path, a_record(status=Status.PAUSED, epoch=3, reason="SIGTERM"))
    status, paused = record.status(tmp_path)
    assert status is Status.PAUSED and paused.epoch == 3 and status.ended
    (tmp_path / "result.json").write_text('{"status": "running elsewhere"}')  # never written: not a record
    assert record.status(tmp_path) == (Status.UNREADABLE, None)
    (tmp_path / "result.json").write_text("{cut sho")
    with pytest.raises(record.UnreadableRecord, match=r"result.json is damaged \(JSONDecodeError.*restart=true"):
        record.read(tmp_path)


def test_an_unreadable_record_is_a_permission_problem_not_damage(tmp_path, monkeypatch):
    record.write(tmp_path, a_record())

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refused)
    with pytest.raises(record.UnreadableRecord) as err:
        record.read(tmp_path)
    assert "cannot be read by user" in str(err.value) and "permission denied" in str(err.value)
    assert "restart" not in str(err.value) and "damaged" not in str(err.value) and err.value.permission


def test_how_a_run_ended_in_words():
    assert record.ending(a_record(epochs=120, last_test_acc=64.321)) == "finished: test accuracy 64.32% (epoch 120)"
    assert record.ending(a_record(status=Status.PAUSED, epoch=3, reason="SIGTERM")) == \
        "paused after epoch 3: SIGTERM; the same command continues it"
    assert record.ending(a_record(status=Status.FAILED, error="RunDiverged: nan")) == "failed: RunDiverged: nan"
    assert record.ending(Record(status=Status.NOT_STARTED, reason="SIGUSR1")) == "not started: SIGUSR1"


def test_origin_tells_this_machine_the_repository_and_other_machines_apart(tmp_path, monkeypatch):
    committed = record.read(COMMITTED.parent)
    assert record.origin(committed) is Origin.REPOSITORY  # committed and unchanged
    copied = tmp_path / "copy"
    copied.mkdir()
    (copied / "result.json").write_text(COMMITTED.read_text())
    assert record.origin(record.read(copied)) is Origin.ELSEWHERE  # names no host: not known to be this machine
    record.write(copied, a_record(host=record.this_host()))
    assert record.origin(record.read(copied)) is Origin.HERE
    record.write(copied, a_record(host="another-host"))
    assert record.origin(record.read(copied)) is Origin.ELSEWHERE
    records = [committed, record.read(copied), a_record(host=record.this_host(), run_dir=copied)]
    assert record.provenance_line(records) == ("3 finished records: 1 trained here, 1 came with the repository, "
                                               "1 trained on another machine")


def test_a_committed_record_changed_in_the_checkout_no_longer_came_with_the_repository(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    run = repo / "results" / "run"
    run.mkdir(parents=True)
    record.write(run, a_record(host="the machine that trained it"))
    git = lambda *args: subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a record")
    monkeypatch.setattr(record, "REPO_ROOT", repo)
    record.committed_files.cache_clear()
    try:
        assert record.origin(record.read(run)) is Origin.REPOSITORY
        record.write(run, a_record(host=record.this_host()))  # trained again here: no longer the committed one
        record.committed_files.cache_clear()
        assert record.origin(record.read(run)) is Origin.HERE
    finally:
        record.committed_files.cache_clear()


def test_scan_reads_every_record_once_and_names_the_unreadable(tmp_path):
    for seed in (1, 2):
        (tmp_path / f"s{seed}").mkdir()
        record.write(tmp_path / f"s{seed}", a_record(seed=seed))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text("[]")
    warned = []
    found = record.scan([tmp_path, tmp_path / "s1"], warn=warned.append)
    assert [r.seed for r in found] == [1, 2] and len(warned) == 1 and "bad/result.json" in warned[0]


# ---------------------------------------------------------------------------------------------------
# The experiment


@pytest.mark.parametrize("overrides, name", [
    ([], "cifar10/clean/ce/seed123"),
    (["loss=jal_ce", "noise=symmetric", "noise.rate=0.8", "seed=7"], "cifar10/symmetric_0.8/jal_ce/seed7"),
    (["loss=jal_ce", "loss.passive.a=10.0", "trainer.threads=1", "logger.project=x", "out_root=/tmp/elsewhere"],
     "cifar10/clean/jal_ce/seed123/loss.passive.a=10"),
    (["trainer.precision=fp64", "optim.lr=1e-4", "dataset.subset=2000"],
     "cifar10/clean/ce/seed123/fp64/dataset.subset=2000,optim.lr=0.0001"),
    (["noise=human", "noise.labels=worst", "experiment=quick", "trainer.precision=fp32"],
     "cifar10/human_worst/ce/seed123"),
])
def test_a_runs_directory_is_its_cell_precision_and_settings(overrides, name):
    cfg = compose_train(overrides)
    assert cfg.run_name == name
    assert experiment.experiment(cfg).name == name


@pytest.mark.parametrize("out_root, why", [("", "is empty"), ("  ", "is empty"), ("/", "file system's root"),
                                           ("/proc/x", "system folder"), ("/sys", "system folder")])
def test_an_impossible_out_root_is_refused_by_one_rule(out_root, why):
    with pytest.raises(ConfigError, match=why):
        experiment.check_out_root(out_root)
    cfg = compose_train([f"out_root={out_root}"])
    with pytest.raises(Exception, match=why):  # the run's and the sweep's directories resolve through it
        str(cfg.hydra.run.dir)
    with pytest.raises(Exception, match=why):
        str(cfg.hydra.sweep.dir)


def test_an_out_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        experiment.check_out_root(tmp_path / "file")
    assert experiment.check_out_root(tmp_path / "new" / "folder") == str(tmp_path / "new" / "folder")


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_the_data_files_a_run_reads(tmp_path):
    def files(*overrides):
        return [(f.path.name, f.downloadable) for f in experiment.data_files(
            compose_train([f"data_dir={tmp_path}", *overrides]))]

    assert files() == [("cifar10.npz", True)]
    assert files("noise=human", "noise.labels=worst") == [("cifar10.npz", True), ("cifar10n_labels.npz", False)]
    assert files("noise=instance", "noise.rate=0.4") == [("cifar10.npz", True), ("cifar10_idn_labels.npz", False)]
    assert files("noise=instance", "noise.rate=0.3") == [("cifar10.npz", True)]  # drawn by the generator
    assert files("dataset=synthetic") == []
    missing = experiment.data_files(compose_train([f"data_dir={tmp_path}", "noise=human", "noise.labels=worst"]))[1]
    assert missing.missing().startswith(f"{tmp_path}/cifar10n_labels.npz is missing: put cifar10n_labels.npz")


def test_the_experiment_is_worked_out_once_from_the_config(tmp_path):
    cfg = compose_train(["dataset=synthetic", "loss=jal_ce", "noise=symmetric", "noise.rate=0.4",
                         "trainer.device=cpu", "trainer.precision=fp32", f"out_root={tmp_path}"])
    exp = experiment.experiment(cfg)
    assert (exp.device.type, exp.precision, exp.precision_reason) == ("cpu", "fp32", "trainer.precision=fp32")
    assert exp.identity == experiment.identity(exp.config, "fp32") and exp.fingerprint == experiment.fingerprint(
        exp.identity)
    assert "out_root" not in exp.config and "data_dir" not in exp.config  # this machine's paths
    assert exp.cell.short_name() == "jal_ce sym0.4 s123" and exp.cell.settings == ""
    assert os.fspath(cfg.hydra.run.dir) == f"{tmp_path}/{exp.name}"
