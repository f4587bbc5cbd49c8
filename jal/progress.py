"""A multirun's progress lines, through a Hydra callback (configs/hydra/callbacks/progress.yaml); a run's own
progress bar is jal/progress_bar.py's.

`Progress` prints a line per run as it ends (n/N, the cell, how it ended in the words of a run alone's
closing line: `finished: test accuracy 64.32% (epoch 120)`, the sweep's ETA) and, at the end, a summary of
the finished, failed and paused runs. It plans the sweep's runs from its overrides (jal.multirun.plan_runs);
a fused sweep (jal.fuse) prints the same ETA. A search (jal.tune) draws its trials as it goes: a line per trial
as it ends (its number of the search's trials, how it ended, its objective), and at the end the best trial's
settings, in one line and in the search's best_overrides.txt.
"""

import atexit
import signal
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from jal import record as records
from jal import stops, tune
from jal.errors import boundary
from jal.estimate import eta_words, run_speed
from jal.experiment import differences
from jal.multirun import Run, Search, plan_runs, runs_, search_of
from jal.noise import noise_gap
from jal.record import ENDED, Record, Status, ending, provenance_line
from jal.run_dir import check_writable, held_elsewhere
from jal.util import duration, write_refusal


def stop_signal() -> str | None:
    """The stop signal this process received (a sweep through the basic launcher), by name, if one came."""
    return signal.Signals(stops.PROCESS_STOPS.first).name if stops.PROCESS_STOPS.first is not None else None


def finished_lines(finished: dict[str, Record]) -> list[str]:
    """A sweep summary's lines on its finished runs (named): where they trained (a finished run may have come
    with the repository), and each whose realised noise rate is more than 1 pp off the asked one."""
    if not finished:
        return []
    what = "finished run" + "s" * (len(finished) != 1)
    return [f"  where   {provenance_line(list(finished.values()), what)}"] + [
        f"  noise   {name}: {gap.line} (more than 1 pp off: its table cell is marked)"
        for name, record in finished.items() if (gap := noise_gap(record))]


