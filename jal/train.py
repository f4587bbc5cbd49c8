"""Train one cell of the paper's tables: `python -m jal.train [hydra overrides]`.

    python -m jal.train dataset=cifar10 loss=jal_ce noise=symmetric noise.rate=0.8
    python -m jal.train -m loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8 seed=123,124,125

Read top to bottom: prepare the data (clean and noisy labels, on the device), build model, loss and
optimiser from the composed config, then train with the whole step on the device, reading metrics back
once per epoch. Each run writes into its directory (a function of its cell, see configs/train.yaml):
result.json (atomic), labels.npz (the noisy labels it trained on) and checkpoint.pt (every epoch, atomic,
the one before kept as checkpoint.prev.pt). Starting a run again resumes from its checkpoint and a finished run
is skipped, but only when the directory holds the same experiment (jal/run_dir.py: run identity, one process
per run, damaged files; trainer.restart=true trains from scratch).

Time-boxed: at the first epoch end past trainer.stop_at (unix seconds), or after SIGTERM/SIGUSR1/SIGUSR2
(SLURM's warning before its time limit, preemption, submitit's signal), the run pauses: checkpoint kept,
result.json status "paused", exit 0. Started again, it continues where it stopped.
"""

if __name__ == "__main__":  # `python -m jal.train`: a wrong setting fails in one line before torch loads
    from jal.config import check_command_line

    check_command_line()

import logging
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from jal import noise as label_noise
from jal.config import ConfigError, check_config, one_line
from jal.data import (
    ImageData,
    atomic_save_npz,
    augment,
    balanced_subset,
    channel_stats,
    epoch_generator,
    images_to_device,
    load_dataset,
    normalize,
)
from jal.losses import AMSE
from jal.run_dir import (
    LABELS,
    RESULT,
    DirectoryConflict,
    RunBusy,
    RunLock,
    atomic_save,
    atomic_write_json,
    check_same,
    fingerprint,
    identity,
    latest_checkpoint,
    move_aside,
    read_record,
    save_checkpoint,
)
from jal.theory import check_amse_a

log = logging.getLogger("jal.train")
# One line per epoch into the run's train.log only (configs/train.yaml routes it to the file handler): a run
# can be followed with `tail -f` while a sweep's console keeps to one line per run.
epoch_log = logging.getLogger("jal.train.epochs")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"  # n/a: not evaluated this epoch, or no corrupted sample


# ---------------------------------------------------------------------------------------------------
# Labels: clean and noisy


def make_labels(cfg: DictConfig, data: ImageData, subset: np.ndarray) -> np.ndarray:
    """The noisy training labels of this run (for the samples in `subset`), drawn from the run's seed."""
    kind, k, seed = cfg.noise.type, cfg.dataset.num_classes, cfg.seed
    clean = data.y_train[subset]
    if kind == "none":
        return clean.copy()
    if kind in ("symmetric", "asymmetric"):
        return label_noise.make_noisy_labels(clean, kind, cfg.noise.rate, k, seed, sampling=cfg.noise.sampling)
    if kind == "instance":
        precomputed = cfg.dataset.name != "synthetic" and cfg.noise.rate in (0.2, 0.4, 0.6)
        if cfg.noise.generate or not precomputed:  # the seeded generator the precomputed sets come from
            features = data.x_train[subset].reshape(len(subset), -1).astype(np.float32) / 255
            return label_noise.generate_instance_labels(features, clean, cfg.noise.rate, k, seed)
        path = Path(cfg.data_dir) / f"{cfg.dataset.name}_idn_labels.npz"
        return label_noise.load_instance_labels(path, cfg.noise.rate, len(data.y_train), k)[subset]
    if kind == "human":
        path = Path(cfg.data_dir) / f"{cfg.dataset.name}n_labels.npz"
        return label_noise.load_human_labels(path, cfg.noise.labels, data.y_train)[subset]
    raise ConfigError(f"unknown noise.type {kind!r}: choose none, symmetric, asymmetric, instance or human")


