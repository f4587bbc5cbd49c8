"""Shared test helpers: compose the training config the way `python -m jal.train` does."""

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"


def shared_data_dir() -> Path | None:
    """$JAL_DATA_DIR when it is set and holds the real CIFAR-10 (docs/protocol.md section 6), else None."""
    candidate = os.environ.get("JAL_DATA_DIR")
    if candidate and (Path(candidate) / "cifar10.npz").is_file():
        return Path(candidate)
    return None


def compose_train(overrides: list[str], run_dir: Path | None = None):
    """The composed config of one run, with Hydra's runtime set as in a real launch (run_name etc. resolve)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def synthetic_run(tmp_path):
    """compose for a small, fast synthetic run that logs nothing remotely."""

    def make(*overrides: str):
        base = ["dataset=synthetic", "logger=none", "trainer.progress=false", f"out_root={tmp_path}"]
        return compose_train(base + list(overrides))

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy machine (restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
