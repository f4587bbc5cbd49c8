"""The plan before a sweep and its progress during it.

    python -m jal.sweep "loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8" ["<another multirun's overrides>" ...]

prints what those multiruns (`python -m jal.train -m <overrides>`, one argument each) would do on this
machine: the preset, the device, the launcher, the number of runs, how many are finished already and the
time left. scripts/sweep.sh prints it before every table sweep (DRY_RUN=1 stops there).

`Progress` is a Hydra callback (configs/hydra/callbacks/progress.yaml): during a multirun it prints a line per
run as it ends (n/N, the cell, how it ended in the words of a run alone's closing line: `finished: test
accuracy 64.32% (epoch 120)`, the sweep's ETA) and, at the end, a summary of the finished, failed and paused
runs.

The runs are Hydra's own: its basic sweeper splits the overrides into jobs, and each job's config is composed
as the launcher composes it, so the planned run directories are the directories the sweep writes.
"""

import argparse
import atexit
import contextlib
import copy
import json
import os
import shlex
import time
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, product
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from jal import launch
from jal.config import ConfigError
from jal.config_check import check_config, one_line, share_config_store
from jal.device import device_name, run_device
from jal.run_dir import (
    CHECKPOINT,
    PREVIOUS,
    RESULT,
    DirectoryConflict,
    check_same,
    differences,
    held_elsewhere,
    identity,
    latest_checkpoint,
    load_checkpoint,
    read_record,
)
from jal.tables import noise_gap
from jal.util import CONFIG_DIR, duration

TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000}  # the CIFAR test sets (synthetic: dataset.test_size)
ENDED = ("finished", "failed", "paused")  # the statuses train.py writes into result.json


# ---------------------------------------------------------------------------------------------------
# The runs of a multirun


@dataclass
class Run:
    dir: Path
    cell: str              # run_name: dataset/noise/loss/seed
    cfg: DictConfig        # the job's composed config, Hydra's node included
    _identity: dict | None = None
    fp32_dir: Path | None = None  # a run in bf16: the directory the same run has in fp32 (trainer.precision=fp32)

    def identity(self) -> dict:
        """The experiment it is (jal/run_dir.py), worked out when needed (its directory is shared or holds
        files): resolving a whole config takes ~0.1 s, too long to do for every run of a 300-run plan."""
        if self._identity is None:
            with hydra_node(self.cfg):  # run_name reads hydra:runtime.choices
                self._identity = run_identity(self.cfg)
        return self._identity

    def work(self, from_epoch: int = 0) -> float:
        """Training images left from `from_epoch` on; an evaluated test image counts as a third of a trained
        one (a forward pass against forward, backward and step)."""
        return self.work_left_after_each_epoch()[from_epoch]

    def work_left_after_each_epoch(self) -> list[float]:
        """work(e) for e = 0, 1, ..., epochs (the last 0)."""
        cfg = self.cfg
        train = cfg.dataset.subset or cfg.dataset.train_size
        test = cfg.dataset.test_subset or TEST_IMAGES.get(cfg.dataset.name, cfg.dataset.get("test_size", 0))
        epochs, eval_every = cfg.trainer.epochs, cfg.trainer.eval_every
        per_epoch = [train + ((e + 1) % eval_every == 0 or e + 1 == epochs) * test / 3 for e in range(epochs)]
        return list(accumulate(reversed(per_epoch), initial=0.0))[::-1]


@contextlib.contextmanager
def hydra_node(cfg: DictConfig):
    """Inside, `${hydra:...}` resolves against `cfg`'s own Hydra node, as in jal.util.hydra_runtime, but without
    the copy of the node that HydraConfig.set_config makes (a third of a 300-run plan's time): Hydra's resolver
    reads HydraConfig.get(), the `hydra` of the config HydraConfig holds, here `cfg` itself."""
    instance = HydraConfig.instance()
    saved, instance.cfg = instance.cfg, cfg
    try:
        yield
    finally:
        instance.cfg = saved


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of `python -m jal.train -m <overrides>`, in launch order, as Hydra's basic sweeper splits them:
    the cartesian product of each key's values, the first key varying slowest; a key given twice takes its
    last values."""
    choices = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = (override.sweep_string_iterator() if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        choices[key] = [f"{key}={value}" for value in values]
    return [list(job) for job in product(*choices.values())]


def settings_dirname(overrides, dirname: DictConfig) -> str:
    """hydra.job.override_dirname of a job with these (parsed) task overrides: the lines whose keys are not
    excluded, sorted, joined by item_sep, with kv_sep for '=' (Hydra's own rule)."""
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in dirname.exclude_keys)
    return dirname.item_sep.join(lines).replace("=", dirname.kv_sep)


