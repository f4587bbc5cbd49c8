"""What one run is, worked out once from its composed config: the device and precision it trains in (and why),
its identity and fingerprint, its directory's name, the data files it reads, and its cell. The run (jal/run.py),
the plan of a sweep (jal/multirun.py), the progress lines, fusions and the tables all take these from here, and
the config files name a run's directory through one resolver, `${jal.run_name:}`.

Which settings are the experiment is defined once, NOT_THE_EXPERIMENT: the identity, the directory's name, the
runs a fusion may hold and the config a record stores all derive from it. torch is imported only where a
device is chosen: composing and checking a config needs none.
"""

import contextlib
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from jal.config import REAL_WORLD, ConfigError, WandbConfig, missing_line, real_world_lists
from jal.own_data import ARRAYS_LAYOUT, FOLDER_LAYOUT

# ---------------------------------------------------------------------------------------------------
# Which settings are the experiment

# Settings that say how or where a run is done, not what it computes, each with whether runs fused in one
# process may differ in it (True) or share it, being one per process (False). trainer.precision is replaced
# in the identity by the precision that trains (`auto` means different things on different machines).
NOT_THE_EXPERIMENT = {
    "out_root": True, "run_name": True, "logger": True, "trainer.progress": True, "trainer.stop_at": True,
    "trainer.pause_after": True,
    "trainer.restart": True, "data_dir": False, "trainer.threads": False, "trainer.device": False,
    "trainer.eval_batch_size": False, "trainer.compile": False, "trainer.channels_last": False,
    "trainer.deterministic": False, "trainer.precision": False,
    # where the data lies, as data_dir (what it is: its name, or a dataset of yours' digest), and how many workers
    # decode it (the images a step sees do not depend on them, jal/real_world.py)
    "dataset.path": False, "dataset.root": False, "dataset.test_root": False, "dataset.imagenet_root": False,
    "dataset.workers": False,
}
MACHINE_PATHS = ("data_dir", "out_root")  # where this machine keeps data and runs: not in the records' config
# The experiment's settings that each member of a fusion has its own of (the step applies them per member).
PER_MEMBER = ("seed", "noise", "loss", "optim.l1", "optim.weight_decay", "optim.grad_clip", "dataset.weight_decay",
              "dataset.l1_amse", "dataset.l1_nnce")
MAY_DIFFER_IN_A_FUSION = PER_MEMBER + tuple(key for key, per_run in NOT_THE_EXPERIMENT.items() if per_run)
# Named by the run directory's cell already (dataset/noise/loss/seed), or by the preset's (the search's) own out_root.
IN_THE_CELL = ("dataset", "dataset.name", "noise", "noise.rate", "noise.labels", "loss", "seed", "experiment",
               "hparams_search")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'optim': {'lr': 0.01}} -> {'optim.lr': 0.01}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def within(key: str, settings) -> bool:
    """Whether the flattened `key` is one of `settings` or lies under one (`logger.mode` under `logger`)."""
    return any(key == s or key.startswith(s + ".") for s in settings)


def not_in_the_directory_name() -> list[str]:
    """The settings given on the command line that a run's directory name leaves out: the cell's and those that
    are not the experiment, a group's settings by name (`logger.project` as `logger`). run_name is no override;
    the precision that trains is named by the directory's precision part instead."""
    groups = {"logger": [f"logger.{f.name}" for f in dataclasses.fields(WandbConfig) if f.name != "name"]}
    keys = [k for k in NOT_THE_EXPERIMENT if k != "run_name"]
    return list(IN_THE_CELL) + [k for key in keys for k in (key, *groups.get(key, ()))]


# ---------------------------------------------------------------------------------------------------
# The settings given on the command line, and the directory's name


@contextlib.contextmanager
def hydra_node(cfg):
    """Inside, `${hydra:...}` resolves against `cfg`'s own Hydra node where it carries one (composed by
    jal.util.compose_run, a sweep's plan or a test), else against the running app's; yields that node. The
    node is shared, not copied (HydraConfig.set_config's copy is a third of a 300-run plan's time): Hydra's
    resolver reads HydraConfig.get(), the `hydra` of the config HydraConfig holds, here `cfg` itself."""
    from hydra.core.hydra_config import HydraConfig

    if "hydra" not in cfg:
        yield HydraConfig.get()
        return
    instance = HydraConfig.instance()
    saved, instance.cfg = instance.cfg, cfg
    try:
        yield cfg.hydra
    finally:
        instance.cfg = saved


def given_settings(cfg) -> dict[str, str]:
    """The settings given on the command line, key -> value as written (Hydra's task overrides), where `cfg`
    carries its Hydra node (compose_run, a sweep's plan); empty for a config without it."""
    if "hydra" not in cfg:
        return {}
    return dict(line.lstrip("+~").partition("=")[::2] for line in cfg.hydra.overrides.task)


