"""Tests for jal.noise: synthetic noise, instance-dependent noise, CIFAR-N / IDN label files."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jal.noise import (
    ASYMMETRIC_PAIRS,
    generate_instance_labels,
    load_human_labels,
    load_instance_labels,
    make_noisy_labels,
    noise_summary,
    transition_matrix,
)


def balanced_labels(num_classes, per_class, seed=0):
    """Shuffled labels with per_class samples of each class."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def confusion(clean, noisy, num_classes):
    """counts[i, j] = number of class-i samples labelled j."""
    return np.bincount(clean * num_classes + noisy, minlength=num_classes**2).reshape(num_classes, -1)


def expected_exact_counts(T, clean, num_classes):
    """Off-diagonal counts that exact sampling must realise: int(T[i, j] * n_i)."""
    class_sizes = np.bincount(clean, minlength=num_classes)
    expected = (T * class_sizes[:, None]).astype(np.int64)  # int() truncation, as in the spec
    np.fill_diagonal(expected, 0)
    return expected


# ---------------------------------------------------------------- transition matrix


def test_transition_matrix_symmetric_hand_values():
    T = transition_matrix("symmetric", 0.3, 4)
    expected = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.1, 0.7, 0.1, 0.1],
            [0.1, 0.1, 0.7, 0.1],
            [0.1, 0.1, 0.1, 0.7],
        ]
    )
    assert T.dtype == np.float64
    np.testing.assert_allclose(T, expected)


def test_transition_matrix_asymmetric_cifar10_hand_values():
    T = transition_matrix("asymmetric", 0.4, 10)
    expected = np.eye(10)
    for source, target in [(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)]:
        expected[source, source] = 0.6
        expected[source, target] = 0.4
    np.testing.assert_allclose(T, expected)


@pytest.mark.parametrize(
    "kind,num_classes", [("symmetric", 10), ("symmetric", 100), ("asymmetric", 10), ("asymmetric", 100)]
)
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.8])
def test_transition_matrix_rows_sum_to_one(kind, num_classes, rate):
    T = transition_matrix(kind, rate, num_classes)
    assert T.shape == (num_classes, num_classes)
    np.testing.assert_allclose(T.sum(axis=1), 1.0)
    assert (T >= 0).all()


# ---------------------------------------------------------------- exact sampling


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
# CIFAR-100 needs its real class size: int(rate / 99 * n_i) is 0 for small classes
@pytest.mark.parametrize("num_classes,per_class", [(10, 503), (100, 500)])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_exact_sampling_realises_exact_counts(kind, num_classes, per_class, rate):
    clean = balanced_labels(num_classes, per_class)
    noisy = make_noisy_labels(clean, kind, rate, num_classes, seed=1)
    T = transition_matrix(kind, rate, num_classes)
    expected = expected_exact_counts(T, clean, num_classes)
    realised = confusion(clean, noisy, num_classes)
    np.fill_diagonal(realised, 0)
    np.testing.assert_array_equal(realised, expected)  # each class i sends int(T_ij n_i) to j
    assert (clean != noisy).sum() == expected.sum()
    assert expected.sum() > 0


