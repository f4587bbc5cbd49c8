"""The plan before a sweep.

    python -m jal.plan "loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8" ["<another multirun's overrides>" ...]

prints what those multiruns (`python -m jal.train -m <overrides>`, one argument each) would do on this
machine: the preset, the device, the launcher, the number of runs, how many are finished already and where
those were trained (here, with the repository, on another machine), and the time left (jal.estimate: this
machine's own epochs, else a probe of a few seconds, kept for the next plan, else other machines' records).
A plan downloads nothing and stops at nothing it can list: the data files and pretrained weights not there yet
are listed after it. scripts/sweep.sh prints it before every table sweep (DRY_RUN=1 stops there).

The runs are planned by jal.multirun (the directories the sweep writes); their progress during the sweep is
jal.progress's.
"""

import argparse
import shlex
from pathlib import Path

from hydra import initialize_config_dir

from jal import launch, tune
from jal import record as records
from jal.config_check import share_config_store
from jal.device import device_name, run_device
from jal.errors import ConfigError, boundary
from jal.estimate import run_speed
from jal.experiment import choose, data_files
from jal.multirun import SHOWN_ABOVE, Run, Search, fusions, plan_sweep, runs_
from jal.preflight import check_group_choices
from jal.record import Origin, Status, origin
from jal.util import CONFIG_DIR, duration

# ---------------------------------------------------------------------------------------------------
# The plan


GPU_MODELS = {"resnet34": "ResNet-34 (CIFAR-100's model)"}  # a run takes days on a CPU


def not_there_yet(runs: list[Run], download: bool = False) -> tuple[list[str], list[str]]:
    """(what the runs need that is not here, of it what no sweep can fetch): the data files
    (jal.experiment.data_files) and a pretrained model's weights, a line each. With `download` (a sweep about to
    start) the images torchvision can download and the weights are fetched now, once, before parallel runs
    would each fetch them; without it (DRY_RUN=1) nothing is downloaded: they are listed."""
    needed = {file.path: file for run in runs for file in data_files(run.cfg)}
    lines, blocking = [], []
    for path, file in needed.items():
        if path.exists():
            continue
        if file.downloadable and download:
            from jal.data import load_dataset

            name = path.stem
            print(f"{path} is missing: downloading {name} with torchvision before the sweep", flush=True)
            load_dataset(name, path.parent, num_classes=runs[0].cfg.dataset.num_classes)  # one line if it fails
            continue
        lines.append(file.missing() + ("; the sweep (without DRY_RUN=1) first downloads it with torchvision"
                                       if file.downloadable else ""))
        if not file.downloadable:
            blocking.append(lines[-1])
    if any(run.cfg.model.get("pretrained") for run in runs) and (weights := pretrained_weights())[0] is not None:
        path, url = weights
        if download:
            import torch

            print(f"{path} is missing: downloading ResNet-50's ImageNet weights before the sweep", flush=True)
            try:
                torch.hub.load_state_dict_from_url(url, progress=False)
            except Exception as err:  # offline: what to put where, in one line
                blocking.append(f"{path} is missing and could not be downloaded ({type(err).__name__}): put "
                                f"{url} there ($TORCH_HOME/hub/checkpoints), or model.pretrained=false")
        else:
            lines.append(f"{path} is missing: ResNet-50's ImageNet weights ({url}); the sweep (without DRY_RUN=1) "
                         "first downloads them, or put that file there ($TORCH_HOME/hub/checkpoints)")
    return lines, blocking


def pretrained_weights() -> tuple[Path | None, str]:
    """(where torch's cache keeps ResNet-50's ImageNet weights when they are missing, else None; their URL): the
    file jal.models.resnet50 loads through torchvision's weights API."""
    import torch
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return (None if path.exists() else path), url


RETRAIN = "out_root=DIR"  # what trains every run of a sweep into a folder of the user's (a table's: make's OUT=DIR)


def print_header(runs: list[Run], name: str, fuse: int = 1) -> tuple[dict, object]:
    """The plan's first lines: the preset, device, precision and launcher of these runs; (launcher, device)."""
    first = runs[0].cfg
    preset = first.hydra.runtime.choices.get("experiment") or "none (the dataset's own protocol)"
    launcher = launch.settings(first.hydra)
    if launch.kind(launcher) == "slurm":  # what sbatch would refuse, said before the first sweep is submitted
        launch.check_fits(launcher)
    threads = first.trainer.threads
    print(f"Plan of {name}: preset {preset}")
    device = run_device(first.trainer.device)
    print(f"  device     {'CUDA' if device.type == 'cuda' else 'CPU'}: {device_name(device)}")
    precisions = sorted({choose(run.cfg)[1:] for run in runs})
    print(f"  precision  {'; '.join(f'{name} ({reason})' for name, reason in precisions)}")
    if fuse > 1:
        print(f"  launcher   fusions {launch.how_fusions_run(launcher, threads)}")
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
    measured = run_speed([search.example], device_name(device))
    if measured is None:
        print(f"  speed      {model}: unknown (no run here, the probe failed, no records elsewhere)")
        print("  time left  unknown")
        return
    speed = measured.images_per_second
    print(f"  speed      {model}: {speed:.0f} images/s per run (jal.estimate: {measured.source})")
    work = search.example.work()
    if (parallel := launch.at_once(launcher)) is None:
        print(f"  time left  {duration(left * work / speed)} of training at this machine's speed, spread over the "
              "launcher's machines")
        return
    at_once = max(1, min(parallel, search.at_once, left))
    print(f"  time left  about {duration(left * work / speed / at_once)}: {left} trials of {work:,.0f} training "
          f"images each (an evaluated image counted as a third), {at_once} at a time")


