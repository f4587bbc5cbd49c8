"""Train one cell of the paper's tables: `python -m jal.train [hydra overrides]`.

    python -m jal.train dataset=cifar10 loss=jal_ce noise=symmetric noise.rate=0.8
    python -m jal.train -m loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8 seed=123,124,125

Read top to bottom: prepare the data (clean and noisy labels, on the device), build model, loss and
optimiser from the composed config, then train with the whole step on the device, reading metrics back
once per epoch. One training loop trains K runs fused (train_fusion, class Fusion: the K models stacked and
called at once under torch.vmap, each member the same experiment as its run alone); a run alone is a
fusion of one, trained with its plain model and SGD (`python -m jal.fuse` trains a sweep fused).
Each run writes into its directory (a function of its cell, see configs/train.yaml): result.json (atomic),
labels.npz (the noisy labels it trained on) and checkpoint.pt (every epoch, atomic, the one before kept as
checkpoint.prev.pt). Starting a run again resumes from its checkpoint and a finished run
is skipped, but only when the directory holds the same experiment (jal/run_dir.py: run identity, one process
per run, damaged files; trainer.restart=true trains from scratch).

Time-boxed: at the first epoch end past trainer.stop_at (unix seconds), or after SIGTERM/SIGUSR1/SIGUSR2
(SLURM's warning before its time limit, preemption, submitit's signal), the run (a whole fusion) pauses:
checkpoint kept, result.json status "paused", exit 0. Started again, it continues where it stopped.
Ctrl-C stops it at once: a line names the epoch of its last checkpoint, exit status 130; started again, it
resumes from there. A run alone ends with the line `finished: test accuracy 64.32% (epoch 120) -> <its
directory>` (a sweep's runs: their progress lines, jal/sweep.py and jal/fuse.py).
"""

if __name__ == "__main__":  # `python -m jal.train`: a wrong setting fails in one line before torch loads
    from jal.config import check_command_line

    check_command_line()

import contextlib
import copy
import hashlib
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
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
from jal.config import ConfigError, check_config, one_line, settings_name
from jal.data import (
    ImageData,
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
    check_same,
    fingerprint,
    flatten,
    identity,
    latest_checkpoint,
    move_aside,
    read_record,
    save_checkpoint,
)
from jal.theory import check_amse_a
from jal.util import (
    CONFIG_DIR,
    atomic_save,
    atomic_save_npz,
    atomic_write_json,
    device_name,
    git_commit,
    hydra_runtime,
    run_device,
)

log = logging.getLogger("jal.train")
# One line per epoch into the run's train.log only (configs/train.yaml routes it to the file handler): a run
# can be followed with `tail -f` while a sweep's console keeps to one line per run.
epoch_log = logging.getLogger("jal.train.epochs")
# What this command decided about a run that it does not train (finished already, not started, trained by
# another process): the console only, never the run's train.log, which keeps the history of its training
# (a sweep started again leaves a finished run's files as they were).
console = logging.getLogger("jal.train.console")


def about(run_dir) -> dict:
    """The `extra` of a log record about one run (its directory): `python -m jal.fuse` writes each fused
    member's records into that member's own train.log, as Hydra's job logging does for a run alone."""
    return {"run_dir": str(run_dir)}


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"  # n/a: not evaluated this epoch, or no corrupted sample


def ending(record: dict) -> str:
    """How a run ended, in the words of its closing line: a run alone's (main), a sweep's progress line per
    run (jal.sweep.Progress) and a fused sweep's per member (jal.fuse)."""
    status, reason = record["status"], record.get("reason")
    if status == "finished":
        epoch = f" (epoch {record['epochs']})" if record.get("epochs") else ""
        return f"finished: test accuracy {record['last_test_acc']:.2f}%{epoch}"
    if status == "failed":
        return f"failed: {record.get('error', 'no error recorded')}"
    if status == "paused":
        if "epoch" in record and record["epoch"] is None:  # stop_at passed or a stop signal before it started
            return f"not started: {reason}"
        after = f" after epoch {record['epoch']}" if record.get("epoch") is not None else ""
        return f"paused{after}" + (f": {reason}" if reason else "") + "; the same command continues it"
    return status + (f" ({reason})" if reason else "")


def shown_path(path) -> str:
    """A directory as the user can `cd` into it: relative to the working directory when it lies under it."""
    relative = os.path.relpath(path)
    return str(path) if relative == ".." or relative.startswith(".." + os.sep) else relative


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
    for path, module in criterion.named_modules():  # path: "" for the loss itself, "passive" inside JAL-CE
        if isinstance(module, AMSE) and cfg.noise.type in ("symmetric", "asymmetric"):
            key = f"loss.{path}.a" if path else "loss.a"  # the module's path is its config's
            return check_amse_a(module.a, cfg.noise.type, cfg.noise.rate, cfg.dataset.num_classes, key)
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
# The run's config as data, and its W&B run


# Where this machine keeps the data and the runs: not part of the experiment (jal/run_dir.py), and left out of
# the config a record stores, which is read on other machines.
MACHINE_PATHS = ("data_dir", "out_root")