def amse_warning(cfg: DictConfig, criterion: torch.nn.Module) -> str | None:
    """jal.theory's warning when an AMSE term's `a` is below the asymmetry bound for the configured noise."""
    for module in criterion.modules():
        if isinstance(module, AMSE) and cfg.noise.type in ("symmetric", "asymmetric"):
            return check_amse_a(module.a, cfg.noise.type, cfg.noise.rate, cfg.dataset.num_classes)
    return None


def check_labels(path: Path, noisy: np.ndarray, clean: np.ndarray, subset: np.ndarray) -> None:
    """The labels a run trained on so far must be the ones it draws now (they follow from its config)."""
    try:
        with np.load(path) as stored:
            same = all(np.array_equal(stored[key], value)
                       for key, value in (("noisy", noisy), ("clean", clean), ("indices", subset)))
    except Exception as err:  # a cut or foreign file: zipfile, KeyError, ValueError...
        raise DirectoryConflict(f"{path} is damaged ({type(err).__name__}: {err}): trainer.restart=true moves it "
                                "aside and trains the run from scratch") from None
    if not same:
        raise DirectoryConflict(f"{path} holds other labels than this run draws (another experiment or another "
                                "data file): trainer.restart=true moves it aside and trains the run from scratch")


# ---------------------------------------------------------------------------------------------------
# Small utilities: the config as data, the git commit, W&B


def plain_config(cfg: DictConfig) -> dict:
    """The resolved run config as plain data (without Hydra's own node, present when composed in tests)."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k != "hydra"}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=CONFIG_DIR.parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def start_wandb(cfg: DictConfig, run_dir: Path):
    if cfg.logger.name != "wandb" or os.environ.get("WANDB_MODE") == "disabled":  # e.g. a bare GPU host
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(
        project=cfg.logger.project, entity=cfg.logger.entity, mode=cfg.logger.mode, group=cfg.logger.group,
        tags=list(cfg.logger.tags), name=cfg.run_name, dir=str(run_dir), config=plain_config(cfg),
        id=cfg.run_name.replace("/", "-"), resume="allow", reinit="finish_previous",
    )


# ---------------------------------------------------------------------------------------------------
# Training


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # bf16 hardware: AMX tiles, AVX-512 BF16 dot products


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags as Linux lists them; None where there is no such list (macOS, Windows)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def choose_precision(precision: str, device: torch.device, flags: set[str] | None = None) -> tuple[bool, str]:
    """(bf16, reason): whether trainer.precision means bf16 autocast on `device`, and why, for the record.

    auto = bf16 on CUDA; on a CPU, bf16 only where the CPU's flags name bf16 hardware (BF16_CPU_FLAGS; flags
    default: /proc/cpuinfo's). Read from the flags, not timed: the choice is instant, the same on every run
    of a machine and not swayed by whatever else the cores are doing. Without those units bf16 is emulated
    and slower than fp32 (about 10x on an AVX2-only CPU); with AMX a step is about 3x faster (README, Speed)."""
    if precision != "auto":
        return precision == "bf16", f"trainer.precision={precision}"
    if device.type == "cuda":
        return True, "auto: bf16 autocast on CUDA"
    if device.type != "cpu":
        return False, f"auto: fp32 on {device.type}"
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return False, "auto: fp32, the CPU's flags are unknown here (no /proc/cpuinfo)"
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if found:
        return True, f"auto: bf16 autocast, the CPU has bf16 hardware ({', '.join(found)} in its flags)"
    return False, f"auto: fp32, the CPU has no bf16 hardware (no {' or '.join(BF16_CPU_FLAGS)} in its flags)"


def resolve_device(cfg: DictConfig) -> tuple[torch.device, bool]:
    name = cfg.trainer.device
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)
    bf16, _ = choose_precision(cfg.trainer.precision, device)
    deterministic = cfg.trainer.get("deterministic", False)
    if device.type == "cuda":
        # fixed input shapes: let cuDNN pick its fastest kernels, unless bitwise repeatable runs are asked for
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable results
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on an op with no such kernel
    return device, bf16


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model: records and benchmark figures say which machine made them."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {len(os.sched_getaffinity(0))} cores"
    except (OSError, AttributeError):  # no /proc (macOS) or no sched_getaffinity
        pass
    return platform.processor() or "cpu"


def add_l1_gradient(params: list[torch.Tensor], strength: float) -> None:
    """Add the gradient of strength * sum|theta| (= strength * sign(theta)) to every parameter's gradient.

    The same as adding the penalty to the loss before backward, as the reference does, but in two fused
    foreach ops instead of a Python sum that builds a graph over every parameter each step."""
    grads = [p.grad for p in params]
    torch._foreach_add_(grads, torch._foreach_sign(params), alpha=strength)


def evaluate(model, x: torch.Tensor, y: torch.Tensor, stats, cfg: DictConfig, bf16: bool) -> torch.Tensor:
    """Number of correct test predictions, left on the device."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    batch = cfg.trainer.eval_batch_size
    with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        for i in range(0, len(x), batch):
            images = normalize(x[i : i + batch], stats, cfg.trainer.channels_last)
            correct += (model(images).argmax(1) == y[i : i + batch]).sum()
    return correct


