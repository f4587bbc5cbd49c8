"""Tests for jal.theory: the closed-form AMSE asymmetry bound (Theorem 4.1) against numerics."""

import math

import numpy as np
import pytest

from jal.theory import (
    amse_min_a,
    amse_min_a_from_weights,
    amse_risk,
    check_amse_a,
    is_asymmetric,
    minimise_amse_risk,
    noise_weights,
    project_to_simplex,
)

TOL = 1e-4  # "the numerical minimiser is e_m"
MARGIN = 0.01  # skip a within 1% of the bound, where the minimiser sits O(margin) from e_m


# ----------------------------------------------------------------------------- worked examples


def test_worked_examples():
    # CIFAR-10 symmetric 0.8: w_m = 0.2, w_n = 0.8 / 9  ->  a >= 9.
    assert amse_min_a("symmetric", 0.8, 10) == pytest.approx(9.0, rel=1e-12)
    # Asymmetric 0.4: w_m = 0.6, w_n = 0.4  ->  a >= 5.
    assert amse_min_a("asymmetric", 0.4, 10) == pytest.approx(5.0, rel=1e-12)
    # No noise: any a >= 1.
    assert amse_min_a("none", 0.0, 10) == 1.0
    assert amse_min_a("symmetric", 0.0, 10) == pytest.approx(1.0)
    assert amse_min_a("asymmetric", 0.0, 100) == pytest.approx(1.0)


def test_no_finite_bound_when_clean_weight_not_largest():
    assert amse_min_a("asymmetric", 0.5, 10) == math.inf  # w_m == w_n
    assert amse_min_a("asymmetric", 0.6, 10) == math.inf  # w_m < w_n
    assert amse_min_a("symmetric", 0.8, 5) == math.inf  # 0.2 vs 0.8/4: a tie up to rounding
    assert amse_min_a("symmetric", 0.8, 3) == math.inf
    assert amse_min_a_from_weights([0.3, 0.5, 0.2], clean_class=0) == math.inf
    assert amse_min_a_from_weights([0.4, 0.4, 0.2]) == math.inf  # no unique largest weight


def test_bound_equals_paper_form_and_simple_form():
    """(r + s) / (r - 1) as printed, = 1 / (w_m - w_n) for normalised w, and scale-invariant."""
    rng = np.random.default_rng(1)
    for k in (3, 5, 10):
        for w in rng.dirichlet(np.ones(k), size=20):
            m = int(np.argmax(w))
            w_m, w_n = w[m], np.delete(w, m).max()
            r, s = w_m / w_n, np.delete(w, m).sum() / w_n
            bound = amse_min_a_from_weights(w)
            assert bound == pytest.approx((r + s) / (r - 1), rel=1e-9)
            assert bound == pytest.approx(1.0 / (w_m - w_n), rel=1e-9)
            assert amse_min_a_from_weights(7.5 * w) == pytest.approx(bound, rel=1e-12)


def test_noise_weights():
    np.testing.assert_allclose(noise_weights("symmetric", 0.5, 5), [0.5, 0.125, 0.125, 0.125, 0.125])
    np.testing.assert_allclose(noise_weights("asymmetric", 0.3, 4), [0.7, 0.3, 0.0, 0.0])
    np.testing.assert_allclose(noise_weights("none", 0.0, 3), [1.0, 0.0, 0.0])
    for kind in ("symmetric", "asymmetric", "none"):
        assert noise_weights(kind, 0.4, 7).sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- solver sanity


