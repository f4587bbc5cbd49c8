"""Tests for jal.losses against docs/protocol.md section 2.

Three independent checks per loss:
- values against the formula written out here in plain numpy (float64) on small hand-made inputs;
- values and logits.grad against reference-style formulations written here with plain torch ops, which
  spell out the reference implementation's gradient choices (detached focal factors, NCE's live
  normaliser, the min_prob / p / one-hot clamps);
- properties: symmetric losses sum to a constant over the K labels, AMSE's definition, combinations,
  finiteness at logits +-100 and float32 computation under bf16 autocast for every config in configs/loss.
"""

import math

import hydra
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_configs import LOSS_NAMES, grid_cfg  # tests/ is on sys.path: one shared compose cache

from jal import losses
from jal.losses import (
    AEL,
    AGCE,
    AMSE,
    AUL,
    CE,
    FL,
    GCE,
    JALCE,
    JALFL,
    MAE,
    NCE,
    NFL,
    NLNL,
    NNCE,
    NNFL,
    RCE,
    ActivePassive,
    Loss,
)

M = 1e-8  # NNCE / NNFL min_prob
GAMMA = 0.5


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


# ----------------------------------------------------------------------------- numpy formulas (section 2)

# Three samples, K = 3: label = argmax, uniform logits, label not the argmax.
Z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
Y = np.array([2, 0, 1])


def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_formulas(z, y):
    """Per-sample value of every single loss, written from docs/protocol.md section 2 (not from the code)."""
    n, k = z.shape
    p = np_softmax(z)
    rows = np.arange(n)
    py = p[rows, y]
    onehot = np.eye(k)[y]
    log_p = np.log(p)
    focal = -((1 - p) ** GAMMA) * log_p  # -(1-p_k)^g log p_k
    a_nn = -math.log(M)
    v = a_nn + np.log(np.clip(p, M, 1))
    f_nn = -((1 - np.clip(p, M, 1)) ** GAMMA) * np.log(np.clip(p, M, 1))
    a_nnfl = -((1 - M) ** GAMMA) * math.log(M)
    return {
        "CE": -np.log(py),
        "FL": -((1 - py) ** GAMMA) * np.log(py),
        "MAE": 2 * (1 - py),
        "MSE": ((p - onehot) ** 2).sum(axis=1) / k,
        "GCE": (1 - py**0.7) / 0.7,
        "RCE": -(np.clip(p, 1e-8, 1) * np.log(np.clip(onehot, 1e-4, 1))).sum(axis=1),
        "NCE": -np.log(py) / -log_p.sum(axis=1),
        "NFL": focal[rows, y] / focal.sum(axis=1),
        "AUL": ((5.5 - py) ** 3.0 - (5.5 - 1) ** 3.0) / 3.0,
        "AGCE": ((0.6 + 1) ** 0.6 - (0.6 + py) ** 0.6) / 0.6,
        "AEL": np.exp(-py / 2.5),
        "NNCE": 1 - v[rows, y] / v.sum(axis=1),
        "NNFL": 1 - (a_nnfl - f_nn[rows, y]) / (k * a_nnfl - f_nn.sum(axis=1)),
        "AMSE30": ((30.0 * onehot - p) ** 2).sum(axis=1) / k,
    }


def build(name, k):
    """The single losses with the hyperparameters of docs/protocol.md section 2 (standalone values)."""
    return {
        "CE": lambda: CE(k),
        "FL": lambda: FL(k, gamma=GAMMA),
        "MAE": lambda: MAE(k, scale=2.0),
        "MSE": lambda: AMSE(k, a=1.0),
        "GCE": lambda: GCE(k, q=0.7),
        "RCE": lambda: RCE(k),
        "NCE": lambda: NCE(k),
        "NFL": lambda: NFL(k, gamma=GAMMA),
        "AUL": lambda: AUL(k, a=5.5, q=3.0),
        "AGCE": lambda: AGCE(k, a=0.6, q=0.6),
        "AEL": lambda: AEL(k, a=2.5),
        "NNCE": lambda: NNCE(k, min_prob=M),
        "NNFL": lambda: NNFL(k, gamma=GAMMA, min_prob=M),
        "AMSE30": lambda: AMSE(k, a=30.0),
    }[name]()


