"""The CUDA self-check: `python -m jal.gpu_check` (`make gpu-check`), a few minutes on one GPU.

    python -m jal.gpu_check                 # the checks, then the GPU benchmark (jal.bench --matrix:
                                            # fp32/tf32/bf16 x compile off/reduce-overhead x 1/2/4/8 fused)
    python -m jal.gpu_check --no-bench      # the checks only

Needs PyTorch and Hydra only (no pytest, no make, no package index). Each check is a plain
function of the device, so tests/test_cuda.py runs the same functions under pytest (marked `cuda`) and
on tiny runs on the CPU:
  determinism  two short runs with one seed: identical? If not, by how much, and with trainer.deterministic
  resume       paused after epoch 1 (trainer.stop_at) and continued == uninterrupted, bit for bit
  bf16         bf16 autocast against fp32: loss values on the same batch, for several losses
  host_sync    nothing in jal.train's training epoch or evaluation waits for the host: CUDA's sync debug
               mode set to "error"
               (on the CPU: no Tensor read back to Python, by a torch function mode)
The report is printed and written atomically to <out>/gpu_check.json; the exit status is 1 if a check failed.
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from jal import train as jal_train
from jal.data import channel_stats, normalize
from jal.device import device_name
from jal.experiment import choose
from jal.record import Status
from jal.run import step_settings
from jal.run_dir import CHECKPOINT, load_checkpoint
from jal.step import build_training, evaluate, train_steps
from jal.util import atomic_write_json, compose_run

LOSSES = ("ce", "jal_ce", "nce_rce", "anl_ce", "jal_fl")  # plain, L1 + AMSE, APL, NNCE + L1, focal
BF16_TOLERANCE = 0.03  # relative difference of a loss value under bf16 autocast vs fp32 (8-bit mantissa)
TIMINGS = ("images_per_second", "seconds")  # the history fields that are measurements, not training


def short_run(device: str, out_root: Path, *extra: str, size: int = 2048):
    """The config of a short synthetic run (CIFAR-shaped images, cnn8, JAL-CE with 40% symmetric noise)."""
    overrides = ["dataset=synthetic", f"dataset.train_size={size}", f"dataset.test_size={max(32, size // 4)}",
                 "loss=jal_ce", "noise=symmetric", "noise.rate=0.4", "trainer.epochs=2", "logger=none",
                 "trainer.progress=false", f"trainer.device={device}", f"out_root={out_root}", *extra]
    given = {override.partition("=")[0]: override for override in overrides}  # an extra replaces a base setting
    return compose_run(list(given.values()))


def compare_runs(a, a_dir: Path, b, b_dir: Path) -> dict:
    """How far two finished runs are apart: history (timings aside) and final weights."""
    history_diff = 0.0
    for ha, hb in zip(a.history, b.history):
        for key in ha.keys() - set(TIMINGS):
            if isinstance(ha[key], (int, float)) and isinstance(hb[key], (int, float)):
                history_diff = max(history_diff, abs(ha[key] - hb[key]))
            elif ha[key] != hb[key]:
                history_diff = float("inf")
    weights = [load_checkpoint(d / CHECKPOINT)["model"] for d in (a_dir, b_dir)]
    weight_diff = max(float((weights[0][k].double() - weights[1][k].double()).abs().max()) for k in weights[0])
    same_history = [{k: v for k, v in h.items() if k not in TIMINGS} for h in a.history] == \
        [{k: v for k, v in h.items() if k not in TIMINGS} for h in b.history]
    return {"identical": same_history and weight_diff == 0.0, "max_history_diff": history_diff,
            "max_weight_diff": weight_diff, "last_test_acc": [a.last_test_acc, b.last_test_acc]}


@contextlib.contextmanager
def global_determinism_restored():
    """trainer.deterministic sets process-wide flags: put them back for the checks and benchmark after."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def check_determinism(device: str, work: Path, size: int = 2048) -> dict:
    """Two runs with one seed, default settings; if they differ, two more with trainer.deterministic=true.
    Passes when the default runs, or else the deterministic ones, are identical."""
    report = {}
    with global_determinism_restored():
        for mode, extra in (("default", ()), ("deterministic", ("trainer.deterministic=true",))):
            runs = []
            for i in range(2):
                cfg = short_run(device, work / f"determinism_{mode}_{i}", *extra, size=size)
                run_dir = work / f"determinism_{mode}_{i}" / "run"
                runs.append((jal_train.train(cfg, run_dir), run_dir))
            report[mode] = compare_runs(*runs[0], *runs[1])
            if report[mode]["identical"]:
                break
    report["passed"] = any(r["identical"] for r in report.values())
    return report


