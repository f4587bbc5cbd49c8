"""How long training takes here: the one estimate the plan (jal.plan), a sweep's progress lines (jal.progress,
jal.fuse) and a run's progress bar (jal.progress_bar) give.

Work is counted in training images, a tested image as a third of one (a forward pass against forward,
backward and step): `work_left_after_each_epoch`. The time left is the work left at a pace:

- measured, once some of the work is done: the work done over the time it took (`eta`);
- before that, a speed per run (`run_speed`), from the first source that has one: this machine's own epochs
  (finished records it trained, jal.record.origin HERE, and the checkpoints of its unfinished runs), then a
  probe (a few seconds of the run's own training step, jal.step, on random images; kept for the next plans),
  then the records of other machines (named: their speed is not this machine's).
"""

import copy
import json
import os
import time
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from jal.util import duration

TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000}  # the CIFAR test sets (synthetic: dataset.test_size)
PROBE_SECONDS = 5.0  # a probe's timed steps: three steps (~1 s) swung a plan's estimate by 40% between two calls


def work_left_after_each_epoch(cfg) -> list[float]:
    """Training images left from epoch e on, for e = 0, 1, ..., epochs (the last 0); a tested image counts as a
    third of a trained one, tested after every trainer.eval_every-th epoch and the last."""
    train = cfg.dataset.subset or cfg.dataset.train_size
    test = cfg.dataset.test_subset or TEST_IMAGES.get(cfg.dataset.name, cfg.dataset.get("test_size", 0))
    epochs, eval_every = cfg.trainer.epochs, cfg.trainer.eval_every
    per_epoch = [train + ((e + 1) % eval_every == 0 or e + 1 == epochs) * test / 3 for e in range(epochs)]
    return list(accumulate(reversed(per_epoch), initial=0.0))[::-1]


def eta(done: float, left: float, seconds: float) -> float | None:
    """Seconds left at the pace of the work done so far (`done` images in `seconds`), None before any."""
    if left <= 0:
        return 0.0
    return seconds * left / done if done > 0 and seconds > 0 else None


def eta_words(done: float, left: float, seconds: float, speed: float | None = None) -> str:
    """`ETA 12 min` (measured), `ETA about 12 min` (from `speed`, images/s, before any work is measured),
    `ETA unknown` (neither)."""
    if (left_seconds := eta(done, left, seconds)) is not None:
        return f"ETA {duration(left_seconds)}" if left > 0 else "done"
    return f"ETA about {duration(left / speed)}" if speed else "ETA unknown"


def history_pace(history: list[dict], work: list[float]) -> tuple[float, float]:
    """(work done, seconds) of a run's epochs so far (its history: each epoch's seconds, its tests included)."""
    timed = [h for h in history if h.get("seconds")]
    epochs = min(len(history), len(work) - 1)
    return (work[0] - work[epochs], sum(h["seconds"] for h in timed)) if timed and len(timed) == len(history) \
        else (0.0, 0.0)


# ---------------------------------------------------------------------------------------------------
# A run's speed here, before it has trained: the plan's, and a sweep's before its first epoch


@dataclass(frozen=True)
class Speed:
    """Images a second of one run (work_left_after_each_epoch's images), and where the figure comes from."""
    images_per_second: float
    source: str


def same_runs(cfg, record) -> bool:
    """A record of a run that trains at the speed `cfg`'s would: the same model, precision and threads per run."""
    from jal.experiment import choose

    threads = (record.config or {}).get("trainer", {}).get("threads")
    return (record.model == cfg.hydra.runtime.choices.model and (record.precision or "fp32") == choose(cfg)[1]
            and threads == cfg.trainer.threads)


def record_pace(record) -> tuple[float, float] | None:
    """(images, seconds) of a record's epochs: from its history's epoch times where it has them (its tests
    counted), else its training throughput alone."""
    if record.history and all(h.get("seconds") for h in record.history):
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            work = work_left_after_each_epoch(OmegaConf.create(record.config or {}))
        except (OmegaConfBaseException, TypeError, AttributeError):  # a record without the config this needs
            work = None
        if work:
            return history_pace(record.history, work)
    if record.images_per_second:
        return record.images_per_second, 1.0
    return None


