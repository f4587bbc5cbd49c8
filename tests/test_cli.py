"""The commands: the console scripts of pyproject.toml, and what `jal-train` / `python -m jal.train` answer before
torch loads (--help, a wrong setting, Hydra's shell completion). Each command runs in a fresh interpreter
that reports whether torch was imported; how fast they answer is measured apart (README), not tested."""

import os
import re
import subprocess
import sys
from importlib import import_module

import pytest
from conftest import REPO

# Runs a command's entry in this interpreter, as its console script would (sys.argv[0] the script's name),
# then says on a last line whether torch was imported.
RUNNER = """
import sys, atexit
atexit.register(lambda: print("torch imported:", "torch" in sys.modules, flush=True))
sys.argv = [sys.argv[1], *sys.argv[2:]]
{call}
"""


def command(call: str, argv0: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    code = RUNNER.format(call=call)
    return subprocess.run([sys.executable, "-c", code, argv0, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def jal_train(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`jal-train ARGS` as the installed script runs it (jal.cli.train, sys.argv[0] .../bin/jal-train)."""
    return command("from jal.cli import train; train()", "/venv/bin/jal-train", *args, **env)


def python_m_jal_train(*args: str) -> subprocess.CompletedProcess:
    """`python -m jal.train ARGS`."""
    return command("import runpy; runpy.run_module('jal.train', run_name='__main__', alter_sys=True)",
                   str(REPO / "jal" / "train.py"), *args)


def test_every_console_script_names_a_command_of_the_package():
    section = (REPO / "pyproject.toml").read_text().split("[project.scripts]\n")[1].split("\n[")[0]
    scripts = dict(re.findall(r'^(\S+) = "(\S+)"$', section, re.M))  # tomllib: Python 3.11+
    assert {"jal-train", "jal-fuse", "jal-plan", "jal-tables"} <= set(scripts)
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(import_module(module), function)), name
        # each runs the module of its name: jal-gpu-check is jal.gpu_check
        assert name.removeprefix("jal-").replace("-", "_") in {"train", "fuse", "plan", "tables", "bench",
                                                               "precision_report", "gpu_check", "mislabelled"}


@pytest.mark.full  # python processes
def test_help_answers_without_torch_through_both_commands():
    for done in (jal_train("--help"), python_m_jal_train("--help")):
        assert done.returncode == 0, done.stderr[-2000:]
        assert "== Configuration groups ==" in done.stdout and "loss: " in done.stdout
        assert done.stdout.rstrip().endswith("torch imported: False")


@pytest.mark.full  # the console script
def test_a_wrong_setting_fails_in_one_line_without_torch_through_the_console_script():
    done = jal_train("loss=jal_c")
    assert done.returncode == 1
    assert done.stderr.startswith("error: unknown loss 'jal_c'; choose one of: ") and done.stderr.count("\n") == 1
    assert done.stdout.strip() == "torch imported: False"


@pytest.mark.full  # the console script
def test_shell_completion_installs_for_the_console_script_and_completes_without_torch():
    done = jal_train("-sc", "install=bash")
    assert done.returncode == 0, done.stderr[-2000:]
    # Hydra registers the completion for the command's own name, which `python -m jal.train` cannot have
    assert "complete -o nospace -o default -F hydra_bash_completion jal-train\n" in done.stdout
    line = "jal-train noise=symmetric loss=jal_"
    done = jal_train("-sc", "query=bash", COMP_LINE=line, COMP_POINT=str(len(line)))
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = done.stdout.strip().splitlines()
    assert first.split() == ["loss=jal_ce", "loss=jal_fl"] and last == "torch imported: False"
