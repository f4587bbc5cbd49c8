"""Train a sweep's runs fused, at most K at a time: `python -m jal.fuse --fuse K <overrides>`.

    python -m jal.fuse --fuse 8 dataset=cifar10 loss=ce,jal_ce noise=symmetric noise.rate=0.4,0.8 seed=123,124

takes the runs `python -m jal.train -m <overrides>` would train (jal.sweep.plan_runs: the same directories),
skips the finished ones, groups the others into fusions of at most K runs that can train together
(jal.sweep.fusions: the same fixed settings, the same epoch reached) and trains one fusion after another
in this process (jal.train.train_fusion), printing a line per member as its fusion ends and a closing
summary. Each member writes the files a run alone writes; a stop signal or trainer.stop_at pauses the
fusion at an epoch end, and the same command continues it. Launchers: this one only (one fusion at a time);
fusions side by side (joblib) or one per SLURM task are not built yet.
"""

import argparse
import logging
import sys

from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from jal.config import CONFIG_DIR, ConfigError, one_line


def describe(result: dict) -> str:
    status = result["status"]
    if status == "finished":
        return f"finished, last-epoch test accuracy {result['last_test_acc']:.2f}%"
    if status == "failed":
        return f"failed: {result['error']}"
    return f"{status}" + (f" ({result['reason']})" if result.get("reason") else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuse", type=int, default=8, help="at most this many runs per fusion (default 8)")
    parser.add_argument("overrides", nargs="*", help="the overrides of `python -m jal.train -m`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("jal.train.epochs").setLevel(logging.WARNING)  # a run's epoch lines: its history says them
    from jal import sweep, train  # torch loads here, after the arguments

    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            runs = sweep.plan_runs(args.overrides)
            groups = sweep.fusions(runs, args.fuse)
            print(f"{sweep.runs_(len(runs))}: {len(runs) - sum(map(len, groups))} finished already, "
                  f"{len(groups)} fusion{'s' * (len(groups) != 1)} of at most {args.fuse} to train", flush=True)
            results = []
            for n, group in enumerate(groups, 1):
                for run, result in zip(group, train.train_fusion([r.cfg for r in group], [r.dir for r in group])):
                    print(f"[fusion {n}/{len(groups)}] {run.cell}: {describe(result)}", flush=True)
                    results.append(result)
    except (ConfigError, ValueError, FileNotFoundError, HydraException, OmegaConfBaseException) as err:
        raise SystemExit(f"error: {one_line(err)}") from None
    counts = {s: sum(r["status"] == s for r in results) for s in ("finished", "failed", "paused")}
    print(f"Fused sweep summary: {sweep.runs_(len(results))} trained here: " + ", ".join(
        f"{n} {s}" for s, n in counts.items()) + f", {len(results) - sum(counts.values())} not run to an end")
    if counts["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