def training_batch(x_train, idx, generator: torch.Generator, stats, cfg: DictConfig) -> torch.Tensor:
    """The augmented, normalised images of one training batch, made on the device."""
    images = augment(x_train[idx], generator, cfg.dataset.rotation)
    return normalize(images, stats, cfg.trainer.channels_last)


def train_step(model, criterion, optimizer, params, images, targets, cfg: DictConfig, bf16: bool):
    """Forward, loss, backward, L1 gradient, clip, SGD step; returns the logits and the loss (on the device)."""
    with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
        logits = model(images)
    loss = criterion(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.l1 > 0:
        add_l1_gradient(params, cfg.optim.l1)
    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip, foreach=True)
    optimizer.step()
    return logits, loss


def batch_starts(n_train: int, batch_size: int) -> range:
    """Where each batch of an epoch starts; a last batch of a single image is dropped (BatchNorm cannot
    train on one sample)."""
    n_used = n_train - 1 if n_train % batch_size == 1 else n_train
    return range(0, n_used, batch_size)


def train_epoch(model, criterion, optimizer, params, cfg: DictConfig, bf16: bool, x_train, y_noisy, y_clean,
                is_corrupted, stats, generator: torch.Generator, max_steps: int | None = None) -> torch.Tensor:
    """One pass over the training set in the order drawn from `generator`; returns the epoch's running sums
    (loss, fit to the noisy labels, fit to the clean labels on the clean part, the same on the corrupted part,
    fit to the noisy labels on the corrupted part), left on the device: nothing in the step waits for the host."""
    model.train()
    order = torch.randperm(len(y_noisy), device=y_noisy.device, generator=generator)
    sums = torch.zeros(5, device=y_noisy.device)
    for i in batch_starts(len(y_noisy), cfg.trainer.batch_size)[:max_steps]:
        idx = order[i : i + cfg.trainer.batch_size]
        images = training_batch(x_train, idx, generator, stats, cfg)
        logits, loss = train_step(model, criterion, optimizer, params, images, y_noisy[idx], cfg, bf16)
        with torch.no_grad():
            pred, corrupted = logits.argmax(1), is_corrupted[idx]
            fit_noisy, fit_clean = pred == y_noisy[idx], pred == y_clean[idx]
            sums += torch.stack([loss.detach() * len(idx), fit_noisy.sum(), (fit_clean & ~corrupted).sum(),
                                 (fit_clean & corrupted).sum(), (fit_noisy & corrupted).sum()]).float()
    return sums


def build_training(cfg: DictConfig, device: torch.device):
    """Model, loss, SGD and the cosine schedule, all from the composed config. `step_model` is the model the
    training step and the evaluation call: the model itself, or its torch.compile'd version (sharing its
    parameters; forward and backward compiled, the evaluation's no-grad forward as a second graph)."""
    model = hydra.utils.instantiate(cfg.model).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = hydra.utils.instantiate(cfg.loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.trainer.epochs, eta_min=0.0)
    mode = cfg.trainer.compile  # true, or one of torch.compile's modes (checked by jal.config.TrainerConfig)
    step_model = torch.compile(model, mode=None if mode is True else mode) if mode else model
    return model, step_model, criterion, optimizer, scheduler


# ---------------------------------------------------------------------------------------------------
# Pausing: trainer.stop_at and stop signals


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
stop_signal: int | None = None  # the stop signal this process received; every later run in it pauses too


