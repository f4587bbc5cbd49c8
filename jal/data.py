"""Datasets as arrays, and augmentation as a few batched tensor ops on the training device; the validation split a
run holds out of its training set.

The whole training set lives on the device as uint8 (150 MB for CIFAR): no DataLoader workers, no PIL,
no per-sample Python. A prepared `<data_dir>/<name>.npz` (x_train uint8 (N,32,32,3) HWC RGB, y_train,
x_test, y_test: the format of docs/protocol.md section 6) is used when present; otherwise torchvision
downloads the dataset into data_dir and the prepared file is written once. Every data file is checked once
as it is read (read_npz): a truncated, corrupt or malformed file, or one this user may not read, stops the run
with one line naming it.
"""

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from jal.errors import CannotWrite, ConfigError, DataError
from jal.util import atomic_save_npz, check_data_folder, unreadable


@dataclass
class ImageData:
    x_train: np.ndarray  # uint8 (N, 32, 32, 3)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray


# Size and sha256 of the published data files (docs/protocol.md section 6). A file of one of these names and
# sizes must be exactly those bytes; other files (a cifar10.npz prepared from torchvision's download, small
# test files) get the checks of their arrays only. Hashing 170 MB takes ~0.3 s: once per file per process.
PUBLISHED = {
    "cifar10.npz": (169596491, "f99f686590cd9363ccd6262c59f1e2f36efc314f4bbef2cb611b24bd15173c6f"),
    "cifar10n_labels.npz": (149520, "6024485a143efa682792c21d7f2adfdef5a374dce699bb2fcd4d62cd55cc4852"),
    "cifar100n_labels.npz": (84012, "f935c5f8a2cd06ac7fe83d6a31c49d157d78afdc53f88c6ed38cc0057d1a5ba9"),
    "cifar10_idn_labels.npz": (74577, "c0db2f17c1e4b4a3369dc514a58e22c75ad721c591478280adc544aa9d141d64"),
    "cifar100_idn_labels.npz": (126606, "f52be1708da21c9238d72835075c255c47998a6de090ac00b99a5eeed15189d1"),
}
_verified: set[tuple] = set()  # (path, size, mtime) of the published files hashed in this process
ELSEWHERE = "point JAL_DATA_DIR (data_dir) at a copy you can read"  # a data file this user may not read


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an npz file, read whole (zip checks each array's CRC as it reads it), and the file's
    sha256 when it is a published one. Raises DataError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(unreadable(path, err, "the file is truncated or corrupt; copy it again", ELSEWHERE)) from None
    stat = path.stat()
    size, expected = PUBLISHED.get(path.name, (None, None))
    if stat.st_size == size and (path, size, stat.st_mtime_ns) not in _verified:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != expected:
            raise DataError(f"{path} is corrupt: its sha256 is {digest}, the published file's {expected}; "
                            "copy it again")
        _verified.add((path, size, stat.st_mtime_ns))
    return arrays


def check_images(path: Path, arrays: dict[str, np.ndarray], num_classes: int) -> None:
    """x_train, y_train, x_test, y_test: uint8 (N, 32, 32, 3) images and N integer labels in [0, K)."""
    for split in ("train", "test"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None or y is None:
            raise DataError(f"{path} has no x_{split} or y_{split} (it has {', '.join(arrays)}): prepare it with "
                            "x_train, y_train, x_test, y_test, or delete it to download the dataset again")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise DataError(f"{path}: x_{split} is {x.dtype} {x.shape}, not uint8 (N, 32, 32, 3) HWC RGB images")
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
            raise DataError(f"{path}: y_{split} is {y.dtype} {y.shape}, not {len(x)} integer labels (one per image)")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{path}: y_{split} holds labels {y.min()}..{y.max()}, outside 0..{num_classes - 1} "
                            f"({num_classes} classes)")


def load_dataset(name: str, data_dir: str | Path, *, num_classes: int = 10, train_size: int = 256,
                 test_size: int = 128) -> ImageData:
    """CIFAR-10/100 from `<data_dir>/<name>.npz` (downloaded and prepared once if missing), or synthetic data."""
    if name == "synthetic":
        return synthetic_dataset(train_size, test_size, num_classes)
    if name not in ("cifar10", "cifar100"):
        raise ConfigError(f"unknown dataset {name!r}: choose one of cifar10, cifar100, synthetic")
    path = Path(data_dir) / f"{name}.npz"
    if not path.exists():
        _download_and_prepare(name, path)
    arrays = read_npz(path)
    check_images(path, arrays, num_classes)
    return ImageData(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                     arrays["y_test"].astype(np.int64))


def load_arrays(path: str | Path) -> ImageData:
    """A dataset of yours in one .npz (dataset=arrays), checked as its config was (jal.own_data.check_arrays);
    its test set is empty when the file holds none."""
    from jal.own_data import check_arrays, read_arrays

    path = Path(path).absolute()
    arrays = read_arrays(path)
    check_arrays(path, arrays)
    x_train = arrays["x_train"]
    x_test = arrays.get("x_test", np.zeros((0, *x_train.shape[1:]), np.uint8))
    y_test = arrays.get("y_test", np.zeros(0, np.int64))
    return ImageData(x_train, arrays["y_train"].astype(np.int64), x_test, y_test.astype(np.int64))


def check_fits(data: ImageData, device: torch.device, path) -> None:
    """A dataset of yours lives on the device as CIFAR does where its images take at most half of the GPU's free
    memory (the other half: the model and its activations); else one line saying what to do."""
    if device.type != "cuda":
        return
    size, free = data.x_train.nbytes + data.x_test.nbytes, torch.cuda.mem_get_info(device)[0]
    if size > free / 2:
        gib = lambda n: f"{n / 2**30:.1f} GiB"
        raise DataError(f"{path}: its images take {gib(size)}, more than half of the GPU's {gib(free)} free: train on "
                        "a dataset.subset of them, or save them as class folders (dataset=folder, read from disk a "
                        "batch at a time)")


def _download_and_prepare(name: str, path: Path) -> None:
    import torchvision

    check_data_folder(path)  # before the download: a folder that refuses the file says so, not a traceback
    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        train = cls(str(path.parent), train=True, download=True)
        test = cls(str(path.parent), train=False, download=True)
    except Exception as err:  # no network, no disk: say what to put where
        raise FileNotFoundError(
            f"{path} is missing and {name} could not be downloaded ({type(err).__name__}); put {name}.npz "
            f"(x_train, y_train, x_test, y_test) in {path.parent} or point JAL_DATA_DIR at a folder holding it"
        ) from None
    arrays = dict(x_train=train.data, y_train=np.asarray(train.targets, np.uint8),
                  x_test=test.data, y_test=np.asarray(test.targets, np.uint8))
    try:
        atomic_save_npz(path, **arrays)
    except CannotWrite as err:  # a full disk: its line names the folder; the fix names the setting
        raise err.with_fix("free space there, or point JAL_DATA_DIR (data_dir) at a folder with room") from None


def synthetic_dataset(train_size: int, test_size: int, num_classes: int, seed: int = 0) -> ImageData:
    """Random images whose class sets a faint colour offset: learnable, so smoke runs can beat chance."""
    rng = np.random.default_rng(seed)
    class_colour = rng.integers(-40, 41, size=(num_classes, 1, 1, 3))

    def make(n):
        labels = rng.integers(0, num_classes, size=n)
        images = rng.integers(60, 196, size=(n, 32, 32, 3)) + class_colour[labels]
        return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)

    x_train, y_train = make(train_size)
    x_test, y_test = make(test_size)
    return ImageData(x_train, y_train, x_test, y_test)