@settings(max_examples=30, deadline=None)
@given(
    class_sizes=st.lists(st.integers(0, 60), min_size=2, max_size=12),
    rate=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_exact_sampling_property_random_class_sizes(class_sizes, rate, seed):
    num_classes = len(class_sizes)
    clean = np.repeat(np.arange(num_classes), class_sizes)
    noisy = make_noisy_labels(clean, "symmetric", rate, num_classes, seed=seed)
    expected = expected_exact_counts(transition_matrix("symmetric", rate, num_classes), clean, num_classes)
    realised = confusion(clean, noisy, num_classes)
    np.fill_diagonal(realised, 0)
    np.testing.assert_array_equal(realised, expected)


def test_exact_sampling_with_uneven_classes_asymmetric():
    class_sizes = np.array([11, 0, 37, 5, 100, 64, 1, 9, 2, 73])
    clean = np.random.default_rng(3).permutation(np.repeat(np.arange(10), class_sizes))
    noisy = make_noisy_labels(clean, "asymmetric", 0.35, 10, seed=4)
    expected = expected_exact_counts(transition_matrix("asymmetric", 0.35, 10), clean, 10)
    realised = confusion(clean, noisy, 10)
    np.fill_diagonal(realised, 0)
    np.testing.assert_array_equal(realised, expected)


# ---------------------------------------------------------------- per-sample sampling


@pytest.mark.parametrize("kind,rate", [("symmetric", 0.4), ("symmetric", 0.8), ("asymmetric", 0.3)])
def test_per_sample_flip_count_within_three_sigma(kind, rate):
    num_classes = 10
    clean = balanced_labels(num_classes, 1000)
    noisy = make_noisy_labels(clean, kind, rate, num_classes, seed=5, sampling="per_sample")
    flip_probability = 1.0 - np.diag(transition_matrix(kind, rate, num_classes))[clean]
    mean = flip_probability.sum()
    sigma = np.sqrt((flip_probability * (1 - flip_probability)).sum())
    assert abs((clean != noisy).sum() - mean) < 3 * sigma
    # and the flips follow the matrix's support: no sample goes where T is zero
    T = transition_matrix(kind, rate, num_classes)
    assert (T[clean, noisy] > 0).all()


# ---------------------------------------------------------------- asymmetric structure


def test_asymmetric_cifar10_flips_only_along_pairs():
    clean = balanced_labels(10, 500)
    noisy = make_noisy_labels(clean, "asymmetric", 0.4, 10, seed=2)
    pairs = ASYMMETRIC_PAIRS[10]
    flipped = clean != noisy
    for source, target in zip(clean[flipped], noisy[flipped]):
        assert pairs[source] == target
    for untouched in (0, 1, 6, 7, 8):  # airplane, automobile, frog, horse, ship
        assert (noisy[clean == untouched] == untouched).all()
    for source in pairs:
        assert (noisy[clean == source] == pairs[source]).sum() == 200  # int(0.4 * 500)


def test_asymmetric_cifar100_flips_to_next_in_block_of_five():
    clean = balanced_labels(100, 20)
    noisy = make_noisy_labels(clean, "asymmetric", 0.5, 100, seed=2)
    flipped = clean != noisy
    assert flipped.sum() == 100 * 10
    source, target = clean[flipped], noisy[flipped]
    np.testing.assert_array_equal(target // 5, source // 5)  # same block
    np.testing.assert_array_equal(target % 5, (source % 5 + 1) % 5)  # next index, last -> first
    assert (noisy[clean == 4] != 4).sum() == 10 and set(noisy[clean == 4]) == {4, 0}


def test_asymmetric_coarse_variant_flips_within_true_superclass():
    # 12 classes in 4 superclasses of uneven size, interleaved in index order
    coarse = np.array([0, 1, 2, 0, 1, 2, 0, 3, 2, 0, 1, 2])
    members = {c: np.flatnonzero(coarse == c) for c in range(4)}
    successor = {}
    for m in members.values():
        successor.update({int(a): int(b) for a, b in zip(m, np.roll(m, -1)) if len(m) > 1})
    clean = balanced_labels(12, 100)
    noisy = make_noisy_labels(clean, "asymmetric", 0.3, 12, seed=8, coarse_labels=coarse)
    flipped = clean != noisy
    assert flipped.sum() == 11 * 30  # class 7 is alone in superclass 3 and stays clean
    assert (noisy[clean == 7] == 7).all()
    for source, target in zip(clean[flipped], noisy[flipped]):
        assert coarse[source] == coarse[target]
        assert successor[source] == target
    assert successor[9] == 0 and successor[11] == 2  # the last member wraps to the first


# ---------------------------------------------------------------- seeds and global RNG


@pytest.mark.parametrize("sampling", ["exact", "per_sample"])
def test_seeded_and_independent_of_global_rng(sampling):
    clean = balanced_labels(10, 200)
    np.random.seed(123)
    state_before = np.random.get_state()
    first = make_noisy_labels(clean, "symmetric", 0.4, 10, seed=7, sampling=sampling)
    state_after = np.random.get_state()
    assert state_before[0] == state_after[0]
    np.testing.assert_array_equal(state_before[1], state_after[1])
    assert state_before[2:] == state_after[2:]

    np.random.seed(999)  # a different global state must not change the result
    again = make_noisy_labels(clean, "symmetric", 0.4, 10, seed=7, sampling=sampling)
    other = make_noisy_labels(clean, "symmetric", 0.4, 10, seed=8, sampling=sampling)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_returns_new_int64_array_and_leaves_input_alone():
    clean = balanced_labels(10, 50).astype(np.uint8)
    original = clean.copy()
    noisy = make_noisy_labels(clean, "symmetric", 0.5, 10, seed=0)
    assert noisy.dtype == np.int64
    np.testing.assert_array_equal(clean, original)
    unchanged = make_noisy_labels(clean, "asymmetric", 0.0, 10, seed=0)
    np.testing.assert_array_equal(unchanged, clean)
    assert unchanged.dtype == np.int64 and not np.shares_memory(unchanged, clean)


# ---------------------------------------------------------------- instance-dependent generator


def test_generate_instance_labels_rate_range_and_seed():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5000, 3, 4, 4))  # flattened to D = 48 inside
    clean = rng.integers(0, 10, size=5000)
    for rate in (0.2, 0.4):
        noisy = generate_instance_labels(features, clean, rate, 10, seed=11)
        assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 10
        assert abs((noisy != clean).mean() - rate) < 0.03
    again = generate_instance_labels(features, clean, 0.4, 10, seed=11)
    other = generate_instance_labels(features, clean, 0.4, 10, seed=12)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)
    np.testing.assert_array_equal(generate_instance_labels(features, clean, 0.0, 10, seed=11), clean)


