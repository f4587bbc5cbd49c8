"""Fused runs (jal.train.train_fusion): K runs trained as one vmapped model are the same experiments as the runs
trained alone: the same labels, orders, losses and weights; records and checkpoints per member; pause, resume
alone or together; a diverging member fails alone."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_train, given_once
from omegaconf import OmegaConf

from jal import run as jal_run
from jal import run_dir as jal_run_dir
from jal import step as jal_step
from jal import train as jal_train
from jal.run import percent

# In float64 (trainer.precision=fp64): fused and alone then agree to ~1e-13, where a wrong member (another seed,
# other labels, another L1) is ~1e-6 away or more (see assert_close_runs), on every CPU. Two steps an epoch of
# 16 images: float64 convolutions cost ~3x float32's on a CPU, and every test below pays for a few runs.
TINY = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "trainer.batch_size=16",
        "trainer.epochs=2", "logger=none", "trainer.progress=false", "trainer.precision=fp64"]
# Different seeds, noise rates and losses: JAL-CE trains with L1, CE and NCE+RCE with L2 weight decay. JAL-CE's
# labels are drawn per sample: the exact sampling flips int(0.4 / 9 * 3) = 0 labels of a class of ~3 images.
# Each member regularises and clips its own way, strongly enough that a fusion applying one member's L1, L2 or
# clip to all, or leaving a term out, is far outside TOLERANCE: JAL-CE a strong L1
# and a clip that cuts every step, CE its defaults (the sweeps below train it), NCE+RCE L1 and L2 together and
# another clip.
MEMBERS = {"jal_ce": ["loss=jal_ce", "noise=symmetric", "noise.rate=0.4", "noise.sampling=per_sample", "seed=1",
                      "optim.l1=1e-3", "optim.grad_clip=0.05"],
           "ce": ["loss=ce", "noise=symmetric", "noise.rate=0.2", "seed=2"],
           "nce_rce": ["loss=nce_rce", "noise=asymmetric", "noise.rate=0.3", "seed=3", "optim.l1=2e-4",
                       "optim.weight_decay=1e-3", "optim.grad_clip=0.5"]}
TIMINGS = ("images_per_second", "seconds")


def configs(tmp_path: Path, *extra: str) -> list:
    return [compose_train(TINY + [f"out_root={tmp_path}", *overrides, *extra]) for overrides in MEMBERS.values()]


def dirs(root: Path) -> list[Path]:
    return [root / name for name in MEMBERS]


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


# fp64 runs fused and alone agree to TOLERANCE. Why it holds on every CPU: vmapped kernels add in another order
# than the plain ones, a relative error of order the unit roundoff u per op, and training amplifies it. In
# float32 (u = 6e-8) the gap measured on a BatchNorm running mean of magnitude 1.33 was 1.9e-4 on an AMD EPYC
# Zen 4 and under 1e-4 on a Sapphire Rapids Xeon: an amplification of about 2.4e3 u. In float64 (u = 1.1e-16)
# the same amplification gives ~3e-13 (measured here: see test_fp64_fused_and_alone_agree_far_inside_the_tolerance),
# over 3000x inside 1e-9, while the smallest wrong member the tests below build (another L1 strength) moves the
# weights by ~1e-6, 1000x outside it.
TOLERANCE = 1e-9


def assert_close_runs(a: Path, b: Path, tol: float = TOLERANCE) -> None:
    """Two finished runs that trained the same experiment up to float rounding: per-epoch losses to `tol`
    relative, the final weights and BatchNorm statistics to `tol`, the same labels."""
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["status"] == rb["status"] == "finished"
    assert [h["train_loss"] for h in rb["history"]] == pytest.approx([h["train_loss"] for h in ra["history"]], rel=tol)
    sa, sb = final_state(a), final_state(b)
    assert sa["model"].keys() == sb["model"].keys()
    for name in sa["model"]:
        torch.testing.assert_close(sb["model"][name], sa["model"][name], rtol=tol, atol=tol, msg=name)
    for key in ("noisy", "clean", "indices"):
        assert np.array_equal(np.load(a / "labels.npz")[key], np.load(b / "labels.npz")[key])


def assert_bitwise_runs(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["status"] == rb["status"] == "finished"
    assert without_timings(ra["history"]) == without_timings(rb["history"])
    sa, sb = final_state(a), final_state(b)
    for name in sa["model"]:
        assert torch.equal(sa["model"][name], sb["model"][name]), name
    for i, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The three runs trained alone and the same three fused, each recording the training rows it drew."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fused")
    rows, real = [], jal_step.training_batch
    jal_step.training_batch = lambda x, idx, *args: rows.append(idx.clone()) or real(x, idx, *args)
    try:
        alone_rows = []
        for cfg, run_dir in zip(configs(root), dirs(root / "alone")):
            rows.clear()
            assert jal_train.train(cfg, run_dir).status == "finished"
            alone_rows.append(list(rows))
        rows.clear()
        fused = jal_train.train_fusion(configs(root), dirs(root / "fused"))
        fused_rows = [rows[i :: len(MEMBERS)] for i in range(len(MEMBERS))]  # a step: one batch of each member
    finally:
        jal_step.training_batch = real
        torch.set_num_threads(previous)
    return root, fused, alone_rows, fused_rows


@pytest.mark.full  # trains
def test_a_fusion_of_three_trains_the_three_runs_alone(trained):
    root, fused, alone_rows, fused_rows = trained
    assert [r.status for r in fused] == ["finished"] * 3 and [r.fused for r in fused] == [3] * 3
    for alone_dir, fused_dir in zip(dirs(root / "alone"), dirs(root / "fused")):
        assert_close_runs(alone_dir, fused_dir)
        alone, together = (json.loads((d / "result.json").read_text()) for d in (alone_dir, fused_dir))
        assert alone["fused"] == 1
        # the same record but for the timings, the float rounding of the losses and `fused`
        differs = {k for k in alone if alone[k] != together[k]}
        assert differs <= {"history", "wall_seconds", "images_per_second", "fused", "started", "ended"}, differs
        but_loss = lambda h: {k: v for k, v in h.items() if k != "train_loss"}  # noqa: E731
        for a, b in zip(without_timings(alone["history"]), without_timings(together["history"])):
            assert but_loss(a) == but_loss(b)
    for a, b in zip(alone_rows, fused_rows):  # each member's data order, batch by batch
        assert len(a) == len(b) == 2 * 2 and all(torch.equal(x, y) for x, y in zip(a, b))
    # BatchNorm statistics are each member's own: they differ between members
    means = [final_state(d)["model"]["features.1.running_mean"] for d in dirs(root / "fused")]
    assert not torch.equal(means[0], means[1])
    # a member's checkpoint is a run alone's: the same keys, shapes and SGD settings (its own weight decay)
    for alone_dir, fused_dir in zip(dirs(root / "alone"), dirs(root / "fused")):
        a, b = final_state(alone_dir), final_state(fused_dir)
        assert a.keys() == b.keys() and a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
        assert a["scheduler"] == b["scheduler"] and a["epoch"] == b["epoch"] == 2
        assert {k: v.shape for k, v in a["model"].items()} == {k: v.shape for k, v in b["model"].items()}


def largest_gap(a: Path, b: Path) -> float:
    """The largest difference between two runs' final weights and BatchNorm statistics, each tensor's
    difference relative to its scale (its largest magnitude, at least 1)."""
    sa, sb = final_state(a)["model"], final_state(b)["model"]
    return max(((sa[k] - sb[k]).abs().max() / sb[k].abs().max().clamp(min=1)).item()
               for k in sa if sa[k].is_floating_point())


@pytest.mark.full  # the trained fixture
def test_fp64_fused_and_alone_agree_far_inside_the_tolerance(trained):
    """The margin TOLERANCE is argued from: fused and alone differ by rounding alone, ~1e-13 in float64."""
    root = trained[0]
    gaps = [largest_gap(alone, fused) for alone, fused in zip(dirs(root / "alone"), dirs(root / "fused"))]
    assert max(gaps) < TOLERANCE / 100, gaps


@pytest.mark.parametrize("wrong", ["seed", "labels", "l1"])
@pytest.mark.full  # trains
def test_a_fused_member_with_another_seed_labels_or_l1_would_fail_the_check(trained, tmp_path, wrong,
                                                                           one_torch_thread):
    """What a fused member would have trained had the fusion given it another seed, other labels or another
    L1 strength (that run alone) is far outside TOLERANCE of the fused member: the check above catches it."""
    root = trained[0]
    right = configs(root)[0]  # JAL-CE, the member with L1
    change = {"seed": "seed=11", "labels": "noise.rate=0.5", "l1": f"optim.l1={2 * right.optim.l1}"}[wrong]
    cfg = compose_train(TINY + [f"out_root={root}", *MEMBERS["jal_ce"], change])
    assert jal_train.train(cfg, tmp_path / "wrong").status == "finished"
    assert largest_gap(tmp_path / "wrong", root / "fused" / "jal_ce") > 100 * TOLERANCE
    with pytest.raises(AssertionError):
        assert_close_runs(tmp_path / "wrong", root / "fused" / "jal_ce")


def pausing_after_epoch_1(cfgs: list) -> list:
    """The configs with the first one's trainer.pause_after=1: its fusion pauses after epoch 1."""
    cfgs[0].trainer.pause_after = 1
    return cfgs