def compose_jobs(jobs: list[list[str]], config_name: str = "train", composed: dict | None = None) -> list[DictConfig]:
    """Each job's config, as the launcher composes it (needs an initialised Hydra: inside its app or compose API).

    Hydra composes the defaults chosen by the config-group overrides, then applies the value overrides
    (`seed=124`, `noise.rate=0.8`). Composing takes ~0.1 s, so jobs that differ only in values share one
    composition and get their values by OmegaConf.update, as Hydra applies them: 297 runs compose 33 times
    (tests/test_sweep.py checks each against its own full composition). `composed`: the compositions of
    sweeps planned before, to share (the table scripts' sweeps repeat the same losses)."""
    parser = OverridesParser.create()
    composed, configs = {} if composed is None else composed, []
    for num, job in enumerate(jobs):
        parsed = parser.parse_overrides(job)
        # Hydra's rule: a value override is one whose key is no config group; dict and list values, and
        # +/~ edits, go into the composition itself.
        is_value = [not (CONFIG_DIR / o.key_or_group).is_dir() and not o.is_hydra_override()
                    and not (o.is_add() or o.is_delete() or o.is_force_add())
                    and not isinstance(o.value(), (dict, list)) for o in parsed]
        groups = tuple(o.input_line for o, value in zip(parsed, is_value) if not value)
        if groups not in composed:
            composed[groups] = compose(config_name, list(groups), return_hydra_config=True)
        cfg = copy.deepcopy(composed[groups])
        for override, value in zip(parsed, is_value):
            if value:
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in parsed if not o.is_hydra_override()]
            cfg.hydra.job.override_dirname = settings_dirname([o for o in parsed if not o.is_hydra_override()],
                                                              cfg.hydra.job.config.override_dirname)
            cfg.hydra.job.id, cfg.hydra.job.num = num, num  # as the basic and joblib launchers set them
        configs.append(cfg)
    return configs


def plan_runs(overrides: list[str], config_name: str = "train", composed: dict | None = None) -> list[Run]:
    """The runs of one multirun, in launch order, with the directory Hydra's run_job gives each; raises
    ConfigError for a wrong value in any run, two runs of different experiments that would share a directory,
    or a directory that holds another experiment or a damaged file. `composed`: see compose_jobs."""
    runs = []
    for cfg in compose_jobs(sweep_jobs(overrides), config_name, composed):
        with hydra_node(cfg):  # run_name reads hydra:runtime.choices
            check_config(cfg)  # every run's values, before the first one trains
            run = Run(Path(sweep_dir(cfg)), cfg.run_name, cfg)
            if run_precision(cfg)[0] == "bf16":  # its fp32 twin, whose record a plan in bf16 would not see
                precision = cfg.trainer.precision
                cfg.trainer.precision = "fp32"
                run.fp32_dir = Path(sweep_dir(cfg))
                cfg.trainer.precision = precision
            runs.append(run)
    check_directories(runs)
    return runs


def sweep_dir(cfg: DictConfig) -> str:
    return os.path.abspath(os.path.join(cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir))


def run_precision(cfg: DictConfig) -> tuple[str, str]:
    """(precision, reason): what a run of `cfg` trains in on this machine, as train.py chooses it."""
    from jal.device import choose_precision

    return choose_precision(cfg.trainer.precision, run_device(cfg.trainer.device))


def run_identity(cfg: DictConfig) -> dict:
    """The identity train.py gives a run of `cfg` on this machine (jal/run_dir.py)."""
    from jal.run_dir import plain_config

    return identity(plain_config(cfg), run_precision(cfg)[0])


