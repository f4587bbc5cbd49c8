"""Faults of the machine, not of the code: a full disk, a read-only out_root, a data folder that cannot be
written, a sweep that finds another experiment in its directories, and a sweep over a setting that does not
change the experiment. Each ends in one line naming the folder (or the setting) and the fix; a full disk
keeps the last checkpoint, from which the same command resumes."""

import errno
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIG_DIR, REPO, compose_train
from hydra import initialize_config_dir
from omegaconf import OmegaConf, open_dict, read_write
from test_train import assert_same_training

from jal import multirun, plan
from jal import train as jal_train
from jal.data import load_dataset
from jal.errors import DirectoryConflict
from jal.experiment import hydra_node, plain_config
from jal.fuse import command as fuse
from jal.preflight import check_command_line
from jal.progress import Progress
from jal.util import CannotWrite

TINY = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=32", "trainer.batch_size=32", "logger=none",
        "trainer.progress=false", "trainer.threads=1"]


def jal_train_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jal.train", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only=False) -> a fresh tmpfs under tmp_path (a disk that fills up, a read-only folder);
    skipped where this process may not mount (not root, or a container without the capability)."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"mount{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        if read_only:
            remount_read_only(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


# ---------------------------------------------------------------------------------------------------
# A full disk


def full_disk_at(monkeypatch, name: str, call: int) -> None:
    """Fault injection: the `call`-th write of a file called `name` finds the disk full, after writing part of it."""
    calls, real_open = [], open

    def open_filling_the_disk(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(f".{name}."):  # atomic_save's temporary file
            calls.append(file)
            if len(calls) == call:
                handle.write(b"\0" * 100 if "b" in mode else "{")
                handle.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return handle

    monkeypatch.setattr("builtins.open", open_filling_the_disk)
    monkeypatch.setattr("io.open", open_filling_the_disk)  # pathlib's write_text


@pytest.mark.parametrize("name, epoch_kept", [("checkpoint.pt", 1), ("result.json", 2)])
@pytest.mark.full  # trains
def test_a_full_disk_stops_the_run_in_one_line_keeps_its_checkpoint_and_the_same_command_resumes(
        synthetic_run, tmp_path, monkeypatch, one_torch_thread, name, epoch_kept):
    cfg = synthetic_run(*TINY, "trainer.epochs=2")
    run = tmp_path / "run"
    full_disk_at(monkeypatch, name, call=2 if name == "checkpoint.pt" else 1)
    with pytest.raises(CannotWrite) as refused:
        jal_train.train(cfg, run)
    assert str(refused.value) == (
        f"cannot write {name} in {run}: no space left on the disk; free space there or give out_root another "
        f"folder; its checkpoint of epoch {epoch_kept}/2 is kept: once there is room the same command resumes it")
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == epoch_kept
    assert not (run / "result.json").exists()  # no failed record: the run is not failed, it is resumable
    assert not list(run.glob(".*.*"))  # the temporary file of the failed write is gone

    monkeypatch.undo()
    resumed = jal_train.train(cfg, run)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")
    assert_same_training(uninterrupted, tmp_path / "uninterrupted", resumed, run)  # bit for bit


@pytest.mark.full  # tmpfs, python -m jal.train
def test_a_full_disk_ends_the_command_in_one_line(tmpfs):
    disk = tmpfs("20m")  # a checkpoint takes 13 MB: the first fits, the second does not (the first is kept)
    done = jal_train_process(*TINY, "trainer.epochs=2", f"out_root={disk}")
    run = next(disk.rglob("config.yaml")).parent
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: cannot write checkpoint.pt in {run}: no space left on the disk; free space there or give out_root "
        "another folder; its checkpoint of epoch 1/2 is kept: once there is room the same command resumes it"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------------------------------------------
# A read-only out_root; a data folder that cannot be written


@pytest.mark.full  # tmpfs, python -m jal.train
def test_a_read_only_out_root_skips_a_finished_run_and_refuses_a_new_one_in_one_line(tmpfs, one_torch_thread):
    out_root = tmpfs("40m")
    finished = ["trainer.epochs=1", f"out_root={out_root}"]
    cfg = compose_train(TINY + finished)
    jal_train.train(cfg, cfg.hydra.run.dir)
    remount_read_only(out_root)

    skipped = jal_train_process(*TINY, *finished)
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert skipped.stderr == "" and f"{cfg.hydra.run.dir} is finished already: skipping" in skipped.stdout

    with pytest.raises(SystemExit) as refused:  # before Hydra (python -m jal.train checks this first)
        check_command_line(TINY + finished + ["seed=5"])
    assert refused.value.code == (
        f"error: cannot write the run's files in {out_root}/synthetic/clean/ce/seed5/{Path(cfg.hydra.run.dir).name}: "
        f"{out_root}/synthetic/clean/ce is read-only or not writable; a run trains only where it can write: make the "
        "folder writable, or give out_root a writable folder (a finished run is still read where it is)")

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):  # a sweep's plan: the same line
        with pytest.raises(CannotWrite, match=f"seed5/.*: {out_root}/synthetic/clean/ce is read-only or not writable"):
            multirun.plan_runs(TINY + finished[:1] + [f"out_root={out_root}", "seed=123,5"])
        assert multirun.plan_runs(TINY + finished)[0].status()[0] == "finished"  # read: nothing to write

    with pytest.raises(CannotWrite, match=rf"cannot write cifar10.npz .* in {out_root}/data: {out_root} is read-only"):
        load_dataset("cifar10", out_root / "data")


def test_an_unwritable_out_root_is_refused_before_hydra_starts(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted (and as root, which writes anywhere): the folder's probe, made to refuse."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(tmp_path)) and
                        real_access(path, mode))
    with pytest.raises(SystemExit, match=f"error: cannot write the run's files in {tmp_path}/synthetic/.*: {tmp_path} "
                                         "is read-only or not writable; a run trains only where it can write"):
        check_command_line(TINY + [f"out_root={tmp_path}"])


def test_a_data_folder_that_cannot_be_made_is_named_before_any_download(tmp_path):
    (tmp_path / "a_file").write_text("")
    data_dir = tmp_path / "a_file" / "data"
    line = (f"error: cannot write cifar10.npz (downloaded and prepared there) in {data_dir}: {tmp_path}/a_file is "
            "not a folder; put cifar10.npz (x_train, y_train, x_test, y_test) there, or point JAL_DATA_DIR (data_dir) "
            "at a folder you can write")
    with pytest.raises(SystemExit, match=f"^{re.escape(line)}$"):
        check_command_line(["logger=none", f"data_dir={data_dir}", f"out_root={tmp_path}"])
    with pytest.raises(CannotWrite, match=f"^{re.escape(line.removeprefix('error: '))}$"):
        load_dataset("cifar10", data_dir)


# ---------------------------------------------------------------------------------------------------
# A sweep counts only the runs it asked for and found


def test_the_summary_counts_a_directory_of_another_experiment_as_such_and_the_sweep_fails(tmp_path, capsys):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = multirun.plan_runs(TINY + [f"out_root={tmp_path}", "trainer.epochs=2", "seed=1,2"])
    progress = Progress()
    progress.start(runs)
    for run, epochs in zip(runs, (2, 5)):  # the second's directory: another sweep's run, of 5 epochs
        with hydra_node(run.cfg):
            config = plain_config(run.cfg)
        config["trainer"]["epochs"] = epochs
        run.dir.mkdir(parents=True)
        (run.dir / "result.json").write_text(json.dumps(dict(status="finished", last_test_acc=50.0, config=config,
                                                             precision="fp32")))
    progress.on_job_end(OmegaConf.create({"hydra": {"runtime": {"output_dir": str(runs[1].dir)}}}), None)
    with pytest.raises(SystemExit) as ended:
        progress.on_multirun_end(runs[0].cfg)
    assert ended.value.code == 1
    another = (f"{runs[1].dir} holds another experiment (trainer.epochs: 5 in the record, 2 asked): this sweep's run "
               "did not train there; give the sweep its own out_root")
    assert capsys.readouterr().out.splitlines() == [
        f"[2/2] {runs[1].name}: {another} (sweep done)",
        "Sweep summary: 2 runs: 1 finished, 0 failed, 0 paused, 0 not run to an end, 1 another experiment in its "
        "directory",
        "  where   1 finished run: 1 trained on another machine",  # a record naming no host (jal.record.origin)
        f"  another experiment  {runs[1].name}: {another}",
        "",
    ]


# ---------------------------------------------------------------------------------------------------
# A sweep over a setting that does not change the experiment


@pytest.mark.parametrize("swept", ["trainer.channels_last=true,false", "trainer.threads=1,2"])
@pytest.mark.full  # plans a sweep
def test_a_sweep_over_a_setting_that_does_not_change_the_experiment_is_refused_in_its_plan(tmp_path, swept, capsys):
    key, _, values = swept.partition("=")
    first, second = (v.capitalize() if v in ("true", "false") else v for v in values.split(","))  # as Hydra has them
    overrides = [o for o in TINY if not o.startswith(key)] + [f"out_root={tmp_path}", swept]
    line = (rf"{key}={first} and {key}={second} are one run of the sweep \({tmp_path}/synthetic/clean/ce/seed123/"
            rf"[^)]*\): {key} does not change the experiment, so one would train and the other be skipped; to "
            "compare them, run each value with its own out_root")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(DirectoryConflict, match=f"^{line}$"):
            multirun.plan_runs(overrides)
        multirun.plan_runs(overrides[:-1] + ["seed=1,1"])  # the same run named twice: not such a sweep
    for main in (plan.main, fuse.main):  # python -m jal.plan "<overrides>", python -m jal.fuse <overrides>
        with pytest.raises(SystemExit, match=f"^error: {line}$"):
            main([" ".join(overrides)] if main is plan.main else overrides)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_multirun_over_a_setting_that_does_not_change_the_experiment_stops_in_one_line(tmp_path):
    """python -m jal.train -m: the plan of the progress callback (configs/hydra/callbacks), before any job."""
    overrides = TINY + [f"out_root={tmp_path}", "trainer.channels_last=true,false"]
    cfg = compose_train([o for o in overrides if "," not in o])  # the multirun's config: its sweep in the params
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.overrides.task = [o for o in overrides if "," not in o]
        cfg.hydra.sweeper.params = {"trainer.channels_last": "true,false"}
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"), pytest.raises(SystemExit) as refused:
        Progress().on_multirun_start(cfg)
    assert refused.value.code == (
        f"error: trainer.channels_last=True and trainer.channels_last=False are one run of the sweep ({tmp_path}/"
        "synthetic/clean/ce/seed123/dataset.test_size=32,dataset.train_size=32,trainer.batch_size=32): "
        "trainer.channels_last does not change the experiment, so one would train and the other be skipped; to "
        "compare them, run each value with its own out_root")


def test_ctrl_c_inside_a_save_is_an_interruption_and_leaves_no_temporary_file(tmp_path):
    """torch.save into a file: Ctrl-C mid-write surfaces as its zip writer's RuntimeError (the KeyboardInterrupt
    only in its context); the save must end as the interruption it is (exit 130, not a traceback)."""
    from jal.util import atomic_save

    def save_interrupted(tmp):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None  # noqa: B904

    def save_interrupted_in_context(tmp):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("unexpected pos")  # noqa: B904

    (tmp_path / "checkpoint.pt").write_bytes(b"kept")
    with pytest.raises(KeyboardInterrupt):
        atomic_save(tmp_path / "checkpoint.pt", save_interrupted_in_context, ".pt")
    with pytest.raises(RuntimeError):  # an error that no interruption caused stays itself
        atomic_save(tmp_path / "checkpoint.pt", save_interrupted, ".pt")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"kept"


# ---------------------------------------------------------------------------------------------------
# A disk full before the command starts; a folder that takes no files; a folder where a file should be


def fill(disk: Path) -> None:
    """Fill the disk to its last byte (another process's files, before the command starts)."""
    fd = os.open(disk / "another_program's_file", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 2**16):
            pass
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


# Each entry point with its command line: a run alone, or a sweep of two seeds (the plan: one argument per sweep)
SWEEP = [*TINY, "seed=1,2"]
ENTRY_POINTS = {"python -m jal.train": ["jal.train", *TINY], "python -m jal.train -m": ["jal.train", "-m", *SWEEP],
                "python -m jal.fuse": ["jal.fuse", "--fuse", "2", *SWEEP], "python -m jal.plan": ["jal.plan", *SWEEP]}


@pytest.mark.full  # mounts a tmpfs
@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_a_disk_full_before_the_command_starts_ends_it_in_one_line(tmpfs, command):
    disk = tmpfs("1m")
    fill(disk)
    module, *args = ENTRY_POINTS[command] + [f"out_root={disk}"]
    if module == "jal.plan":
        args = [" ".join(args)]
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    seed = "seed1" if "seed=1,2" in ENTRY_POINTS[command] else "seed123"  # a sweep: its first run is named
    run = f"{disk}/synthetic/clean/ce/{seed}/dataset.test_size=32,dataset.train_size=32,trainer.batch_size=32"
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"error: cannot write the run's files in {run}: no space left on the disk (0.0 MB free, a write needs 4 MB); "
        "free space there or give out_root another folder (a finished run is still read where it is)"], done.stderr
    assert "Traceback" not in done.stdout and "Logging error" not in done.stdout
    assert sorted(p.name for p in disk.iterdir()) == ["another_program's_file"]  # nothing written, not even a folder


@pytest.mark.full  # mounts a tmpfs
def test_a_disk_full_at_the_lock_is_one_line(tmpfs, one_torch_thread):
    """The check before (write_refusal) passes, then the disk fills: the lock's holder line is the first write."""
    disk = tmpfs("1m")
    fill(disk)
    with pytest.raises(CannotWrite) as refused:
        jal_train.train(compose_train(TINY + [f"out_root={disk}"]), disk / "run")
    assert str(refused.value) == (
        f"cannot write .lock in {disk}/run: no space left on the disk; free space there or give out_root another "
        "folder (a finished run is still read where it is)")


@pytest.mark.full  # mounts a tmpfs
def test_a_log_line_the_full_disk_refuses_is_dropped_without_a_logging_error(tmpfs, capfd):
    """train.log's handler as Hydra's job logging makes it for a run alone (configs/train.yaml) and as jal.fuse
    opens it for a fused member: a line the disk refuses prints no `--- Logging error ---` traceback, nor does
    closing the file with that line still buffered."""
    from hydra.utils import get_class

    from jal.fuse.logs import RunLog

    disk = tmpfs("1m")
    fill(disk)
    spec = compose_train(TINY).hydra.job_logging.handlers.file  # the class Hydra's logging config names
    alone = get_class(spec["class"])(str(disk / "train.log"), delay=spec.delay)
    member = RunLog(str(disk / "member" / "train.log"), disk / "member", {str(disk / "member")})
    for handler in (alone, member):
        handler.handle(logging.LogRecord("jal.run", logging.INFO, __file__, 1, "an epoch's line " * 100, None, None))
        handler.close()
    out, err = capfd.readouterr()
    assert "Logging error" not in out + err and "Traceback" not in out + err
    assert (disk / "train.log").stat().st_size == 0  # the line was refused indeed (not written after all)


def test_out_root_under_proc_is_refused_in_one_line(tmp_path):
    """One rule for every entry point (jal.experiment.check_out_root), before any folder is made."""
    line = (r"error: out_root=/proc/x lies in a system folder \(/proc, /sys, /dev\): give out_root a folder of yours, "
            r"e.g. out_root=outputs")
    with pytest.raises(SystemExit, match=f"^{line}$"):
        check_command_line(TINY + ["out_root=/proc/x"])  # python -m jal.train
    with pytest.raises(SystemExit, match=f"^{line}$"):
        fuse.main(TINY + ["out_root=/proc/x", "seed=1,2"])  # jal.fuse, -m and the plan: plan_runs


def test_a_folder_where_config_yaml_should_be_is_named_in_one_line(tmp_path, one_torch_thread):
    (tmp_path / "run" / "config.yaml").mkdir(parents=True)
    with pytest.raises(CannotWrite) as refused:
        jal_train.train(compose_train(TINY + [f"out_root={tmp_path}"]), tmp_path / "run")
    assert str(refused.value) == (
        f"cannot write config.yaml in {tmp_path}/run: a folder stands where the file should be; move the folder "
        f"{tmp_path}/run/config.yaml away or write elsewhere")


# ---------------------------------------------------------------------------------------------------
# A shared results folder: files made as open() makes them, read by others; a file this user may not read


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)], ids=["022", "002", "077"])
def test_atomic_files_get_the_mode_open_gives_them_under_the_umask(tmp_path, umask, mode):
    from jal.util import atomic_write_text

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
        with open(tmp_path / "by_open", "w"):
            pass
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "result.json").st_mode & 0o777 == os.stat(tmp_path / "by_open").st_mode & 0o777 == mode