@pytest.mark.full  # trains
def test_a_paused_fusion_continues_to_the_uninterrupted_one_and_a_member_can_continue_alone(
        trained, tmp_path, one_torch_thread):
    root = trained[0]
    paused = jal_train.train_fusion(pausing_after_epoch_1(configs(root)), dirs(tmp_path / "paused"))
    assert [(r.status, r.epoch, r.fused) for r in paused] == [("paused", 1, 3)] * 3
    assert all(final_state(d)["epoch"] == 1 for d in dirs(tmp_path / "paused"))
    shutil.copytree(tmp_path / "paused", tmp_path / "apart")
    continued = jal_train.train_fusion(configs(root), dirs(tmp_path / "paused"))
    assert [r.status for r in continued] == ["finished"] * 3
    for uninterrupted, resumed in zip(dirs(root / "fused"), dirs(tmp_path / "paused")):
        assert_bitwise_runs(uninterrupted, resumed)
    # member 2 of the paused fusion continued alone ends as the fusion's member 2
    ce = configs(root)[1]
    assert jal_train.train(ce, tmp_path / "apart" / "ce").status == "finished"
    assert_close_runs(root / "fused" / "ce", tmp_path / "apart" / "ce")


@pytest.mark.full  # trains
def test_a_run_paused_alone_joins_a_fusion_at_the_same_epoch(trained, tmp_path, one_torch_thread):
    root = trained[0]
    cfgs = configs(root)
    assert jal_train.train(pausing_after_epoch_1(cfgs[:1])[0], tmp_path / "jal_ce").epoch == 1
    paused_fused = jal_train.train_fusion(pausing_after_epoch_1(cfgs[1:]), dirs(tmp_path)[1:])
    assert [r.epoch for r in paused_fused] == [1, 1]
    done = jal_train.train_fusion(configs(root), dirs(tmp_path))
    assert [r.status for r in done] == ["finished"] * 3
    for uninterrupted, joined in zip(dirs(root / "alone"), dirs(tmp_path)):
        assert_close_runs(uninterrupted, joined)