# A number in a setting's value as written (`=10.0`, `,1e-4`, `[0.5`), up to the next separator.
NUMBER = re.compile(r"(?<=[=,\[:])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?=[,\]]|$)")


def canonical_number(text: str) -> str:
    """One spelling per value: 10.0, 10 and 1e1 -> 10; 0.00010 and 1e-4 -> 0.0001 (Python's shortest repr)."""
    value = float(text)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def settings_name(task: list[str]) -> str:
    """The part of a run's directory name that its command line adds to its cell: the overrides whose keys are
    not excluded (not_in_the_directory_name), sorted and joined by ',' (Hydra's override_dirname rule), with
    their numbers spelt one way: `loss.passive.a=10.0` and `loss.passive.a=10` set the same value, so they
    name one directory (and one row of the tables)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    excluded = set(not_in_the_directory_name())
    overrides = OverridesParser.create().parse_overrides(list(task))
    lines = sorted(o.input_line for o in overrides if not o.is_hydra_override() and o.key_or_group not in excluded)
    return NUMBER.sub(lambda number: canonical_number(number.group()), ",".join(lines))


def run_name(cfg, hydra) -> str:
    """A run's directory under out_root: its cell, then bf16 (or fp64) where it trains in that precision (asked
    for, or chosen by `auto` on this machine), then the settings its command line adds, e.g.
    cifar10/symmetric_0.8/jal_ce/seed123/bf16/loss.passive.a=30."""
    precision = choose(cfg)[1]
    settings = settings_name(hydra.overrides.task)
    return (f"{cfg.dataset.name}/{cfg.noise.tag}/{hydra.runtime.choices.loss}/seed{cfg.seed}"
            + ("" if precision == "fp32" else f"/{precision}") + (f"/{settings}" if settings else ""))


def _run_name_resolver(*, _root_) -> str:
    with hydra_node(_root_) as hydra:
        return run_name(_root_, hydra)


# Paths out_root must not name: a run's files would land in the file system's root or in the kernel's tables.
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def check_out_root(out_root) -> str:
    """out_root as given, when runs can be written under it; else a ConfigError naming the fix. One rule for
    single runs, sweeps, fusions and plans (hydra.run.dir and hydra.sweep.dir resolve through it): an empty
    value (a script's unset variable) would put runs under the file system's root or the working folder."""
    text = "" if out_root is None else str(out_root)
    fix = "give out_root a folder of yours, e.g. out_root=outputs"
    if not text.strip():
        raise ConfigError(f"out_root is empty (an unset variable?): {fix}")
    path = Path(text).absolute()
    if path == Path(path.anchor):
        raise ConfigError(f"out_root={text} is the file system's root: {fix}")
    if any(path == Path(s) or Path(s) in path.parents for s in SYSTEM_FOLDERS):
        raise ConfigError(f"out_root={text} lies in a system folder ({', '.join(SYSTEM_FOLDERS)}): {fix}")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out_root={text} is a file, not a folder: {fix}")
    return text


OmegaConf.register_new_resolver("jal.run_name", _run_name_resolver, replace=True)
OmegaConf.register_new_resolver("jal.out_root", check_out_root, replace=True)


# ---------------------------------------------------------------------------------------------------
# Identity: what defines the experiment of a run


def plain_config(cfg: DictConfig) -> dict:
    """The resolved run config as plain data, as records store it: without Hydra's own node (present when
    composed in tests) and without this machine's paths."""
    with hydra_node(cfg):
        return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                for k, v in cfg.items() if k not in ("hydra", *MACHINE_PATHS)}


# Settings added after records were first written, left out of the identity at the value every earlier record
# trained with: a record without the setting and a run at that value are one experiment, with one fingerprint.
LEFT_OUT_AT = {
    "dataset.val_fraction": 0.0,  # no validation split
    "model.image_size": 32,       # the 8-layer CNN's input: CIFAR's 32 pixels
}


def identity(config: dict, precision: str) -> dict:
    """What defines the experiment of a run with this (plain, resolved) config training in `precision`."""
    ident = {key: value for key, value in flatten(config).items()
             if not within(key, NOT_THE_EXPERIMENT) and not (key in LEFT_OUT_AT and value == LEFT_OUT_AT[key])}
    ident["precision"] = precision
    return ident


