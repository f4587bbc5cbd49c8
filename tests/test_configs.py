"""Tests for the Hydra configs: the protocol of docs/protocol.md comes out of composition alone.

`dataset=...` must bring model, epochs, lr, augmentation and the default L2; `loss=...` its
hyperparameters, specialised per dataset by `optional dataset_loss: ${dataset}_${loss}`, which also
switches the regularisation to L1 for losses with AMSE / NNCE / NNFL (docs/protocol.md sections 1 and 2).

Composing is slow (~0.15 s each), so every config is composed once and cached. The loss x dataset grid
is composed in full; the noise option rotates over the grid so that every (dataset, noise) pair and
three noises per loss are composed (the noise group shares no key with loss, model or optim).
"""

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from jal import config, config_check, losses
from jal.errors import one_line
from jal.experiment import hydra_node
from jal.models import CNN8, ResNet34
from jal.util import compose_run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
LOSS_NAMES = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml"))
DATASETS = ["cifar10", "cifar100", "synthetic"]
NOISES = ["none", "symmetric", "asymmetric", "instance", "human"]
NOISE_TAGS = {
    "none": "clean",
    "symmetric": "symmetric_0.4",
    "asymmetric": "asymmetric_0.4",
    "instance": "instance_0.4",
    "human": "human_worst",  # the dataset's default label set (CIFAR-10N worst)
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@functools.cache
def compose_cfg(*overrides):
    return compose_run(list(overrides))


# the eps-Softmax losses have no hyperparameters for human noise on CIFAR-100 (the reference's table)
NO_REFERENCE_VALUES = {("ce_eps_mae", "cifar100", "human"), ("fl_eps_mae", "cifar100", "human")}


def grid_noise(loss, dataset):
    noise = NOISES[(LOSS_NAMES.index(loss) + DATASETS.index(dataset)) % len(NOISES)]
    return "symmetric" if (loss, dataset, noise) in NO_REFERENCE_VALUES else noise


def grid_cfg(loss, dataset):
    """The composed config of one loss x dataset cell of the grid (its noise rotates, see module doc)."""
    return compose_cfg(f"loss={loss}", f"dataset={dataset}", f"noise={grid_noise(loss, dataset)}")


def resolved(cfg, key):
    """cfg.<key> with its interpolations resolved (no hydra: ones: see hydra_resolved)."""
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def hydra_resolved(cfg, *keys):
    """cfg.<key> for each key, resolving hydra: interpolations too, as in a running app."""
    with hydra_node(cfg):
        return [resolved(cfg, key) for key in keys]


# ----------------------------------------------------------------------------- every option composes


def test_grid_covers_every_dataset_noise_pair():
    pairs = {(d, grid_noise(loss, d)) for loss in LOSS_NAMES for d in DATASETS}
    assert pairs == {(d, n) for d in DATASETS for n in NOISES}
    for loss in LOSS_NAMES:
        assert len({grid_noise(loss, d) for d in DATASETS}) == 3


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_every_loss_composes_and_instantiates(loss_name, dataset):
    cfg = grid_cfg(loss_name, dataset)
    noise = grid_noise(loss_name, dataset)
    k = NUM_CLASSES[dataset]
    assert cfg.dataset.num_classes == k
    assert cfg.noise.type == noise
    run_name, tags = hydra_resolved(cfg, "run_name", "logger.tags")
    tag = "human_noisy" if (noise, dataset) == ("human", "cifar100") else NOISE_TAGS[noise]  # CIFAR-100N's one set
    assert run_name == f"{dataset}/{tag}/{loss_name}/seed123"
    assert tags == [dataset, noise, loss_name]

    loss = hydra.utils.instantiate(cfg.loss)
    assert isinstance(loss, torch.nn.Module) and isinstance(loss, losses.Loss)
    assert loss.num_classes == k
    if isinstance(loss, losses.ActivePassive):
        assert loss.active.num_classes == k and loss.passive.num_classes == k
    g = torch.Generator().manual_seed(0)
    value = loss(torch.randn(4, k, generator=g), torch.randint(0, k, (4,), generator=g))
    assert value.shape == () and torch.isfinite(value)


@pytest.mark.parametrize("group", ["dataset_loss"])
def test_optional_group_files_name_existing_options(group):
    """A misspelt <dataset>_<loss>.yaml (or <loss>.yaml) would be skipped silently by an `optional` default."""
    if not (CONFIG_DIR / group).is_dir():
        pytest.skip(f"no configs/{group}")
    valid = {f"{d}_{loss}" for d in DATASETS + ["webvision", "clothing1m"] for loss in LOSS_NAMES} | set(LOSS_NAMES)
    files = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    assert files and set(files) <= valid, set(files) - valid


# ----------------------------------------------------------------------------- hyperparameter table (section 2)

C10, C100 = "cifar10", "cifar100"

# single losses: class and attributes, the same on both datasets unless given per dataset
SINGLES = {
    "ce": ("CE", {}),
    "fl": ("FL", {"gamma": 0.5}),
    "nce": ("NCE", {}),
    "nfl": ("NFL", {"gamma": 0.5}),
    "mae": ("MAE", {"scale": 2.0}),
    "mse": ("MSE", {"a": 1.0}),
    "gce": ("GCE", {"q": 0.7}),
    "rce": ("RCE", {}),
    "aul": ("AUL", {"a": 5.5, "q": 3.0}),
    "agce": ("AGCE", {"a": 0.6, "q": 0.6}),
    "ael": ("AEL", {"a": 2.5}),
    "nnce": ("NNCE", {"min_prob": 1e-8}),
    "nnfl": ("NNFL", {"gamma": 0.5, "min_prob": 1e-8}),
    "amse": ("AMSE", {C10: {"a": 30.0, "q": 2.0}, C100: {"a": 20.0, "q": 2.0}}),
    "ldr_kl": ("LDRKL", {C10: {"threshold": 0.1, "lam": 10.0}, C100: {"threshold": 0.1, "lam": 1.0}}),
    "ce_lc": ("CELC", {C10: {"delta": 2.5}, C100: {"delta": 0.5}}),
    "nlnl": ("NLNL", {"min_prob": 1e-5}),
}

# combinations: active class + attrs, passive class, and per dataset (alpha, beta, passive attrs)
COMBOS = {
    "sce": ("CE", {}, "RCE", {C10: (0.1, 1.0, {}), C100: (6.0, 0.1, {})}),
    "nce_rce": ("NCE", {}, "RCE", {C10: (1.0, 1.0, {}), C100: (10.0, 0.1, {})}),
    "nfl_rce": ("NFL", {"gamma": 0.5}, "RCE", {C10: (1.0, 1.0, {}), C100: (10.0, 0.1, {})}),
    "nce_mae": ("NCE", {}, "MAE", {C10: (1.0, 1.0, {"scale": 1.0}), C100: (10.0, 0.1, {"scale": 1.0})}),
    "nfl_mae": ("NFL", {"gamma": 0.5}, "MAE", {C10: (1.0, 1.0, {"scale": 1.0}), C100: (10.0, 0.1, {"scale": 1.0})}),
    "nce_agce": ("NCE", {}, "AGCE", {C10: (1.0, 4.0, {"a": 6.0, "q": 1.5}), C100: (10.0, 0.1, {"a": 1.8, "q": 3.0})}),
    "nce_aul": ("NCE", {}, "AUL", {C10: (1.0, 4.0, {"a": 6.3, "q": 1.5}), C100: (10.0, 0.015, {"a": 6.0, "q": 3.0})}),
    "nce_ael": ("NCE", {}, "AEL", {C10: (1.0, 4.0, {"a": 5.0}), C100: (10.0, 0.1, {"a": 1.5})}),
    "anl_ce": ("NCE", {}, "NNCE", {C10: (5.0, 5.0, {"min_prob": 1e-8}), C100: (10.0, 1.0, {"min_prob": 1e-8})}),
    "anl_fl": (
        "NFL",
        {"gamma": 0.5},
        "NNFL",
        {C10: (5.0, 5.0, {"gamma": 0.5, "min_prob": 1e-8}), C100: (10.0, 1.0, {"gamma": 0.5, "min_prob": 1e-8})},
    ),
    "jal_ce": ("NCE", {}, "AMSE", {C10: (1.0, 1.0, {"a": 30.0}), C100: (5.0, 1.0, {"a": 20.0})}),
    "jal_fl": ("NFL", {"gamma": 0.5}, "AMSE", {C10: (1.0, 1.0, {"a": 30.0}), C100: (5.0, 1.0, {"a": 20.0})}),
    "agce_mae": ("AGCE", {"a": 3.0, "q": 1.5}, "MAE",
                 {C10: (1.0, 1.0, {"scale": 1.0}), C100: (1.0, 1.0, {"scale": 1.0})}),
}
# the eps-Softmax losses: their values depend on the noise too (every row: tests/test_published_losses.py)
EPS_SOFTMAX_LOSSES = {"ce_eps_mae": "ECE", "fl_eps_mae": "EFL"}


def expectation(loss_name: str):
    """The expected classes and values of a loss option, or a one-line failure naming the table to add it to."""
    for table in (SINGLES, COMBOS, EPS_SOFTMAX_LOSSES):
        if loss_name in table:
            return table[loss_name]
    pytest.fail(f"add {loss_name} to tests/test_configs.py::SINGLES (a single loss) or ::COMBOS (an ActivePassive "
                f"sum): docs/losses.md, Add a loss", pytrace=False)


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_every_loss_option_has_expectations(loss_name):
    expectation(loss_name)


def test_every_expectation_is_a_loss_option_in_one_table():
    assert sorted((set(SINGLES) | set(COMBOS) | set(EPS_SOFTMAX_LOSSES)) - set(LOSS_NAMES)) == []
    assert not set(SINGLES) & set(COMBOS)


def test_a_loss_without_expectations_fails_in_one_line_naming_the_table():
    with pytest.raises(pytest.fail.Exception) as missing:
        expectation("loss_of_no_table")  # not my_loss: docs/losses.md's recipe adds that one to SINGLES
    assert str(missing.value) == ("add loss_of_no_table to tests/test_configs.py::SINGLES (a single loss) or ::COMBOS "
                                  "(an ActivePassive sum): docs/losses.md, Add a loss")
    assert not missing.value.pytrace  # pytest shows the line alone, without the traceback


def assert_module(module, class_name, attrs, where):
    # a class of jal.losses by its name, another module's by its dotted path (docs/losses.md's my_losses.MyLoss)
    expected = hydra.utils.get_class(class_name) if "." in class_name else getattr(losses, class_name)
    assert type(module) is expected, f"{where}: {type(module).__name__} != {class_name}"
    for name, value in attrs.items():
        assert getattr(module, name) == pytest.approx(value, rel=1e-12), f"{where}.{name}"


@pytest.mark.parametrize("dataset", [C10, C100])
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_hyperparameters_come_from_composition(loss_name, dataset):
    loss = hydra.utils.instantiate(grid_cfg(loss_name, dataset).loss)
    where = f"{dataset}/{loss_name}"
    expected = expectation(loss_name)
    if loss_name in SINGLES:
        class_name, attrs = expected
        attrs = attrs.get(dataset, attrs) if C10 in attrs else attrs
        assert_module(loss, class_name, attrs, where)
    elif loss_name in EPS_SOFTMAX_LOSSES:
        assert type(loss.active) is getattr(losses, expected), where
        assert type(loss.passive) is losses.MAE and loss.passive.scale == 2.0, where
    else:
        active_cls, active_attrs, passive_cls, per_dataset = expected
        alpha, beta, passive_attrs = per_dataset[dataset]
        assert type(loss) is losses.ActivePassive, where
        assert (loss.alpha, loss.beta) == (pytest.approx(alpha, rel=1e-12), pytest.approx(beta, rel=1e-12)), where
        assert_module(loss.active, active_cls, active_attrs, where + ".active")
        assert_module(loss.passive, passive_cls, passive_attrs, where + ".passive")


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_synthetic_takes_the_cifar10_hyperparameters(loss_name):
    """No specialisation for synthetic: its losses are the loss configs' defaults, which are CIFAR-10's."""
    noise = f"noise={grid_noise(loss_name, 'synthetic')}"  # the eps-Softmax losses' values depend on it
    syn = OmegaConf.to_container(compose_cfg(f"loss={loss_name}", "dataset=synthetic", noise).loss, resolve=True)
    c10 = OmegaConf.to_container(compose_cfg(f"loss={loss_name}", f"dataset={C10}", noise).loss, resolve=True)
    assert syn == c10


@pytest.mark.full  # over 1 s of CPU
def test_cifar100_specialisation_changes_the_loss_value():
    """Behaviour, not just attributes: JAL-CE on CIFAR-100 is 5 NCE + AMSE(20), not NCE + AMSE(30)."""
    loss = hydra.utils.instantiate(grid_cfg("jal_ce", C100).loss)
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(6, 100, generator=g), torch.randint(0, 100, (6,), generator=g)
    expected = 5.0 * losses.NCE(100)(z, y) + losses.AMSE(100, a=20.0)(z, y)
    torch.testing.assert_close(loss(z, y), expected)


# ----------------------------------------------------------------------------- the library's paper values


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "webvision", "clothing1m"])
@pytest.mark.parametrize("loss_name, library", [("jal_ce", losses.JALCE), ("jal_fl", losses.JALFL)])
def test_the_library_builds_jal_as_the_configs_compose_it(loss_name, library, dataset):
    """JALCE.paper / JALFL.paper and paper_values (docs/losses.md) against the runs' own composition: the same
    terms, weights, a and gamma, the same values on a batch, and the regularisation the run resolves."""
    cfg = compose_cfg(f"loss={loss_name}", f"dataset={dataset}")
    composed, ours, paper = hydra.utils.instantiate(cfg.loss), library.paper(dataset), losses.paper_values(dataset)
    assert ours.num_classes == composed.num_classes == paper.num_classes == cfg.dataset.num_classes
    assert [type(m) for m in ours.children()] == [type(m) for m in composed.children()]
    assert (ours.alpha, ours.beta) == (composed.alpha, composed.beta) == (paper.alpha, paper.beta)
    assert (ours.passive.a, ours.passive.q) == (composed.passive.a, composed.passive.q) == (paper.a, 2.0)
    assert getattr(ours.active, "gamma", None) == getattr(composed.active, "gamma", None)
    if loss_name == "jal_fl":
        assert ours.active.gamma == paper.gamma
    assert (resolved(cfg, "optim.l1"), resolved(cfg, "optim.weight_decay")) == (paper.l1, paper.weight_decay)
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(8, paper.num_classes, generator=g), torch.randint(0, paper.num_classes, (8,), generator=g)
    assert torch.equal(ours(z, y), composed(z, y))