def plain_config(cfg: DictConfig) -> dict:
    """The resolved run config as plain data, as records store it: without Hydra's own node (present when
    composed in tests) and without this machine's paths."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k not in ("hydra", *MACHINE_PATHS)}


WANDB_ID_RESERVED = ":;,#?/'"  # characters W&B refuses in a run id
WANDB_NAME_MAX = 128  # W&B refuses longer run names


def wandb_run_id(run_name: str) -> str:
    """The W&B run id of a run: its name with '/' as '-' (a cell's directory, `cifar10-clean-ce-seed123`); a
    name with other characters W&B refuses (the ',' between two settings) or a long one gets them replaced,
    is cut, and ends in a digest of the whole name, so two experiments never share (and resume) one W&B run."""
    readable = run_name.replace("/", "-")
    if not any(c in WANDB_ID_RESERVED for c in readable) and len(readable) <= WANDB_NAME_MAX:
        return readable
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:10]
    return f"{re.sub(f'[{re.escape(WANDB_ID_RESERVED)}]', '-', readable)[:WANDB_NAME_MAX - 11]}-{digest}"


def start_wandb(cfg: DictConfig, run_dir: Path):
    if cfg.logger.name != "wandb" or os.environ.get("WANDB_MODE") == "disabled":  # e.g. a bare GPU host
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    name = cfg.run_name if len(cfg.run_name) <= WANDB_NAME_MAX else cfg.run_name[:WANDB_NAME_MAX - 1] + "…"
    return wandb.init(
        project=cfg.logger.project, entity=cfg.logger.entity, mode=cfg.logger.mode, group=cfg.logger.group,
        tags=list(cfg.logger.tags), name=name, dir=str(run_dir), config=plain_config(cfg),
        # create_new: a fusion holds one W&B run per member in this process, and one's start must not finish
        # another's (each run is finished by its member, train_locked)
        id=wandb_run_id(cfg.run_name), resume="allow", reinit="create_new",
    )


# ---------------------------------------------------------------------------------------------------
# Device and precision


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


# What each precision trains its parameters and computes in: bf16 = fp32 parameters under bf16 autocast;
# fp64 = float64 everywhere, for checks where float32 rounding, amplified by training, could hide a wrong member.
PARAMETER_DTYPE = {"fp32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}


def choose_precision(precision: str, device: torch.device, flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, reason): what trainer.precision means on `device` (fp32, bf16 autocast or fp64), and why,
    for the record.

    auto = bf16 on CUDA; on a CPU, bf16 only where the CPU's flags name bf16 hardware (BF16_CPU_FLAGS; flags
    default: /proc/cpuinfo's). Read from the flags, not timed: the choice is instant, the same on every run
    of a machine and not swayed by whatever else the cores are doing. Without those units bf16 is emulated
    and slower than fp32 (about 10x on an AVX2-only CPU); with AMX a step is about 3x faster (docs/performance.md)."""
    if precision != "auto":
        return precision, f"trainer.precision={precision}"
    if device.type == "cuda":
        return "bf16", "auto: bf16 autocast on CUDA"
    if device.type != "cpu":
        return "fp32", f"auto: fp32 on {device.type}"
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return "fp32", "auto: fp32, the CPU's flags are unknown here (no /proc/cpuinfo)"
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if found:
        return "bf16", f"auto: bf16 autocast, the CPU has bf16 hardware ({', '.join(found)} in its flags)"
    return "fp32", f"auto: fp32, the CPU has no bf16 hardware (no {' or '.join(BF16_CPU_FLAGS)} in its flags)"


def resolve_device(cfg: DictConfig) -> tuple[torch.device, str]:
    """(device, precision): where the run trains on this machine and in which precision; cuDNN and torch set
    to the determinism the config asks for."""
    device = run_device(cfg.trainer.device)
    precision, _ = choose_precision(cfg.trainer.precision, device)
    deterministic = cfg.trainer.get("deterministic", False)
    if device.type == "cuda":
        # fixed input shapes: let cuDNN pick its fastest kernels, unless bitwise repeatable runs are asked for
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable results
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on an op with no such kernel
    return device, precision


# ---------------------------------------------------------------------------------------------------
# Model, loss and optimiser; K runs' models fused into one


def build_training(cfg: DictConfig, device: torch.device, precision: str = "fp32"):
    """Model (its parameters in the precision's dtype), loss, SGD and the cosine schedule, all from the
    composed config. `step_model` is the model the
    training step and the evaluation call: the model itself, or its torch.compile'd version (sharing its
    parameters; forward and backward compiled, the evaluation's no-grad forward as a second graph)."""
    model = hydra.utils.instantiate(cfg.model).to(device, PARAMETER_DTYPE[precision])
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = hydra.utils.instantiate(cfg.loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.trainer.epochs, eta_min=0.0)
    mode = cfg.trainer.compile  # true, or one of torch.compile's modes (checked by jal.config.TrainerConfig)
    step_model = torch.compile(model, mode=None if mode is True else mode) if mode else model
    return model, step_model, criterion, optimizer, scheduler


def add_l1_gradient(params: list[torch.Tensor], strength: float) -> None:
    """Add the gradient of strength * sum|theta| (= strength * sign(theta)) to every parameter's gradient.

    The same as adding the penalty to the loss before backward, as the reference does, but in two fused
    foreach ops instead of a Python sum that builds a graph over every parameter each step."""
    grads = [p.grad for p in params]
    torch._foreach_add_(grads, torch._foreach_sign(params), alpha=strength)


def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) values shaped to broadcast over a stacked (K, ...) tensor."""
    return values.view(-1, *(1,) * (like.ndim - 1))


class Fusion:
    """The models of K runs trained as one (HFTA: Wang et al., MLSys 2021): parameters and BatchNorm buffers
    stacked along a first member dimension (torch.func.stack_module_state), the network called on all K at
    once by torch.vmap(functional_call). One SGD over the stacked parameters updates each member exactly as
    its own SGD would: the parameters are disjoint slices, and L1, the gradient-norm clip and the L2 weight
    decay are applied per member. Each member keeps the plain model, SGD and schedule a run alone builds;
    `unstack` writes the fused state back into them (to save a checkpoint a run alone can read).

    A fusion of one trains the plain model with its own SGD: exactly the step of a run alone."""

    def __init__(self, members: list):
        self.members = list(members)  # each with cfg, model, step_model, criterion, optimizer, scheduler
        self.stack()

    @property
    def k(self) -> int:
        return len(self.members)

    def stack(self) -> None:
        """The fused state from the members' plain models, SGD states and schedule (all at one epoch)."""
        first = self.members[0]
        if self.k == 1:
            self.optimizer, self.scheduler = first.optimizer, first.scheduler
            self.params = list(first.model.parameters())
            return
        models = [m.model for m in self.members]
        self.base = copy.deepcopy(first.model).to("meta")  # the architecture functional_call runs
        self.stacked, self.buffers = torch.func.stack_module_state(models)
        self.params = list(self.stacked.values())
        group = first.optimizer.param_groups[0]
        self.optimizer = torch.optim.SGD(self.params, lr=group["lr"], momentum=group["momentum"], weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=first.cfg.trainer.epochs)
        self.scheduler.load_state_dict(first.scheduler.state_dict())
        self.optimizer.param_groups[0].update(lr=group["lr"], initial_lr=group["initial_lr"])
        named = [dict(model.named_parameters()) for model in models]
        for name, fused in self.stacked.items():
            momenta = [m.optimizer.state.get(n[name], {}).get("momentum_buffer") for m, n in zip(self.members, named)]
            if all(b is not None for b in momenta):  # none before the first step
                self.optimizer.state[fused]["momentum_buffer"] = torch.stack(momenta)
        like = self.params[0]  # the settings in the parameters' dtype: an fp64 fusion stays fp64
        setting = lambda key: torch.tensor([float(m.cfg.optim[key]) for m in self.members], dtype=like.dtype,
                                           device=like.device)
        self.l1, self.weight_decay, self.max_norm = setting("l1"), setting("weight_decay"), setting("grad_clip")
        self.any_l1 = any(m.cfg.optim.l1 > 0 for m in self.members)
        self.any_weight_decay = any(m.cfg.optim.weight_decay > 0 for m in self.members)
        forward = torch.vmap(self.call)
        mode = first.cfg.trainer.compile  # compiles the fused forward (not tried yet)
        self.fused_forward = torch.compile(forward, mode=None if mode is True else mode) if mode else forward
        self.shared_forward = torch.vmap(self.call, in_dims=(0, 0, None))  # one batch for all (the test set)

    def call(self, params, buffers, x):
        return torch.func.functional_call(self.base, (params, buffers), (x,))

    def unstack(self) -> None:
        """Write the fused parameters, buffers, momenta and schedule back into each member's plain objects."""
        if self.k == 1:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for i, m in enumerate(self.members):
                for name, p in m.model.named_parameters():
                    p.copy_(self.stacked[name][i])
                    momentum = self.optimizer.state.get(self.stacked[name], {}).get("momentum_buffer")
                    if momentum is not None:
                        m.optimizer.state[p]["momentum_buffer"] = momentum[i].clone()
                for name, b in m.model.named_buffers():
                    b.copy_(self.buffers[name][i])
                m.optimizer.param_groups[0]["lr"] = lr
                m.scheduler.load_state_dict(self.scheduler.state_dict())

    def drop(self, members: list) -> None:
        """Take these members out of the fusion (slicing their parameters, buffers and momenta out)."""
        self.unstack()
        self.members = [m for m in self.members if m not in members]
        if self.members:
            self.stack()

    def train(self, mode: bool = True) -> None:
        (self.members[0].step_model if self.k == 1 else self.base).train(mode)

    def __call__(self, images) -> torch.Tensor:
        """Logits (K, B, classes) of each member on its own batch (a list of K), or all on one batch."""
        if self.k == 1:
            return self.members[0].step_model(images[0] if isinstance(images, list) else images)[None]
        if isinstance(images, list):
            return self.fused_forward(self.stacked, self.buffers, torch.stack(images))
        return self.shared_forward(self.stacked, self.buffers, images)

    @torch.no_grad()
    def regularise_and_clip(self) -> None:
        """Per member, as its own run does: its L1 gradient, the clip of its gradients' total norm to its
        grad_clip (torch.nn.utils.clip_grad_norm_'s rule), then its L2 weight decay (SGD's, after the clip)."""
        if self.k == 1:
            cfg = self.members[0].cfg
            if cfg.optim.l1 > 0:
                add_l1_gradient(self.params, cfg.optim.l1)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip, foreach=True)
            return  # the weight decay is the member's own SGD's
        # foreach ops over all parameters at once (a few fused kernels, not three per parameter); `shaped`
        # makes views of a (K,) setting that broadcast over each stacked parameter
        grads = [p.grad for p in self.params]
        shaped = lambda values: [per_member(values, p) for p in self.params]  # noqa: E731
        if self.any_l1:
            torch._foreach_add_(grads, torch._foreach_mul(torch._foreach_sign(self.params), shaped(self.l1)))
        # per-member norms have no foreach op: one reduction per parameter, over all but the member dimension
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (parameters, K)
        coef = (self.max_norm / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, shaped(coef))
        if self.any_weight_decay:
            torch._foreach_add_(grads, torch._foreach_mul(self.params, shaped(self.weight_decay)))


