"""Every wrong setting and every unusable data file stops `python -m jal.train` before it trains: one line on
stderr naming the setting (or file), a non-zero exit, no traceback, within seconds, and no record in the run
directory. Each row of the table is a real process running `python -m jal.train ARGS`: a fork of one
driver process that imported python's, torch's and Hydra's modules once (~1.5 s of CPU a process otherwise),
its stdout and stderr its own files, its exit status Python's; the numeric settings are also explored with
hypothesis through Hydra's compose API.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, compose_train, small_cifar10
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jal.config import ConfigError
from jal.config_check import check_config
from jal.errors import one_line

SYN = "dataset=synthetic"

# (name, overrides, a fragment of the one line on stderr). {tmp} is the case's data folder (see data_folder).
BAD_SETTINGS = [
    # types, checked by the schema while Hydra composes
    ("rate not a number", [SYN, "noise=symmetric", "noise.rate=abc"], "noise.rate='abc' is not a number: e.g. "
                                                                      "noise.rate=0.4"),
    ("rate null", [SYN, "noise=symmetric", "noise.rate=null"], "noise.rate=null is not a number"),
    ("epochs not an integer", [SYN, "trainer.epochs=2.5"], "trainer.epochs=2.5 is not an integer"),
    ("lr a word", [SYN, "optim.lr=zero"], "optim.lr='zero' is not a number: e.g. optim.lr=0.01"),
    ("compile mode unknown", [SYN, "trainer.compile=maybe"], "trainer.compile=maybe is not true, false or one of"),
    ("stop_at negative", [SYN, "trainer.stop_at=-5"], "trainer.stop_at=-5.0 must be unix seconds >= 0"),
    ("seed a word", [SYN, "seed=abc"], "seed='abc' is not an integer: e.g. seed=123"),
    # values, checked before any data loads
    ("rate above 1", [SYN, "noise=symmetric", "noise.rate=1.5"], "noise.rate=1.5 is outside [0, 1): e.g. "
                                                                 "noise.rate=0.4"),
    ("rate negative", [SYN, "noise=asymmetric", "noise.rate=-0.1"], "noise.rate=-0.1 is outside [0, 1)"),
    ("epochs negative", [SYN, "trainer.epochs=-1"], "trainer.epochs=-1 must be >= 1: e.g. trainer.epochs=120"),
    ("batch of one", [SYN, "trainer.batch_size=1"], "trainer.batch_size=1 must be >= 2"),
    ("lr zero", [SYN, "optim.lr=0"], "optim.lr=0.0 must be finite and > 0: e.g. optim.lr=0.01"),
    ("clip negative", [SYN, "optim.grad_clip=-5"], "optim.grad_clip=-5.0 must be finite and > 0"),
    ("momentum 1.5", [SYN, "optim.momentum=1.5"], "optim.momentum=1.5 is outside [0, 1)"),
    ("device unknown", [SYN, "trainer.device=gpu"], "trainer.device=gpu is not auto, cpu, cuda or cuda:N"),
    ("device absent", [SYN, "trainer.device=cuda:99"], "trainer.device=cuda:99 is not among this machine's"),
    ("precision fp16", [SYN, "trainer.precision=fp16"], "trainer.precision=fp16 is not auto, bf16, fp32 or fp64"),
    ("threads zero", [SYN, "trainer.threads=0"], "trainer.threads=0 must be >= 1"),
    ("subset below K", [SYN, "dataset.subset=7"], "dataset.subset=7 is outside [num_classes, train_size] = [10, 256]"),
    ("subset above N", ["dataset=cifar10", "dataset.subset=60000"], "dataset.subset=60000 is outside [num_classes, "
                                                                    "train_size] = [10, 50000]"),
    ("gce q zero", [SYN, "loss=gce", "loss.q=0"], "loss.q=0.0 must be finite and > 0: e.g. loss.q=0.7"),
    ("jal alpha negative", [SYN, "loss=jal_ce", "loss.alpha=-1"], "loss.alpha=-1.0 must be finite and >= 0"),
    ("amse a below 1", [SYN, "loss=jal_ce", "loss.passive.a=0.5"], "loss.passive.a=0.5 must be finite and >= 1 (AMSE)"),
    ("sampling unknown", [SYN, "noise=symmetric", "noise.sampling=approx"], "noise.sampling=approx is not exact or"),
    ("wandb mode", [SYN, "logger=wandb", "logger.mode=cloud"], "logger.mode=cloud is not online, offline or"),
    ("human labels on synthetic", [SYN, "noise=human"], "no human label set 'worst' for dataset synthetic"),
    ("cifar-10n set on cifar-100", ["dataset=cifar100", "noise=human", "noise.labels=worst"],
     "valid noise.labels (cifar10: aggre|worst"),
    # unknown options, groups and keys
    ("unknown loss", [SYN, "loss=foo"], "unknown loss 'foo'; choose one of: ael, agce, agce_mae, amse"),
    ("unknown loss on the default dataset", ["loss=foo"], "unknown loss 'foo'; choose one of: ael, agce"),
    ("unknown dataset", ["dataset=imagenet"], "unknown dataset 'imagenet'; choose one of: arrays, cifar10, "
                                              "cifar100, clothing1m, folder, synthetic, webvision"),
    ("unknown loss in a sweep", [SYN, "loss=ce,foo", "-m"], "unknown loss 'foo'; choose one of: ael"),
    # the sweep's plan checks every run before the first trains (its first run here is a valid one)
    ("bad value in the second run of a sweep", [SYN, "loss=gce", "loss.q=0.7,0", "-m"],
     "loss.q=0.0 must be finite and > 0"),
    ("misspelt group", [SYN, "los=ce"], "unknown setting 'los'; valid keys at the top level: data_dir, dataset"),
    ("misspelt key", [SYN, "trainer.epoch=3"], "unknown setting 'trainer.epoch'; valid keys in trainer: batch_size"),
    ("key of another noise", [SYN, "noise.sampling=exact"], "unknown setting 'noise.sampling'; valid keys in noise: "
                                                            "rate, tag, type"),
    ("key of another loss", [SYN, "loss.passive.a=3"], "unknown setting 'loss.passive'; valid keys in loss: "),
    ("a sweep without -m", [SYN, "loss=ce,jal_ce"], "Ambiguous value for argument 'loss=ce,jal_ce'; to sweep over "
                                                    "it, add --multirun to your command line"),
    ("an argument the loss does not take", [SYN, "+loss.tt=2"], "unknown setting 'loss.tt'; valid keys in loss: "
                                                                "_target_, num_classes"),
    # settings the run would not read: another experiment than the one asked for, silently
    ("rate without a noise type", [SYN, "noise.rate=0.4"], "noise.rate=0.4 is ignored by noise=none, which trains "
                                                           "on clean labels: add noise=symmetric"),
    ("rate of human noise", ["dataset=cifar10", "noise=human", "noise.rate=0.3"],
     "noise.rate=0.3 is ignored by noise=human: its label set (noise.labels=worst) is the noise"),
    ("human label set without human noise", [SYN, "noise=symmetric", "dataset.human_labels=aggre"],
     "dataset.human_labels=aggre is ignored by noise=symmetric"),
    ("training-set size of a file", ["dataset=cifar10", "dataset.train_size=1000"], "dataset.train_size=1000 is "
     "ignored by dataset=cifar10, which trains on its file's whole training set: dataset.subset=1000"),
    ("L1 strength of a loss without L1", [SYN, "dataset.l1_amse=1e-3"],
     "dataset.l1_amse=1e-3 is ignored by loss=ce, which takes L2 at dataset.weight_decay"),
    ("L2 of a loss with L1", [SYN, "loss=jal_ce", "dataset.weight_decay=1e-3"],
     "dataset.weight_decay=1e-3 is ignored by loss=jal_ce, which takes L1 at dataset.l1_amse"),
    ("dataset epochs under trainer epochs", [SYN, "dataset.epochs=5", "trainer.epochs=3"],
     "dataset.epochs=5 is ignored by trainer.epochs, given too"),
    ("no precomputed labels to take", [SYN, "noise=instance", "noise.generate=false"],
     "noise.generate=false is ignored by noise.rate=0.4 on synthetic"),
    # data: missing, truncated, malformed
    ("no data folder", ["dataset=cifar10", "data_dir={tmp}/nowhere"],
     "put cifar10.npz (x_train, y_train, x_test, y_test) in {tmp}/nowhere or point JAL_DATA_DIR"),
    ("cifar-100 not downloadable", ["dataset=cifar100", "data_dir={tmp}/empty"], "put cifar100.npz (x_train, y_train, "
                                                                                 "x_test, y_test) in {tmp}/empty"),
    ("human label file missing", ["dataset=cifar10", "noise=human", "data_dir={tmp}/images_only"],
     "{tmp}/images_only/cifar10n_labels.npz is missing: put cifar10n_labels.npz (the CIFAR-10N labels; "
     "docs/protocol.md section 6) there or point JAL_DATA_DIR at a folder holding it"),
    ("instance label file missing", ["dataset=cifar10", "noise=instance", "data_dir={tmp}/images_only"],
     "{tmp}/images_only/cifar10_idn_labels.npz is missing: put cifar10_idn_labels.npz"),
    ("truncated cifar10.npz", ["dataset=cifar10", "data_dir={tmp}/truncated"], "truncated/cifar10.npz is damaged "
                                                                               "(BadZipFile"),
    ("images of the wrong shape", ["dataset=cifar10", "data_dir={tmp}/grey"], "x_train is uint8 (20, 32, 32), not "
                                                                              "uint8 (N, 32, 32, 3)"),
    ("labels out of range", ["dataset=cifar10", "data_dir={tmp}/label10"], "y_train holds labels 0..10, outside 0..9"),
    ("label file too short", ["dataset=cifar10", "noise=human", "data_dir={tmp}/short_labels"],
     "labels of the wrong length: {tmp}/short_labels/cifar10n_labels.npz has 5, the dataset 20"),
    ("label file without the set", ["dataset=cifar10", "noise=human", "data_dir={tmp}/no_worst"],
     "has no 'worst' labels or no clean_label: this file provides ['aggre']"),
    ("label file of floats", ["dataset=cifar10", "noise=instance", "data_dir={tmp}/float_idn"],
     "rate_0.4 is float64 (20,); every array of a label file must be 1-D integer class indices"),
    ("instance label file too short", ["dataset=cifar10", "noise=instance", "data_dir={tmp}/short_idn"],
     "labels of the wrong length: {tmp}/short_idn/cifar10_idn_labels.npz has 19 at rate 0.4, the training set 20"),
]


def data_folder(tmp: Path) -> None:
    """The data folders the data rows of the table point at: each small and wrong in one way."""
    good = small_cifar10()

    def folder(name: str, **files: dict) -> Path:
        path = tmp / name
        path.mkdir()
        for filename, arrays in files.items():
            np.savez(path / filename, **arrays)
        return path

    (tmp / "empty").mkdir()
    folder("images_only", **{"cifar10.npz": good})
    whole = folder("truncated", **{"cifar10.npz": good}) / "cifar10.npz"
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    folder("grey", **{"cifar10.npz": dict(good, x_train=good["x_train"][..., 0])})
    folder("label10", **{"cifar10.npz": dict(good, y_train=good["y_train"] + (good["y_train"] == 9))})
    clean = good["y_train"]
    folder("short_labels", **{"cifar10.npz": good, "cifar10n_labels.npz": dict(clean_label=clean[:5],
                                                                              worse_label=clean[:5])})
    folder("no_worst", **{"cifar10.npz": good, "cifar10n_labels.npz": dict(clean_label=clean, aggre_label=clean)})
    folder("float_idn", **{"cifar10.npz": good, "cifar10_idn_labels.npz": {"rate_0.4": clean.astype(float)}})
    folder("short_idn", **{"cifar10.npz": good, "cifar10_idn_labels.npz": {"rate_0.4": clean[:-1]}})


# The driver: imports what every row would import, then forks a child per row (at most 4 at a time) that runs
# jal/train.py as `python -m jal.train` does (runpy, sys.argv[0] its path), ends as Python ends a process (the
# exit status of SystemExit, a traceback and status 1 for any other exception, atexit's functions) and writes
# nothing but into its own stdout and stderr files. jal.train itself is not imported before: `python -m`
# would then warn on stderr.
DRIVER = r"""
import atexit, json, os, runpy, sys, time, traceback
import hydra, numpy, omegaconf, torch
import jal.config_check, jal.run, jal.run_dir, jal.step, jal.util
assert "jal.train" not in sys.modules
rows, running, done = json.loads(sys.argv[1]), {}, {}
def end(pid, status):
    name, started = running.pop(pid)
    done[name] = (os.waitstatus_to_exitcode(status), time.perf_counter() - started)
