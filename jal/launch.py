"""The Hydra launcher of a sweep, in one place: basic, joblib or submitit (hydra/launcher=local, slurm). From a
composed config: its kind, how many runs (or fusions) it trains at once here, how it trains them in words, and
joblib's and submitit's arguments as the Hydra launcher plugins make them (jal.fuse launches with them)."""

import contextlib
import os
import re
import subprocess

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from jal.config import ConfigError


def settings(hydra: DictConfig) -> dict:
    """A run's Hydra launcher config (configs/hydra/launcher/ and its overrides), resolved, from its Hydra node."""
    return OmegaConf.to_container(hydra.launcher, resolve=True)


def kind(launcher: dict) -> str:
    """basic, joblib, local or slurm (hydra-submitit-launcher's executors); another launcher's class name."""
    target = launcher["_target_"]
    if target.endswith(".BasicLauncher"):
        return "basic"
    if target.endswith(".JoblibLauncher"):
        return "joblib"
    return getattr(get_class(target), "_EXECUTOR", target.rsplit(".", 1)[-1])


def at_once(launcher: dict) -> int | None:
    """How many runs (or fusions) the launcher trains at once on this machine; None: on the machines it
    submits to (no estimate here)."""
    if kind(launcher) == "joblib":
        n = launcher["n_jobs"]
        return n if n > 0 else max(1, len(os.sched_getaffinity(0)) + 1 + n)  # joblib: -1 = every core
    return 1 if kind(launcher) == "basic" else None


def how_runs_run(launcher: dict) -> str:
    """How the launcher trains a sweep's runs, in words (the plan's launcher line)."""
    if kind(launcher) == "basic":
        return "basic (one run at a time)"
    if kind(launcher) == "joblib":
        return f"joblib ({at_once(launcher)} runs at a time)"
    return f"{launcher['_target_'].rsplit('.', 1)[-1]} (runs on the machines it submits to: no estimate here)"


def how_fusions_run(launcher: dict, threads: int | None) -> str:
    """How the fusions of a sweep train with this launcher (settings) and torch threads per fusion, in words (the
    plan and jal.fuse say it); raises ConfigError for a launcher jal.fuse cannot launch fusions with."""
    name = kind(launcher)
    each = f"{threads} torch thread{'s' * (threads != 1)} each" if threads else "torch's default threads each"
    if name == "basic":
        return f"one at a time in one process (the basic launcher), {each}"
    if name == "joblib":
        return f"{at_once(launcher)} at a time side by side (joblib, a process each), {each}"
    if name == "local":
        return f"a process each on this machine (submitit's local executor), {each}"
    if name != "slurm":
        raise ConfigError(f"python -m jal.fuse launches fusions with the basic, joblib or submitit launchers, not "
                          f"{launcher['_target_']}")
    shown = ("partition", "account", "qos", "constraint", "gres", "nodes", "gpus_per_node", "cpus_per_task",
             "mem_gb", "timeout_min")
    resources = ", ".join(f"{k}={launcher[k]}" for k in shown if launcher.get(k) is not None)
    return (f"one SLURM task each (submitit: a job array, at most {launcher.get('array_parallelism')} tasks at a "
            f"time; {resources})")


def joblib_settings(launcher: dict) -> dict:
    """joblib.Parallel's arguments from hydra/launcher=joblib, as hydra-joblib-launcher makes them: the loky
    backend (a process per worker: its own torch threads and signal handlers), the counts as integers."""
    settings = {k: v for k, v in launcher.items() if k != "_target_"} | dict(backend="loky")
    for key in ("pre_dispatch", "batch_size", "max_nbytes"):
        with contextlib.suppress(TypeError, ValueError):
            settings[key] = int(settings[key])
    return settings


def submitit_settings(launcher: dict) -> tuple[str, dict, dict]:
    """(cluster, the executor's arguments, its parameters) from a submitit launcher config, as
    hydra-submitit-launcher makes them: the folder and max_num_timeout when the executor is made, then the
    shared queue settings by name and the cluster's own prefixed by it (slurm_partition, ...)."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cluster = kind(launcher)  # slurm, local
    params = {k: v for k, v in launcher.items() if k != "_target_"}
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    return cluster, init, {k if k in shared else f"{cluster}_{k}": v for k, v in params.items()}


def submit(tasks: list, launcher: dict) -> list:
    """Submit the callables with a submitit launcher's settings, one task each (on SLURM: one job array, at
    most array_parallelism tasks running); returns submitit's jobs."""
    import submitit

    cluster, init, params = submitit_settings(launcher)
    if cluster == "slurm":
        check_fits(launcher)
    executor = submitit.AutoExecutor(cluster=cluster, **init)
    executor.update_parameters(**params)
    return executor.submit_array(tasks)


def check_fits(launcher: dict) -> None:
    """On a SLURM cluster (sinfo answers), before anything is submitted: the partition exists and its nodes
    have the GPUs, CPUs and memory each task asks for; else a ConfigError naming the setting to change
    (sbatch would refuse with `Invalid generic resource (gres) specification` or `Requested node
    configuration is not available`). Nothing is checked without sinfo (planned elsewhere)."""
    partition = launcher.get("partition")
    try:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%G|%c|%m"] + (["-p", partition] if partition else []),
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return
    nodes = [line.split("|") for line in done.stdout.split() if line.count("|") == 3]
    if done.returncode != 0:
        return
    fix = "SLURM='partition=... gpus_per_node=0 ...' with make, hydra.launcher.<setting>=... with python -m"
    if not nodes:
        raise ConfigError(f"hydra.launcher.partition={partition}: no such SLURM partition here (`sinfo -s` lists "
                          f"them); set {fix}")
    gpus = max(sum(int(n) for n in re.findall(r"gpu(?::[^:,()]+)?:(\d+)", gres)) for _, gres, _, _ in nodes)
    cpus = max(int(c) for *_, c, _ in nodes)
    memory_gb = max(int(m.rstrip("+")) for *_, m in nodes) / 1024
    where = f"partition {partition}" if partition else "the default partition"
    asked = [("gpus_per_node", launcher.get("gpus_per_node") or 0, gpus, "GPUs"),
             ("cpus_per_task", (launcher.get("cpus_per_task") or 1) * (launcher.get("tasks_per_node") or 1), cpus,
              "CPUs"), ("mem_gb", launcher.get("mem_gb") or 0, memory_gb, "GB of memory")]
    for key, want, has, what in asked:
        if want > has:
            raise ConfigError(f"hydra.launcher.{key}={launcher.get(key)}: the nodes of {where} have {has:g} {what} "
                              f"at most (sinfo); set {key}={int(has)} or fewer ({fix})")
