"""The CUDA self-check (jal.gpu_check): on a GPU the checks themselves (marked `cuda`, skipped without one;
`make gpu-check` runs the same functions without pytest), and on the CPU the same functions on tiny runs,
plus proof that they catch what they look for."""

import json

import pytest
import torch

from jal import gpu_check
from jal import step as jal_step
from jal import train as jal_train

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check on a GPU host)")
TINY = 48  # training images of the CPU runs: one step per epoch


# ---------------------------------------------------------------------------------------------------
# On a GPU


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("name", list(gpu_check.CHECKS))
@pytest.mark.full  # on a GPU, 16 s
def test_cuda_check_passes(name, tmp_path):
    """determinism: two runs with one seed agree; resume: paused and continued == uninterrupted; bf16: loss
    values within BF16_TOLERANCE of fp32; host_sync: the training epoch never syncs with the host."""
    report = gpu_check.CHECKS[name]("cuda", tmp_path)
    print(json.dumps(report, indent=1, default=str))  # by how much the default settings differ, when they do
    assert report["passed"], report


# ---------------------------------------------------------------------------------------------------
# The same checks on the CPU


@pytest.mark.full  # trains
def test_determinism_check_on_cpu_finds_two_identical_runs(tmp_path, one_torch_thread):
    report = gpu_check.check_determinism("cpu", tmp_path, size=TINY)
    assert report["passed"] and list(report) == ["default", "passed"]  # no second pair needed
    assert report["default"]["max_weight_diff"] == 0.0 and report["default"]["max_history_diff"] == 0.0


@pytest.mark.full  # trains
def test_determinism_check_measures_how_far_runs_differ(tmp_path, one_torch_thread):
    a_cfg = gpu_check.short_run("cpu", tmp_path, "seed=1", size=TINY)
    a = jal_train.train(a_cfg, tmp_path / "a")
    b_cfg = gpu_check.short_run("cpu", tmp_path, "seed=2", size=TINY)
    b = jal_train.train(b_cfg, tmp_path / "b")
    report = gpu_check.compare_runs(a, tmp_path / "a", b, tmp_path / "b")
    assert not report["identical"] and report["max_weight_diff"] > 0 and report["max_history_diff"] > 0


@pytest.mark.full  # trains
def test_resume_check_on_cpu(tmp_path, one_torch_thread):
    report = gpu_check.check_resume("cpu", tmp_path, size=TINY)
    assert report["passed"] and report["paused_epoch"] == 1 and report["max_weight_diff"] == 0.0


@pytest.mark.full  # trains
def test_bf16_check_reports_each_loss_in_both_precisions(tmp_path, one_torch_thread):
    report = gpu_check.check_bf16("cpu", tmp_path, batch_size=16, losses=("ce", "jal_ce"))
    assert set(report["losses"]) == {"ce", "jal_ce"}
    for values in report["losses"].values():
        assert values["fp32"] != values["bf16"]  # autocast really ran in bf16
        assert values["relative_difference"] == pytest.approx(abs(values["bf16"] - values["fp32"]) / values["fp32"])
    assert report["passed"]


@pytest.mark.full  # trains
def test_host_sync_check_passes_our_step_and_catches_a_planted_read(tmp_path, monkeypatch, one_torch_thread):
    assert gpu_check.check_host_sync("cpu", tmp_path / "ours", size=TINY)["passed"]
    real = jal_step.train_step

    def step_that_logs_its_loss(*args, **kwargs):
        logits, loss = real(*args, **kwargs)
        loss.item()  # the per-step read the training loop must not do
        return logits, loss

    monkeypatch.setattr(jal_step, "train_step", step_that_logs_its_loss)
    report = gpu_check.check_host_sync("cpu", tmp_path / "planted", size=TINY)
    assert not report["passed"] and report["host_reads"] == ["item"]


def test_host_reads_sees_boolean_mask_indexing_but_not_device_ops():
    x = torch.arange(6.0)
    with gpu_check.HostReads() as reads:
        y = x * 2 + torch.randperm(6)
        y.sum()
    assert reads.calls == []
    with gpu_check.HostReads() as reads:
        x[x > 2]
        float(x.sum())
    assert reads.calls == ["__getitem__", "__float__"]


@pytest.mark.full  # trains
def test_gpu_check_writes_its_report_and_exit_status(tmp_path, monkeypatch, one_torch_thread):
    assert gpu_check.main(["--device", "cpu", "--no-bench", "--checks", "bf16", "--size", "16",
                           "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["passed"] and list(report["checks"]) == ["bf16"] and report["device"] == "cpu"
    assert report["checks"]["bf16"]["losses"]["ce"]["relative_difference"] <= gpu_check.BF16_TOLERANCE
    monkeypatch.setattr(gpu_check, "BF16_TOLERANCE", 0.0)  # a check that fails: exit status 1, report says so
    assert gpu_check.main(["--device", "cpu", "--no-bench", "--checks", "bf16", "--size", "16",
                           "--out", str(tmp_path)]) == 1
    assert not json.loads((tmp_path / "gpu_check.json").read_text())["passed"]


def test_gpu_check_without_cuda_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(SystemExit, match="no CUDA device here"):
        gpu_check.main(["--no-bench"])