def test_the_library_knows_the_papers_four_datasets_only():
    assert set(losses.PAPER_VALUES) == {"cifar10", "cifar100", "webvision", "clothing1m"}
    with pytest.raises(ValueError, match=r"^the paper trains JAL on cifar10, cifar100, webvision, clothing1m, not "
                                         r"'synthetic': on your own data give JALCE\(num_classes, alpha, beta, a\)"):
        losses.JALCE.paper("synthetic")


# ----------------------------------------------------------------------------- regularisation rule (section 1)

L1_LOSSES = {
    "jal_ce": (5e-5, 5e-6),
    "jal_fl": (5e-5, 5e-6),
    "amse": (5e-5, 5e-6),  # losses with AMSE
    "anl_ce": (5e-5, 5e-7),
    "anl_fl": (5e-5, 5e-7),
    "nnce": (5e-5, 5e-7),
    "nnfl": (5e-5, 5e-7),  # NNCE / NNFL
}
L2 = {C10: 1e-4, C100: 1e-5, "synthetic": 1e-4}


def has_an_l1_term(loss: torch.nn.Module) -> bool:
    return any(type(m) in (losses.AMSE, losses.NNCE, losses.NNFL) for m in loss.modules())


@pytest.mark.parametrize("dataset", [C10, C100, "synthetic"])  # synthetic follows CIFAR-10
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_regularisation_rule(loss_name, dataset):
    cfg = grid_cfg(loss_name, dataset)
    if loss_name not in L1_LOSSES and has_an_l1_term(hydra.utils.instantiate(cfg.loss)):
        pytest.fail(f"add {loss_name} to tests/test_configs.py::L1_LOSSES: a term of it is AMSE, NNCE or NNFL, which "
                    f"train with L1 (docs/losses.md, Add a loss)", pytrace=False)
    l1, weight_decay = resolved(cfg, "optim.l1"), resolved(cfg, "optim.weight_decay")
    if loss_name in L1_LOSSES:
        expected_l1 = L1_LOSSES[loss_name][1 if dataset == C100 else 0]
        assert l1 == pytest.approx(expected_l1, rel=1e-12) and weight_decay == 0.0, (loss_name, l1, weight_decay)
    else:
        assert l1 == 0.0 and weight_decay == pytest.approx(L2[dataset], rel=1e-12), (loss_name, l1, weight_decay)


