"""How much faster is our training step than the reference implementation's? `python -m jal.bench`.

    python -m jal.bench                                  # cnn8 / CIFAR-10 / JAL-CE; cuda if present, else cpu
    python -m jal.bench --device cuda --model resnet34   # the CIFAR-100 protocol (crop, flip, rotation 20)
    python -m jal.bench --device cuda --full-run         # also time a whole 120-epoch run through jal.train
    python -m jal.bench --fusion 1,4                     # also 1 and 4 runs fused: aggregate images/s
    python -m jal.bench --device cuda --matrix --fusion 1,4,8   # also every fp32/tf32/bf16 x compile off/on
                                                         # x 1/4/8 fused variant (runs/hour, peak memory)

In one process, on the same data, config, model, batch size and number of steps, it trains two ways:
  reference: what the paper's public code does: a torch Dataset of PIL images through torchvision transforms,
             a DataLoader with worker processes, fp32 NCHW, the L1 penalty as a Python sum over the
             parameters added to the loss, and `loss.item()` every step;
  ours:      the code `python -m jal.train` runs: jal.step.train_steps over uint8 images on the device,
             batched augmentation, channels_last, precision "auto" (bf16 autocast on CUDA and on a CPU with
             bf16 hardware, fp32 on other CPUs: jal.device.choose_precision).
Warm-up steps are excluded; the timed steps end with a device sync. A second pass cuts each pipeline's step
into phases with a sync at each: data_bookkeeping (the batch, and the previous step's bookkeeping: the
reference's loss.item(), our running sums on the device), forward_backward (forward, loss, backward, L1,
clip), optimizer (the SGD step). Ours is timed by hooks on its own model and optimiser (a forward pre-hook,
optimizer step pre- and post-hooks), so the breakdown runs jal.train's step itself.
The reference pipeline itself is jal/reference_pipeline.py; the timing (syncs, phases, memory) jal/timing.py.
The report is printed and written atomically to <out>/<device>.json. On a CPU it also times ours in the
other precision, so the report has both, and says which one `trainer.precision=auto` picks on this CPU and why
(`cpu_precisions`).

Precisions of ours: fp32 = trainer.precision=fp32 as jal.train runs it (PyTorch's defaults: cuDNN may use
TF32 for convolutions, matmuls stay fp32), tf32 = the same with TF32 for matmuls too, bf16 = autocast.
Fused: K runs (seeds seed, seed + 1, ...) trained as one model, as jal.train.train_fusion trains them; K = 1
is a run alone. --fusion measures each K in --precision; --matrix every --precisions x --compiles x --fusion
variant. For each: images/s of all members together, runs/hour and the peak memory.

The data is the real dataset (<data_dir>/<name>.npz, data_dir = $JAL_DATA_DIR or `data`) when present,
else synthetic images of the same shape (the report says which): images/s does not depend on pixel values.
"""

import argparse
import contextlib
import os
import platform
import shlex
import sys
import tempfile
import time
from functools import partial
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig

from jal.data import ImageData, channel_stats, epoch_generator, images_to_device, load_dataset, synthetic_dataset
from jal.device import choose_precision, device_name, set_determinism
from jal.experiment import choose
from jal.reference_pipeline import build_reference, reference_breakdown, run_reference
from jal.run import step_settings
from jal.step import Fusion, Learner, TrainingData, batch_starts, train_steps
from jal.timing import PHASES, PhaseTimer, count_host_syncs, images_per_second, peak_memory_mb, reset_peak_memory, sync
from jal.train import train
from jal.util import atomic_write_json, compose_run

COMPILES = {"off": False, "false": False, "on": True, "true": True, "reduce-overhead": "reduce-overhead",
            "max-autotune": "max-autotune"}  # --compile/--compiles values -> trainer.compile
MODEL_DATASET = {"cnn8": "cifar10", "resnet34": "cifar100"}  # each backbone's protocol (docs/protocol.md section 1)
SYNTHETIC_MAX_IMAGES = 10_000  # a stand-in only needs enough images for the steps, not a whole CIFAR


