"""When is AMSE an asymmetric (noise-robust) loss?  Paper Theorem 4.1, in numpy.

AMSE with parameter ``a >= 1`` for a prediction ``u`` in the probability simplex and label ``k``
(``K`` classes)::

    AMSE(u, k) = (1/K) * ||a e_k - u||^2 = (1/K) * sum_j (a [j = k] - u_j)^2

A loss ``L`` is *asymmetric* (Zhou et al., ICML 2021) for class weights ``w_1..w_K`` with a unique
largest weight ``w_m`` if the weighted risk ``R(u) = sum_i w_i L(u, i)`` is minimised over the simplex
at ``u = e_m``.  Under label noise ``w_i = P(observed label = i | true class m)``, so asymmetry means
that minimising the noisy risk recovers the clean-risk minimiser.

Theorem 4.1 (q = 2), with ``w_n`` the largest weight other than ``w_m`` and ``w_m > w_n``::

    AMSE is asymmetric  <=>  w_m / w_n >= (a + sum_{i != m} w_i / w_n) / (a - 1)
                        <=>  a >= (r + s) / (r - 1),   r = w_m / w_n,  s = sum_{i != m} w_i / w_n.

Why it holds (and a form that needs no division by ``w_n``): with ``S = sum_i w_i``,
``K R(u) = S ||u||^2 - 2a <w, u> + S a^2 = S ||u - a w / S||^2 + const``, so the minimiser of ``R``
over the simplex is the Euclidean projection of ``a w / S`` onto the simplex.  That projection is the
vertex ``e_m`` iff ``a w_m / S - 1 >= a w_j / S`` for every ``j != m``, i.e.::

    a >= S / (w_m - w_n) = (w_m + sum_{i != m} w_i) / (w_m - w_n)   (= 1 / (w_m - w_n) when S = 1),

which is the theorem's bound with numerator and denominator multiplied by ``w_n``.  It also covers
``w_n = 0`` (no noise: bound 1), and is unbounded (``inf``) when ``w_m <= w_n``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "amse_min_a",
    "amse_min_a_from_weights",
    "amse_risk",
    "check_amse_a",
    "is_asymmetric",
    "minimise_amse_risk",
    "noise_weights",
    "project_to_simplex",
]

# Noise types with a class-independent transition row, hence a closed-form bound.
_BOUNDED_NOISE = ("none", "symmetric", "asymmetric")
_ALIASES = {"clean": "none", "sym": "symmetric", "asym": "asymmetric"}
# Relative tolerance for "a >= bound": the bound is a ratio of floats (e.g. 1 / (0.2 - 0.8/9) is
# 9.000000000000002), and a = 9 should count as meeting the bound of 9.
_RTOL = 1e-9


def _canonical_noise_type(noise_type: str) -> str:
    name = str(noise_type).strip().lower()
    return _ALIASES.get(name, name)


def _as_weights(weights) -> np.ndarray:
    """Validate class weights: a 1-D, finite, non-negative vector with a positive sum (K >= 2)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size < 2:
        raise ValueError(f"weights must be a 1-D vector with at least 2 entries, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w}")
    return w


def _check_a(a: float) -> float:
    a = float(a)
    if not math.isfinite(a) or a < 1:
        raise ValueError(f"AMSE needs a finite a >= 1, got a={a}")
    return a


def amse_min_a_from_weights(weights, clean_class: int | None = None) -> float:
    """Smallest ``a`` making AMSE asymmetric for class weights ``w`` (Theorem 4.1).

    Returns ``(w_m + sum_{i != m} w_i) / (w_m - w_n)`` — the paper's ``(r + s) / (r - 1)`` with the
    ``1/w_n`` cleared — where ``m = clean_class`` (default: argmax) and ``w_n = max_{i != m} w_i``.
    Equals ``1 / (w_m - w_n)`` for normalised weights; 1 when ``w_n = 0``; ``inf`` when
    ``w_m <= w_n`` (no ``a`` recovers ``e_m``).  Scale-invariant, so unnormalised weights are fine.
    """
    w = _as_weights(weights)
    m = int(np.argmax(w)) if clean_class is None else int(clean_class)
    if not 0 <= m < w.size:
        raise ValueError(f"clean_class={clean_class} out of range for K={w.size}")
    w_m = w[m]
    others = np.delete(w, m)
    w_n = others.max()
    gap = w_m - w_n
    # A tie up to rounding (e.g. symmetric 0.8 with K=5: 1 - 0.8 vs 0.8 / 4) is a tie: no finite a.
    if gap <= 1e-12 * w.sum():
        return math.inf
    return float((w_m + others.sum()) / gap)