# ----------------------------------------------------------------------------- dataset protocol (section 1)

PROTOCOL = {
    C10: {
        "model": CNN8,
        "epochs": 120,
        "lr": 0.01,
        "rotation": 0.0,
        "mean": [0.49139968, 0.48215827, 0.44653124],
        "std": [0.24703233, 0.24348505, 0.26158768],
    },
    C100: {
        "model": ResNet34,
        "epochs": 200,
        "lr": 0.1,
        "rotation": 20.0,
        "mean": [0.5071, 0.4865, 0.4409],
        "std": [0.2673, 0.2564, 0.2762],
    },
}


@pytest.mark.parametrize("dataset", [C10, C100])
def test_dataset_brings_its_protocol(dataset):
    cfg = grid_cfg("ce", dataset)
    want = PROTOCOL[dataset]
    assert resolved(cfg, "model._target_").endswith(want["model"].__name__)
    assert hydra.utils.get_class(cfg.model._target_) is want["model"]
    assert resolved(cfg, "model.num_classes") == NUM_CLASSES[dataset]
    assert resolved(cfg, "trainer.epochs") == want["epochs"]
    assert resolved(cfg, "optim.lr") == pytest.approx(want["lr"])
    assert resolved(cfg, "dataset.rotation") == pytest.approx(want["rotation"])
    assert resolved(cfg, "dataset.mean") == pytest.approx(want["mean"], rel=1e-9)
    assert resolved(cfg, "dataset.std") == pytest.approx(want["std"], rel=1e-9)
    # shared by both datasets
    assert resolved(cfg, "trainer.batch_size") == 128
    assert resolved(cfg, "trainer.eval_batch_size") == 256
    assert resolved(cfg, "optim.momentum") == pytest.approx(0.9)
    assert resolved(cfg, "optim.grad_clip") == pytest.approx(5.0)


