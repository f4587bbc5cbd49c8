"""A run's Weights & Biases run: its id (a function of the run's name, so a resumed run continues its W&B run
and two experiments never share one) and its start. W&B is imported only when a run logs to it."""

import hashlib
import os
import re
from pathlib import Path

from omegaconf import DictConfig

from jal.experiment import plain_config

WANDB_ID_RESERVED = ":;,#?/'"  # characters W&B refuses in a run id
WANDB_NAME_MAX = 128  # W&B refuses longer run names


def wandb_run_id(run_name: str) -> str:
    """The W&B run id of a run: its name with '/' as '-' (a cell's directory, `cifar10-clean-ce-seed123`); a
    name with other characters W&B refuses (the ',' between two settings) or a long one gets them replaced,
    is cut, and ends in a digest of the whole name, so two experiments never share (and resume) one W&B run."""
    readable = run_name.replace("/", "-")
    if not any(c in WANDB_ID_RESERVED for c in readable) and len(readable) <= WANDB_NAME_MAX:
        return readable
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:10]
    return f"{re.sub(f'[{re.escape(WANDB_ID_RESERVED)}]', '-', readable)[:WANDB_NAME_MAX - 11]}-{digest}"


def start_wandb(cfg: DictConfig, run_dir: Path):
    if cfg.logger.name != "wandb" or os.environ.get("WANDB_MODE") == "disabled":  # e.g. a bare GPU host
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    name = cfg.run_name if len(cfg.run_name) <= WANDB_NAME_MAX else cfg.run_name[:WANDB_NAME_MAX - 1] + "…"
    return wandb.init(
        project=cfg.logger.project, entity=cfg.logger.entity, mode=cfg.logger.mode, group=cfg.logger.group,
        tags=list(cfg.logger.tags), name=name, dir=str(run_dir), config=plain_config(cfg),
        # create_new: a fusion holds one W&B run per member in this process, and one's start must not finish
        # another's (each run is finished by its member, train_locked)
        id=wandb_run_id(cfg.run_name), resume="allow", reinit="create_new",
    )

