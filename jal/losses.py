"""Every loss of the paper, as small nn.Modules on logits.

Notation (docs/protocol.md section 2): logits z in R^K, p = softmax(z), label y, one-hot e_y.
Each single loss implements `per_sample(logits, targets) -> (N,)`; `forward` returns the batch mean,
always computed in float32 (also under bf16 autocast) so that logits up to +-100 stay finite.

Combinations are not separate classes: `ActivePassive(active, passive, alpha, beta)` is
alpha * active + beta * passive, e.g. JAL-CE = ActivePassive(NCE, AMSE(a)). The configs in
configs/loss/ spell out each combination of the paper.

Two details of the reference implementation change gradients and are matched here:
- FL, NFL and NNFL treat the focal factor (1 - p)^gamma as a constant (computed from detached p).
- NCE's normaliser -sum_k log p_k is not detached.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Loss(nn.Module):
    """Base class: subclasses define `per_sample`; forward is the float32 batch mean."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def per_sample(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.per_sample(logits.float(), targets).mean()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")


def _pick(values: Tensor, targets: Tensor) -> Tensor:
    """values[i, targets[i]] for each row i."""
    return values.gather(1, targets.unsqueeze(1)).squeeze(1)


def _focal_weights(log_probs: Tensor, gamma: float) -> Tensor:
    """(1 - p)^gamma from detached p: a constant in backprop, as in the reference implementation."""
    return (1.0 - log_probs.detach().exp()).clamp(min=0.0) ** gamma


# ---------------------------------------------------------------------------------------------------
# Active losses (they push p_y up and the other classes down explicitly)