def test_model_override_beats_the_dataset_default():
    cfg = compose_cfg("dataset=cifar100", "model=cnn8")
    assert hydra.utils.get_class(cfg.model._target_) is CNN8
    assert resolved(cfg, "model.num_classes") == 100
    assert resolved(cfg, "trainer.epochs") == 200  # the rest of the dataset's protocol stays
    cfg = compose_cfg("dataset=cifar10", "model=resnet34")
    assert hydra.utils.get_class(cfg.model._target_) is ResNet34
    assert resolved(cfg, "model.num_classes") == 10


# ----------------------------------------------------------------------------- command line beats specialisation


@pytest.mark.full  # over 1 s of CPU
def test_command_line_beats_the_specialisation():
    cfg = compose_cfg("loss=jal_ce", "dataset=cifar100", "loss.passive.a=12", "loss.alpha=3")
    loss = hydra.utils.instantiate(cfg.loss)
    assert loss.passive.a == 12 and loss.alpha == 3
    assert loss.beta == 1.0  # untouched specialisation values stay
    assert resolved(cfg, "optim.l1") == pytest.approx(5e-6)

    cfg = compose_cfg("loss=jal_ce", "dataset=cifar100", "optim.l1=1e-3", "optim.weight_decay=2e-4")
    assert resolved(cfg, "optim.l1") == pytest.approx(1e-3)
    assert resolved(cfg, "optim.weight_decay") == pytest.approx(2e-4)
    assert hydra.utils.instantiate(cfg.loss).passive.a == 20.0

    cfg = compose_cfg("loss=nce_aul", "dataset=cifar100", "loss.passive.q=2.5")
    loss = hydra.utils.instantiate(cfg.loss)
    assert loss.passive.q == 2.5 and loss.passive.a == 6.0 and loss.beta == pytest.approx(0.015)


