"""The real-world datasets, read from the folders their owners ship: mini-WebVision (the first 50 classes of
WebVision 1.0's Google images) tested on WebVision's validation set and on ILSVRC12's validation images of the
same classes, and Clothing1M (docs/protocol.md section 7); and a folder of yours (dataset=folder), read the same
way. Too big for the device, they stay image files: DataLoader workers decode and augment each batch (uint8, so
a quarter of float's bytes cross to the device), the device normalises it. FileTrainingData is the in-memory
TrainingData's sibling (jal/step.py): the one training loop asks either for an epoch of batches, and FileTests
for the evaluation's accuracies.

Every draw is a function of (seed, epoch) alone, as on CIFAR: the epoch's order, and one seed per position in
it from which the worker that gets the image draws its crop, flip and colour. So the images a step sees do not
depend on the number of workers, and a resumed run sees what an uninterrupted one would.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from jal import distributed
from jal.config import LAYOUTS, REAL_WORLD, missing_line
from jal.data import balanced_subset, normalize
from jal.errors import DataError
from jal.own_data import describe_folder
from jal.util import unreadable

ELSEWHERE = "give dataset.root a copy you can read"  # a file of the dataset this user may not read


def is_real_world(dataset) -> bool:
    """Whether the dataset section (cfg.dataset) is WebVision's or Clothing1M's."""
    return dataset.name in REAL_WORLD


VALIDATION = "val"  # the split a run holds out of its training set (dataset.val_fraction): scored top-1 only


def require_file(path: Path, layout: str, what: str = "") -> Path:
    if not path.exists():
        raise DataError(missing_line(path, layout, what))
    return path


def read_lines(path: Path, layout: str) -> list[str]:
    try:
        return require_file(path, layout).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(unreadable(path, err, f"copy it again ({LAYOUTS[layout]})", ELSEWHERE)) from None


def read_labelled(path: Path, layout: str) -> list[tuple[str, int]]:
    """`relative/path label` per line (WebVision's file lists, Clothing1M's label files)."""
    pairs = []
    for n, line in enumerate(read_lines(path, layout), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path} line {n} is {line!r}, not `<image path> <label>`: the file is damaged; "
                            f"copy it again ({LAYOUTS[layout]})")
        pairs.append((parts[0], int(parts[1])))
    return pairs


@dataclass
class Split:
    """One split's images (absolute paths) and labels."""
    paths: np.ndarray  # str
    labels: np.ndarray  # int64


def split_of(root: Path, pairs: list, layout: str) -> Split:
    paths = np.array([str(root / p) for p, _ in pairs])
    for path in {paths[0], paths[-1]} if len(paths) else ():  # a folder not unpacked shows at either end
        require_file(Path(path), layout, " (an image its file list names)")
    return Split(paths, np.array([label for _, label in pairs], dtype=np.int64))


def load_webvision(root: Path, imagenet_root: Path, num_classes: int) -> tuple[Split, dict[str, Split]]:
    """mini-WebVision: the Google images of the first `num_classes` classes, the WebVision validation images of
    those classes, and ILSVRC12's validation images of their synsets (WebVision's class i is synsets.txt's
    line i)."""
    info = root / "info"
    train = [(p, y) for p, y in read_labelled(info / "train_filelist_google.txt", "webvision") if y < num_classes]
    val = [(f"val_images_256/{p}", y) for p, y in read_labelled(info / "val_filelist.txt", "webvision")
           if y < num_classes]
    synsets = [line.split()[0] for line in read_lines(info / "synsets.txt", "webvision") if line.strip()]
    if not train or not val or len(synsets) < num_classes:
        raise DataError(f"{info} lists {len(train)} training and {len(val)} validation images and {len(synsets)} "
                        f"synsets of the first {num_classes} classes: the file lists are incomplete; copy "
                        "info/ again from WebVision 1.0")
    imagenet = []
    for label, wnid in enumerate(synsets[:num_classes]):
        folder = require_file(imagenet_root / "val" / wnid, "imagenet", f" (class {label}, synset {wnid})")
        imagenet += [(str(p.relative_to(imagenet_root)), label) for p in sorted(folder.iterdir())]
    return (split_of(root, train, "webvision"),
            dict(test=split_of(root, val, "webvision"), imagenet=split_of(imagenet_root, imagenet, "imagenet")))