def test_generate_instance_labels_depends_on_features():
    # same class, same flip rate draw: the flipped-to class follows the projected feature
    rng = np.random.default_rng(1)
    clean = np.zeros(4000, dtype=np.int64)
    features = rng.normal(size=(4000, 8))
    noisy = generate_instance_labels(features, clean, 0.5, 5, seed=3)
    flipped = noisy != 0
    assert set(np.unique(noisy[flipped])) <= {1, 2, 3, 4}
    # the targets are not uniform over the other classes, as they would be for symmetric noise
    shares = np.bincount(noisy[flipped], minlength=5)[1:] / flipped.sum()
    assert shares.max() - shares.min() > 0.05


# ---------------------------------------------------------------- summary


def test_noise_summary_hand_example():
    clean = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    noisy = np.array([0, 1, 1, 2, 1, 0, 2, 2])
    summary = noise_summary(clean, noisy, 4)
    assert summary["flips"] == 4
    assert summary["rate"] == pytest.approx(0.5)
    expected = np.array(
        [
            [0.25, 0.5, 0.25, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],  # class 3 is absent
        ]
    )
    np.testing.assert_allclose(np.asarray(summary["transition"]), expected)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.2])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match=r"noise rate .* is outside \[0, 1\)"):
        make_noisy_labels(np.array([0, 1, 2]), "symmetric", rate, 3, seed=0)
    with pytest.raises(ValueError, match="outside"):
        generate_instance_labels(np.zeros((3, 2)), np.array([0, 1, 2]), rate, 3, seed=0)


def test_bad_labels_and_kinds():
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        make_noisy_labels(np.array([0, 10]), "symmetric", 0.2, 10, seed=0)
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        noise_summary(np.array([0, 1]), np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="no class mapping for 7 classes"):
        make_noisy_labels(np.arange(7), "asymmetric", 0.2, 7, seed=0)
    with pytest.raises(ValueError, match="no class mapping for 7 classes"):
        transition_matrix("asymmetric", 0.2, 7)
    with pytest.raises(ValueError, match="unknown noise kind"):
        make_noisy_labels(np.arange(3), "pairflip", 0.2, 3, seed=0)
    with pytest.raises(ValueError, match="unknown sampling"):
        make_noisy_labels(np.arange(3), "symmetric", 0.2, 3, seed=0, sampling="approx")