SINGLE_NAMES = ["CE", "FL", "MAE", "MSE", "GCE", "RCE", "NCE", "NFL", "AUL", "AGCE", "AEL", "NNCE", "NNFL", "AMSE30"]


@pytest.mark.parametrize("name", SINGLE_NAMES)
def test_single_loss_matches_formula_by_hand(name):
    expected = np_formulas(Z, Y)[name]
    loss = build(name, 3)
    z, y = torch.tensor(Z, dtype=torch.float32), torch.tensor(Y)
    per_sample = loss.per_sample(z, y)
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss(z, y), torch.tensor(expected.mean(), dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_hand_values_on_uniform_logits():
    """Closed forms at p = (1/3, 1/3, 1/3), label 0: literal numbers, independent of any code path."""
    z, y = torch.zeros(1, 3), torch.tensor([0])
    log3, a_rce = math.log(3.0), -math.log(1e-4)
    expected = {
        "CE": log3,
        "FL": (2 / 3) ** 0.5 * log3,
        "MAE": 4 / 3,
        "MSE": ((2 / 3) ** 2 + 2 / 9) / 3,  # = 2/9
        "GCE": (1 - (1 / 3) ** 0.7) / 0.7,
        "RCE": a_rce * 2 / 3,
        "NCE": 1 / 3,
        "NFL": 1 / 3,
        "AUL": ((5.5 - 1 / 3) ** 3 - 4.5**3) / 3,
        "AGCE": (1.6**0.6 - (0.6 + 1 / 3) ** 0.6) / 0.6,
        "AEL": math.exp(-1 / 7.5),
        "NNCE": 2 / 3,
        "NNFL": 2 / 3,
        "AMSE30": ((30 - 1 / 3) ** 2 + 2 / 9) / 3,
    }
    assert expected["MSE"] == pytest.approx(2 / 9)
    for name, value in expected.items():
        torch.testing.assert_close(
            build(name, 3)(z, y),
            torch.tensor(value, dtype=torch.float32),
            rtol=1e-5,
            atol=1e-6,
            msg=lambda m, name=name: f"{name}: {m}",
        )


# ----------------------------------------------------------------------------- reference-style torch formulations


def one_hot(y, k, dtype):
    return torch.zeros(len(y), k, dtype=dtype).scatter_(1, y.unsqueeze(1), 1.0)


def ref_log_p(z):
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def ref_per_sample(name, z, y):
    """Reference-implementation-style per-sample losses with plain torch ops (float64, independent code)."""
    k = z.shape[1]
    oh = one_hot(y, k, z.dtype)
    log_p = ref_log_p(z)
    p = log_p.exp()
    log_m = math.log(M)
    if name == "CE":
        return -(oh * log_p).sum(1)
    if name == "FL":  # focal factor from detached p; log p live
        return -(oh * (1 - p.detach()) ** GAMMA * log_p).sum(1)
    if name == "NFL":  # detached focal factors in numerator and normaliser
        f = -((1 - p.detach()) ** GAMMA) * log_p
        return (oh * f).sum(1) / f.sum(1)
    if name == "NCE":  # normaliser live
        return (oh * log_p).sum(1) / log_p.sum(1)
    if name == "NNCE":  # log p clamped at log m (zero gradient below), A = -log m
        lp = torch.where(log_p > log_m, log_p, torch.full_like(log_p, log_m))
        v = lp - log_m
        return 1 - (oh * v).sum(1) / v.sum(1)
    if name == "NNFL":  # focal terms on the clamped log p, factor detached, A = -(1-m)^g log m
        lp = torch.where(log_p > log_m, log_p, torch.full_like(log_p, log_m))
        f = -((1 - lp.detach().exp()) ** GAMMA) * lp
        big_a = -((1 - M) ** GAMMA) * log_m
        return 1 - (big_a - (oh * f).sum(1)) / (k * big_a - f.sum(1))
    if name == "RCE":  # p clamped to [1e-8, 1], one-hot clamped to [1e-4, 1]
        return -(torch.clamp(p, 1e-8, 1.0) * torch.log(torch.clamp(oh, 1e-4, 1.0))).sum(1)
    if name == "GCE":  # p_y clamped at 1e-7
        p_y = torch.clamp((oh * p).sum(1), min=1e-7)
        return (1 - p_y**0.7) / 0.7
    if name == "MAE":
        return 2 * (1 - (oh * p).sum(1))
    if name == "MSE":
        return ((p - oh) ** 2).mean(1)
    if name == "AMSE30":
        return ((30 * oh - p) ** 2).mean(1)
    if name == "AUL":
        p_y = (oh * p).sum(1)
        return ((5.5 - p_y) ** 3 - 4.5**3) / 3
    if name == "AGCE":
        p_y = (oh * p).sum(1)
        return (1.6**0.6 - (0.6 + p_y) ** 0.6) / 0.6
    if name == "AEL":
        return torch.exp(-(oh * p).sum(1) / 2.5)
    raise KeyError(name)


def random_batch(k, scale, seed, n=32):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, k, (n,), generator=g)
    return z, y