def job_line(run: Run) -> str:
    return " ".join(o for o in run.cfg.hydra.overrides.task if not o.startswith(SHOWN_ABOVE)) or "(no overrides)"


def check_directories(runs: list[Run]) -> None:
    """One directory, one experiment: across the sweep's runs, and against what each directory holds."""
    first_of = {}
    for run in runs:
        if run.dir in first_of:
            other = first_of[run.dir]
            if other.identity() != run.identity():
                raise DirectoryConflict(
                    f"two runs of different experiments would share {run.dir}: [{job_line(other)}] and "
                    f"[{job_line(run)}] ({differences(other.identity(), run.identity())}): add the setting that "
                    "tells them apart to the overrides, or take it out of "
                    "hydra.job.config.override_dirname.exclude_keys")
            continue
        first_of[run.dir] = run
        if run.cfg.trainer.restart or not any((run.dir / name).exists() for name in (RESULT, CHECKPOINT, PREVIOUS)):
            continue  # its files will be moved aside, or it has none
        if (record := read_record(run.dir)) is not None:
            check_same(record, run.identity(), run.dir / RESULT)
            if record.get("status") == "finished":
                continue
        latest_checkpoint(run.dir, run.identity(), warn=lambda line: None, mend=False)


def fusions(runs: list[Run], fuse: int) -> list[list[Run]]:
    """The runs still to train, in launch order, grouped into fusions of at most `fuse` runs that can train
    together (jal.train.train_fusion): the same fixed settings and the same epoch reached."""
    from jal.run_dir import fixed_settings

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if read_status(run.dir)[0] == "finished":
            continue
        epoch = 0 if run.cfg.trainer.restart else epochs_done(run.dir)
        groups.setdefault((json.dumps(fixed_settings(run.cfg), sort_keys=True, default=str), epoch), []).append(run)
    return [group[i : i + fuse] for group in groups.values() for i in range(0, len(group), max(fuse, 1))]


def read_status(run_dir: Path) -> tuple[str, dict]:
    """(status, record): finished, failed or paused from result.json; else started (a checkpoint) or new."""
    try:
        record = read_record(run_dir)
    except DirectoryConflict:
        return "unreadable", {}
    if record is not None:
        return record.get("status", "unknown"), record
    return ("started" if (run_dir / CHECKPOINT).exists() else "new"), {}


def epochs_done(run_dir: Path) -> int:
    """Epochs an unfinished run resumes from (its checkpoint's), 0 without one."""
    try:
        return int(load_checkpoint(run_dir / CHECKPOINT)["epoch"]) if (run_dir / CHECKPOINT).exists() else 0
    except DirectoryConflict:  # a checkpoint from elsewhere or cut short: count the run as new
        return 0


# ---------------------------------------------------------------------------------------------------
# This machine: speed


def records_speed(runs: list[Run], device: str | None) -> tuple[float, int, set[str]] | None:
    """Mean training images/s of the finished records in the runs' output folders (theirs and other cells')
    that trained with this model, in this precision and with the same threads per run, on this device (None:
    on any): (images/s, number of records, their devices), or None. A sweep of cells not yet run thus
    estimates from its siblings."""
    model, threads = runs[0].cfg.hydra.runtime.choices.model, runs[0].cfg.trainer.threads
    precision = run_precision(runs[0].cfg)[0]
    roots = {Path(run.cfg.hydra.sweep.dir) for run in runs}
    speeds, devices = [], set()
    for path in sorted({path for root in roots for path in root.rglob(RESULT)}):
        status, record = read_status(path.parent)
        if (status == "finished" and device in (None, record.get("device_name")) and record.get("model") == model
                and record.get("precision", "fp32") == precision  # before records named it: fp32
                and record.get("config", {}).get("trainer", {}).get("threads") == threads):
            speeds.append(record["images_per_second"])
            devices.add(record.get("device_name", "unnamed"))
    return (sum(speeds) / len(speeds), len(speeds), devices) if speeds else None


PROBE_SECONDS = 5.0  # a probe's timed steps: three steps (~1 s) swung a plan's estimate by 40% between two calls


