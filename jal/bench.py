"""How much faster is our training step than the reference implementation's? `python -m jal.bench`.

    python -m jal.bench                                  # cnn8 / CIFAR-10 / JAL-CE; cuda if present, else cpu
    python -m jal.bench --device cuda --model resnet34   # the CIFAR-100 protocol (crop, flip, rotation 20)
    python -m jal.bench --device cuda --full-run         # also time a whole 120-epoch run through jal.train
    python -m jal.bench --device cuda --concurrent 4     # also: 4 copies of our pipeline sharing the GPU
    python -m jal.bench --fusion 1,4                     # also 1 and 4 runs fused: aggregate images/s
    python -m jal.bench --device cuda --precision fp32 --matrix   # also fp32/tf32/bf16 x compile off/on,
                                                         # and 1/2/4/8 concurrent runs (runs/hour)

In one process, on the same data, config, model, batch size and number of steps, it trains two ways:
  reference: what the paper's public code does: a torch Dataset of PIL images through torchvision transforms,
             a DataLoader with worker processes, fp32 NCHW, the L1 penalty as a Python sum over the
             parameters added to the loss, and `loss.item()` every step;
  ours:      exactly the code `python -m jal.train` runs: jal.train.train_epoch over uint8 images on the
             device, batched augmentation, channels_last, precision "auto" (bf16 autocast on CUDA and on a
             CPU with bf16 hardware, fp32 on other CPUs: jal.train.choose_precision).
Warm-up steps are excluded; the timed steps end with a device sync. A second, instrumented pass cuts each
pipeline's step into phases (data / forward_backward / optimizer / bookkeeping) with a sync after each.
The report is printed and written atomically to <out>/<device>.json. On a CPU it also times ours in the
other precision, so the report has both, and says which one `trainer.precision=auto` picks on this CPU and why
(`cpu_precisions`).

Precisions of ours: fp32 = trainer.precision=fp32 as jal.train runs it (PyTorch's defaults: cuDNN may use
TF32 for convolutions, matmuls stay fp32), tf32 = the same with TF32 for matmuls too, bf16 = autocast.
--matrix adds every --precisions x --compiles variant of ours (images/s, the training time of a whole run)
and --copies concurrent copies of the first variant (aggregate runs/hour: how many runs to put on one GPU).

The data is the real dataset (<data_dir>/<name>.npz, data_dir = $JAL_DATA_DIR or `data`) when present,
else synthetic images of the same shape (the report says which): images/s does not depend on pixel values.
"""

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from jal.data import (
    ImageData,
    channel_stats,
    epoch_generator,
    images_to_device,
    load_dataset,
    synthetic_dataset,
)
from jal.train import (
    CONFIG_DIR,
    Fusion,
    TrainingData,
    atomic_write_json,
    batch_starts,
    build_training,
    choose_precision,
    device_name,
    resolve_device,
    train,
    train_epoch,
    train_step,
    training_batch,
)

PHASES = ("data", "forward_backward", "optimizer", "bookkeeping")
COMPILES = {"off": False, "false": False, "on": True, "true": True, "reduce-overhead": "reduce-overhead",
            "max-autotune": "max-autotune"}  # --compile/--compiles values -> trainer.compile
MODEL_DATASET = {"cnn8": "cifar10", "resnet34": "cifar100"}  # each backbone's protocol (docs/protocol.md section 1)
SYNTHETIC_MAX_IMAGES = 10_000  # a stand-in only needs enough images for the steps, not a whole CIFAR


# ---------------------------------------------------------------------------------------------------
# Config and data