@pytest.mark.full  # trains
def test_a_fusion_of_one_is_the_run_alone_bit_for_bit(trained, tmp_path, one_torch_thread):
    root = trained[0]
    (result,) = jal_train.train_fusion(configs(root)[:1], [tmp_path / "jal_ce"])
    assert result.fused == 1
    assert_bitwise_runs(root / "alone" / "jal_ce", tmp_path / "jal_ce")


@pytest.mark.full  # trains
def test_finished_and_busy_members_are_not_fused(trained, tmp_path, monkeypatch, one_torch_thread):
    """A finished member is skipped (its record returned), one another process trains is left to it; the
    rest train: here one, a fusion of one, bitwise its run alone."""
    from jal.run_dir import RunLock

    root = trained[0]
    shutil.copytree(root / "alone" / "jal_ce", tmp_path / "jal_ce")
    with RunLock(tmp_path / "ce"):
        results = jal_train.train_fusion(configs(root), dirs(tmp_path))
    assert results[0].to_json() == json.loads((root / "alone" / "jal_ce" / "result.json").read_text())
    assert results[1].status == "running elsewhere" and "is being trained by another process" in results[1].reason
    assert [p.name for p in (tmp_path / "ce").iterdir()] == [".lock"]
    assert results[2].status == "finished" and results[2].fused == 1
    assert_bitwise_runs(root / "alone" / "nce_rce", tmp_path / "nce_rce")


@pytest.mark.full  # trains
def test_a_diverging_member_fails_alone_and_the_others_finish_as_alone(trained, tmp_path, one_torch_thread):
    root = trained[0]
    cfgs = configs(root)  # the CE member's loss turns NaN in epoch 2 (2 steps an epoch)
    cfgs[1] = compose_train(TINY + [f"out_root={root}", *MEMBERS["ce"], "loss._target_=conftest.CEThatTurnsNaN"])
    results = jal_train.train_fusion(cfgs, dirs(tmp_path))
    assert [r.status for r in results] == ["finished", "failed", "finished"]
    failed = results[1]
    assert failed.epoch == 2 and failed.fused == 3 and failed.loss == "ce"
    assert failed.error.startswith("RunDiverged: non-finite training loss in epoch 2 of ")
    assert json.loads((tmp_path / "ce" / "result.json").read_text()) == failed.to_json()
    assert final_state(tmp_path / "ce")["epoch"] == 1  # its last good checkpoint
    for name in ("jal_ce", "nce_rce"):
        assert_close_runs(root / "alone" / name, tmp_path / name)


@pytest.mark.full  # trains
def test_a_loss_that_reads_the_labels_and_draws_gets_its_own_in_a_fusion(trained, tmp_path, one_torch_thread):
    """NLNL (class weights from the noisy labels, complementary labels drawn from the epoch's generator) fused
    with CE: its member trains as NLNL alone, from its own labels and its own generator."""
    root = trained[0]
    nlnl = compose_train(TINY + [f"out_root={root}", "loss=nlnl", "noise=symmetric", "noise.rate=0.4", "seed=5"])
    assert jal_train.train(nlnl, tmp_path / "alone").status == "finished"
    fused = jal_train.train_fusion([nlnl, configs(root)[1]], [tmp_path / "nlnl", tmp_path / "ce"])
    assert [r.status for r in fused] == ["finished"] * 2
    assert_close_runs(tmp_path / "alone", tmp_path / "nlnl")
    assert_close_runs(root / "alone" / "ce", tmp_path / "ce")


