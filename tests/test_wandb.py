"""A run's W&B run (jal/wandb_run.py), offline: one training of one run directory is one W&B run. A new
directory, trainer.restart=true or deleted outputs start a fresh one; only a resume of the same directory
continues it, and its history then holds every epoch once. Its group and tags name the protocol; the console
says once where it is. The runs are read back from wandb's own offline files."""

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, compose_train

from jal import train as jal_train
from jal import wandb_run as jal_wandb
from jal.experiment import experiment, plain_config
from jal.run_dir import WANDB_ID

pytest.importorskip("wandb")

EPOCH_KEYS = {"epoch", "train_loss", "train_acc_noisy", "train_acc_clean_subset", "train_acc_corrupted_subset",
              "train_memorised", "test_acc", "lr", "images_per_second"}
TINY = ("logger=wandb", "dataset.train_size=64", "dataset.test_size=32", "trainer.threads=1")


def run_dir_of(cfg) -> Path:
    return Path(cfg.out_root) / cfg.run_name


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


# ---------------------------------------------------------------------------------------------------
# Reading an offline run: its .wandb file (a LevelDB-style log of protobuf records in 32 KiB blocks)


def parse_wandb_file(path: Path) -> tuple[dict, list[dict], bool]:
    """(its run record: id, group, tags; its history rows; whether the exit record is there)."""
    from wandb.proto import wandb_internal_pb2

    raw, run, rows, pending, complete = path.read_bytes(), {}, [], b"", False
    pos = 7  # file header: ":W&B", a 2-byte magic and a version byte
    while pos + 7 <= len(raw):
        if (pos % 32768) + 7 > 32768:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            what = record.WhichOneof("record_type")
            if what == "run":
                run = dict(id=record.run.run_id, group=record.run.run_group, tags=list(record.run.tags))
            elif what == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            complete |= what == "exit"
    return run, rows, complete


def read_offline_run(path: Path, wait_seconds: float = 60) -> tuple[dict, list[dict]]:
    """An offline run's record and history rows. wandb's writer (the wandb-core process) may still be flushing
    after run.finish() returns on a busy machine: read again until the file holds the run's exit record."""
    deadline = time.monotonic() + wait_seconds
    while True:
        run, rows, complete = parse_wandb_file(path)
        if complete or time.monotonic() > deadline:
            return run, rows
        time.sleep(0.5)


def wandb_runs(run_dir: Path) -> list[tuple[dict, list[dict]]]:
    """Every offline part written in `run_dir`, oldest first: (run record, history rows)."""
    return [read_offline_run(file) for file in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]


def kept_id(run_dir: Path) -> str:
    return (run_dir / WANDB_ID).read_text().strip()


# ---------------------------------------------------------------------------------------------------
# Ids


def test_new_wandb_run_ids_read_as_the_cell_are_ones_wandb_accepts_and_never_repeat():
    from wandb import Settings

    cell = "cifar10/symmetric_0.8/jal_ce/seed123"
    names = [cell, f"{cell}/loss.passive.a=30", f"{cell}/optim.lr=0.02,trainer.epochs=2",
             f"{cell}/optim.lr=0.02:trainer.epochs=2",
             f"{cell}/bf16/" + ",".join(f"loss.term{i}.weight={i}" for i in range(20))]  # over 128 characters
    ids = [jal_wandb.new_wandb_run_id(name) for name in names for _ in range(2)]
    assert len(set(ids)) == len(ids)  # a name twice (two out_roots, a restart): two W&B runs
    assert ids[0].startswith("cifar10-symmetric_0.8-jal_ce-seed123-") and len(ids[0]) == len(cell) + 1 + 8
    for run_id in ids:
        assert Settings(run_id=run_id).run_id == run_id and len(run_id) <= 128  # W&B's own validation


# ---------------------------------------------------------------------------------------------------
# One training, one W&B run


@pytest.mark.full  # wandb-core
def test_wandb_offline_run_holds_every_epoch_under_the_id_its_directory_keeps(synthetic_run, offline):
    # two settings beyond the cell: a ',' in the run's name, which W&B refuses in a run id
    cfg = synthetic_run(*TINY, "trainer.epochs=2", "optim.lr=0.02")
    result = jal_train.train(cfg, run_dir_of(cfg))
    run_id = kept_id(run_dir_of(cfg))
    assert run_id.startswith("synthetic-clean-ce-seed123-")
    ((run, rows),) = wandb_runs(run_dir_of(cfg))
    assert run["id"] == run_id
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["test_acc"] for r in rows] == pytest.approx([h["test_acc"] for h in result.history])
    assert all(EPOCH_KEYS <= set(r) for r in rows)


