"""Tests for jal.bench: a tiny end-to-end run, and the faithfulness claims behind its speed-up."""

import copy
import json

import pytest
import torch
from torch import nn

from jal import bench, reference_pipeline, timing
from jal import device as jal_device
from jal.data import synthetic_dataset
from jal.losses import AMSE, NCE, ActivePassive
from jal.models import CNN8
from jal.step import add_l1_gradient

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


@pytest.mark.full  # trains
def test_tiny_cpu_run_writes_report(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "no_data"))  # no cifar10.npz: synthetic images
    monkeypatch.setattr(jal_device, "cpu_flags", lambda: {"avx2", "fma"})  # an AVX2-only CPU: auto = fp32
    out = tmp_path / "bench"
    result = bench.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--breakdown-steps", "1",
                         "--batch-size", "4", "--workers", "1", "--out", str(out), "--fusion", "1,2"])
    written = json.loads((out / "cpu.json").read_text())
    assert REQUIRED_KEYS <= written.keys()
    assert written["data_source"] == "synthetic" and written["device"] == "cpu"
    assert written["precision"] == "fp32" and written["batch_size"] == 4 and written["steps"] == 2
    assert written["warmup"] == 1  # eager on a CPU: nothing to autotune, the warm-up asked for
    assert written["reference_images_per_second"] > 0 and written["ours_images_per_second"] > 0
    assert written["speedup"] == pytest.approx(written["ours_images_per_second"]
                                               / written["reference_images_per_second"], rel=1e-9)
    assert written["breakdown_phases"] == ["data_bookkeeping", "forward_backward", "optimizer"]
    for pipeline in ("reference", "ours"):
        phases = written["breakdown"][pipeline]
        assert sum(phases[f"{p}_pct"] for p in timing.PHASES) == pytest.approx(100.0)
        assert all(phases[f"{p}_ms"] > 0 for p in timing.PHASES)  # every phase was marked
        assert written["peak_memory_mb"][pipeline] > 0
    assert written["speedup"] == result["speedup"]
    assert not list(out.glob("*.json.tmp*")) and [p.name for p in out.iterdir()] == ["cpu.json"]
    both = written["cpu_precisions"]  # both precisions on a CPU, and the one auto picks
    assert both["auto"] == "fp32" and "no bf16 hardware" in both["auto_reason"]
    assert both["fp32_images_per_second"] == written["ours_images_per_second"] and both["bf16_images_per_second"] > 0
    assert both["bf16_over_fp32"] == pytest.approx(both["bf16_images_per_second"] / both["fp32_images_per_second"])
    # --fusion alone: K runs fused in the precision of ours; 2 steps of 4 images for each of the K members
    assert [(v["fused"], v["precision"]) for v in written["fusion"]] == [(1, "fp32"), (2, "fp32")]
    for v in written["fusion"]:
        assert v["images_per_second"] == pytest.approx(v["fused"] * 2 * 4 / v["seconds"])


@pytest.mark.full  # trains
def test_cpu_report_names_bf16_where_the_cpu_has_amx(tmp_path, monkeypatch, one_thread, capsys):
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "no_data"))
    monkeypatch.setattr(jal_device, "cpu_flags", lambda: {"avx2", "avx512_bf16", "amx_bf16", "amx_tile"})
    result = bench.main(["--device", "cpu", "--steps", "1", "--warmup", "0", "--breakdown-steps", "1",
                         "--batch-size", "4", "--workers", "1", "--out", str(tmp_path / "bench")])
    both = result["cpu_precisions"]
    assert result["precision"] == "bf16" and both["auto"] == "bf16" and "amx_bf16" in both["auto_reason"]
    assert both["bf16_images_per_second"] == result["ours_images_per_second"]
    assert both["fp32_speedup"] == pytest.approx(both["fp32_images_per_second"] / result["reference_images_per_second"])
    assert "trainer.precision=auto trains in bf16 here" in capsys.readouterr().out


