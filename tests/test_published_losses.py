"""The baselines of the published tables beyond the active/passive sums (LDR-KL, CE+LC, CE_eps+MAE, FL_eps+MAE,
NLNL), the JAL paper's ablation losses (AGCE+MAE, AMSE with an exponent q), the eps-Softmax hyperparameter
table, the regularisation rule for every loss config, and composing without `import jal`.

Values are checked against formulas written here in numpy (float64) from the reference's definitions, and
gradients against central finite differences of those formulas (so autograd and the formula agree on the
logits-gradient, not the code with itself).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_configs import LOSS_NAMES, compose_cfg, grid_cfg, resolved

from jal import config, losses, preflight, resolvers, tables
from jal import run as jal_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

REPO = Path(__file__).resolve().parents[1]
Z = np.array([[1.0, 2.0, 3.0, -1.0], [0.5, -0.5, 0.0, 2.0], [0.3, 0.1, -0.2, 0.0]])  # norms 3.87, 2.12, 0.42
Y = np.array([2, 0, 1])


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_ldr(z, y, c, lam):
    s = np.log1p(np.exp(z))
    s = s / s.mean(axis=1, keepdims=True)
    d = (c * (1 - np.eye(z.shape[1])[y]) + s - s[np.arange(len(y)), y][:, None]) / lam
    return lam * np.log(np.exp(d).mean(axis=1))


def np_celc(z, y, delta):
    norms = np.linalg.norm(z, axis=1, keepdims=True) + 1e-8
    zc = np.where(norms > 1 / delta, z / norms * delta, z)
    return -np.log(np.clip(softmax(zc), 1e-8, 1)[np.arange(len(y)), y])


def np_eps_p(z, m):
    p = softmax(z)
    return (p + m * np.eye(z.shape[1])[p.argmax(axis=1)]) / (1 + m)


def np_ce_eps_mae(z, y, alpha, beta, m):
    rows = np.arange(len(y))
    return alpha * -np.log(np.clip(np_eps_p(z, m), 1e-8, None)[rows, y]) + beta * 2 * (1 - softmax(z)[rows, y])


def np_fl_eps_mae(z, y, alpha, beta, m, gamma, factor=None):
    rows = np.arange(len(y))
    pe = np.clip(np_eps_p(z, m), 1e-8, None)[rows, y]
    factor = (1 - pe) ** gamma if factor is None else factor  # the focal factor: a constant in backprop
    return alpha * -factor * np.log(pe) + beta * 2 * (1 - softmax(z)[rows, y])


def np_amse_q(z, y, a, q):
    return (np.abs(a * np.eye(z.shape[1])[y] - softmax(z)) ** q).mean(axis=1)


def np_agce_mae(z, y, alpha, beta, a, q):
    py = softmax(z)[np.arange(len(y)), y]
    return alpha * ((a + 1) ** q - (a + py) ** q) / q + beta * (1 - py)


def np_nlnl(z, y, neg, weights):
    p_neg = softmax(z)[np.arange(len(y)), neg]
    return -weights[y] * np.log(np.clip(1 - p_neg, 1e-5, 1))


def numeric_grad(f, z, h=1e-6):
    """d mean(f(z)) / dz by central differences."""
    g = np.zeros_like(z)
    for idx in np.ndindex(*z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        g[idx] = (f(up).mean() - f(down).mean()) / (2 * h)
    return g


def autograd(loss, z, y):
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    value = loss(zt, torch.tensor(y))
    value.backward()
    return value.item(), loss.per_sample(zt.detach(), torch.tensor(y)).numpy(), zt.grad.numpy()


CASES = {  # name: (loss, numpy formula of its per-sample value)
    "ldr_kl c10": (losses.LDRKL(4, threshold=0.1, lam=10.0), lambda z: np_ldr(z, Y, 0.1, 10.0)),
    "ldr_kl c100": (losses.LDRKL(4, threshold=0.1, lam=1.0), lambda z: np_ldr(z, Y, 0.1, 1.0)),
    "ce_lc 2.5": (losses.CELC(4, delta=2.5), lambda z: np_celc(z, Y, 2.5)),
    "ce_lc 0.5": (losses.CELC(4, delta=0.5), lambda z: np_celc(z, Y, 0.5)),
    "ce_eps_mae": (losses.ActivePassive(losses.ECE(4, m=1e5), losses.MAE(4, scale=2.0), 0.01, 5.0),
                   lambda z: np_ce_eps_mae(z, Y, 0.01, 5.0, 1e5)),
    "ce_eps_mae m2": (losses.ActivePassive(losses.ECE(4, m=2.0), losses.MAE(4, scale=2.0), 0.5, 1.0),
                      lambda z: np_ce_eps_mae(z, Y, 0.5, 1.0, 2.0)),
    "amse q3": (losses.AMSE(4, a=30.0, q=3.0), lambda z: np_amse_q(z, Y, 30.0, 3.0)),
    "amse q1.5": (losses.AMSE(4, a=5.0, q=1.5), lambda z: np_amse_q(z, Y, 5.0, 1.5)),
    "agce_mae": (losses.ActivePassive(losses.AGCE(4, a=3.0, q=1.5), losses.MAE(4, scale=1.0), 1.0, 1.0),
                 lambda z: np_agce_mae(z, Y, 1.0, 1.0, 3.0, 1.5)),
}


@pytest.mark.parametrize("name", CASES)
def test_value_and_gradient_norm_by_hand(name):
    loss, formula = CASES[name]
    value, per_sample, grad = autograd(loss, Z, Y)
    np.testing.assert_allclose(per_sample, formula(Z), rtol=1e-6)
    assert value == pytest.approx(formula(Z).mean(), rel=1e-5)  # forward computes in float32
    expected = numeric_grad(formula, Z)
    assert np.linalg.norm(grad) == pytest.approx(np.linalg.norm(expected), rel=1e-4)
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-7)


def test_fl_eps_mae_detaches_its_focal_factor():
    loss = losses.ActivePassive(losses.EFL(4, m=2.0, gamma=0.1), losses.MAE(4, scale=2.0), 0.5, 1.0)
    value, per_sample, grad = autograd(loss, Z, Y)
    np.testing.assert_allclose(per_sample, np_fl_eps_mae(Z, Y, 0.5, 1.0, 2.0, 0.1), rtol=1e-6)
    pe = np.clip(np_eps_p(Z, 2.0), 1e-8, None)[np.arange(3), Y]
    frozen = numeric_grad(lambda z: np_fl_eps_mae(z, Y, 0.5, 1.0, 2.0, 0.1, factor=(1 - pe) ** 0.1), Z)
    live = numeric_grad(lambda z: np_fl_eps_mae(z, Y, 0.5, 1.0, 2.0, 0.1), Z)
    np.testing.assert_allclose(grad, frozen, rtol=1e-3, atol=1e-7)
    assert np.abs(live - frozen).max() > 1e-4  # the choice is visible in the gradient


def test_hand_values_on_uniform_logits():
    """Closed forms at z = 0 (p = 1/K), K = 4, label 0: literal numbers."""
    z, y = torch.zeros(1, 4), torch.tensor([0])
    # LDR-KL: s = 1 for all k, d = (c [k != y]) / lambda -> lambda log((1 + 3 e^{c/lambda}) / 4)
    ldr = 10 * math.log((1 + 3 * math.exp(0.01)) / 4)
    assert losses.LDRKL(4, 0.1, 10.0)(z, y).item() == pytest.approx(ldr, rel=1e-5)
    assert losses.CELC(4, 2.5)(z, y).item() == pytest.approx(math.log(4), rel=1e-6)  # norm 0: unchanged
    # eps-Softmax at a tie: argmax is class 0 -> p_eps_0 = (1/4 + m) / (1 + m)
    m = 3.0
    assert losses.ECE(4, m=m)(z, y).item() == pytest.approx(-math.log((0.25 + m) / (1 + m)), rel=1e-6)
    assert losses.ECE(4, m=m)(z, torch.tensor([1])).item() == pytest.approx(-math.log(0.25 / (1 + m)), rel=1e-6)
    assert losses.AMSE(4, a=2.0, q=3.0)(z, y).item() == pytest.approx((1.75**3 + 3 * 0.25**3) / 4, rel=1e-6)
    nlnl = losses.NLNL(4)
    assert nlnl(z, y).item() == pytest.approx(-math.log(0.75), rel=1e-6)  # any complementary label: p = 1/4


# ----------------------------------------------------------------------------- properties by construction


def test_eps_softmax_is_a_distribution_close_to_one_hot():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g, dtype=torch.float64) * 5
    for m in (0.0, 1.0, 1e2, 1e5):
        p = losses.eps_softmax(z, m)
        torch.testing.assert_close(p.sum(1), torch.ones(64, dtype=torch.float64))
        assert (p >= 0).all()
        assert (p.argmax(1) == z.argmax(1)).all()
        top = p.max(1).values
        assert (top >= m / (1 + m) - 1e-12).all()  # within 1/(1+m) of a one-hot vector
    torch.testing.assert_close(losses.eps_softmax(z, 0.0), torch.softmax(z, 1))


@pytest.mark.parametrize("delta", [0.5, 2.5])
def test_logit_clip_keeps_small_and_rescales_large_logits(delta):
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(200, 10, generator=g, dtype=torch.float64)
    norms = torch.logspace(-3, 2, 200, dtype=torch.float64)[:, None]
    z = direction / direction.norm(dim=1, keepdim=True) * norms
    clipped = losses.CELC(10, delta=delta).clip(z)
    small = norms.squeeze(1) <= 1 / delta
    assert small.any() and (~small).any()
    torch.testing.assert_close(clipped[small], z[small], rtol=0, atol=0)  # unchanged at norm <= 1/delta
    torch.testing.assert_close(clipped[~small].norm(dim=1), torch.full(((~small).sum(),), delta, dtype=torch.float64))
    cosine = torch.nn.functional.cosine_similarity(clipped, z, dim=1)
    torch.testing.assert_close(cosine, torch.ones(200, dtype=torch.float64))  # the direction is kept


def test_amse_q2_is_amse():
    g = torch.Generator().manual_seed(2)
    z, y = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    torch.testing.assert_close(losses.AMSE(10, a=30.0, q=2.0)(z, y), losses.AMSE(10, a=30.0)(z, y))
    ref = ((30 * torch.nn.functional.one_hot(y, 10) - torch.softmax(z, 1)).abs() ** 2.0).mean(1).mean()
    torch.testing.assert_close(losses.AMSE(10, a=30.0, q=2.000001)(z, y), ref, rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------- NLNL


def test_nlnl_class_weights_from_the_noisy_label_counts():
    nlnl = losses.NLNL(4)
    nlnl.fit_labels(torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3]))  # counts 6, 3, 2, 1
    torch.testing.assert_close(nlnl.class_weights, torch.tensor([1.0, 2.0, 3.0, 6.0]))
    nlnl.fit_labels(torch.tensor([0, 0, 2]))  # class 1 and 3 absent: finite, never used
    assert torch.isfinite(nlnl.class_weights).all() and nlnl.class_weights[[0, 2]].tolist() == [1.0, 2.0]


def test_nlnl_value_and_gradient_for_the_drawn_complementary_labels():
    k, y = 4, torch.tensor(Y)
    nlnl = losses.NLNL(k)
    nlnl.fit_labels(torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3]))  # weights 1, 2, 1, 2
    weights = np.array([1.0, 2.0, 1.0, 2.0])
    nlnl.set_generator(torch.Generator().manual_seed(7))
    r = torch.randint(1, k, (3,), generator=torch.Generator().manual_seed(7))  # the same stream
    neg = ((y + r) % k).numpy()
    assert (neg != Y).all()
    value, _, grad = autograd(nlnl, Z, Y)
    formula = lambda z: np_nlnl(z, Y, neg, weights)
    assert value == pytest.approx(formula(Z).mean(), rel=1e-5)
    expected = numeric_grad(formula, Z)
    assert np.linalg.norm(grad) == pytest.approx(np.linalg.norm(expected), rel=1e-4)


def test_nlnl_complementary_labels_are_uniform_over_the_other_classes_and_follow_the_generator():
    k = 5
    nlnl = losses.NLNL(k)
    targets = torch.arange(k).repeat(4000)
    nlnl.set_generator(torch.Generator().manual_seed(3))
    neg = nlnl.complementary_labels(targets)
    assert (neg != targets).all()
    counts = torch.zeros(k, k)
    counts.index_put_((targets, neg), torch.ones(len(targets)), accumulate=True)
    off = counts[~torch.eye(k, dtype=torch.bool)] / 4000
    assert (off - 1 / (k - 1)).abs().max() < 0.03  # each other class about 1/(K-1) of the time
    # the same generator state draws the same labels: a resumed epoch redraws what the first run drew
    nlnl.set_generator(torch.Generator().manual_seed(3))
    assert torch.equal(nlnl.complementary_labels(targets), neg)
    nlnl.set_generator(torch.Generator().manual_seed(4))
    assert not torch.equal(nlnl.complementary_labels(targets), neg)


class SeedNotingNLNL(losses.NLNL):
    """NLNL that notes, at each draw of complementary labels, the seed of the generator it draws from."""
    drawn_from: list = []

    def complementary_labels(self, targets):
        SeedNotingNLNL.drawn_from.append(self._generator.initial_seed() if self._generator is not None else None)
        return super().complementary_labels(targets)


@pytest.mark.full  # trains
def test_nlnl_inside_training_draws_from_the_epoch_generator(synthetic_run, tmp_path):
    """Training hands each epoch's generator to the criterion: its draws are a function of (seed, epoch), so a
    resumed run draws what the uninterrupted one drew."""
    from jal.data import epoch_generator
    from jal.train import train

    cpu = torch.device("cpu")
    nlnl = losses.NLNL(10)
    targets = torch.arange(10).repeat(20)
    draws = []
    for _ in range(2):
        nlnl.set_generator(epoch_generator(123, 5, cpu))
        draws.append(nlnl.complementary_labels(targets))
    assert torch.equal(*draws)
    # a run of 2 epochs of 2 steps (256 images in batches of 128)
    SeedNotingNLNL.drawn_from = []
    cfg = synthetic_run("loss=nlnl", f"loss._target_={__name__}.SeedNotingNLNL", "trainer.epochs=2", "seed=7")
    assert train(cfg, tmp_path / "run").status == "finished"
    # then predictions.npz's one pass (256 images, one evaluation batch) draws from a generator of its own, the
    # one an epoch 2 would have (jal.mislabelled.predictions): the same file every time
    assert cfg.trainer.eval_batch_size >= 256
    assert SeedNotingNLNL.drawn_from == [epoch_generator(7, epoch, cpu).initial_seed() for epoch in (0, 0, 1, 1, 2)]


# ----------------------------------------------------------------------------- the eps-Softmax table

# Every row of the reference's get_eps_softmax, written out: (dataset, noise, rate) -> (alpha, beta, m)
EPS_ROWS = {
    ("cifar10", "symmetric", r): (0.01, 5.0, 1e5) for r in (0.2, 0.4, 0.6, 0.8)
} | {
    ("cifar10", "none", 0.0): (0.01, 5.0, 1e5),
    **{("cifar10", "asymmetric", r): (0.02, 5.0, 1e3) for r in (0.1, 0.2, 0.3, 0.4)},
    **{("cifar10", "instance", r): (0.045, 10.0, 1e5) for r in (0.2, 0.4, 0.6)},
    ("cifar100", "none", 0.0): (0.1, 1.0, 1e4),
    ("cifar100", "symmetric", 0.2): (0.05, 1.0, 1e4),
    ("cifar100", "symmetric", 0.4): (0.03, 1.0, 1e4),
    ("cifar100", "symmetric", 0.6): (0.00125, 1.0, 1e4),
    ("cifar100", "symmetric", 0.8): (0.0075, 1.0, 1e4),
    ("cifar100", "instance", 0.2): (0.05, 1.0, 1e4),
    ("cifar100", "instance", 0.4): (0.03, 1.0, 1e4),
    ("cifar100", "instance", 0.6): (0.00125, 1.0, 1e4),
    ("cifar100", "asymmetric", 0.1): (0.015, 1.0, 1e2),
    ("cifar100", "asymmetric", 0.2): (0.007, 1.0, 1e2),
    ("cifar100", "asymmetric", 0.3): (0.005, 1.0, 1e2),
    ("cifar100", "asymmetric", 0.4): (0.004, 1.0, 1e2),
}


@pytest.mark.parametrize("loss_name", ["ce_eps_mae", "fl_eps_mae"])
@pytest.mark.parametrize("row", EPS_ROWS, ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}")
def test_eps_softmax_hyperparameters_for_every_row_of_the_reference(loss_name, row):
    dataset, noise, rate = row
    overrides = [f"loss={loss_name}", f"dataset={dataset}", f"noise={noise}"]
    if noise != "none":
        overrides.append(f"noise.rate={rate}")
    if noise == "instance":
        overrides.append("noise.generate=true")
    loss = hydra.utils.instantiate(compose_cfg(*overrides).loss)
    alpha, beta, m = EPS_ROWS[row]
    assert (loss.alpha, loss.beta, loss.active.m) == (alpha, beta, m)
    assert type(loss.active) is (losses.ECE if loss_name == "ce_eps_mae" else losses.EFL)
    assert type(loss.passive) is losses.MAE and loss.passive.scale == 2.0
    if loss_name == "fl_eps_mae":
        assert loss.active.gamma == 0.1


@pytest.mark.parametrize("dataset, noise, rate", [("cifar10", "human", None), ("cifar100", "symmetric", 0.5),
                                                  ("cifar100", "asymmetric", 0.05), ("cifar100", "human", None)])
def test_eps_softmax_without_reference_values_fails_in_one_line(dataset, noise, rate, tmp_path):
    for name in (f"{dataset}.npz", f"{dataset}n_labels.npz"):  # the command line checks that its files are there
        (tmp_path / name).touch()
    args = ["loss=ce_eps_mae", f"dataset={dataset}", f"noise={noise}", f"data_dir={tmp_path}"] + (
        [f"noise.rate={rate}"] if rate else [])
    with pytest.raises(SystemExit) as err:
        preflight.check_command_line(args)
    message = str(err.value.code)
    assert message.startswith("error: the reference gives no eps-Softmax hyperparameters")
    assert f"dataset={dataset} noise={noise}" in message and "loss.active.m" in message
    assert "\n" not in message
    preflight.check_command_line(args + ["loss.alpha=0.01", "loss.beta=5", "loss.active.m=1e5"])  # set by hand: runs


# ----------------------------------------------------------------------------- the regularisation rule


def reference_rule(loss, dataset):
    """The reference's get_weight_decay_config, on our loss's terms: (l1, l2)."""
    terms = {type(m).__name__ for m in loss.modules() if isinstance(m, losses.Loss)}
    cifar100 = dataset == "cifar100"
    if "AMSE" in terms:
        return (5e-6 if cifar100 else 5e-5), 0.0
    if terms & {"NNCE", "NNFL"}:
        return (5e-7 if cifar100 else 5e-5), 0.0
    return 0.0, (1e-5 if cifar100 else 1e-4)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "synthetic"])
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_regularisation_follows_the_reference_rule_for_every_loss(loss_name, dataset):
    cfg = grid_cfg(loss_name, dataset)
    l1, l2 = reference_rule(hydra.utils.instantiate(cfg.loss), dataset)
    assert resolved(cfg, "optim.l1") == pytest.approx(l1, rel=1e-12)
    assert resolved(cfg, "optim.weight_decay") == pytest.approx(l2, rel=1e-12)


def test_a_new_loss_with_an_amse_term_gets_l1_without_a_file_of_its_own():
    cfg = compose_cfg("loss=nce_mae", "loss.passive._target_=jal.losses.AMSE")
    assert (resolved(cfg, "optim.l1"), resolved(cfg, "optim.weight_decay")) == (5e-5, 0.0)
    cfg = compose_cfg("loss=mse")  # plain MSE: L2, as the reference's MSELoss
    assert (resolved(cfg, "optim.l1"), resolved(cfg, "optim.weight_decay")) == (0.0, 1e-4)


# ----------------------------------------------------------------------------- per-dataset values


@pytest.mark.parametrize("loss_name, attrs", [("ldr_kl", {"cifar10": {"threshold": 0.1, "lam": 10.0},
                                                           "cifar100": {"threshold": 0.1, "lam": 1.0}}),
                                              ("ce_lc", {"cifar10": {"delta": 2.5}, "cifar100": {"delta": 0.5}}),
                                              ("nlnl", {"cifar10": {"min_prob": 1e-5},
                                                        "cifar100": {"min_prob": 1e-5}})])
def test_per_dataset_hyperparameters(loss_name, attrs):
    for dataset, want in attrs.items():
        loss = hydra.utils.instantiate(grid_cfg(loss_name, dataset).loss)
        assert {k: getattr(loss, k) for k in want} == want, dataset


# ----------------------------------------------------------------------------- Hydra's compose API, no import jal


@pytest.mark.full  # a python process
def test_compose_train_like_a_notebook_without_importing_jal():
    """A fresh interpreter (jal not imported) composes `train` through Hydra's compose API and resolves it:
    the schemas and resolvers reach Hydra through hydra_plugins/jal_configs."""
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from omegaconf import OmegaConf\n"
        f"with initialize_config_dir({str(REPO / 'configs')!r}, version_base='1.3'):\n"
        "    cfg = compose('train', ['loss=ce_eps_mae', 'dataset=cifar100', 'noise=symmetric', 'noise.rate=0.6',"
        " 'logger=wandb'])\n"
        "print(OmegaConf.select(cfg, 'loss.alpha'), OmegaConf.select(cfg, 'optim.weight_decay'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0.00125", "1e-05"]


@pytest.mark.full  # trains
def test_nlnl_run_killed_after_epoch_1_resumes_to_the_uninterrupted_result(synthetic_run, tmp_path, monkeypatch):
    """The complementary labels come from the epoch's generator (train.py's set_generator hook), so a run
    resumed from its checkpoint draws what the uninterrupted run drew: bitwise the same weights."""
    from test_train import assert_same_training

    from jal import train as jal_train

    cfg = synthetic_run("loss=nlnl", "noise=symmetric", "noise.rate=0.4", "trainer.epochs=2",
                        "dataset.train_size=96", "dataset.test_size=32")
    uninterrupted = jal_train.train(cfg, tmp_path / "uninterrupted")
    save = jal_run.save_checkpoint

    def save_then_die(path, obj):
        save(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(jal_run, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        jal_train.train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(jal_run, "save_checkpoint", save)
    resumed = jal_train.train(cfg, tmp_path / "resumed")
    assert_same_training(uninterrupted, tmp_path / "uninterrupted", resumed, tmp_path / "resumed")
    assert np.isfinite([h["train_loss"] for h in resumed.history]).all()


# ----------------------------------------------------------------------------- the sweeps cover every published row


def run_script(script, tmp_path, **env) -> str:
    """What a table script (with its arguments) runs, as a stand-in python echoes the commands (jal.plan,
    jal.train, jal.tables, scripts/) instead of running them: PRESET=paper and DRY_RUN=1 unless given."""
    python = tmp_path / "python"
    echoed = '"-m jal.plan"|"-m jal.train"|"-m jal.tables"|scripts/*'
    python.write_text(f'#!/bin/bash\ncase "$1 $2" in {echoed}) echo "$@";; *) exec {sys.executable} "$@";; esac\n')
    python.chmod(0o755)
    done = subprocess.run(["bash", *f"scripts/{script}".split()], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": str(python), "PRESET": "paper",
                                            "LAUNCHER": "basic", "DRY_RUN": "1", **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


def planned_cells(script, tmp_path, **env):
    """The (dataset, noise type, rate or label set, loss) cells a table script queues, read from its jal.plan
    plan call."""
    (plan,) = [line for line in run_script(script, tmp_path, **env).splitlines() if line.startswith("-m jal.plan")]
    cells, order = set(), []
    for sweep in plan.replace("\\", "").split(" experiment=")[1:]:  # one sweep's overrides, shell-quoted
        args = dict(a.split("=", 1) for a in sweep.split() if "=" in a)
        rates = args.get("noise.labels") or args.get("noise.rate", "0.0")
        for loss in args["loss"].split(","):
            for rate in rates.split(","):
                cell = (args["dataset"], args["noise"], rate if "noise.labels" in args else float(rate), loss)
                cells.add(cell)
                order.append(cell)
    return cells, order


def published_cells(sources):
    """The published cells, keyed as planned_cells keys ours (CIFAR-10N is CIFAR-10 with human noise)."""
    rows = [r for r in tables.load_published() if r["source"] in sources]
    return {(r["dataset"].removesuffix("n") if r["noise_type"] == "human" else r["dataset"],
             "none" if r["noise_rate"] == 0 else r["noise_type"],
             r["noise_rate"] if r["noise_type"] == "human" else float(r["noise_rate"]), r["loss"]) for r in rows}


@pytest.mark.parametrize("script, sources", [
    ("reproduce_idn.sh cifar10", {"jal2025_idn", "epssoftmax2024_idn"}),
    ("reproduce_idn.sh cifar100", {"jal2025_idn", "epssoftmax2024_idn"}),
    ("reproduce_cifarn.sh cifar10", {"jal2025_cifarn", "epssoftmax2024_cifarn"}),
    ("reproduce_cifarn.sh cifar100", {"jal2025_cifarn", "epssoftmax2024_cifarn"})])
@pytest.mark.full  # bash scripts/
def test_idn_and_cifar_n_sweeps_train_every_published_row(script, sources, tmp_path):
    cells, _ = planned_cells(script, tmp_path)
    dataset = script.split()[1]
    published = {c for c in published_cells(sources) if c[0] == dataset}
    # CE_eps+MAE under human noise: the reference has no hyperparameters for it (jal.resolvers.EPS_SOFTMAX)
    unconfigurable = {c for c in published if c[1] == "human" and c[3] == "ce_eps_mae"}
    assert published and published - unconfigurable <= cells, sorted(published - unconfigurable - cells)
    assert not unconfigurable & cells
    with pytest.raises(config.ConfigError, match="no eps-Softmax hyperparameters"):
        resolvers.eps_softmax_hyperparameters(dataset, "human", None)


@pytest.mark.parametrize("preset", ["paper", "quick"])
@pytest.mark.parametrize("script", ["reproduce_cifar10.sh", "reproduce_cifar100.sh", "reproduce_idn.sh cifar10",
                                    "reproduce_idn.sh cifar100", "reproduce_cifarn.sh cifar10",
                                    "reproduce_cifarn.sh cifar100", "reproduce_ablation.sh"])
@pytest.mark.full  # bash scripts/
def test_table_scripts_tabulate_the_records_their_preset_writes(script, preset, tmp_path):
    """The table is made from the directory the sweep's runs land in: the preset's out_root (configs/experiment),
    and the quick preset's tables stay under results/quick."""
    out_root = OmegaConf.load(Path(REPO) / "configs" / "experiment" / f"{preset}.yaml").out_root
    lines = run_script(script, tmp_path, PRESET=preset, DRY_RUN="0").splitlines()
    trained = [line for line in lines if line.startswith("-m jal.train")]
    tabulated = [line.split()[2:] for line in lines if line.startswith("-m jal.tables")]
    assert trained and tabulated
    for args in tabulated:
        records, out = args[: args.index("--out")], args[args.index("--out") + 1]
        # where the runs land: the out_root a sweep gives (the ablation's), else the preset's
        roots = {a.split("=", 1)[1] for line in trained for a in line.split() if a.startswith("out_root=")}
        roots = roots or {out_root}
        # each records directory lies in (or, read recursively, holds) a directory the runs land in
        assert records and all(any(Path(r).is_relative_to(root) or Path(root).is_relative_to(r) for root in roots)
                               for r in records), (records, roots)
        assert out.startswith("results/quick") == (preset == "quick"), out