@pytest.mark.full  # python -m jal.train
def test_a_run_in_a_shared_folder_can_be_read_by_another_user():
    """Under umask 022 every file of a run is 0644, as open() makes files (tempfile.mkstemp made them 0600: a
    colleague could read no record). As root, another user (nobody) reads each; otherwise the modes say it."""
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="jal-shared-"))  # /tmp, not pytest's tmp_path: others may enter it
    try:
        shared.chmod(0o755)
        done = subprocess.run([sys.executable, "-m", "jal.train", *TINY, "trainer.epochs=2", f"out_root={shared}"],
                              cwd=REPO, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                              timeout=300, preexec_fn=lambda: os.umask(0o022))
        assert done.returncode == 0, done.stderr[-2000:]
        run = next(shared.rglob("result.json")).parent
        names = ["result.json", "config.yaml", "labels.npz", "checkpoint.pt", "checkpoint.prev.pt", "train.log",
                 ".lock"]
        assert {name: oct(os.stat(run / name).st_mode & 0o777) for name in names} == dict.fromkeys(names, "0o644")
        if os.geteuid() == 0:
            for name in names:
                read = subprocess.run(["head", "-c", "1", str(run / name)], capture_output=True, user="nobody")
                assert read.returncode == 0 and len(read.stdout) == 1, (name, read.stderr)
    finally:
        shutil.rmtree(shared)