def own_speed(runs: list, device: str) -> Speed | None:
    """This machine's pace on these runs: its finished records (jal.record.origin HERE) of runs that train alike,
    on this device, in the runs' output folders (their cells' and siblings'), and the epochs in the checkpoints
    of the runs not finished; None without any."""
    from jal import record as records
    from jal.errors import DirectoryConflict
    from jal.run_dir import latest_checkpoint

    cfg = runs[0].cfg
    roots = sorted({Path(run.cfg.hydra.sweep.dir) for run in runs})
    images = seconds = 0.0
    count = 0
    for record in records.scan(roots, warn=lambda line: None):
        if (record.status == records.Status.FINISHED and records.origin(record) == records.Origin.HERE
                and record.device_name == device and same_runs(cfg, record)
                and (pace := record_pace(record)) is not None):
            images, seconds, count = images + pace[0], seconds + pace[1], count + 1
    started = 0
    for run in runs:
        if not (run.dir / "checkpoint.pt").exists() or run.status()[0] == records.Status.FINISHED:
            continue
        try:
            state = latest_checkpoint(run.dir, run.identity(), warn=lambda line: None, mend=False)
        except (DirectoryConflict, OSError):
            continue
        done, took = history_pace((state or {}).get("history") or [], work_left_after_each_epoch(run.cfg))
        images, seconds, started = images + done, seconds + took, started + (took > 0)
    if seconds <= 0:
        return None
    parts = [f"{count} finished run{'s' * (count != 1)}" if count else "",
             f"the epochs of {started} unfinished run{'s' * (started != 1)}" if started else ""]
    return Speed(images / seconds, f"this machine's own: {' and '.join(p for p in parts if p)} here on {device}, "
                                   "same model, precision and threads per run")


def other_speed(runs: list) -> Speed | None:
    """Other machines' pace: the finished records, in the runs' output folders, that this machine did not train
    (committed with the repository, or copied in), of runs that train alike; named, since it is not this
    machine's speed."""
    from jal import record as records

    cfg = runs[0].cfg
    roots = sorted({Path(run.cfg.hydra.sweep.dir) for run in runs})
    images = seconds = 0.0
    machines = set()
    for record in records.scan(roots, warn=lambda line: None):
        if (record.status == records.Status.FINISHED and records.origin(record) != records.Origin.HERE
                and same_runs(cfg, record) and (pace := record_pace(record)) is not None):
            images, seconds = images + pace[0], seconds + pace[1]
            machines.add(record.device_name or "a machine records did not name")
    if seconds <= 0:
        return None
    return Speed(images / seconds, f"other machines' records ({', '.join(sorted(machines))}), not this machine: "
                                   "no run here yet and no probe")


def speeds_file() -> Path:
    """Where the probes' speeds are kept ($XDG_CACHE_HOME/jal/speeds.json): the next plan reuses them."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jal" / "speeds.json"


def probe_key(cfg, device: str) -> str:
    from jal.experiment import choose

    model, precision, threads = cfg.hydra.runtime.choices.model, choose(cfg)[1], cfg.trainer.threads
    return f"{device} | {model} | {precision} | batch={cfg.trainer.batch_size} | threads={threads or 'all'}"


def kept_probe(cfg, device: str) -> dict | None:
    """A probe's speed kept for this device, model, precision, batch and threads, or None."""
    try:
        return json.loads(speeds_file().read_text()).get(probe_key(cfg, device))
    except (OSError, ValueError):
        return None