@pytest.mark.full  # bash scripts/
def test_a_preset_without_an_experiment_config_stops_in_one_line():
    done = subprocess.run(["bash", "scripts/reproduce_cifar10.sh"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable, "PRESET": "fast", "DRY_RUN": "1"})
    assert (done.returncode, done.stderr) == (2, "error: PRESET=fast: choose paper or quick\n")


@pytest.mark.parametrize("script, dataset", [("reproduce_cifar10.sh", "cifar10"),
                                             ("reproduce_cifar100.sh", "cifar100")])
@pytest.mark.full  # bash scripts/
def test_table_sweeps_train_every_published_row_the_papers_comparison_first(script, dataset, tmp_path):
    cells, order = planned_cells(script, tmp_path)
    published = {c for c in published_cells({"jal2025_main", "epssoftmax2024_main"}) if c[0] == dataset}
    assert published and published <= cells, sorted(published - cells)
    assert len({c[3] for c in cells}) == 19 and len(cells) == 19 * 9
    jal_cells = {c for c in published_cells({"jal2025_main"}) if c[0] == dataset}
    first = order[: len({(c[1], c[2]) for c in jal_cells}) * 6]  # the JAL paper's losses at its columns
    assert jal_cells <= set(first) and {c[3] for c in first} == set("ce nce_rce anl_ce anl_fl jal_ce jal_fl".split())