def noise_weights(noise_type: str, rate: float, num_classes: int) -> np.ndarray:
    """Observed-label distribution ``w`` for a sample of clean class 0 (the bound is class-free).

    symmetric:  ``w_0 = 1 - rate``, ``w_i = rate / (K - 1)`` otherwise.
    asymmetric (pair flip): ``w_0 = 1 - rate``, ``w_1 = rate``, others 0.
    none: ``w = e_0`` (rate ignored: there is no noise).
    """
    kind = _canonical_noise_type(noise_type)
    rate = float(rate)
    if not (0.0 <= rate < 1.0):
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    k = int(num_classes)
    w = np.zeros(k)
    if kind == "none":
        w[0] = 1.0
    elif kind == "symmetric":
        w[:] = rate / (k - 1)
        w[0] = 1.0 - rate
    elif kind == "asymmetric":
        w[0] = 1.0 - rate
        w[1] = rate
    else:
        raise ValueError(
            f"no class-independent noise weights for noise type {noise_type!r}; "
            f"defined for {', '.join(_BOUNDED_NOISE)}"
        )
    return w


def amse_min_a(noise_type: str, rate: float, num_classes: int) -> float:
    """Smallest ``a`` for which AMSE is asymmetric under the given noise (``inf`` if none).

    symmetric: ``1 / (1 - rate - rate/(K-1))``; asymmetric: ``1 / (1 - 2 rate)``; none: 1.
    E.g. symmetric 0.8, K=10 -> 9; asymmetric 0.4 -> 5.
    """
    return amse_min_a_from_weights(noise_weights(noise_type, rate, num_classes), clean_class=0)


def _meets_bound(a: float, bound: float) -> bool:
    return math.isfinite(bound) and a >= bound * (1.0 - _RTOL)


def is_asymmetric(
    a: float,
    weights=None,
    *,
    noise_type: str | None = None,
    rate: float | None = None,
    num_classes: int | None = None,
    clean_class: int | None = None,
) -> bool:
    """Whether AMSE(a) is asymmetric, i.e. ``a >= bound``, for ``weights`` or a noise description."""
    a = _check_a(a)
    described = noise_type is not None or rate is not None or num_classes is not None
    if (weights is None) == (not described):
        raise ValueError("give either weights or (noise_type, rate, num_classes), not both or neither")
    if weights is not None:
        bound = amse_min_a_from_weights(weights, clean_class)
    else:
        if noise_type is None or rate is None or num_classes is None:
            raise ValueError("a noise description needs noise_type, rate and num_classes")
        bound = amse_min_a(noise_type, rate, num_classes)
    return _meets_bound(a, bound)


def _amse_all_labels(u: np.ndarray, a: float) -> np.ndarray:
    """``AMSE(u, i)`` for every label ``i``: shape ``(..., K)``, straight from the definition."""
    k = u.shape[-1]
    targets = a * np.eye(k)  # row i is the target a e_i
    diff = targets - u[..., None, :]  # (..., K labels, K coordinates)
    return (diff**2).sum(axis=-1) / k


def amse_risk(u, weights, a: float):
    """Weighted risk ``R(u) = sum_i w_i AMSE(u, i)``; ``u`` may be a batch of shape ``(..., K)``."""
    a = _check_a(a)
    w = _as_weights(weights)
    u = np.asarray(u, dtype=float)
    if u.shape[-1] != w.size:
        raise ValueError(f"u has {u.shape[-1]} classes but weights have {w.size}")
    risk = _amse_all_labels(u, a) @ w
    return float(risk) if risk.ndim == 0 else risk


