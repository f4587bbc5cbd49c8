"""A run's life around the training step: what it prepares under its lock (its directory's identity, a finished
run skipped, its checkpoint found), its data and labels on the device, its model built or resumed, its records
each epoch and at its end, its W&B run (jal/stops.py: the signals and deadline that pause it). jal/train.py drives
the loop; jal/step.py trains; jal/run_dir.py keeps the files of one directory trustworthy.
"""

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from jal import noise as label_noise
from jal import record as records
from jal.config import ConfigError
from jal.data import (
    ImageData,
    balanced_subset,
    channel_stats,
    check_fits,
    images_to_device,
    load_arrays,
    load_dataset,
    validation_rows,
)
from jal.device import PARAMETER_DTYPE, device_name, set_determinism
from jal.errors import DirectoryConflict, RunDiverged
from jal.experiment import Experiment, experiment
from jal.losses import AMSE
from jal.real_world import folder_sources, is_real_world, load_files, read_folder
from jal.record import Record, Status
from jal.run_dir import (
    LABELS,
    RunBusy,
    RunLock,
    check_labels,
    check_same,
    latest_checkpoint,
    move_aside,
    remove_temp_files,
    restart_alone,
    save_checkpoint,
)
from jal.step import ArraySplits, Fusion, Learner, StepSettings, TrainingData, build_training
from jal.stops import StopSignals, stop_reason
from jal.theory import check_amse_a
from jal.util import CannotWrite, atomic_save, atomic_save_npz, git_commit
from jal.wandb_run import start_wandb

# configs/train.yaml routes jal.epochs to the run's train.log only and jal.console to the console only.
log = logging.getLogger(__name__)
# One line per epoch into the run's train.log only (configs/train.yaml routes it to the file handler): a run
# can be followed with `tail -f` while a sweep's console keeps to one line per run.
epoch_log = logging.getLogger("jal.epochs")
# What this command decided about a run that it does not train (finished already, not started, trained by
# another process): the console only, never the run's train.log, which keeps the history of its training
# (a sweep started again leaves a finished run's files as they were).
console = logging.getLogger("jal.console")


def about(run_dir) -> dict:
    """The `extra` of a log record about one run (its directory): `python -m jal.fuse` writes each fused
    member's records into that member's own train.log, as Hydra's job logging does for a run alone."""
    return {"run_dir": str(run_dir)}


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"  # n/a: not evaluated this epoch, or no corrupted sample


# ---------------------------------------------------------------------------------------------------
# Labels: clean and noisy


def make_labels(cfg: DictConfig, data: ImageData, subset: np.ndarray) -> np.ndarray:
    """The noisy training labels of this run (for the samples in `subset`), drawn from the run's seed."""
    kind, k, seed = cfg.noise.type, cfg.dataset.num_classes, cfg.seed
    clean = data.y_train[subset]
    if kind in ("none", "as_given"):  # clean labels, or a dataset of yours' labels as given
        return clean.copy()
    if kind in ("symmetric", "asymmetric"):
        return label_noise.make_noisy_labels(clean, kind, cfg.noise.rate, k, seed, sampling=cfg.noise.sampling)
    if kind == "instance":
        precomputed = cfg.dataset.name in ("cifar10", "cifar100") and cfg.noise.rate in (0.2, 0.4, 0.6)
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


def step_settings(cfg: DictConfig) -> StepSettings:
    """What the training step reads of the run's config (jal.step.StepSettings), taken from it once: the step
    itself never sees the config."""
    trainer, optim, dataset = cfg.trainer, cfg.optim, cfg.dataset
    return StepSettings(
        seed=cfg.seed, epochs=trainer.epochs, batch_size=trainer.batch_size, eval_batch_size=trainer.eval_batch_size,
        eval_every=trainer.eval_every, channels_last=trainer.channels_last, compile=trainer.compile,
        rotation=dataset.rotation, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
        l1=optim.l1, grad_clip=optim.grad_clip, nesterov=dataset.get("nesterov", False),
        lr_decay=dataset.get("lr_decay"), lr_decay_every=dataset.get("lr_decay_every"),
    )


def pause_settings(trainer: DictConfig) -> dict:
    """The trainer's settings that pause a run, as jal.stops.stop_reason takes them."""
    return dict(stop_at=trainer.get("stop_at"), pause_after=trainer.get("pause_after"))


# ---------------------------------------------------------------------------------------------------
# The members of a fusion: each a run, prepared under its lock