def check_resume(device: str, work: Path, size: int = 2048) -> dict:
    """A run paused after epoch 1 (trainer.pause_after=1) and started again ends exactly as
    the same run uninterrupted. On CUDA with trainer.deterministic, so that only resuming could tell them apart."""
    deterministic = [f"trainer.deterministic={str(device == 'cuda').lower()}"]
    cfg = short_run(device, work / "resume", "trainer.epochs=3", *deterministic, size=size)
    with global_determinism_restored():
        uninterrupted = jal_train.train(cfg, work / "resume" / "uninterrupted")
        cfg.trainer.pause_after = 1  # the run pauses at the end of epoch 1
        paused = jal_train.train(cfg, work / "resume" / "paused")
        cfg.trainer.pause_after = None
        continued = jal_train.train(cfg, work / "resume" / "paused")
        report = compare_runs(uninterrupted, work / "resume" / "uninterrupted", continued, work / "resume" / "paused")
        report.update(paused_status=paused.status.value, paused_epoch=paused.epoch)
        report["passed"] = report["identical"] and paused.status == Status.PAUSED and paused.epoch == 1
        return report


def check_bf16(device: str, work: Path, batch_size: int = 128, losses=LOSSES) -> dict:
    """Loss values of one batch through the freshly initialised cnn8, in fp32 and under bf16 autocast (the
    loss outside autocast, as jal.step.train_step computes it)."""
    report = {"tolerance": BF16_TOLERANCE, "losses": {}}
    for loss_name in losses:
        cfg = short_run(device, work / "bf16", f"loss={loss_name}", f"trainer.batch_size={batch_size}", size=64)
        dev = torch.device(device)
        torch.manual_seed(0)
        model, _, criterion, _, _ = build_training(step_settings(cfg), cfg.model, cfg.loss, dev)
        images = torch.randint(0, 256, (batch_size, 3, 32, 32), generator=torch.Generator().manual_seed(1))
        stats = channel_stats(cfg.dataset.mean, cfg.dataset.std, dev)
        images = normalize(images.to(dev, torch.uint8), stats, cfg.trainer.channels_last)
        targets = torch.randint(0, cfg.dataset.num_classes, (batch_size,), generator=torch.Generator().manual_seed(2))
        targets = targets.to(dev)
        values = {}
        for precision, bf16 in (("fp32", False), ("bf16", True)):
            with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                logits = model(images)
            values[precision] = float(criterion(logits, targets))
        rel = abs(values["bf16"] - values["fp32"]) / max(abs(values["fp32"]), 1e-12)
        report["losses"][loss_name] = {**values, "relative_difference": rel}
    report["passed"] = all(v["relative_difference"] <= BF16_TOLERANCE for v in report["losses"].values())
    return report


# Tensor methods that hand a value back to Python, i.e. wait for the device (on CUDA: a host sync).
HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy",
              "masked_select", "unique"}