# ---------------------------------------------------------------------------------------------------
# One epoch: the training step on the device, the evaluation


@dataclass
class TrainingData:
    """The members' training sets on the device: the images once, each member's rows of them (its subset)
    and its labels, all (K, n)."""
    x_train: torch.Tensor  # uint8 (N, C, H, W)
    rows: torch.Tensor
    y_noisy: torch.Tensor
    y_clean: torch.Tensor
    stats: tuple

    @property
    def is_corrupted(self) -> torch.Tensor:
        return self.y_noisy != self.y_clean

    def select(self, keep: list[int]) -> "TrainingData":
        return TrainingData(self.x_train, self.rows[keep], self.y_noisy[keep], self.y_clean[keep], self.stats)


def batch_starts(n_train: int, batch_size: int) -> range:
    """Where each batch of an epoch starts; a last batch of a single image is dropped (BatchNorm cannot
    train on one sample)."""
    n_used = n_train - 1 if n_train % batch_size == 1 else n_train
    return range(0, n_used, batch_size)


def training_batch(x_train, idx, generator: torch.Generator, stats, cfg: DictConfig) -> torch.Tensor:
    """The augmented, normalised images of one training batch, made on the device."""
    images = augment(x_train[idx], generator, cfg.dataset.rotation)
    return normalize(images, stats, cfg.trainer.channels_last)