@dataclass(eq=False, kw_only=True)  # members are told apart by identity
class Member(Learner):
    """One run of a fusion: what it is (its config and experiment), where it writes, what it trains on, its
    Learner's step settings, plain model, loss, SGD and schedule (exactly as a run alone builds them), and its
    history."""
    cfg: DictConfig
    run_dir: Path
    exp: Experiment
    state: dict | None  # its checkpoint, None for a new run
    started: str = ""  # when this training began (local time, jal.record.now), for its record
    cell: object = None  # its Cell, the rate of human noise measured from its labels
    summary: dict = None
    n_train: int = 0
    n_corrupted: int = 0
    n_val: int = 0  # the training images it holds out for validation (dataset.val_fraction)
    history: list = None
    wall_before: float = 0.0
    wandb_run: object = None
    start_epoch: int = 0  # the epochs its checkpoint had done
    checkpointed: int = 0  # the epoch of its last checkpoint written (an interruption says it)
    fused: int = 0  # the most runs that trained an epoch of it together, in this training and before (its records)
    writes: bool = True  # False on the ranks other than 0 of a run across processes (jal/distributed.py)

    def __post_init__(self):
        self.checkpointed = self.state["epoch"] if self.state is not None else 0
        self.cell = self.exp.cell

    # the run's lines name it by its name (its directory under out_root), not by this machine's path: they go
    # into its train.log, which is committed with its record
    name = property(lambda self: self.exp.name)
    device = property(lambda self: self.exp.device)
    precision = property(lambda self: self.exp.precision)


def prepare_member(cfg: DictConfig, run_dir: Path, stops: StopSignals) -> "Member | Record":
    """What a run does under its lock before anything trains: restart, the directory's identity, skip a
    finished run, find its checkpoint, write config.yaml, stop when the sweep is stopping. A record when it
    trains no further here, else the Member."""
    exp = experiment(cfg)
    remove_temp_files(run_dir)  # of writes a kill cut short
    if cfg.trainer.restart and (moved := move_aside(run_dir)):
        log.info("trainer.restart=true: moved %s aside (*.damaged) in %s", ", ".join(moved), exp.name,
                 extra=about(run_dir))
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)  # one per job when a CPU sweep runs jobs side by side
    if (record := finished_already(run_dir, exp.identity)) is not None:
        return record
    state = latest_checkpoint(run_dir, exp.identity, warn=lambda line: log.warning(line, extra=about(run_dir)))
    # before loading anything: a time-boxed sweep past its end passes in seconds
    if reason := stop_reason(state["epoch"] if state else 0, stops, **pause_settings(cfg.trainer)):
        console.info("%s not started: %s", run_dir, reason, extra=about(run_dir))
        return Record(status=Status.NOT_STARTED, reason=reason)
    set_determinism(exp.device, cfg.trainer.deterministic)
    log.info("precision %s (%s)", exp.precision, exp.precision_reason, extra=about(run_dir))
    atomic_save(run_dir / "config.yaml", lambda tmp: OmegaConf.save(OmegaConf.create(exp.config), tmp), ".yaml")
    return Member(cfg=cfg, settings=step_settings(cfg), run_dir=run_dir, exp=exp, state=state, started=records.now())


def finished_already(run_dir: Path, asked: dict) -> Record | None:
    """The directory's finished record, when it holds this experiment finished (skipped: it is said on the
    console); None when it holds no finished run. What the directory holds must be this experiment before
    anything is skipped, resumed or trained: another one's raises DirectoryConflict."""
    record = records.read(run_dir)
    if record is None:
        return None
    check_same(record.identity(), asked, run_dir / records.RESULT)
    if record.status != Status.FINISHED:
        return None
    console.info("%s is finished already: skipping", run_dir, extra=about(run_dir))
    if edited := hand_edited(run_dir, record):
        console.warning("%s", edited, extra=about(run_dir))
    return record


def flat(tree, prefix: str = "") -> dict:
    """A nested config as {dotted key: value}."""
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]: tree}
    return {key: value for name, branch in tree.items() for key, value in flat(branch, f"{prefix}{name}.").items()}