@pytest.mark.full  # bash scripts/
def test_ablation_sweep_trains_every_ablation_cell_and_sweeps_a(tmp_path):
    cells, _ = planned_cells("reproduce_ablation.sh", tmp_path)
    assert published_cells({"jal2025_ablation"}) <= cells
    for loss in ("nce", "amse", "agce_mae", "nce_mae", "jal_ce"):
        settings = {(noise, rate) for _, noise, rate, name in cells if name == loss}
        assert settings >= {("symmetric", 0.4), ("symmetric", 0.8), ("asymmetric", 0.2), ("asymmetric", 0.4)}


@pytest.mark.full  # scripts/plot_a_sweep.py
def test_a_sweep_table_and_figure_mark_the_asymmetry_bound(tmp_path):
    """Runs with loss.passive.a on the command line are one table row per a; the plot marks jal.theory's bound."""
    import json

    for a, accuracies in {5: [50.0, 52.0], 9: [60.0, 61.0], 30: [64.0, 66.0]}.items():
        for seed, accuracy in zip((123, 124), accuracies):
            run = tmp_path / "runs" / f"a{a}" / str(seed)
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({
                "status": "finished", "dataset": "cifar10", "loss": "jal_ce", "noise_type": "symmetric",
                "noise_rate": 0.8, "seed": seed, "last_test_acc": accuracy, "epochs": 120, "subset": None,
                "settings": f"loss.passive.a={a}"}))
    tables.main([str(tmp_path / "runs"), "--out", str(tmp_path), "--expect-seeds", "2"])
    rows = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| JAL-CE")]
    by_a = {r.split(" |")[0]: r for r in rows}
    assert set(by_a) == {f"| JAL-CE [loss.passive.a={a}]" for a in (5, 9, 30)}
    assert "**65.00 ± 1.41**" in by_a["| JAL-CE [loss.passive.a=30]"]
    done = subprocess.run([sys.executable, "scripts/plot_a_sweep.py", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a_sweep.png").stat().st_size > 0
    assert "| symmetric 0.8 | 9 | 5, 9, 30 |" in (tmp_path / "bound.md").read_text()