def train_step(fusion: Fusion, images: list, targets: list, precision: str):
    """Forward of all members, each member's loss on its logits, one backward of their sum (the gradients
    stay each member's own), per-member L1 and clip, SGD step; returns logits (K, B, classes) and the losses
    (K,), on the device."""
    with torch.autocast(images[0].device.type, torch.bfloat16, enabled=precision == "bf16"):
        logits = fusion(images)
    losses = [m.criterion(z, y) for m, z, y in zip(fusion.members, logits, targets)]
    fusion.optimizer.zero_grad(set_to_none=True)
    (losses[0] if fusion.k == 1 else torch.stack(losses).sum()).backward()
    fusion.regularise_and_clip()
    fusion.optimizer.step()
    return logits, torch.stack(losses)


def train_epoch(fusion: Fusion, cfg: DictConfig, precision: str, data: TrainingData, generators: list,
                max_steps: int | None = None) -> torch.Tensor:
    """One pass over the training set, each member in the order and with the augmentation drawn from its own
    generator; returns each member's running sums (K, 5): loss, fit to the noisy labels, fit to the clean
    labels on the clean part, the same on the corrupted part, fit to the noisy labels on the corrupted part.
    Left on the device: nothing in the step waits for the host."""
    fusion.train()
    n, batch = data.y_noisy.shape[1], cfg.trainer.batch_size
    orders = [torch.randperm(n, device=data.y_noisy.device, generator=g) for g in generators]
    dtype = fusion.params[0].dtype  # fp32, or fp64: then the losses are summed without float32 rounding
    sums = torch.zeros(fusion.k, 5, dtype=dtype, device=data.y_noisy.device)
    for i in batch_starts(n, batch)[:max_steps]:
        idx = [order[i : i + batch] for order in orders]
        images = [training_batch(data.x_train, rows[ix], g, data.stats, cfg)
                  for rows, ix, g in zip(data.rows, idx, generators)]
        logits, losses = train_step(fusion, images, [y[ix] for y, ix in zip(data.y_noisy, idx)], precision)
        with torch.no_grad():
            idx = torch.stack(idx)
            noisy, clean = data.y_noisy.gather(1, idx), data.y_clean.gather(1, idx)
            pred, corrupted = logits.argmax(-1), noisy != clean
            fit_noisy, fit_clean = pred == noisy, pred == clean
            sums += torch.stack([losses.detach() * idx.shape[1], fit_noisy.sum(1), (fit_clean & ~corrupted).sum(1),
                                 (fit_clean & corrupted).sum(1), (fit_noisy & corrupted).sum(1)], dim=1).to(dtype)
    return sums


def evaluate(fusion: Fusion, x: torch.Tensor, y: torch.Tensor, stats, cfg: DictConfig, precision: str) -> torch.Tensor:
    """Number of correct test predictions of each member (K,), in one fused pass, left on the device."""
    fusion.train(False)
    correct = torch.zeros(fusion.k, dtype=torch.long, device=x.device)
    batch = cfg.trainer.eval_batch_size
    with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16"):
        for i in range(0, len(x), batch):
            images = normalize(x[i : i + batch], stats, cfg.trainer.channels_last)
            correct += (fusion(images).argmax(-1) == y[i : i + batch]).sum(-1)
    return correct


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


# ---------------------------------------------------------------------------------------------------
# The members of a fusion: each a run, prepared under its lock


@dataclass(eq=False)  # members are told apart by identity
class Member:
    """One run of a fusion: what it is, where it writes, what it trains on, its plain model, loss, SGD and
    schedule (exactly as a run alone builds them), and its history."""
    cfg: DictConfig
    run_dir: Path
    name: str
    config: dict
    asked: dict
    precision: str  # fp32, bf16 or fp64 (choose_precision)
    device: torch.device
    state: dict | None  # its checkpoint, None for a new run
    precision_reason: str = ""  # why it trains in this precision (choose_precision), for its record
    cell: dict = None
    provenance: dict = None
    summary: dict = None
    n_train: int = 0
    n_corrupted: int = 0
    history: list = None
    wall_before: float = 0.0
    model: torch.nn.Module = None
    step_model: torch.nn.Module = None
    criterion: torch.nn.Module = None
    optimizer: torch.optim.Optimizer = None
    scheduler: object = None
    wandb_run: object = None
    start_epoch: int = 0  # the epochs its checkpoint had done
    checkpointed: int = 0  # the epoch of its last checkpoint written (an interruption says it)

    def __post_init__(self):
        self.checkpointed = self.state["epoch"] if self.state is not None else 0


