"""The runs of a multirun: what `python -m jal.train -m <overrides>` would run, planned before it runs.

Hydra's basic sweeper splits the overrides into jobs, and each job's config is composed as the launcher
composes it, so the planned run directories are the directories the sweep writes. Each run's directory is
checked against the others and against what it holds (one directory, one experiment), and read back: its
status, the epochs it has done, the fusions the runs still to train make (jal.fuse). The plan (jal.plan),
the progress callback (jal.progress) and the fused sweep (jal.fuse) start from these runs.

A search (jal.tune: Optuna's sweeper) draws its runs' settings as it goes: none is known before it is drawn, so
it is planned as a Search, its number of trials and a trial drawn at the low end of every range (its settings
checked, its work counted), in the search's folder.
"""

import copy
import json
import os
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from jal import record as records
from jal import tune
from jal.config_check import check_config, check_given_once
from jal.errors import AnotherExperiment, ConfigError, DirectoryConflict, UnreadableFile
from jal.estimate import work_left_after_each_epoch
from jal.experiment import (
    NOT_THE_EXPERIMENT,
    Experiment,
    choose,
    differences,
    experiment,
    fixed_settings,
    given_settings,
    hydra_node,
    within,
)
from jal.fuse.rejoin import rejoined_epochs
from jal.record import Record, Status
from jal.run_dir import (
    CHECKPOINT,
    LABELS,
    PREVIOUS,
    check_same,
    check_writable,
    latest_checkpoint,
    read_labels,
    restart_alone,
)
from jal.util import CONFIG_DIR

# the settings the plan's header shows (jal.plan.print_plan): left out of a run's overrides where it names one
SHOWN_ABOVE = ("experiment=", "hydra/", "hydra.", "trainer.threads=", "trainer.progress=")