for name, args, files in rows:
    if len(running) == 4:
        end(*os.wait())
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, suffix in ((1, ".out"), (2, ".err")):
                os.dup2(os.open(files + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv = [sys.argv[0], *args]
            runpy.run_module("jal.train", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
            if not isinstance(exit.code, int) and exit.code is not None:
                print(exit.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                atexit._run_exitfuncs()
                sys.stdout.flush(), sys.stderr.flush()
            finally:
                os._exit(code)
    running[pid] = (name, started)
while running:
    end(*os.wait())
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory):
    """Every row of BAD_SETTINGS run as `python -m jal.train logger=none trainer.progress=false out_root=... ARGS`
    in REPO: {name: (a CompletedProcess of its exit status, stdout and stderr, its seconds)}."""
    tmp = tmp_path_factory.mktemp("errors")
    data_folder(tmp)
    rows = {name: [a.format(tmp=tmp) for a in args] for name, args, _ in BAD_SETTINGS}
    assert len(rows) == len(BAD_SETTINGS), "two rows share a name: one would be checked against the other's run"
    (tmp / "streams").mkdir()
    table = [(name, ["logger=none"] * (not any(a.startswith("logger=") for a in args)) +  # given once, or refused
              ["trainer.progress=false", f"out_root={tmp / 'runs' / name.replace(' ', '_')}", *args],
              str(tmp / "streams" / name.replace(" ", "_"))) for name, args in rows.items()]
    env = dict(os.environ, JAL_DATA_DIR=str(tmp / "empty"), OMP_NUM_THREADS="1")
    driver = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(table)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert driver.returncode == 0, driver.stderr[-3000:]
    ended = json.loads(driver.stdout.splitlines()[-1])
    runs = {}
    for name, args, files in table:
        code, seconds = ended[name]
        out, err = (Path(files + suffix).read_text() for suffix in (".out", ".err"))
        runs[name] = (subprocess.CompletedProcess(["python", "-m", "jal.train", *args], code, out, err), seconds)
    return tmp, runs


@pytest.mark.parametrize("name, args, message", BAD_SETTINGS, ids=[row[0] for row in BAD_SETTINGS])
@pytest.mark.full  # a python -m jal.train per row
def test_bad_setting_fails_in_one_line(name, args, message, table_runs):
    tmp, runs = table_runs
    done, seconds = runs[name]
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert message.format(tmp=tmp) in lines[0]
    assert seconds < 60  # seconds on an idle machine; a busy shared one may be several times slower
    for record in ("result.json", "labels.npz", "checkpoint.pt"):  # nothing a table or a resume would read
        assert not list((tmp / "runs").rglob(record))
    if name not in READ_BY_THE_RUN:  # refused before Hydra starts: no run directory, no config.yaml or train.log
        assert not (tmp / "runs" / name.replace(" ", "_")).exists()


# The rows whose files are there but wrong inside: found as the run reads them, in its directory (no record)
READ_BY_THE_RUN = {"truncated cifar10.npz", "images of the wrong shape", "labels out of range",
                   "label file too short", "label file without the set", "label file of floats",
                   "instance label file too short"}


# ---------------------------------------------------------------------------------------------------
# The numeric settings, explored through Hydra's compose API

finite = lambda lo, hi: st.floats(lo, hi, allow_nan=False)
any_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))
NUMERIC = {  # setting: (the overrides it needs, values to draw, whether a value is valid)
    "noise.rate": (["noise=symmetric"], st.one_of(finite(-0.5, 1.5), any_number), lambda v: 0 <= v < 1),
    "trainer.epochs": ([], st.one_of(st.integers(-5, 500), finite(-5, 5)), lambda v: isinstance(v, int) and v >= 1),
    "trainer.batch_size": ([], st.integers(-5, 4096), lambda v: v >= 2),
    "optim.lr": ([], any_number, lambda v: math.isfinite(v) and v > 0),
    "optim.grad_clip": ([], any_number, lambda v: math.isfinite(v) and v > 0),
    "optim.momentum": ([], st.one_of(finite(-1, 2), any_number), lambda v: 0 <= v < 1),
    "dataset.subset": ([], st.integers(-5, 400), lambda v: 10 <= v <= 256),
    "loss.q": (["loss=gce"], any_number, lambda v: math.isfinite(v) and v > 0),
    "loss.alpha": (["loss=jal_ce"], any_number, lambda v: math.isfinite(v) and v >= 0),
    "loss.passive.a": (["loss=jal_ce"], st.one_of(finite(0, 40), any_number), lambda v: math.isfinite(v) and v >= 1),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), key=st.sampled_from(sorted(NUMERIC)))
