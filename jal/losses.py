"""Every loss of the paper, as small nn.Modules on logits; a library for any PyTorch loop (docs/losses.md).

Notation (docs/protocol.md section 2): logits z in R^K, p = softmax(z), label y, one-hot e_y. Each single loss
implements `per_sample(logits, targets) -> (N,)`; `forward` is the batch mean, computed in at least float32
(also under bf16 autocast: logits up to +-100 stay finite; float64 stays float64). Both take targets of any
integer dtype and refuse, in one line, logits of another class count (from shapes: no device read, no sync).
Combinations are `ActivePassive(active, passive, alpha, beta)` = alpha * active + beta * passive (configs/loss/);
the paper's own two are also classes, `JALCE` and `JALFL`, with the paper's values per dataset.

Where the reference implementation differs from the papers (the focal factor a constant, NCE's normaliser
in the graph, ...), this module follows the reference: docs/protocol.md section 5 lists every such place. The
baselines that are not active/passive sums (LDR-KL, CE+LC, the eps-Softmax losses, NLNL) each follow the
reference's class of the same loss; where that differs from its paper, the docstring says how.
Two optional hooks: `fit_labels(noisy training labels)`, called once before training, and `set_generator`,
before each epoch with the run's generator for it (a resumed run draws what an uninterrupted one would); a
loss that draws in its step says so (`draws_random_numbers = True`): a run across processes refuses it.
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jal.paper_values import PAPER_VALUES, PaperValues, paper_values  # noqa: F401 (from jal.losses import ...)


class Loss(nn.Module):
    """Base class: subclasses define `per_sample`; forward is the batch mean in float32 (or float64).
    num_classes: K, the number of columns the logits must have (the model's output size)."""
    draws_random_numbers = False  # in its step, from the epoch's generator (set_generator): NLNL

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "per_sample" in vars(cls):  # each class's own per_sample, a new loss's too, checks what it is given
            raw = vars(cls)["per_sample"]
            @functools.wraps(raw)
            def per_sample(self, logits: Tensor, targets: Tensor) -> Tensor:
                return raw(self, logits, checked_targets(self, logits, targets))

            cls.per_sample = per_sample

    def per_sample(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def fit_labels(self, labels: Tensor) -> None:
        """Called once before training with the (noisy) training labels; most losses need nothing."""

    def set_generator(self, generator: torch.Generator) -> None:
        """Called before each epoch with the epoch's generator; losses that draw random numbers use it."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.per_sample(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets).mean()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")


def checked_targets(loss: Loss, logits: Tensor, targets: Tensor) -> Tensor:
    """targets as int64, once logits are (N, num_classes), targets (N,) of an integer dtype; reads no tensor."""
    shape, name, k = logits.shape, type(loss).__name__, loss.num_classes  # every step: a few microseconds
    if len(shape) != 2 or shape[1] != k:
        got = f"{shape[1]} columns" if len(shape) == 2 else f"shape {tuple(shape)}"
        raise ValueError(f"{name} was built for num_classes={k} but the logits have {got}: build it with the "
                         f"model's number of classes, or give it logits (N, {k})")
    if targets.dtype is not torch.int64:
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype is torch.bool:
            raise ValueError(f"{name} takes targets as class indices of an integer dtype, not {targets.dtype}")
        targets = targets.long()
    if targets.ndim != 1 or targets.shape[0] != shape[0]:
        raise ValueError(f"{name} takes targets ({shape[0]},) for logits {tuple(shape)}, not {tuple(targets.shape)}")
    return targets


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
    """Normalized negative cross entropy (Active Negative Loss, Ye et al. 2023): with A = -log m and
    v_k = A + log clamp(p_k, m, 1) >= 0, NNCE = 1 - v_y / sum_k v_k."""

    def __init__(self, num_classes: int, min_prob: float = 1e-8):
        super().__init__(num_classes)
        self.min_prob = min_prob

    def per_sample(self, logits, targets):
        log_m = math.log(self.min_prob)
        v = F.log_softmax(logits, dim=1).clamp(min=log_m) - log_m
        return 1.0 - _pick(v, targets) / v.sum(dim=1)


class NNFL(Loss):
    """Normalized negative focal loss: NNCE's construction on the focal terms f_k = -(1-p_k)^g log p_k; with
    log p clamped at log m and A = -(1 - m)^g log m, NNFL = 1 - (A - f_y) / (K A - sum_k f_k)."""

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

    a has no default: the paper's are 30 (CIFAR-10, WebVision), 20 (CIFAR-100), 5 (Clothing1M); 1 is plain MSE.
    AMSE is asymmetric (robust) when a clears the bound of jal.theory.amse_min_a. The exponent q (the
    reference's `AMSE_with_q`, the paper's ablation) makes it (1/K) sum_k |a e_k - p_k|^q; q = 2 is AMSE. The
    reference's |(p_k - a e_k)^q| is the same for integer q and NaN for fractional q (a negative base); we
    take |.|^q, defined for every q > 0.
    """

    def __init__(self, num_classes: int, a: float, q: float = 2.0):
        super().__init__(num_classes)
        if not (math.isfinite(a) and a >= 1):
            raise ValueError(f"AMSE needs a finite a >= 1, got a={a}: the paper's a is 30 on CIFAR-10 (1 is plain MSE)")
        self.a, self.q = a, q

    def per_sample(self, logits, targets):
        diff = self.a * F.one_hot(targets, self.num_classes).float() - F.softmax(logits, dim=1)
        return (diff.square() if self.q == 2 else diff.abs() ** self.q).mean(dim=1)


class MSE(AMSE):
    """Plain MSE on the softmax, (1/K) ||e_y - p||^2: AMSE with a = 1, kept a class of its own because the
    reference trains it (its `MSELoss`) with L2, not with the L1 of the losses with an AMSE term."""

    def __init__(self, num_classes: int):
        super().__init__(num_classes, a=1.0)


# ---------------------------------------------------------------------------------------------------
# The other baselines of the published tables (the eps-Softmax paper's main table)


class LDRKL(Loss):
    """LDR-KL (Zhu et al., ICML 2023), as the reference's `LDRLoss_V1`: with margin c (`threshold`), temperature
    lambda and scores s = softplus(z) / mean_k softplus(z_k) (the reference's; the paper scores raw logits),

        d_k = (c [k != y] + s_k - s_y) / lambda,   LDR-KL = lambda * log((1/K) sum_k exp(d_k)).
    """

    def __init__(self, num_classes: int, threshold: float = 0.1, lam: float = 1.0):
        super().__init__(num_classes)
        self.threshold, self.lam = threshold, lam

    def per_sample(self, logits, targets):
        s = F.softplus(logits)
        s = s / s.mean(dim=1, keepdim=True)
        margin = self.threshold * (1.0 - F.one_hot(targets, self.num_classes).float())
        d = (margin + s - _pick(s, targets).unsqueeze(1)) / self.lam
        return self.lam * (torch.logsumexp(d, dim=1) - math.log(self.num_classes))


class CELC(Loss):
    """CE with logit clipping (LogitClip, Wei et al., ICML 2023), as the reference's `CEandLC`: a sample's
    logits z with ||z||_2 > 1/delta are rescaled to delta z / (||z||_2 + 1e-8), the others kept; then CE on
    the clipped logits, p clamped to [1e-8, 1]. The reference's threshold (1/delta) and target norm (delta)
    differ, so logits with 1/delta < ||z|| < delta are scaled up; we do the same."""

    def __init__(self, num_classes: int, delta: float = 2.5):
        super().__init__(num_classes)
        self.delta = delta

    def clip(self, logits: Tensor) -> Tensor:
        norms = logits.norm(dim=1, keepdim=True) + 1e-8
        return torch.where(norms > 1.0 / self.delta, logits / norms * self.delta, logits)

    def per_sample(self, logits, targets):
        p = F.softmax(self.clip(logits), dim=1).clamp(min=1e-8, max=1.0)
        return -_pick(p, targets).log()


def eps_softmax(logits: Tensor, m: float) -> Tensor:
    """eps-Softmax (Wang et al., NeurIPS 2024): (p + m e_argmax(p)) / (1 + m), still a distribution, and within
    1/(1 + m) of a one-hot vector. The argmax carries no gradient."""
    p = F.softmax(logits, dim=1)
    top = F.one_hot(p.argmax(dim=1), p.shape[1]).to(p.dtype)
    return (p + m * top) / (1.0 + m)


class ECE(Loss):
    """CE on the eps-Softmax probabilities (the reference's `ECELoss`): -log clamp(p^eps_y, 1e-8).
    Trained as CE_eps+MAE = alpha ECE + beta MAE (configs/loss/ce_eps_mae.yaml)."""

    def __init__(self, num_classes: int, m: float = 1e5):
        super().__init__(num_classes)
        self.m = m

    def per_sample(self, logits, targets):
        return -_pick(eps_softmax(logits, self.m).clamp(min=1e-8), targets).log()


class EFL(Loss):
    """Focal loss on the eps-Softmax probabilities (the reference's `EFocalLoss`): -(1 - p^eps_y)^gamma log p^eps_y,
    p^eps clamped at 1e-8, focal factor detached, gamma 0.1 (the default in `EFLandMAE`, not FL's 0.5)."""

    def __init__(self, num_classes: int, m: float = 1e5, gamma: float = 0.1):
        super().__init__(num_classes)
        self.m, self.gamma = m, gamma

    def per_sample(self, logits, targets):
        log_p_y = _pick(eps_softmax(logits, self.m).clamp(min=1e-8).log(), targets)
        return -_focal_weights(log_p_y, self.gamma) * log_p_y


class NLNL(Loss):
    """Negative learning (Kim et al., ICCV 2019), the NL stage only, as the reference's `NLNL` class computes
    it: for each sample a complementary label ybar = (y + r) mod K, r uniform in {1, ..., K-1}, drawn anew
    every step (from `set_generator`'s generator, else torch's global one), and

        NLNL = -w_y log clamp(1 - p_ybar, 1e-5, 1),   w_k = max_j n_j / n_k,

    n_k the number of training samples whose noisy label is k (`fit_labels`). The reference also adds a
    class-weighted CE over no samples (every label the ignore index), 0 * nan = nan in current PyTorch; we
    leave it out, the value it was meant to have (0). The method's later stages (selective NL, PL) are not in it.
    """

    draws_random_numbers = True

    def __init__(self, num_classes: int, min_prob: float = 1e-5):
        super().__init__(num_classes)
        self.min_prob = min_prob
        self.class_weights = torch.ones(num_classes)
        self._generator = None

    def fit_labels(self, labels):
        counts = torch.bincount(labels.flatten(), minlength=self.num_classes).float()
        self.class_weights = counts.max() / counts.clamp(min=1.0)  # a class no sample has is never weighted

    def set_generator(self, generator):
        self._generator = generator

    def complementary_labels(self, targets: Tensor) -> Tensor:
        r = torch.randint(1, self.num_classes, targets.shape, generator=self._generator, device=targets.device)
        return (targets + r) % self.num_classes

    def per_sample(self, logits, targets):
        p_neg = _pick(F.softmax(logits, dim=1), self.complementary_labels(targets))
        weights = self.class_weights.to(logits.device)[targets]
        return -weights * (1.0 - p_neg).clamp(min=self.min_prob, max=1.0).log()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, min_prob={self.min_prob}"


# ---------------------------------------------------------------------------------------------------
# Combinations


class ActivePassive(Loss):
    """alpha * active + beta * passive: NCE+RCE, ANL-CE (NCE+NNCE), JAL-CE (NCE+AMSE), SCE (CE+RCE), ...; alpha
    and beta default to 1, JAL-CE's and NCE+RCE's on CIFAR-10 (the others: docs/protocol.md section 2)."""

    def __init__(self, active: Loss, passive: Loss, alpha: float = 1.0, beta: float = 1.0):
        if active.num_classes != passive.num_classes:
            raise ValueError(f"ActivePassive's terms differ in num_classes: {type(active).__name__} "
                             f"{active.num_classes}, {type(passive).__name__} {passive.num_classes}")
        super().__init__(active.num_classes)
        self.active, self.passive = active, passive
        self.alpha, self.beta = alpha, beta

    def per_sample(self, logits, targets):
        active, passive = self.active.per_sample(logits, targets), self.passive.per_sample(logits, targets)
        return self.alpha * active + self.beta * passive

    def fit_labels(self, labels):
        self.active.fit_labels(labels)
        self.passive.fit_labels(labels)

    def set_generator(self, generator):
        self.active.set_generator(generator)
        self.passive.set_generator(generator)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"


class JALCE(ActivePassive):
    """JAL-CE = alpha * NCE + beta * AMSE(a), the paper's loss; no defaults. `JALCE.paper(dataset)`: as the
    paper trains it, which is with an L1 penalty on every parameter and no L2 (`paper_values(dataset).l1`)."""

    def __init__(self, num_classes: int, alpha: float, beta: float, a: float):
        super().__init__(NCE(num_classes), AMSE(num_classes, a=a), alpha, beta)

    @classmethod
    def paper(cls, dataset: str) -> "JALCE":
        v = paper_values(dataset)
        return cls(v.num_classes, v.alpha, v.beta, v.a)


class JALFL(ActivePassive):
    """JAL-FL = alpha * NFL(gamma) + beta * AMSE(a), gamma 0.5 the paper's everywhere; `paper` as JALCE's."""

    def __init__(self, num_classes: int, alpha: float, beta: float, a: float, gamma: float = 0.5):
        super().__init__(NFL(num_classes, gamma=gamma), AMSE(num_classes, a=a), alpha, beta)

    @classmethod
    def paper(cls, dataset: str) -> "JALFL":
        v = paper_values(dataset)
        return cls(v.num_classes, v.alpha, v.beta, v.a, v.gamma)
