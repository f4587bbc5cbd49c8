"""What can go wrong, by kind, and the one boundary every command puts around its body.

Each error a user can act on is a JalError whose message is its one line (what is wrong, where, and the fix):

    JalError
    |- ConfigError        a setting or the command line is wrong (jal.config.BadValue: a value outside its rule)
    |- DataError          a data file is missing, damaged, or not what its name says
    |- DirectoryConflict  a run's directory cannot be used as it is
    |   |- AnotherExperiment  it holds another experiment's files
    |   `- UnreadableFile     a file in it cannot be read (`permission`: not this user's to read) or is damaged
    |- CannotWrite        a folder refuses a file: a full disk, a read-only or unwritable folder
    `- RunDiverged        the run itself failed (a non-finite loss): its record says so

`boundary()` turns these, and Hydra's and OmegaConf's own errors, into `error: <one line>` and exit status 1;
jal.stops.command gives interruptions (Ctrl-C, a second SIGTERM, a lost rank) theirs.
"""

import contextlib
import dataclasses
import re
import typing

# Hydra and OmegaConf are imported where an error is put in words: jal.util, jal.tables and the records need
# these classes without loading them.


class JalError(Exception):
    """An error the user can act on; its message is the one line to print."""


class ConfigError(JalError, ValueError):
    """A wrong setting: reported as one line that names the fix."""


class DataError(JalError, ValueError):
    """A data file (CIFAR's arrays, a label set, a real-world file list or image) is damaged or not what its name
    says: one line naming the file."""


class DirectoryConflict(JalError):
    """A run directory cannot be used as it is: one line, and the way out. `permission`: this user may not read
    a file of it (it is not damaged: never moved aside)."""
    permission = False


class AnotherExperiment(DirectoryConflict):
    """The directory holds the files of another experiment (or of none it says), or two runs would share it."""


class UnreadableFile(DirectoryConflict):
    """A file of the directory cannot be read or parsed (jal.util.unreadable says which)."""


class CannotWrite(JalError, ValueError):
    """A file that its folder refuses (a full disk, a read-only or unwritable folder): one line naming the
    folder and the fix. `fix` says what to do, in the words of the setting that chose the folder."""

    def __init__(self, what: str, reason: str, fix: str, full: bool = False):
        self.what, self.reason, self.full = what, reason, full
        super().__init__(f"cannot write {what}: {reason}; {fix}")

    def with_fix(self, fix: str) -> "CannotWrite":
        return CannotWrite(self.what, self.reason, fix, self.full)


class RunDiverged(JalError):
    """A non-finite training loss: the run fails (its record says so), the last good checkpoint stays."""


def one_line_errors() -> tuple[type, ...]:
    """What the boundary prints in one line: ours, a missing file, and what Hydra and OmegaConf raise while
    composing a config."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return JalError, FileNotFoundError, HydraException, OmegaConfBaseException


@contextlib.contextmanager
def boundary():
    """Around a command's body: an error the user can act on (one_line_errors, or a SLURM task's failure
    reported by submitit) ends the command with `error: <one line>` and exit status 1, without a traceback."""
    try:
        yield
    except one_line_errors() as err:
        raise SystemExit(f"error: {one_line(err)}") from None
    except Exception as err:
        if not type(err).__module__.startswith("submitit"):
            raise
        raise SystemExit(f"error: a SLURM task of the sweep failed: {failed_job(err)}") from None


# ---------------------------------------------------------------------------------------------------
# The one line of an error


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def expected_type(schema, key: str) -> str:
    """What the schema's field `key` holds, in words ("a number or null"), from the dataclass's type hints."""
    hint = typing.get_type_hints(schema).get(key) if dataclasses.is_dataclass(schema) else None
    optional = type(None) in typing.get_args(hint)
    if optional:  # Optional[float] = Union[float, None]
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is list:  # list[float]: "a list of numbers"
        named = TYPE_NAMES.get(typing.get_args(hint)[0], "values").replace("an integer", "integers")
        return "a list of " + named.replace("a number", "numbers").replace("a string", "strings")
    return TYPE_NAMES.get(hint, "of another type") + (" or null" if optional else "")


def one_line(err: BaseException) -> str:
    """The one line to print for an error (Hydra's own span a screen): a wrong option, key or type in the
    words of the setting, else the error's first line and, where Hydra wrapped it, its innermost cause's."""
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    from jal.paths import CONFIG_DIR

    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    if isinstance(err, MissingConfigException) and err.options is not None:  # loss=foo
        group, _, option = (err.missing_cfg_file or "").rpartition("/")
        return f"unknown {group} {option!r}; choose one of: {', '.join(sorted(err.options))}"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.parent_node is not None:  # trainer.epoch=3
        section = cause.full_key.rpartition(".")[0]
        valid = set(cause.parent_node.keys())
        if not section:  # the top level: its keys and the config groups
            valid |= {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
        where = f"in {section}" if section else "at the top level"
        return f"unknown setting {cause.full_key!r}; valid keys {where}: {', '.join(sorted(valid - {'hydra'}))}"
    if isinstance(cause, ValidationError) and cause.parent_node is not None:  # noise.rate=abc
        wanted = expected_type(OmegaConf.get_type(cause.parent_node), cause.key)
        try:  # the parent still holds the value the override tried to replace: an example of the right type
            example = cause.parent_node[cause.key]
        except OmegaConfBaseException:  # an interpolation that does not resolve here: as written
            example = OmegaConf.to_container(cause.parent_node, resolve=False)[cause.key]
        example = "null" if example is None else example
        value = "null" if cause.value is None else repr(cause.value)
        return f"{cause.full_key}={value} is not {wanted}: e.g. {cause.full_key}={example}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    parts = [lines[0] if lines else type(err).__name__]
    innermost = err  # Hydra wraps the error that stopped it (`Error in call to target ...:`): its cause says why
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    if innermost is not err and (inner_lines := str(innermost).strip().splitlines()):
        parts.append(f"{type(innermost).__name__}: {inner_lines[0]}")
    parts += [line.split(". ", 1)[-1].lower() for line in lines[1:] if "--multirun" in line]  # Hydra's hint
    return "; ".join(part.rstrip(":") for part in parts)


def failed_job(err: Exception) -> str:
    """submitit's error for a task that failed, in one line: why, and where its log is. Its FailedJobError
    (the task raised) ends its traceback with the reason; its UncompletedJobError (the task left no result:
    killed, out of memory, out of time with no requeue left) names the job's state."""
    text = str(err)
    logs = re.findall(r"^\s+- (\S+_log\.err)$", text, re.M)
    if "failed during processing with trace" in text:
        trace = text.split("-" * 22)[1].strip().splitlines() if text.count("-" * 22) >= 2 else []
        reason = trace[-1].strip() if trace else text.splitlines()[0]
    elif match := re.search(r"^Job (\S+) \(task: \d+\) with path (\S+)_result\.pkl\s+has not produced any output "
                            r"\(state: ([^)]*)\)", text, re.M | re.S):
        reason = (f"SLURM job {match[1]} ended {match[3]} without a result (killed, out of memory, or out of "
                  "time with no requeue left)")
        logs = [f"{match[2]}_log.err"]
    elif refused := re.findall(r"^\S*: error: .*$", text, re.M):  # sbatch refused the job
        reason = refused[-1].strip()
    else:
        reason = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return reason + (f"; its log: {logs[0]}" if logs else "")