def hand_edited(run_dir: Path, record: Record) -> str | None:
    """The line for a finished run's config.yaml that says otherwise than its record (edited by hand since): the
    record wins (it was written with the weights it reports), config.yaml is left as it is. None when they agree."""
    path = Path(run_dir) / "config.yaml"
    if record.config is None or not path.is_file():
        return None
    try:
        written = flat(OmegaConf.to_container(OmegaConf.load(path)))
    except Exception as err:  # not YAML any more, or unreadable: named, not fixed
        return f"{path} cannot be read back ({type(err).__name__}); its record {records.RESULT} says what trained"
    recorded = flat(record.config)
    differ = [key for key in sorted(written.keys() | recorded.keys()) if written.get(key) != recorded.get(key)]
    if not differ:
        return None
    value = lambda tree, key: repr(tree[key]) if key in tree else "absent"  # noqa: E731
    said = "; ".join(f"{key}: {value(recorded, key)} in the record, {value(written, key)} in config.yaml"
                     for key in differ[:3])
    return (f"{path} differs from the run's {records.RESULT} ({said}{'; ...' * (len(differ) > 3)}): the record is "
            "what trained and what is skipped and tabulated; config.yaml was edited since, and is left as it is")


def blocked(cfg: DictConfig, run_dir: Path, err: DirectoryConflict) -> Record:
    """A run of a fusion that cannot train until a file of its own is mended (damaged, unreadable, another
    experiment's): one line says so, with the command that restarts it alone, and its fusion trains on without
    it. Its record (BLOCKED) is never written: nothing of it failed."""
    line = restart_alone(str(err), list(cfg.hydra.overrides.task) if "hydra" in cfg else [])
    log.error("%s blocked: %s", experiment(cfg).name, line, extra=about(run_dir))
    return Record(status=Status.BLOCKED, reason=line)


def finished_where_unwritable(cfg: DictConfig, run_dir: Path) -> Record | None:
    """A run whose folder refuses files (a colleague's read-only results): its finished record of this
    experiment, read and skipped as anywhere else, or None (then it cannot train there)."""
    return finished_already(run_dir, experiment(cfg).identity)


def label_member(m: Member, data: ImageData) -> tuple:
    """The member's training set as its config draws it: its subset of the dataset's training images, their noisy
    labels, and the rows it holds out for validation (dataset.val_fraction), its labels.npz written (or, resuming,
    checked). Returns the rows it trains on with their noisy and clean labels, and the held-out rows with their
    noisy labels (indices into the dataset's training set)."""
    cfg, k = m.cfg, m.cfg.dataset.num_classes
    subset = (balanced_subset(data.y_train, cfg.dataset.subset, k, cfg.seed) if cfg.dataset.subset
              else np.arange(len(data.y_train)))
    clean, noisy = data.y_train[subset], make_labels(cfg, data, subset)
    held = validation_rows(noisy, cfg.dataset.val_fraction, k, cfg.seed)  # positions in the run's training set
    kept = np.setdiff1d(np.arange(len(subset)), held)
    split = dict(val_indices=held) if len(held) else {}
    if (m.run_dir / LABELS).exists():
        check_labels(m.run_dir / LABELS, noisy, clean, subset, **split)
    else:
        atomic_save_npz(m.run_dir / LABELS, noisy=noisy, clean=clean, indices=subset, **split)
    m.summary = label_noise.noise_summary(clean[kept], noisy[kept], k)
    m.n_train, m.n_corrupted, m.n_val = len(kept), int(np.sum(noisy[kept] != clean[kept])), len(held)
    return subset[kept], noisy[kept], clean[kept], subset[held], noisy[held]