@pytest.mark.full  # a compose per value
def test_numeric_settings_compose_when_valid_and_fail_in_one_line_otherwise(data, key, tmp_path):
    needs, values, valid = NUMERIC[key]
    value = data.draw(values)
    override = f"{key}={value!r}"
    try:
        cfg = compose_train([SYN, "logger=none", f"out_root={tmp_path}", *needs, override])
        check_config(cfg)
    except (ConfigError, HydraException) as err:
        line = one_line(err)
        assert not valid(value), line
        assert "\n" not in line and line.startswith(f"{key}="), line
    else:
        assert valid(value), f"{override} was accepted"


# ---------------------------------------------------------------------------------------------------
# The one line keeps the cause


def test_the_line_of_a_class_that_refuses_its_arguments_names_the_cause():
    import hydra

    with pytest.raises(HydraException) as refused:  # Hydra's message: "Error in call to target ...:" then the cause
        hydra.utils.instantiate({"_target_": "jal.losses.CE", "num_classes": 10, "tt": 2})
    line = one_line(refused.value)
    assert "\n" not in line
    assert line.startswith("Error in call to target 'jal.losses.CE'; TypeError: ")
    assert "unexpected keyword argument 'tt'" in line


def test_a_setting_given_twice_is_refused_in_one_line_naming_both_values(tmp_path):
    """`python -m jal.train optim.lr=0.1 optim.lr=0.2`: Hydra would train the last value while the run's directory
    named both (jal.config_check.check_given_once); refused as the command line is checked, before anything is
    written."""
    from jal.preflight import check_command_line

    with pytest.raises(SystemExit) as refused:
        check_command_line([SYN, "logger=none", f"out_root={tmp_path / 'runs'}", "optim.lr=0.1", "optim.lr=0.2"])
    assert refused.value.code == "error: optim.lr is given twice (optim.lr=0.1 and optim.lr=0.2): give it once"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# Every key of every schema, a wrong value of its type and one of another type


