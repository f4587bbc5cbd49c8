"""trainer.precision=auto on a CPU (bf16 only with bf16 hardware, from the CPU's flags, the reason recorded),
and the paired bf16-vs-fp32 table of jal.precision_report (its arithmetic on hand-made records)."""

import json
import logging
from pathlib import Path

import pytest
import torch

from jal import device as jal_device
from jal import precision_report as paired
from jal import train as jal_train
from jal.record import Record

# /proc/cpuinfo flags of the two CPU kinds docs/performance.md has figures for (abridged)
SPR_FLAGS = set("fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile "
                "amx_int8".split())
AVX2_FLAGS = set("fpu sse2 avx avx2 fma f16c bmi2".split())
CPU = torch.device("cpu")


def test_auto_picks_bf16_only_on_a_cpu_with_bf16_hardware():
    precision, reason = jal_device.choose_precision("auto", CPU, SPR_FLAGS)
    assert precision == "bf16" and "amx_bf16" in reason and "avx512_bf16" in reason
    assert jal_device.choose_precision("auto", CPU, {"avx2", "avx512_bf16"})[0] == "bf16"  # AVX512-BF16 without AMX
    assert jal_device.choose_precision("auto", CPU, {"avx2", "amx_bf16"})[0] == "bf16"
    precision, reason = jal_device.choose_precision("auto", CPU, AVX2_FLAGS)
    assert precision == "fp32" and "no bf16 hardware" in reason


def test_explicit_precisions_ignore_the_flags():
    for flags in (SPR_FLAGS, AVX2_FLAGS):
        for precision in ("fp32", "bf16", "fp64"):
            assert jal_device.choose_precision(precision, CPU, flags) == (precision, f"trainer.precision={precision}")
    assert jal_device.choose_precision("auto", torch.device("cuda"), AVX2_FLAGS)[0] == "bf16"  # CUDA: as before


def test_unknown_flags_mean_fp32(monkeypatch):
    monkeypatch.setattr(jal_device, "cpu_flags", lambda: None)  # no /proc/cpuinfo (macOS)
    precision, reason = jal_device.choose_precision("auto", CPU)
    assert precision == "fp32" and "unknown" in reason


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n")
    assert jal_device.cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert jal_device.cpu_flags(tmp_path / "absent") is None


@pytest.mark.parametrize("flags, expected", [(SPR_FLAGS, "bf16"), (AVX2_FLAGS, "fp32")])
def test_the_chosen_device_and_precision_follow_the_faked_flags(synthetic_run, monkeypatch, flags, expected):
    from jal.experiment import choose

    monkeypatch.setattr(jal_device, "cpu_flags", lambda: flags)
    device, precision, _ = choose(synthetic_run("trainer.device=cpu", "trainer.precision=auto"))
    assert device.type == "cpu" and precision == expected


@pytest.mark.parametrize("flags, expected", [(SPR_FLAGS, "bf16"), (AVX2_FLAGS, "fp32")])
@pytest.mark.full  # trains in bf16
def test_the_record_and_log_say_which_precision_and_why(synthetic_run, monkeypatch, caplog, one_torch_thread,
                                                       flags, expected):
    monkeypatch.setattr(jal_device, "cpu_flags", lambda: flags)
    cfg = synthetic_run("trainer.device=cpu", "trainer.precision=auto", "trainer.epochs=1")
    with caplog.at_level(logging.INFO, logger="jal.run"):
        result = jal_train.train(cfg, tmp_dir := jal_train.Path(cfg.out_root) / cfg.run_name)
    assert result.precision == expected
    assert result.precision_reason.startswith("auto: " + expected)
    assert json.loads((tmp_dir / "result.json").read_text())["precision_reason"] == result.precision_reason
    assert f"precision {expected} ({result.precision_reason})" in caplog.text


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
@pytest.mark.parametrize("flags, expected, suffix", [(SPR_FLAGS, "bf16", "/bf16"), (AVX2_FLAGS, "fp32", "")])
def test_the_quick_preset_trains_bf16_only_where_the_cpu_has_bf16_hardware(monkeypatch, flags, expected, suffix):
    """results/precision's check passed: the quick preset is `auto`, bf16 on an AMX CPU, fp32 on an AVX2 one,
    and its directory says which, so a bf16 run never lands in (or is refused by) an fp32 record's directory."""
    from conftest import compose_train

    monkeypatch.setattr(jal_device, "cpu_flags", lambda: flags)
    cfg = compose_train(["experiment=quick", "trainer.device=cpu", "noise=symmetric", "noise.rate=0.8"])
    assert cfg.trainer.precision == "auto" and jal_device.choose_precision("auto", torch.device("cpu"))[0] == expected
    assert cfg.run_name == "cifar10/symmetric_0.8/ce/seed123" + suffix