def test_full_run_needs_cuda_and_matrix_options_are_checked():
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--full-run"])
    for bad in (["--precisions", "fp16"], ["--compiles", "maybe"], ["--fusion", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["--device", "cpu", "--matrix", *bad])
    args = bench.parse_args(["--device", "cpu", "--matrix", "--fusion", "1,4"])
    assert (args.precisions, args.compiles, args.fusion) == (["fp32", "tf32", "bf16"], [False, True], [1, 4])


@pytest.mark.full  # trains every variant
def test_matrix_on_cpu_measures_every_precision_compile_and_fusion_variant(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path / "no_data"))
    out = tmp_path / "bench"
    result = bench.main(["--device", "cpu", "--precision", "fp32", "--steps", "2", "--warmup", "1",
                         "--breakdown-steps", "1", "--batch-size", "4", "--workers", "0", "--out", str(out),
                         "--matrix", "--precisions", "fp32,bf16", "--compiles", "off", "--fusion", "1,2"])
    matrix = json.loads((out / "cpu.json").read_text())["matrix"]
    assert matrix == json.loads(json.dumps(result["matrix"])) and "fusion" not in result  # the axis is folded in
    assert [(v["precision"], v["compile"], v["fused"]) for v in matrix["variants"]] == [
        ("fp32", False, 1), ("fp32", False, 2), ("bf16", False, 1), ("bf16", False, 2)]
    run_images = 120 * 50_000  # CIFAR-10's protocol
    for v in matrix["variants"]:
        assert v["images_per_second"] == pytest.approx(v["fused"] * 2 * 4 / v["seconds"])  # all members together
        assert v["runs_per_hour"] == pytest.approx(3600 * v["images_per_second"] / run_images)
        assert v["run_training_seconds"] == pytest.approx(v["fused"] * run_images / v["images_per_second"])
        assert v["peak_memory_mb"] > 0
    best = max(matrix["variants"], key=lambda v: v["runs_per_hour"])
    assert matrix["best"] == {k: best[k] for k in ("precision", "compile", "fused", "runs_per_hour")}


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

    loss = criterion(reference(x), y) + reference_pipeline.reference_l1_penalty(reference, strength)
    loss.backward()

    criterion(ours(x), y).backward()
    without_l1 = [p.grad.clone() for p in ours.parameters()]
    add_l1_gradient(list(ours.parameters()), strength)

    for p_ref, p_ours, g0 in zip(reference.parameters(), ours.parameters(), without_l1):
        torch.testing.assert_close(p_ours.grad, p_ref.grad)
        assert not torch.equal(p_ours.grad, g0) or not p_ours.detach().any()  # the penalty did something


@pytest.mark.full  # trains
def test_ours_breakdown_times_train_epoch_itself_and_leaves_it_unchanged(monkeypatch, tmp_path, one_thread):
    """The breakdown's hooks only time: the steps it times train exactly as jal.step.train_steps alone does,
    and its three phases take each step's time."""
    monkeypatch.setenv("JAL_DATA_DIR", str(tmp_path))
    args = bench.parse_args(["--device", "cpu", "--batch-size", "4", "--model", "cnn8"])
    cfg = bench.compose_config(args)  # CIFAR-10's JAL-CE config: L1, clipping, augmentation, channels_last
    assert cfg.optim.l1 > 0 and cfg.trainer.channels_last
    device, precision, _ = bench.choose(cfg)
    data = synthetic_dataset(16, 2, cfg.dataset.num_classes)
    plain, timed = bench.build_fusion(cfg, data, device), bench.build_fusion(cfg, data, device)
    bench.run_fusion(plain, cfg, precision, 2)
    phases = bench.ours_breakdown(timed, cfg, precision, 2)
    models = [f.fusion.members[0].model for f in (plain, timed)]
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert isinstance(models[0], CNN8) and phases["steps"] == 2
    assert phases["step_ms"] == pytest.approx(sum(phases[f"{p}_ms"] for p in timing.PHASES))
    assert all(phases[f"{p}_ms"] > 0 for p in timing.PHASES)


def test_warmup_covers_a_whole_epoch_where_new_batch_sizes_cost_time():
    """On CUDA (cuDNN autotunes each new batch size) or compiled (each new size recompiles), the warm-up runs
    at least one epoch, so the epoch's smaller last batch is met before the timed steps."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    steps = bench.steps_per_epoch(10_000, 128)
    assert steps == 79 and 10_000 - 78 * 128 == 16  # the synthetic set's last batch: 16 images
    assert bench.warmup_steps(20, steps, cuda, False) == 79
    assert bench.warmup_steps(20, steps, cpu, "reduce-overhead") == 79
    assert bench.warmup_steps(20, steps, cpu, False) == 20
    assert bench.warmup_steps(100, steps, cuda, True) == 100  # never fewer than asked for