def probe(cfg, device: str, seconds: float = PROBE_SECONDS) -> dict:
    """Training images/s of one run of `cfg` here: jal.step's training steps, as the run takes them, on random
    images of the dataset's size, for about `seconds` after one step to warm up (uncompiled; a pretrained model
    built without its weights: nothing is downloaded); kept in speeds_file() for the next plans. Returns
    {images_per_second, steps, batch, seconds, measured}."""
    import numpy as np
    import torch
    from omegaconf import open_dict

    from jal.data import channel_stats, epoch_generator, images_to_device
    from jal.device import sync
    from jal.experiment import choose
    from jal.run import step_settings
    from jal.step import Fusion, Learner, TrainingData, train_steps
    from jal.util import atomic_write_json

    key = probe_key(cfg, device)
    cfg = copy.deepcopy(cfg)
    torch_device, precision, _ = choose(cfg)
    size = cfg.dataset.get("image_size", 32)
    with open_dict(cfg):
        cfg.trainer.compile = False
        cfg.trainer.batch_size = min(cfg.trainer.batch_size, cfg.dataset.subset or cfg.dataset.get("train_size")
                                     or cfg.trainer.batch_size)  # the run's batches: the whole set where smaller
        if "pretrained" in cfg.model:
            cfg.model.pretrained = False  # the same network and step, timed without fetching its weights
        if torch_device.type != "cuda" and size > 64:  # ImageNet-sized images on a CPU: minutes a batch
            cfg.trainer.batch_size = min(32, cfg.trainer.batch_size)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    batch, classes = cfg.trainer.batch_size, cfg.dataset.num_classes
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2 * batch, size, size, 3), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, classes, 2 * batch)).to(torch_device)[None]
    data = TrainingData(images_to_device(x, torch_device), torch.arange(2 * batch, device=torch_device)[None],
                        labels, labels, channel_stats(cfg.dataset.mean, cfg.dataset.std, torch_device))
    settings = step_settings(cfg)
    torch.manual_seed(cfg.seed)
    fusion = Fusion([Learner.build(settings, cfg.model, cfg.loss, torch_device, precision)])
    epoch = 0

    def steps(n: int) -> float:  # n steps, an epoch of two batches after another; the seconds they took
        nonlocal epoch
        sync(torch_device)
        started = time.perf_counter()
        for _ in range(0, n, 2):
            train_steps(fusion, settings, precision, data, [epoch_generator(cfg.seed, epoch, torch_device)],
                        max_steps=min(2, n))
            epoch += 1
        sync(torch_device)
        return time.perf_counter() - started

    first = steps(1)  # the warm-up, and the time of one step to size the probe
    count = max(2, min(200, 2 * round(seconds / first / 2)))
    took = steps(count)
    measured = dict(images_per_second=count * batch / took, steps=count, batch=batch, seconds=round(took, 1),
                    measured=time.strftime("%Y-%m-%d %H:%M"))
    try:
        path = speeds_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = json.loads(path.read_text()) if path.exists() else {}
        atomic_write_json(path, {**kept, key: measured})
    except (OSError, ValueError):  # not kept: the next plan measures again
        pass
    return measured


def run_speed(runs: list, device: str, probing: bool = True) -> Speed | None:
    """A run's speed here (images/s, work_left_after_each_epoch's images): this machine's own epochs, else a
    probe (kept from an earlier plan, or, `probing`, measured now), else other machines' records; None without
    any (a sweep's progress before its first epoch: it does not probe)."""
    if measured := own_speed(runs, device):
        return measured
    cfg = runs[0].cfg
    kept = kept_probe(cfg, device)
    if kept is None and probing:
        try:
            kept, when = probe(cfg, device), "probed just now"
        except (RuntimeError, ValueError, OSError):  # out of memory, a model that cannot be built here: not probed
            kept = None
    else:
        when = "a probe kept"
    if kept is not None:
        return Speed(kept["images_per_second"], f"{when} ({kept['measured']}): {kept['steps']} training steps of "
                                                f"{kept['batch']} random images in {kept['seconds']} s, kept in "
                                                f"{speeds_file()}; no run here yet")
    return other_speed(runs)