def loss_and_grad(fn, z, y):
    z = z.clone().requires_grad_(True)
    value = fn(z, y)
    value.backward()
    return value.detach().double(), z.grad


@pytest.mark.parametrize("k", [10, 100])
@pytest.mark.parametrize("scale", [2.0, 8.0])  # 8: many p below 1e-8, so the clamps are exercised
@pytest.mark.parametrize("name", SINGLE_NAMES)
def test_value_and_gradient_match_reference_formulation(name, k, scale):
    z, y = random_batch(k, scale, seed=1000 * k + int(scale))
    impl_value, impl_grad = loss_and_grad(build(name, k), z, y)
    ref_value, ref_grad = loss_and_grad(lambda zz, yy: ref_per_sample(name, zz, yy).mean(), z, y)
    torch.testing.assert_close(impl_value, ref_value, rtol=2e-5, atol=1e-6)
    assert impl_grad.abs().max() > 0
    torch.testing.assert_close(impl_grad, ref_grad, rtol=1e-3, atol=2e-7)


def test_large_scale_batches_hit_the_clamps():
    """The gradient test above at scale 8 is only meaningful if some p fall below m = 1e-8 / 1e-7."""
    for k in (10, 100):
        z, _ = random_batch(k, 8.0, seed=1000 * k + 8)
        assert (torch.softmax(z, 1) < M).any()


def test_fl_gradient_closed_form():
    """With the focal factor w = (1 - p_y)^g a constant, d FL / dz = w (p - e_y) per sample."""
    z, y = random_batch(10, 3.0, seed=7)
    _, grad = loss_and_grad(FL(10, gamma=GAMMA), z, y)
    p = torch.softmax(z, 1)
    w = (1 - p.gather(1, y[:, None])) ** GAMMA
    expected = w * (p - one_hot(y, 10, z.dtype)) / len(y)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)


def nondetached(name, z, y):
    """The formulations the reference does NOT use: live focal factors, a detached NCE normaliser."""
    k = z.shape[1]
    oh = one_hot(y, k, z.dtype)
    log_p = ref_log_p(z)
    p = log_p.exp()
    if name == "FL":
        return -(oh * (1 - p) ** GAMMA * log_p).sum(1).mean()
    if name == "NFL":
        f = -((1 - p) ** GAMMA) * log_p
        return ((oh * f).sum(1) / f.sum(1)).mean()
    if name == "NCE":
        return ((oh * log_p).sum(1) / log_p.sum(1).detach()).mean()
    raise KeyError(name)


@pytest.mark.parametrize("name", ["FL", "NFL", "NCE"])
def test_detachment_choice_changes_the_gradient(name):
    """Same values, different gradients: so the gradient test above can tell the two apart."""
    z, y = random_batch(10, 2.0, seed=3)
    impl_value, impl_grad = loss_and_grad(build(name, 10), z, y)
    other_value, other_grad = loss_and_grad(lambda zz, yy: nondetached(name, zz, yy), z, y)
    torch.testing.assert_close(impl_value, other_value, rtol=2e-5, atol=1e-6)
    diff = (impl_grad - other_grad).abs().max()
    assert diff > 1e-2 * impl_grad.abs().max(), f"{name}: detachment makes no visible difference ({diff})"


# ----------------------------------------------------------------------------- symmetric losses


@st.composite
def logit_rows(draw):
    k = draw(st.integers(2, 20))
    values = draw(st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=k, max_size=k))
    return torch.tensor(values, dtype=torch.float32)


