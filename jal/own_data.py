"""Data a researcher brings (docs/your-data.md): a folder of images in class subfolders (torchvision's
ImageFolder layout, `dataset=folder dataset.root=DIR`) or images and labels in CIFAR's .npz convention
(`dataset=arrays dataset.path=FILE.npz`). Their schemas are here, and what a run must know of the data before
anything loads (its name, digest, number of classes, training-set size, image size, channel statistics) is read
from the data here, once per process, and handed to the configs by two resolvers, `${jal.folder:KEY,root,
test_root}` and `${jal.arrays:KEY,path}`. Reading the data checks it: a wrong layout, an empty class, a label out of
range, mismatched lengths or a non-uint8 array stop the config's composition with one line naming the file or
folder (DataError), before anything is written.

What the data is, is its digest (dataset.digest, in the run's identity): the sha256 of the arrays' contents, or of
a folder's listing (each image's path under its root and its size in bytes; contents are not read, so an image
rewritten in place at the same size goes unnoticed). Where it lies (dataset.path, root, test_root) is not the
experiment, as data_dir is not: a copy elsewhere resumes the same runs. A run's directory starts with the data's
name, `<file or folder name>-<first 8 digits of the digest>`, so two datasets of one name never share a
directory. Numpy and PIL only: composing and checking a config loads no torch.
"""

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from jal.config import DataError, DatasetConfig, require
from jal.util import unreadable

OWN_DATA = ("folder", "arrays")  # dataset.format: which loader reads the data
# torchvision's ImageFolder reads these (other files in the class folders are ignored, as it ignores them)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_LAYOUT = "torchvision's ImageFolder layout, one folder per class: <root>/<class name>/<image>.jpg (or .png ...)"
ARRAYS_LAYOUT = ("an .npz of x_train (uint8, N x H x W x 3, H = W) and y_train (N integer labels 0..K-1), and "
                 "optionally x_test and y_test")
STATS_SAMPLE = 256  # a folder's channel statistics: this many of its training images, evenly spaced
ELSEWHERE = "give the setting a copy you can read"  # a file of the data this user may not read


# ---------------------------------------------------------------------------------------------------
# Schemas


def is_own_data(dataset) -> bool:
    """Whether the dataset section (cfg.dataset) is a dataset of the user's."""
    return dataset.get("format") in OWN_DATA


@dataclass
class OwnDataConfig(DatasetConfig):
    """A dataset of the user's: name, digest, num_classes, train_size, mean and std come from the data (the
    configs' resolvers); the rest of the recipe is CIFAR-10's (configs/dataset/folder.yaml, arrays.yaml)."""
    format: str = MISSING  # folder or arrays
    digest: str = MISSING  # what the data is: the experiment's, where the path is not
    image_size: int = 32   # the side of the square images the model sees

    def __post_init__(self):
        super().__post_init__()
        require(self.format in OWN_DATA, "format", self.format, f"is not {' or '.join(OWN_DATA)}", "folder")
        require(self.image_size >= 8, "image_size", self.image_size, "must be >= 8 pixels", 32)


@dataclass
class ArraysDatasetConfig(OwnDataConfig):
    """dataset=arrays: kept on the device and augmented there, as CIFAR is (jal/data.py)."""
    path: Optional[str] = None


@dataclass
class FolderDatasetConfig(OwnDataConfig):
    """dataset=folder: decoded and augmented by DataLoader workers, as WebVision and Clothing1M (jal/real_world.py):
    each image resized to resize x resize, then cropped to image_size (random crop and flip in training, the
    centre in evaluation)."""
    root: Optional[str] = None
    test_root: Optional[str] = None
    resize: int = 36
    workers: int = 4

    def __post_init__(self):
        super().__post_init__()
        require(self.image_size <= self.resize, "image_size", self.image_size,
                f"must be <= resize={self.resize} (images are resized, then cropped to image_size)", self.resize)
        require(self.workers >= 0, "workers", self.workers, "must be >= 0 (0: decode in the training process)", 4)