@pytest.mark.full  # composes four runs
def test_a_run_directory_names_the_precision_that_trains_not_how_it_was_asked(monkeypatch):
    from conftest import compose_train

    monkeypatch.setattr(jal_device, "cpu_flags", lambda: AVX2_FLAGS)
    name = lambda *o: compose_train(["trainer.device=cpu", "loss=jal_ce", *o]).run_name  # noqa: E731
    assert name() == name("trainer.precision=fp32") == name("trainer.precision=auto") == "cifar10/clean/jal_ce/seed123"
    assert name("trainer.precision=bf16", "loss.passive.a=20") == "cifar10/clean/jal_ce/seed123/bf16/loss.passive.a=20"
    assert name("trainer.precision=fp64") == "cifar10/clean/jal_ce/seed123/fp64"


# ---------------------------------------------------------------------------------------------------
# The paired table (jal.precision_report), on hand-made records


def record(loss, seed, precision, acc, noise_type="symmetric", rate=0.8, status="finished", **extra):
    fields = dict(status=status, dataset="cifar10", model="cnn8", loss=loss, noise_type=noise_type,
                  noise_rate=rate, noise_labels=None, seed=seed, epochs=12, subset=10000, last_test_acc=acc,
                  precision=precision)
    data = {**fields, **extra}
    return Record.from_json(data, Path(data.pop("run_dir", f"/runs/{precision}/{loss}/{seed}")))


def test_pairs_by_cell_and_precision_and_judges_by_twice_the_larger_std():
    records = [record("ce", 123, "fp32", 27.0), record("ce", 124, "fp32", 28.0), record("ce", 125, "fp32", 29.0),
               record("ce", 123, "bf16", 27.5), record("ce", 124, "bf16", 28.5), record("ce", 125, "bf16", 30.5),
               record("jal_ce", 123, "fp32", 34.0), record("jal_ce", 124, "fp32", 34.0),
               record("jal_ce", 125, "fp32", 34.2),
               record("jal_ce", 123, "bf16", 36.0), record("jal_ce", 124, "bf16", 36.2),
               record("jal_ce", 125, "bf16", 36.0)]
    rows = paired.pair_cells(records, expect_seeds=3)
    ce, jal = [r for r in rows if r["loss"] == "ce"][0], [r for r in rows if r["loss"] == "jal_ce"][0]
    assert ce["seeds"] == [123, 124, 125] and ce["fp32_mean"] == pytest.approx(28.0)
    assert ce["bf16_mean"] == pytest.approx(28.8333333) and ce["difference"] == pytest.approx(0.8333333)
    assert ce["fp32_std"] == pytest.approx(1.0) and ce["bf16_std"] == pytest.approx(1.5275252)
    assert ce["bound"] == pytest.approx(2 * 1.5275252) and ce["within"] is True
    # per seed: +0.5, +0.5, +1.5
    assert ce["paired_mean"] == pytest.approx(0.8333333) and ce["paired_std"] == pytest.approx(0.5773503)
    assert jal["difference"] == pytest.approx(2.0) and jal["bound"] == pytest.approx(2 * 0.1154701)
    assert jal["within"] is False
    verdict = paired.verdict(rows, expect_seeds=3)
    assert verdict["complete"] and verdict["moved"] == ["CIFAR-10 Sym 0.8 JAL-CE"] and not verdict["bf16_ok"]