@pytest.mark.full  # composes a sweep
def test_runs_that_cannot_be_fused_are_refused_in_one_line_before_anything_is_written(tmp_path):
    cfgs = configs(tmp_path)
    cfgs[2] = compose_train(TINY + [f"out_root={tmp_path}", *MEMBERS["nce_rce"], "optim.lr=0.05"])
    with pytest.raises(jal_run.ConfigError) as refused:
        jal_train.train_fusion(cfgs, dirs(tmp_path))
    assert str(refused.value).startswith("runs 1 and 3 of a fusion differ in optim.lr (0.01 and 0.05): ")
    assert "\n" not in str(refused.value) and not any(d.exists() for d in dirs(tmp_path))


@pytest.mark.full  # trains
def test_runs_at_different_epochs_are_trained_apart(trained, tmp_path, one_torch_thread, caplog):
    """Runs planned as one fusion that another process advanced meanwhile (a plain run of one of them) train
    apart, each epoch's runs a fusion of their own, each ending as its run alone: none is failed."""
    root = trained[0]
    shutil.copytree(root / "alone" / "ce", tmp_path / "ce")  # finished: skipped, not fused
    (tmp_path / "ce" / "result.json").unlink()  # as if killed after its last epoch: its checkpoint says epoch 2
    results = jal_train.train_fusion(configs(root)[:2], dirs(tmp_path)[:2])
    assert [(r.status, r.fused) for r in results] == [("finished", 1), ("finished", 1)]
    assert "runs planned as one fusion are at epochs [0, 2] now" in caplog.text
    for name in ("jal_ce", "ce"):
        assert_bitwise_runs(root / "alone" / name, tmp_path / name)


class Killed(BaseException):
    """A SIGKILL, as the process sees it: nothing after it runs (no record, no handler), unlike an Exception."""


@pytest.fixture
def kill_after_first_write(monkeypatch):
    """kill(epoch): the process dies right after the first member's checkpoint of `epoch` is written, the other
    members' still unwritten (a fusion's checkpoints are written one member after another)."""
    save = jal_run.save_checkpoint

    def kill(epoch: int):
        def save_then_die(directory, state):
            save(directory, state)
            if state["epoch"] == epoch:
                raise Killed

        monkeypatch.setattr(jal_run, "save_checkpoint", save_then_die)

    yield kill
    monkeypatch.setattr(jal_run, "save_checkpoint", save)


@pytest.mark.parametrize("epoch", [1, 2])
@pytest.mark.full  # trains
def test_a_fusion_killed_between_its_members_checkpoints_comes_back_as_the_same_fusion(
        trained, tmp_path, kill_after_first_write, monkeypatch, epoch, one_torch_thread):
    """Killed after member 1's checkpoint of `epoch`, before the others': member 1 is an epoch ahead. Planned
    again, the three are one fusion; trained again, member 1 goes back to the others' epoch (its
    checkpoint.prev.pt, or its start) and the three end as the uninterrupted fusion, bit for bit."""
    from jal import multirun

    root = trained[0]
    kill_after_first_write(epoch)
    with pytest.raises(Killed):
        jal_train.train_fusion(configs(root), dirs(tmp_path))
    monkeypatch.setattr(jal_run, "save_checkpoint", jal_run_dir.save_checkpoint)
    runs = [multirun.Run(d, cfg.run_name, cfg) for d, cfg in zip(dirs(tmp_path), configs(root))]
    assert [run.epochs_done() for run in runs] == [epoch, epoch - 1, epoch - 1]
    assert [[r.dir for r in group] for group in multirun.fusions(runs, 3)] == [dirs(tmp_path)]
    again = jal_train.train_fusion(configs(root), dirs(tmp_path))
    assert [(r.status, r.fused) for r in again] == [("finished", 3)] * 3
    for uninterrupted, rerun in zip(dirs(root / "fused"), dirs(tmp_path)):
        assert_bitwise_runs(uninterrupted, rerun)
        assert not list(rerun.glob(".*.pt"))


@pytest.fixture(scope="module")
def killed_after_its_first_record(trained, tmp_path_factory):
    """The fusion of the three killed right after its first member's last record: jal_ce's result.json written,
    the others' not, every member's checkpoint of epoch 2 (and of epoch 1, checkpoint.prev.pt) written."""
    root, real, threads = tmp_path_factory.mktemp("killed"), jal_train.write_last_record, torch.get_num_threads()

    def write_then_die(m, record, fused):
        real(m, record, fused)
        raise Killed

    jal_train.write_last_record = write_then_die
    torch.set_num_threads(1)
    try:
        with pytest.raises(Killed):
            jal_train.train_fusion(configs(trained[0]), dirs(root))
    finally:
        jal_train.write_last_record = real
        torch.set_num_threads(threads)
    assert [(d / "result.json").exists() for d in dirs(root)] == [True, False, False]
    return root


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.full  # trains
def test_a_kill_after_one_members_last_record_leaves_every_record_its_fused_count(
        trained, killed_after_its_first_record, tmp_path, one_torch_thread):
    """The members left without a record end with nothing to train: their records say the fusion of 3 that
    trained every epoch of them, not the 2 that finished them."""
    root = trained[0]
    shutil.copytree(killed_after_its_first_record, tmp_path, dirs_exist_ok=True)
    again = jal_train.train_fusion(configs(root), dirs(tmp_path))
    assert [(r.status, r.fused) for r in again] == [("finished", 3)] * 3
    for uninterrupted, rerun in zip(dirs(root / "fused"), dirs(tmp_path)):
        assert_bitwise_runs(uninterrupted, rerun)
        assert json.loads((rerun / "result.json").read_text())["fused"] == 3