def speeds_file() -> Path:
    """Where the probes' speeds are kept ($XDG_CACHE_HOME/jal/speeds.json): the next plan reuses them."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jal" / "speeds.json"


def probe_key(cfg: DictConfig, device: str) -> str:
    model, precision, threads = cfg.hydra.runtime.choices.model, run_precision(cfg)[0], cfg.trainer.threads
    return f"{device} | {model} | {precision} | threads={threads or 'all'}"


def kept_speed(cfg: DictConfig, device: str) -> dict | None:
    """A probe's speed kept for this device, model, precision and threads, or None."""
    try:
        return json.loads(speeds_file().read_text()).get(probe_key(cfg, device))
    except (OSError, ValueError):
        return None


def probe_speed(cfg: DictConfig, device: str, seconds: float = PROBE_SECONDS) -> dict:
    """Training images/s of one run of `cfg` here, from train.py's own training steps on random images for
    about `seconds` (after one step to warm up; uncompiled), timed as jal.bench times them; kept in
    speeds_file() for the next plans. Returns {images_per_second, steps, batch, seconds, measured}."""
    import torch

    from jal import bench
    from jal.data import synthetic_dataset
    from jal.device import resolve_device
    from jal.util import atomic_write_json

    key = probe_key(cfg, device)
    cfg = copy.deepcopy(cfg)
    torch_device, precision = resolve_device(cfg)
    with open_dict(cfg):
        cfg.trainer.compile = False
        if torch_device.type != "cuda":  # a CPU is slow
            cfg.trainer.batch_size = min(32, cfg.trainer.batch_size)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    batch = cfg.trainer.batch_size
    fused = bench.build_fusion(cfg, synthetic_dataset(batch * 4, 1, cfg.dataset.num_classes), torch_device)
    step = partial(bench.run_fusion, fused, cfg, precision)
    _, first = bench.images_per_second(step, 1, 1, torch_device)  # the warm-up, then one step to size the probe
    steps = max(3, min(200, round(seconds / first)))
    speed, took = bench.images_per_second(step, steps, 0, torch_device)
    probe = dict(images_per_second=speed, steps=steps, batch=batch, seconds=round(took, 1),
                 measured=time.strftime("%Y-%m-%d %H:%M"))
    try:
        path = speeds_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = json.loads(path.read_text()) if path.exists() else {}
        atomic_write_json(path, {**kept, key: probe})
    except (OSError, ValueError):  # not kept: the next plan measures again
        pass
    return probe


def run_speed(runs: list[Run], device: str) -> tuple[float, str]:
    """(training images/s per run, from what): the runs' finished records on this device; else a probe kept
    from an earlier plan on this machine; else the finished records on other machines; else a probe now."""
    if measured := records_speed(runs, device):
        return measured[0], f"mean of {measured[1]} finished runs' records on this device in this precision"
    cfg = runs[0].cfg
    if (probe := kept_speed(cfg, device)) is None and (measured := records_speed(runs, None)):
        return measured[0], (f"mean of {measured[1]} finished runs' records in this precision with these threads "
                             f"per run, from {', '.join(sorted(measured[2]))}: not this machine, none ran here yet")
    when = "kept from a probe on"
    if probe is None:
        probe, when = probe_speed(cfg, device), "probed just now,"
    return probe["images_per_second"], (f"{when} {probe['measured']}: {probe['steps']} training steps of "
                                        f"{probe['batch']} random images in {probe['seconds']} s, kept in "
                                        f"{speeds_file()}; no finished run here yet")


