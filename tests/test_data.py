"""The data: datasets read from their files (checked as they are read), balanced subsets, and the training
augmentation as batched tensor ops on the device, drawn from the epoch's generator."""

import numpy as np
import pytest
import torch
from conftest import compose_train, shared_data_dir, small_cifar10

from jal import data as jal_data
from jal import run as jal_run

# ---------------------------------------------------------------------------------------------------
# Augmentation on the device


def test_random_crop_is_a_shift_of_at_most_four_pixels_with_zero_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)  # no zeros in the images
    out = jal_data.random_crop(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[i, :, dy : dy + 32, dx : dx + 32], out[i])]
        assert len(matches) == 1
        dy, dx = matches[0]
        # every pixel that came from outside the image is zero, every other is the image's
        outside = torch.zeros(40, 40, dtype=torch.bool)
        outside[:4], outside[36:], outside[:, :4], outside[:, 36:] = True, True, True, True
        window = outside[dy : dy + 32, dx : dx + 32]
        assert (out[i][:, window] == 0).all() and (out[i][:, ~window] > 0).all()
    offsets = {tuple(torch.nonzero(out[i, 0] > 0).min(0).values.tolist()) for i in range(len(x))}
    assert len(offsets) > 10  # the offsets really vary


def test_random_flip_mirrors_about_half_the_images():
    x = torch.randint(0, 256, (400, 3, 32, 32), dtype=torch.uint8)
    out = jal_data.random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped | kept).all() and 150 < int(flipped.sum()) < 250


def test_random_rotation_preserves_the_centre_and_fills_zeros():
    x = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    out = jal_data.random_rotation(x, 20.0, torch.Generator().manual_seed(0))
    # rotation about the image centre: the four central pixels map onto the four central pixels
    centre = slice(15, 17)
    assert torch.equal(out[:, :, centre, centre].sort(-1).values.sort(-2).values.flatten(1).sort(1).values,
                       x[:, :, centre, centre].float().flatten(1).sort(1).values)
    corner_zero = (out[:, :, 0, 0] == 0).float().mean()
    assert corner_zero > 0.8  # a rotated corner samples outside the image: zero fill
    same = jal_data.random_rotation(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same, x.float())  # angle 0 is the identity


def test_augmentation_is_a_function_of_seed_and_epoch():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = jal_data.augment(x, jal_data.epoch_generator(123, 4, torch.device("cpu")), rotation=20)
    b = jal_data.augment(x, jal_data.epoch_generator(123, 4, torch.device("cpu")), rotation=20)
    c = jal_data.augment(x, jal_data.epoch_generator(123, 5, torch.device("cpu")), rotation=20)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------------
# Subsets


def test_balanced_subset_takes_equal_classes_deterministically():
    labels = np.repeat(np.arange(10), 50)
    idx = jal_data.balanced_subset(labels, 200, 10, seed=3)
    assert np.bincount(labels[idx]).tolist() == [20] * 10 and len(set(idx)) == 200
    assert np.array_equal(idx, jal_data.balanced_subset(labels, 200, 10, seed=3))
    assert not np.array_equal(idx, jal_data.balanced_subset(labels, 200, 10, seed=4))


# ---------------------------------------------------------------------------------------------------
# Data integrity: a data file is checked as it is read


def test_a_published_file_of_the_published_size_must_have_its_sha256(tmp_path, monkeypatch):
    path = tmp_path / "cifar10.npz"
    np.savez(path, **small_cifar10())
    size = path.stat().st_size
    monkeypatch.setitem(jal_data.PUBLISHED, "cifar10.npz", (size, "0" * 64))
    with pytest.raises(jal_data.DataError, match=f"{path} is corrupt: its sha256 is [0-9a-f]{{64}}, the published"):
        jal_data.load_dataset("cifar10", tmp_path)
    monkeypatch.setitem(jal_data.PUBLISHED, "cifar10.npz", (size + 1, "0" * 64))  # another size: arrays checked only
    assert len(jal_data.load_dataset("cifar10", tmp_path).y_train) == 20


def test_a_flipped_byte_inside_an_array_is_caught_by_the_zip_checksum(tmp_path):
    path = tmp_path / "cifar10.npz"
    np.savez(path, **small_cifar10())
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside x_train's data
    path.write_bytes(bytes(raw))
    with pytest.raises(jal_data.DataError, match="cifar10.npz is damaged .*corrupt"):
        jal_data.load_dataset("cifar10", tmp_path)


def test_missing_arrays_and_mismatched_lengths_are_named(tmp_path):
    good = small_cifar10()
    np.savez(tmp_path / "cifar10.npz", **{k: v for k, v in good.items() if k != "y_test"})
    with pytest.raises(jal_data.DataError, match="has no x_test or y_test"):
        jal_data.load_dataset("cifar10", tmp_path)
    np.savez(tmp_path / "cifar10.npz", **dict(good, y_test=good["y_test"][:-1]))
    with pytest.raises(jal_data.DataError, match=r"y_test is uint8 \(19,\), not 20 integer labels"):
        jal_data.load_dataset("cifar10", tmp_path)


@pytest.mark.skipif(shared_data_dir() is None, reason="needs cifar10.npz in JAL_DATA_DIR")
@pytest.mark.full  # reads the real files
def test_the_shared_files_are_the_published_ones():
    for name, (size, _) in jal_data.PUBLISHED.items():
        path = shared_data_dir() / name
        if path.exists():
            assert path.stat().st_size == size
            jal_data.read_npz(path)  # raises unless its sha256 is the published one


# ---------------------------------------------------------------------------------------------------
# Real data (skipped without cifar10.npz in JAL_DATA_DIR)


@pytest.mark.skipif(shared_data_dir() is None, reason="needs cifar10.npz in JAL_DATA_DIR")
@pytest.mark.full  # reads the real files
def test_real_cifar10_with_human_noise_uses_the_cifar10n_labels(tmp_path):
    data_dir = shared_data_dir()
    cfg = compose_train(["dataset=cifar10", "noise=human", "noise.labels=worst", "logger=none", "dataset.subset=100",
                         f"data_dir={data_dir}", f"out_root={tmp_path}"])
    data = jal_data.load_dataset("cifar10", data_dir)
    assert np.bincount(data.y_train).tolist() == [5000] * 10 and np.bincount(data.y_test).tolist() == [1000] * 10
    noisy = jal_run.make_labels(cfg, data, np.arange(len(data.y_train)))
    assert np.mean(noisy != data.y_train) == pytest.approx(0.4021, abs=5e-5)
