"""A kill at any durable write (issue 36 item 9): a tiny run alone and a fusion of three, each killed at every
os.replace and os.link it calls and then started again with the same command, end as the uninterrupted command
ends, bit for bit, in every file they keep.

Every file a run keeps is written under a temporary name and renamed into place (jal.util.atomic_save:
config.yaml, labels.npz, checkpoint.pt, predictions.npz, result.json), and checkpoint.pt's rotation links the
one it replaces to checkpoint.prev.pt (jal.run_dir.save_checkpoint). Those calls are the moments at which what a
run directory holds changes, so the kills right after each of them leave every state a kill can leave on disk;
a kill right before one leaves, besides, the complete temporary file of the write it cut short. The driver,
tests/kill_at_write.py, kills with os._exit(137): as SIGKILL, nothing after it runs (no handler, no `finally`,
no record). The fusion is killed only right after each write: right before one, a kill leaves one of those
states plus a temporary file in one member's directory, which that member's next start removes as a run
alone's does (tested on the run alone), at the cost of 48 more runs of the fusion.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from test_fused import TIMINGS

DRIVER = REPO / "tests" / "kill_at_write.py"
# Two steps an epoch (4 of 8 images) and two epochs (checkpoint.pt rotated once); one thread: bit for bit
RUN = ["dataset=synthetic", "dataset.train_size=8", "dataset.test_size=8", "trainer.batch_size=4",
       "trainer.epochs=2", "logger=none", "trainer.progress=false", "trainer.threads=1", "trainer.device=cpu"]
LOSSES = ["ce", "jal_ce", "nce_rce"]  # the fusion's members: L2 (CE, NCE+RCE) and L1 (JAL-CE) in one fusion
FUSION = ["--fuse", "3", *RUN, f"loss={','.join(LOSSES)}"]
UNTIMED = {*TIMINGS, "wall_seconds", "started", "ended"}  # what times the run: a rerun's own


def killed_at_every_write(root: Path, whens: str, *command: str) -> dict:
    """The driver's report of `python -m <command>` killed at each write as `whens` says (after, before), each
    kill then started again; `root` the folder of its runs (ROOT/uninterrupted, ROOT/after<N>, ...)."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(DRIVER), str(root), whens, *command], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((root / "report.json").read_text()) | {"root": root}


@pytest.fixture(scope="module")
def run_alone(tmp_path_factory) -> dict:
    return killed_at_every_write(tmp_path_factory.mktemp("run_alone"), "after,before", "jal.train", *RUN)


@pytest.fixture(scope="module")
def fusion(tmp_path_factory) -> dict:
    return killed_at_every_write(tmp_path_factory.mktemp("fusion"), "after", "jal.fuse", *FUSION)


def writes(report: dict) -> list[str]:
    """The uninterrupted command's writes in order, as `<call> <the run's loss>/<file>`: a temporary name's
    random part as `*`."""
    out_root, listed = report["root"] / "uninterrupted", []
    for line in (report["root"] / "uninterrupted.writes").read_text().splitlines():
        call, path = line.split(" ", 1)
        run_dir = Path(path).parent.relative_to(out_root)  # synthetic/clean/<loss>/seed123/<settings>
        listed.append(f"{call} {run_dir.parts[2]}/{re.sub(r'[.][0-9a-f]{8}$', '.*', Path(path).name)}")
    return listed


def checkpoint_writes(loss: str) -> list[str]:
    """A checkpoint after the first: the one it replaces linked to a temporary name, that renamed to
    checkpoint.prev.pt, then the new one renamed to checkpoint.pt."""
    return [f"link {loss}/.checkpoint.prev.pt.*", f"replace {loss}/checkpoint.prev.pt", f"replace {loss}/checkpoint.pt"]


# ---------------------------------------------------------------------------------------------------
# Every file a run keeps, read back