def not_readable_by_this_user(monkeypatch, path: Path) -> None:
    """`path` as another user's file of mode 0600 is to this one: chmod 000, or for root (who reads anything) a
    PermissionError from every open of it."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    monkeypatch.setattr("io.open", refusing_open)  # pathlib's read_text


def permission_line(path: Path, elsewhere: str) -> str:
    """The line for `path` not readable by this user (jal.util.unreadable), up to its owner and mode."""
    return (rf"^{re.escape(str(path))} cannot be read by user \S+: permission denied \(owner \S+, mode 0000\); ask "
            rf"\S+ to let others read it \(chmod a\+r {re.escape(str(path))}\), or {re.escape(elsewhere)}$")


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_a_run_file_this_user_may_not_read_is_a_permission_problem_not_damage(tmp_path, monkeypatch,
                                                                                one_torch_thread):
    cfg = compose_train(TINY + ["trainer.epochs=2", f"out_root={tmp_path}"])
    jal_train.train(cfg, tmp_path / "run")
    record = tmp_path / "run" / "result.json"
    not_readable_by_this_user(monkeypatch, record)
    with pytest.raises(DirectoryConflict, match=permission_line(record, "give out_root a folder of your own")):
        jal_train.train(cfg, tmp_path / "run")
    monkeypatch.undo()

    record.unlink()  # an unfinished run: its newest checkpoint, not readable here, is neither damaged nor moved aside
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    not_readable_by_this_user(monkeypatch, checkpoint)
    with pytest.raises(DirectoryConflict, match=permission_line(checkpoint, "give out_root a folder of your own")):
        jal_train.train(cfg, tmp_path / "run")
    assert checkpoint.exists() and not list((tmp_path / "run").glob("*.damaged"))


def test_a_data_file_or_record_this_user_may_not_read_is_a_permission_problem(tmp_path, monkeypatch, capsys):
    from conftest import small_cifar10

    from jal import records
    from jal.data import DataError
    from jal.noise import load_human_labels
    from jal.real_world import load_clothing1m

    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "cifar10.npz", **small_cifar10())
    np.savez(data / "cifar10n_labels.npz", worse_label=np.zeros(20, np.int64), clean_label=np.zeros(20, np.int64))
    (tmp_path / "clothing1m" / "annotations").mkdir(parents=True)
    lists = tmp_path / "clothing1m" / "annotations"
    for name in ("noisy_train_key_list", "clean_test_key_list", "noisy_label_kv", "clean_label_kv"):
        (lists / f"{name}.txt").write_text("")
    (tmp_path / "records" / "run").mkdir(parents=True)
    (tmp_path / "records" / "run" / "result.json").write_text("{}")
    elsewhere = "point JAL_DATA_DIR (data_dir) at a copy you can read"
    for path, read, fix in [
            (data / "cifar10.npz", lambda: load_dataset("cifar10", data), elsewhere),
            (data / "cifar10n_labels.npz", lambda: load_human_labels(data / "cifar10n_labels.npz", "worst",
                                                                     np.zeros(20, np.int64)), elsewhere),
            (lists / "noisy_train_key_list.txt", lambda: load_clothing1m(tmp_path / "clothing1m"),
             "give dataset.root a copy you can read")]:
        not_readable_by_this_user(monkeypatch, path)
        with pytest.raises(DataError, match=permission_line(path, fix)):
            read()
        monkeypatch.undo()
    not_readable_by_this_user(monkeypatch, tmp_path / "records" / "run" / "result.json")
    assert records.load_records([tmp_path / "records"]) == []  # jal.tables: the record not read is named
    line = capsys.readouterr().err.strip().removeprefix("jal.tables: skipping ")
    assert re.match(permission_line(tmp_path / "records" / "run" / "result.json", "tabulate a copy"), line), line