def fingerprint(ident: dict) -> str:
    """A short digest of an identity, for people and tables (decisions compare the identities themselves)."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings that came after records were first written, with the value every earlier record trained with:
# (the class whose node has it, the setting) -> value. A record without the setting trained with that value.
ADDED_LATER = {("jal.losses.AMSE", "q"): 2.0}  # AMSE's exponent: (1/K)|a e_y - p|^q, q = 2 before it was a setting


def identity_of(stored: dict) -> dict | None:
    """The identity of a result.json record or a checkpoint, from the config it stores (records from before
    fingerprints included); None when it stores none."""
    if not isinstance(stored.get("config"), dict):
        return None
    ident = identity(stored["config"], stored.get("precision", "fp32"))
    for key, target in list(ident.items()):
        node = key.removesuffix("._target_")
        for (cls, setting), value in ADDED_LATER.items():
            if key.endswith("._target_") and target == cls:
                ident.setdefault(f"{node}.{setting}", value)
    return ident


def differences(recorded: dict, asked: dict, limit: int = 4) -> str:
    """`optim.lr: 0.01 in the record, 0.05 asked; ...` for the settings that differ (0 == 0.0)."""
    keys = sorted(k for k in recorded.keys() | asked.keys() if recorded.get(k, ...) != asked.get(k, ...))
    shown = [f"{k}: {recorded.get(k, 'absent')} in the record, {asked.get(k, 'absent')} asked" for k in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------------
# Runs trained fused: the settings they must share


def fixed_settings(cfg: DictConfig) -> dict:
    """The settings of a run that runs fused with it must share (flattened): all but MAY_DIFFER_IN_A_FUSION."""
    settings = flatten(plain_config(cfg)) | {"data_dir": cfg.data_dir}  # the members' images are loaded once
    return {k: v for k, v in settings.items() if not within(k, MAY_DIFFER_IN_A_FUSION)}


def check_fusable(cfgs: list[DictConfig]) -> None:
    """One line naming the first setting in which the runs of a fusion differ where they must agree."""
    if len(cfgs) > 1 and cfgs[0].dataset.name in REAL_WORLD:
        raise ConfigError(f"{len(cfgs)} runs of dataset={cfgs[0].dataset.name} asked to train fused: a real-world "
                          "run trains alone (one ResNet-50 fills a GPU); train them one by one (jal.fuse=false)")
    if len(cfgs) > 1 and cfgs[0].dataset.get("format") == "folder":
        raise ConfigError(f"{len(cfgs)} runs of dataset=folder asked to train fused: image files read by DataLoader "
                          "workers train one run at a time; train them one by one (jal.fuse=false)")
    first = fixed_settings(cfgs[0])
    for n, cfg in enumerate(cfgs[1:], 2):
        other = fixed_settings(cfg)
        for key in sorted(first.keys() | other.keys()):
            if first.get(key, "absent") != other.get(key, "absent"):
                raise ConfigError(f"runs 1 and {n} of a fusion differ in {key} ({first.get(key, 'absent')} and "
                                  f"{other.get(key, 'absent')}): runs fused together may differ only in seed, "
                                  "noise, loss, optim.l1, optim.weight_decay and optim.grad_clip")


# ---------------------------------------------------------------------------------------------------
# The cell: where a run sits in the paper's tables

NOISE_SHORT = dict(symmetric="sym", asymmetric="asym", instance="inst")


@dataclass(frozen=True)
class Cell:
    """A run's place in the tables: dataset, model, loss, noise, seed, and the settings its command line adds
    (a sweep of loss.passive.a: another row). Records store these fields as they are."""
    dataset: str
    model: str
    loss: str
    noise_type: str
    noise_rate: float | None
    noise_labels: str | None
    seed: int
    settings: str = ""

    FIELDS = ("dataset", "model", "loss", "noise_type", "noise_rate", "noise_labels", "seed", "settings")

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.FIELDS}

    def short_name(self) -> str:
        """Its loss, noise and seed, as a progress bar names a run: `jal_ce sym0.8 s123`."""
        if self.noise_type == "none":
            noise = "clean"
        elif self.noise_type == "as_given":
            noise = "as-given"
        elif self.noise_type == "human":
            noise = f"human-{self.noise_labels}"
        else:
            noise = f"{NOISE_SHORT.get(self.noise_type, self.noise_type)}{self.noise_rate:g}"
        return f"{self.loss} {noise} s{self.seed}"


def cell_of(cfg, hydra) -> Cell:
    """The cell of a run of `cfg` (its Hydra node `hydra` names the config groups picked). The noise rate of
    human noise is a measurement: the run fills it in from its labels."""
    return Cell(dataset=cfg.dataset.name, model=hydra.runtime.choices.model, loss=hydra.runtime.choices.loss,
                noise_type=cfg.noise.type, noise_rate=None if cfg.noise.rate is None else float(cfg.noise.rate),
                noise_labels=cfg.noise.get("labels"), seed=cfg.seed, settings=settings_name(hydra.overrides.task))


# ---------------------------------------------------------------------------------------------------
# Where it trains: device and precision


def choose(cfg):
    """(device, precision, why): where a run of `cfg` trains on this machine (trainer.device: auto = cuda where
    there is a GPU) and in which precision (jal.device.choose_precision). No side effects: the run sets cuDNN's
    and torch's determinism when it starts (jal.device.set_determinism)."""
    from jal.device import choose_precision, run_device  # torch: only once a device is chosen

    device = run_device(cfg.trainer.device)
    precision, why = choose_precision(cfg.trainer.precision, device)
    return device, precision, why