def request_stop(signum: int, frame=None) -> None:
    """Signal handler: pause at the next epoch end (a sweep's later runs in this process then pause at once)."""
    global stop_signal
    stop_signal = signum


def stop_reason(cfg: DictConfig) -> str | None:
    """Why the run must pause now, if it must: a stop signal, or trainer.stop_at has passed."""
    if stop_signal is not None:
        return signal.Signals(stop_signal).name
    stop_at = cfg.trainer.get("stop_at")
    if stop_at is not None and time.time() >= stop_at:
        return f"trainer.stop_at={stop_at} passed"
    return None


def install_stop_handlers() -> dict:
    """request_stop for STOP_SIGNALS; returns the handlers it replaced (none off the main thread, where
    Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}


def restore_handlers(previous: dict, hand_on: int | None) -> None:
    """Put the replaced handlers back; hand the stop signal received meanwhile on to a launcher's own handler
    (submitit's requeues the job), now that the checkpoint is written."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    handler = previous.get(hand_on)
    if callable(handler) and handler is not request_stop:
        handler(hand_on, None)


def paused_record(cell: dict, epoch: int, epochs: int, reason: str, wall_seconds: float) -> dict:
    """result.json of a paused run: the tables count it as missing, and starting it again continues it."""
    return dict(status="paused", **cell, epoch=epoch, epochs=epochs, reason=reason, wall_seconds=wall_seconds,
                git_commit=git_commit())


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train the run described by `cfg` into `run_dir`; returns its result record (finished or paused).
    A stop signal meanwhile pauses it at the next epoch end."""
    signalled_before, previous = stop_signal, install_stop_handlers()
    try:
        return train_run(cfg, Path(run_dir))
    finally:
        restore_handlers(previous, hand_on=stop_signal if signalled_before is None else None)


class RunDiverged(Exception):
    """A non-finite training loss: the run fails (its record says so), the last good checkpoint stays."""


def train_run(cfg: DictConfig, run_dir: Path) -> dict:
    check_config(cfg)  # before anything is read or written: a wrong setting leaves no record
    try:
        with RunLock(run_dir):  # one process per run, for as long as this one trains it
            return train_locked(cfg, run_dir)
    except RunBusy as busy:
        return dict(status="running elsewhere", reason=str(busy))


def train_locked(cfg: DictConfig, run_dir: Path) -> dict:
    result_path = run_dir / RESULT
    if cfg.trainer.restart and (moved := move_aside(run_dir)):
        log.info("trainer.restart=true: moved %s aside (*.damaged) in %s", ", ".join(moved), run_dir)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)  # one per job when a CPU sweep runs jobs side by side
    device, bf16 = resolve_device(cfg)
    precision_reason = choose_precision(cfg.trainer.precision, device)[1]
    log.info("precision %s (%s)", precision_name(bf16), precision_reason)
    config = plain_config(cfg)
    asked = identity(config, precision_name(bf16))
    # What the directory holds must be this experiment before anything is skipped, resumed or trained.
    record = read_record(run_dir)
    if record is not None:
        check_same(record, asked, result_path)
        if record.get("status") == "finished":
            log.info("%s is finished already: skipping", run_dir)
            return record
    state = latest_checkpoint(run_dir, asked, warn=log.warning)
    if reason := stop_reason(cfg):  # before loading anything: a time-boxed sweep past its end passes in seconds
        log.info("%s not started: %s", run_dir, reason)
        return dict(status="paused", reason=reason, epoch=None)
    atomic_save(run_dir / "config.yaml", lambda tmp: OmegaConf.save(OmegaConf.create(config), tmp), ".yaml")
    torch.manual_seed(cfg.seed)  # model initialisation; data order and augmentation use per-epoch RNGs

    # Data: clean and noisy labels; images and labels on the device.
    k = cfg.dataset.num_classes
    data = load_dataset(cfg.dataset.name, cfg.data_dir, num_classes=k,
                        train_size=cfg.dataset.get("train_size", 256), test_size=cfg.dataset.get("test_size", 128))
    subset = (balanced_subset(data.y_train, cfg.dataset.subset, k, cfg.seed) if cfg.dataset.subset
              else np.arange(len(data.y_train)))
    clean_labels = data.y_train[subset]
    noisy_labels = make_labels(cfg, data, subset)
    summary = label_noise.noise_summary(clean_labels, noisy_labels, k)
    if (run_dir / LABELS).exists():
        check_labels(run_dir / LABELS, noisy_labels, clean_labels, subset)
    else:
        atomic_save_npz(run_dir / LABELS, noisy=noisy_labels, clean=clean_labels, indices=subset)
    x_train = images_to_device(data.x_train[subset], device)
    y_noisy = torch.from_numpy(noisy_labels).to(device)
    y_clean = torch.from_numpy(clean_labels).to(device)
    is_corrupted = y_noisy != y_clean
    test = (balanced_subset(data.y_test, cfg.dataset.test_subset, k, seed=0) if cfg.dataset.get("test_subset")
            else np.arange(len(data.y_test)))  # a fixed test subset only for CPU-sized presets
    x_test, y_test = images_to_device(data.x_test[test], device), torch.from_numpy(data.y_test[test]).to(device)
    n_train, n_corrupted = len(y_noisy), int(is_corrupted.sum())
    stats = channel_stats(cfg.dataset.mean, cfg.dataset.std, device)

    model, step_model, criterion, optimizer, scheduler = build_training(cfg, device)
    criterion.fit_labels(y_noisy)  # losses that read the training labels (NLNL's class weights); most ignore it
    params = list(model.parameters())
    if warning := amse_warning(cfg, criterion):
        log.warning(warning)
    epochs = cfg.trainer.epochs

    history, start_epoch, wall_before = [], 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch, wall_before = state["history"], state["epoch"], state["wall_seconds"]
        log.info("resuming %s from epoch %d", run_dir, start_epoch)

    choices = HydraConfig.get().runtime.choices  # the config names picked: model cnn8, loss jal_ce, ...
    cell = dict(dataset=cfg.dataset.name, model=choices.model, loss=choices.loss, noise_type=cfg.noise.type,
                noise_rate=float(cfg.noise.rate or summary["rate"]), noise_labels=cfg.noise.get("labels"),
                seed=cfg.seed, settings=HydraConfig.get().job.override_dirname)  # what the tables group by
    # Every file of the run says which experiment wrote it (jal/run_dir.py).
    provenance = dict(precision=precision_name(bf16), fingerprint=fingerprint(asked), config=config)
    wandb_run = start_wandb(cfg, run_dir)
    started, epoch = time.perf_counter(), start_epoch
    try:
        progress = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, desc=cfg.run_name,
                        disable=not cfg.trainer.progress, dynamic_ncols=True, file=sys.stderr)
        for epoch in progress:
            if reason := stop_reason(cfg):  # before an epoch = at the last one's end, its checkpoint written
                progress.close()
                log.info("pausing %s after epoch %d: %s", run_dir, epoch, reason)
                result = paused_record(cell, epoch, epochs, reason, wall_before + time.perf_counter() - started)
                atomic_write_json(result_path, result | provenance)
                if wandb_run is not None:
                    wandb_run.finish()
                return result | provenance
            epoch_start = time.perf_counter()
            generator = epoch_generator(cfg.seed, epoch, device)
            criterion.set_generator(generator)  # losses that draw (NLNL) draw from the epoch's stream too
            sums = train_epoch(step_model, criterion, optimizer, params, cfg, bf16, x_train, y_noisy, y_clean,
                               is_corrupted, stats, generator)
            # Once per epoch: read the sums back (the only host-device sync of the epoch's training).
            loss_sum, fit_noisy, fit_clean, clean_corrupted, memorised = sums.tolist()
            if not math.isfinite(loss_sum):
                raise RunDiverged(f"non-finite training loss in epoch {epoch + 1} of {run_dir}: lower optim.lr or "
                                  "check the loss (the last good checkpoint is kept)")
            train_seconds = time.perf_counter() - epoch_start
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            evaluated = (epoch + 1) % cfg.trainer.eval_every == 0 or epoch + 1 == epochs  # the last always
            test_correct = evaluate(step_model, x_test, y_test, stats, cfg, bf16) if evaluated else None

            pct = lambda a, b: 100.0 * a / b if b else None  # None: an empty subset (no noise)
            record = dict(
                epoch=epoch + 1, train_loss=loss_sum / n_train, train_acc_noisy=pct(fit_noisy, n_train),
                train_acc_clean_subset=pct(fit_clean, n_train - n_corrupted),
                train_acc_corrupted_subset=pct(clean_corrupted, n_corrupted),
                train_memorised=pct(memorised, n_corrupted),
                test_acc=pct(int(test_correct), len(y_test)) if evaluated else None,
                lr=lr, images_per_second=n_train / train_seconds, seconds=time.perf_counter() - epoch_start,
            )
            history.append(record)
            epoch_log.info("epoch %d/%d: train loss %.4f, fits its labels %s, memorised %s, test %s, %.0f img/s, %.1fs",
                           epoch + 1, epochs, record["train_loss"], percent(record["train_acc_noisy"]),
                           percent(record["train_memorised"]), percent(record["test_acc"]),
                           record["images_per_second"], record["seconds"])
            progress.set_postfix(test_acc=record["test_acc"], img_s=f"{record['images_per_second']:.0f}")
            if wandb_run is not None:
                wandb_run.log(record, step=epoch + 1)
            save_checkpoint(run_dir, dict(
                model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                history=history, epoch=epoch + 1, wall_seconds=wall_before + time.perf_counter() - started,
                **provenance,
            ))

        test_accs = [h["test_acc"] for h in history if h["test_acc"] is not None]
        result = dict(
            status="finished", **cell, epochs=epochs, subset=cfg.dataset.subset, last_test_acc=test_accs[-1],
            best_test_acc=max(test_accs), realised_noise_rate=summary["rate"],
            noise_transition=np.asarray(summary["transition"]).round(4).tolist(),
            wall_seconds=wall_before + time.perf_counter() - started,
            images_per_second=float(np.mean([h["images_per_second"] for h in history])),
            device=str(device), device_name=device_name(device), git_commit=git_commit(),
            precision_reason=precision_reason, **provenance, history=history,
        )
        atomic_write_json(result_path, result)
        if wandb_run is not None:
            wandb_run.summary.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
            wandb_run.finish()
        return result
    except BaseException as err:
        if isinstance(err, Exception):  # a crash, not an interruption: leave a record the tables can flag
            atomic_write_json(result_path, dict(status="failed", error=f"{type(err).__name__}: {err}", **cell,
                                                epoch=epoch + 1, epochs=epochs, **provenance))
        if wandb_run is not None:
            wandb_run.finish(exit_code=1)  # always close the run, so multirun jobs never merge into one
        raise


# ---------------------------------------------------------------------------------------------------
# Command line


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One run's last-epoch test accuracy (None when it did not finish). A run that cannot train here (a
    wrong setting, a missing file, a directory of another experiment) stops in one line; one that fails or is
    trained elsewhere ends a single run with an error but lets the other runs of a multirun go on."""
    alone = HydraConfig.get().mode != RunMode.MULTIRUN
    try:
        result = train(cfg, HydraConfig.get().runtime.output_dir)
    except (ValueError, FileNotFoundError) as err:  # wrong settings or missing files: one line, no traceback
        raise SystemExit(f"error: {one_line(err)}") from None
    except RunDiverged as err:  # its record says failed; the sweep's summary lists it
        if alone:
            raise SystemExit(f"error: {err}") from None
        log.error("%s", err)
        return None
    if result["status"] == "running elsewhere":
        if alone:
            raise SystemExit(f"not started: {result['reason']}")
        log.warning("not started: %s", result["reason"])
    return result.get("last_test_acc")  # None when paused


if __name__ == "__main__":
    # Hydra prints a failed composition (a wrong type, key or option) over several lines; with
    # HYDRA_FULL_ERROR it raises instead, and the error is printed here as one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Call main from the importable module jal.train, not from __main__: cluster launchers (submitit) pickle
    # the task function, which then travels by reference instead of dragging this whole module along.
    from jal.train import main as importable_main

    try:
        importable_main()
    except (HydraException, OmegaConfBaseException) as err:
        sys.exit(f"error: {one_line(err)}")