def test_project_to_simplex():
    rng = np.random.default_rng(2)
    v = rng.normal(scale=3.0, size=(50, 6))
    u = project_to_simplex(v)
    assert np.all(u >= 0)
    np.testing.assert_allclose(u.sum(axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(project_to_simplex(u), u, atol=1e-12)  # idempotent
    np.testing.assert_allclose(project_to_simplex([2.0, 0.0, 0.0]), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(project_to_simplex([0.5, 0.5, -1.0]), [0.5, 0.5, 0.0])
    # Optimality: no random simplex point is closer to v than its projection.
    pts = rng.dirichlet(np.ones(6), size=200)
    for vi, ui in zip(v[:5], u[:5]):
        assert np.linalg.norm(vi - ui) <= np.linalg.norm(vi - pts, axis=-1).min() + 1e-12


def test_amse_risk_matches_definition():
    u = np.array([0.5, 0.3, 0.2])
    w = np.array([0.6, 0.3, 0.1])
    a = 2.0
    by_hand = sum(w[i] * np.sum((a * np.eye(3)[i] - u) ** 2) / 3 for i in range(3))
    assert amse_risk(u, w, a) == pytest.approx(by_hand)
    batch = amse_risk(np.stack([u, u[::-1]]), w, a)
    assert batch.shape == (2,) and batch[0] == pytest.approx(by_hand)


def test_minimiser_beats_random_points():
    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.ones(5))
    for a in (1.0, 3.0, 20.0):
        u_star = minimise_amse_risk(w, a)
        pts = rng.dirichlet(np.ones(5), size=500)
        assert amse_risk(u_star, w, a) <= amse_risk(pts, w, a).min() + 1e-12


# ----------------------------------------------------------------------------- closed form vs numerics


def _a_grid(bound):
    """a values clearly below and above the bound (a >= 1), skipping those within 1% of it."""
    if math.isinf(bound):
        return [1.0, 3.0, 10.0, 100.0]
    # 0.97 / 1.03 make the test sensitive to a bound that is off by more than ~3%.
    grid = [1.0, 0.5 * bound, 0.8 * bound, 0.97 * bound, 1.03 * bound, 1.2 * bound, 2.0 * bound, 5.0 * bound]
    return [a for a in grid if a >= 1.0 and abs(a / bound - 1.0) > MARGIN]


def _assert_closed_form_matches(cases):
    """cases: list of (weights, clean_class, bound, a); one batched PGD run for all of them."""
    w = np.stack([c[0] for c in cases])
    a = np.array([c[3] for c in cases])
    u = minimise_amse_risk(w, a)
    for (wi, m, bound, ai), ui in zip(cases, u):
        is_vertex = np.abs(ui - np.eye(wi.size)[m]).max() < TOL
        assert is_vertex == (ai >= bound), f"w={wi}, m={m}, a={ai}, bound={bound}, u*={ui}"
        assert is_asymmetric(ai, wi, clean_class=m) == (ai >= bound)


@pytest.mark.parametrize("k", [3, 5, 10])
def test_closed_form_vs_numerical_minimiser_noise_models(k):
    cases = []
    configs = [("symmetric", r) for r in (0.2, 0.5, 0.8)] + [("asymmetric", r) for r in (0.1, 0.3, 0.45)]
    for kind, rate in configs:
        w = noise_weights(kind, rate, k)
        bound = amse_min_a(kind, rate, k)
        # Symmetric 0.8 needs 1 - eta > eta / (K - 1); otherwise the bound is inf and no a works.
        assert math.isfinite(bound) == (w[0] > w[1:].max() + 1e-12)
        cases += [(w, 0, bound, a) for a in _a_grid(bound)]
    _assert_closed_form_matches(cases)


def test_closed_form_vs_numerical_minimiser_random_weights():
    rng = np.random.default_rng(0)
    for k in (3, 5, 10):
        cases = []  # one batch per K
        # Concentration 0.5 gives a spread of gaps w_m - w_n (bounds from ~1 to large).
        for w in rng.dirichlet(0.5 * np.ones(k), size=10):
            bound = amse_min_a_from_weights(w)
            cases += [(w, int(np.argmax(w)), bound, a) for a in _a_grid(bound)]
            # A clean class that is not the largest weight: bound inf, never recovered.
            m = int(np.argmin(w))
            assert amse_min_a_from_weights(w, clean_class=m) == math.inf
            cases += [(w, m, math.inf, a) for a in (1.0, 10.0 * bound if math.isfinite(bound) else 1e3)]
        _assert_closed_form_matches(cases)


def test_first_order_condition_at_vertex_matches_bound():
    """Solver-free check: e_m is optimal iff the gradient of R at e_m is smallest in coordinate m.

    (KKT for a convex function on the simplex.)  Gradient by central differences of amse_risk.
    """
    rng = np.random.default_rng(4)
    h = 1e-6
    for w in rng.dirichlet(np.ones(4), size=10):
        m = int(np.argmax(w))
        bound = amse_min_a_from_weights(w)
        e_m = np.eye(4)[m]
        for a in (1.0, 0.9 * bound, 1.1 * bound, 3.0 * bound):
            if a < 1:
                continue
            grad = np.array(
                [(amse_risk(e_m + h * d, w, a) - amse_risk(e_m - h * d, w, a)) / (2 * h) for d in np.eye(4)]
            )
            vertex_optimal = bool(np.all(grad >= grad[m] - 1e-8))
            assert vertex_optimal == (a >= bound)


# ----------------------------------------------------------------------------- is_asymmetric / check_amse_a


def test_is_asymmetric_agrees_with_bound():
    assert is_asymmetric(9.0, noise_type="symmetric", rate=0.8, num_classes=10)  # exactly at the bound
    assert not is_asymmetric(8.9, noise_type="symmetric", rate=0.8, num_classes=10)
    assert is_asymmetric(5.0, noise_type="asymmetric", rate=0.4, num_classes=10)
    assert not is_asymmetric(4.99, noise_type="asymmetric", rate=0.4, num_classes=10)
    assert is_asymmetric(1.0, noise_type="none", rate=0.0, num_classes=10)
    assert not is_asymmetric(1e6, noise_type="asymmetric", rate=0.5, num_classes=10)
    w = noise_weights("symmetric", 0.5, 10)
    bound = amse_min_a_from_weights(w)
    assert is_asymmetric(bound, w) and not is_asymmetric(0.99 * bound, w)


def test_check_amse_a_messages():
    msg = check_amse_a(4, "asymmetric", 0.4, 10)
    assert msg is not None and "a=4" in msg and "5.00" in msg and "\n" not in msg
    assert check_amse_a(5, "asymmetric", 0.4, 10) is None
    assert check_amse_a(6, "asymmetric", 0.4, 10) is None
    assert check_amse_a(8, "symmetric", 0.8, 10) is not None
    assert check_amse_a(9, "symmetric", 0.8, 10) is None
    assert check_amse_a(1, "none", 0.0, 10) is None
    assert check_amse_a(100, "asymmetric", 0.5, 10) is not None  # no a works
    # No class-independent bound for these: nothing to warn about.
    assert check_amse_a(1, "instance", 0.4, 10) is None
    assert check_amse_a(1, "human", 0.4, 10) is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        noise_weights("symmetric", 1.0, 10)
    with pytest.raises(ValueError):
        noise_weights("symmetric", -0.1, 10)
    with pytest.raises(ValueError):
        amse_min_a("asymmetric", 1.2, 10)
    with pytest.raises(ValueError):
        noise_weights("instance", 0.2, 10)
    with pytest.raises(ValueError):
        noise_weights("human", 0.2, 10)
    with pytest.raises(ValueError):
        noise_weights("symmetric", 0.2, 1)
    with pytest.raises(ValueError):
        check_amse_a(5, "symmetric", 1.5, 10)
    with pytest.raises(ValueError):
        is_asymmetric(0.5, noise_type="symmetric", rate=0.2, num_classes=10)
    with pytest.raises(ValueError):
        is_asymmetric(5.0)  # neither weights nor a noise description
    with pytest.raises(ValueError):
        is_asymmetric(5.0, [0.6, 0.4], noise_type="symmetric", rate=0.2, num_classes=2)
    with pytest.raises(ValueError):
        is_asymmetric(5.0, noise_type="symmetric", rate=0.2)  # incomplete description
    with pytest.raises(ValueError):
        amse_risk([0.5, 0.5], [0.6, 0.4], 0.9)
    with pytest.raises(ValueError):
        amse_risk([0.5, 0.5], [0.6, -0.4], 2.0)
    with pytest.raises(ValueError):
        amse_min_a_from_weights([0.6, 0.4], clean_class=2)