@dataclass(eq=False)
class Run:
    dir: Path
    name: str              # run_name: its directory under out_root
    cfg: DictConfig        # the job's composed config, Hydra's node included
    fp32_dir: Path | None = None  # a run in bf16: the directory the same run has in fp32 (trainer.precision=fp32)
    _experiment: Experiment | None = None
    _blocked: tuple = ()  # (why it is blocked, or None), once worked out

    def experiment(self) -> Experiment:
        """The experiment it is (jal.experiment), worked out when needed (its directory is shared or holds
        files): resolving a whole config takes ~0.1 s, too long to do for every run of a 300-run plan."""
        if self._experiment is None:
            self._experiment = experiment(self.cfg)
        return self._experiment

    def identity(self) -> dict:
        return self.experiment().identity

    def status(self) -> tuple[Status, Record | None]:
        """Its directory's status (jal.record.status), but ANOTHER where the record there is of another
        experiment than this run's (a sweep sharing the out_root wrote it): not this run's result."""
        status, record = records.status(self.dir, CHECKPOINT)
        if record is not None and (recorded := record.identity()) is not None and recorded != self.identity():
            return Status.ANOTHER, record
        return status, record

    def blocked(self) -> str | None:
        """Why the run cannot train until something is fixed, in one line, or None: a file of its own that is
        damaged or that this user may not read (its record; its newest checkpoint without a good one before it;
        its labels.npz), read as the run reads it. The line's restart advice restarts this run alone
        (jal.run_dir.restart_alone). A finished run is never blocked (it is skipped), nor one trainer.restart=true
        starts afresh; another experiment's files are not this (the plan refuses them: check_directories)."""
        if not self._blocked:
            self._blocked = (self._why_blocked(),)
        return self._blocked[0]

    def _why_blocked(self) -> str | None:
        if self.cfg.trainer.restart or not any((self.dir / name).exists()
                                               for name in (records.RESULT, CHECKPOINT, PREVIOUS, LABELS)):
            return None  # (the experiment it is takes ~0.1 s to work out: only for a directory with files)
        try:
            record = records.read(self.dir)
            if record is not None and record.status == Status.FINISHED:
                return None
            if (self.dir / CHECKPOINT).exists() or (self.dir / PREVIOUS).exists():
                latest_checkpoint(self.dir, self.identity(), warn=lambda line: None, mend=False)
            if (self.dir / LABELS).exists():
                read_labels(self.dir / LABELS)
        except UnreadableFile as err:
            return restart_alone(str(err), list(self.cfg.hydra.overrides.task))
        except AnotherExperiment:
            return None
        return None

    def checkpoint(self) -> tuple[int, list[str]]:
        """(epochs it resumes from, the run names of the fusion that trained its last epoch), read as the run
        reads its checkpoints (jal.run_dir.latest_checkpoint, checkpoint.prev.pt where the newest is missing
        or damaged, without mending anything); (0, []) without one, or with one of another experiment."""
        try:
            state = latest_checkpoint(self.dir, self.identity(), warn=lambda line: None, mend=False)
        except DirectoryConflict:
            return 0, []
        return (0, []) if state is None else (int(state["epoch"]), list(state.get("fusion", [])))

    def epochs_done(self) -> int:
        """Epochs an unfinished run resumes from, 0 without a checkpoint."""
        return self.checkpoint()[0] if (self.dir / CHECKPOINT).exists() or (self.dir / PREVIOUS).exists() else 0

    def work(self, from_epoch: int = 0) -> float:
        """Training images left from `from_epoch` on; an evaluated test image counts as a third of a trained
        one (a forward pass against forward, backward and step)."""
        return self.work_left_after_each_epoch()[from_epoch]

    def work_left_after_each_epoch(self) -> list[float]:
        """work(e) for e = 0, 1, ..., epochs (the last 0): jal.estimate's."""
        return work_left_after_each_epoch(self.cfg)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of `python -m jal.train -m <overrides>`, in launch order, as Hydra's basic sweeper splits them:
    the cartesian product of each key's values, the first key varying slowest. A key given twice is refused
    (Hydra would take its last values), as is an override Hydra cannot read, in one line naming it; so is a range
    to draw from (`interval(2.0, 40.0)`), which has no jobs to list."""
    check_given_once(overrides)
    choices = {}
    for override in parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_interval_sweep():
            raise ConfigError(f"{override.input_line}: an interval is drawn from, not listed: only a search draws "
                              "(hparams_search=jal_ce, configs/hparams_search/); list values instead, e.g. "
                              f"{key}=1,2,4")
        values = (override.sweep_string_iterator() if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        choices[key] = [f"{key}={value}" for value in values]
    return [list(job) for job in product(*choices.values())]


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parsed overrides; one it cannot read raises ConfigError naming it (Hydra's own error names the
    grammar's tokens, not the override)."""
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for line in overrides:
        try:
            parser.parse_overrides([line])
        except OverrideParseException as err:
            said = str(err).strip().splitlines()[0][:100]
            raise ConfigError(f"{line!r} is no override Hydra can read ({said}): key=value, a sweep as key=a,b "
                              "(no trailing comma), a value with spaces or commas quoted whole: key='a b'") from None
    return parser.parse_overrides(overrides)


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
            cfg.hydra.job.id, cfg.hydra.job.num = num, num  # as the basic and joblib launchers set them
        configs.append(cfg)
    return configs


def plan_runs(overrides: list[str], config_name: str = "train", composed: dict | None = None) -> list[Run]:
    """The runs of one multirun, in launch order, with the directory Hydra's run_job gives each; raises
    ConfigError for a wrong value in any run, two runs of different experiments that would share a directory,
    or a directory that holds another experiment (a damaged file of a run's own blocks that run alone:
    Run.blocked). `composed`: see compose_jobs."""
    runs = []
    for cfg in compose_jobs(sweep_jobs(overrides), config_name, composed):
        if tune.is_search(cfg.hydra):  # its runs are drawn as it goes (plan_sweep): none to list, fuse or launch here
            raise ConfigError(f"hydra.sweeper {cfg.hydra.sweeper._target_} draws its runs as it goes: none can be "
                              "listed before it runs; start it with python -m jal.train (make tune), unfused")
        with hydra_node(cfg):  # run_name reads hydra:runtime.choices
            check_config(cfg)  # every run's values, before the first one trains
            run = Run(Path(sweep_dir(cfg)), cfg.run_name, cfg)
            if choose(cfg)[1] == "bf16":  # its fp32 twin, whose record a plan in bf16 would not see
                precision = cfg.trainer.precision
                cfg.trainer.precision = "fp32"
                run.fp32_dir = Path(sweep_dir(cfg))
                cfg.trainer.precision = precision
            runs.append(run)
    check_directories(runs)
    return runs


