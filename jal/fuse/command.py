"""Train a sweep's runs fused, at most K at a time: `python -m jal.fuse --fuse K <overrides>` (jal-fuse).

The sweep's runs are planned as `python -m jal.train -m <overrides>` plans them, grouped into fusions, launched
(jal.fuse.tasks), and a line per member says how it ended, with the sweep's ETA; then a summary. Its exit
status is -m's (docs/runs.md): 1 when a run failed or is blocked (cannot train until something is fixed), 0
when every run finished, paused or was not started by a stop."""

import argparse
import logging
import sys

from hydra import initialize_config_dir

from jal import launch
from jal.errors import ConfigError, boundary
from jal.fuse.logs import CONSOLE_FORMAT
from jal.fuse.tasks import fusion_tasks, launch_fusions
from jal.record import ENDED, Record, Status, ending
from jal.util import CONFIG_DIR


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jal.fuse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuse", type=int, default=8, help="at most this many runs per fusion (default 8)")
    parser.add_argument("overrides", nargs="*", help="the overrides of `python -m jal.train -m`")
    args = parser.parse_args(argv)
    if args.fuse < 1:
        with boundary():
            raise ConfigError(f"--fuse {args.fuse}: a fusion holds at least one run; e.g. --fuse 8 (--fuse 1 trains "
                              "each run alone)")
    logging.basicConfig(level=logging.INFO, format=CONSOLE_FORMAT, stream=sys.stdout)
    from jal import multirun  # the plan's imports load here, after the arguments: --help answers sooner
    from jal.progress import Progress, finished_lines, stop_signal

    results = []
    with boundary():
        # job_name: the job's name as `python -m jal.train` has it (its train.log, a SLURM job's name)
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
            runs = multirun.plan_runs(args.overrides)
            groups = multirun.fusions(runs, args.fuse)
            launcher = launch.settings(runs[0].cfg.hydra)
            blocked = {r.dir: r for r in runs if r.blocked()}.values()  # a run named twice: once
            print(f"{multirun.runs_(len(runs))}: {len(runs) - sum(map(len, groups)) - len(blocked)} finished "
                  f"already, {len(groups)} fusion{'s' * (len(groups) != 1)} of at most {args.fuse} to train, "
                  f"{launch.how_fusions_run(launcher, runs[0].cfg.trainer.threads)}", flush=True)
            for run in blocked:  # a damaged file of its own: the others train on
                print(f"[{Status.BLOCKED}] {run.name}: {run.blocked()}", flush=True)
                results.append(Record(status=Status.BLOCKED, reason=run.blocked()))
            tasks = fusion_tasks(groups)
            progress = Progress()  # the sweep's ETA from its runs' checkpoints, as a plain sweep's
            progress.start(runs)
            for task, ended in launch_fusions(tasks, launcher):
                eta = progress.eta()
                for name, result in zip(task.names, ended):  # in the words of a run alone's closing line
                    print(f"[fusion {task.number}/{task.of}] {name}: {ending(result)} ({eta})", flush=True)
                    results.append(result)
    # Ctrl-C, a second SIGTERM: each member has said where it stopped (jal.train), jal.stops.command exits
    counts = {s: sum(r.status == s for r in results) for s in (*ENDED, Status.BLOCKED)}
    blocked = counts.pop(Status.BLOCKED)
    not_run = len(results) - sum(counts.values()) - blocked  # not started (a stop signal came first), elsewhere
    print(f"Fused sweep summary: {multirun.runs_(len(results))} trained here: " + ", ".join(
        f"{n} {s}" for s, n in counts.items()) + f", {not_run} not run to an end"
        + (f", {blocked} {Status.BLOCKED} (each said why above; the same command trains it once that is fixed)"
           if blocked else ""))
    finished = {run.name: record for run in runs if (record := run.status()[1]) is not None
                and record.status == Status.FINISHED}  # those finished before it too
    for line in finished_lines(finished):
        print(line)
    if (counts[Status.PAUSED] or not_run) and (name := stop_signal()):  # a stop signal came (before, or between
        # the fusions): as a plain sweep's summary says it (jal.progress)
        print(f"  stopped by {name}: the same command continues the sweep")
    if counts[Status.FAILED] or blocked:  # the exit status of -m too (jal.progress.Progress.on_multirun_end)
        sys.exit(1)