# ---------------------------------------------------------------------------------------------------
# Config and data


def compose_config(args, precision: str | None = None, compile=None, extra: tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m jal.train` would compose for these options (precision and compile: args' unless
    given), with Hydra's runtime set."""
    precision = args.precision if precision is None else precision
    compile = args.compile if compile is None else compile
    overrides = [f"dataset={args.dataset}", f"model={args.model}", f"loss={args.loss}", f"trainer.device={args.device}",
                 f"trainer.precision={'fp32' if precision == 'tf32' else precision}",  # tf32: see tf32_matmuls
                 f"trainer.compile={compile_value(compile)}", *extra]
    if args.batch_size:
        overrides.append(f"trainer.batch_size={args.batch_size}")
    return compose_run(overrides)


def compile_value(compile) -> str:
    """trainer.compile as an override: false, true or a torch.compile mode."""
    return str(compile).lower() if isinstance(compile, bool) else compile


@contextlib.contextmanager
def tf32_matmuls(precision: str):
    """Precision "tf32": TF32 for matmuls as well as cuDNN's convolutions while inside; the others keep
    PyTorch's defaults. Yields the flags in force (no effect on a CPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def load_images(cfg: DictConfig, images_needed: int) -> tuple[ImageData, str, str]:
    """(data, "real" | "synthetic", description): the real dataset when its npz is there (this never
    downloads), else synthetic images."""
    path = Path(cfg.data_dir) / f"{cfg.dataset.name}.npz"
    if path.exists():
        data = load_dataset(cfg.dataset.name, cfg.data_dir, num_classes=cfg.dataset.num_classes)
        return data, "real", f"real {cfg.dataset.name} ({len(data.y_train)} training images, {path.name})"
    n = min(SYNTHETIC_MAX_IMAGES, max(images_needed, 2 * cfg.trainer.batch_size))
    data = synthetic_dataset(n, 2, cfg.dataset.num_classes)
    return data, "synthetic", f"synthetic ({n} random images; no {path.name} in the data folder)"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps jal.step.train_steps takes in one epoch."""
    return len(batch_starts(n_train, batch_size))


def warmup_steps(requested: int, epoch_steps: int, device: torch.device, compile) -> int:
    """Untimed steps before timing. On CUDA, or compiled, at least one whole epoch: an epoch ends with a
    smaller batch (50,000 = 390 x 128 + 80), and the first batch of a new size autotunes cuDNN or recompiles,
    which cost 10 s inside the timed steps on an H200 when the warm-up ended before it."""
    return max(requested, epoch_steps) if device.type == "cuda" or compile else requested


def images_per_run(cfg: DictConfig) -> int:
    """Training images of one whole run of the protocol (epochs x training set)."""
    return cfg.trainer.epochs * (cfg.dataset.subset or cfg.dataset.train_size)


# ---------------------------------------------------------------------------------------------------
# (b) Ours: K runs fused as jal.train.train_fusion fuses them (K = 1: a run alone), jal.step.train_steps;
# then each measured ((a) the reference: jal/reference_pipeline.py)


def build_fusion(cfg: DictConfig, data: ImageData, device: torch.device, k: int = 1) -> SimpleNamespace:
    """K runs of `cfg` (seeds seed, seed + 1, ...), their models, losses, SGD and device data as jal.train
    sets them up (no label noise), fused; K = 1 trains the plain model with its own SGD, as a run alone."""
    members, settings = [], step_settings(cfg)
    for i in range(k):
        torch.manual_seed(cfg.seed + i)
        members.append(Learner.build(settings, cfg.model, cfg.loss, device))
    labels = torch.from_numpy(data.y_train).to(device).expand(k, -1)
    rows = torch.arange(labels.shape[1], device=device).expand(k, -1)
    training = TrainingData(images_to_device(data.x_train, device), rows, labels, labels,
                            channel_stats(cfg.dataset.mean, cfg.dataset.std, device))
    return SimpleNamespace(fusion=Fusion(members), settings=settings, data=training, device=device, k=k, epoch=0,
                           steps_per_epoch=steps_per_epoch(labels.shape[1], cfg.trainer.batch_size))


def run_fusion(fused: SimpleNamespace, cfg: DictConfig, precision: str, steps: int) -> int:
    """`steps` steps through jal.step.train_steps, one epoch (and epoch generators) after another as
    jal.train trains; returns the number of images trained on, all members together."""
    images, n_train, batch_size = 0, fused.data.rows.shape[1], cfg.trainer.batch_size
    while steps > 0:
        n = min(steps, fused.steps_per_epoch)
        generators = [epoch_generator(cfg.seed + i, fused.epoch, fused.device) for i in range(fused.k)]
        train_steps(fused.fusion, fused.settings, precision, fused.data, generators, max_steps=n)
        images += fused.k * min(n * batch_size, n_train)
        fused.epoch, steps = fused.epoch + 1, steps - n
    return images


def ours_breakdown(fused: SimpleNamespace, cfg: DictConfig, precision: str, steps: int) -> dict:
    """jal.step.train_steps in phases, marked by hooks on a run alone's model and optimiser: its forward
    pre-hook ends data_bookkeeping, the SGD's step pre-hook forward_backward, its post-hook optimizer."""
    steps = min(steps, fused.steps_per_epoch)
    timer, member = PhaseTimer(fused.device), fused.fusion.members[0]
    hooks = [member.step_model.register_forward_pre_hook(lambda *_: timer.mark("data_bookkeeping")),
             fused.fusion.optimizer.register_step_pre_hook(lambda *_: timer.mark("forward_backward")),
             fused.fusion.optimizer.register_step_post_hook(lambda *_: timer.mark("optimizer"))]
    try:
        timer.start()
        run_fusion(fused, cfg, precision, steps)
        timer.mark("data_bookkeeping")  # the last step's running sums
    finally:
        for hook in hooks:
            hook.remove()
    return timer.summary(steps)


def measure_ours(args, data: ImageData, precision: str, compile, k: int = 1, details: bool = False) -> dict:
    """K runs of ours fused (K = 1: a run alone) in one precision, compiled or not: images/s of all members
    together after a warm-up (which includes compiling), runs/hour and peak memory; with details, also the
    step breakdown and the synchronising CUDA calls per step."""
    cfg = compose_config(args, precision, compile)
    device, trains_in, _ = choose(cfg)
    set_determinism(device, cfg.trainer.deterministic)
    with tf32_matmuls(precision) as flags:
        reset_peak_memory(device)
        started = time.perf_counter()
        fused = build_fusion(cfg, data, device, k)
        run_steps = partial(run_fusion, fused, cfg, trains_in)
        run_steps(warmup_steps(args.warmup, fused.steps_per_epoch, device, compile))
        sync(device)
        warmup_seconds = time.perf_counter() - started
        ips, seconds = images_per_second(run_steps, args.steps, 0, device)
        result = {"precision": precision if precision == "tf32" else trains_in, "compile": compile,
                  "fused": k, "images_per_second": ips, "seconds": seconds, "steps": args.steps,
                  "warmup_seconds": warmup_seconds, "runs_per_hour": 3600 * ips / images_per_run(cfg),
                  "run_training_seconds": k * images_per_run(cfg) / ips, **flags}
        if details:
            result["breakdown"] = ours_breakdown(fused, cfg, trains_in, args.breakdown_steps)
            sync_steps = min(4, fused.steps_per_epoch)
            syncs = count_host_syncs(partial(run_steps, sync_steps), device)
            result["host_syncs_per_step"] = None if syncs is None else syncs / sync_steps
        result["peak_memory_mb"] = peak_memory_mb(device)
    return result


def measure_reference(args, cfg: DictConfig, data: ImageData, device: torch.device) -> dict:
    reset_peak_memory(device)
    warmup = warmup_steps(args.warmup, steps_per_epoch(len(data.y_train), cfg.trainer.batch_size), device, args.compile)
    ref = build_reference(cfg, data, device, args.workers)
    ips, seconds = images_per_second(partial(run_reference, ref), args.steps, warmup, device)
    breakdown = reference_breakdown(ref, args.breakdown_steps)
    del ref  # shuts the DataLoader's workers down before ours runs
    return {"images_per_second": ips, "seconds": seconds, "warmup": warmup, "breakdown": breakdown,
            "peak_memory_mb": peak_memory_mb(device)}


def measure_variants(args, data: ImageData, axes: list[tuple]) -> list[dict]:
    """measure_ours for each (precision, compile, K); one that fails (a compile error, out of memory) is
    recorded with its error and leaves the others measured."""
    rows = []
    for precision, compile, k in axes:
        label = f"ours {precision}, compile={compile_value(compile)}, {k} fused"
        try:
            rows.append(measure_ours(args, data, precision, compile, k))
            print(f"{label}: {rows[-1]['images_per_second']:.0f} images/s all together, "
                  f"{rows[-1]['runs_per_hour']:.2f} runs/hour", flush=True)
        except Exception as err:  # noqa: BLE001 - reported in the variant's row
            rows.append({"precision": precision, "compile": compile, "fused": k,
                         "error": f"{type(err).__name__}: {err}"[:500]})
            print(f"{label}: failed: {rows[-1]['error']}", flush=True)
    return rows


def cpu_precisions(args, data: ImageData, result: dict) -> dict:
    """On a CPU: ours in fp32 and in bf16 (the precision just measured is reused, the other timed the same
    way), each against the reference, and the precision trainer.precision=auto picks here, with its reason."""
    auto, reason = choose_precision("auto", torch.device("cpu"))
    measured = {result["precision"]: result["ours_images_per_second"]}
    for precision in ("fp32", "bf16"):
        if precision not in measured:
            measured[precision] = measure_ours(args, data, precision, args.compile)["images_per_second"]
            print(f"ours ({precision}): {measured[precision]:.0f} images/s", flush=True)
    reference = result["reference_images_per_second"]
    return {"fp32_images_per_second": measured["fp32"], "bf16_images_per_second": measured["bf16"],
            "fp32_speedup": measured["fp32"] / reference, "bf16_speedup": measured["bf16"] / reference,
            "bf16_over_fp32": measured["bf16"] / measured["fp32"],
            "auto": auto, "auto_reason": reason}


def time_full_run(args, extra: tuple[str, ...] = ()) -> dict:
    """CUDA: wall time of one complete run through jal.train.train (all epochs, evaluation, checkpoints)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(args, extra=("logger=none", "trainer.progress=false", f"out_root={tmp}", *extra))
        started = time.perf_counter()
        result = train(cfg, Path(tmp) / "run")
        seconds = time.perf_counter() - started
    return {"full_run_seconds": seconds, "full_run_epochs": result.epochs,
            "full_run_last_test_acc": result.last_test_acc,
            "full_run_train_images_per_second": result.images_per_second}


# ---------------------------------------------------------------------------------------------------
# Report and command line


def print_report(r: dict) -> None:
    print(f"\nJAL benchmark: {r['model']} / {r['dataset']} / {r['loss']}, batch {r['batch_size']}, "
          f"{r['steps']} timed steps after {r['warmup']} warm-up, {r['device']} ({r['device_name']})")
    print(f"data: {r['data_description']}")
    rows = {"reference": "reference (PIL + DataLoader, fp32)", "ours": f"ours (on device, {r['precision']})"}
    print(f"{'':36s}{'images/s':>10s}{'ms/step':>10s}{'peak MB':>10s}")
    for name, label in rows.items():
        ips = r[name + "_images_per_second"]
        print(f"{label:36s}{ips:>10.0f}{1000 * r['batch_size'] / ips:>10.2f}{r['peak_memory_mb'][name]:>10.0f}")
    print(f"speedup: {r['speedup']:.2f}x   (peak memory: {r['peak_memory_kind']})")
    print(f"\nstep breakdown, ms (% of step), a sync after each phase, over {r['breakdown']['ours']['steps']} steps "
          "(data_bookkeeping: the batch and the previous step's bookkeeping):")
    print(f"{'':36s}" + "".join(f"{p:>19s}" for p in PHASES))
    for name, label in rows.items():
        b = r["breakdown"][name]
        print(f"{label:36s}" + "".join(f"{b[p + '_ms']:>11.2f} ({b[p + '_pct']:3.0f}%)" for p in PHASES))
    if "cpu_precisions" in r:
        c = r["cpu_precisions"]
        print(f"\nours on this CPU: fp32 {c['fp32_images_per_second']:.0f} images/s ({c['fp32_speedup']:.2f}x the "
              f"reference), bf16 {c['bf16_images_per_second']:.0f} images/s ({c['bf16_speedup']:.2f}x); "
              f"bf16/fp32 {c['bf16_over_fp32']:.2f}x")
        print(f"trainer.precision=auto trains in {c['auto']} here ({c['auto_reason']})")
    if r.get("ours_host_syncs_per_step") is not None:
        print(f"ours: {r['ours_host_syncs_per_step']:.1f} synchronising CUDA calls per step")
    if "full_run_seconds" in r:
        print(f"a whole {r['full_run_epochs']}-epoch run through jal.train.train: {r['full_run_seconds'] / 60:.1f} min")
    measured = r.get("matrix", {}).get("variants") or r.get("fusion")
    if measured:
        print(f"\n{'ours':34s}{'images/s':>10s}{'runs/h':>8s}{'peak MB':>9s}{'warm-up s':>11s}  (images/s: all fused)")
        for v in measured:
            label = f"{v['precision']}, compile={compile_value(v['compile'])}, {v['fused']} fused"
            if "error" in v:
                print(f"{label:34s} failed: {v['error'][:90]}")
                continue
            print(f"{label:34s}{v['images_per_second']:>10.0f}{v['runs_per_hour']:>8.2f}{v['peak_memory_mb']:>9.0f}"
                  f"{v['warmup_seconds']:>11.1f}")
    if best := r.get("matrix", {}).get("best"):
        print(f"most runs per hour: {best['precision']}, compile={compile_value(best['compile'])}, "
              f"{best['fused']} fused ({best['runs_per_hour']:.2f})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jal.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=tuple(MODEL_DATASET), default="cnn8")
    parser.add_argument("--dataset", choices=("cifar10", "cifar100"), default=None,
                        help="protocol and data; default: the model's (cnn8: cifar10, resnet34: cifar100)")
    parser.add_argument("--loss", default="jal_ce", help="a config name in configs/loss (default: jal_ce)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32", "tf32"), default="auto",
                        help="ours (the reference is fp32): auto = bf16 on CUDA and on a CPU with bf16 "
                        "hardware (amx_bf16 or avx512_bf16 in its flags), else fp32")
    parser.add_argument("--compile", nargs="?", const="true", default="false", choices=COMPILES,
                        help="ours through torch.compile (on; or a mode: reduce-overhead = CUDA graphs)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps each (cuda: 300, cpu: 30)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (cuda: 30, cpu: 3)")
    parser.add_argument("--breakdown-steps", type=int, default=None, help="default: min(20, steps)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's (128)")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (2)")
    parser.add_argument("--out", default="results/bench", help="folder for <device>.json")
    parser.add_argument("--full-run", action="store_true", help="cuda: also time a whole training run")
    parser.add_argument("--fusion", default="", help="also K runs fused (jal.train.train_fusion) for each K, "
                        "e.g. 1,4: aggregate images/s, runs/hour, peak memory; with --matrix, its fusion axis")
    parser.add_argument("--matrix", action="store_true", help="also every --precisions x --compiles x --fusion "
                        "variant (--fusion default: 1)")
    parser.add_argument("--precisions", default="fp32,tf32,bf16", help="--matrix: precisions of ours")
    parser.add_argument("--compiles", default="off,on", help="--matrix: torch.compile off, on or both")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or MODEL_DATASET[args.model]
    on_cuda = args.device == "cuda"
    args.steps = args.steps if args.steps is not None else 300 if on_cuda else 30
    args.warmup = args.warmup if args.warmup is not None else 30 if on_cuda else 3
    args.breakdown_steps = args.breakdown_steps if args.breakdown_steps is not None else min(20, args.steps)
    if args.steps < 1 or args.warmup < 0 or args.breakdown_steps < 1:
        parser.error("--steps and --breakdown-steps must be at least 1, --warmup at least 0")
    if on_cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.full_run and not on_cuda:
        parser.error("--full-run times a whole GPU run: use it with --device cuda")
    args.compile, args.precisions = COMPILES[args.compile], args.precisions.split(",")
    args.compiles = [COMPILES.get(c) for c in args.compiles.split(",")]
    args.fusion = [int(k) for k in args.fusion.split(",") if k]
    if not set(args.precisions) <= {"fp32", "tf32", "bf16"} or None in args.compiles or min(args.fusion, default=1) < 1:
        parser.error(f"--precisions from fp32,tf32,bf16; --compiles from {','.join(COMPILES)}; --fusion: numbers "
                     "of runs fused, each at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cfg = compose_config(args)
    device = choose(cfg)[0]
    needed = cfg.trainer.batch_size * (args.warmup + args.steps + args.breakdown_steps)
    data, source, description = load_images(cfg, needed)
    print(f"data: {description}", flush=True)

    # (a) the reference, then (b) ours: the same config, data, batch size and number of steps
    ref = measure_reference(args, cfg, data, device)
    print(f"reference: {ref['images_per_second']:.0f} images/s", flush=True)
    ours = measure_ours(args, data, args.precision, args.compile, details=True)
    print(f"ours: {ours['images_per_second']:.0f} images/s", flush=True)
    result = {
        "reference_images_per_second": ref["images_per_second"], "ours_images_per_second": ours["images_per_second"],
        "speedup": ours["images_per_second"] / ref["images_per_second"], "reference_seconds": ref["seconds"],
        "ours_seconds": ours["seconds"], "device": device.type, "device_name": device_name(device),
        "model": args.model, "dataset": cfg.dataset.name, "loss": args.loss, "batch_size": cfg.trainer.batch_size,
        "precision": ours["precision"], "reference_precision": "fp32", "compile": bool(cfg.trainer.compile),
        "channels_last": bool(cfg.trainer.channels_last), "l1": cfg.optim.l1, "steps": args.steps,
        "warmup": ref["warmup"], "workers": args.workers, "data_source": source, "data_description": description,
        "train_images": len(data.y_train), "breakdown": {"reference": ref["breakdown"], "ours": ours["breakdown"]},
        "breakdown_phases": list(PHASES),
        "peak_memory_mb": {"reference": ref["peak_memory_mb"], "ours": ours["peak_memory_mb"]},
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "process peak RSS (ru_maxrss), cumulative: the reference ran first",
        "ours_host_syncs_per_step": ours["host_syncs_per_step"],
        "ours_runs_per_hour": ours["runs_per_hour"],  # training alone (no evaluation), one run at a time
        "matmul_allow_tf32": ours["matmul_allow_tf32"], "cudnn_allow_tf32": ours["cudnn_allow_tf32"],
        "torch_version": torch.__version__, "cuda_version": torch.version.cuda, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python_version": platform.python_version(),
        "command": shlex.join(["python", "-m", "jal.bench", *argv]),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.type == "cpu":
        result["cpu_precisions"] = cpu_precisions(args, data, result)
    if args.full_run:
        if source != "real":
            raise SystemExit(f"error: --full-run needs the real data: {description}")
        result.update(time_full_run(args))
    if args.matrix:
        rows = measure_variants(args, data, list(product(args.precisions, args.compiles, args.fusion or [1])))
        best = max((v for v in rows if "error" not in v), key=lambda v: v["runs_per_hour"], default=None)
        result["matrix"] = {"variants": rows, "best": best and {k: best[k] for k in
                                                                ("precision", "compile", "fused", "runs_per_hour")}}
    elif args.fusion:
        result["fusion"] = measure_variants(args, data, [(args.precision, args.compile, k) for k in args.fusion])

    print_report(result)
    path = Path(args.out) / f"{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
