"""Label noise for the training set (docs/protocol.md section 3).

Noise is drawn once per run from the run's seed and applied to the training
labels only. Everything here is numpy and uses ``np.random.default_rng(seed)``,
so results depend on the seed alone and the global ``np.random`` state is
never read or changed.

Synthetic noise (symmetric, asymmetric) is described by a K x K transition
matrix T, where T[i, j] is the probability that a sample of true class i is
labelled j. Real-world noise comes from files: the precomputed
instance-dependent (IDN) label sets and the CIFAR-10N / CIFAR-100N human labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from jal.errors import ConfigError, DataError

# Class-conditional flips of the asymmetric noise, for each number of classes
# that has a defined mapping: {K: {true class: noisy class}}. CIFAR-100 is not
# listed pair by pair; it follows the block rule in asymmetric_mapping().
ASYMMETRIC_PAIRS = {
    # truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
    10: {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
}
CIFAR100_BLOCK_SIZE = 5  # CIFAR-100: flip to the next index within blocks 0-4, 5-9, ...

# CIFAR-N label sets: user-facing name -> key in the npz file.
HUMAN_LABEL_KEYS = {
    "aggre": "aggre_label",  # CIFAR-10N
    "worst": "worse_label",
    "rand1": "random_label1",
    "rand2": "random_label2",
    "rand3": "random_label3",
    "noisy": "noisy_label",  # CIFAR-100N
}

KINDS = ("symmetric", "asymmetric")
SAMPLINGS = ("exact", "per_sample")


def check_inputs(labels=None, rate=None, num_classes=None) -> np.ndarray | None:
    """Validate the arguments shared by every function here; return labels as int64.

    Each error message is one line and says how to fix the call.
    """
    if num_classes is not None and (int(num_classes) != num_classes or num_classes < 2):
        raise ValueError(f"num_classes={num_classes} is invalid: pass the number of classes, an integer >= 2")
    if rate is not None and not 0.0 <= rate < 1.0:
        raise ValueError(
            f"noise rate {rate} is outside [0, 1): pass a fraction such as 0.4, not a percentage"
        )
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}: "
            "pass class indices (flatten (n, 1) arrays, argmax one-hot ones)"
        )
    if num_classes is not None and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels range from {labels.min()} to {labels.max()}, outside [0, {num_classes}): "
            "check num_classes or remap the labels to 0..K-1"
        )
    return labels.astype(np.int64)


def asymmetric_mapping(num_classes: int, coarse_labels=None) -> dict[int, int]:
    """Return {true class: noisy class} for asymmetric noise with K classes.

    With ``coarse_labels`` (the true superclass id of each of the K classes),
    each class flips to the next class of its superclass, in index order and
    cyclically; a superclass with a single class has no flip.
    """
    if coarse_labels is not None:
        coarse_labels = np.asarray(coarse_labels)
        if coarse_labels.shape != (num_classes,):
            raise ValueError(
                f"coarse_labels has shape {coarse_labels.shape}, expected ({num_classes},): "
                "pass one superclass id per fine class"
            )
        mapping = {}
        for superclass in np.unique(coarse_labels):
            members = np.flatnonzero(coarse_labels == superclass)  # sorted by index
            if len(members) > 1:
                for member, successor in zip(members, np.roll(members, -1)):
                    mapping[int(member)] = int(successor)
        return mapping
    if num_classes in ASYMMETRIC_PAIRS:
        return dict(ASYMMETRIC_PAIRS[num_classes])
    if num_classes == 100:
        size = CIFAR100_BLOCK_SIZE
        return {i: (i // size) * size + (i + 1) % size for i in range(num_classes)}
    raise ValueError(
        f"asymmetric noise has no class mapping for {num_classes} classes "
        f"(defined for {sorted(ASYMMETRIC_PAIRS) + [100]}): use symmetric noise or pass coarse_labels"
    )


def transition_matrix(kind: str, rate: float, num_classes: int, coarse_labels=None) -> np.ndarray:
    """Return the K x K noise transition matrix T (float64, rows sum to 1)."""
    check_inputs(rate=rate, num_classes=num_classes)
    K = num_classes
    if kind == "symmetric":
        # (1 - rate) stays, the rest is spread evenly over the other K - 1 classes
        T = np.full((K, K), rate / (K - 1))
        np.fill_diagonal(T, 1.0 - rate)
    elif kind == "asymmetric":
        T = np.eye(K)
        for source, target in asymmetric_mapping(K, coarse_labels).items():
            T[source, source] = 1.0 - rate
            T[source, target] = rate
    else:
        raise ValueError(f"unknown noise kind {kind!r}: use one of {KINDS}")
    return T


def make_noisy_labels(
    labels,
    kind: str,
    rate: float,
    num_classes: int,
    seed: int,
    sampling: str = "exact",
    coarse_labels=None,
) -> np.ndarray:
    """Return a noisy copy of ``labels`` (int64) under symmetric or asymmetric noise.

    sampling="exact" (the reference default): for each true class i and each
    j != i, exactly int(T[i, j] * n_i) samples of class i, chosen without
    replacement, get label j. sampling="per_sample": each sample's label is
    drawn independently from row T[y] of the transition matrix.
    """
    labels = check_inputs(labels, rate, num_classes)
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}: use one of {SAMPLINGS}")
    T = transition_matrix(kind, rate, num_classes, coarse_labels)
    noisy = labels.copy()
    if rate == 0:
        return noisy
    rng = np.random.default_rng(seed)
    for true_class in range(num_classes):
        members = np.flatnonzero(labels == true_class)
        if sampling == "exact":
            # shuffle the class once, then hand out consecutive runs, so that
            # the samples going to different targets never overlap
            shuffled = rng.permutation(members)
            start = 0
            for target in range(num_classes):
                if target == true_class:
                    continue
                count = int(T[true_class, target] * len(members))
                noisy[shuffled[start : start + count]] = target
                start += count
        else:
            noisy[members] = rng.choice(num_classes, size=len(members), p=T[true_class])
    return noisy


def generate_instance_labels(
    features, labels, rate: float, num_classes: int, seed: int, norm_std: float = 0.1
) -> np.ndarray:
    """Instance-dependent noise of Xia et al. (NeurIPS 2020, "part-dependent" generator).

    Sample i gets a flip rate q_i ~ N(rate, norm_std) truncated to [0, 1]. A random
    projection W ~ N(0, 1) of shape (K, D, K) scores the other classes from the
    flattened, L2-normalised features: s = x_i @ W[y_i], s[y_i] = -inf. The new
    label is drawn from probs = q_i * softmax(s) with probs[y_i] = 1 - q_i.
    rate 0 returns a copy (a truncated normal around 0 would still flip ~8%).
    """
    labels = check_inputs(labels, rate, num_classes)
    features = np.asarray(features)
    n = len(labels)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows for {n} labels: pass one feature row per label")
    if rate == 0:
        return labels.copy()
    features = features.reshape(n, -1)
    K, D = num_classes, features.shape[1]
    rng = np.random.default_rng(seed)

    # truncated normal by rejection: redraw the values that fall outside [0, 1]
    flip_rates = rng.normal(rate, norm_std, size=n)
    outside = (flip_rates < 0) | (flip_rates > 1)
    while outside.any():
        flip_rates[outside] = rng.normal(rate, norm_std, size=outside.sum())
        outside = (flip_rates < 0) | (flip_rates > 1)

    probs = np.zeros((n, K))
    chunk = 4096  # rows of features converted to float64 at once, to bound memory
    for true_class in range(K):
        # drawn class by class in order: the same numbers as one (K, D, K) draw
        W = rng.standard_normal((D, K))
        members = np.flatnonzero(labels == true_class)
        for start in range(0, len(members), chunk):
            rows = members[start : start + chunk]
            x = features[rows].astype(np.float64)
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(float).tiny)
            scores = x @ W
            scores[:, true_class] = -np.inf
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))  # stable softmax
            q = flip_rates[rows, None]
            probs[rows] = q * scores / scores.sum(axis=1, keepdims=True)
            probs[rows, true_class] = 1.0 - flip_rates[rows]

    # one uniform per sample, inverted through the row's cumulative distribution
    cumulative = np.cumsum(probs, axis=1)
    uniforms = rng.random(n)[:, None]
    noisy = (uniforms >= cumulative).sum(axis=1)
    return np.minimum(noisy, K - 1).astype(np.int64)  # guard against cumsum rounding below 1


def load_instance_labels(path, rate: float, num_samples: int | None = None, num_classes: int | None = None):
    """Load a precomputed instance-dependent label set (npz with keys "rate_0.2", ...) for a training set of
    `num_samples` images of `num_classes` classes (checked when given)."""
    check_inputs(rate=rate)
    data = read_label_file(path, "precomputed instance-dependent labels (e.g. cifar10_idn_labels.npz)")
    available = {float(key.split("_", 1)[1]): key for key in data if key.startswith("rate_")}
    matches = [key for value, key in available.items() if abs(value - rate) < 1e-9]
    if not matches:
        raise DataError(
            f"no instance-dependent labels for rate {rate} in {path}: "
            f"available rates are {sorted(available)}"
        )
    labels = data[matches[0]]
    if num_samples is not None and len(labels) != num_samples:
        raise DataError(f"labels of the wrong length: {path} has {len(labels)} at rate {rate}, the training set "
                         f"{num_samples}; use the label file made for this dataset")
    if num_classes is not None and labels.max(initial=0) >= num_classes:
        raise DataError(f"{path}: rate_{rate} holds class {labels.max()}, beyond the dataset's {num_classes} "
                         "classes; use the label file made for this dataset")
    return labels.astype(np.int64)


def load_human_labels(path, name: str, clean_labels) -> np.ndarray:
    """Load a CIFAR-N human label set by name and check it against the dataset's labels.

    Names: aggre, worst, rand1, rand2, rand3 (CIFAR-10N); noisy (CIFAR-100N). The file's
    clean_label must equal ``clean_labels`` exactly, so both are in the same sample order.
    """
    if name not in HUMAN_LABEL_KEYS:
        raise ConfigError(f"unknown human label set {name!r}: use one of {list(HUMAN_LABEL_KEYS)}")
    clean_labels = check_inputs(clean_labels)
    data = read_label_file(path, "CIFAR-N labels (cifar10n_labels.npz or cifar100n_labels.npz)")
    key = HUMAN_LABEL_KEYS[name]
    if key not in data or "clean_label" not in data:
        names_here = [n for n, k in HUMAN_LABEL_KEYS.items() if k in data]
        raise DataError(f"{path} has no {name!r} labels or no clean_label: this file provides {names_here}")
    file_clean = data["clean_label"]
    if len(file_clean) != len(clean_labels):
        raise DataError(
            f"labels of the wrong length: {path} has {len(file_clean)}, the dataset {len(clean_labels)}; "
            "pass the full training set's labels"
        )
    if not np.array_equal(file_clean, clean_labels):
        raise DataError(
            f"the file's clean labels do not match the dataset's order ({path}): "
            "load the training set in its canonical order, unshuffled"
        )
    if data[key].max(initial=0) > file_clean.max(initial=0):
        raise DataError(f"{path}: {key} holds class {data[key].max()}, beyond the classes of clean_label")
    return data[key].astype(np.int64)


def noise_summary(clean, noisy, num_classes: int) -> dict:
    """Describe realised noise: fraction changed, count changed, empirical transition matrix.

    transition[i, j] is the fraction of class-i samples labelled j; rows of classes
    absent from ``clean`` are all zero.
    """
    clean = check_inputs(clean, num_classes=num_classes)
    noisy = check_inputs(noisy, num_classes=num_classes)
    if clean.shape != noisy.shape:
        raise ValueError(f"clean has {len(clean)} labels but noisy has {len(noisy)}: pass matching arrays")
    counts = np.bincount(clean * num_classes + noisy, minlength=num_classes**2)
    counts = counts.reshape(num_classes, num_classes).astype(np.float64)
    class_sizes = counts.sum(axis=1, keepdims=True)
    transition = np.divide(counts, class_sizes, out=np.zeros_like(counts), where=class_sizes > 0)
    flips = int((clean != noisy).sum())
    return {
        "rate": flips / len(clean) if len(clean) else 0.0,
        "flips": flips,
        "transition": transition,
    }


# ---------------------------------------------------------------------------------------------------
# The realised rate against the asked one: the one definition the run, the summaries and the tables use

NOISE_GAP = 0.01  # a realised noise rate further than this from the one asked is said (1 pp)


def asked_noise_rate(noise_type: str, rate: float | None, num_classes: int | None) -> float | None:
    """The share of training labels the asked noise changes (None: human noise asks no rate): the rate for
    symmetric and instance-dependent noise; for asymmetric noise the rate times the share of classes that have a
    flip (half of CIFAR-10's: 0.4 asks 0.2), the classes being balanced as CIFAR's and our subsets are."""
    rate = float(rate or 0.0)
    if noise_type in ("none", "clean"):
        return 0.0
    if noise_type in ("symmetric", "instance"):
        return rate
    if noise_type == "asymmetric" and num_classes:
        try:
            return rate * len(asymmetric_mapping(num_classes)) / num_classes
        except ValueError:  # no mapping for this many classes
            return None
    return None


@dataclass(frozen=True)
class NoiseGap:
    """A run whose realised noise rate is more than NOISE_GAP off the asked one, and why, in one line."""
    realised: float
    asked: float
    line: str


def noise_gap(record) -> NoiseGap | None:
    """The gap of a run's record (jal.record.Record: its noise, realised rate, transition, subset and config), or
    None within NOISE_GAP or without a realised rate. Its line names the count rule that makes the gap, e.g.
    `symmetric 0.4 on 2,000 images realises 0.36: exact sampling flips int(0.4/9 x 200) = 8 images of each class
    to each other class; noise.sampling=per_sample draws per image`."""
    config = record.config or {}
    kind, rate, realised = record.noise_type, float(record.noise_rate or 0.0), record.realised_noise_rate
    classes = len(record.noise_transition) if record.noise_transition else config.get("dataset", {}).get("num_classes")
    asked = asked_noise_rate(kind, rate, classes)
    if realised is None or asked is None or abs(float(realised) - asked) <= NOISE_GAP + 1e-9:
        return None
    realised = float(realised)
    images = record.subset or config.get("dataset", {}).get("subset") or config.get("dataset", {}).get("train_size")
    sampling = config.get("noise", {}).get("sampling", "exact")  # records before the setting: exact
    per_class = images // classes if images and classes else None
    head = f"{kind} {rate:g}" + (f" on {images:,} images" if images else "") + f" realises {realised:.3g}"
    if kind == "asymmetric":
        head += f" where {asked:.3g} is asked ({rate:g} of the classes that flip)"
    if per_class and sampling == "exact" and kind == "symmetric":
        count = int(rate / (classes - 1) * per_class)
        why = (f"exact sampling flips int({rate:g}/{classes - 1} x {per_class:,}) = {count} images of each class to "
               "each other class; noise.sampling=per_sample draws per image")
    elif per_class and sampling == "exact" and kind == "asymmetric":
        why = (f"exact sampling flips int({rate:g} x {per_class:,}) = {int(rate * per_class)} images of each class "
               "that flips; noise.sampling=per_sample draws per image")
    elif sampling == "per_sample" and kind in KINDS:
        why = ("noise.sampling=per_sample draws each image's label, so the share flipped lands off the rate by "
               "chance; noise.sampling=exact flips fixed counts")
    elif kind == "instance":
        why = "instance-dependent noise draws each image's flip probability around the rate, not a fixed count"
    else:
        why = f"{realised:.1%} of its training labels changed, {asked:.1%} asked"
    return NoiseGap(realised, asked, f"{head}: {why}")


def read_label_file(path, what: str) -> dict[str, np.ndarray]:
    """The label arrays of an npz file, checked as jal.data.read_npz checks every data file, each a 1-D array
    of class indices of one common length; a one-line error names the file (FileNotFoundError: what goes where)."""
    from jal.data import read_npz  # jal.data imports torch: only when label files are read

    path = os.fspath(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: put the {what} there (the data directory is set by JAL_DATA_DIR)"
        ) from None
    except OSError:  # there, but not for this user: read_npz says so
        pass
    data = read_npz(path)
    lengths = {len(labels) if labels.ndim == 1 else None for labels in data.values()}
    for key, labels in data.items():
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(lengths) > 1:
            raise DataError(f"{path}: {key} is {labels.dtype} {labels.shape}; every array of a label file must be "
                             "1-D integer class indices, all of one length")
        if labels.size and labels.min() < 0:
            raise DataError(f"{path}: {key} holds label {labels.min()}; class indices start at 0")
    return data
