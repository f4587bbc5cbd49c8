"""The driver of tests/test_chaos.py: `python tests/kill_at_write.py ROOT WHEN MODULE ARGS...` runs `python -m
MODULE ARGS`, killed at each of its durable writes in turn, and each time the same command again.

A durable write is a call of os.replace or os.link: every file a run keeps is written under a temporary name and
renamed into place (jal.util.atomic_save: config.yaml, labels.npz, checkpoint.pt, predictions.npz, result.json),
and checkpoint.pt's rotation links the one it replaces to checkpoint.prev.pt (jal.run_dir.save_checkpoint).

First the command runs to its end with out_root=ROOT/uninterrupted, its W writes listed in order in
ROOT/uninterrupted.writes. Then, for each WHEN (`after`, `before`, or both: `after,before`) and each N of 1..W,
with out_root=ROOT/<WHEN><N>: the command dies right after (before) its N-th write, by os._exit(137), as under
SIGKILL (no handler, no `finally`, no atexit runs, nothing buffered is flushed); then the same command runs
there again, untouched. ROOT/report.json holds each one's exit status; ROOT/<WHEN><N>.killed.log and
.again.log their console output.

Each run is a child process forked from this one once it has imported torch, Hydra and jal (most of a tiny
run's seconds, paid once here instead of 2W + 1 times); nothing has run in this process but imports, so each
child starts as `python -m MODULE` would and runs MODULE's `__main__` code.
"""

import json
import os
import runpy
import sys
import warnings
from pathlib import Path

KILLED = 137  # a shell's exit status for a process ended by SIGKILL


def counting(real, calls: list, log: Path, when: str | None, at: int):
    """`real` (os.replace or os.link), each call counted in `calls` (shared by both) and listed in `log`; the
    process dies right `when` (after, before) the call numbered `at`."""

    def call(src, dst, *args, **kwargs):
        calls.append(dst)
        with open(log, "a") as listed:  # appended, not replaced: the count must not count itself
            listed.write(f"{real.__name__} {os.fspath(dst)}\n")
        if when == "before" and len(calls) == at:
            os._exit(KILLED)
        done = real(src, dst, *args, **kwargs)
        if when == "after" and len(calls) == at:
            os._exit(KILLED)
        return done

    return call


def run(root: Path, out_root: str, name: str, argv: list[str], when: str | None = None, at: int = 0) -> int:
    """`python -m <argv> out_root=ROOT/<out_root>` in a child process, killed at a write as asked; its exit
    status. Its console output goes to ROOT/<name>.log, its writes are listed in ROOT/<name>.writes."""
    log = root / f"{name}.writes"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            with open(root / f"{name}.log", "a") as console:
                os.dup2(console.fileno(), 1)
                os.dup2(console.fileno(), 2)
            calls = []
            os.replace, os.link = (counting(os.replace, calls, log, when, at),
                                   counting(os.link, calls, log, when, at))
            sys.argv = [*argv, f"out_root={root / out_root}"]
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main() -> None:
    root, whens, argv = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
    import torch._dynamo  # noqa: F401  (what the SGD optimiser loads at its first use: seconds)

    import jal.fuse.command  # noqa: F401
    import jal.train  # noqa: F401

    # runpy runs the module's code again as __main__ in each child, as `python -m` would: imported here on purpose
    warnings.filterwarnings("ignore", message=r"'jal\.\w+(\.\w+)?' found in sys.modules")
    report = {"uninterrupted": run(root, "uninterrupted", "uninterrupted", argv), "points": []}
    writes = (root / "uninterrupted.writes").read_text().splitlines()
    for when in whens:
        for at in range(1, len(writes) + 1):
            name = f"{when}{at}"
            killed = run(root, name, f"{name}.killed", argv, when, at)
            report["points"].append({"when": when, "at": at, "out_root": name, "killed": killed,
                                     "again": run(root, name, f"{name}.again", argv)})
    (root / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