class Progress(Callback):
    """A line per run of a multirun as it ends, and a closing summary; nothing for a single run.

    With the joblib and submitit launchers, on_job_end runs in a worker process holding a copy of this
    object made when the jobs were sent, so the runs that ended are counted from their records on disk."""

    def __init__(self) -> None:
        self.runs: dict[str, str] | None = None  # run dir -> run name, in launch order
        self.planned: dict[str, Run] = {}  # run dir -> its run (the experiment it is)
        self.summarised, self.not_ours, self.not_done = False, [], []
        self.search: Search | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        # a wrong setting in any run of the sweep: one line before anything trains (Hydra turns an Exception from
        # a callback into a warning; the boundary's SystemExit passes through)
        with boundary():
            if tune.is_search(config.hydra):  # its trials are drawn as it goes: planned as a Search
                tune.check_fixed(list(config.hydra.overrides.task))
                self.start_search(search_of(config, config.hydra.job.config_name))
                return
            runs = plan_runs(overrides, config.hydra.job.config_name)
        self.start(runs)
        if refused := write_refusal(config.hydra.sweep.dir):  # every run is finished (plan_runs refuses one to
            # train there); Hydra's sweeper would fail writing its multirun.yaml into the folder: the summary, and done
            print(f"{config.hydra.sweep.dir}: {refused[0]}: nothing to train, every run is finished there", flush=True)
            self.summary()
            raise SystemExit(1 if self.not_done else 0)
        # Hydra's sweeper raises when a job failed, before on_multirun_end: the summary must not depend on it.
        atexit.register(self.summary)

    def start(self, runs: list[Run]) -> None:
        self.runs = {str(r.dir): r.name for r in runs}
        self.planned = {str(r.dir): r for r in runs}
        self.started = time.time()
        self.finished_before = {d for d in self.runs if self.status(d)[0] == Status.FINISHED}
        # work left after each epoch, per run: the ETA counts the epochs of the runs still in flight too
        self.work_after = {str(r.dir): r.work_left_after_each_epoch() for r in runs}
        self.work_at_start = self.work_left()

    def work_left(self) -> dict[str, float]:
        """Training images left per run of this sweep (0 for a run that has ended), from its checkpoint."""
        return {d: 0.0 if self.has_ended(d) else work[min(self.planned[d].epochs_done(), len(work) - 1)]
                for d, work in self.work_after.items()}

    def eta(self) -> str:
        """Time left at the pace of the work done since the sweep started (jal.estimate.eta_words); before any,
        at the speed jal.estimate gives a run here (no probe), as many at a time as the launcher runs. Counting
        whole runs instead is off by the number of runs in flight when the first of them ends (parallel runs
        end together)."""
        now = self.work_left()
        done, left = sum(self.work_at_start.values()) - sum(now.values()), sum(now.values())
        if not left:
            return "sweep done"
        return eta_words(done, left, time.time() - self.started, self.speed() if done <= 0 else None)

    def speed(self) -> float | None:
        """The sweep's images/s before it has measured its own: a run's speed here times the runs at a time."""
        from jal import launch
        from jal.device import device_name, run_device

        runs = list(self.planned.values())
        cfg = runs[0].cfg
        measured = run_speed(runs, device_name(run_device(cfg.trainer.device)), probing=False)
        return measured and measured.images_per_second * min(launch.at_once(launch.settings(cfg.hydra)) or 1, len(runs))

    def has_ended(self, run_dir: str) -> bool:
        """Finished before this sweep started, or ended since (a run paused before keeps its paused record
        while it continues)."""
        if run_dir in self.finished_before:
            return True
        path = Path(run_dir) / records.RESULT
        return path.exists() and path.stat().st_mtime >= self.started and records.status(Path(run_dir))[0] in ENDED

    def ended(self) -> list[str]:
        """The runs of this sweep that have ended."""
        return [d for d in self.runs if self.has_ended(d)]

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if self.search is not None:
            return self.trial_ended(config, job_return)
        run_dir = config.hydra.runtime.output_dir
        if self.runs is None or run_dir in self.finished_before:  # a single run, or one skipped as finished
            return
        status, record = self.status(run_dir)
        ended, total = len(self.ended()), len(self.runs)
        if holder := held_elsewhere(Path(run_dir)):
            what = f"running elsewhere ({holder}): not started here"
        elif status not in ENDED and (blocked := self.blocked(run_dir)):
            what = f"{Status.BLOCKED}: {blocked}"
        elif status == Status.ANOTHER:
            what = self.another(run_dir, record)
        elif status in ENDED:  # the closing line a run alone prints (its directory: out_root/cell)
            what = ending(record)
        else:
            try:
                value = job_return.return_value  # raises if the job failed
            except Exception as err:
                what = f"failed before writing a record: {type(err).__name__}: {err}"
            else:  # a run that finds the sweep stopping (stop_at passed, a stop signal) exits before it starts
                why = stop_signal() or "trainer.stop_at passed or a stop signal"
                what = (f"not started: the sweep is stopping ({why})" if status == Status.NEW and value is None
                        else f"ended without a record ({status}), returning {value}")
        eta = "sweep done" if ended == total else self.eta()
        print(f"[{ended}/{total}] {self.runs.get(run_dir, run_dir)}: {what} ({eta})", flush=True)

    def status(self, run_dir: str) -> tuple[Status, Record | None]:
        """Its directory's status, ANOTHER where it holds another experiment's record (Run.status)."""
        run = self.planned.get(run_dir)
        return run.status() if run is not None else records.status(Path(run_dir))

    def blocked(self, run_dir: str) -> str | None:
        """Why the run cannot train until something is fixed (jal.multirun.Run.blocked), or None."""
        run = self.planned.get(run_dir)
        return run.blocked() if run is not None else None

    def another(self, run_dir: str, record: Record) -> str:
        differ = differences(record.identity(), self.planned[run_dir].identity(), limit=2)
        return (f"{run_dir} holds {Status.ANOTHER} ({differ}): this sweep's run did not train there; give the "
                "sweep its own out_root")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.search is not None:
            return self.best_trial(config)
        self.summary()
        if self.not_done:  # a run failed, is blocked or has no result of its own: exit status 1 (docs/runs.md)
            raise SystemExit(1)

    def summary(self) -> None:
        if self.runs is None or self.summarised or stops.PROCESS_STOPS.interrupted:  # Ctrl-C: its one line only
            return
        self.summarised = True
        statuses = {d: self.status(d) for d in self.runs}
        for d, (status, _) in statuses.items():
            if status not in (Status.FINISHED, Status.ANOTHER) and self.blocked(d):  # a paused record stays
                statuses[d] = Status.BLOCKED, None  # while a damaged file of its own keeps it from training on
        by = {s: [d for d in self.runs if statuses[d][0] == s] for s in ENDED}
        self.not_ours = [d for d in self.runs if statuses[d][0] == Status.ANOTHER]
        blocked = [d for d in self.runs if statuses[d][0] == Status.BLOCKED]
        other = [d for d in self.runs if statuses[d][0] not in (*ENDED, Status.ANOTHER, Status.BLOCKED)]
        finished, failed, paused = by[Status.FINISHED], by[Status.FAILED], by[Status.PAUSED]
        self.not_done = failed + blocked + self.not_ours
        print(f"Sweep summary: {runs_(len(self.runs))}: {len(finished)} finished, {len(failed)} failed, "
              f"{len(paused)} paused, {len(other)} not run to an end"
              + (f", {len(blocked)} {Status.BLOCKED}" if blocked else "")
              + (f", {len(self.not_ours)} {Status.ANOTHER} in its directory" if self.not_ours else ""), flush=True)
        for line in finished_lines({self.runs[d]: statuses[d][1] for d in finished}):
            print(line)
        for d in self.not_ours:
            print(f"  {Status.ANOTHER}  {self.runs[d]}: {self.another(d, statuses[d][1])}")
        for d in blocked:
            print(f"  {Status.BLOCKED}  {self.runs[d]}: {self.blocked(d)}")
        for d in failed:
            print(f"  failed  {self.runs[d]}: {statuses[d][1].error or 'no error recorded'}")
        for d in paused:
            print(f"  paused  {self.runs[d]} (starting the sweep again resumes it)")
        for d in other:
            elsewhere = held_elsewhere(Path(d))
            print(f"  not run to an end  {self.runs[d]} "
                  + (f"(running elsewhere: {elsewhere})" if elsewhere else f"({statuses[d][0]})"))
        if (paused or other) and (name := stop_signal()):
            print(f"  stopped by {name}: starting the sweep again continues it")
        print(flush=True)

    # -----------------------------------------------------------------------------------------------
    # A search: its trials counted as they end, its best trial at the end

    def start_search(self, search: Search) -> None:
        self.search, self.started = search, time.time()
        check_writable(search.folder)
        done = len(search.finished())
        print(f"Search: {search.trials or 'its'} trials drawn by {search.sweeper} ({search.sampler}) into "
              f"{search.folder}; {done} finished there already"
              + (" (the same search started again replays them: they train nothing new)" if done else ""), flush=True)

    def trial_ended(self, config: DictConfig, job_return) -> None:
        """`[trial n/N] <its drawn settings>: how it ended; its objective (ETA)`. Counted from the job's number
        and the records on disk: with joblib this runs in a worker, on a copy of this object."""
        run_dir, n, total = Path(config.hydra.runtime.output_dir), config.hydra.job.num + 1, self.search.trials
        status, record = records.status(run_dir)
        try:
            value = job_return.return_value  # raises if the job failed
        except Exception as err:
            value, what = None, f"failed before writing a record: {type(err).__name__}: {err}"
        else:
            what = ending(record) if status in ENDED else f"{status}, not trained here"
            if status == Status.FINISHED and (run_dir / records.RESULT).stat().st_mtime < self.started:
                what = what.replace("finished:", "finished before, skipped:", 1)  # replayed: nothing trained
        objective = (f"; validation accuracy {value:.2f}% (the objective)" if isinstance(value, float)
                     and tune.val_fraction(config) and "validation accuracy" not in what else "")
        print(f"[trial {n}/{total or '?'}] {run_dir.name}: {what}{objective} ({self.search_eta(n)})", flush=True)

    def search_eta(self, n: int) -> str:
        """Time left at the pace of the trials trained since the search started (records written since then)."""
        left = (self.search.trials or n) - n
        if left <= 0:
            return "search done"
        trained = sum(path.stat().st_mtime >= self.started for path in self.search.folder.rglob(records.RESULT))
        if not trained:
            return "ETA unknown"
        per_trial = (time.time() - self.started) / trained
        return f"ETA {duration(per_trial * left / min(self.search.at_once, left))}"

    def best_trial(self, config: DictConfig) -> None:
        """The best trial's line, and its settings in best_overrides.txt, from the sweeper's
        optimization_results.yaml (the trials it was told, this command's)."""
        folder = self.search.folder
        results = OmegaConf.to_container(OmegaConf.load(folder / "optimization_results.yaml"))
        best = folder / tune.trial_name(results["best_params"])
        status, record = records.status(best)
        print(tune.best_line(folder, results, self.search.trials, record if status == Status.FINISHED else None),
              flush=True)