@pytest.mark.full  # trains
def test_a_fused_members_damaged_checkpoint_brings_the_fusion_back_to_their_common_epoch(
        trained, killed_after_its_first_record, tmp_path, one_torch_thread):
    """Killed after the three checkpoints of epoch 2, then member 2's checkpoint.pt damaged: it resumes from its
    checkpoint of epoch 1 (checkpoint.prev.pt), the plan and the run bring the others back to epoch 1 with it, and
    the same fusion of 3 trains epoch 2 again: every member ends as the uninterrupted fusion, bit for bit."""
    from jal import multirun

    root = trained[0]
    shutil.copytree(killed_after_its_first_record, tmp_path, dirs_exist_ok=True)
    (tmp_path / "jal_ce" / "result.json").unlink()  # killed before any last record
    cut(tmp_path / "ce" / "checkpoint.pt")
    runs = [multirun.Run(d, cfg.run_name, cfg) for d, cfg in zip(dirs(tmp_path), configs(root))]
    assert [run.checkpoint()[0] for run in runs] == [2, 1, 2]  # read as the run reads them
    assert [[r.dir for r in group] for group in multirun.fusions(runs, 3)] == [dirs(tmp_path)]
    again = jal_train.train_fusion(configs(root), dirs(tmp_path))
    assert [(r.status, r.fused) for r in again] == [("finished", 3)] * 3
    for uninterrupted, rerun in zip(dirs(root / "fused"), dirs(tmp_path)):
        assert_bitwise_runs(uninterrupted, rerun)
    assert (tmp_path / "ce" / "checkpoint.pt.damaged").exists()


@pytest.mark.full  # trains
def test_a_member_with_a_damaged_labels_file_is_blocked_and_the_others_train_on(
        trained, killed_after_its_first_record, tmp_path, one_torch_thread):
    """Member 2's labels.npz damaged, the three at epoch 1: member 2 is blocked (one line, with the command that
    restarts it alone; no record: nothing of it failed) and the others train epoch 2 as a fusion of 2, ending
    as their runs in the fusion of 3 up to the rounding of the smaller batch, their `fused` the 3 of epoch 1."""
    import shlex

    root = trained[0]
    shutil.copytree(killed_after_its_first_record, tmp_path, dirs_exist_ok=True)
    (tmp_path / "jal_ce" / "result.json").unlink()
    for d in dirs(tmp_path):  # back at epoch 1, as after a pause there
        os.replace(d / "checkpoint.prev.pt", d / "checkpoint.pt")
    cut(tmp_path / "ce" / "labels.npz")
    results = jal_train.train_fusion(configs(root), dirs(tmp_path))
    assert [(r.status, r.fused) for r in results] == [("finished", 3), ("blocked", None), ("finished", 3)]
    line = results[1].reason
    assert line.startswith(f"{tmp_path / 'ce' / 'labels.npz'} is damaged (") and "\n" not in line
    restart = re.search(r"`python -m jal\.train (.*) trainer\.restart=true` \(that run alone\) moves it aside", line)
    assert compose_train(shlex.split(restart[1])).run_name == configs(root)[1].run_name  # that run, alone
    assert not (tmp_path / "ce" / "result.json").exists() and final_state(tmp_path / "ce")["epoch"] == 1
    for name in ("jal_ce", "nce_rce"):
        assert_close_runs(root / "fused" / name, tmp_path / name)


@pytest.mark.full  # trains
def test_a_finished_runs_hand_edited_config_is_named_and_its_record_wins(trained, tmp_path, caplog):
    root = trained[0]
    shutil.copytree(root / "alone" / "ce", tmp_path / "ce")
    config = tmp_path / "ce" / "config.yaml"
    edited = OmegaConf.load(config)
    edited.optim.lr = 0.5
    OmegaConf.save(edited, config)
    record = jal_train.train(configs(root)[1], tmp_path / "ce")
    assert record == jal_run.records.read(root / "alone" / "ce")  # skipped: its record, as it was
    assert (f"{config} differs from the run's result.json (optim.lr: 0.01 in the record, 0.5 in config.yaml): the "
            "record is what trained") in caplog.text
    assert OmegaConf.load(config).optim.lr == 0.5  # left as it is


# ---------------------------------------------------------------------------------------------------
# Sweeps: FUSE=K