def schema_mounts() -> dict[str, tuple[list[str], str]]:
    """schema name -> (the group choice of the first config that names it, the key its fields lie under)."""
    import re

    from jal.util import CONFIG_DIR

    mounts = {}
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        relative = path.relative_to(CONFIG_DIR)
        for name, target in re.findall(r"/schema/([\w/]+)@(\w+)", path.read_text()):
            group = "/".join(relative.parts[:-1])
            prefix = ".".join(part for part in (group, "" if target in ("_here_", group) else target) if part)
            mounts.setdefault(name, ([f"{group}={relative.stem}"] if group else [], prefix))
    return mounts


def schema_keys():
    """(the group choices, key, its type) of every field of every schema, each field once where it is declared
    (a field a schema inherits is its base's), nested schemas (trainer, optim) by their own fields."""
    import dataclasses
    import typing

    from jal import config, own_data

    schemas = config.SCHEMAS | own_data.SCHEMAS

    def fields(schema, choice, prefix):
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            key = f"{prefix}.{f.name}" if prefix else f.name
            if dataclasses.is_dataclass(hints[f.name]):
                yield from fields(hints[f.name], choice, key)
            elif f.name in vars(schema).get("__annotations__", {}):  # declared here, not inherited
                yield choice, key, hints[f.name]

    seen = set()
    for name, (choice, prefix) in schema_mounts().items():
        for row in fields(schemas[name], choice, prefix):
            if row[1:] not in seen:
                seen.add(row[1:])
                yield row