class HostReads(TorchFunctionMode):
    """Records the torch calls that read a tensor back to the host; boolean-mask indexing counts too (its
    result's size depends on the data). The CPU stand-in for CUDA's sync debug mode."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        index = args[1] if name in ("__getitem__", "__setitem__") and len(args) > 1 else None
        if name in HOST_READS or isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def check_host_sync(device: str, work: Path, size: int = 2048) -> dict:
    """One epoch of jal.step.train_steps and an evaluation, after a warm-up of both (cuDNN autotuning, lazy
    initialisation), with every host read trapped: CUDA's sync debug mode "error" on CUDA, HostReads on the CPU."""
    cfg = short_run(device, work / "sync", size=size)
    dev = torch.device(device)
    from jal.bench import build_fusion  # the training objects as jal.train sets them up
    from jal.data import epoch_generator, synthetic_dataset

    ours = build_fusion(cfg, synthetic_dataset(size, 2, cfg.dataset.num_classes), dev)
    precision, settings = choose(cfg)[1], ours.settings

    def epoch(i):  # an epoch of training, then an evaluation (on training images: any will do)
        data = ours.data
        sums = train_steps(ours.fusion, settings, precision, data, [epoch_generator(cfg.seed, i, dev)])
        correct = evaluate(ours.fusion, data.x_train, data.y_noisy[0], data.stats, settings, precision)
        return torch.cat([sums.flatten(), correct.float()])

    epoch(0)
    report = {"mode": "torch.cuda.set_sync_debug_mode('error')" if dev.type == "cuda" else "HostReads"}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.set_sync_debug_mode("error")
        try:
            sums = epoch(1)
            report["error"] = None
        except RuntimeError as err:  # the first synchronising call, with where it came from
            report["error"] = "".join(traceback.format_exception_only(type(err), err)).strip()
            sums = None
        finally:
            torch.cuda.set_sync_debug_mode("default")
        report["host_reads"] = [] if report["error"] is None else [report["error"]]
    else:
        with HostReads() as reads:
            sums = epoch(1)
        report["host_reads"] = reads.calls
    report["sums_finite"] = sums is not None and bool(torch.isfinite(sums).all())  # read once, after the epoch
    report["passed"] = not report["host_reads"] and report["sums_finite"]
    return report


CHECKS = {"determinism": check_determinism, "resume": check_resume, "bf16": check_bf16,
          "host_sync": check_host_sync}


def run_checks(device: str, work: Path, names=tuple(CHECKS), size: int = 2048) -> dict:
    """The named checks, each in its own try: one failing check still lets the others report."""
    report = {}
    for name in names:
        started = time.perf_counter()
        try:
            sized = {"batch_size": min(size, 128)} if name == "bf16" else {"size": size}
            report[name] = CHECKS[name](device, work / name, **sized)
        except Exception as err:  # noqa: BLE001 - a crash is a failed check, reported with the others
            report[name] = {"passed": False, "error": f"{type(err).__name__}: {err}"}
        report[name]["seconds"] = time.perf_counter() - started
        print(f"{name:12s} {'ok' if report[name]['passed'] else 'FAILED'}  "
              f"{json.dumps({k: v for k, v in report[name].items() if k != 'passed'}, default=str)[:400]}",
              flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jal.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu runs the same checks on the CPU")
    parser.add_argument("--out", default="results/bench", help="folder for gpu_check.json (and cuda.json)")
    parser.add_argument("--no-bench", action="store_true", help="the checks only")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"a subset of {','.join(CHECKS)}")
    parser.add_argument("--size", type=int, default=2048, help="training images of the short runs")
    args = parser.parse_args(argv)
    names = args.checks.split(",")
    if not set(names) <= set(CHECKS) or args.size < 1:
        parser.error(f"--checks from {','.join(CHECKS)}; --size at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here: run make gpu-check on a GPU host (or --device cpu)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        checks = run_checks(args.device, Path(tmp), names, args.size)
    report = {"device": args.device, "device_name": device_name(torch.device(args.device)),
              "torch_version": torch.__version__, "cuda_version": torch.version.cuda,
              "cudnn_version": torch.backends.cudnn.version() if args.device == "cuda" else None,
              "passed": all(c["passed"] for c in checks.values()), "checks": checks,
              "seconds": time.perf_counter() - started,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gpu_check.json", json.loads(json.dumps(report, default=float)))
    print(f"checks {'passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s; "
          f"wrote {out / 'gpu_check.json'}", flush=True)
    if not args.no_bench:
        from jal import bench

        # the paper preset's precision (fp32) as the headline figure; compiled = with CUDA graphs
        bench.main(["--device", args.device, "--precision", "fp32", "--matrix", "--precisions", "fp32,tf32,bf16",
                    "--compiles", "off,reduce-overhead", "--fusion", "1,2,4,8", "--steps", "200", "--warmup", "20",
                    "--out", str(out)])
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