def load_clothing1m(root: Path) -> tuple[Split, dict[str, Split]]:
    """Clothing1M: the noisy training keys with their noisy labels (every one each epoch, as the reference's
    loader draws them), the clean test keys with their clean labels."""
    notes = root / "annotations"

    def labelled(keys_file: str, labels_file: str) -> list[tuple[str, int]]:
        labels = dict(read_labelled(notes / labels_file, "clothing1m"))
        keys = [key for key in read_lines(notes / keys_file, "clothing1m") if key.strip()]
        if missing := [key for key in keys if key not in labels]:
            raise DataError(f"{notes / labels_file} has no label for {len(missing)} keys of {keys_file} (the first: "
                            f"{missing[0]}): the annotations are of different releases; copy them again")
        return [(key, labels[key]) for key in keys]

    train = labelled("noisy_train_key_list.txt", "noisy_label_kv.txt")
    test = labelled("clean_test_key_list.txt", "clean_label_kv.txt")
    return split_of(root, train, "clothing1m"), dict(test=split_of(root, test, "clothing1m"))


def read_folder(dataset) -> tuple[Split, dict[str, Split]]:
    """A folder of yours (the dataset section of dataset=folder; listed and checked by
    jal.own_data.describe_folder): its training images with their given labels, and its test images (`test`, a
    class-balanced dataset.test_subset of them where asked) when dataset.test_root names a folder."""
    listed = describe_folder(dataset.root, dataset.test_root)
    split = lambda root, files, labels: Split(np.array([str(Path(root).absolute() / f) for f in files], dtype=str),
                                              np.array(labels, dtype=np.int64))
    train, tests = split(dataset.root, listed.files, listed.labels), {}
    if dataset.test_root:
        test = split(dataset.test_root, listed.test_files, listed.test_labels)
        if dataset.test_subset:
            keep = balanced_subset(test.labels, dataset.test_subset, dataset.num_classes, seed=0)
            test = Split(test.paths[keep], test.labels[keep])
        tests["test"] = test
    return train, tests


def load_real_world(dataset) -> tuple[Split, dict[str, Split]]:
    """The training split and the test splits (the first is the reported one) of a real-world dataset (its
    section, cfg.dataset)."""
    if dataset.name == "webvision":
        return load_webvision(Path(dataset.root), Path(dataset.imagenet_root), dataset.num_classes)
    return load_clothing1m(Path(dataset.root))


# ---------------------------------------------------------------------------------------------------
# Decoding and augmenting, in the DataLoader's workers


def transforms_of(name: str, size: int, resize: int, train: bool):
    """The reference's torchvision transforms (its datasets/transformers.py), on uint8 tensors: WebVision trains
    on a random resized crop, flip and colour jitter and tests on the centre crop of the image resized to
    `resize` on its short side; Clothing1M, and a folder of yours (any other name), resize to resize x resize,
    then crop (randomly, or the centre) and flip. Normalisation is left to the device."""
    from torchvision.transforms import v2

    if name == "webvision":
        if train:
            return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
                               v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)])
        return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size)])
    crop = v2.RandomCrop(size) if train else v2.CenterCrop(size)
    steps = [v2.Resize((resize, resize), antialias=True), crop] + ([v2.RandomHorizontalFlip()] if train else [])
    return v2.Compose(steps)