def wrong_values(hint) -> tuple[str, str]:
    """A value of the field's type that no rule allows, and a value of another type."""
    import typing

    hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)  # Optional[X] -> X
    if hint is int:
        return "-1", "abc"
    if hint is float:
        return "-1.5", "abc"
    if hint is bool:
        return "maybe", "3"
    if typing.get_origin(hint) is list:
        return "[1]", "abc"
    return "no_such_value", "3" if hint is typing.Any else "[1,2]"


# Settings whose value of its type is a free choice (a folder, a W&B project, a run's name): accepted (data_dir on
# synthetic data, which reads no file)
FREE_TEXT = {"data_dir", "out_root", "run_name", "logger.project", "logger.entity", "logger.group", "logger.tags"}
# Settings whose line names another: those that set another (the dataset's epochs and lr), and a folder's
# test_root, given where the folder itself (dataset.root) is not, which is named first
SETS = {"dataset.epochs": "trainer.epochs", "dataset.lr": "optim.lr", "dataset.weight_decay": "optim.weight_decay",
        "dataset.test_root": "dataset.root"}


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_every_wrong_value_of_every_setting_is_one_line(tmp_path, monkeypatch):
    """Each key of each schema in jal/config.py, given a value of its type outside its rules and a value of another
    type, as `python -m jal.train` checks its command line before torch loads: one line naming the setting (or the
    file it names), no traceback; only a free-text setting accepts its value. (`dataset.name=mydata` ended in a
    KeyError traceback; `trainer.progress=3` and `loss.num_classes=-1` were taken silently.)"""
    from jal.preflight import check_command_line

    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "data"))
    rows = list(schema_keys())
    assert {"dataset.name", "trainer.progress", "loss.passive", "dataset.root", "loss.a"} <= {k for _, k, _ in rows}
    accepted, lines = [], {}
    for choice, key, hint in rows:
        for value in wrong_values(hint):
            base = [] if any(c.startswith("dataset=") for c in choice) else [SYN]  # no data file in the way
            logger = [] if any(c.startswith("logger=") for c in choice) else ["logger=none"]  # given once
            out_root = [] if key == "out_root" else [f"out_root={tmp_path / 'runs'}"]
            args = [*base, *logger, *choice, *out_root, f"{key}={value}"]
            try:
                check_command_line(args)
            except SystemExit as exit:
                lines[key, value] = str(exit.code)
            else:
                accepted.append(key)
    assert sorted(set(accepted)) == sorted(FREE_TEXT)
    def one_line_naming_it(key, value, line):
        named = {key, SETS.get(key, key)}  # its own key where its type is wrong
        file_named = key in ("dataset.root", "dataset.imagenet_root", "dataset.path", "dataset.test_root") and (
            " is missing" in line)
        return "\n" not in line and line.startswith("error: ") and (
            any(f"{name}=" in line for name in named) or f"'{value}'" in line or file_named)

    assert [(key, value, line) for (key, value), line in lines.items()
            if not one_line_naming_it(key, value, line)] == []
    assert not list((tmp_path / "runs").rglob("*"))  # checked before anything is written