# ---------------------------------------------------------------------------------------------------
# The data files it reads


# The CIFAR images torchvision downloads; the precomputed instance-dependent label sets' rates
TORCHVISION = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
PRECOMPUTED_INSTANCE_RATES = (0.2, 0.4, 0.6)
OWN_LAYOUTS = {"arrays": ARRAYS_LAYOUT, "folder": FOLDER_LAYOUT}  # the layouts of a dataset of yours


@dataclass(frozen=True)
class DataFile:
    """A file a run reads from data_dir (docs/protocol.md section 6) or a real-world dataset's folder."""
    path: Path
    what: str
    layout: str | None = None  # a real-world dataset's file: the layout its folder must follow (jal.config.LAYOUTS)

    @property
    def downloadable(self) -> bool:
        """CIFAR's images: torchvision downloads them (jal.data) where they are missing."""
        return self.path.stem in TORCHVISION and self.path.suffix == ".npz"

    def missing(self) -> str:
        """The one line for this file missing."""
        if self.layout in OWN_LAYOUTS:
            return f"{self.path} is missing: {self.what} must be {OWN_LAYOUTS[self.layout]}"
        if self.layout:
            return missing_line(self.path, self.layout)
        return (f"{self.path} is missing: put {self.path.name} ({self.what}; docs/protocol.md section 6) there or "
                "point JAL_DATA_DIR at a folder holding it")


def data_files(cfg) -> list[DataFile]:
    """The files a run of `cfg` reads first, in the order it reads them: for CIFAR its images and the label set
    its noise reads (CIFAR-N, or the precomputed instance-dependent labels at 0.2, 0.4 and 0.6 unless
    noise.generate); for WebVision and Clothing1M their file lists; for a dataset of yours its file or folders
    (read and checked as the config is composed, jal/own_data.py). Synthetic data reads none."""
    name, kind, folder = cfg.dataset.name, cfg.noise.type, Path(cfg.data_dir)
    if name == "synthetic":
        return []
    if (own := cfg.dataset.get("format")) == "arrays":
        return [DataFile(Path(cfg.dataset.path), "your images and labels", "arrays")]
    if own == "folder":
        return [DataFile(Path(cfg.dataset[key]), what, "folder") for key, what in
                (("root", "your training images"), ("test_root", "your test images")) if cfg.dataset[key]]
    if name in REAL_WORLD:
        return [DataFile(Path(path), "a file list", layout) for path, layout in real_world_lists(cfg.dataset)]
    files = [DataFile(folder / f"{name}.npz", "the images")]
    if kind == "instance" and not cfg.noise.generate and cfg.noise.rate in PRECOMPUTED_INSTANCE_RATES:
        files.append(DataFile(folder / f"{name}_idn_labels.npz", "the precomputed instance-dependent labels"))
    if kind == "human":
        files.append(DataFile(folder / f"{name}n_labels.npz", f"the {name.upper().replace('CIFAR', 'CIFAR-')}N labels"))
    return files


# ---------------------------------------------------------------------------------------------------
# The experiment of a run, once


@dataclass(frozen=True, eq=False)
class Experiment:
    """What a run of a composed config is, on this machine."""
    name: str               # its directory under out_root (run_name)
    cell: Cell
    device: object          # torch.device
    precision: str          # fp32, bf16 or fp64: what trains
    precision_reason: str   # why (for the record)
    config: dict            # the resolved config, as records store it (plain_config)
    identity: dict          # what decides whether a directory holds this experiment
    fingerprint: str

    def as_dict(self) -> dict:
        """What every file of the run says of the experiment that wrote it."""
        return dict(precision=self.precision, fingerprint=self.fingerprint, config=self.config)


def experiment(cfg) -> Experiment:
    """The experiment of a run of the composed config `cfg` (its Hydra node, or the running app's): resolving a
    whole config takes ~0.1 s, so callers keep it."""
    device, precision, why = choose(cfg)
    with hydra_node(cfg) as hydra:
        config = plain_config(cfg)
        name, cell = cfg.run_name, cell_of(cfg, hydra)
    ident = identity(config, precision)
    return Experiment(name=name, cell=cell, device=device, precision=precision, precision_reason=why, config=config,
                      identity=ident, fingerprint=fingerprint(ident))