def test_bad_label_files(tmp_path):
    clean = np.array([0, 1, 2, 3], dtype=np.uint8)
    cifar10n = tmp_path / "cifar10n_labels.npz"
    np.savez(cifar10n, clean_label=clean, aggre_label=np.array([0, 1, 2, 2], dtype=np.uint8))
    np.testing.assert_array_equal(load_human_labels(cifar10n, "aggre", clean), [0, 1, 2, 2])
    with pytest.raises(ValueError, match="labels of the wrong length"):
        load_human_labels(cifar10n, "aggre", clean[:3])
    with pytest.raises(ValueError, match="do not match the dataset's order"):
        load_human_labels(cifar10n, "aggre", clean[::-1].copy())
    with pytest.raises(ValueError, match="use one of .*'aggre', 'worst'"):
        load_human_labels(cifar10n, "worse", clean)
    with pytest.raises(ValueError, match="provides"):
        load_human_labels(cifar10n, "noisy", clean)
    with pytest.raises(FileNotFoundError, match="not found: put the CIFAR-N labels"):
        load_human_labels(tmp_path / "missing.npz", "aggre", clean)

    idn = tmp_path / "idn.npz"
    np.savez(idn, **{"rate_0.2": clean, "rate_0.4": clean})
    assert load_instance_labels(idn, 0.4).dtype == np.int64
    with pytest.raises(ValueError, match=r"available rates are \[0.2, 0.4\]"):
        load_instance_labels(idn, 0.6)
    with pytest.raises(FileNotFoundError, match="instance-dependent"):
        load_instance_labels(tmp_path / "missing.npz", 0.2)
    assert len(load_instance_labels(idn, 0.2, num_samples=len(clean), num_classes=clean.max() + 1)) == len(clean)
    with pytest.raises(ValueError, match=f"labels of the wrong length: .* has {len(clean)} at rate 0.2, the "
                                         f"training set {len(clean) + 1}"):
        load_instance_labels(idn, 0.2, num_samples=len(clean) + 1)
    with pytest.raises(ValueError, match=f"holds class {clean.max()}, beyond the dataset's {clean.max()} classes"):
        load_instance_labels(idn, 0.2, num_classes=clean.max())


# ---------------------------------------------------------------- real data (skipped when absent)


def data_dir() -> Path:
    return Path(os.environ.get("JAL_DATA_DIR", ""))  # unset or empty: every real-data test skips


def require(name: str) -> Path:
    path = data_dir() / name
    if not data_dir().parts:
        pytest.skip(f"{name} needs JAL_DATA_DIR, which is not set")
    if not path.is_file():
        pytest.skip(f"{name} not found in JAL_DATA_DIR ({data_dir()})")
    return path


@pytest.fixture(scope="module")
def cifar10_train_labels():
    with np.load(require("cifar10.npz")) as data:  # lazy: only y_train is read
        return data["y_train"].astype(np.int64)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
def test_real_cifar10_idn_sets_realise_exact_rates(cifar10_train_labels, rate):
    noisy = load_instance_labels(require("cifar10_idn_labels.npz"), rate)
    assert len(noisy) == 50000
    assert (noisy != cifar10_train_labels).sum() == round(rate * 50000)


def test_real_cifar10n_rates_and_order_check(cifar10_train_labels):
    path = require("cifar10n_labels.npz")
    aggre = load_human_labels(path, "aggre", cifar10_train_labels)
    worst = load_human_labels(path, "worst", cifar10_train_labels)
    assert round(100 * noise_summary(cifar10_train_labels, aggre, 10)["rate"], 2) == 9.01
    assert round(100 * noise_summary(cifar10_train_labels, worst, 10)["rate"], 2) == 40.21
    permuted = np.random.default_rng(0).permutation(cifar10_train_labels)
    with pytest.raises(ValueError, match="do not match the dataset's order"):
        load_human_labels(path, "aggre", permuted)


# ---------------------------------------------------------------------------------------------------
# The realised rate against the asked one (jal.noise.noise_gap): what the run, the summaries and the tables say