def prepare_member(cfg: DictConfig, run_dir: Path) -> "Member | dict":
    """What a run does under its lock before anything trains: restart, the directory's identity, skip a
    finished run, find its checkpoint, write config.yaml, stop when the sweep is stopping. A record when it
    trains no further here, else the Member."""
    result_path = run_dir / RESULT
    with hydra_runtime(cfg):
        config, name = plain_config(cfg), cfg.run_name
    # the run's lines name it by its name (its directory under out_root), not by this machine's path: they
    # go into its train.log, which is committed with its record
    if cfg.trainer.restart and (moved := move_aside(run_dir)):
        log.info("trainer.restart=true: moved %s aside (*.damaged) in %s", ", ".join(moved), name,
                 extra=about(run_dir))
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)  # one per job when a CPU sweep runs jobs side by side
    device, precision = resolve_device(cfg)
    precision_reason = choose_precision(cfg.trainer.precision, device)[1]
    asked = identity(config, precision)
    # What the directory holds must be this experiment before anything is skipped, resumed or trained.
    record = read_record(run_dir)
    if record is not None:
        check_same(record, asked, result_path)
        if record.get("status") == "finished":
            console.info("%s is finished already: skipping", run_dir, extra=about(run_dir))
            return record
    state = latest_checkpoint(run_dir, asked, warn=lambda line: log.warning(line, extra=about(run_dir)))
    if reason := stop_reason(cfg):  # before loading anything: a time-boxed sweep past its end passes in seconds
        console.info("%s not started: %s", run_dir, reason, extra=about(run_dir))
        return dict(status="paused", reason=reason, epoch=None)
    log.info("precision %s (%s)", precision, precision_reason, extra=about(run_dir))
    atomic_save(run_dir / "config.yaml", lambda tmp: OmegaConf.save(OmegaConf.create(config), tmp), ".yaml")
    return Member(cfg, run_dir, name, config, asked, precision, device, state, precision_reason)


def load_training_data(members: list[Member]) -> tuple[TrainingData, torch.Tensor, torch.Tensor]:
    """The training images (once), each member's subset and labels (its labels.npz checked or written), and
    the test set, all on the device."""
    cfg, device = members[0].cfg, members[0].device
    k = cfg.dataset.num_classes
    data = load_dataset(cfg.dataset.name, cfg.data_dir, num_classes=k,
                        train_size=cfg.dataset.get("train_size", 256), test_size=cfg.dataset.get("test_size", 128))
    rows, noisy, clean = [], [], []
    for m in members:
        subset = (balanced_subset(data.y_train, cfg.dataset.subset, k, m.cfg.seed) if cfg.dataset.subset
                  else np.arange(len(data.y_train)))
        clean_labels, noisy_labels = data.y_train[subset], make_labels(m.cfg, data, subset)
        m.summary = label_noise.noise_summary(clean_labels, noisy_labels, k)
        m.n_train, m.n_corrupted = len(subset), int(np.sum(noisy_labels != clean_labels))
        if (m.run_dir / LABELS).exists():
            check_labels(m.run_dir / LABELS, noisy_labels, clean_labels, subset)
        else:
            atomic_save_npz(m.run_dir / LABELS, noisy=noisy_labels, clean=clean_labels, indices=subset)
        rows.append(subset), noisy.append(noisy_labels), clean.append(clean_labels)
    as_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).to(device)
    training = TrainingData(images_to_device(data.x_train, device), as_tensor(rows), as_tensor(noisy),
                            as_tensor(clean), channel_stats(cfg.dataset.mean, cfg.dataset.std, device,
                                                            PARAMETER_DTYPE[members[0].precision]))
    test = (balanced_subset(data.y_test, cfg.dataset.test_subset, k, seed=0) if cfg.dataset.get("test_subset")
            else np.arange(len(data.y_test)))  # a fixed test subset only for CPU-sized presets
    return training, images_to_device(data.x_test[test], device), torch.from_numpy(data.y_test[test]).to(device)


def build_member(m: Member, y_noisy: torch.Tensor) -> None:
    """The member's model (initial weights from its seed), loss, SGD and schedule, as a run alone builds
    them, loaded from its checkpoint when it has one; its cell, provenance and W&B run."""
    cfg = m.cfg
    torch.manual_seed(cfg.seed)  # model initialisation; data order and augmentation use per-epoch RNGs
    m.model, m.step_model, m.criterion, m.optimizer, m.scheduler = build_training(cfg, m.device, m.precision)
    m.criterion.fit_labels(y_noisy)  # losses that read the training labels (NLNL's class weights); most ignore it
    if warning := amse_warning(cfg, m.criterion):
        log.warning(warning, extra=about(m.run_dir))
    m.history = []
    if m.state is not None:
        m.model.load_state_dict(m.state["model"])
        m.optimizer.load_state_dict(m.state["optimizer"])
        m.scheduler.load_state_dict(m.state["scheduler"])
        m.history, m.start_epoch, m.wall_before = m.state["history"], m.state["epoch"], m.state["wall_seconds"]
        log.info("resuming %s from epoch %d", m.name, m.start_epoch, extra=about(m.run_dir))
    m.state = None  # loaded: its memory (a model's worth) is not kept
    with hydra_runtime(cfg) as hydra_cfg:
        choices = hydra_cfg.runtime.choices  # the config names picked: model cnn8, loss jal_ce, ...
        m.cell = dict(dataset=cfg.dataset.name, model=choices.model, loss=choices.loss, noise_type=cfg.noise.type,
                      noise_rate=float(cfg.noise.rate or m.summary["rate"]), noise_labels=cfg.noise.get("labels"),
                      seed=cfg.seed, settings=settings_name(hydra_cfg.job.override_dirname))  # tables group by it
        m.wandb_run = start_wandb(cfg, m.run_dir)
    # Every file of the run says which experiment wrote it (jal/run_dir.py).
    m.provenance = dict(precision=m.precision, fingerprint=fingerprint(m.asked), config=m.config)