def sum_over_labels(loss, row):
    """sum_y loss(z, y) for one logit row z."""
    k = row.numel()
    return loss.per_sample(row.repeat(k, 1), torch.arange(k)).double().sum().item()


@settings(max_examples=25, deadline=None)
@given(row=logit_rows())
def test_symmetric_losses_sum_to_a_constant(row):
    k = row.numel()
    assert sum_over_labels(MAE(k, scale=2.0), row) == pytest.approx(2 * (k - 1), abs=1e-4)
    assert sum_over_labels(NCE(k), row) == pytest.approx(1.0, abs=1e-5)
    assert sum_over_labels(NFL(k, gamma=GAMMA), row) == pytest.approx(1.0, abs=1e-5)
    # RCE: sum_y -log(1e-4) sum_{k != y} clamp(p_k) = -log(1e-4) (K - 1) sum_k clamp(p_k, 1e-8, 1)
    p = np_softmax(row.double().numpy()[None])[0]
    rce_sum = -math.log(1e-4) * (k - 1) * np.clip(p, 1e-8, 1).sum()
    assert sum_over_labels(RCE(k), row) == pytest.approx(rce_sum, rel=1e-5)
    assert sum_over_labels(RCE(k), row) == pytest.approx(-math.log(1e-4) * (k - 1), rel=1e-5)
    # ANL's normalised negative losses: sum_y (1 - v_y / sum v) = K - 1
    assert sum_over_labels(NNCE(k), row) == pytest.approx(k - 1, abs=1e-4)
    assert sum_over_labels(NNFL(k, gamma=GAMMA), row) == pytest.approx(k - 1, abs=1e-4)


def test_symmetric_sum_is_not_constant_for_ce():
    """Control for the property above: CE is not symmetric, its label sum moves with the logits."""
    a = sum_over_labels(CE(5), torch.tensor([0.0, 0, 0, 0, 0]))
    b = sum_over_labels(CE(5), torch.tensor([5.0, 0, 0, 0, 0]))
    assert abs(a - b) > 1.0


# ----------------------------------------------------------------------------- AMSE