@dataclass(eq=False)
class Search:
    """A sweep whose sweeper draws its runs' settings as it goes (jal.tune): `trials` runs like `example`, a trial
    drawn at the low end of every range, into the search's `folder` (hydra.sweep.dir)."""
    folder: Path
    trials: int | None     # hydra.sweeper.n_trials (Optuna's); None: a sweeper that counts otherwise
    at_once: int           # hydra.sweeper.n_jobs: trials drawn, then launched, together
    sweeper: str           # who draws: "Optuna"
    sampler: str           # how: "TPESampler, seed 123"
    space: dict[str, str]  # each drawn setting and its range, as written
    example: Run

    def finished(self) -> list[Record]:
        """The finished trials in the search's folder: of this search's fixed settings, whatever their draws (the
        same search started again replays them)."""
        fixed = lambda ident: {k: v for k, v in ident.items() if k not in self.space}  # noqa: E731
        mine = fixed(self.example.identity())
        return [r for r in records.scan([self.folder], warn=lambda line: None)
                if r.status == Status.FINISHED and (ident := r.identity()) is not None and fixed(ident) == mine]


def plan_sweep(overrides: list[str], config_name: str = "train", composed: dict | None = None) -> "list[Run] | Search":
    """What `python -m jal.train -m <overrides>` would do: its runs (plan_runs), or, where its sweeper draws
    (jal.tune.is_search), the Search. `composed`: see compose_jobs."""
    composed = {} if composed is None else composed
    try:
        first_job, interval = sweep_jobs(overrides)[0], None
    except ConfigError as err:  # an interval: a search's, or refused below
        interval = err
        first_job = [o.input_line for o in OverridesParser.create().parse_overrides(overrides)
                     if not o.is_sweep_override()]
    first = compose_jobs([first_job], config_name, composed)[0]  # plan_runs composes it again from `composed`
    if tune.is_search(first.hydra):
        tune.check_fixed(overrides)
        return search_of(first, config_name, composed)
    if interval is not None:
        raise interval
    return plan_runs(overrides, config_name, composed)


def search_of(cfg: DictConfig, config_name: str = "train", composed: dict | None = None) -> Search:
    """The search a composed config (its Hydra node) starts: its example trial composed and checked as the
    launcher would compose a trial, and the search refused in one line where it would select on the test set."""
    hydra, parser = cfg.hydra, OverridesParser.create()
    space = tune.drawn(hydra)
    lowest = []
    for key, text in space.items():
        sweep = parser.parse_override(f"{key}={text}").value()
        low = getattr(sweep, "start", None) if not hasattr(sweep, "list") else sweep.list[0]
        lowest.append(f"{key}={low}")
    task = [o for o in hydra.overrides.task if tune.key_of(o) not in space]
    example = compose_jobs([list(hydra.overrides.hydra) + task + lowest], config_name, composed)[0]
    with hydra_node(example):
        check_config(example)
        tune.check_selects_on_validation(example)
        run = Run(Path(sweep_dir(example)), example.run_name, example)
    with hydra_node(cfg):
        folder = Path(os.path.abspath(cfg.hydra.sweep.dir))
    sampler = OmegaConf.select(hydra, "sweeper.sampler") or {}
    name = str(sampler.get("_target_", "its sampler")).rsplit(".", 1)[-1]
    seed = sampler.get("seed")
    trials = OmegaConf.select(hydra, "sweeper.n_trials")
    return Search(folder, None if trials is None else int(trials), int(OmegaConf.select(hydra, "sweeper.n_jobs") or 1),
                  hydra.sweeper._target_.rsplit(".", 1)[-1].removesuffix("Sweeper"),
                  name + (f", seed {seed}" if seed is not None else ", unseeded"), space, run)