SCHEMAS = {"dataset_arrays": ArraysDatasetConfig, "dataset_folder": FolderDatasetConfig}  # as jal.config.SCHEMAS
for _name, _schema in SCHEMAS.items():
    ConfigStore.instance().store(group="schema", name=_name, node=_schema)


# ---------------------------------------------------------------------------------------------------
# What the data is


@dataclass(frozen=True)
class Described:
    """What a run must know of a dataset of the user's before it loads, and (a folder) its listing."""
    name: str          # <stem>-<digest[:8]>: the cell's dataset and the first part of its directory
    digest: str        # 16 hex digits of a sha256 of the data
    num_classes: int
    train_size: int
    image_size: int | None  # arrays: the images' side; a folder: its images vary (dataset.image_size decides)
    mean: tuple        # per channel, 0-1 units, of the training images
    std: tuple
    classes: tuple = ()     # a folder's class names (label i: classes[i])
    files: tuple = ()       # a folder's training images, relative to root, in ImageFolder's order
    labels: tuple = ()      # their labels
    test_files: tuple = ()  # relative to test_root
    test_labels: tuple = ()


GENERIC_NAMES = ("train", "training")  # a folder named so is named by the folder above it: toy/train -> toy


def data_name(location: str, digest: str) -> str:
    """`<stem>-<digest[:8]>`: the file's or folder's name (a generic one, its parent's), and what the data is."""
    path = Path(location).resolve()
    stem = path.parent.name if path.name.lower() in GENERIC_NAMES else path.name
    stem = stem[: -len(".npz")] if stem.endswith(".npz") else stem
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', stem) or 'data'}-{digest[:8]}"