@pytest.mark.parametrize("a", [1.0, 1.5, 20.0, 30.0])
@pytest.mark.parametrize("k", [3, 10, 100])
def test_amse_is_scaled_squared_distance_to_a_e_y(a, k):
    z, y = random_batch(k, 3.0, seed=k)
    p = np_softmax(z.numpy())
    target = a * np.eye(k)[y.numpy()]
    expected = (np.linalg.norm(target - p, axis=1) ** 2) / k
    torch.testing.assert_close(AMSE(k, a=a).per_sample(z, y).double(), torch.tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a", [0.0, 0.5, 0.999, -2.0])
def test_amse_rejects_a_below_one(a):
    with pytest.raises(ValueError):
        AMSE(10, a=a)


def test_amse_with_a_one_is_mse():
    z, y = random_batch(10, 3.0, seed=11)
    p = np_softmax(z.numpy())
    mse = ((p - np.eye(10)[y.numpy()]) ** 2).mean(axis=1)
    torch.testing.assert_close(AMSE(10, a=1.0).per_sample(z, y).double(), torch.tensor(mse), rtol=1e-5, atol=1e-7)
    # and it differs from AMSE(a > 1)
    assert not torch.allclose(AMSE(10, a=1.0)(z, y), AMSE(10, a=2.0)(z, y))


# ----------------------------------------------------------------------------- combinations


@pytest.mark.parametrize(
    "active, passive, alpha, beta",
    [
        (NCE(10), AMSE(10, a=30.0), 1.0, 1.0),  # JAL-CE CIFAR-10
        (NFL(10, gamma=GAMMA), AMSE(10, a=30.0), 1.0, 1.0),  # JAL-FL CIFAR-10
        (NCE(10), AMSE(10, a=20.0), 5.0, 1.0),  # JAL-CE CIFAR-100 weights
        (CE(10), RCE(10), 0.1, 1.0),  # SCE
        (NCE(10), NNCE(10), 5.0, 5.0),  # ANL-CE
        (NFL(10, gamma=GAMMA), NNFL(10, gamma=GAMMA), 10.0, 1.0),  # ANL-FL
        (NCE(10), AGCE(10, a=6.0, q=1.5), 1.0, 4.0),
        (NCE(10), AUL(10, a=6.3, q=1.5), 1.0, 4.0),
        (NCE(10), AEL(10, a=5.0), 1.0, 4.0),
    ],
)
def test_active_passive_is_weighted_sum(active, passive, alpha, beta):
    z, y = random_batch(10, 3.0, seed=5)
    combo = ActivePassive(active, passive, alpha=alpha, beta=beta)
    assert combo.num_classes == 10
    expected = alpha * active.per_sample(z, y) + beta * passive.per_sample(z, y)
    torch.testing.assert_close(combo.per_sample(z, y), expected)
    torch.testing.assert_close(combo(z, y), alpha * active(z, y) + beta * passive(z, y))
    # gradients add up the same way
    _, g_combo = loss_and_grad(combo, z, y)
    _, g_a = loss_and_grad(active, z, y)
    _, g_p = loss_and_grad(passive, z, y)
    torch.testing.assert_close(g_combo, alpha * g_a + beta * g_p)


def test_combinations_by_hand_on_uniform_logits():
    """alpha * active + beta * passive at p = (1/3, 1/3, 1/3), label 0: literal numbers from the single losses'
    closed forms above, not from the component objects."""
    z, y = torch.zeros(1, 3), torch.tensor([0])
    log3, a_rce = math.log(3.0), -math.log(1e-4)
    cases = [
        (ActivePassive(NCE(3), AMSE(3, a=30.0), alpha=1.0, beta=1.0), 1 / 3 + ((30 - 1 / 3) ** 2 + 2 / 9) / 3),
        (ActivePassive(CE(3), RCE(3), alpha=0.1, beta=1.0), 0.1 * log3 + a_rce * 2 / 3),  # SCE, CIFAR-10
        (ActivePassive(NCE(3), NNCE(3), alpha=5.0, beta=5.0), 5 / 3 + 5 * 2 / 3),  # ANL-CE, CIFAR-10
        (ActivePassive(NCE(3), AEL(3, a=5.0), alpha=1.0, beta=4.0), 1 / 3 + 4 * math.exp(-1 / 15)),
    ]
    for loss, value in cases:
        torch.testing.assert_close(loss(z, y), torch.tensor(value, dtype=torch.float32), rtol=1e-5, atol=1e-6)


def test_jal_ce_and_nce_mae_by_hand():
    """JAL-CE = alpha NCE + beta (1/K)||a e_y - p||^2 and NCE+MAE's passive term is beta (1 - p_y)."""
    f = np_formulas(Z, Y)
    p_y = np_softmax(Z)[np.arange(3), Y]
    amse20 = ((20.0 * np.eye(3)[Y] - np_softmax(Z)) ** 2).mean(axis=1)
    z, y = torch.tensor(Z, dtype=torch.float32), torch.tensor(Y)
    jal = ActivePassive(NCE(3), AMSE(3, a=20.0), alpha=5.0, beta=1.0)
    torch.testing.assert_close(jal.per_sample(z, y).double(), torch.tensor(5 * f["NCE"] + amse20), rtol=1e-5, atol=1e-6)
    nce_mae = ActivePassive(NCE(3), MAE(3, scale=1.0), alpha=10.0, beta=0.1)
    torch.testing.assert_close(
        nce_mae.per_sample(z, y).double(), torch.tensor(10 * f["NCE"] + 0.1 * (1 - p_y)), rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------------------- every config in configs/loss


def instantiate(loss_name, dataset):
    """The loss of configs/loss/<loss_name>.yaml composed with dataset=<dataset> (specialisation applied).

    The compose cache is test_configs' (one compose per cell when both files run in one pytest process)."""
    cfg = grid_cfg(loss_name, dataset)
    loss = hydra.utils.instantiate(cfg.loss)
    assert isinstance(loss, Loss) and loss.num_classes == cfg.dataset.num_classes
    return loss.num_classes, loss


def same_draws(loss):
    """Losses that draw random numbers (NLNL) draw the same ones again: a fresh seeded generator each call."""
    loss.set_generator(torch.Generator().manual_seed(0))
    return loss


def extreme_batch(k):
    """Logits at +-100 in float32: random signs, label at +100 (p_y = 1), label at -100 (p_y ~ 0)."""
    g = torch.Generator().manual_seed(k)
    z = torch.where(torch.rand(12, k, generator=g) < 0.5, -100.0, 100.0)
    y = torch.randint(0, k, (12,), generator=g)
    z[0], z[1] = -100.0, -100.0
    z[0, y[0]] = 100.0  # confident and right
    z[1, (y[1] + 1) % k] = 100.0  # confident and wrong
    z[2] = 0.0  # uniform
    z[3] = 100.0  # all equal at +100
    return z, y


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_config_loss_is_finite_at_extreme_logits_and_bf16(loss_name, dataset):
    k, loss = instantiate(loss_name, dataset)
    z, y = extreme_batch(k)

    # float32, logits +-100: finite value and gradient; forward is the batch mean of per_sample
    z32 = z.clone().requires_grad_(True)
    value = same_draws(loss)(z32, y)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value), f"{loss_name}: {value}"
    assert torch.isfinite(z32.grad).all(), f"{loss_name}: non-finite gradient"
    per_sample = same_draws(loss).per_sample(z, y)
    assert per_sample.shape == (len(y),) and torch.isfinite(per_sample).all()
    torch.testing.assert_close(value.detach(), per_sample.mean())

    # bf16 logits under CPU autocast: the loss is computed in float32 (bit-equal to the upcast input's loss)
    zb = z.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        value_bf16 = same_draws(loss)(zb, y)
    assert value_bf16.dtype == torch.float32 and torch.isfinite(value_bf16)
    torch.testing.assert_close(value_bf16.detach(), same_draws(loss)(z.to(torch.bfloat16).float(), y), rtol=0, atol=0)
    value_bf16.backward()
    assert zb.grad.dtype == torch.bfloat16 and torch.isfinite(zb.grad).all()


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_bf16_autocast_keeps_float32_precision(dataset):
    """Moderate logits under autocast: the value equals the float32 one, not a bf16 approximation of it."""
    _, loss = instantiate("jal_ce", dataset)
    k = loss.num_classes
    z, y = random_batch(k, 3.0, seed=21)
    zb = z.to(torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        inside = loss(zb, y)
    outside = loss(zb.float(), y)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_forward_is_batch_mean_of_per_sample(loss_name):
    k, loss = instantiate(loss_name, "cifar10")
    z, y = random_batch(k, 3.0, seed=31, n=17)
    z = z.float()
    per_sample = same_draws(loss).per_sample(z, y)
    assert per_sample.shape == (17,)
    torch.testing.assert_close(same_draws(loss)(z, y), per_sample.mean())
    # and the mean really is over samples: a batch of one sample gives that sample's value
    if not isinstance(loss, NLNL):  # NLNL draws per sample: a batch of one draws the first sample's number
        torch.testing.assert_close(loss(z[4:5], y[4:5]), per_sample[4])


# ----------------------------------------------------------------------------- what every loss takes and refuses


def every_loss() -> dict:
    """Every loss config (CIFAR-10: K = 10) and the library's JALCE and JALFL (docs/losses.md), by name."""
    built = {name: instantiate(name, "cifar10")[1] for name in LOSS_NAMES}
    return built | {"JALCE.paper": JALCE.paper("cifar10"), "JALFL.paper": JALFL.paper("cifar10")}


def test_every_loss_class_of_the_module_is_among_those_checked_below():
    exercised = {type(m) for loss in every_loss().values() for m in loss.modules()}
    classes = {c for c in vars(losses).values() if isinstance(c, type) and issubclass(c, Loss) and c is not Loss}
    assert sorted(c.__name__ for c in classes - exercised) == []


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
def test_targets_of_any_integer_dtype_give_the_int64_values(dtype):
    z, y = random_batch(10, 3.0, seed=41, n=16)
    z = z.float()
    for name, loss in every_loss().items():
        expected, expected_per_sample = same_draws(loss)(z, y), same_draws(loss).per_sample(z, y)
        assert torch.equal(same_draws(loss)(z, y.to(dtype)), expected), name
        assert torch.equal(same_draws(loss).per_sample(z, y.to(dtype)), expected_per_sample), name


@pytest.mark.parametrize("columns", [4, 11])
def test_logits_of_another_class_count_are_refused_in_one_line_naming_both(columns):
    """NCE(4) on 10-column logits once computed a number; every loss now refuses, in forward and per_sample."""
    z, y = torch.zeros(3, columns), torch.tensor([0, 1, 2])
    for name, loss in every_loss().items():
        for call in (loss, loss.per_sample):
            with pytest.raises(ValueError) as refused:
                call(z, y)
            assert str(refused.value) == (
                f"{type(loss).__name__} was built for num_classes=10 but the logits have {columns} columns: build it "
                f"with the model's number of classes, or give it logits (N, 10)"), name
    with pytest.raises(ValueError, match=r"^NCE was built for num_classes=4 but the logits have 10 columns: "):
        NCE(4)(torch.zeros(2, 10), torch.tensor([0, 1]))


def test_targets_that_are_not_class_indices_are_refused_in_one_line():
    z = torch.zeros(3, 10)
    for name, loss in every_loss().items():
        kind = type(loss).__name__
        for targets, message in [
            (torch.tensor([0.0, 1.0, 2.0]), f"{kind} takes targets as class indices of an integer dtype, not "
                                            f"torch.float32"),
            (torch.tensor([True, False, True]), f"{kind} takes targets as class indices of an integer dtype, not "
                                                f"torch.bool"),
            (torch.tensor([0, 1]), f"{kind} takes targets (3,) for logits (3, 10), not (2,)"),
            (torch.tensor([[0], [1], [2]]), f"{kind} takes targets (3,) for logits (3, 10), not (3, 1)"),
        ]:
            with pytest.raises(ValueError) as refused:
                loss(z, targets)
            assert str(refused.value) == message, name
        with pytest.raises(ValueError, match=rf"^{kind} was built for num_classes=10 but the logits have shape "
                                             r"\(3, 10, 1\): "):
            loss(z[..., None], torch.tensor([0, 1, 2]))


def test_the_checks_read_nothing_back_from_the_device():
    """The checks compare shapes and dtypes only: a step's loss and backward read no tensor back (jal.gpu_check's
    HostReads, the CPU stand-in for CUDA's sync debug mode), so they add no host-device sync to the step."""
    from jal.gpu_check import HostReads

    z, y = random_batch(10, 3.0, seed=43, n=16)
    for name, loss in every_loss().items():
        logits = z.float().requires_grad_(True)
        with HostReads() as reads:
            same_draws(loss)(logits, y.int()).backward()
        assert reads.calls == [], name
    with HostReads() as reads:  # the control: a read is seen
        NCE(10)(z, y).item()
    assert reads.calls == ["item"]


def test_amse_has_no_default_a():
    with pytest.raises(TypeError, match="required positional argument: 'a'"):
        AMSE(10)
    for a in (math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^AMSE needs a finite a >= 1, got a="):
            AMSE(10, a=a)


def test_jal_ce_and_jal_fl_classes_by_hand():
    """At p = (1/3, 1/3, 1/3), label 0: NCE = NFL = 1/3, AMSE(a) = ((a - 1/3)^2 + 2/9) / 3."""
    z, y = torch.zeros(1, 3), torch.tensor([0])
    amse20 = ((20 - 1 / 3) ** 2 + 2 / 9) / 3
    torch.testing.assert_close(JALCE(3, alpha=5.0, beta=0.5, a=20.0)(z, y), torch.tensor(5 / 3 + 0.5 * amse20))
    torch.testing.assert_close(JALFL(3, alpha=5.0, beta=0.5, a=20.0)(z, y), torch.tensor(5 / 3 + 0.5 * amse20))
    assert JALFL(3, 1.0, 1.0, 30.0).active.gamma == 0.5 and JALFL(3, 1.0, 1.0, 30.0, gamma=1.0).active.gamma == 1.0
    with pytest.raises(TypeError):
        JALCE(3, alpha=1.0, beta=1.0)  # no a: nothing is filled in


def test_active_passive_refuses_terms_of_different_class_counts():
    with pytest.raises(ValueError, match=r"^ActivePassive's terms differ in num_classes: NCE 10, AMSE 4$"):
        ActivePassive(NCE(10), AMSE(4, a=30.0))