def drawn_record(kind, rate, per_class, sampling="exact", num_classes=10):
    """The record of a run whose labels make_noisy_labels drew on per_class images of each class: its realised
    rate measured as the run measures it (noise_summary)."""
    from jal.record import Record, Status

    clean = balanced_labels(num_classes, per_class)
    noisy = make_noisy_labels(clean, kind, rate, num_classes, seed=123, sampling=sampling)
    summary = noise_summary(clean, noisy, num_classes)
    return Record(status=Status.FINISHED, noise_type=kind, noise_rate=rate, realised_noise_rate=summary["rate"],
                  noise_transition=summary["transition"].tolist(), subset=len(clean),
                  config={"noise": {"sampling": sampling}, "dataset": {"num_classes": num_classes}})


def test_a_gap_names_the_count_rule_that_makes_it():
    """Symmetric 0.4 on 200 images a class flips int(0.4/9 x 200) = 8 images to each of the 9 other classes: 72 of
    200, 36%, 4 pp under the 40% asked. On 1,000 a class it flips 44 (39.6%): within 1 pp, nothing said."""
    from jal.noise import noise_gap

    gap = noise_gap(drawn_record("symmetric", 0.4, 200))
    assert (gap.realised, gap.asked) == (pytest.approx(0.36, abs=1e-12), 0.4)
    assert gap.line == ("symmetric 0.4 on 2,000 images realises 0.36: exact sampling flips int(0.4/9 x 200) = 8 "
                        "images of each class to each other class; noise.sampling=per_sample draws per image")
    assert noise_gap(drawn_record("symmetric", 0.4, 1000)) is None


def test_asymmetric_noise_asks_the_rate_of_the_classes_that_flip():
    """CIFAR-10's asymmetric 0.4 flips 5 of 10 classes: it asks 0.2 of all labels, and on 200 a class realises it
    exactly (80 of each flipping class). 0.3 on 5 a class flips int(1.5) = 1 of each: 5 of 50 = 0.1, 0.15 asked."""
    from jal.noise import asked_noise_rate, noise_gap

    assert asked_noise_rate("asymmetric", 0.4, 10) == pytest.approx(0.2)
    assert asked_noise_rate("human", None, 10) is None and asked_noise_rate("none", 0.0, 10) == 0.0
    assert noise_gap(drawn_record("asymmetric", 0.4, 200)) is None
    gap = noise_gap(drawn_record("asymmetric", 0.3, 5))
    assert (gap.realised, gap.asked) == (pytest.approx(0.1), pytest.approx(0.15))
    assert gap.line == ("asymmetric 0.3 on 50 images realises 0.1 where 0.15 is asked (0.3 of the classes that "
                        "flip): exact sampling flips int(0.3 x 5) = 1 images of each class that flips; "
                        "noise.sampling=per_sample draws per image")


def test_per_sample_draws_are_said_to_land_off_by_chance():
    """Per-image draws on 20 images a class: the share flipped is a binomial draw, and seed 123 lands off 0.4 by
    more than 1 pp (checked, not assumed: the line is only said when it does)."""
    from jal.noise import noise_gap

    record = drawn_record("symmetric", 0.4, 20, sampling="per_sample")
    assert abs(record.realised_noise_rate - 0.4) > 0.01
    assert noise_gap(record).line.endswith(": noise.sampling=per_sample draws each image's label, so the share "
                                           "flipped lands off the rate by chance; noise.sampling=exact flips fixed "
                                           "counts")


@pytest.mark.full  # python -m jal.train
def test_a_single_run_off_its_rate_says_so_at_its_end(tmp_path):
    """`python -m jal.train` on 100 synthetic images (10 a class) with symmetric 0.4: int(0.4/9 x 10) = 0 flips, a
    clean run under a noisy name; its closing line is followed by the one that says why."""
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run(
        [sys.executable, "-m", "jal.train", "dataset=synthetic", "dataset.subset=100", "noise=symmetric",
         "trainer.epochs=1", "logger=none", "trainer.progress=false", f"out_root={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    closing = next(i for i, line in enumerate(lines) if "finished: test accuracy" in line)
    assert lines[closing + 1].endswith(
        "noise: symmetric 0.4 on 100 images realises 0: exact sampling flips int(0.4/9 x 10) = 0 images of each "
        "class to each other class; noise.sampling=per_sample draws per image (more than 1 pp off the asked rate)")