def load_training_data(members: list[Member], blocked=None) -> tuple:
    """The training images (once), each member's training rows and labels (its labels.npz checked or written), and
    what each evaluated epoch scores: the test set, and each member's validation rows where it holds some out
    (then jal.step.ArraySplits, or jal.real_world.FileTests, in the test set's place), all on the device.
    `blocked(m, err)`: a member whose labels.npz is damaged or another draw's (a DirectoryConflict) is handed to
    it and left out (the others train on); without it, the error is raised."""
    cfg, device = members[0].cfg, members[0].device
    k, d = cfg.dataset.num_classes, cfg.dataset
    stats = channel_stats(d.mean, d.std, device, PARAMETER_DTYPE[members[0].precision])
    if is_real_world(d):  # image files through DataLoader workers; a run alone (check_fusable), real noise
        training, tests, labels = load_files(d, device, stats)
        m = members[0]
        m.summary, m.n_train, m.n_corrupted = label_noise.noise_summary(labels, labels, k), len(labels), 0
        return training, tests, None
    if d.get("format") == "folder":  # image files through DataLoader workers, a run alone (check_fusable)
        train, tests = read_folder(d)
        labelled = label_member(members[0], ImageData(None, train.labels, None, None))
        return folder_sources(d, device, stats, train, tests, *labelled)
    if d.get("format") == "arrays":
        data = load_arrays(d.path)
        check_fits(data, device, d.path)
    else:
        data = load_dataset(d.name, cfg.data_dir, num_classes=k, train_size=d.get("train_size", 256),
                            test_size=d.get("test_size", 128))
    labelled = {}
    for m in members:
        try:
            labelled[m] = label_member(m, data)
        except DirectoryConflict as err:
            if blocked is None:
                raise
            blocked(m, err)
    if not labelled:  # every member blocked: nothing to train
        return None, None, None
    members = list(labelled)
    rows, noisy, clean, val_rows, val_labels = zip(*labelled.values())
    as_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).to(device)
    x_train = images_to_device(data.x_train, device)
    training = TrainingData(x_train, as_tensor(rows), as_tensor(noisy), as_tensor(clean), stats)
    test = (balanced_subset(data.y_test, d.test_subset, k, seed=0) if d.get("test_subset")
            else np.arange(len(data.y_test)))  # a fixed test subset only for CPU-sized presets
    x_test, y_test = images_to_device(data.x_test[test], device), torch.from_numpy(data.y_test[test]).to(device)
    if not members[0].n_val:
        return training, x_test, y_test
    held_out = {m: (r, y) for m, r, y in zip(members, as_tensor(val_rows), as_tensor(val_labels))}
    return training, ArraySplits(x_test, y_test, x_train, held_out), None


def build_member(m: Member, y_noisy: torch.Tensor) -> None:
    """The member's model (initial weights from its seed), loss, SGD and schedule, as a run alone builds
    them, loaded from its checkpoint when it has one; its cell and W&B run."""
    cfg = m.cfg
    torch.manual_seed(cfg.seed)  # model initialisation; data order and augmentation use per-epoch RNGs
    parts = build_training(m.settings, cfg.model, cfg.loss, m.device, m.precision)
    m.model, m.step_model, m.criterion, m.optimizer, m.scheduler = parts
    m.criterion.fit_labels(y_noisy)  # losses that read the training labels (NLNL's class weights); most ignore it
    if warning := amse_warning(cfg, m.criterion):
        log.warning(warning, extra=about(m.run_dir))
    m.history = []
    if m.state is not None:
        m.model.load_state_dict(m.state["model"])
        m.optimizer.load_state_dict(m.state["optimizer"])
        m.scheduler.load_state_dict(m.state["scheduler"])
        m.history, m.start_epoch, m.wall_before = m.state["history"], m.state["epoch"], m.state["wall_seconds"]
        # checkpoints from before `fused` was kept: the fusion that trained their last epoch
        m.fused = m.state.get("fused", len(m.state.get("fusion", [])))
        log.info("resuming %s from epoch %d", m.name, m.start_epoch, extra=about(m.run_dir))
    m.state = None  # loaded: its memory (a model's worth) is not kept
    if not cfg.noise.rate and cfg.noise.type != "as_given":  # human noise: its labels measure it (clean data: 0)
        m.cell = dataclasses.replace(m.exp.cell, noise_rate=float(m.summary["rate"]))
    m.wandb_run = start_wandb(m.exp, m.run_dir) if m.writes else None


def lock_and_prepare(locks: contextlib.ExitStack, cfg: DictConfig, run_dir: Path,
                     stops: StopSignals, apart: bool = False) -> "Member | Record":
    """The run's lock (held until `locks` closes) and its preparation (prepare_member), or why it is not
    trained here. `apart` (a run of a fusion of two or more): a damaged file of its own blocks it alone."""
    try:
        locks.enter_context(RunLock(run_dir))  # one process per run, for as long as this one trains it
    except RunBusy as busy:
        return Record(status=Status.RUNNING_ELSEWHERE, reason=str(busy))
    except CannotWrite:  # a read-only folder: a finished run is still read (and skipped) there
        if (record := finished_where_unwritable(cfg, run_dir)) is None:
            raise
        return record
    try:
        return prepare_member(cfg, run_dir, stops)
    except DirectoryConflict as err:
        if not apart:
            raise
        return blocked(cfg, run_dir, err)