class CE(Loss):
    """Cross entropy: -log p_y."""

    def per_sample(self, logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")


class FL(Loss):
    """Focal loss: -(1 - p_y)^gamma log p_y, focal factor detached."""

    def __init__(self, num_classes: int, gamma: float = 0.5):
        super().__init__(num_classes)
        self.gamma = gamma

    def per_sample(self, logits, targets):
        log_p_y = _pick(F.log_softmax(logits, dim=1), targets)
        return -_focal_weights(log_p_y, self.gamma) * log_p_y


class NCE(Loss):
    """Normalized cross entropy: -log p_y / -sum_k log p_k (a symmetric loss: sums to 1 over labels)."""

    def per_sample(self, logits, targets):
        log_p = F.log_softmax(logits, dim=1)
        return _pick(log_p, targets) / log_p.sum(dim=1)


class NFL(Loss):
    """Normalized focal loss: FL_y / sum_k FL_k, focal factors detached (numerator and normaliser)."""

    def __init__(self, num_classes: int, gamma: float = 0.5):
        super().__init__(num_classes)
        self.gamma = gamma

    def per_sample(self, logits, targets):
        log_p = F.log_softmax(logits, dim=1)
        focal = -_focal_weights(log_p, self.gamma) * log_p
        return _pick(focal, targets) / focal.sum(dim=1)


class NNCE(Loss):
    """Normalized negative cross entropy (Active Negative Loss, Ye et al. 2023).

    With A = -log m and v_k = A + log clamp(p_k, m, 1) >= 0: NNCE = 1 - v_y / sum_k v_k.
    """

    def __init__(self, num_classes: int, min_prob: float = 1e-8):
        super().__init__(num_classes)
        self.min_prob = min_prob

    def per_sample(self, logits, targets):
        log_m = math.log(self.min_prob)
        v = F.log_softmax(logits, dim=1).clamp(min=log_m) - log_m
        return 1.0 - _pick(v, targets) / v.sum(dim=1)


class NNFL(Loss):
    """Normalized negative focal loss: NNCE's construction on the focal terms f_k = -(1-p_k)^g log p_k.

    With log p clamped at log m and A = -(1 - m)^g log m: NNFL = 1 - (A - f_y) / (K A - sum_k f_k).
    """

    def __init__(self, num_classes: int, gamma: float = 0.5, min_prob: float = 1e-8):
        super().__init__(num_classes)
        self.gamma = gamma
        self.min_prob = min_prob

    def per_sample(self, logits, targets):
        log_m = math.log(self.min_prob)
        big_a = -((1.0 - self.min_prob) ** self.gamma) * log_m
        log_p = F.log_softmax(logits, dim=1).clamp(min=log_m)
        focal = -_focal_weights(log_p, self.gamma) * log_p
        return 1.0 - (big_a - _pick(focal, targets)) / (self.num_classes * big_a - focal.sum(dim=1))


# ---------------------------------------------------------------------------------------------------
# Passive losses (functions of p_y alone, or of p against a fixed target)


class MAE(Loss):
    """Mean absolute error: scale * (1 - p_y); the standalone MAE uses scale 2 (= ||p - e_y||_1 max)."""

    def __init__(self, num_classes: int, scale: float = 2.0):
        super().__init__(num_classes)
        self.scale = scale

    def per_sample(self, logits, targets):
        return self.scale * (1.0 - _pick(F.softmax(logits, dim=1), targets))


class GCE(Loss):
    """Generalized cross entropy: (1 - p_y^q) / q. p_y is clamped at 1e-7 so that the gradient of
    p^q (q < 1) stays finite when p_y underflows."""

    def __init__(self, num_classes: int, q: float = 0.7):
        super().__init__(num_classes)
        self.q = q

    def per_sample(self, logits, targets):
        p_y = _pick(F.softmax(logits, dim=1), targets).clamp(min=1e-7)
        return (1.0 - p_y**self.q) / self.q


class RCE(Loss):
    """Reverse cross entropy: -sum_k p_k log clamp(e_k, 1e-4, 1), p clamped to [1e-8, 1]."""

    def per_sample(self, logits, targets):
        p = F.softmax(logits, dim=1).clamp(min=1e-8, max=1.0)
        log_target = F.one_hot(targets, self.num_classes).float().clamp(min=1e-4, max=1.0).log()
        return -(p * log_target).sum(dim=1)


class AUL(Loss):
    """Asymmetric unhinged loss: ((a - p_y)^q - (a - 1)^q) / q, a > 1."""

    def __init__(self, num_classes: int, a: float = 5.5, q: float = 3.0):
        super().__init__(num_classes)
        self.a, self.q = a, q

    def per_sample(self, logits, targets):
        p_y = _pick(F.softmax(logits, dim=1), targets)
        return ((self.a - p_y) ** self.q - (self.a - 1.0) ** self.q) / self.q


class AGCE(Loss):
    """Asymmetric generalized cross entropy: ((a + 1)^q - (a + p_y)^q) / q."""

    def __init__(self, num_classes: int, a: float = 0.6, q: float = 0.6):
        super().__init__(num_classes)
        self.a, self.q = a, q

    def per_sample(self, logits, targets):
        p_y = _pick(F.softmax(logits, dim=1), targets)
        return ((self.a + 1.0) ** self.q - (self.a + p_y) ** self.q) / self.q


class AEL(Loss):
    """Asymmetric exponential loss: exp(-p_y / a)."""

    def __init__(self, num_classes: int, a: float = 2.5):
        super().__init__(num_classes)
        self.a = a

    def per_sample(self, logits, targets):
        return torch.exp(-_pick(F.softmax(logits, dim=1), targets) / self.a)


class AMSE(Loss):
    """Asymmetric mean square error, the paper's passive loss: (1/K) ||a e_y - p||^2, a >= 1.

    a = 1 is plain MSE. AMSE is asymmetric (robust) when a clears the bound of jal.theory.amse_min_a.
    """

    def __init__(self, num_classes: int, a: float = 1.0):
        super().__init__(num_classes)
        if a < 1:
            raise ValueError(f"AMSE needs a >= 1, got a={a}: set loss a to 1 (plain MSE) or more")
        self.a = a

    def per_sample(self, logits, targets):
        target = self.a * F.one_hot(targets, self.num_classes).float()
        return (target - F.softmax(logits, dim=1)).square().mean(dim=1)


# ---------------------------------------------------------------------------------------------------
# Combinations


class ActivePassive(Loss):
    """alpha * active + beta * passive: NCE+RCE, ANL-CE (NCE+NNCE), JAL-CE (NCE+AMSE), SCE (CE+RCE), ..."""

    def __init__(self, active: Loss, passive: Loss, alpha: float = 1.0, beta: float = 1.0):
        super().__init__(active.num_classes)
        self.active, self.passive = active, passive
        self.alpha, self.beta = alpha, beta

    def per_sample(self, logits, targets):
        return self.alpha * self.active.per_sample(logits, targets) + self.beta * self.passive.per_sample(
            logits, targets
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"