@pytest.mark.full  # the trained fixture
def test_a_sweeps_runs_to_train_are_grouped_into_fusions_of_compatible_runs(trained, tmp_path):
    from conftest import CONFIG_DIR
    from hydra import initialize_config_dir

    from jal import multirun

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        runs = multirun.plan_runs(TINY + [f"out_root={tmp_path}", "loss=ce,jal_ce", "seed=1,2,3", "noise=symmetric",
                                          "noise.rate=0.2"])
        other_lr = multirun.plan_runs(TINY + [f"out_root={tmp_path}", "optim.lr=0.05", "seed=4,5"])
    (finished,) = [r for r in runs if r.name.startswith("synthetic/symmetric_0.2/ce/seed2")]
    shutil.copytree(trained[0] / "alone" / "ce", finished.dir)  # the same experiment, finished: not fused
    groups = multirun.fusions(runs + other_lr, 4)
    cells = [[r.name.split("/", 1)[1].rsplit("/", 2)[0] for r in g] for g in groups]  # noise/loss/seed
    assert cells == [["symmetric_0.2/ce/seed1", "symmetric_0.2/ce/seed3", "symmetric_0.2/jal_ce/seed1",
                      "symmetric_0.2/jal_ce/seed2"], ["symmetric_0.2/jal_ce/seed3"],
                     ["clean/ce/seed4", "clean/ce/seed5"]]  # another learning rate: a fusion of its own


# A sweep of 4 runs in 2 fusions of 2 (ce seeds 2 and 3, nce_rce seeds 2 and 3): ce seed 2 is MEMBERS' ce
SWEEP = ["loss=ce,nce_rce", "noise=symmetric", "noise.rate=0.2", "seed=2,3", "trainer.threads=1"]
SETTINGS = "dataset.test_size=16,dataset.train_size=32,trainer.batch_size=16,trainer.epochs=2"
CELLS = [f"synthetic/symmetric_0.2/{loss}/seed{seed}/fp64/{SETTINGS}" for loss in ("ce", "nce_rce") for seed in (2, 3)]


def jal_fuse(out_root: Path, *overrides: str):
    """python -m jal.fuse --fuse 2 on the tiny runs; its launcher's workers import this checkout's jal too."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "jal.fuse", "--fuse", "2", *given_once([*TINY, f"out_root={out_root}",
                                                                             *overrides])],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def basic_fused(tmp_path_factory):
    """SWEEP fused by the basic launcher: (out_root, stdout)."""
    root = tmp_path_factory.mktemp("basic_fused")
    return root, jal_fuse(root, *SWEEP).stdout


def assert_same_records(a_root: Path, b_root: Path, cells: list[str]) -> None:
    """The runs of one fused sweep launched two ways: the same records but for the timings, the same weights."""
    for cell in cells:
        a, b = (json.loads((root / cell / "result.json").read_text()) for root in (a_root, b_root))
        assert a["fused"] == b["fused"] == 2 and a["last_test_acc"] == b["last_test_acc"]
        assert {k for k in a if a[k] != b[k]} <= {"history", "wall_seconds", "images_per_second", "started",
                                                  "ended"}  # config too
        assert_bitwise_runs(a_root / cell, b_root / cell)


@pytest.mark.full  # python -m jal.fuse
def test_jal_fuse_trains_a_sweep_fused_and_each_member_as_its_run_alone(trained, basic_fused):
    root, stdout = basic_fused
    assert ("4 runs: 0 finished already, 2 fusions of at most 2 to train, one at a time in one process (the basic "
            "launcher), 1 torch thread each") in stdout
    assert "Fused sweep summary: 4 runs trained here: 4 finished, 0 failed, 0 paused, 0 not run to an end" in stdout
    # then, as a plain sweep's summary: where its finished runs trained, and each run off its asked noise rate (32
    # images, 3 a class: symmetric 0.2 flips int(0.2/9 x 3) = 0 of each, a clean run under a noisy name)
    summary = stdout.splitlines()
    summary = summary[summary.index("Fused sweep summary: 4 runs trained here: 4 finished, 0 failed, 0 paused, 0 not "
                                    "run to an end") + 1:]
    assert summary == ["  where   4 finished runs: 4 trained here"] + [
        f"  noise   {cell}: symmetric 0.2 on 32 images realises 0: exact sampling flips int(0.2/9 x 3) = 0 images of "
        "each class to each other class; noise.sampling=per_sample draws per image (more than 1 pp off: its table "
        "cell is marked)" for cell in CELLS]
    ce = root / CELLS[0]
    assert json.loads((ce / "result.json").read_text())["fused"] == 2
    assert re.search(rf"^\[fusion 1/2\] {re.escape(CELLS[0])}: finished: test accuracy [\d.]+% \(epoch 2\) \(ETA ",
                     stdout, re.M)  # each member's closing line, in a run alone's words
    assert re.search(rf"^\[fusion 2/2\] {re.escape(CELLS[3])}: finished: .* \(sweep done\)$", stdout, re.M)
    assert_close_runs(trained[0] / "alone" / "ce", ce)


@pytest.mark.full  # python -m jal.fuse
def test_a_fused_members_train_log_holds_what_a_run_alones_holds(basic_fused):
    """A run alone's train.log (Hydra's job logging): its precision, then a line per epoch; fused, each member
    gets its own, and the console a line per fusion epoch with the fusion's ETA."""
    root, stdout = basic_fused
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]"
    for cell in CELLS:
        lines = (root / cell / "train.log").read_text().splitlines()
        history = json.loads((root / cell / "result.json").read_text())["history"]
        assert re.fullmatch(stamp + r"\[jal\.run\]\[INFO\] - precision fp64 \(trainer\.precision=fp64\)", lines[0])
        epochs = [re.fullmatch(stamp + r"\[jal\.epochs\]\[INFO\] - (epoch .*), \d+ img/s, [\d.]+s", line)
                  for line in lines[1:]]
        assert [m.group(1) for m in epochs] == [
            f"epoch {h['epoch']}/2: train loss {h['train_loss']:.4f}, fits its labels {percent(h['train_acc_noisy'])}, "
            f"memorised {percent(h['train_memorised'])}, test {percent(h['test_acc'])}" for h in history]
    assert "train loss" not in stdout  # the members' epoch lines: their train.log only
    lines = re.findall(r"^\[fusion (\d)/2\] epoch (\d)/2: [\d.]+ s, \d+ images/s a run \((.*)\)$", stdout, re.M)
    assert [(n, e) for n, e, _ in lines] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert [eta.split()[0] for *_, eta in lines] == ["ETA", "fusion", "ETA", "fusion"]