# ----------------------------------------------------------------------------- schemas (jal/config.py)


@pytest.mark.parametrize("group", ["dataset", "noise", "logger", "loss"])
@pytest.mark.full  # over 1 s of CPU: composes every option of the group
def test_every_group_option_is_typed_by_a_schema(group):
    """A config file without its schema would compose untyped and skip every value rule."""
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        cfg = compose_cfg(f"{group}={path.stem}", *(["dataset=cifar10"] if group == "noise" else []))
        node = cfg[group]
        assert OmegaConf.get_type(node) is not dict, path
        for term in ("active", "passive"):
            if term in node:
                assert OmegaConf.get_type(node[term]) is not dict, f"{path}: {term}"
    cfg = compose_cfg()
    assert OmegaConf.get_type(cfg.trainer) is not dict and OmegaConf.get_type(cfg.optim) is not dict


# ----------------------------------------------------------------------------- the recipe for a loss, the warning


def doc_blocks(section: str, language: str) -> list[str]:
    """The code blocks of a section of docs/losses.md, where the README sends a reader who adds a loss."""
    text = (CONFIG_DIR.parent / "docs" / "losses.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, re.S)


# The heading line of each block of the recipe: the file it goes in, and where.
RECIPE_STEP = re.compile(r'# (\S+): (at the end|a new file|(before|after) the line "([^"]+)")')


def recipe_steps() -> list[tuple[str, str, str | None, str]]:
    """docs/losses.md's "Add a loss" as (file, at-the-end / a-new-file / before / after, the line, the block)."""
    steps = []
    for block in doc_blocks("Add a loss", "(?:python|yaml)"):
        step = RECIPE_STEP.match(block)
        assert step, f"a block of docs/losses.md's Add a loss does not say where it goes: {block.splitlines()[0]}"
        steps.append((step[1], step[3] or step[2], step[4], block))
    return steps


@pytest.mark.full  # over 1 s of CPU
def test_the_readme_recipe_for_a_loss_types_and_checks_its_settings(tmp_path, monkeypatch):
    """The class, its schema and its YAML file as docs/losses.md writes them: `loss.t=abc` fails while Hydra
    composes, `loss.t=-1` at the value rules, both in one line, and `loss.t=2` trains with t = 2."""
    steps = {(file, where): block for file, where, _, block in recipe_steps()}
    loss_class, schema = steps["my_losses.py", "a new file"], steps["jal/config.py", "before"]
    yaml = steps["configs/loss/my_loss.yaml", "a new file"]
    (tmp_path / "my_losses.py").write_text(loss_class)
    monkeypatch.syspath_prepend(str(tmp_path))  # the reader's folder, where python -m runs
    namespace = vars(config) | {}
    exec(schema, namespace)
    ConfigStore.instance().store(group="schema/loss", name="my_loss", node=namespace["MyLossConfig"])
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "my_loss.yaml").write_text(yaml)
    search = f"hydra.searchpath=[file://{tmp_path}]"
    assert hydra.utils.instantiate(compose_run([search, "loss=my_loss", "loss.t=2"]).loss).t == 2.0
    with pytest.raises(hydra.errors.HydraException) as untyped:
        compose_run([search, "loss=my_loss", "loss.t=abc"])
    assert one_line(untyped.value) == "loss.t='abc' is not a number: e.g. loss.t=1.0"
    with pytest.raises(config.ConfigError) as negative:
        config_check.check_config(compose_run([search, "loss=my_loss", "loss.t=-1"]))
    assert str(negative.value) == "loss.t=-1.0 must be finite and > 0: e.g. loss.t=1.0"