@pytest.mark.full  # wandb-core
def test_the_same_cell_in_two_out_roots_is_two_wandb_runs(synthetic_run, offline, tmp_path):
    cfg = synthetic_run(*TINY, "trainer.epochs=1")
    run_dirs = [tmp_path / out_root / cfg.run_name for out_root in ("a", "b")]
    for run_dir in run_dirs:
        jal_train.train(cfg, run_dir)
    (a, a_rows), (b, b_rows) = (wandb_runs(run_dir)[0] for run_dir in run_dirs)
    assert a["id"] != b["id"]  # synced, one would have dropped the other's epochs
    assert [a["id"], b["id"]] == [kept_id(run_dir) for run_dir in run_dirs]
    assert [r["epoch"] for r in a_rows] == [r["epoch"] for r in b_rows] == [1]


@pytest.mark.full  # wandb-core
def test_trainer_restart_is_a_new_wandb_run(synthetic_run, offline):
    cfg = synthetic_run(*TINY, "trainer.epochs=1")
    run_dir = run_dir_of(cfg)
    jal_train.train(cfg, run_dir)
    cfg.trainer.restart = True
    jal_train.train(cfg, run_dir)
    runs = wandb_runs(run_dir)
    ids = {run["id"] for run, _ in runs}
    old = (run_dir / f"{WANDB_ID}.damaged").read_text().strip()  # moved aside with the run's files
    assert len(runs) == len(ids) == 2 and ids == {old, kept_id(run_dir)}
    assert all([r["epoch"] for r in rows] == [1] for _, rows in runs)  # each training's history whole


@pytest.mark.full  # wandb-core
def test_deleted_outputs_give_a_new_wandb_run(synthetic_run, offline):
    cfg = synthetic_run(*TINY, "trainer.epochs=1")
    jal_train.train(cfg, run_dir_of(cfg))
    ((first, _),) = wandb_runs(run_dir_of(cfg))
    shutil.rmtree(run_dir_of(cfg))
    jal_train.train(cfg, run_dir_of(cfg))
    ((second, rows),) = wandb_runs(run_dir_of(cfg))
    assert second["id"] != first["id"] and second["id"] == kept_id(run_dir_of(cfg))
    assert [r["epoch"] for r in rows] == [1]