@pytest.mark.full  # python -m jal.fuse
def test_joblib_trains_fusions_side_by_side_as_the_basic_launcher_does(basic_fused, tmp_path):
    done = jal_fuse(tmp_path, *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert "2 fusions of at most 2 to train, 2 at a time side by side (joblib, a process each), 1 torch thread " \
           "each" in done.stdout
    assert sorted(re.findall(r"^\[fusion (\d)/2\] epoch (\d)/2: ", done.stdout, re.M)) == [
        ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]  # from the workers
    assert "Fused sweep summary: 4 runs trained here: 4 finished, 0 failed" in done.stdout
    assert_same_records(basic_fused[0], tmp_path, CELLS)
    for cell in CELLS:
        assert (tmp_path / cell / "train.log").read_text().count("][jal.epochs][INFO] - epoch ") == 2


@pytest.mark.full  # python -m jal.fuse
def test_submitit_trains_a_fusion_per_task_as_the_basic_launcher_does(basic_fused, tmp_path):
    """hydra/launcher=local: submitit's code path for SLURM, its tasks processes on this machine."""
    done = jal_fuse(tmp_path, *SWEEP[1:], "loss=ce", "hydra/launcher=local")
    assert "2 runs: 0 finished already, 1 fusion of at most 2 to train, a process each on this machine (submitit's " \
           "local executor), 1 torch thread each" in done.stdout
    assert "submitted 1 fusion: job " in done.stdout
    (task_log,) = (tmp_path / ".submitit").glob("*/*_log.out")
    assert "[fusion 1/1] epoch 2/2: " in task_log.read_text()
    assert f"[fusion 1/1] {CELLS[1]}: finished: test accuracy" in done.stdout
    assert_same_records(basic_fused[0], tmp_path, CELLS[:2])


@pytest.mark.full  # composes a sweep
def test_on_slurm_the_fusions_are_one_job_array_with_the_launcher_configs_resources(tmp_path, monkeypatch):
    """No cluster here: sbatch and srun stand-ins record what submitit would submit for SLURM."""
    from conftest import CONFIG_DIR
    from hydra import initialize_config_dir

    from jal import launch, multirun
    from jal.fuse import tasks as fuse

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\nfor a; do last=$a; done\ncp "$last" "$SBATCH_RECORD"\n'
                                    'echo "Submitted batch job 4242"\n')
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'a100|gpu:a100:4|64|512000'\n")  # its nodes (jal.launch.check_fits)
    for tool in ("srun", "sbatch", "sinfo"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_RECORD", str(tmp_path / "sbatch.sh"))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
        runs = multirun.plan_runs(TINY + [f"out_root={tmp_path}", *SWEEP, "hydra/launcher=slurm",
                                          "hydra.launcher.partition=a100", "hydra.launcher.timeout_min=30"])
    assert launch.how_fusions_run(launch.settings(runs[0].cfg.hydra), runs[0].cfg.trainer.threads) == (
        "one SLURM task each (submitit: a job array, at most 64 tasks at a time; partition=a100, nodes=1, "
        "gpus_per_node=1, cpus_per_task=8, mem_gb=32, timeout_min=30)")
    tasks = fuse.fusion_tasks(multirun.fusions(runs, 2))
    launcher = launch.settings(runs[0].cfg.hydra)
    assert launch.submitit_settings(launcher)[1] == dict(folder=f"{tmp_path}/.submitit/%j", slurm_max_num_timeout=20)
    jobs = launch.submit(tasks, launcher)
    script = (tmp_path / "sbatch.sh").read_text()
    for line in ("array=0-1%2", "partition=a100", "time=30", "gpus-per-node=1", "cpus-per-task=8", "mem=32GB",
                 "signal=USR2@120", "job-name=train"):
        assert f"#SBATCH --{line}\n" in script
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1"]
    for job, task in zip(jobs, tasks):  # each task of the array trains its fusion, and requeued the same again
        submitted = job.submission().function
        assert (submitted.number, submitted.run_dirs) == (task.number, task.run_dirs) == (
            task.number, [tmp_path / cell for cell in CELLS[2 * task.number - 2 : 2 * task.number]])
        assert submitted.checkpoint().function is submitted


def test_a_members_train_log_takes_its_own_records_and_those_about_no_member_but_not_submitits(tmp_path):
    import logging

    from jal.fuse.logs import RunLog
    from jal.run import about

    a, b = tmp_path / "a", tmp_path / "b"
    logs = [RunLog(str(d / "train.log"), d, {str(a), str(b)}) for d in (a, b)]
    records = [logging.makeLogRecord(dict(msg="precision fp32", **about(a))),  # jal.train.about: a's
               logging.makeLogRecord(dict(msg="resuming %s from epoch %d", args=(b, 1), **about(b))),
               logging.makeLogRecord(dict(msg="about no member")),
               logging.makeLogRecord(dict(msg="Bypassing signal SIGCONT", name="submitit"))]  # its task's log
    for log in logs:
        for record in records:
            if log.filter(record):
                log.emit(record)
        log.close()
    assert (a / "train.log").read_text().splitlines() == ["precision fp32", "about no member"]
    assert (b / "train.log").read_text().splitlines() == [f"resuming {b} from epoch 1", "about no member"]


# ---------------------------------------------------------------------------------------------------
# The records of the code before jal/train.py was split into step, run and device (tests/data/golden_runs.json)


@pytest.mark.full  # trains
def test_runs_alone_and_fused_give_the_records_the_code_gave_before_its_split(tmp_path, one_torch_thread):
    """Two tiny fp64 runs, alone and fused, against the histories and final-weight sums that the code before the
    split wrote (commit 944310e; on the machine that split it, fp32 records and weights were equal bit for bit).
    Held to 1e-10 relative, not bitwise: float64 kernels add in another order on another CPU family (~1e-16
    a step, see TOLERANCE), far below what a changed step, label or regulariser moves (test_fused above)."""
    golden = json.loads((Path(__file__).parent / "data" / "golden_runs.json").read_text())
    names = ["jal_ce", "ce"]
    sizes = ["dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32"]  # the golden runs' own
    cfgs = [compose_train(TINY + sizes + [f"out_root={tmp_path}", *golden[f"alone/{n}"]["overrides"]]) for n in names]
    for name, cfg in zip(names, cfgs):
        jal_train.train(cfg, tmp_path / "alone" / name)
    jal_train.train_fusion(cfgs, [tmp_path / "fused" / n for n in names])
    for key, want in golden.items():
        record = json.loads((tmp_path / key / "result.json").read_text())
        assert record["fingerprint"] == want["fingerprint"], key
        got = without_timings(record["history"])
        assert [set(h) for h in got] == [set(h) for h in want["history"]], key
        for h, w in zip(got, want["history"]):
            assert h == {k: pytest.approx(v, rel=1e-10) if isinstance(v, float) else v for k, v in w.items()}, key
        state = final_state(tmp_path / key)["model"]
        sums = {k: v.double().sum().item() for k, v in state.items() if v.is_floating_point()}
        assert sums == {k: pytest.approx(v, rel=1e-10, abs=1e-10) for k, v in want["weight_sums"].items()}, key


@pytest.mark.full  # trains
def test_a_run_named_twice_in_a_fused_sweep_is_planned_trained_and_logged_once(tmp_path, one_torch_thread):
    """`seed=1,1`: one run, one fusion of one; handed twice to a fusion anyway, it trains once, both names get
    its record (not "running elsewhere": this process holds its lock) and its train.log has each line once."""
    from conftest import CONFIG_DIR
    from hydra import initialize_config_dir

    from jal import multirun
    from jal.fuse import tasks as fuse

    overrides = given_once([*TINY, f"out_root={tmp_path}", "loss=ce", "seed=1,1", "trainer.precision=fp32"])
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
        runs = multirun.plan_runs(overrides)
    assert len(runs) == 2 and runs[0].dir == runs[1].dir
    assert [len(group) for group in multirun.fusions(runs, 2)] == [1]
    (task,) = fuse.fusion_tasks([runs])  # as an older plan, or a caller of train_fusion, might hand it
    _, results = task()
    assert [r.status for r in results] == ["finished"] * 2 and results[0] == results[1]
    assert results[0].fused == 1
    lines = (runs[0].dir / "train.log").read_text().splitlines()
    assert len(lines) == len(set(lines)) and sum("[jal.epochs]" in line for line in lines) == 2