def compose_config(args, extra: tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m jal.train` would compose for these options, with Hydra's runtime set so that
    `${hydra:...}` interpolations (run_name) resolve."""
    precision = "fp32" if args.precision == "tf32" else args.precision  # tf32: a backend flag, see use_tf32
    overrides = [f"dataset={args.dataset}", f"model={args.model}", f"loss={args.loss}",
                 f"trainer.device={args.device}", f"trainer.precision={precision}",
                 f"trainer.compile={compile_value(args.compile)}", *extra]
    if args.batch_size:
        overrides.append(f"trainer.batch_size={args.batch_size}")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def compile_value(compile) -> str:
    """trainer.compile as an override: false, true or a torch.compile mode."""
    return str(compile).lower() if isinstance(compile, bool) else compile


def load_images(cfg: DictConfig, images_needed: int) -> tuple[ImageData, str, str]:
    """(data, "real" | "synthetic", description): the real dataset when its npz is there (this never
    downloads), else synthetic images."""
    path = Path(cfg.data_dir) / f"{cfg.dataset.name}.npz"
    if path.exists():
        data = load_dataset(cfg.dataset.name, cfg.data_dir, num_classes=cfg.dataset.num_classes)
        return data, "real", f"real {cfg.dataset.name} ({len(data.y_train)} training images, {path})"
    n = min(SYNTHETIC_MAX_IMAGES, max(images_needed, 2 * cfg.trainer.batch_size))
    data = synthetic_dataset(n, 2, cfg.dataset.num_classes)
    return data, "synthetic", f"synthetic ({n} random images; {path} not found)"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps jal.train.train_epoch takes in one epoch."""
    return len(batch_starts(n_train, batch_size))


def warmup_steps(requested: int, epoch_steps: int, device: torch.device, compile) -> int:
    """Untimed steps before timing. On CUDA, or compiled, at least one whole epoch: an epoch ends with a
    smaller batch (50,000 = 390 x 128 + 80), and the first batch of a new size autotunes cuDNN or recompiles,
    which cost 10 s inside the timed steps on the H200 (2026-11-26) when the warm-up ended before it."""
    return max(requested, epoch_steps) if device.type == "cuda" or compile else requested


# ---------------------------------------------------------------------------------------------------
# Timing helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def use_tf32(precision: str) -> dict:
    """Precision "tf32": TF32 for matmuls as well as cuDNN's convolutions; the others keep PyTorch's defaults.
    Returns the flags in force (no effect on the CPU)."""
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


class PhaseTimer:
    """Wall time per phase of a step; mark(phase) waits for the device first, so time lands where spent."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, dict.fromkeys(PHASES, 0.0)

    def start(self) -> None:
        sync(self.device)
        self.last = time.perf_counter()

    def mark(self, phase: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now

    def summary(self, steps: int) -> dict:
        total = sum(self.seconds.values())
        ms = {f"{p}_ms": 1000 * s / steps for p, s in self.seconds.items()}
        pct = {f"{p}_pct": 100 * s / total if total else 0.0 for p, s in self.seconds.items()}
        return {**ms, **pct, "step_ms": 1000 * total / steps, "steps": steps}


class NoTimer:
    """For the timed run: no syncs between phases."""

    def mark(self, phase: str) -> None:
        pass


NO_TIMER = NoTimer()


def images_per_second(run_steps, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """(images/s, seconds) of `run_steps(steps)` (which returns how many images it trained on), after
    `run_steps(warmup)` (cuDNN autotuning, allocator, torch.compile, DataLoader workers starting)."""
    if warmup:
        run_steps(warmup)
    sync(device)
    started = time.perf_counter()
    images = run_steps(steps)
    sync(device)
    seconds = time.perf_counter() - started
    return images / seconds, seconds


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset; on CPU this process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------------
# (a) The reference pipeline: PIL + torchvision transforms + DataLoader, fp32, L1 as a Python sum


class PILImages(torch.utils.data.Dataset):
    """uint8 HWC arrays served one PIL image at a time, as torchvision.datasets.CIFAR10 does."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference_transform(cfg: DictConfig):
    from torchvision import transforms

    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if cfg.dataset.rotation > 0:  # the CIFAR-100 protocol
        steps.append(transforms.RandomRotation(cfg.dataset.rotation))
    steps += [transforms.ToTensor(), transforms.Normalize(list(cfg.dataset.mean), list(cfg.dataset.std))]
    return transforms.Compose(steps)


def reference_l1_penalty(model: torch.nn.Module, strength: float) -> torch.Tensor:
    """The reference's L1 term, added to the loss before backward: a graph over every parameter each step."""
    return strength * sum(p.abs().sum() for p in model.parameters())


def build_reference(cfg: DictConfig, data: ImageData, device: torch.device, workers: int) -> SimpleNamespace:
    torch.manual_seed(cfg.seed)
    model = hydra.utils.instantiate(cfg.model).to(device)  # NCHW, fp32
    loader = torch.utils.data.DataLoader(
        PILImages(data.x_train, data.y_train, reference_transform(cfg)), batch_size=cfg.trainer.batch_size,
        shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)

    def batches():  # a fresh iterator (and fresh worker processes) each epoch, as a `for` loop per epoch
        while True:
            yield from loader

    return SimpleNamespace(model=model, criterion=hydra.utils.instantiate(cfg.loss), optimizer=optimizer,
                           batches=batches(), device=device, l1=cfg.optim.l1, grad_clip=cfg.optim.grad_clip,
                           total_loss=0.0)


def reference_step(ref: SimpleNamespace, timer=NO_TIMER) -> int:
    """One step of the reference training loop; returns the batch size."""
    images, labels = next(ref.batches)
    images, labels = images.to(ref.device), labels.to(ref.device)
    timer.mark("data")
    ref.model.train()
    ref.model.zero_grad()
    ref.optimizer.zero_grad()
    loss = ref.criterion(ref.model(images), labels)
    if ref.l1 > 0:
        loss = loss + reference_l1_penalty(ref.model, ref.l1)
    loss.backward()
    timer.mark("forward_backward")
    torch.nn.utils.clip_grad_norm_(ref.model.parameters(), ref.grad_clip)
    ref.optimizer.step()
    timer.mark("optimizer")
    ref.total_loss += loss.item()  # the reference logs the epoch's loss: a host sync every step
    timer.mark("bookkeeping")
    return len(labels)


def run_reference(ref: SimpleNamespace, steps: int) -> int:
    return sum(reference_step(ref) for _ in range(steps))


def reference_breakdown(ref: SimpleNamespace, steps: int) -> dict:
    timer = PhaseTimer(ref.device)
    for _ in range(steps):
        timer.start()
        reference_step(ref, timer)
    return timer.summary(steps)


# ---------------------------------------------------------------------------------------------------
# (b) Ours: the data on the device, jal.train.train_epoch


def build_ours(cfg: DictConfig, data: ImageData, device: torch.device) -> SimpleNamespace:
    """Model, loss, optimiser and device data as jal.train.train sets them up (no label noise)."""
    torch.manual_seed(cfg.seed)
    model, step_model, criterion, optimizer, scheduler = build_training(cfg, device)
    labels = torch.from_numpy(data.y_train).to(device)
    x_train, stats = images_to_device(data.x_train, device), channel_stats(cfg.dataset.mean, cfg.dataset.std, device)
    rows = torch.arange(len(labels), device=device)[None]
    member = SimpleNamespace(cfg=cfg, model=model, step_model=step_model, criterion=criterion, optimizer=optimizer,
                             scheduler=scheduler)
    return SimpleNamespace(
        model=model, step_model=step_model, criterion=criterion, optimizer=optimizer, fusion=Fusion([member]),
        data=TrainingData(x_train, rows, labels[None], labels[None], stats), device=device, x_train=x_train,
        labels=labels, epoch=0, stats=stats, steps_per_epoch=steps_per_epoch(len(labels), cfg.trainer.batch_size),
    )


def run_ours(ours: SimpleNamespace, cfg: DictConfig, bf16: bool, steps: int) -> int:
    """`steps` steps through jal.train.train_epoch, one epoch (and epoch generator) after another as
    jal.train.train does; returns the number of images trained on."""
    images, n_train, batch_size = 0, len(ours.labels), cfg.trainer.batch_size
    while steps > 0:
        n = min(steps, ours.steps_per_epoch)
        generator = epoch_generator(cfg.seed, ours.epoch, ours.device)
        train_epoch(ours.fusion, cfg, bf16, ours.data, [generator], max_steps=n)
        images += min(n * batch_size, n_train)
        ours.epoch, steps = ours.epoch + 1, steps - n
    return images


def ours_breakdown(ours: SimpleNamespace, cfg: DictConfig, bf16: bool, steps: int) -> dict:
    """jal.train's step in phases, a sync after each: training_batch (data), train_step up to the SGD step
    (forward, loss, backward, L1, clip), the SGD step (marked by an optimizer pre-step hook)."""
    steps = min(steps, ours.steps_per_epoch)
    generator = epoch_generator(cfg.seed, ours.epoch, ours.device)
    ours.epoch += 1
    ours.step_model.train()
    order = torch.randperm(len(ours.labels), device=ours.device, generator=generator)
    timer = PhaseTimer(ours.device)
    hook = ours.optimizer.register_step_pre_hook(lambda *_: timer.mark("forward_backward"))
    try:
        for i in batch_starts(len(ours.labels), cfg.trainer.batch_size)[:steps]:
            timer.start()
            idx = order[i : i + cfg.trainer.batch_size]
            images = training_batch(ours.x_train, idx, generator, ours.stats, cfg)
            timer.mark("data")
            train_step(ours.fusion, [images], [ours.labels[idx]], bf16)
            timer.mark("optimizer")
    finally:
        hook.remove()
    return timer.summary(steps)


def build_fused(cfg: DictConfig, data: ImageData, device: torch.device, k: int) -> SimpleNamespace:
    """K runs of `cfg` (seeds seed, seed + 1, ...) fused as jal.train.train_fusion fuses them (no label noise)."""
    members = []
    for i in range(k):
        torch.manual_seed(cfg.seed + i)
        model, step_model, criterion, optimizer, scheduler = build_training(cfg, device)
        members.append(SimpleNamespace(cfg=cfg, model=model, step_model=step_model, criterion=criterion,
                                       optimizer=optimizer, scheduler=scheduler))
    labels = torch.from_numpy(data.y_train).to(device).expand(k, -1)
    rows = torch.arange(labels.shape[1], device=device).expand(k, -1)
    stats = channel_stats(cfg.dataset.mean, cfg.dataset.std, device)
    return SimpleNamespace(fusion=Fusion(members), data=TrainingData(images_to_device(data.x_train, device), rows,
                           labels, labels, stats), device=device, epoch=0, k=k,
                           steps_per_epoch=steps_per_epoch(labels.shape[1], cfg.trainer.batch_size))


def run_fused(fused: SimpleNamespace, cfg: DictConfig, bf16: bool, steps: int) -> int:
    """`steps` fused steps through jal.train.train_epoch; returns the images trained on, all members together."""
    images, n_train, batch_size = 0, fused.data.rows.shape[1], cfg.trainer.batch_size
    while steps > 0:
        n = min(steps, fused.steps_per_epoch)
        generators = [epoch_generator(cfg.seed + i, fused.epoch, fused.device) for i in range(fused.k)]
        train_epoch(fused.fusion, cfg, bf16, fused.data, generators, max_steps=n)
        images += fused.k * min(n * batch_size, n_train)
        fused.epoch, steps = fused.epoch + 1, steps - n
    return images


def measure_fusion(args, data: ImageData, cfg: DictConfig) -> list[dict]:
    """Aggregate images/s (all members together) and runs/hour of K fused runs, for each K of --fusion."""
    device, bf16 = resolve_device(cfg)
    rows = []
    for k in args.fusion:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        fused = build_fused(cfg, data, device, k)
        warmup = warmup_steps(args.warmup, fused.steps_per_epoch, device, args.compile)
        ips, seconds = images_per_second(partial(run_fused, fused, cfg, bf16), args.steps, warmup, device)
        rows.append({"fused": k, "aggregate_images_per_second": ips, "seconds": seconds, "steps": args.steps,
                     "runs_per_hour": 3600 * ips / images_per_run(cfg), "peak_memory_mb": peak_memory_mb(device)})
        print(f"fused K={k}: {ips:.0f} images/s all members together ({rows[-1]['runs_per_hour']:.2f} runs/hour)",
              flush=True)
        del fused
    return rows


def count_host_syncs(fn, device: torch.device) -> int | None:
    """How many synchronising CUDA calls `fn()` makes (torch's sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------------
# CUDA only: a whole training run, and several runs sharing one GPU


def time_full_run(args, extra: tuple[str, ...] = ()) -> dict:
    """Wall time of one complete run through jal.train.train (all epochs, evaluation, checkpoints)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(args, ("logger=none", "trainer.progress=false", f"out_root={tmp}", *extra))
        started = time.perf_counter()
        result = train(cfg, Path(tmp) / "run")
        seconds = time.perf_counter() - started
    return {"full_run_seconds": seconds, "full_run_epochs": result["epochs"],
            "full_run_last_test_acc": result["last_test_acc"],
            "full_run_train_images_per_second": result["images_per_second"]}


def worker(args) -> None:
    """One `--concurrent` copy: warm up, print READY, wait for a line on stdin, time, print RESULT."""
    cfg = compose_config(args)
    device, bf16 = resolve_device(cfg)
    use_tf32(args.precision)
    data, _, _ = load_images(cfg, cfg.trainer.batch_size * (args.steps + args.warmup))
    ours = build_ours(cfg, data, device)
    run_ours(ours, cfg, bf16, warmup_steps(args.warmup, ours.steps_per_epoch, device, args.compile))
    sync(device)
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.time()  # wall clock: comparable across processes
    images = run_ours(ours, cfg, bf16, args.steps)
    sync(device)
    print("RESULT " + json.dumps({"images": images, "start": started, "end": time.time()}), flush=True)


def time_concurrent(args, cfg: DictConfig, copies: int) -> dict:
    """Aggregate images/s of `copies` processes each running our pipeline on the same device, timed over
    one window: they start together once every copy has warmed up."""
    command = [sys.executable, "-m", "jal.bench", "--worker", "--device", args.device, "--model", args.model,
               "--dataset", args.dataset, "--loss", args.loss, "--precision", args.precision,
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--compile", compile_value(args.compile)] if args.compile else []
    command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    # The copies import this checkout's jal and read the same data, whatever the installed package or cwd.
    repo = str(CONFIG_DIR.parent)
    env = {**os.environ, "JAL_DATA_DIR": str(Path(cfg.data_dir).resolve()),
           "PYTHONPATH": os.pathsep.join(filter(None, (repo, os.environ.get("PYTHONPATH"))))}
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(copies)]
    try:
        for p in procs:  # wait until every copy has warmed up
            while (line := p.stdout.readline()) and line.strip() != "READY":
                pass
            if not line:
                raise RuntimeError(f"a concurrent copy exited during warm-up: {shlex.join(command)}")
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=3600)
            lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            if p.returncode or not lines:
                raise RuntimeError(f"a concurrent copy failed (exit {p.returncode}): {shlex.join(command)}")
            results.append(json.loads(lines[-1].removeprefix("RESULT ")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return concurrency_summary(results, args.steps, images_per_run(cfg))


def images_per_run(cfg: DictConfig) -> int:
    """Training images of one whole run of the protocol (epochs x training set)."""
    return cfg.trainer.epochs * (cfg.dataset.subset or cfg.dataset.train_size)


def concurrency_summary(results: list[dict], steps: int, run_images: int) -> dict:
    """Copies that ran side by side (each: images, wall-clock start, end): their aggregate images/s over the
    window from the first start to the last end, and the whole runs per hour that makes (training only)."""
    window = max(r["end"] for r in results) - min(r["start"] for r in results)
    aggregate = sum(r["images"] for r in results) / window
    return {"copies": len(results), "steps_per_copy": steps, "aggregate_images_per_second": aggregate,
            "per_run_images_per_second": [r["images"] / (r["end"] - r["start"]) for r in results],
            "runs_per_hour": 3600 * aggregate / run_images}


def measure_variant(args, data: ImageData, precision: str, compile: bool) -> dict:
    """Ours in one precision, compiled or not: images/s after a warm-up (which includes compiling)."""
    variant = argparse.Namespace(**{**vars(args), "precision": precision, "compile": compile})
    cfg = compose_config(variant)
    device, bf16 = resolve_device(cfg)
    saved = use_tf32("default")
    flags = use_tf32(precision)
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        ours = build_ours(cfg, data, device)
        run_ours(ours, cfg, bf16, warmup_steps(args.warmup, ours.steps_per_epoch, device, compile))
        sync(device)
        warmup_seconds = time.perf_counter() - started
        ips, seconds = images_per_second(partial(run_ours, ours, cfg, bf16), args.steps, 0, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]
    return {"precision": precision, "compile": compile, "images_per_second": ips, "seconds": seconds,
            "warmup_seconds": warmup_seconds, "peak_memory_mb": peak_memory_mb(device),
            "run_training_seconds": images_per_run(cfg) / ips, "runs_per_hour": 3600 * ips / images_per_run(cfg),
            **flags}


def cpu_precisions(args, data: ImageData, result: dict) -> dict:
    """On a CPU: ours in fp32 and in bf16 (the precision just measured is reused, the other timed the same
    way), each against the reference, and the precision trainer.precision=auto picks here, with its reason."""
    auto_bf16, reason = choose_precision("auto", torch.device("cpu"))
    measured = {}
    for precision in ("fp32", "bf16"):
        if result["precision"] == precision:
            measured[precision] = result["ours_images_per_second"]
        else:
            measured[precision] = measure_variant(args, data, precision, args.compile)["images_per_second"]
            print(f"ours ({precision}): {measured[precision]:.0f} images/s", flush=True)
    reference = result["reference_images_per_second"]
    return {"fp32_images_per_second": measured["fp32"], "bf16_images_per_second": measured["bf16"],
            "fp32_speedup": measured["fp32"] / reference, "bf16_speedup": measured["bf16"] / reference,
            "bf16_over_fp32": measured["bf16"] / measured["fp32"],
            "auto": "bf16" if auto_bf16 else "fp32", "auto_reason": reason}


def measure_matrix(args, data: ImageData, cfg: DictConfig) -> dict:
    """Every --precisions x --compiles variant of ours, then --copies concurrent copies of the first variant;
    `best_copies` is the number of copies with the most runs per hour."""
    variants = []
    for precision in args.precisions:
        for compile in args.compiles:
            try:
                v = measure_variant(args, data, precision, compile)
            except Exception as err:  # noqa: BLE001 - one variant failing to compile leaves the others measured
                v = {"precision": precision, "compile": compile, "error": f"{type(err).__name__}: {err}"[:500]}
                print(f"ours {precision:5s} compile={compile!s:5s} failed: {v['error']}", flush=True)
                variants.append(v)
                continue
            variants.append(v)
            print(f"ours {precision:5s} compile={compile!s:5s} {v['images_per_second']:>10.0f} images/s "
                  f"(a whole run's training: {v['run_training_seconds']:.0f} s)", flush=True)
    first = argparse.Namespace(**{**vars(args), "precision": args.precisions[0], "compile": args.compiles[0]})
    concurrency = []
    for copies in args.copies:
        concurrency.append(time_concurrent(first, cfg, copies))
        print(f"{copies} concurrent: {concurrency[-1]['runs_per_hour']:.1f} runs/hour", flush=True)
    best = max(concurrency, key=lambda c: c["runs_per_hour"])["copies"] if concurrency else None
    return {"variants": variants, "concurrency": concurrency, "best_copies": best,
            "concurrency_variant": {"precision": first.precision, "compile": first.compile}}


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
        memory = r["peak_memory_mb"][name]
        print(f"{label:36s}{ips:>10.0f}{1000 * r['batch_size'] / ips:>10.2f}{memory:>10.0f}")
    print(f"speedup: {r['speedup']:.2f}x   (peak memory: {r['peak_memory_kind']})")
    steps = r["breakdown"]["ours"]["steps"]
    print(f"\nstep breakdown, ms (% of step), with a sync after each phase, over {steps} steps:")
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
        minutes = r["full_run_seconds"] / 60
        print(f"a whole {r['full_run_epochs']}-epoch run through jal.train.train: {minutes:.1f} min")
    if "matrix" in r:
        m = r["matrix"]
        print(f"\n{'ours':24s}{'images/s':>10s}{'run (s)':>10s}{'warm-up s':>11s}   (run: a whole run's training)")
        for v in m["variants"]:
            label = f"{v['precision']}, compile={compile_value(v['compile'])}"
            if "error" in v:
                print(f"{label:24s} failed: {v['error'][:90]}")
                continue
            print(f"{label:24s}{v['images_per_second']:>10.0f}{v['run_training_seconds']:>10.0f}"
                  f"{v['warmup_seconds']:>11.1f}")
        for c in m["concurrency"]:
            print(f"{c['copies']} concurrent copies: {c['aggregate_images_per_second']:.0f} images/s in all, "
                  f"{c['runs_per_hour']:.1f} runs/hour")
        if m["best_copies"]:
            print(f"most runs per hour with {m['best_copies']} concurrent runs per device")
    if "concurrent" in r:
        c = r["concurrent"]
        print(f"{c['copies']} concurrent copies: {c['aggregate_images_per_second']:.0f} images/s in all, "
              f"{c['runs_per_hour']:.2f} runs/hour (training only)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jal.bench", description=__doc__.split("\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
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
    parser.add_argument("--concurrent", type=int, default=0, metavar="N",
                        help="cuda: also run N copies of our pipeline on the GPU at once, --steps each")
    parser.add_argument("--matrix", action="store_true", help="also every --precisions x --compiles variant, "
                        "and --copies concurrent copies of the first")
    parser.add_argument("--precisions", default="fp32,tf32,bf16", help="--matrix: precisions of ours")
    parser.add_argument("--compiles", default="off,on", help="--matrix: torch.compile off, on or both")
    parser.add_argument("--copies", default="1,2,4,8", help="--matrix: numbers of concurrent copies")
    parser.add_argument("--fusion", default="", help="also K runs fused (jal.train.train_fusion) for each K, "
                        "e.g. 1,4: aggregate images/s and runs/hour")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one --concurrent copy
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
    args.precisions = args.precisions.split(",")
    args.compile = COMPILES[args.compile]
    args.compiles = [COMPILES.get(c) for c in args.compiles.split(",")]
    args.copies = [int(c) for c in args.copies.split(",") if c]
    args.fusion = [int(k) for k in args.fusion.split(",") if k]
    if min(args.fusion, default=1) < 1:
        parser.error("--fusion: numbers of runs fused, each at least 1")
    if not set(args.precisions) <= {"fp32", "tf32", "bf16"} or None in args.compiles or min(args.copies, default=1) < 1:
        parser.error(f"--precisions from fp32,tf32,bf16; --compiles from {','.join(COMPILES)}; --copies positive")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    cfg = compose_config(args)
    device, bf16 = resolve_device(cfg)
    batch_size = cfg.trainer.batch_size
    steps_needed = args.warmup + args.steps + args.breakdown_steps
    data, source, description = load_images(cfg, batch_size * steps_needed)
    print(f"data: {description}", flush=True)

    # (a) the reference, then (b) ours: same config, data, batch size and number of steps.
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = warmup_steps(args.warmup, steps_per_epoch(len(data.y_train), batch_size), device, args.compile)
    ref = build_reference(cfg, data, device, args.workers)
    ref_ips, ref_seconds = images_per_second(partial(run_reference, ref), args.steps, warmup, device)
    ref_phases = reference_breakdown(ref, args.breakdown_steps)
    ref_memory = peak_memory_mb(device)
    del ref  # shuts the DataLoader's workers down before ours runs
    print(f"reference: {ref_ips:.0f} images/s", flush=True)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    tf32_flags = use_tf32(args.precision)  # after the reference, which runs with PyTorch's defaults
    ours = build_ours(cfg, data, device)
    run_steps = partial(run_ours, ours, cfg, bf16)
    ours_ips, ours_seconds = images_per_second(run_steps, args.steps, warmup, device)
    ours_phases = ours_breakdown(ours, cfg, bf16, args.breakdown_steps)
    ours_memory = peak_memory_mb(device)
    sync_steps = min(4, ours.steps_per_epoch)
    syncs = count_host_syncs(partial(run_steps, sync_steps), device)
    del ours
    print(f"ours: {ours_ips:.0f} images/s", flush=True)

    result = {
        "reference_images_per_second": ref_ips, "ours_images_per_second": ours_ips,
        "speedup": ours_ips / ref_ips, "reference_seconds": ref_seconds, "ours_seconds": ours_seconds,
        "device": device.type, "device_name": device_name(device), "model": args.model,
        "dataset": cfg.dataset.name, "loss": args.loss, "batch_size": batch_size,
        "precision": args.precision if args.precision == "tf32" else "bf16" if bf16 else "fp32",
        "reference_precision": "fp32",
        "compile": bool(cfg.trainer.compile), "channels_last": bool(cfg.trainer.channels_last),
        "l1": cfg.optim.l1, "steps": args.steps, "warmup": warmup, "workers": args.workers,
        "data_source": source, "data_description": description, "train_images": len(data.y_train),
        "breakdown": {"reference": ref_phases, "ours": ours_phases},
        "peak_memory_mb": {"reference": ref_memory, "ours": ours_memory},
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "process peak RSS (ru_maxrss), cumulative: the reference ran first",
        "ours_host_syncs_per_step": None if syncs is None else syncs / sync_steps,
        # runs/hour of training alone (no evaluation), one run at a time
        "ours_runs_per_hour": 3600 * ours_ips / images_per_run(cfg), **tf32_flags,
        "torch_version": torch.__version__, "cuda_version": torch.version.cuda, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python_version": platform.python_version(),
        "command": shlex.join([sys.executable, "-m", "jal.bench", *argv]),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.type == "cpu":
        result["cpu_precisions"] = cpu_precisions(args, data, result)
    if args.full_run:
        if source != "real":
            raise SystemExit(f"error: --full-run needs the real data: {description}")
        result.update(time_full_run(args))
    if args.concurrent:
        result["concurrent"] = time_concurrent(args, cfg, args.concurrent)
    if args.matrix:
        result["matrix"] = measure_matrix(args, data, cfg)
    if args.fusion:
        result["fusion"] = measure_fusion(args, data, cfg)

    print_report(result)
    path = Path(args.out) / f"{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)  # temporary file + os.replace
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