def balanced_subset(labels: np.ndarray, size: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` samples, size // K from each class, chosen with a seeded RNG."""
    per_class = size // num_classes
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ConfigError(f"dataset.subset={size} needs {per_class} images of class {c}, found {len(members)}")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def validation_rows(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Sorted positions of the samples a run holds out for validation (dataset.val_fraction): round(fraction * n)
    of its n, stratified by their labels (the given, noisy ones): class c gets floor(fraction * n_c), the rest go
    one each to the classes with the largest fractions left over (the lower class first), never the last image of
    a class; the samples are drawn with the run's seed on a stream of their own (not the noise's). The count
    depends on n and fraction alone, so the runs of a fusion hold out as many each."""
    if fraction <= 0:
        return np.zeros(0, np.int64)
    n = len(labels)
    total = int(np.floor(fraction * n + 0.5))
    counts = np.bincount(labels, minlength=num_classes)
    exact = fraction * counts
    quota = np.floor(exact).astype(np.int64)
    for c in np.argsort(-(exact - quota), kind="stable"):  # largest remainders first
        if quota.sum() == total:
            break
        if quota[c] + 1 < counts[c]:
            quota[c] += 1
    if total == 0 or quota.sum() != total:
        raise ConfigError(f"dataset.val_fraction={fraction} cannot hold out {total} of {n} training images, by class, "
                          "and leave every class some: raise it, or train on more images")
    rng = np.random.default_rng([seed, 1])
    picks = [rng.choice(np.flatnonzero(labels == c), quota[c], replace=False) for c in range(num_classes)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# On the device


def images_to_device(x: np.ndarray, device: torch.device) -> Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on the device (kept as uint8: 4x less memory than float)."""
    return torch.from_numpy(x).to(device).permute(0, 3, 1, 2).contiguous()


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The RNG of one epoch (its order and augmentation), a function of (seed, epoch) alone, so that a
    resumed run draws exactly what an uninterrupted one would."""
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)


def random_crop(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Random crop of the original size from the image zero-padded by `padding` on each side, per sample."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_rotation(x: Tensor, degrees: float, generator: torch.Generator) -> Tensor:
    """Rotate each image by an angle uniform in [-degrees, degrees] about its centre; nearest-neighbour
    sampling and zero fill, as torchvision's RandomRotation defaults."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * (degrees * torch.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augment(x: Tensor, generator: torch.Generator, rotation: float = 0.0) -> Tensor:
    """Training augmentation (docs/protocol.md section 1): crop with 4-pixel zero padding, flip, optional rotation."""
    x = random_flip(random_crop(x, generator), generator)
    if rotation > 0:
        x = random_rotation(x, rotation, generator)
    return x


def channel_stats(mean, std, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The dataset's per-channel mean and std (0-1 units) as (1, C, 1, 1) tensors in 0-255 units on the device,
    in the dtype the model computes in (normalize's output dtype). Made once per run: building them per batch
    would copy from the host, and so sync, every step."""
    as_tensor = lambda v: torch.tensor(v, dtype=dtype, device=device).view(1, -1, 1, 1) * 255
    return as_tensor(mean), as_tensor(std)


def normalize(x: Tensor, stats: tuple[Tensor, Tensor], channels_last: bool = True) -> Tensor:
    """uint8 (or float 0-255) images -> standardised with the dataset's mean and std, in the stats' dtype."""
    mean, std = stats
    x = (x.to(mean.dtype) - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