# ---------------------------------------------------------------------------------------------------
# The training loop


# The progress bar, whole in 80 columns: a short name, the bar, the epochs, the time and the last test accuracy
# (`jal_ce sym0.8 s123 |####    | 57/120 [12:03<13:20, test 64.32%]`); the run's name and its speed per
# epoch are in its train.log.
BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
NOISE_SHORT = dict(symmetric="sym", asymmetric="asym", instance="inst")


def short_name(cell: dict) -> str:
    """A run's loss, noise and seed, as its progress bar names it: `jal_ce sym0.8 s123`."""
    if cell["noise_type"] == "none":
        noise = "clean"
    elif cell["noise_type"] == "human":
        noise = f"human-{cell['noise_labels']}"
    else:
        noise = f"{NOISE_SHORT[cell['noise_type']]}{cell['noise_rate']:g}"
    return f"{cell['loss']} {noise} s{cell['seed']}"


def bar_postfix(histories: list[list[dict]]) -> str:
    """The last test accuracy evaluated (of a fusion: the range over its members); '' before there is one."""
    accs = [next((h["test_acc"] for h in reversed(history) if h["test_acc"] is not None), None)
            for history in histories]
    accs = [acc for acc in accs if acc is not None]
    if not accs:
        return ""
    low, high = min(accs), max(accs)
    return f"test {high:.2f}%" if low == high else f"test {low:.2f}-{high:.2f}%"


def train_locked(members: list[Member], epoch_hook=None) -> list[dict]:
    """Train the prepared members (their locks held) as one fusion to the end, a pause or their failure."""
    data, x_test, y_test = load_training_data(members)
    for m, y_noisy in zip(members, data.y_noisy):
        build_member(m, y_noisy)
    check_same_epoch(members)
    cfg, precision, fused, results = members[0].cfg, members[0].precision, len(members), {}
    fusion, started = Fusion(members), time.perf_counter()
    epoch, epochs = members[0].start_epoch, cfg.trainer.epochs
    progress = tqdm(range(epoch, epochs), initial=epoch, total=epochs, disable=not cfg.trainer.progress,
                    desc=short_name(members[0].cell) if fused == 1 else f"fusion of {fused}",
                    bar_format=BAR_FORMAT, postfix=bar_postfix([m.history for m in members]) or None,
                    dynamic_ncols=True, file=sys.stderr)
    try:
        for epoch in progress:
            if reason := next(filter(None, (stop_reason(m.cfg) for m in fusion.members)), None):
                progress.close()  # before an epoch = at the last one's end, its checkpoint written
                for m in fusion.members:  # the whole fusion pauses
                    results[m] = end(m, paused_record(m.cell, epoch, epochs, reason, wall(m, started)), fused)
                    log.info("%s %s", m.name, ending(results[m]), extra=about(m.run_dir))
                return [results[m] for m in members]
            epoch_start = time.perf_counter()
            sums = train_members(fusion, cfg, precision, data, epoch)
            if epoch_hook is not None:
                epoch_hook(epoch + 1)
            sums = sums.tolist()  # once per epoch: the only host-device sync of the epoch's training
            if any(not math.isfinite(s[0]) for s in sums):
                sums, data = drop_diverged(fusion, data, sums, epoch, results, fused)
                if not fusion.members:
                    break
            train_seconds = time.perf_counter() - epoch_start
            lr = fusion.optimizer.param_groups[0]["lr"]
            fusion.scheduler.step()
            correct = correct_predictions(fusion, x_test, y_test, data.stats, cfg, precision, epoch)
            fusion.unstack()  # into each member's plain model and SGD: its checkpoint as a run alone saves it
            for m, member_sums, member_correct in zip(fusion.members, sums, correct):
                end_epoch(m, epoch, member_sums, member_correct, len(y_test), lr, train_seconds, epoch_start, started)
            progress.set_postfix_str(bar_postfix([m.history for m in fusion.members]))
        for m in fusion.members:
            results[m] = end(m, finished_record(m, wall(m, started)), fused)
        return [results[m] for m in members]
    except BaseException as err:
        progress.close()  # the lines that follow start on a line of their own
        close_unended(fusion.members, results, err, epoch, epochs, fused)
        raise


def check_same_epoch(members: list[Member]) -> None:
    epochs_at = {m.start_epoch for m in members}
    if len(epochs_at) > 1:
        raise ConfigError(f"runs fused together must be at the same epoch; these are at epochs {sorted(epochs_at)}: "
                          "train them apart, or the ones behind first")


def train_members(fusion: Fusion, cfg: DictConfig, precision: str, data: TrainingData, epoch: int) -> torch.Tensor:
    """One epoch of every member, each in the order, with the augmentation and (for a loss that draws, NLNL)
    the draws of its own epoch's generator; the sums (K, 5) left on the device."""
    generators = [epoch_generator(m.cfg.seed, epoch, m.device) for m in fusion.members]
    for m, generator in zip(fusion.members, generators):
        m.criterion.set_generator(generator)
    return train_epoch(fusion, cfg, precision, data, generators)


def correct_predictions(fusion: Fusion, x_test, y_test, stats, cfg: DictConfig, precision: str, epoch: int) -> list:
    """Each member's correct test predictions in the epochs evaluated (every eval_every, and always the last,
    the reported figure), else None for each."""
    epochs = cfg.trainer.epochs
    if (epoch + 1) % cfg.trainer.eval_every == 0 or epoch + 1 == epochs:
        return evaluate(fusion, x_test, y_test, stats, cfg, precision).tolist()
    return [None] * fusion.k


