"""One directory, one experiment (jal/run_dir.py): directories named by cell and settings, identities checked
before anything is skipped or resumed, one process per run, damaged files, the previous checkpoint."""

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIG_DIR, REPO, compose_train, given_once
from hydra import initialize_config_dir
from omegaconf import open_dict, read_write

from jal import experiment, multirun, run_dir
from jal import run as jal_run
from jal import train as jal_train
from jal.errors import DirectoryConflict
from jal.progress import Progress
from jal.run_dir import RunLock

TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "trainer.epochs=2", "logger=none",
        "trainer.progress=false"]
SETTINGS = "dataset.test_size=32,dataset.train_size=64,trainer.epochs=2"


def jal_train_process(*overrides: str, multirun: bool = False, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jal.train", *(["-m"] if multirun else []), *given_once([*TINY, *overrides])]
    return subprocess.run(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300, **popen)


def compose(tmp_path: Path, *overrides: str):
    return compose_train(TINY + [f"out_root={tmp_path}", *overrides])


# ---------------------------------------------------------------------------------------------------
# Names and identities


@pytest.mark.full  # python -m jal.train -m
def test_a_sweep_of_a_hyperparameter_trains_one_directory_per_value(tmp_path):
    done = jal_train_process("loss=jal_ce", "loss.passive.a=10,30", f"out_root={tmp_path}", multirun=True)
    assert done.returncode == 0, done.stderr[-2000:]
    cell = tmp_path / "synthetic/clean/jal_ce/seed123"
    for a in (10, 30):
        settings = f"dataset.test_size=32,dataset.train_size=64,loss.passive.a={a},trainer.epochs=2"  # sorted
        record = json.loads((cell / settings / "result.json").read_text())
        assert record["status"] == "finished" and record["config"]["loss"]["passive"]["a"] == a
        assert record["settings"] == settings
    assert "Sweep summary: 2 runs: 2 finished" in done.stdout
    assert "finished already" not in done.stdout + done.stderr


@pytest.mark.full  # python -m jal.train
def test_one_value_written_two_ways_names_one_directory_and_is_found_finished(tmp_path):
    """loss.passive.a=10 and =10.0 set the same value: one directory, one identity, one row of the tables."""
    first = jal_train_process("loss=jal_ce", "loss.passive.a=10", f"out_root={tmp_path}")
    assert first.returncode == 0, first.stderr[-2000:]
    [record] = list(tmp_path.rglob("result.json"))
    again = jal_train_process("loss=jal_ce", "loss.passive.a=10.0", f"out_root={tmp_path}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{record.parent} is finished already: skipping" in again.stdout + again.stderr
    assert list(tmp_path.rglob("result.json")) == [record]
    assert record.parent.name == "dataset.test_size=32,dataset.train_size=64,loss.passive.a=10,trainer.epochs=2"
    assert json.loads(record.read_text())["settings"] == record.parent.name
    spelt = {a: compose(tmp_path, "loss=jal_ce", f"loss.passive.a={a}") for a in ("10", "10.0", "1e1", "10.00")}
    assert len({cfg.run_name for cfg in spelt.values()}) == 1
    assert len({experiment.fingerprint(experiment.identity(experiment.plain_config(cfg), "fp32"))
                for cfg in spelt.values()}) == 1
    assert compose(tmp_path, "optim.lr=1e-4").run_name == compose(tmp_path, "optim.lr=0.0001").run_name
    assert compose(tmp_path, "optim.lr=0.05").run_name != compose(tmp_path, "optim.lr=0.5").run_name


def test_the_readme_smoke_run_and_the_full_run_get_their_own_directories():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        smoke = multirun.plan_runs(["dataset.subset=2000", "trainer.epochs=3", "logger=none"])[0]
        full = multirun.plan_runs([])[0]
    assert full.dir.parts[-4:] == ("cifar10", "clean", "ce", "seed123")
    assert smoke.dir == full.dir / "dataset.subset=2000,trainer.epochs=3"


@pytest.mark.full  # composes eleven runs
def test_identity_leaves_out_what_does_not_change_the_numbers_and_keeps_the_precision_that_trains(tmp_path):
    def identity_of(*overrides):
        cfg = compose(tmp_path, *overrides)
        return experiment.identity(experiment.plain_config(cfg), "fp32")

    base = identity_of()
    assert identity_of("trainer.threads=1", "trainer.progress=true", "trainer.stop_at=5", "logger=wandb",
                       "trainer.eval_batch_size=7", "trainer.compile=true", "trainer.device=cpu",
                       "data_dir=/elsewhere", "trainer.restart=true", "trainer.channels_last=false") == base
    for setting in ("optim.lr=0.05", "trainer.epochs=3", "seed=4", "loss=gce", "trainer.batch_size=64",
                    "noise=symmetric", "dataset.subset=32", "trainer.eval_every=2"):
        assert identity_of(setting) != base, setting
    cfg = compose(tmp_path, "trainer.precision=auto")  # auto is what it means on this machine, fp32 or bf16
    assert experiment.identity(experiment.plain_config(cfg), "bf16") != base
    assert experiment.identity(experiment.plain_config(cfg), "fp32") == base


# Every setting of a run's config, generated from composed configs whose groups hold every kind of node the
# schema has (a loss of two nested terms, noise drawn per sample, instance noise's generator): each is the
# experiment (its value changed, a record is another experiment's) or is in NOT_THE_EXPERIMENT (it is not).
SCHEMA_CONFIGS = [["loss=jal_ce", "noise=symmetric", "noise.sampling=per_sample"], ["loss=nlnl", "noise=instance"]]


@functools.cache
def schema_config(n: int) -> str:
    """SCHEMA_CONFIGS[n]'s plain config (as records store it), as JSON: composed once."""
    return json.dumps(experiment.plain_config(compose_train(["dataset=synthetic", *SCHEMA_CONFIGS[n]])))


def schema_cases() -> list[tuple[int, str]]:
    cases = {}
    for n in range(len(SCHEMA_CONFIGS)):
        for key in experiment.flatten(json.loads(schema_config(n))):
            cases.setdefault(key, n)
    return [(n, key) for key, n in cases.items()]


def another(value):
    """A value of the same kind that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, list):
        return [*value, 0]
    return "another" if value is None else f"{value}_another"


@pytest.mark.parametrize("case", schema_cases(), ids=lambda case: case[1])
def test_a_record_differing_in_any_setting_of_the_experiment_is_another_experiment(case, tmp_path):
    """Dropping a setting of the experiment from the identity (jal.experiment.identity) fails its case here: the
    record that differs in it would be taken for this experiment's."""
    n, key = case
    config, changed = json.loads(schema_config(n)), json.loads(schema_config(n))
    *parents, leaf = key.split(".")
    node = changed
    for parent in parents:
        node = node[parent]
    node[leaf] = another(node[leaf])
    asked = experiment.identity(config, "fp32")
    record = dict(config=changed, precision="fp32")
    if experiment.within(key, experiment.NOT_THE_EXPERIMENT):
        run_dir.check_same(experiment.identity_of(record), asked, tmp_path / "result.json")  # the same experiment
    else:
        with pytest.raises(DirectoryConflict, match=rf"[(;] ?{re.escape(key)}: "):
            run_dir.check_same(experiment.identity_of(record), asked, tmp_path / "result.json")


def test_a_record_in_another_precision_is_another_experiment(tmp_path):
    config = json.loads(schema_config(0))
    with pytest.raises(DirectoryConflict, match=r"\(precision: bf16 in the record, fp32 asked\)"):
        run_dir.check_same(experiment.identity_of(dict(config=config, precision="bf16")),
                           experiment.identity(config, "fp32"), tmp_path / "r")


def test_the_directory_name_identity_fusions_and_records_derive_from_one_list():
    """configs/train.yaml's exclude_keys, the identity, the fusion rule and the records' config all follow
    jal.experiment.NOT_THE_EXPERIMENT: a setting that is not the experiment is in no directory name and no identity,
    may differ between fused runs exactly when marked so, and a machine path is in no record."""
    resolvers = experiment  # the lists live with the experiment
    cfg = compose_train(["loss=ce"])
    excluded = set(experiment.not_in_the_directory_name())
    assert excluded == set(resolvers.IN_THE_CELL) | {"logger.mode", "logger.project", "logger.entity", "logger.group",
                                                    "logger.tags"} | (set(resolvers.NOT_THE_EXPERIMENT) - {"run_name"})
    ident = experiment.identity(experiment.plain_config(cfg), "fp32")
    assert not any(experiment.within(key, resolvers.NOT_THE_EXPERIMENT) for key in ident)
    fixed = experiment.fixed_settings(cfg)
    for key, per_run in resolvers.NOT_THE_EXPERIMENT.items():
        if key.startswith("dataset.") and key.split(".")[1] not in cfg.dataset:
            continue  # another dataset's (where its data lies): tests/test_own_data.py
        assert per_run != any(experiment.within(k, [key]) for k in fixed), key
    assert set(resolvers.MACHINE_PATHS) <= set(resolvers.NOT_THE_EXPERIMENT)
    assert not set(resolvers.MACHINE_PATHS) & set(experiment.plain_config(cfg))


@pytest.mark.full  # python -m jal.train
def test_every_setting_of_the_exclude_list_is_left_out_of_a_real_launchs_directory(tmp_path):
    """Hydra resolves the derived exclude_keys in a real launch: settings that are not the experiment name no
    directory, one that is names its own."""
    done = subprocess.run([sys.executable, "-m", "jal.train", "dataset=synthetic", "dataset.train_size=32",
                           "dataset.test_size=16", "trainer.epochs=1", "logger=none", "trainer.progress=false",
                           "trainer.threads=1", "trainer.eval_batch_size=64", "optim.lr=0.02", f"out_root={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = "dataset.test_size=16,dataset.train_size=32,optim.lr=0.02,trainer.epochs=1"
    assert [p.parent for p in tmp_path.rglob("result.json")] == [tmp_path / "synthetic/clean/ce/seed123" / settings]


def test_differences_name_each_setting_with_both_values():
    recorded = {"optim.lr": 0.01, "trainer.epochs": 3, "precision": "fp32", "noise.rate": 0}
    asked = {"optim.lr": 0.05, "trainer.epochs": 3, "precision": "fp32", "noise.rate": 0.0, "new": 1}
    assert experiment.differences(recorded, asked) == "new: absent in the record, 1 asked; optim.lr: 0.01 in the " \
                                                   "record, 0.05 asked"


# ---------------------------------------------------------------------------------------------------
# Another experiment's directory


@pytest.fixture
def trained(tmp_path, one_torch_thread):
    """A finished one-epoch run in a fixed directory, and its config."""
    cfg = compose(tmp_path, "trainer.epochs=1")
    result = jal_train.train(cfg, tmp_path / "run")
    assert result.status == "finished"
    return tmp_path / "run"


@pytest.mark.parametrize("setting, difference", [
    ("optim.lr=0.05", "optim.lr: 0.01 in the record, 0.05 asked"),
    ("trainer.epochs=2", "trainer.epochs: 1 in the record, 2 asked"),
    ("model=resnet34", "model._target_: jal.models.CNN8 in the record, jal.models.ResNet34 asked"),
])
@pytest.mark.full  # trains
def test_a_finished_record_of_another_experiment_is_never_skipped(trained, tmp_path, setting, difference,
                                                                  monkeypatch):
    monkeypatch.setattr(jal_run, "load_dataset", lambda *a, **k: pytest.fail("must not train"))
    cfg = compose(tmp_path, "trainer.epochs=1", setting)
    with pytest.raises(DirectoryConflict, match=f"{trained} holds another experiment") as refused:
        jal_train.train(cfg, trained)
    assert difference in str(refused.value) and "trainer.restart=true" in str(refused.value)


@pytest.mark.full  # trains
def test_a_checkpoint_of_another_experiment_is_never_resumed(trained, tmp_path, monkeypatch):
    (trained / "result.json").unlink()  # as if the run stopped mid-way: only its checkpoint says what it is
    monkeypatch.setattr(jal_run, "load_dataset", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(DirectoryConflict, match="optim.lr: 0.01 in the record, 0.02 asked"):
        jal_train.train(compose(tmp_path, "trainer.epochs=1", "optim.lr=0.02"), trained)


@pytest.mark.full  # python -m jal.train
def test_the_refusal_is_one_line_and_a_failing_exit(tmp_path):
    first = jal_train_process("trainer.epochs=1", f"hydra.run.dir={tmp_path}/run")
    assert first.returncode == 0, first.stderr[-2000:]
    again = jal_train_process("trainer.epochs=1", "optim.lr=0.05", f"hydra.run.dir={tmp_path}/run")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}/run holds another experiment "
                                                            "(optim.lr: 0.01 in the record, 0.05 asked)")


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_a_sweep_mapping_two_experiments_onto_one_directory_fails_its_plan(tmp_path):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(DirectoryConflict, match=r"two runs of different experiments would share .*/same: "
                                                    r"\[.*optim.lr=0.01\] and \[.*optim.lr=0.05\] "
                                                    r"\(optim.lr: 0.01 in the record, 0.05 asked\)"):
            multirun.plan_runs(TINY + [f"out_root={tmp_path}", "optim.lr=0.01,0.05", "hydra.sweep.subdir=same"])
        multirun.plan_runs(TINY + [f"out_root={tmp_path}", "optim.lr=0.01,0.05"])  # named apart: fine


@pytest.mark.full  # trains
def test_the_plan_refuses_a_directory_of_another_experiment_before_anything_trains(trained, tmp_path):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        with pytest.raises(DirectoryConflict, match="trainer.epochs: 1 in the record, 2 asked"):
            multirun.plan_runs(TINY + [f"out_root={tmp_path}", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=run"])


@pytest.mark.full  # trains
def test_restart_moves_another_experiments_files_aside_and_trains_this_one(trained, tmp_path):
    cfg = compose(tmp_path, "trainer.epochs=2", "trainer.restart=true")
    result = jal_train.train(cfg, trained)
    assert result.status == "finished" and result.epochs == 2
    assert json.loads((trained / "result.json.damaged").read_text())["epochs"] == 1
    assert {"result.json.damaged", "checkpoint.pt.damaged", "labels.npz.damaged"} <= {p.name for p in trained.iterdir()}


# ---------------------------------------------------------------------------------------------------
# One process per run


@pytest.mark.full  # python -m jal.train
def test_a_run_held_by_another_process_is_not_started_and_says_who_holds_it(tmp_path):
    held = tmp_path / "synthetic/clean/ce/seed123" / SETTINGS
    with RunLock(held):  # this test process holds the run
        done = jal_train_process(f"out_root={tmp_path}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"not started: {held} is being trained by another process (host {os.uname().nodename}, pid {os.getpid()}, "
        f"since {(held / '.lock').read_text().split('since ')[1].strip()}): not starting it twice")
    # nothing of the run read or written (not even an empty train.log: it opens at its first line)
    assert {p.name for p in held.iterdir()} == {".lock"}


@pytest.mark.full  # two python -m jal.train
def test_two_processes_started_at_once_train_the_run_once(tmp_path):
    command = [sys.executable, "-m", "jal.train", *TINY[:3], "trainer.epochs=6", *TINY[4:], f"out_root={tmp_path}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    run = tmp_path / "synthetic/clean/ce/seed123" / SETTINGS.replace("epochs=2", "epochs=6")
    assert json.loads((run / "result.json").read_text())["status"] == "finished"
    log = (run / "train.log").read_text()
    assert log.count("epoch 1/6") == 1 and log.count("epoch 6/6") == 1  # trained once
    second = "".join(out + err for out, err in outputs)
    assert "is being trained by another process" in second or "finished already: skipping" in second


def test_the_sweep_counts_a_run_held_elsewhere(tmp_path, capsys):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = multirun.plan_runs(TINY + [f"out_root={tmp_path}", "seed=1,2"])
    progress = Progress()
    progress.start(runs)
    with read_write(runs[0].cfg.hydra), open_dict(runs[0].cfg.hydra):
        runs[0].cfg.hydra.runtime.output_dir = str(runs[0].dir)  # as the launcher sets it
    with RunLock(runs[0].dir):
        progress.on_job_end(runs[0].cfg, job_return=None)
        progress.summary()
    out = capsys.readouterr().out
    assert f"[0/2] {runs[0].name}: running elsewhere (host " in out and ": not started here" in out
    assert f"  not run to an end  {runs[0].name} (running elsewhere: host " in out


# ---------------------------------------------------------------------------------------------------
# Damaged files


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("name, says", [("result.json", "is damaged (JSONDecodeError"),
                                        ("checkpoint.pt", "is damaged ("), ("labels.npz", "is damaged (")])
@pytest.mark.full  # trains
def test_a_damaged_file_is_named_in_one_line_and_restart_recovers(tmp_path, name, says, one_torch_thread):
    cfg = compose(tmp_path, "trainer.epochs=2")
    done = jal_train.train(cfg, tmp_path / "run")
    if name != "result.json":
        (tmp_path / "run" / "result.json").unlink()  # a run still going: its checkpoint and labels are read
        (tmp_path / "run" / "checkpoint.prev.pt").unlink()  # (with a good previous checkpoint it goes on, below)
    cut(tmp_path / "run" / name)
    with pytest.raises(DirectoryConflict) as damaged:
        jal_train.train(cfg, tmp_path / "run")
    assert str(damaged.value).startswith(f"{tmp_path / 'run' / name} {says}")
    assert str(damaged.value).endswith("trainer.restart=true moves it aside and trains the run from scratch")
    again = jal_train.train(compose(tmp_path, "trainer.epochs=2", "trainer.restart=true"), tmp_path / "run")
    assert again.status == "finished" and again.history[-1]["train_loss"] == done.history[-1]["train_loss"]
    assert (tmp_path / "run" / f"{name}.damaged").exists()


@pytest.mark.full  # trains
def test_labels_of_another_draw_are_refused(tmp_path, one_torch_thread):
    cfg = compose(tmp_path, "trainer.epochs=1", "noise=symmetric", "noise.rate=0.4")
    jal_train.train(cfg, tmp_path / "run")
    (tmp_path / "run" / "result.json").unlink()
    path = tmp_path / "run" / "labels.npz"
    with np.load(path) as stored:
        labels = dict(stored)
    labels["noisy"] = (labels["noisy"] + 1) % 10
    np.savez(path, **labels)
    with pytest.raises(DirectoryConflict, match="labels.npz holds other labels than this run draws"):
        jal_train.train(cfg, tmp_path / "run")


@pytest.mark.full  # trains
def test_a_damaged_newest_checkpoint_costs_one_epoch_not_the_run(tmp_path, one_torch_thread, monkeypatch):
    """Killed after epoch 2 of 3 with checkpoint.pt then cut: the run resumes from checkpoint.prev.pt (epoch 1)
    and ends exactly as an uninterrupted run."""
    cfg = compose(tmp_path, "trainer.epochs=3")
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")
    save, saved = jal_run.save_checkpoint, []

    def save_then_die_after_epoch_2(directory, state):
        save(directory, state)
        saved.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(jal_run, "save_checkpoint", save_then_die_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        jal_train.train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(jal_run, "save_checkpoint", save)
    cut(tmp_path / "resumed" / "checkpoint.pt")
    resumed = jal_train.train(cfg, tmp_path / "resumed")
    assert resumed.history[0] == torch.load(tmp_path / "resumed" / "checkpoint.pt",
                                               weights_only=True)["history"][0]
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("images_per_second", "seconds")} for e in h]
    assert strip(resumed.history) == strip(uninterrupted.history)
    assert (tmp_path / "resumed" / "checkpoint.pt.damaged").exists()


@pytest.mark.full  # python -m jal.train
def test_a_damaged_file_stops_the_command_in_one_line(tmp_path):
    first = jal_train_process("trainer.epochs=1", f"hydra.run.dir={tmp_path}/run")
    assert first.returncode == 0, first.stderr[-2000:]
    cut(tmp_path / "run" / "result.json")
    again = jal_train_process("trainer.epochs=1", f"hydra.run.dir={tmp_path}/run")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}/run/result.json is damaged")


@pytest.mark.full  # python -m jal.train
def test_a_diverging_run_ends_in_one_line_and_a_failed_record(tmp_path):
    done = jal_train_process("optim.lr=1e30", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite training loss in epoch ") and "lower optim.lr" in last
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "failed" and f"in epoch {record['epoch']} " in record["error"]


# ---------------------------------------------------------------------------------------------------
# The committed records


@pytest.mark.full  # bash scripts/
@pytest.mark.usefixtures("cifar10_file_for_the_plan")  # the plan stops without a cifar10.npz
def test_the_committed_quick_records_are_still_skipped_by_the_plan():
    """The committed quick table is fp32: PRECISION=fp32 finds it finished on any CPU (the preset's auto
    would train bf16 runs beside it on a CPU with bf16 hardware)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PRESET", "LAUNCHER", "JOBS", "THREADS", "CELLS")}
    env.update(PYTHON=sys.executable, DRY_RUN="1", PRESET="quick", PRECISION="fp32", OMP_NUM_THREADS="1")
    started = time.time()
    done = subprocess.run(["bash", "scripts/reproduce_cifar10.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    committed = sum(json.loads(path.read_text()).get("precision", "fp32") == "fp32"
                    for path in (REPO / "results/quick/runs/cifar10").rglob("result.json"))
    assert f": {committed} finished already," in done.stdout, done.stdout
    assert time.time() - started < 120


def test_a_record_from_before_a_setting_existed_reads_as_its_old_value(tmp_path):
    """AMSE's exponent q came after the first records: one without it trained with q = 2."""
    cfg = compose(tmp_path, "loss=jal_ce")
    config = experiment.plain_config(cfg)
    asked = experiment.identity(config, "fp32")
    del config["loss"]["passive"]["q"]
    assert experiment.identity_of({"config": config, "precision": "fp32"}) == asked
    q3 = compose(tmp_path, "loss=jal_ce", "loss.passive.q=3")
    asked_q3 = experiment.identity(experiment.plain_config(q3), "fp32")
    assert experiment.identity_of({"config": config, "precision": "fp32"}) != asked_q3


class Killed(BaseException):
    """A SIGKILL, as the process sees it: nothing after it runs (no record), unlike an Exception."""


@pytest.mark.full  # trains
def test_a_run_killed_between_the_renames_of_its_last_checkpoint_keeps_checkpoint_pt(tmp_path, monkeypatch,
                                                                                     one_torch_thread):
    """Killed at the first or second rename of its last epoch's checkpoint save: checkpoint.pt is there (the
    last epoch's or the one before), a cut write's temp file is removed at the next start, and the run ends as
    the uninterrupted one, its final weights in checkpoint.pt."""
    cfg = compose(tmp_path)
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")
    final = torch.load(tmp_path / "uninterrupted" / "checkpoint.pt", weights_only=True)
    save, real_replace = jal_run.save_checkpoint, os.replace
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("images_per_second", "seconds")} for e in h]
    for rename in (1, 2):
        renames = []

        def replace(src, dst, renames=renames, rename=rename):
            renames.append(dst)
            if len(renames) == rename:
                raise Killed
            real_replace(src, dst)

        def save_killed_in_epoch_2(directory, state):
            if state["epoch"] == 2:
                monkeypatch.setattr(os, "replace", replace)
            save(directory, state)

        killed = tmp_path / f"killed_at_rename_{rename}"
        monkeypatch.setattr(jal_run, "save_checkpoint", save_killed_in_epoch_2)
        with pytest.raises(Killed):
            jal_train.train(cfg, killed)
        monkeypatch.undo()
        assert torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"] in (1, 2), rename
        (killed / ".checkpoint.pt.x1y2z3.pt").write_bytes(b"cut")  # a kill leaves atomic_save's temp file
        (killed / ".result.json.a1b2c3").write_text("{")
        resumed = jal_train.train(cfg, killed)
        assert resumed.status == "finished" and not list(killed.glob(".*.*")), rename
        assert strip(resumed.history) == strip(uninterrupted.history)
        state = torch.load(killed / "checkpoint.pt", weights_only=True)
        assert state["epoch"] == 2 and all(torch.equal(final["model"][k], state["model"][k]) for k in final["model"])