def channel_statistics(images) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0-1 units, 4 decimals) of uint8 HWC images (an array, or a list of arrays of
    any sizes), from exact integer sums: the same on every machine."""
    total, squares, count = np.zeros(3, np.int64), np.zeros(3, np.int64), 0
    chunks = (images[i : i + 1024] for i in range(0, len(images), 1024)) if isinstance(images, np.ndarray) else (
        [image] for image in images)
    for chunk in chunks:
        for x in chunk:
            pixels = x.reshape(-1, 3).astype(np.int64)
            total += pixels.sum(0)
            squares += (pixels * pixels).sum(0)
            count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple(round(float(v) / 255, 4) for v in mean), tuple(round(float(v) / 255, 4) for v in std)


# ---------------------------------------------------------------------------------------------------
# Arrays


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        raise DataError(f"dataset.path={path} is a folder: for class folders, dataset=folder dataset.root={path}")
    if not path.exists():
        raise DataError(f"{path} is missing: dataset.path must be {ARRAYS_LAYOUT}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except Exception as err:  # not a zip, a cut file, a pickled array
        raise DataError(unreadable(path, err, f"dataset.path must be {ARRAYS_LAYOUT}", ELSEWHERE)) from None


def check_arrays(path: Path, arrays: dict) -> int:
    """The number of classes of x_train, y_train (and x_test, y_test), after checking them; DataError names
    the file and what is wrong."""
    has = ", ".join(arrays) or "no arrays"
    if "x_train" not in arrays or "y_train" not in arrays:
        raise DataError(f"{path} has no x_train or y_train (it has {has}): dataset.path must be {ARRAYS_LAYOUT}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path} has one of x_test and y_test without the other (it has {has}): give both or "
                        "neither")
    size = None
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise DataError(f"{path}: x_{split} is {x.dtype}, not uint8: store 0-255 pixels as uint8 (floats in "
                            "[0, 1]: (x * 255).round().astype(np.uint8))")
        if x.ndim == 4 and x.shape[1] == 3 and x.shape[3] != 3:
            raise DataError(f"{path}: x_{split} is {x.shape}, channels first: store HWC, x.transpose(0, 2, 3, 1)")
        if x.ndim != 4 or x.shape[3] != 3:
            raise DataError(f"{path}: x_{split} is {x.shape}, not (N, H, W, 3) RGB images (grey (N, H, W): "
                            "np.repeat(x[..., None], 3, -1))")
        if x.shape[1] != x.shape[2] or x.shape[1] < 8 or size not in (None, x.shape[1]):
            raise DataError(f"{path}: x_{split} holds {x.shape[1]} x {x.shape[2]} images: they must be square, of "
                            "one size for training and test, at least 8 pixels: crop or pad them")
        size = x.shape[1]
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{path}: y_{split} is {y.dtype} {y.shape}, not a vector of integer labels")
        if len(y) != len(x):
            raise DataError(f"{path}: y_{split} holds {len(y)} labels for the {len(x)} images of x_{split}: one "
                            "label per image")
    x, y = arrays["x_train"], arrays["y_train"]
    if not len(y):
        raise DataError(f"{path}: x_train holds no images")
    if y.min() < 0:
        raise DataError(f"{path}: y_train holds label {y.min()}: labels are class numbers 0..K-1")
    k = int(y.max()) + 1
    if empty := sorted(set(range(k)) - set(np.unique(y).tolist())):
        raise DataError(f"{path}: class {empty[0]} has no training image (y_train holds labels 0..{k - 1}, the "
                        f"number of classes read from it): number the classes 0..K-1 without gaps")
    if k < 2:
        raise DataError(f"{path}: y_train holds one class: a classifier needs at least 2")
    if "y_test" in arrays and len(y_test := arrays["y_test"]) and (y_test.min() < 0 or y_test.max() >= k):
        raise DataError(f"{path}: y_test holds labels {y_test.min()}..{y_test.max()}, outside y_train's classes "
                        f"0..{k - 1}")
    return k


def describe_arrays(path) -> Described:
    path = Path(path).absolute()
    stat = path.stat() if path.is_file() else None
    return _describe_arrays(path, stat and (stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=8)
def _describe_arrays(path: Path, version) -> Described:
    arrays = read_arrays(path)
    k = check_arrays(path, arrays)
    digest = hashlib.sha256()
    for key in ("x_train", "y_train", "x_test", "y_test"):  # the contents, not the file: compressed or not, one
        if key in arrays:
            value = arrays[key].astype(np.int64) if key.startswith("y") else arrays[key]
            digest.update(f"{key} {value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    digest = digest.hexdigest()[:16]
    x = arrays["x_train"]
    mean, std = channel_statistics(x)
    if min(std) == 0:
        raise DataError(f"{path}: a channel of x_train is constant (std {std}): the images cannot be normalised")
    return Described(name=data_name(str(path), digest), digest=digest, num_classes=k, train_size=len(x),
                     image_size=x.shape[1], mean=mean, std=std)


# ---------------------------------------------------------------------------------------------------
# A folder in ImageFolder's layout


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def class_folders(root: Path, setting: str) -> list[str]:
    """The class folders' names, sorted; DataError for a root that is not a folder of class folders."""
    if root.is_file():
        raise DataError(f"{setting}={root} is a file, not a folder (an .npz: dataset=arrays dataset.path={root})")
    if not root.exists():
        raise DataError(f"{root} is missing: {setting} must follow {FOLDER_LAYOUT}")
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as err:
        raise DataError(unreadable(root, err, f"{setting} must follow {FOLDER_LAYOUT}", ELSEWHERE)) from None
    loose = [e.name for e in entries if e.is_file() and is_image(e.name)]
    if loose:
        raise DataError(f"{root} holds {len(loose)} image{'s' * (len(loose) > 1)} outside any class folder (the "
                        f"first: {loose[0]}): move each into its class's folder ({FOLDER_LAYOUT})")
    return [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]


