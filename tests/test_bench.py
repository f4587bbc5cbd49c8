"""Tests for jal.bench: a tiny end-to-end run, and the faithfulness claims behind its speed-up."""

import copy
import json

import pytest
import torch
from torch import nn

from jal import bench
from jal.data import synthetic_dataset
from jal.losses import AMSE, NCE, ActivePassive
from jal.models import CNN8
from jal.train import add_l1_gradient

REQUIRED_KEYS = {
    "reference_images_per_second", "ours_images_per_second", "speedup", "device", "device_name", "model",
    "batch_size", "precision", "steps", "data_source", "breakdown", "peak_memory_mb", "torch_version",
    "cpu_count", "command",
}


@pytest.fixture
def one_thread():
    """Tiny batches on a busy CPU run faster on one thread than fighting over two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_cpu_run_writes_report(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "no_data"))  # no cifar10.npz: synthetic images
    out = tmp_path / "bench"
    result = bench.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--breakdown-steps", "1",
                         "--batch-size", "4", "--workers", "1", "--out", str(out)])
    written = json.loads((out / "cpu.json").read_text())
    assert REQUIRED_KEYS <= written.keys()
    assert written["data_source"] == "synthetic" and written["device"] == "cpu"
    assert written["precision"] == "fp32" and written["batch_size"] == 4 and written["steps"] == 2
    assert written["reference_images_per_second"] > 0 and written["ours_images_per_second"] > 0
    assert written["speedup"] == pytest.approx(written["ours_images_per_second"]
                                               / written["reference_images_per_second"], rel=1e-9)
    for pipeline in ("reference", "ours"):
        phases = written["breakdown"][pipeline]
        assert sum(phases[f"{p}_pct"] for p in bench.PHASES) == pytest.approx(100.0)
        assert written["peak_memory_mb"][pipeline] > 0
    assert written["speedup"] == result["speedup"]
    assert not list(out.glob("*.json.tmp*")) and [p.name for p in out.iterdir()] == ["cpu.json"]


def test_full_run_and_concurrent_need_cuda():
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--full-run"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--concurrent", "2"])


def test_reference_l1_penalty_and_ours_give_the_same_gradients():
    """The reference adds strength * sum|theta| to the loss before backward; we add strength * sign(theta) to
    the gradients after it. Same model, same input: the gradients must agree (BatchNorm biases start at
    exactly 0, where both give 0)."""
    torch.manual_seed(0)
    strength = 1e-2  # large enough that the penalty visibly changes the gradients
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                              nn.Linear(4 * 6 * 6, 5)).double()
    ours = copy.deepcopy(reference)
    criterion = ActivePassive(NCE(5), AMSE(5, a=30.0))
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randint(0, 5, (6,))

    loss = criterion(reference(x), y) + bench.reference_l1_penalty(reference, strength)
    loss.backward()

    criterion(ours(x), y).backward()
    without_l1 = [p.grad.clone() for p in ours.parameters()]
    add_l1_gradient(list(ours.parameters()), strength)

    for p_ref, p_ours, g0 in zip(reference.parameters(), ours.parameters(), without_l1):
        torch.testing.assert_close(p_ours.grad, p_ref.grad)
        assert not torch.equal(p_ours.grad, g0) or not p_ours.detach().any()  # the penalty did something


def test_ours_breakdown_is_the_same_step_as_train_epoch(monkeypatch, tmp_path, one_thread):
    """The instrumented step of the breakdown must train exactly as jal.train.train_epoch does."""
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path))
    args = bench.parse_args(["--device", "cpu", "--batch-size", "4", "--model", "cnn8"])
    cfg = bench.compose_config(args)  # CIFAR-10's JAL-CE config: L1, clipping, augmentation, channels_last
    assert cfg.optim.l1 > 0 and cfg.trainer.channels_last
    device, bf16 = bench.resolve_device(cfg)
    data = synthetic_dataset(16, 2, cfg.dataset.num_classes)
    via_train_epoch, via_breakdown = bench.build_ours(cfg, data, device), bench.build_ours(cfg, data, device)
    bench.run_ours(via_train_epoch, cfg, bf16, 2)
    bench.ours_breakdown(via_breakdown, cfg, bf16, 2)
    for a, b in zip(via_train_epoch.model.state_dict().values(), via_breakdown.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert isinstance(via_train_epoch.model, CNN8)