def interrupted(m: Member) -> str:
    """Where an interrupted run stopped: its last checkpoint, from which the same command resumes it."""
    if not m.checkpointed:
        return "interrupted before its first checkpoint: the same command starts it again"
    return (f"interrupted after its checkpoint of epoch {m.checkpointed}/{m.cfg.trainer.epochs}: the same command "
            "resumes it from there")


def unwritable(err: CannotWrite, members: list[Member]) -> CannotWrite:
    """A full disk or a refusing folder met while training: its one line, saying whose checkpoint is kept and
    that the same command resumes the run once there is room."""
    m = next((m for m in members if err.what.endswith(f" in {m.run_dir}")), None)  # whose write it was
    if m is None:  # not a run's own file (a data folder's): its own fix stands
        return err
    kept = (f"its checkpoint of epoch {m.checkpointed}/{m.cfg.trainer.epochs} is kept" if m.checkpointed else
            "it had no checkpoint yet")
    fix = "free space there" if err.full else "make it writable"
    return err.with_fix(f"{fix} or give out_root another folder; {kept}: once there is room the same command "
                        f"{'resumes it' if m.checkpointed else 'starts it again'}")


def close_unended(members: list[Member], results: dict, err: BaseException, epoch: int, fused: int) -> None:
    """After a crash or an interruption, for each member not ended yet: a failed record after a crash (an
    interruption leaves its checkpoint to resume from), and its W&B run closed."""
    for m in members:
        if m in results:
            continue
        if isinstance(err, Exception) and not isinstance(err, CannotWrite) and m.writes:  # a crash, not an
            # interruption or a full disk (its last checkpoint resumes it): leave a record the tables can flag
            with contextlib.suppress(CannotWrite):  # the disk full now too: the error raised says what to do
                records.write(m.run_dir, dataclasses.replace(failed_record(m, err, epoch), fused=fused))
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
        results[m] = write_last_record(m, failed_record(m, err, epoch), fused)
    keep = [i for i, m in enumerate(fusion.members) if m not in diverged]
    fusion.drop(diverged)
    return [sums[i] for i in keep], data.select(keep)


# ---------------------------------------------------------------------------------------------------
# Records: each epoch's, and the run's last


def wall(m: Member, started: float) -> float:
    return m.wall_before + time.perf_counter() - started


def record_of(m: Member, status: Status, **fields) -> Record:
    """A record of the member: its cell, experiment and provenance (where, how and when it trained), and
    `fields`."""
    return Record(status=status, **m.cell.as_dict(), epochs=m.cfg.trainer.epochs, **m.exp.as_dict(),
                  git_commit=git_commit(), host=records.this_host(), threads=torch.get_num_threads(),
                  started=m.started, ended=records.now(), **fields)


def paused_record(m: Member, epoch: int, reason: str, wall_seconds: float) -> Record:
    """result.json of a paused run: the tables count it as missing, and starting it again continues it."""
    return record_of(m, Status.PAUSED, epoch=epoch, reason=reason, wall_seconds=wall_seconds)


def failed_record(m: Member, err: Exception, epoch: int) -> Record:
    """result.json of a run that failed in `epoch` (0-based): its last good checkpoint stays."""
    return record_of(m, Status.FAILED, error=f"{type(err).__name__}: {err}", epoch=epoch + 1)


def write_last_record(m: Member, record: Record, fused: int) -> Record:
    """Write the member's last record and close its W&B run. Its `fused`: the most runs that trained an epoch of it
    together (Member.fused: a kill, a pause or a damaged file that split its fusion does not lower it), or, where it
    trained no epoch, the `fused` runs it was to train with."""
    record.fused = m.fused or fused
    if m.writes:
        records.write(m.run_dir, record)
    if m.wandb_run is not None:
        if record.status == Status.FINISHED:
            m.wandb_run.summary.update({k: v for k, v in record.to_json().items() if isinstance(v, (int, float, str))})
        m.wandb_run.finish(exit_code=0 if record.status != Status.FAILED else 1)
    return record