def print_plan(sweep_overrides: list[list[str]], sweeps: list[list[Run]], name: str, fuse: int = 1,
               retrain: str = RETRAIN) -> None:
    """What the multiruns with these overrides (and those runs) will do here, and how long it will take;
    with fuse > 1, the fusions (python -m jal.fuse) each sweep's runs to train make, and how the launcher
    trains them (jal.launch.how_fusions_run). Of the runs finished already it says how many were trained here,
    came with the repository or from another machine, and, where some were not trained here, `retrain`: what
    trains every run here instead."""
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
    if finished := [statuses[r.dir][1] for r in runs if statuses[r.dir][0] == Status.FINISHED]:
        elsewhere = any(origin(record) != Origin.HERE for record in finished)
        what = "finished run" + "s" * (len(finished) != 1)
        print(f"  finished   {records.provenance_line(finished, what)}"
              + (f": they count as done; {retrain} trains every run here instead, into a folder of yours"
                 if elsewhere else ""))
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
        measured = run_speed(of_model, device_name(device))  # the device name train.py records
        if measured is None:
            print(f"  speed      {model}: unknown (no run here, the probe failed, no records elsewhere)")
            print("  time left  unknown")
            return
        speed[model] = measured.images_per_second
        print(f"  speed      {model}: {speed[model]:.0f} images/s per run (jal.estimate: {measured.source})")
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


def split_sweep(sweep: str) -> list[str]:
    """One multirun's overrides as given in one argument, shell-quoted; a quote left open is named in one line."""
    try:
        return shlex.split(sweep)
    except ValueError as err:  # shlex: "No closing quotation", "No escaped character"
        raise ConfigError(f"the sweep [{sweep}] cannot be split into overrides ({err}): close its quotes, e.g. "
                          "\"loss=ce,jal_ce 'noise.rate=0.4,0.8'\"") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="one multirun's overrides per argument, shell-quoted")
    parser.add_argument("--name", default="the sweep", help="what the plan is of, e.g. reproduce_cifar10")
    parser.add_argument("--fuse", type=int, default=1, help="K > 1: the fusions of at most K runs (jal.fuse)")
    parser.add_argument("--retrain", default=RETRAIN,
                        help=f"what trains every run into a folder of the user's (default {RETRAIN}), e.g. "
                             "'make reproduce-cifar10 OUT=DIR'")
    parser.add_argument("--download", action="store_true",
                        help="the sweep starts next: download the missing images torchvision can download and "
                             "pretrained weights (else they are listed), and stop at a missing file none can")
    args = parser.parse_args(argv)
    share_config_store()
    with boundary():
        overrides = [split_sweep(sweep) for sweep in args.sweeps]
        composed = {}  # the sweeps share their compositions
        planned, notes, blocking = [], [], []  # each multirun's runs, or its Search (a sweeper that draws: jal.tune)
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):  # as jal.train names it
            for sweep in overrides:
                check_group_choices(sweep)
                planned.append(plan_sweep(sweep, composed=composed))
                runs = [planned[-1].example] if isinstance(planned[-1], Search) else planned[-1]
                missing, cannot = not_there_yet(runs, args.download)
                notes += [line for line in missing if line not in notes]
                blocking += cannot
        for search in (p for p in planned if isinstance(p, Search)):
            print_search_plan(search, args.name)
        sweeps = [(o, p) for o, p in zip(overrides, planned) if not isinstance(p, Search)]
        if sweeps:
            print_plan([o for o, _ in sweeps], [p for _, p in sweeps], args.name, args.fuse, args.retrain)
        for run in {run.dir: run for _, sweep in sweeps for run in sweep}.values():
            if line := run.blocked():  # a damaged file of its own: the sweep trains the others
                print(f"{Status.BLOCKED}: {run.name}: {line}")
        for note in notes:
            print(f"not there yet: {note}")
        if args.download and blocking:  # the sweep cannot start without it
            raise SystemExit(f"error: {blocking[0]}")


if __name__ == "__main__":
    main()