def project_to_simplex(v) -> np.ndarray:
    """Euclidean projection of each row of ``v`` (shape ``(..., K)``) onto the probability simplex.

    Sort-based algorithm (Held et al. 1974; Duchi et al. 2008): ``u = max(v - tau, 0)`` with the
    threshold ``tau`` chosen so that ``sum(u) = 1``.
    """
    v = np.asarray(v, dtype=float)
    k = v.shape[-1]
    s = -np.sort(-v, axis=-1)  # descending
    css = np.cumsum(s, axis=-1) - 1.0
    j = np.arange(1, k + 1)
    # rho = largest j with s_j > (css_j) / j; the condition holds for a prefix of j, so count it.
    rho = np.count_nonzero(s - css / j > 0, axis=-1)
    tau = np.take_along_axis(css, (rho - 1)[..., None], axis=-1) / rho[..., None]
    return np.maximum(v - tau, 0.0)


def minimise_amse_risk(weights, a, steps: int = 200, step_scale: float = 0.5, u0=None) -> np.ndarray:
    """Minimise ``R(u) = sum_i w_i AMSE(u, i)`` over the simplex by projected gradient descent.

    ``weights`` may be a batch ``(..., K)`` with ``a`` broadcastable to its batch shape.  The
    gradient ``(2/K) (S u - a w)`` is that of the definition, with Lipschitz constant ``L = 2S/K``
    (``S = sum_i w_i``); the step is ``step_scale / L``.  The Hessian is a multiple of the identity,
    so each step contracts the error by ``1 - step_scale``: 200 steps at 0.5 reach machine
    precision.  (``step_scale = 1`` would jump straight to the closed-form answer, the projection
    of ``a w / S``; the default keeps the solver an independent, iterative check of it.)
    """
    w = np.asarray(weights, dtype=float)
    if w.shape[-1] < 2 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative with K >= 2 classes")
    a_arr = np.asarray(a, dtype=float)
    if not np.all(np.isfinite(a_arr)) or np.any(a_arr < 1):
        raise ValueError(f"AMSE needs finite a >= 1, got {a}")
    if not 0 < step_scale <= 1:
        raise ValueError(f"step_scale must be in (0, 1], got {step_scale}")
    k = w.shape[-1]
    batch = np.broadcast_shapes(w.shape[:-1], a_arr.shape)
    w = np.broadcast_to(w, batch + (k,))
    a_arr = np.broadcast_to(a_arr, batch)[..., None]
    total = w.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("weights must not be all zero")
    # Start at the uniform prediction: interior and favouring no class.
    u = np.full(batch + (k,), 1.0 / k) if u0 is None else np.broadcast_to(u0, batch + (k,)).astype(float)
    lr = step_scale / (2.0 * total / k)
    for _ in range(int(steps)):
        grad = (2.0 / k) * (total * u - a_arr * w)
        u = project_to_simplex(u - lr * grad)
    return u


def check_amse_a(a: float, noise_type: str, rate: float, num_classes: int, key: str = "loss.a") -> str | None:
    """One-line warning if AMSE(a) is not asymmetric under the given noise, else ``None``; ``key`` is the
    setting that holds this a (``loss.passive.a`` in JAL-CE).

    Returns ``None`` for noise types with no class-independent bound (instance, human, ...).
    """
    kind = _canonical_noise_type(noise_type)
    if kind not in _BOUNDED_NOISE:
        return None
    bound = amse_min_a(kind, rate, num_classes)
    a = float(a)
    if _meets_bound(a, bound):
        return None
    where = f"{kind} noise {rate:g} with K={num_classes}"
    if math.isinf(bound):
        return (
            f"AMSE a={a:g} cannot be asymmetric for {where}: the clean-class weight does not exceed "
            f"the largest noisy-class weight, so no a makes the loss robust"
        )
    return (
        f"AMSE a={a:g} is below the asymmetry bound a >= {bound:.2f} for {where}: "
        f"the loss is not guaranteed robust; raise {key}"
    )