def end_epoch(m: Member, epoch: int, sums: list, test_correct: int | None, n_test: int, lr: float,
              train_seconds: float, epoch_start: float, started: float, fusion: list[str]) -> None:
    """The member's epoch record: into its history, its train.log line, W&B, and its checkpoint (naming the
    `fusion` that trained the epoch: its members' run names, jal.fuse.rejoin.rejoined_epochs)."""
    loss_sum, fit_noisy, fit_clean, clean_corrupted, memorised = sums
    n_train, n_corrupted, epochs = m.n_train, m.n_corrupted, m.cfg.trainer.epochs
    pct = lambda a, b: 100.0 * a / b if b else None  # None: an empty subset (no noise)
    clean_known = m.cfg.noise.type != "as_given"  # labels as given: which are clean is not known
    record = dict(
        epoch=epoch + 1, train_loss=loss_sum / n_train, train_acc_noisy=pct(fit_noisy, n_train),
        train_acc_clean_subset=pct(fit_clean, n_train - n_corrupted) if clean_known else None,
        train_acc_corrupted_subset=pct(clean_corrupted, n_corrupted), train_memorised=pct(memorised, n_corrupted),
        test_acc=pct(test_correct, n_test) if isinstance(test_correct, int) else None,
        lr=lr, images_per_second=n_train / train_seconds, seconds=time.perf_counter() - epoch_start,
    )
    if isinstance(test_correct, dict):  # accuracies: a real-world run's (top-1, top-5, sets), validation splits'
        record |= test_correct
    val = ""
    if m.n_val:  # against the held-out rows' given labels, in every epoch's record (None: not evaluated)
        val = f", val {percent(record.setdefault('val_acc', None))}"
    m.history.append(record)
    epoch_log.info("epoch %d/%d: train loss %.4f, fits its labels %s, memorised %s, test %s%s, %.0f img/s, %.1fs",
                   epoch + 1, epochs, record["train_loss"], percent(record["train_acc_noisy"]),
                   percent(record["train_memorised"]), percent(record["test_acc"]), val, record["images_per_second"],
                   record["seconds"], extra=about(m.run_dir) | dict(epoch_record=record))
    if m.wandb_run is not None:
        m.wandb_run.log(record, step=epoch + 1)
    if not m.writes:  # a rank other than 0 of a run across processes: rank 0 saves it
        return
    save_checkpoint(m.run_dir, dict(
        model=m.model.state_dict(), optimizer=m.optimizer.state_dict(), scheduler=m.scheduler.state_dict(),
        history=m.history, epoch=epoch + 1, wall_seconds=wall(m, started), fusion=fusion, fused=m.fused,
        **m.exp.as_dict(),
    ))
    m.checkpointed = epoch + 1


def write_predictions(m: Member, data: TrainingData) -> None:
    """predictions.npz of a member that finished (jal.mislabelled): its model's predictions for its training set,
    in labels.npz's order, with its experiment's fingerprint. Written before its finished record: a kill between
    the two leaves a run that finishes again from its last checkpoint, writing both. Training sets read from
    image files (WebVision, Clothing1M: a pass over up to a million images) get none."""
    if not m.writes or getattr(data, "x_train", None) is None:
        return
    from jal.mislabelled import PREDICTIONS, predictions

    with np.load(m.run_dir / LABELS) as labels:  # the run's training set, as it wrote it
        rows, given = labels["indices"], labels["noisy"]
    arrays = predictions(m.model, m.criterion, data.x_train, rows, given, data.stats, m.settings, m.precision)
    atomic_save_npz(m.run_dir / PREDICTIONS, fingerprint=np.str_(m.exp.fingerprint), **arrays)


def finished_record(m: Member, wall_seconds: float) -> Record:
    """result.json of a finished run: its last and best accuracies (None without a test set, or without a
    validation split), its labels' measured noise (None for labels as given: which are clean is not known)."""
    history, clean_known = m.history, m.cfg.noise.type != "as_given"
    evaluated = lambda key: [h[key] for h in history if h.get(key) is not None]
    tests, vals = evaluated("test_acc"), evaluated("val_acc")
    return record_of(
        m, Status.FINISHED, subset=m.cfg.dataset.subset, last_test_acc=tests[-1] if tests else None,
        best_test_acc=max(tests, default=None), last_val_acc=vals[-1] if vals else None,
        best_val_acc=max(vals, default=None), realised_noise_rate=m.summary["rate"] if clean_known else None,
        **{f"last_{key}": history[-1][key] for key in records.REAL_WORLD_ACCURACIES if key in history[-1]},
        noise_transition=np.asarray(m.summary["transition"]).round(4).tolist() if clean_known else None,
        wall_seconds=wall_seconds,
        images_per_second=float(np.mean([h["images_per_second"] for h in history])),
        device=str(m.device), device_name=device_name(m.device), precision_reason=m.exp.precision_reason,
        history=history,
    )
