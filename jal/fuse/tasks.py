"""A fusion as a launcher runs it (FusionTask: picklable, for joblib's and submitit's workers), and the launch
paths: basic (one after another here), joblib (side by side), submitit (a SLURM job array)."""

import logging
from dataclasses import dataclass, field

from jal import launch
from jal.config import ConfigError
from jal.errors import DirectoryConflict, JalError, RunDiverged, failed_job, one_line
from jal.fuse.logs import fusion_logging
from jal.record import Record, Status
from jal.run_dir import restart_alone


@dataclass
class FusionTask:
    """One fusion of the sweep, as a launcher runs it: fusion `number` of `of`, its members' configs and run
    directories as planned (jal.multirun.plan_runs), and the work left after each of their epochs (their ETA).
    Picklable: joblib and submitit run it in another process."""
    number: int
    of: int
    cfgs: list
    run_dirs: list
    names: list
    work: list = field(default_factory=list)

    def __call__(self) -> tuple[int, list]:
        """(number, each member's record). An error of the fusion is its members', not the sweep's: one the user
        can act on (a full disk, a setting, a data file, a damaged file of a fusion of one: jal.errors.JalError)
        blocks them (one line; nothing of them failed, the same command resumes them once it is fixed), any
        other fails them (its traceback, and their records say failed where it got so far: train_fusion)."""
        from hydra.core.utils import setup_globals

        from jal import train  # torch loads here, in the process that trains

        setup_globals()  # Hydra's resolvers (${hydra:...} in run_name), in a worker process too
        with fusion_logging(self):
            try:
                return self.number, train.train_fusion(self.cfgs, self.run_dirs)
            except Exception as err:
                if isinstance(err, (JalError, FileNotFoundError)) and not isinstance(err, RunDiverged):
                    line = one_line(err)
                    if isinstance(err, DirectoryConflict):  # a fusion of one: its restart advice, for it alone
                        line = restart_alone(line, list(self.cfgs[0].hydra.overrides.task)
                                             if "hydra" in self.cfgs[0] else [])
                    logging.getLogger("jal.fuse").error("fusion %d/%d: %s", self.number, self.of, line)
                    return self.number, [Record(status=Status.BLOCKED, reason=line) for _ in self.cfgs]
                logging.getLogger("jal.fuse").exception("fusion %d/%d", self.number, self.of)
                error = f"{type(err).__name__}: {one_line(err)}"
                return self.number, [Record(status=Status.FAILED, error=error) for _ in self.cfgs]

    def checkpoint(self, *args, **kwargs):
        """submitit, on SLURM's signal before the time limit or on preemption (after the fusion paused at an
        epoch end): requeue the same fusion, which continues from its members' checkpoints."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def fusion_tasks(groups: list) -> list[FusionTask]:
    """The fusions of a sweep (jal.multirun.fusions: lists of jal.multirun.Run) as tasks a launcher runs."""
    return [FusionTask(n, len(groups), [r.cfg for r in group], [r.dir for r in group], [r.name for r in group],
                       group[0].work_left_after_each_epoch()) for n, group in enumerate(groups, 1)]


# ---------------------------------------------------------------------------------------------------
# Launching the fusions: basic, joblib, submitit (jal.launch)


def launch_fusions(tasks: list[FusionTask], launcher: dict):
    """Train the fusions with the launcher; yields (task, its members' records) as each fusion ends."""
    if not tasks:
        return
    kind = launch.kind(launcher)
    by_number = {task.number: task for task in tasks}
    if kind == "basic":
        for task in tasks:
            yield task, task()[1]
    elif kind == "joblib":
        from joblib import Parallel, delayed

        parallel = Parallel(**launch.joblib_settings(launcher), return_as="generator_unordered")
        for number, results in parallel(delayed(task)() for task in tasks):
            yield by_number[number], results
    else:
        import submitit

        try:
            jobs = launch.submit(tasks, launcher)
        except submitit.core.utils.FailedJobError as err:  # sbatch refused: its reason in one line
            raise ConfigError(f"sbatch refused the fusions: {failed_job(err)}") from None
        ids = ", ".join(sorted({job.job_id.split("_")[0] for job in jobs}))  # a SLURM array: one id
        print(f"submitted {len(jobs)} fusion{'s' * (len(jobs) != 1)}: job {ids} (logs in "
              f"{jobs[0].paths.folder.parent})", flush=True)
        job_task = {job.job_id: task for job, task in zip(jobs, tasks)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=5):
            task = job_task[job.job_id]
            try:
                yield task, job.result()[1]
            except Exception as err:  # the task itself failed (killed, out of memory, out of requeues)
                error = f"its task {job.job_id} failed: {failed_job(err)}"
                yield task, [Record(status=Status.FAILED, error=error) for _ in task.cfgs]
