"""Members of a fusion that a kill left an epoch apart, brought back together: a fusion's members write their
checkpoints one after another, so a kill between two writes leaves those written an epoch ahead of the others.
Each checkpoint names the fusion that trained its epoch (`fusion`: its members' run names; a run alone: its
own), so the plan (jal.multirun.fusions) and the next start (rejoin) bring those ahead back to the common
epoch, and the same fusion trains on instead of two fusions that never rejoin.
"""

import logging
import os
from pathlib import Path

from jal.errors import AnotherExperiment, ConfigError
from jal.experiment import identity_of
from jal.run_dir import CHECKPOINT, PREVIOUS, check_same, load_checkpoint

log = logging.getLogger(__name__)


def rejoined_epochs(done: dict[str, tuple[int, list]]) -> dict[str, int]:
    """run name -> the epoch it resumes from, given run name -> (epochs done, the fusion of its checkpoint):
    a run whose fusion holds a run named here one epoch behind goes back to that epoch."""
    return {name: epoch - 1 if any(done.get(other, (None,))[0] == epoch - 1 for other in fusion if other != name)
            else epoch for name, (epoch, fusion) in done.items()}


def roll_back(run_dir: Path, asked: dict, epoch: int) -> dict | None:
    """Make the run's checkpoint of `epoch` its newest (checkpoint.prev.pt renamed over checkpoint.pt; epoch 0:
    none, the run starts afresh), the one ahead of it dropped. Returns that checkpoint (None for epoch 0)."""
    newest, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if epoch == 0:
        newest.unlink(missing_ok=True)
        previous.unlink(missing_ok=True)
        return None
    state = load_checkpoint(previous) if previous.exists() else {"epoch": None}
    if state["epoch"] != epoch:
        raise AnotherExperiment(f"{run_dir} is an epoch ahead of the runs it was fused with, and {previous} does not "
                                f"hold their epoch {epoch}: train it apart, or trainer.restart=true")
    check_same(identity_of(state), asked, previous)
    os.replace(previous, newest)
    return state


def rejoin(members: list) -> None:
    """Members a kill left an epoch ahead of the others of their fusion (its checkpoints are written one member
    after another) go back to the others' epoch, on disk too: the same fusion trains that epoch again."""
    done = {m.name: (m.state["epoch"], m.state.get("fusion", [])) if m.state else (0, []) for m in members}
    epochs = rejoined_epochs(done)
    for m in members:
        if (epoch := epochs[m.name]) != done[m.name][0]:
            m.state = roll_back(m.run_dir, m.exp.identity, epoch)
            log.info("%s was killed an epoch ahead of the runs fused with it: back to epoch %d to train on with them",
                     m.name, epoch, extra={"run_dir": str(m.run_dir)})  # jal.run.about


def check_same_epoch(members: list) -> None:
    """Members of one fusion train from one epoch on (jal.run.Member.start_epoch)."""
    epochs_at = {m.start_epoch for m in members}
    if len(epochs_at) > 1:
        raise ConfigError(f"runs fused together must be at the same epoch; these are at epochs {sorted(epochs_at)}: "
                          "train them apart, or the ones behind first")