def untimed(value):
    """A record, checkpoint or history less the figures that time the run (UNTIMED), at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in UNTIMED}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def arrays(path: Path) -> dict:
    with np.load(path) as stored:
        return {key: stored[key] for key in stored}


KEPT = {"result.json": lambda path: untimed(json.loads(path.read_text())),
        "config.yaml": Path.read_text,
        "labels.npz": arrays,
        "predictions.npz": arrays,
        "checkpoint.pt": lambda path: untimed(torch.load(path, weights_only=True)),
        "checkpoint.prev.pt": lambda path: untimed(torch.load(path, weights_only=True)),
        "train.log": lambda path: None,  # stamped with the time; a resumed run's says it resumed
        ".lock": lambda path: None}  # names the process that held it


def differences(a, b, where: str) -> list[str]:
    """Where `a` and `b` (JSON, tensors, arrays, nested in dicts and lists) differ in any bit, or in type."""
    if type(a) is not type(b):
        return [f"{where}: {type(a).__name__} and {type(b).__name__}"]
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())} in one only"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}[{key!r}]")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} and {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        same = a.dtype == b.dtype and np.array_equal(a, b)
    else:
        same = a == b
    return [] if same else [where]


def run_dirs(out_root: Path) -> list[Path]:
    return sorted(path.parent.relative_to(out_root) for path in out_root.rglob(".lock"))


def differences_from_uninterrupted(root: Path, out_root: str) -> list[str]:
    """Where the runs in ROOT/<out_root> differ from the uninterrupted command's (ROOT/uninterrupted): a run, a
    file, or anything read from one (every bit of a tensor or array; a record but for its timings)."""
    expected, got = root / "uninterrupted", root / out_root
    if run_dirs(expected) != run_dirs(got):
        return [f"runs {run_dirs(got)}, not {run_dirs(expected)}"]
    found = []
    for run_dir in run_dirs(expected):
        names = [sorted(path.name for path in (top / run_dir).iterdir()) for top in (expected, got)]
        if names[0] != names[1]:
            found.append(f"{run_dir}: files {names[1]}, not {names[0]}")
            continue
        for name in names[0]:  # a file KEPT does not know raises KeyError: read it there
            found += differences(KEPT[name](expected / run_dir / name), KEPT[name](got / run_dir / name),
                                 f"{run_dir.parts[2]}/{name}")
    return found


def assert_each_kill_ends_as_the_uninterrupted_command(report: dict, when: str) -> None:
    """Each kill (right `when` a write) came at its write, the same command then ended without error, and its runs
    hold what the uninterrupted command's hold; every kill point is checked before any is reported."""
    listed, points = writes(report), [p for p in report["points"] if p["when"] == when]
    assert report["uninterrupted"] == 0
    assert [p["at"] for p in points] == list(range(1, len(listed) + 1))
    failed = []
    for point in points:
        at = f"killed {when} write {point['at']} ({listed[point['at'] - 1]})"
        if (point["killed"], point["again"]) != (137, 0):  # 137: the kill came; 0: the same command ended well
            failed.append(f"{at}: exit status {point['killed']}, then {point['again']} "
                          f"(see {report['root']}/{point['out_root']}.*.log)")
        else:
            failed += [f"{at}: {d}" for d in differences_from_uninterrupted(report["root"], point["out_root"])]
    assert failed == []


# ---------------------------------------------------------------------------------------------------
# A run alone


@pytest.mark.slow  # 33 runs of python -m jal.train (~2 min), 16 of them killed
def test_a_run_alone_keeps_its_files_in_eight_writes_its_record_last(run_alone):
    """The kill points below: config.yaml and labels.npz as the run starts, epoch 1's checkpoint, epoch 2's with
    its rotation, then predictions.npz and last result.json (a run with its record written is finished)."""
    assert writes(run_alone) == ["replace ce/config.yaml", "replace ce/labels.npz", "replace ce/checkpoint.pt",
                                 *checkpoint_writes("ce"), "replace ce/predictions.npz", "replace ce/result.json"]


@pytest.mark.slow  # the run_alone fixture
def test_a_run_alone_killed_right_after_any_write_ends_as_the_uninterrupted_run_bit_for_bit(run_alone):
    assert_each_kill_ends_as_the_uninterrupted_command(run_alone, "after")


@pytest.mark.slow  # the run_alone fixture
def test_a_run_alone_killed_right_before_any_write_ends_as_the_uninterrupted_run_bit_for_bit(run_alone):
    """Each kill leaves the complete temporary file of the write it cut short: the run's next start removes it."""
    assert_each_kill_ends_as_the_uninterrupted_command(run_alone, "before")


# ---------------------------------------------------------------------------------------------------
# A fusion of three (python -m jal.fuse --fuse 3)


@pytest.mark.slow  # 49 runs of python -m jal.fuse --fuse 3 (~6 min), 24 of them killed
def test_a_fusion_of_three_keeps_its_members_files_in_24_writes_one_member_after_another(fusion):
    """The kill points below: each member's config.yaml, then labels.npz, then epoch 1's checkpoints; epoch 2's,
    each with its rotation; then each member's predictions.npz and result.json. A kill between two members'
    checkpoints leaves some a checkpoint ahead of the others (jal.fuse.rejoin brings them back together)."""
    assert writes(fusion) == [
        *(f"replace {loss}/{name}" for name in ("config.yaml", "labels.npz", "checkpoint.pt") for loss in LOSSES),
        *(write for loss in LOSSES for write in checkpoint_writes(loss)),
        *(f"replace {loss}/{name}" for loss in LOSSES for name in ("predictions.npz", "result.json"))]


@pytest.mark.slow  # the fusion fixture
def test_a_fusion_of_three_killed_right_after_any_write_ends_as_the_uninterrupted_fusion_bit_for_bit(fusion):
    """Each member ends as its member in the uninterrupted fusion, its record's `fused` 3 included."""
    assert_each_kill_ends_as_the_uninterrupted_command(fusion, "after")
    for run_dir in run_dirs(fusion["root"] / "uninterrupted"):
        assert json.loads((fusion["root"] / "uninterrupted" / run_dir / "result.json").read_text())["fused"] == 3
