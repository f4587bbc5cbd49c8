"""The console scripts of `pip install -e .` (pyproject.toml [project.scripts]): `jal-train ARGS` is
`python -m jal.train ARGS`, `jal-fuse` is `python -m jal.fuse`, and so on for jal-plan (the plan of a sweep),
jal-tables, jal-bench, jal-precision-report, jal-gpu-check and jal-mislabelled (a finished run's likely-mislabelled
training samples)."""

import runpy
import sys


def train() -> None:
    """jal-train: jal/train.py run as `python -m jal.train` runs it, its fast check of the command line first
    (a wrong setting, --help and shell completion answer before torch loads), then Hydra. sys.argv[0] stays
    this script's name: `jal-train -sc install=bash` registers Hydra's completion for `jal-train`."""
    runpy.run_module("jal.train", run_name="__main__", alter_sys=False)


def fuse() -> None:
    from jal.fuse.command import main
    from jal.stops import command

    command(main)  # as `python -m jal.fuse`: its stop signals and Ctrl-C handled to its end


def plan() -> None:
    from jal.plan import main

    main()


def tables() -> None:
    from jal.tables import main

    main()


def bench() -> None:
    from jal.bench import main

    main()  # returns its figures, not an exit status


def precision_report() -> None:
    from jal.precision_report import main

    main()


def gpu_check() -> None:
    from jal.gpu_check import main

    sys.exit(main())


def mislabelled() -> None:
    from jal.mislabelled import main

    main()