def decode(path: str) -> torch.Tensor:
    """An image file as uint8 (3, H, W) RGB: torchvision's decoder (libjpeg-turbo), or PIL for what it cannot
    read (web images named .jpg that are PNG, GIF or CMYK JPEG)."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        data = read_file(path)
    except RuntimeError:
        try:
            open(path, "rb").close()
        except PermissionError as err:  # there, but not for this user: not missing, not damaged
            raise DataError(unreadable(path, err, "copy it again", ELSEWHERE)) from None
        except OSError:
            pass
        raise DataError(f"{path} cannot be read: an image its file list names is missing or unreadable; "
                        "copy the dataset's images again") from None
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:
        from PIL import Image

        try:
            with Image.open(path) as image:
                return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        except OSError as err:
            raise DataError(f"{path} is not an image ({err}): copy it again") from None


class ImageFiles(Dataset):
    """A split's images, each decoded and transformed when asked for by (index, seed): the seed fixes its
    random transform. Items are (uint8 image, index)."""

    def __init__(self, split: Split, transform):
        self.paths, self.transform = split.paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, item):
        index, seed = item
        image = decode(str(self.paths[index]))
        with torch.random.fork_rng(devices=[]):  # the workers' RNG, or the main process's left as it was
            torch.manual_seed(seed)
            return self.transform(image), index


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> list:
    """The epoch's batches of (index, seed) items, each with its loss weight (jal.distributed.batch_part), for
    one of `world_size` processes, drawn from `generator` (on
    the CPU, seeded as the run's epoch generator: jal.data.epoch_generator). The order is a permutation of all
    n; global batch j is order[j*B:(j+1)*B]; rank r of N takes its slice [r*b//N:(r+1)*b//N] (b = B but for a
    last, shorter batch); each position in the order has its seed for the image's augmentation. A last batch
    that would leave a rank one image (BatchNorm cannot train on one) is dropped, as on CIFAR
    (jal.step.batch_starts)."""
    order = torch.randperm(n, generator=generator).tolist()
    seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()  # one per position in the order
    batches = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        if b // world_size < 2 and start > 0:
            break
        part, weight = distributed.batch_part(b, rank, world_size)
        batches.append(([(order[j], seeds[j]) for j in range(start, start + b)[part]], weight))
    return batches


def loader(images: ImageFiles, batches, workers: int, device: torch.device) -> DataLoader:
    """The batches of `images` decoded by `workers` processes (dataset.workers; 0: in this process)."""
    return DataLoader(images, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None, persistent_workers=False)


# ---------------------------------------------------------------------------------------------------
# The sources the training loop and the evaluation read


@dataclass
class FileTrainingData:
    """A real-world training set as the training loop reads it: labels on the device, (1, n) as the in-memory
    TrainingData's (K = 1: a real-world run trains alone), images from the files an epoch at a time, decoded by
    `workers` DataLoader processes (dataset.workers)."""
    images: ImageFiles
    y_noisy: torch.Tensor
    y_clean: torch.Tensor
    stats: tuple
    workers: int

    def select(self, keep: list[int]) -> "FileTrainingData":
        return FileTrainingData(self.images, self.y_noisy[keep], self.y_clean[keep], self.stats, self.workers)

    def epoch_batches(self, generators: list, settings, max_steps: int | None = None):
        """([indices on the device], [normalised images], loss weight) per step, in the order drawn by a CPU
        generator seeded as the run's epoch generator (generators[0]), so the epoch is a function of (seed,
        epoch) alone; across processes, this rank's part of each global batch (jal.distributed). `settings`: the
        run's jal.step.StepSettings (its batch_size and channels_last)."""
        device, n, size = self.y_noisy.device, self.y_noisy.shape[1], distributed.size()
        generator = torch.Generator().manual_seed(generators[0].initial_seed())
        parts = epoch_batches(n, settings.batch_size, generator, distributed.rank(), size)[:max_steps]
        batches, weights = [batch for batch, _ in parts], [weight for _, weight in parts]
        for (images, index), weight in zip(loader(self.images, batches, self.workers, device), weights):
            images = normalize(images.to(device, non_blocking=True), self.stats, settings.channels_last)
            yield [index.to(device, non_blocking=True)], [images], weight