def sweep_dir(cfg: DictConfig) -> str:
    return os.path.abspath(os.path.join(cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir))


def job_line(run: Run) -> str:
    return " ".join(o for o in run.cfg.hydra.overrides.task if not o.startswith(SHOWN_ABOVE)) or "(no overrides)"


def check_directories(runs: list[Run]) -> None:
    """One directory, one experiment: across the sweep's runs, and against what each directory holds."""
    first_of = {}
    for run in runs:
        if run.dir in first_of:
            other = first_of[run.dir]
            if other.identity() != run.identity():
                raise AnotherExperiment(
                    f"two runs of different experiments would share {run.dir}: [{job_line(other)}] and "
                    f"[{job_line(run)}] ({differences(other.identity(), run.identity())}): give each its own "
                    "out_root")
            if differ := not_the_experiment_swept(other, run):
                values = [" ".join(f"{key}={pair[i]}" for key, pair in differ.items()) for i in (0, 1)]
                raise AnotherExperiment(
                    f"{values[0]} and {values[1]} are one run of the sweep ({run.dir}): {', '.join(differ)} does not "
                    "change the experiment, so one would train and the other be skipped; to compare them, run each "
                    "value with its own out_root")
            continue
        first_of[run.dir] = run
        if run.blocked():  # a damaged file of its own: listed as blocked, the other runs train
            continue
        if not run.cfg.trainer.restart and any((run.dir / name).exists()
                                               for name in (records.RESULT, CHECKPOINT, PREVIOUS)):
            if (record := records.read(run.dir)) is not None:
                check_same(record.identity(), run.identity(), run.dir / records.RESULT)
                if record.status == Status.FINISHED:
                    continue  # read, never written: a finished run is skipped in a read-only out_root too
            latest_checkpoint(run.dir, run.identity(), warn=lambda line: None, mend=False)
        check_writable(run.dir)  # a run to train: before Hydra opens its train.log there


def not_the_experiment_swept(first: Run, second: Run) -> dict[str, tuple[str, str]]:
    """The settings given on the command line in which two runs of one directory differ ({key: the values as
    written}), when all of them are settings that do not change the experiment (trainer.threads=1,2;
    jal.experiment.NOT_THE_EXPERIMENT): a sweep over such a setting would train one value and skip the others.
    Empty otherwise: the same run named twice (seed=1,1) or one value written two ways (lr=0.1,1e-1) is no such
    sweep."""
    given = [given_settings(run.cfg) for run in (first, second)]
    differ = sorted(key for key in given[0].keys() | given[1].keys() if given[0].get(key) != given[1].get(key))
    if not differ or not all(within(key, NOT_THE_EXPERIMENT) for key in differ):
        return {}
    return {key: (given[0].get(key, "absent"), given[1].get(key, "absent")) for key in differ}


def fusions(runs: list[Run], fuse: int) -> list[list[Run]]:
    """The runs still to train, in launch order, grouped into fusions of at most `fuse` runs that can train
    together (jal.train.train_fusion): the same fixed settings and the same epoch reached, the members of a
    fusion killed between their checkpoint writes back at their common epoch (jal.fuse.rejoin.rejoined_epochs).
    A run named twice (`seed=1,1`) is one run; a finished one (this run's experiment) or a blocked one trains not."""
    todo = {}  # directory -> run, in launch order
    for run in runs:
        if run.dir not in todo and run.status()[0] != Status.FINISHED and not run.blocked():
            todo[run.dir] = run
    done = {run.name: (0, []) if run.cfg.trainer.restart else run.checkpoint() for run in todo.values()}
    epochs = rejoined_epochs(done)
    groups: dict[tuple, list[Run]] = {}
    for run in todo.values():
        key = (json.dumps(fixed_settings(run.cfg), sort_keys=True, default=str), epochs[run.name])
        groups.setdefault(key, []).append(run)
    return [group[i : i + fuse] for group in groups.values() for i in range(0, len(group), max(fuse, 1))]


def runs_(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"