def close_unended(members: list[Member], results: dict, err: BaseException, epoch: int, epochs: int,
                  fused: int) -> None:
    """After a crash or an interruption, for each member not ended yet: a failed record after a crash (an
    interruption leaves its checkpoint to resume from), and its W&B run closed."""
    for m in members:
        if m in results:
            continue
        if isinstance(err, Exception):  # a crash, not an interruption: leave a record the tables can flag
            atomic_write_json(m.run_dir / RESULT, failed_record(m, err, epoch, epochs) | dict(fused=fused))
        if m.wandb_run is not None:
            m.wandb_run.finish(exit_code=1)  # always close the run, so multirun jobs never merge into one


def drop_diverged(fusion: Fusion, data: TrainingData, sums: list, epoch: int, results: dict, fused: int):
    """Fail the members whose training loss turned non-finite this epoch (their record says so, their last
    good checkpoint stays) and take them out of the fusion; the others go on. Returns the sums and the
    training data of the members left."""
    diverged = [m for m, s in zip(fusion.members, sums) if not math.isfinite(s[0])]
    for m in diverged:
        err = RunDiverged(f"non-finite training loss in epoch {epoch + 1} of {m.run_dir}: lower optim.lr or "
                          "check the loss (the last good checkpoint is kept)")
        if fused > 1:  # alone, train() raises it
            log.error("%s", err, extra=about(m.run_dir))
        results[m] = end(m, failed_record(m, err, epoch, m.cfg.trainer.epochs), fused)
    keep = [i for i, m in enumerate(fusion.members) if m not in diverged]
    fusion.drop(diverged)
    return [sums[i] for i in keep], data.select(keep)


# ---------------------------------------------------------------------------------------------------
# Records: each epoch's, and the run's last


class RunDiverged(Exception):
    """A non-finite training loss: the run fails (its record says so), the last good checkpoint stays."""


def wall(m: Member, started: float) -> float:
    return m.wall_before + time.perf_counter() - started


def paused_record(cell: dict, epoch: int, epochs: int, reason: str, wall_seconds: float) -> dict:
    """result.json of a paused run: the tables count it as missing, and starting it again continues it."""
    return dict(status="paused", **cell, epoch=epoch, epochs=epochs, reason=reason, wall_seconds=wall_seconds,
                git_commit=git_commit())


def failed_record(m: Member, err: Exception, epoch: int, epochs: int) -> dict:
    return dict(status="failed", error=f"{type(err).__name__}: {err}", **m.cell, epoch=epoch + 1, epochs=epochs,
                **m.provenance)


def end(m: Member, record: dict, fused: int) -> dict:
    """Write the member's last record (with how many runs were fused) and close its W&B run."""
    result = record | m.provenance | dict(fused=fused)
    atomic_write_json(m.run_dir / RESULT, result)
    if m.wandb_run is not None:
        if result["status"] == "finished":
            m.wandb_run.summary.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
        m.wandb_run.finish(exit_code=0 if result["status"] != "failed" else 1)
    return result


def end_epoch(m: Member, epoch: int, sums: list, test_correct: int | None, n_test: int, lr: float,
              train_seconds: float, epoch_start: float, started: float) -> None:
    """The member's epoch record: into its history, its train.log line, W&B, and its checkpoint."""
    loss_sum, fit_noisy, fit_clean, clean_corrupted, memorised = sums
    n_train, n_corrupted, epochs = m.n_train, m.n_corrupted, m.cfg.trainer.epochs
    pct = lambda a, b: 100.0 * a / b if b else None  # None: an empty subset (no noise)
    record = dict(
        epoch=epoch + 1, train_loss=loss_sum / n_train, train_acc_noisy=pct(fit_noisy, n_train),
        train_acc_clean_subset=pct(fit_clean, n_train - n_corrupted),
        train_acc_corrupted_subset=pct(clean_corrupted, n_corrupted), train_memorised=pct(memorised, n_corrupted),
        test_acc=pct(test_correct, n_test) if test_correct is not None else None,
        lr=lr, images_per_second=n_train / train_seconds, seconds=time.perf_counter() - epoch_start,
    )
    m.history.append(record)
    epoch_log.info("epoch %d/%d: train loss %.4f, fits its labels %s, memorised %s, test %s, %.0f img/s, %.1fs",
                   epoch + 1, epochs, record["train_loss"], percent(record["train_acc_noisy"]),
                   percent(record["train_memorised"]), percent(record["test_acc"]), record["images_per_second"],
                   record["seconds"], extra=about(m.run_dir) | dict(epoch_record=record))
    if m.wandb_run is not None:
        m.wandb_run.log(record, step=epoch + 1)
    save_checkpoint(m.run_dir, dict(
        model=m.model.state_dict(), optimizer=m.optimizer.state_dict(), scheduler=m.scheduler.state_dict(),
        history=m.history, epoch=epoch + 1, wall_seconds=wall(m, started), **m.provenance,
    ))
    m.checkpointed = epoch + 1


def finished_record(m: Member, wall_seconds: float) -> dict:
    cfg, history, device = m.cfg, m.history, m.device
    test_accs = [h["test_acc"] for h in history if h["test_acc"] is not None]
    return dict(
        status="finished", **m.cell, epochs=cfg.trainer.epochs, subset=cfg.dataset.subset,
        last_test_acc=test_accs[-1], best_test_acc=max(test_accs), realised_noise_rate=m.summary["rate"],
        noise_transition=np.asarray(m.summary["transition"]).round(4).tolist(), wall_seconds=wall_seconds,
        images_per_second=float(np.mean([h["images_per_second"] for h in history])),
        device=str(device), device_name=device_name(device), git_commit=git_commit(),
        precision_reason=m.precision_reason, **m.provenance, history=history,
    )