@dataclass
class FileTests:
    """The test splits (WebVision: its validation set `test` and ILSVRC12's `imagenet`; Clothing1M and a folder of
    yours: `test`), and a folder's validation split (`val`: its held-out training images, against their given
    labels), decoded by `workers` DataLoader processes (dataset.workers)."""
    splits: dict  # name -> (ImageFiles, labels on the device)
    workers: int

    def __len__(self):  # the reported split's size (0: a folder of yours without a test folder)
        return len(self.splits["test"][1]) if "test" in self.splits else 0

    @torch.no_grad()
    def accuracies(self, fusion, stats, settings, precision: str) -> list[dict]:
        """Top-1 and top-5 accuracy (percent) on every split: test_acc, test_acc_top5, imagenet_acc, ...
        `settings`: the run's jal.step.StepSettings (its eval_batch_size and channels_last)."""
        fusion.set_training(False)
        result = {}
        for name, (images, labels) in self.splits.items():
            device, top1, top5 = labels.device, 0, 0
            part = distributed.test_part(len(labels))  # across processes: this rank's part, the counts summed
            batches = [[(i, 0) for i in range(s, min(s + settings.eval_batch_size, part.stop))]
                       for s in range(part.start, part.stop, settings.eval_batch_size)]
            for x, index in loader(images, batches, self.workers, device):
                x = normalize(x.to(device, non_blocking=True), stats, settings.channels_last)
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    logits = fusion(x)[0]
                hits = logits.topk(min(5, logits.shape[-1]), -1).indices == labels[index.to(device)][:, None]
                top1, top5 = top1 + hits[:, 0].sum(), top5 + hits.any(-1).sum()
            top1, top5 = distributed.summed(torch.tensor([int(top1), int(top5)], device=device)).tolist()
            result[f"{name}_acc"] = 100.0 * top1 / len(labels)
            if name != VALIDATION:
                result[f"{name}_acc_top5"] = 100.0 * top5 / len(labels)
        return [result]


def load_files(dataset, device: torch.device, stats) -> tuple[FileTrainingData, FileTests, np.ndarray]:
    """The training source, the test splits, and the training labels (numpy) of a real-world run (its dataset
    section, cfg.dataset)."""
    train, tests = load_real_world(dataset)
    labels = torch.from_numpy(train.labels).to(device)[None]
    transform = lambda for_training: transforms_of(dataset.name, dataset.image_size, dataset.resize, for_training)
    training = FileTrainingData(ImageFiles(train, transform(True)), labels, labels, stats, dataset.workers)
    test_transform = transform(False)
    splits = {name: (ImageFiles(split, test_transform), torch.from_numpy(split.labels).to(device))
              for name, split in tests.items()}
    return training, FileTests(splits, dataset.workers), train.labels




def folder_sources(dataset, device: torch.device, stats, train: Split, tests: dict, rows, noisy, clean, val_rows,
                   val_labels) -> tuple[FileTrainingData, FileTests, None]:
    """A folder's training source (the rows it trains on, with their noisy and clean labels: jal.run.label_member)
    and what each evaluated epoch scores: its test split, and the held-out rows, unaugmented, against their given
    labels; `dataset`: the folder's dataset section (cfg.dataset)."""
    on_device = lambda labels: torch.from_numpy(labels).to(device)
    transform = lambda for_training: transforms_of("folder", dataset.image_size, dataset.resize, for_training)
    images = ImageFiles(Split(train.paths[rows], noisy), transform(True))
    training = FileTrainingData(images, on_device(noisy)[None], on_device(clean)[None], stats, dataset.workers)
    evaluation = transform(False)
    splits = {name: (ImageFiles(split, evaluation), on_device(split.labels)) for name, split in tests.items()}
    if len(val_rows):
        splits[VALIDATION] = (ImageFiles(Split(train.paths[val_rows], val_labels), evaluation), on_device(val_labels))
    return training, FileTests(splits, dataset.workers), None