def test_only_seeds_trained_in_both_precisions_are_compared_and_partial_evidence_decides_nothing():
    records = [record("ce", s, "fp32", 27.0 + s - 123) for s in (123, 124, 125)]
    records += [record("ce", 123, "bf16", 27.2), record("ce", 124, "bf16", 28.1),
                record("ce", 125, "bf16", 1.0, status="failed", last_test_acc=None),  # not finished: not paired
                record("ce", 126, "bf16", 90.0)]  # no fp32 twin
    rows = paired.pair_cells(records, expect_seeds=3)
    (row,) = rows
    assert row["seeds"] == [123, 124] and row["fp32_mean"] == pytest.approx(27.5)
    assert row["bf16_mean"] == pytest.approx(27.65) and row["within"] is True
    assert any("2/3 seeds" in issue for issue in row["issues"])
    verdict = paired.verdict(rows, expect_seeds=3)
    assert not verdict["complete"] and not verdict["bf16_ok"]


def test_cells_are_read_from_record_contents_not_directories():
    # the same cell under any directory names; another epoch count or subset is another cell
    records = [record("ce", 123, "fp32", 27.0), record("ce", 123, "bf16", 27.4, run_dir="/x/y/z"),
               record("ce", 123, "fp32", 50.0, epochs=36), record("ce", 123, "bf16", 51.0, epochs=36),
               record("ce", 123, "fp32", 61.0, noise_type="asymmetric", rate=0.4)]
    rows = paired.pair_cells(records, expect_seeds=1)
    assert [(r["epochs"], r["column"][0], r["difference"]) for r in rows if r["difference"] is not None] == [
        (12, "symmetric", pytest.approx(0.4)), (36, "symmetric", pytest.approx(1.0))]
    lone = [r for r in rows if r["difference"] is None]
    assert len(lone) == 1 and lone[0]["column"][0] == "asymmetric" and lone[0]["issues"]


def test_markdown_table_and_files(tmp_path):
    records = []
    for loss, base in (("ce", 27.0), ("nce_rce", 32.0)):
        for i, seed in enumerate((123, 124, 125)):
            records += [record(loss, seed, "fp32", base + i, wall_seconds=900.0, device_name="Xeon X, 2 cores"),
                        record(loss, seed, "bf16", base + i + 0.1, wall_seconds=300.0,
                               device_name="Xeon X, 2 cores")]
    rows = paired.pair_cells(records, expect_seeds=3)
    paired.write_tables(rows, tmp_path, expect_seeds=3)
    markdown = (tmp_path / "table.md").read_text()
    assert "| CIFAR-10 Sym 0.8 CE |" in markdown and "| CIFAR-10 Sym 0.8 NCE+RCE |" in markdown
    assert "+0.10" in markdown and "bf16 may become the default" in markdown
    assert "Xeon X, 2 cores" in markdown
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"]["bf16_ok"] and len(summary["cells"]) == 2
    assert summary["cells"][0]["fp32_wall_seconds"] == pytest.approx(900.0)
    assert (tmp_path / "table.csv").read_text().splitlines()[0].startswith("dataset,")


def test_cells_from_the_trained_side_leave_the_rest_of_a_table_out():
    records = [record("ce", 123, "fp32", 27.0), record("ce", 123, "bf16", 27.5),
               record("gce", 123, "fp32", 40.0)]  # the committed fp32 table holds more cells than were checked
    cells = {paired.cell_of(r) for r in records if r.precision == "bf16"}
    rows = paired.pair_cells(records, expect_seeds=1, cells=cells)
    assert [r["loss"] for r in rows] == ["ce"] and rows[0]["difference"] == pytest.approx(0.5)
    # a settings field naming the precision override does not split the pair
    tagged = record("ce", 124, "bf16", 28.0, settings="trainer.precision=bf16")
    assert paired.cell_of(tagged) == paired.cell_of(record("ce", 124, "fp32", 28.0))


def test_committed_precision_table_is_rebuilt_from_committed_records(tmp_path):
    """results/precision/ is derived state: what jal.precision_report makes of the committed bf16 and fp32 records."""
    repo = jal_train.Path(__file__).resolve().parents[1]
    bf16_runs, fp32_runs = repo / "results/precision/runs", repo / "results/quick/runs"
    if not (repo / "results/precision/table.md").exists() or not bf16_runs.is_dir():
        pytest.skip("no committed precision check")
    paired.main([str(bf16_runs), str(fp32_runs), "--cells-from", str(bf16_runs), "--out", str(tmp_path)])
    for name in ("table.md", "table.csv"):
        committed = (repo / "results/precision" / name).read_text()
        assert committed == (tmp_path / name).read_text(), (
            f"results/precision/{name} is stale: rerun jal.precision_report")