# ---------------------------------------------------------------------------------------------------
# Training runs: alone, or fused


# What runs fused together may differ in (the rest fixes the step structure, or is one per process).
MAY_DIFFER = ("seed", "noise", "loss", "optim.l1", "optim.weight_decay", "optim.grad_clip", "dataset.weight_decay",
              "dataset.l1_amse", "dataset.l1_nnce", "out_root", "run_name", "logger", "trainer.progress",
              "trainer.stop_at", "trainer.restart")


def fixed_settings(cfg: DictConfig) -> dict:
    """The settings of a run that runs fused with it must share (flattened): all but MAY_DIFFER."""
    with hydra_runtime(cfg):
        settings = flatten(plain_config(cfg)) | {"data_dir": cfg.data_dir}  # the members' images are loaded once
    return {k: v for k, v in settings.items() if not any(k == d or k.startswith(d + ".") for d in MAY_DIFFER)}


def check_fusable(cfgs: list[DictConfig]) -> None:
    """One line naming the first setting in which the runs of a fusion differ where they must agree."""
    first = fixed_settings(cfgs[0])
    for n, cfg in enumerate(cfgs[1:], 2):
        other = fixed_settings(cfg)
        for key in sorted(first.keys() | other.keys()):
            if first.get(key, "absent") != other.get(key, "absent"):
                raise ConfigError(f"runs 1 and {n} of a fusion differ in {key} ({first.get(key, 'absent')} and "
                                  f"{other.get(key, 'absent')}): runs fused together may differ only in seed, "
                                  "noise, loss, optim.l1, optim.weight_decay and optim.grad_clip")


def train_fusion(cfgs: list[DictConfig], run_dirs: list, epoch_hook=None) -> list[dict]:
    """Train the runs described by `cfgs` into `run_dirs` together, one fused model (see Fusion); returns each
    one's record: finished, paused, failed (a non-finite loss fails its member only), running elsewhere, or
    finished already (skipped, not fused). Each member writes what it would write alone, with `fused: K`.

    epoch_hook(epoch), if given, is called in each epoch after its training steps, before its evaluation and
    checkpoint (epoch counted from 1): the resume checks move trainer.stop_at to now there, or send a stop
    signal, to pause a run at a known epoch."""
    signalled_before, previous = stop_signal, install_stop_handlers()
    members = []  # (index, Member) of the runs prepared to train here
    try:
        for cfg in cfgs:
            check_config(cfg)  # before anything is read or written: a wrong setting leaves no record
        check_fusable(cfgs)
        with contextlib.ExitStack() as locks:
            results = {}
            for i, (cfg, run_dir) in enumerate(zip(cfgs, map(Path, run_dirs))):
                try:
                    locks.enter_context(RunLock(run_dir))  # one process per run, for as long as this one trains it
                except RunBusy as busy:
                    results[i] = dict(status="running elsewhere", reason=str(busy))
                    continue
                prepared = prepare_member(cfg, run_dir)
                if isinstance(prepared, dict):  # finished already, or not started (stop_at passed, a signal)
                    results[i] = prepared
                else:
                    members.append((i, prepared))
            if members:
                for i, result in zip([i for i, _ in members], train_locked([m for _, m in members], epoch_hook)):
                    results[i] = result
        return [results[i] for i in range(len(cfgs))]
    except KeyboardInterrupt:  # Ctrl-C: each run says where it stopped (the command line exits with 130)
        for _, m in members:
            log.warning("%s %s", m.name, interrupted(m), extra=about(m.run_dir))
        raise
    finally:
        restore_handlers(previous, hand_on=stop_signal if signalled_before is None else None)


def interrupted(m: Member) -> str:
    """Where an interrupted run stopped: its last checkpoint, from which the same command resumes it."""
    if not m.checkpointed:
        return "interrupted before its first checkpoint: the same command starts it again"
    return (f"interrupted after its checkpoint of epoch {m.checkpointed}/{m.cfg.trainer.epochs}: the same command "
            "resumes it from there")


def train(cfg: DictConfig, run_dir: str | Path, epoch_hook=None) -> dict:
    """Train the run described by `cfg` into `run_dir`; returns its result record (finished or paused).
    A stop signal meanwhile pauses it at the next epoch end. A run alone is a fusion of one (epoch_hook: see
    train_fusion)."""
    result = train_fusion([cfg], [run_dir], epoch_hook)[0]
    if result["status"] == "failed":  # alone, a diverged run is an error (main prints it in one line)
        raise RunDiverged(result["error"].removeprefix("RunDiverged: "))
    return result


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
    except (ValueError, FileNotFoundError, HydraException) as err:  # wrong settings, missing files, a class
        # that refuses its arguments (Hydra's `Error in call to target`): one line, no traceback
        raise SystemExit(f"error: {one_line(err)}") from None
    except RunDiverged as err:  # its record says failed; the sweep's summary lists it
        if alone:
            raise SystemExit(f"error: {err}") from None
        log.error("%s", err)
        return None
    if result["status"] == "running elsewhere":
        if alone:
            raise SystemExit(f"not started: {result['reason']}")
        console.warning("not started: %s", result["reason"])  # the other process writes its train.log
    if alone and result["status"] == "finished":
        # the console only (train.log ends with the last epoch's line, and holds no path of this machine); in a
        # multirun the sweep's progress line says it (jal.sweep.Progress), a paused run has said it already
        console.info("%s -> %s", ending(result), shown_path(HydraConfig.get().runtime.output_dir))
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
    except KeyboardInterrupt:  # Ctrl-C: the run has said where it stopped (train_fusion); no traceback
        sys.exit(130)  # the shell's status for a command ended by SIGINT