def runs_(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


# ---------------------------------------------------------------------------------------------------
# The plan


SHOWN_ABOVE = ("experiment=", "hydra/", "hydra.", "trainer.threads=", "trainer.progress=")
GPU_MODELS = {"resnet34": "ResNet-34 (CIFAR-100's model)"}  # a run takes days on a CPU


def missing_data(runs: list[Run], download: bool = False) -> str | None:
    """The one line that stops a plan whose runs need a data file that is not there (docs/protocol.md section
    6), or None. The images torchvision can download: downloaded now with `download`, else named."""
    needed = {}  # path -> what it holds, torchvision's dataset name for the images
    for run in runs:
        cfg = run.cfg
        name, kind, folder = cfg.dataset.name, cfg.noise.type, Path(cfg.data_dir)
        if name == "synthetic":
            continue
        needed[folder / f"{name}.npz"] = ("the images", name)
        # as jal.run.make_labels reads them: the reference's instance-dependent sets at 0.2, 0.4 and 0.6
        if kind == "instance" and not cfg.noise.generate and cfg.noise.rate in (0.2, 0.4, 0.6):
            needed[folder / f"{name}_idn_labels.npz"] = ("the precomputed instance-dependent labels", None)
        if kind == "human":
            needed[folder / f"{name}n_labels.npz"] = (f"the {name.upper().replace('CIFAR', 'CIFAR-')}N labels", None)
    for path, (what, dataset) in needed.items():
        if path.is_file():
            continue
        if dataset and download:
            from jal.data import load_dataset

            print(f"{path} is missing: downloading {dataset} with torchvision before the sweep", flush=True)
            load_dataset(dataset, path.parent, num_classes=runs[0].cfg.dataset.num_classes)  # one line if it fails
            continue
        return (f"{path} is missing: put {path.name} ({what}; docs/protocol.md section 6) there or point JAL_DATA_DIR"
                f" at a folder holding it" + ("; without DRY_RUN=1 the sweep first downloads it with torchvision"
                                            if dataset else ""))
    return None


def print_plan(sweep_overrides: list[list[str]], sweeps: list[list[Run]], name: str, fuse: int = 1) -> None:
    """What the multiruns with these overrides (and those runs) will do here, and how long it will take;
    with fuse > 1, the fusions (python -m jal.fuse) each sweep's runs to train make, and how the launcher
    trains them (jal.launch.how_fusions_run)."""
    runs = [run for sweep in sweeps for run in sweep]
    first = runs[0].cfg
    preset = first.hydra.runtime.choices.get("experiment") or "none (the dataset's own protocol)"
    launcher = launch.settings(first)
    threads = first.trainer.threads
    print(f"Plan of {name}: preset {preset}")
    device = run_device(first.trainer.device)
    print(f"  device     {'CUDA' if device.type == 'cuda' else 'CPU'}: {device_name(device)}")
    precisions = sorted({run_precision(run.cfg) for run in runs})
    print(f"  precision  {'; '.join(f'{name} ({reason})' for name, reason in precisions)}")
    if fuse > 1:
        print(f"  launcher   fusions {launch.how_fusions_run(first)}")
    else:
        print(f"  launcher   {launch.how_runs_run(launcher)}, torch threads per run: "
              f"{threads if threads else 'all cores (trainer.threads=null)'}")

    statuses = {run.dir: read_status(run.dir) for run in runs}
    count = lambda status, among=runs: sum(statuses[r.dir][0] == status for r in among)  # noqa: E731
    resumed = ", ".join(f"{count(s)} {s}" for s in ("failed", "paused", "started") if count(s))
    print(f"  runs       {len(runs)} in {len(sweeps)} sweep{'s' * (len(sweeps) > 1)}: {count('finished')} finished "
          f"already, {len(runs) - count('finished')} to train"
          + (f" ({resumed} before: each resumes from its last checkpoint)" if resumed else ""))
    for overrides, sweep in zip(sweep_overrides, sweeps):
        cells = " ".join(o for o in overrides if not o.startswith(SHOWN_ABOVE))
        print(f"    {len(sweep):4d} runs, {count('finished', sweep):4d} finished: {cells}")
    todo = [r for r in runs if statuses[r.dir][0] != "finished"]
    twins = [r for r in todo if r.fp32_dir is not None and read_status(r.fp32_dir)[0] == "finished"]
    if twins:  # e.g. the committed fp32 quick records, planned again on a CPU with bf16 hardware
        print(f"  fp32       {len(twins)} of the {runs_(len(todo))} to train in bf16 have a finished fp32 record "
              f"of the same cell (its directory without /bf16): PRECISION=fp32 (trainer.precision=fp32) would "
              f"reuse {'them' if len(twins) > 1 else 'it'} instead")
    if fuse > 1:
        groups = [group for sweep in sweeps for group in fusions(sweep, fuse)]
        print(f"  fusions    {len(groups)} of at most {fuse} runs, each trained as one network (python -m jal.fuse; "
              f"sizes {', '.join(str(len(g)) for g in groups) or 'none'}); the time below is for the runs unfused: "
              "fused speed is not measured here")
        for n, group in enumerate(groups, 1):
            print(f"    fusion {n}: {', '.join(r.cell for r in group)}")
    if not todo:
        print("  time left  none: every run is finished")
        return
    models = sorted({r.cfg.hydra.runtime.choices.model for r in todo})
    speed, seconds = {}, 0.0
    for model in models:
        of_model = [r for r in runs if r.cfg.hydra.runtime.choices.model == model]
        speed[model], source = run_speed(of_model, device_name(device))  # the device name train.py records
        print(f"  speed      {model}: {speed[model]:.0f} training images/s per run ({source})")
    work = {r.dir: r.work(epochs_done(r.dir)) for r in todo}
    seconds = sum(work[r.dir] / speed[r.cfg.hydra.runtime.choices.model] for r in todo)
    if (parallel := launch.at_once(launcher)) is None:
        print(f"  time left  {duration(seconds)} of training at this machine's speed, spread over the launcher's "
              f"machines")
        return
    at_once = min(parallel, len(todo))
    print(f"  time left  about {duration(seconds / at_once)}: {runs_(len(todo))}, {sum(work.values()):,.0f} "
          f"training images (an evaluated image counted as a third), {at_once} at a time")
    gpu_models = sorted({model for model in models if model in GPU_MODELS})
    if device.type == "cpu" and gpu_models:
        of_gpu = [r for r in todo if r.cfg.hydra.runtime.choices.model in gpu_models]
        per_run = sum(work[r.dir] / speed[r.cfg.hydra.runtime.choices.model] for r in of_gpu) / len(of_gpu)
        print(f"  GPU work   {', '.join(GPU_MODELS[m] for m in gpu_models)} on this CPU: about {duration(per_run)} "
              f"per run. This table is GPU work: on a machine with a CUDA GPU the same command trains it "
              f"(make gpu-check first)")


# ---------------------------------------------------------------------------------------------------
# Progress during a multirun: a Hydra callback


class Progress(Callback):
    """A line per run of a multirun as it ends, and a closing summary; nothing for a single run.

    With the joblib and submitit launchers, on_job_end runs in a worker process holding a copy of this
    object made when the jobs were sent, so the runs that ended are counted from their records on disk."""

    def __init__(self) -> None:
        self.runs: dict[str, str] | None = None  # run dir -> cell, in launch order
        self.summarised = False

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        try:
            runs = plan_runs(overrides, config.hydra.job.config_name)
        except (ConfigError, HydraException, OmegaConfBaseException) as err:
            # a wrong setting in any run of the sweep: one line before anything trains (Hydra turns an
            # Exception from a callback into a warning; SystemExit passes through)
            raise SystemExit(f"error: {one_line(err)}") from None
        self.start(runs)
        # Hydra's sweeper raises when a job failed, before on_multirun_end: the summary must not depend on it.
        atexit.register(self.summary)

    def start(self, runs: list[Run]) -> None:
        self.runs = {str(r.dir): r.cell for r in runs}
        self.started = time.time()
        self.finished_before = {d for d in self.runs if read_status(Path(d))[0] == "finished"}
        # work left after each epoch, per run: the ETA counts the epochs of the runs still in flight too
        self.work_after = {str(r.dir): r.work_left_after_each_epoch() for r in runs}
        self.work_at_start = self.work_left()

    def work_left(self) -> dict[str, float]:
        """Training images left per run of this sweep (0 for a run that has ended), from its checkpoint."""
        return {d: 0.0 if self.has_ended(d) else work[min(epochs_done(Path(d)), len(work) - 1)]
                for d, work in self.work_after.items()}

    def eta(self) -> str:
        """Time left at the pace of the work done since the sweep started. Counting whole runs instead is
        off by the number of runs in flight when the first of them ends (parallel runs end together)."""
        now = self.work_left()
        done, left = sum(self.work_at_start.values()) - sum(now.values()), sum(now.values())
        if not left:
            return "sweep done"
        return f"ETA {duration((time.time() - self.started) * left / done)}" if done > 0 else "ETA unknown"

    def has_ended(self, run_dir: str) -> bool:
        """Finished before this sweep started, or ended since (a run paused before keeps its paused record
        while it continues)."""
        if run_dir in self.finished_before:
            return True
        path = Path(run_dir) / RESULT
        return path.exists() and path.stat().st_mtime >= self.started and read_status(Path(run_dir))[0] in ENDED

    def ended(self) -> list[str]:
        """The runs of this sweep that have ended."""
        return [d for d in self.runs if self.has_ended(d)]

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        run_dir = config.hydra.runtime.output_dir
        if self.runs is None or run_dir in self.finished_before:  # a single run, or one skipped as finished
            return
        status, record = read_status(Path(run_dir))
        ended, total = len(self.ended()), len(self.runs)
        if holder := held_elsewhere(Path(run_dir)):
            what = f"running elsewhere ({holder}): not started here"
        elif status in ENDED:  # the closing line a run alone prints (its directory: out_root/cell)
            from jal.run import ending

            what = ending(record)
        else:
            try:
                value = job_return.return_value  # raises if the job failed
            except Exception as err:
                what = f"failed before writing a record: {type(err).__name__}: {err}"
            else:  # a run that finds the sweep stopping (stop_at passed, a stop signal) exits before it starts
                what = ("not started: the sweep is stopping (trainer.stop_at passed or a stop signal)"
                        if status == "new" and value is None
                        else f"ended without a record ({status}), returning {value}")
        eta = "sweep done" if ended == total else self.eta()
        print(f"[{ended}/{total}] {self.runs.get(run_dir, run_dir)}: {what} ({eta})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.summary()

    def summary(self) -> None:
        if self.runs is None or self.summarised:
            return
        self.summarised = True
        statuses = {d: read_status(Path(d)) for d in self.runs}
        by = {s: [d for d in self.runs if statuses[d][0] == s] for s in ENDED}
        other = [d for d in self.runs if statuses[d][0] not in ENDED]
        print(f"Sweep summary: {runs_(len(self.runs))}: {len(by['finished'])} finished, {len(by['failed'])} failed, "
              f"{len(by['paused'])} paused, {len(other)} not run to an end", flush=True)
        for d in by["failed"]:
            print(f"  failed  {self.runs[d]}: {statuses[d][1].get('error', 'no error recorded')}")
        for d in by["paused"]:
            print(f"  paused  {self.runs[d]} (starting the sweep again resumes it)")
        for d in by["finished"]:
            if gap := noise_gap(statuses[d][1]):
                print(f"  noise   {self.runs[d]}: {gap[0]:.1%} of its training labels changed, {gap[1]:.1%} asked "
                      "(more than 1 pp off: its table cell is marked)")
        for d in other:
            elsewhere = held_elsewhere(Path(d))
            print(f"  not run to an end  {self.runs[d]} "
                  + (f"(running elsewhere: {elsewhere})" if elsewhere else f"({statuses[d][0]})"))
        print(flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="one multirun's overrides per argument, shell-quoted")
    parser.add_argument("--name", default="the sweep", help="what the plan is of, e.g. reproduce_cifar10")
    parser.add_argument("--fuse", type=int, default=1, help="K > 1: the fusions of at most K runs (jal.fuse)")
    parser.add_argument("--download", action="store_true",
                        help="download the missing images torchvision can download (else: a missing file stops)")
    args = parser.parse_args(argv)
    overrides = [shlex.split(sweep) for sweep in args.sweeps]
    share_config_store()
    try:
        composed = {}  # the sweeps share their compositions
        sweeps = []
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):  # as jal.train names it
            for sweep in overrides:
                sweeps.append(plan_runs(sweep, composed=composed))
                if missing := missing_data(sweeps[-1], args.download):  # before the other sweeps are planned
                    raise SystemExit(f"error: {missing}")
        print_plan(overrides, sweeps, args.name, args.fuse)
    except (ConfigError, HydraException, OmegaConfBaseException, FileNotFoundError) as err:  # one line
        raise SystemExit(f"error: {one_line(err)}") from None


if __name__ == "__main__":
    main()
