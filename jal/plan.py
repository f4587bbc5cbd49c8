"""The plan before a sweep.

    python -m jal.plan "loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8" ["<another multirun's overrides>" ...]

prints what those multiruns (`python -m jal.train -m <overrides>`, one argument each) would do on this
machine: the preset, the device, the launcher, the number of runs, how many are finished already and the
time left, at this machine's speed (its finished records, else a probe of a few seconds, kept for the next
plan). scripts/sweep.sh prints it before every table sweep (DRY_RUN=1 stops there).

The runs are planned by jal.multirun (the directories the sweep writes); their progress during the sweep is
jal.progress's.
"""

import argparse
import copy
import json
import os
import shlex
import time
from functools import partial
from pathlib import Path

from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from jal import launch, tune
from jal import record as records
from jal.config import REAL_WORLD, ConfigError
from jal.config_check import one_line, share_config_store
from jal.device import device_name, run_device
from jal.experiment import choose, data_files
from jal.multirun import SHOWN_ABOVE, Run, Search, fusions, plan_sweep, runs_
from jal.record import Status
from jal.util import CONFIG_DIR, CannotWrite, duration

# ---------------------------------------------------------------------------------------------------
# This machine: speed


def records_speed(runs: list[Run], device: str | None) -> tuple[float, int, set[str]] | None:
    """Mean training images/s of the finished records in the runs' output folders (theirs and other cells')
    that trained with this model, in this precision and with the same threads per run, on this device (None:
    on any): (images/s, number of records, their devices), or None. A sweep of cells not yet run thus
    estimates from its siblings."""
    model, threads = runs[0].cfg.hydra.runtime.choices.model, runs[0].cfg.trainer.threads
    precision = choose(runs[0].cfg)[1]
    roots = sorted({Path(run.cfg.hydra.sweep.dir) for run in runs})
    speeds, devices = [], set()
    for record in records.scan(roots, warn=lambda line: None):
        if (record.status == Status.FINISHED and device in (None, record.device_name) and record.model == model
                and (record.precision or "fp32") == precision  # before records named it: fp32
                and (record.config or {}).get("trainer", {}).get("threads") == threads):
            speeds.append(record.images_per_second)
            devices.add(record.device_name or "unnamed")
    return (sum(speeds) / len(speeds), len(speeds), devices) if speeds else None


PROBE_SECONDS = 5.0  # a probe's timed steps: three steps (~1 s) swung a plan's estimate by 40% between two calls


def speeds_file() -> Path:
    """Where the probes' speeds are kept ($XDG_CACHE_HOME/jal/speeds.json): the next plan reuses them."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jal" / "speeds.json"


def probe_key(cfg: DictConfig, device: str) -> str:
    model, precision, threads = cfg.hydra.runtime.choices.model, choose(cfg)[1], cfg.trainer.threads
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
    from jal.util import atomic_write_json

    key = probe_key(cfg, device)
    cfg = copy.deepcopy(cfg)
    torch_device, precision, _ = choose(cfg)
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


# ---------------------------------------------------------------------------------------------------
# The plan


GPU_MODELS = {"resnet34": "ResNet-34 (CIFAR-100's model)"}  # a run takes days on a CPU


def missing_data(runs: list[Run], download: bool = False) -> str | None:
    """The one line that stops a plan whose runs need a data file that is not there (jal.experiment.data_files),
    or None. The images torchvision can download: downloaded now with `download`, else named."""
    needed = {file.path: file for run in runs for file in data_files(run.cfg)}
    for path, file in needed.items():
        if path.exists():
            continue
        if file.downloadable and download:
            from jal.data import load_dataset

            name = path.stem
            print(f"{path} is missing: downloading {name} with torchvision before the sweep", flush=True)
            load_dataset(name, path.parent, num_classes=runs[0].cfg.dataset.num_classes)  # one line if it fails
            continue
        return file.missing() + ("; without DRY_RUN=1 the sweep first downloads it with torchvision"
                                 if file.downloadable else "")
    return None


def print_header(runs: list[Run], name: str, fuse: int = 1) -> tuple[dict, object]:
    """The plan's first lines: the preset, device, precision and launcher of these runs; (launcher, device)."""
    first = runs[0].cfg
    preset = first.hydra.runtime.choices.get("experiment") or "none (the dataset's own protocol)"
    launcher = launch.settings(first)
    if launch.kind(launcher) == "slurm":  # what sbatch would refuse, said before the first sweep is submitted
        launch.check_fits(launcher)
    threads = first.trainer.threads
    print(f"Plan of {name}: preset {preset}")
    device = run_device(first.trainer.device)
    print(f"  device     {'CUDA' if device.type == 'cuda' else 'CPU'}: {device_name(device)}")
    precisions = sorted({choose(run.cfg)[1:] for run in runs})
    print(f"  precision  {'; '.join(f'{name} ({reason})' for name, reason in precisions)}")
    if fuse > 1:
        print(f"  launcher   fusions {launch.how_fusions_run(first)}")
    else:
        print(f"  launcher   {launch.how_runs_run(launcher)}, torch threads per run: "
              f"{threads if threads else 'all cores (trainer.threads=null)'}")
    return launcher, device


