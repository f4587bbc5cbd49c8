"""The two test tiers: `make test` keeps to this process (conftest.py fails a test there that starts a process
or sends a signal), `make test-all` runs the rest too; pyproject's addopts, the Makefile and the guard name the
same markers."""

import os
import re
import subprocess
import sys

import conftest
import pytest
from conftest import REPO

INNER_TESTS = '''
import os, subprocess, sys
import pytest

def test_starts_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_sends_a_signal():
    os.kill(os.getpid(), 0)  # signal 0: nothing delivered, but a kill all the same

def test_starts_joblib_workers():
    from joblib import Parallel, delayed
    assert Parallel(n_jobs=2, backend="loky")(delayed(abs)(-i) for i in range(2)) == [0, 1]

@pytest.fixture(scope="module")
def started_by_a_module_fixture():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_uses_a_fixture_that_starts_a_process(started_by_a_module_fixture):
    pass

def test_reads_the_commit():
    subprocess.run(["git", "--version"], check=True, capture_output=True)

@pytest.mark.full
def test_full_starts_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.slow
def test_slow_sends_a_signal():
    os.kill(os.getpid(), 0)
'''


def test_the_tiers_name_the_same_markers():
    """make test deselects exactly the markers the guard exempts, and make test-full selects exactly them."""
    pyproject = (REPO / "pyproject.toml").read_text()
    makefile = (REPO / "Makefile").read_text()
    (addopts,) = re.findall(r"^addopts = \"-q -m '(.*)'\"$", pyproject, re.M)
    assert addopts == " and ".join(f"not {name}" for name in conftest.FULL_TIER)
    (full,) = re.findall(r"^test-full: .*\n\t\$\(PYTHON\) -m pytest \$\(TEST_IN_PARALLEL\) -m '(.*)'$", makefile, re.M)
    assert full == " or ".join(conftest.FULL_TIER)
    assert re.search(r"^test-all: .*\n\t\$\(PYTHON\) -m pytest \$\(TEST_IN_PARALLEL\) -m ''$", makefile, re.M)
    registered = re.findall(r'"(\w+): ', pyproject[pyproject.index("markers = ["):])
    assert set(conftest.FULL_TIER) <= set(registered)


def test_the_guard_sees_what_a_fast_test_starts_and_sends():
    """In this (fast-tier) test the guard is on: a process start and a signal are noted by the audit events they
    raise (raised here by hand, so nothing starts), a `git` start (the record's commit) is not; cleared after."""
    assert conftest._guard["on"] and conftest._guard["seen"] == []
    sys.audit("subprocess.Popen", sys.executable, [sys.executable, "-m", "jal.train"], None, None)
    sys.audit("subprocess.Popen", "git", ["git", "rev-parse", "--short", "HEAD"], None, None)
    sys.audit("os.kill", os.getpid(), 15)
    sys.audit("os.fork")
    seen, conftest._guard["seen"] = conftest._guard["seen"], []
    assert seen == [f"started {sys.executable} -m jal.train", f"sent a signal (os.kill ({os.getpid()}, 15))",
                    "started a process (os.fork ())"]


@pytest.mark.full
def test_a_fast_test_that_starts_a_process_or_sends_a_signal_fails_naming_it(tmp_path):
    """A pytest session of its own (this conftest, INNER_TESTS): each unmarked test that starts a process
    (python, joblib's workers, from a module fixture) or sends a signal fails with one line naming what it did
    and the marker to add; `git`, and tests marked full or slow, pass."""
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rfE", "-vv",
                           "test_inner.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    summary = done.stdout.splitlines()[-1]
    assert re.search(r"\b3 failed, 3 passed.*, 1 error\b", summary), done.stdout[-3000:]
    for name, saw in [("test_starts_python", [f"started {sys.executable} -c pass"]),
                      ("test_sends_a_signal", ["sent a signal (os.kill"]),
                      ("test_starts_joblib_workers", ["started a worker process: ", "joblib"]),
                      ("test_uses_a_fixture_that_starts_a_process", [f"started {sys.executable} -c pass"])]:
        (line,) = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))
                   and f"::{name} " in line]
        assert all(words in line for words in saw) and "mark it @pytest.mark.full (make test-all)" in line, line