@pytest.mark.full  # python -m jal.train
def test_a_paused_run_continued_by_the_same_command_continues_its_wandb_run_with_every_epoch_once(tmp_path):
    """Two commands, as a user runs them: the first pauses after epoch 1 (trainer.pause_after, not part of the
    experiment), the second finishes the run. One W&B id, in two offline parts (one per command) that together
    hold epochs 1 and 2 once each; each command says where its W&B run is in one line, and wandb says nothing."""
    command = [sys.executable, "-m", "jal.train", "dataset=synthetic", *TINY, "trainer.epochs=2",
               "trainer.progress=false", f"out_root={tmp_path}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    env.pop("WANDB_SILENT", None)
    outputs = []
    for extra in (["trainer.pause_after=1"], []):
        done = subprocess.run(command + extra, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout + done.stderr)
    (run_dir,) = {p.parent for p in tmp_path.rglob(WANDB_ID)}
    run_id = kept_id(run_dir)
    parts = wandb_runs(run_dir)
    assert [run["id"] for run, _ in parts] == [run_id, run_id]
    assert [r["epoch"] for _, rows in parts for r in rows] == [1, 2]
    record = json.loads((run_dir / "result.json").read_text())
    assert [r["test_acc"] for _, rows in parts for r in rows] == pytest.approx(
        [h["test_acc"] for h in record["history"]])
    for output, how in zip(outputs, ("new", "continued")):
        lines = [line for line in output.splitlines() if "W&B run" in line]
        assert len(lines) == 1 and f"W&B run {run_id} ({how}), offline in " in lines[0], output[-2000:]
        assert f"wandb sync {run_dir}/wandb/offline-run-*-{run_id}" in lines[0]
        assert not [line for line in output.splitlines() if line.startswith("wandb:")]


@pytest.mark.full  # wandb-core (an offline W&B run)
def test_each_member_of_a_fusion_logs_to_its_own_wandb_run_and_says_so_once(synthetic_run, offline, tmp_path,
                                                                           caplog):
    """One process holds K W&B runs at once (a fusion): one run's start must not finish another's."""
    losses = ("ce", "jal_ce")
    cfgs = [synthetic_run(*TINY, "trainer.epochs=2", f"loss={loss}") for loss in losses]
    run_dirs = [tmp_path / loss for loss in losses]
    with caplog.at_level(logging.INFO, logger="jal.console"):
        results = jal_train.train_fusion(cfgs, run_dirs)
    said = [r.getMessage() for r in caplog.records if r.name == "jal.console" and "W&B run" in r.getMessage()]
    assert len(said) == 2
    for run_dir, result in zip(run_dirs, results):
        assert result.status == "finished", result.error
        ((run, rows),) = wandb_runs(run_dir)
        assert run["id"] == kept_id(run_dir)
        assert [r["epoch"] for r in rows] == [1, 2]
        assert [r["test_acc"] for r in rows] == pytest.approx([h["test_acc"] for h in result.history])
        assert sum(f"W&B run {run['id']} (new), offline in {run_dir}/wandb/offline-run-" in line for line in said) == 1


# ---------------------------------------------------------------------------------------------------
# Group and tags: the protocol


@pytest.mark.full  # wandb-core (an offline W&B run)
def test_group_and_tags_name_the_protocol_so_a_smoke_run_never_joins_the_papers_group(synthetic_run, offline):
    paper = compose_train(["dataset=cifar10", "loss=jal_ce", "noise=symmetric", "noise.rate=0.8"])
    assert jal_wandb.group_and_tags(plain_config(paper), "fp32") == (
        "cifar10 | 120 ep | train full | test full | fp32",
        ["cifar10", "symmetric", "jal_ce", "120 ep", "train full", "test full", "fp32"])
    quick = compose_train(["experiment=quick", "logger=wandb", "loss=jal_ce"])
    group = jal_wandb.group_and_tags(plain_config(quick), "bf16")[0]
    assert group == "cifar10 | 12 ep | train 10000 | test full | bf16"
    smoke = compose_train(["dataset=cifar10", "dataset.subset=2000", "trainer.epochs=3"])
    assert jal_wandb.group_and_tags(plain_config(smoke), "fp32")[0] == "cifar10 | 3 ep | train 2000 | test full | fp32"
    ours = compose_train(["dataset=cifar10", "logger.group=mine", "dataset.test_subset=1000"])
    assert jal_wandb.group_and_tags(plain_config(ours), "fp32")[0] == "mine | 120 ep | train full | test 1000 | fp32"

    cfg = synthetic_run(*TINY, "trainer.epochs=1", "trainer.precision=fp64")  # the W&B run itself says it
    jal_train.train(cfg, run_dir_of(cfg))
    ((run, _),) = wandb_runs(run_dir_of(cfg))
    assert run["group"] == "synthetic | 1 ep | train full | test full | fp64"
    assert run["tags"] == ["synthetic", "none", "ce", "1 ep", "train full", "test full", "fp64"]


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_wandb_mode_disabled_needs_no_wandb_package_and_keeps_no_id(synthetic_run, monkeypatch, one_torch_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` would fail, as on a bare GPU host
    cfg = synthetic_run("logger=wandb", "trainer.epochs=1", "dataset.train_size=64", "dataset.test_size=32")
    assert jal_train.train(cfg, run_dir_of(cfg)).status == "finished"
    assert not (run_dir_of(cfg) / "wandb").exists() and not (run_dir_of(cfg) / WANDB_ID).exists()


def test_continuing_online_warns_of_offline_parts_not_uploaded(synthetic_run, monkeypatch, tmp_path, caplog):
    """Synced after the online part, an offline part's epochs would be dropped by W&B: the run says so first.
    wandb.init is replaced (nothing goes online); the offline parts are folders as wandb names them."""
    import wandb

    started = []
    monkeypatch.setattr(jal_wandb, "where", lambda *args: "W&B run (stand-in)")
    monkeypatch.setattr(wandb, "init", lambda **kwargs: started.append(kwargs))
    cfg = synthetic_run("logger=wandb", "logger.mode=online")
    run_dir = tmp_path / "run"
    part = run_dir / "wandb" / "offline-run-20260101_000000-synthetic-clean-ce-seed123-abcd1234"
    part.mkdir(parents=True)
    (part / "run-synthetic-clean-ce-seed123-abcd1234.wandb").write_bytes(b"")
    (run_dir / WANDB_ID).write_text("synthetic-clean-ce-seed123-abcd1234\n")
    warnings = lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    with caplog.at_level(logging.INFO, logger="jal.console"):
        jal_wandb.start_wandb(experiment(cfg), run_dir)
        assert started[-1]["id"] == "synthetic-clean-ce-seed123-abcd1234" and started[-1]["resume"] == "allow"
        assert len(warnings()) == 1 and "1 offline part(s) of it are not uploaded yet: W&B drops their epochs" in (
            warnings()[0]) and f"wandb sync {part}" in warnings()[0]
        (part / "run-synthetic-clean-ce-seed123-abcd1234.wandb.synced").write_bytes(b"")  # `wandb sync`'s mark
        caplog.clear()
        jal_wandb.start_wandb(experiment(cfg), run_dir)
        assert warnings() == []