def print_search_plan(search: Search, name: str) -> None:
    """What a search (jal.tune) will do here: its trials are drawn as it goes, so they are counted, not listed,
    and timed as runs like its example trial."""
    launcher, device = print_header([search.example], name)
    finished = len(search.finished())
    trials = search.trials if search.trials is not None else finished
    print(f"  search     {trials} trials drawn by {search.sweeper} ({search.sampler}), {search.at_once} at a time, "
          f"into {search.folder}: {finished} finished there already"
          + (" (the same search started again replays them: they train nothing new)" if finished else ""))
    print(f"  drawn      {'; '.join(f'{key} {text}' for key, text in search.space.items())}")
    cfg = search.example.cfg
    print(f"  objective  the last epoch's accuracy on dataset.val_fraction={tune.val_fraction(cfg):g} of the training "
          "set, held out, against its given (noisy) labels; the test set is not looked at")
    left = max(trials - finished, 0)
    if not left:
        print("  time left  none: every trial is finished")
        return
    model = cfg.hydra.runtime.choices.model
    speed, source = run_speed([search.example], device_name(device))
    print(f"  speed      {model}: {speed:.0f} training images/s per run ({source})")
    work = search.example.work()
    if (parallel := launch.at_once(launcher)) is None:
        print(f"  time left  {duration(left * work / speed)} of training at this machine's speed, spread over the "
              "launcher's machines")
        return
    at_once = max(1, min(parallel, search.at_once, left))
    print(f"  time left  about {duration(left * work / speed / at_once)}: {left} trials of {work:,.0f} training "
          f"images each (an evaluated image counted as a third), {at_once} at a time")


def print_plan(sweep_overrides: list[list[str]], sweeps: list[list[Run]], name: str, fuse: int = 1) -> None:
    """What the multiruns with these overrides (and those runs) will do here, and how long it will take;
    with fuse > 1, the fusions (python -m jal.fuse) each sweep's runs to train make, and how the launcher
    trains them (jal.launch.how_fusions_run)."""
    runs = [run for sweep in sweeps for run in sweep]
    launcher, device = print_header(runs, name, fuse)

    statuses = {run.dir: records.status(run.dir) for run in runs}
    count = lambda status, among=runs: sum(statuses[r.dir][0] == status for r in among)  # noqa: E731
    resumed = ", ".join(f"{count(s)} {s}" for s in (Status.FAILED, Status.PAUSED, Status.STARTED) if count(s))
    print(f"  runs       {len(runs)} in {len(sweeps)} sweep{'s' * (len(sweeps) > 1)}: {count(Status.FINISHED)} "
          f"finished already, {len(runs) - count(Status.FINISHED)} to train"
          + (f" ({resumed} before: each resumes from its last checkpoint)" if resumed else ""))
    for overrides, sweep in zip(sweep_overrides, sweeps):
        cells = " ".join(o for o in overrides if not o.startswith(SHOWN_ABOVE))
        print(f"    {len(sweep):4d} runs, {count(Status.FINISHED, sweep):4d} finished: {cells}")
    todo = [r for r in runs if statuses[r.dir][0] != Status.FINISHED]
    twins = [r for r in todo if r.fp32_dir is not None and records.status(r.fp32_dir)[0] == Status.FINISHED]
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
            print(f"    fusion {n}: {', '.join(r.name for r in group)}")
    if not todo:
        print("  time left  none: every run is finished")
        return
    models = sorted({r.cfg.hydra.runtime.choices.model for r in todo})
    speed, seconds = {}, 0.0
    for model in models:
        of_model = [r for r in runs if r.cfg.hydra.runtime.choices.model == model]
        speed[model], source = run_speed(of_model, device_name(device))  # the device name train.py records
        print(f"  speed      {model}: {speed[model]:.0f} training images/s per run ({source})")
    work = {r.dir: r.work(r.epochs_done()) for r in todo}
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
        planned, notes = [], []  # each multirun's runs, or its Search (a sweeper that draws: jal.tune)
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):  # as jal.train names it
            for sweep in overrides:
                planned.append(plan_sweep(sweep, composed=composed))
                runs = [planned[-1].example] if isinstance(planned[-1], Search) else planned[-1]
                if missing := missing_data(runs, args.download):  # before the other sweeps are planned
                    if args.download or runs[0].cfg.dataset.name not in REAL_WORLD:
                        raise SystemExit(f"error: {missing}")
                    notes.append(missing)  # a dry run of a real-world table: its plan, then what is missing
        for search in (p for p in planned if isinstance(p, Search)):
            print_search_plan(search, args.name)
        if sweeps := [(o, p) for o, p in zip(overrides, planned) if not isinstance(p, Search)]:
            print_plan([o for o, _ in sweeps], [p for _, p in sweeps], args.name, args.fuse)
        for note in notes:
            print(f"not there yet: {note}")
    except (ConfigError, HydraException, OmegaConfBaseException, FileNotFoundError, CannotWrite) as err:  # one line
        raise SystemExit(f"error: {one_line(err)}") from None


if __name__ == "__main__":
    main()