def images_under(folder: Path, root: Path) -> list[str]:
    """The images under a class folder (its subfolders too), relative to root, in ImageFolder's order."""
    found = []
    for where, folders, names in sorted(os.walk(folder, followlinks=True)):
        folders.sort()
        found += [os.path.relpath(os.path.join(where, n), root) for n in sorted(names) if is_image(n)]
    return found


def describe_folder(root, test_root=None) -> Described:
    root, test_root = Path(root).absolute(), test_root and Path(test_root).absolute()

    def version(folder):  # a folder and its class folders as they are now: a changed one is read again
        try:
            return tuple((e.name, e.stat().st_mtime_ns) for e in os.scandir(folder)) + (folder.stat().st_mtime_ns,)
        except OSError:
            return None

    return _describe_folder(root, test_root, version(root), test_root and version(test_root))


@lru_cache(maxsize=8)
def _describe_folder(root: Path, test_root: Path | None, version, test_version) -> Described:
    classes = class_folders(root, "dataset.root")
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder{'s' * (len(classes) != 1)} "
                        f"({', '.join(classes) or 'none'}): a classifier needs at least 2 ({FOLDER_LAYOUT})")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = images_under(root / name, root)
        if not found:
            raise DataError(f"{root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}): an empty class; add "
                            "its images or remove the folder")
        files += found
        labels += [label] * len(found)
    test_files, test_labels = [], []
    if test_root is not None:
        test_classes = class_folders(test_root, "dataset.test_root")
        if unknown := sorted(set(test_classes) - set(classes)):
            raise DataError(f"{test_root} has class folders that {root} has not ({', '.join(unknown[:3])}): the "
                            "test classes are matched to the training classes by name")
        for name in test_classes:
            found = images_under(test_root / name, test_root)
            test_files += found
            test_labels += [classes.index(name)] * len(found)
        if not test_files:
            raise DataError(f"{test_root} holds no images in its class folders ({FOLDER_LAYOUT})")
    digest = hashlib.sha256()
    for top, listing in ((root, files), (test_root, test_files)):
        for relative in listing:
            digest.update(f"{relative}\t{(top / relative).stat().st_size}\n".encode())
        digest.update(b"test\n")
    digest = digest.hexdigest()[:16]
    sample = np.unique(np.linspace(0, len(files) - 1, min(STATS_SAMPLE, len(files))).round().astype(int))
    mean, std = channel_statistics([decoded(root / files[i]) for i in sample])
    return Described(name=data_name(str(root), digest), digest=digest, num_classes=len(classes),
                     train_size=len(files), image_size=None, mean=mean, std=std, classes=tuple(classes),
                     files=tuple(files), labels=tuple(labels), test_files=tuple(test_files),
                     test_labels=tuple(test_labels))


def decoded(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB, by PIL at its full size (for its channel statistics)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise DataError(unreadable(path, err, "it is not an image PIL can read: replace or remove it",
                                   ELSEWHERE)) from None


# ---------------------------------------------------------------------------------------------------
# The resolvers the configs call


FIELDS = ("name", "digest", "num_classes", "train_size", "image_size", "mean", "std")


def _field(described: Described, key: str):
    if key not in FIELDS:
        raise DataError(f"no field {key!r} of the data: one of {', '.join(FIELDS)}")
    value = getattr(described, key)
    return list(value) if isinstance(value, tuple) else value


def _arrays_resolver(key: str, path) -> object:
    if path is None:
        raise DataError(f"dataset=arrays needs dataset.path=FILE.npz: {ARRAYS_LAYOUT}")
    return _field(describe_arrays(path), key)


def _folder_resolver(key: str, root, test_root) -> object:
    if root is None:
        raise DataError(f"dataset=folder needs dataset.root=DIR: {FOLDER_LAYOUT}")
    return _field(describe_folder(root, test_root), key)


OmegaConf.register_new_resolver("jal.arrays", _arrays_resolver, replace=True)
OmegaConf.register_new_resolver("jal.folder", _folder_resolver, replace=True)