@pytest.mark.parametrize("loss_name, key", [("amse", "loss.a"), ("jal_ce", "loss.passive.a"),
                                            ("jal_fl", "loss.passive.a")])
def test_the_amse_warning_names_the_setting_the_loss_has(loss_name, key):
    from jal.run import amse_warning

    cfg = compose_cfg(f"loss={loss_name}", "dataset=cifar10", "noise=symmetric", "noise.rate=0.8",
                      f"{key}=2")
    warning = amse_warning(cfg, hydra.utils.instantiate(cfg.loss))
    assert warning.startswith("AMSE a=2 is below the asymmetry bound a >= 9.00") and warning.endswith(f"raise {key}")


# ----------------------------------------------------------------------------- Hydra's compose API, anywhere

COMPOSE_ANYWHERE = """
import json, sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
import jal.util
with initialize_config_dir(str(jal.util.CONFIG_DIR), version_base="1.3"):
    plain = compose("train", ["dataset=synthetic", "loss=jal_ce", "loss.passive.a=12.0"])
a = jal.util.compose_run(["dataset=synthetic", "loss=jal_ce", "loss.passive.a=12.0"])
b = jal.util.compose_run(["dataset=synthetic", "loss=ce"])  # composed last: Hydra's runtime holds it
resolved = OmegaConf.create(OmegaConf.to_yaml(a, resolve=True))
print(json.dumps(dict(where=jal.__file__, a=OmegaConf.get_type(plain.loss.passive).__name__,
                      run_name=resolved.run_name, tags=list(resolved.logger.tags),
                      output_dir=resolved.hydra.runtime.output_dir)))
"""


@pytest.mark.full  # python processes, pip's view of the install
def test_the_configs_compose_from_any_folder_and_resolve_on_their_own(tmp_path):
    """From a folder outside the checkout, the installed package's plugin registers the schemas (an editable
    install's import hook once hid it from Hydra's plugin scan), and a composed config resolves whole."""
    env = dict(os.environ)
    installed = subprocess.run([sys.executable, "-c", "import jal; print(jal.__file__)"], cwd=tmp_path, env=env,
                               capture_output=True, text=True)
    if Path(installed.stdout.strip()).parent.parent != CONFIG_DIR.parent:  # another checkout's install: test ours
        env["PYTHONPATH"] = os.pathsep.join([str(CONFIG_DIR.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", COMPOSE_ANYWHERE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(got["where"]).parent.parent == CONFIG_DIR.parent
    assert got["a"] == "AMSEConfig"  # typed by its schema
    assert got["run_name"] == "synthetic/clean/jal_ce/seed123/loss.passive.a=12"  # its own choices, not b's
    assert got["tags"] == ["synthetic", "none", "jal_ce"]
    assert got["output_dir"] == "outputs/" + got["run_name"]
