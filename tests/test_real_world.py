"""The real-world datasets without the data: stand-in folders in each dataset's exact layout (a few dozen tiny
JPEGs, the owners' file lists) go through the real loaders; both datasets train end to end on them; a missing
file stops the run in one line; the recipes' values are the reference's."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, compose_train
from PIL import Image

from jal import train as jal_train
from jal.data import DataError, epoch_generator
from jal.errors import ConfigError
from jal.real_world import ImageFiles, epoch_batches, load_clothing1m, load_webvision, loader, transforms_of

CLASSES = 4  # the stand-ins' classes (the configs' 50 and 14 are overridden: fewer folders to write)


def write_image(path, colour, size=(40, 30), fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    pixels = np.clip(rng.integers(-30, 31, (size[1], size[0], 3)) + np.array(colour), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, fmt)


COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200), (200, 40, 200)]


def make_webvision(root, per_class=6):
    """WebVision 1.0's layout: info/ file lists (labels up to 5, of which the first CLASSES are used), the Google
    images under google/q####/, the validation images under val_images_256/; ILSVRC12's validation images one
    folder per synset under imagenet/val/. One training 'jpg' is a PNG (web images are)."""
    web, imagenet = root / "webvision", root / "imagenet"
    train, val, synsets = [], [], [f"n0{1440764 + c} class {c}" for c in range(1000)]
    for c, colour in enumerate(COLOURS):
        for i in range(per_class):
            name = f"google/q{c + 1:04d}/{i:06d}.jpg"
            write_image(web / name, colour, fmt="PNG" if (c, i) == (1, 0) else "JPEG")
            train.append(f"{name} {c}")
        for i in range(2):
            name = f"val{c * 2 + i + 1:06d}.jpg"
            write_image(web / "val_images_256" / name, colour)
            val.append(f"{name} {c}")
        if c < CLASSES:
            for i in range(2):
                write_image(imagenet / "val" / synsets[c].split()[0] / f"ILSVRC2012_val_{c * 2 + i:08d}.JPEG", colour)
    (web / "info").mkdir(parents=True, exist_ok=True)
    (web / "info/train_filelist_google.txt").write_text("\n".join(train) + "\n")
    (web / "info/val_filelist.txt").write_text("\n".join(val) + "\n")
    (web / "info/synsets.txt").write_text("\n".join(synsets) + "\n")
    return web, imagenet


def make_clothing1m(root, per_class=6):
    """Clothing1M's layout: annotations/ key lists and label files (keys like images/0/00/123,456.jpg, labels of
    more keys than the lists hold), the images under images/."""
    top = root / "clothing1m"
    train_keys, test_keys, noisy, clean = [], [], [], []
    for c, colour in enumerate(COLOURS[:CLASSES]):
        for i in range(per_class):
            key = f"images/{c}/{i:02d}/{1000 + i},{c}.jpg"
            write_image(top / key, colour)
            train_keys.append(key), noisy.append(f"{key} {c}")
        for i in range(2):
            key = f"images/{c}/9{i}/{2000 + i},{c}.jpg"
            write_image(top / key, colour)
            test_keys.append(key), clean.append(f"{key} {c}")
    noisy.append("images/9/99/unused.jpg 3")  # the label files list keys of other splits too
    (top / "annotations").mkdir(parents=True)
    for name, lines in (("noisy_train_key_list", train_keys), ("clean_test_key_list", test_keys),
                        ("noisy_label_kv", noisy), ("clean_label_kv", clean)):
        (top / f"annotations/{name}.txt").write_text("\n".join(lines) + "\n")
    return top


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_webvision(root)
    make_clothing1m(root)
    return root


def overrides(dataset, data_dir, out_root, *more):
    """A CPU-sized run: 4 classes, 32-pixel crops, no workers, 2 epochs of batch 8."""
    return [f"dataset={dataset}", f"data_dir={data_dir}", f"out_root={out_root}", "logger=none",
            "trainer.progress=false", f"dataset.num_classes={CLASSES}", "dataset.image_size=32", "dataset.resize=36",
            "dataset.workers=0", "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.epochs=2",
            "trainer.threads=1", *more]


# ---------------------------------------------------------------------------------------------------
# The loaders


def test_webvision_reads_the_first_classes_of_its_lists_and_imagenets_synsets(standins):
    train, tests = load_webvision(standins / "webvision", standins / "imagenet", CLASSES)
    assert len(train.labels) == 6 * CLASSES and set(train.labels) == set(range(CLASSES))  # labels 4, 5 left out
    assert train.paths[0].endswith("webvision/google/q0001/000000.jpg")
    assert list(tests) == ["test", "imagenet"]
    assert tests["test"].paths[0].endswith("val_images_256/val000001.jpg") and len(tests["test"].labels) == 8
    # class c of ILSVRC12 is the synset on line c of WebVision's synsets.txt
    assert [p.split("/")[-2] for p in tests["imagenet"].paths[::2]] == [f"n0{1440764 + c}" for c in range(CLASSES)]
    assert tests["imagenet"].labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_clothing1m_labels_its_keys_from_the_label_files(standins):
    train, tests = load_clothing1m(standins / "clothing1m")
    assert len(train.labels) == 6 * CLASSES and train.paths[0].endswith("clothing1m/images/0/00/1000,0.jpg")
    assert train.labels.tolist() == np.repeat(np.arange(CLASSES), 6).tolist()
    assert tests["test"].labels.tolist() == np.repeat(np.arange(CLASSES), 2).tolist()


@pytest.mark.parametrize("missing, named", [
    ("webvision/info/val_filelist.txt", "val_filelist.txt is missing"),
    ("imagenet/val/n01440765", "n01440765 is missing (class 1, synset n01440765)"),
    ("clothing1m/annotations/noisy_label_kv.txt", "noisy_label_kv.txt is missing"),
])
def test_a_missing_file_is_named_with_the_layout_expected(tmp_path, missing, named):
    make_webvision(tmp_path), make_clothing1m(tmp_path)
    target = tmp_path / missing
    for f in sorted(target.rglob("*"), reverse=True) if target.is_dir() else []:
        f.unlink()
    target.rmdir() if target.is_dir() else target.unlink()
    load = (lambda: load_clothing1m(tmp_path / "clothing1m")) if "clothing" in missing else (
        lambda: load_webvision(tmp_path / "webvision", tmp_path / "imagenet", CLASSES))
    with pytest.raises(DataError) as err:
        load()
    line = str(err.value)
    assert named in line and "\n" not in line and "must follow" in line


def epoch_batches_of(n, batch, seed, epoch, rank=0, world=1, weights=False):
    parts = epoch_batches(n, batch, epoch_generator(seed, epoch, torch.device("cpu")), rank, world)
    return [weight for _, weight in parts] if weights else [items for items, _ in parts]


def test_an_epochs_shards_tile_its_global_batches_and_depend_on_seed_and_epoch_only():
    n, batch = 50, 8
    alone = epoch_batches_of(n, batch, seed=7, epoch=3)
    order = [i for b in alone for i, _ in b]
    assert sorted(order) == list(range(n)) and len(alone) == 7  # a permutation of all; the last batch has 2
    assert alone == epoch_batches_of(n, batch, seed=7, epoch=3)
    assert alone != epoch_batches_of(n, batch, seed=7, epoch=4) and alone != epoch_batches_of(n, batch, seed=8, epoch=3)
    for world in (2, 3, 4):
        shards = [epoch_batches_of(n, batch, 7, 3, rank, world) for rank in range(world)]
        weights = [epoch_batches_of(n, batch, 7, 3, rank, world, weights=True) for rank in range(world)]
        for j in range(len(shards[0])):  # DDP's mean of the ranks' weighted mean losses is the batch's mean loss
            b = sum(len(s[j]) for s in shards)
            assert [w[j] for w in weights] == [len(s[j]) * world / b for s in shards]
        assert world != 3 or weights[0][0] == 0.75  # 8 images over 3 ranks: 2, 3, 3
        kept = len(shards[0])
        assert all(len(s) == kept for s in shards)  # every rank takes as many steps
        for j in range(kept):  # rank r's share of global batch j is its r-th slice, in order
            assert sum((s[j] for s in shards), []) == alone[j]
            assert all(len(s[j]) >= 2 for s in shards)  # BatchNorm trains on each share
    # the last global batch (2 images) would leave each of 2, 3 or 4 ranks fewer than 2: dropped
    assert len(epoch_batches_of(n, batch, 7, 3, 0, 2)) == 6 and len(epoch_batches_of(n, batch, 7, 3, 0, 4)) == 6


@pytest.mark.full  # DataLoader worker processes
def test_augmented_batches_do_not_depend_on_the_number_of_workers(standins):
    train, _ = load_webvision(standins / "webvision", standins / "imagenet", CLASSES)
    images = ImageFiles(train, transforms_of("webvision", 32, 36, train=True))
    batches = epoch_batches_of(len(images), 8, seed=1, epoch=0)

    def epoch(workers):
        return [(x, i) for x, i in loader(images, batches, workers, torch.device("cpu"))]

    one, two = epoch(0), epoch(2)
    assert all(torch.equal(a, b) and torch.equal(i, j) for (a, i), (b, j) in zip(one, two))
    assert one[0][0].dtype == torch.uint8 and one[0][0].shape == (8, 3, 32, 32)
    # the seeds differ per image: two copies of one image in a batch get different crops
    again = [[(0, 1), (0, 2)]]
    (x, _), = list(loader(images, again, 2, torch.device("cpu")))
    assert not torch.equal(x[0], x[1])


# ---------------------------------------------------------------------------------------------------
# Training end to end on the stand-ins


@pytest.mark.parametrize("dataset", ["webvision", "clothing1m"])
@pytest.mark.full  # trains ResNet-50
def test_trains_end_to_end_and_records_top1_top5_on_every_test_set(standins, tmp_path, dataset):
    extra = ["model.pretrained=false"] if dataset == "clothing1m" else []
    cfg = compose_train(overrides(dataset, standins, tmp_path, "loss=jal_ce", *extra))
    result = jal_train.train(cfg, tmp_path / "run")
    assert result.status == "finished" and result.epochs == 2 and len(result.history) == 2
    n_test = 8
    for h in result.history:  # accuracies are counts out of the 8 test images of each set
        names = ["test_acc", "test_acc_top5"]
        names += ["imagenet_acc", "imagenet_acc_top5"] if dataset == "webvision" else []
        assert all(round(h[k] * n_test / 100, 6).is_integer() for k in names)
        assert h["test_acc"] <= h["test_acc_top5"] == 100.0  # 4 classes: the top 5 hold every class
        assert h["train_loss"] > 0 and np.isfinite(h["train_loss"])
    assert result.last_test_acc == result.history[-1]["test_acc"]
    assert ("last_imagenet_acc" in result.to_json()) == (dataset == "webvision")
    lrs = [h["lr"] for h in result.history]
    assert lrs == pytest.approx([0.4, 0.4 * 0.97] if dataset == "webvision" else [5e-3, 5e-3])


@pytest.mark.full  # trains
def test_a_real_world_run_resumes_to_the_uninterrupted_weights(standins, tmp_path):
    """A paused run continued draws the same batches and augmentations: its record is the uninterrupted one."""
    base = overrides("clothing1m", standins, tmp_path, "model=cnn8", "trainer.batch_size=6")
    whole = jal_train.train(compose_train(base), tmp_path / "whole")
    paused = jal_train.train(compose_train(base + ["trainer.pause_after=1"]), tmp_path / "paused")
    assert paused.status == "paused"
    resumed = jal_train.train(compose_train(base), tmp_path / "paused")
    strip = lambda h: {k: v for k, v in h.items() if k not in ("images_per_second", "seconds")}
    assert [strip(h) for h in resumed.history] == [strip(h) for h in whole.history]


def test_fusing_real_world_runs_is_refused_in_one_line(standins, tmp_path):
    cfgs = [compose_train(overrides("clothing1m", standins, tmp_path, "model.pretrained=false", f"seed={s}"))
            for s in (1, 2)]
    with pytest.raises(ConfigError, match="a real-world run trains alone") as err:
        jal_train.train_fusion(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert "\n" not in str(err.value)


@pytest.mark.full  # python -m jal.train
def test_the_command_line_names_a_missing_file_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jal.train", "dataset=webvision", f"data_dir={tmp_path}",
                           f"out_root={tmp_path}/out", "logger=none"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {tmp_path}/webvision/info/train_filelist_google.txt is missing")
    assert "google_resized_256.tar" in last


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_missing_pretrained_weights_are_one_line(monkeypatch, tmp_path):
    """No network here: the ImageNet weights cannot be fetched, and the error says where to put them."""
    import torchvision.models

    from jal.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(torchvision.models.ResNet50_Weights.DEFAULT.__class__, "get_state_dict",
                        lambda self, **kw: (_ for _ in ()).throw(OSError("no network")), raising=False)
    with pytest.raises(FileNotFoundError) as err:
        resnet50(14, pretrained=True)
    line = str(err.value)
    assert "\n" not in line and "hub/checkpoints" in line and "model.pretrained=false" in line


# ---------------------------------------------------------------------------------------------------
# The recipes: the reference's values (main_real_world.py, config.py's WEBVISION_CONFIG and CLOTHING_CONFIG)

REFERENCE_LOSSES = {  # loss: (webvision, clothing1m), the settings our configs must resolve to
    "gce": ({"q": 0.6}, {"q": 0.6}),
    "sce": ({"alpha": 10, "beta": 1}, {"alpha": 10, "beta": 1}),
    "agce": ({"a": 1e-5, "q": 0.5}, {"a": 1e-5, "q": 0.5}),
    "ldr_kl": ({"threshold": 0.1, "lam": 1}, {"threshold": 0.1, "lam": 1}),
    "nce_rce": ({"alpha": 50, "beta": 0.1}, {"alpha": 10, "beta": 1}),
    "nce_agce": ({"alpha": 50, "beta": 0.1, "passive.a": 2.5, "passive.q": 3},
                 {"alpha": 50, "beta": 0.1, "passive.a": 2.5, "passive.q": 3}),
    "anl_ce": ({"alpha": 20, "beta": 1}, {"alpha": 5, "beta": 0.1}),
    "anl_fl": ({"alpha": 20, "beta": 1}, {"alpha": 5, "beta": 0.1}),
    "jal_ce": ({"alpha": 50, "beta": 1, "passive.a": 30}, {"alpha": 5, "beta": 0.1, "passive.a": 5}),
    "jal_fl": ({"alpha": 50, "beta": 1, "passive.a": 30}, {"alpha": 5, "beta": 0.1, "passive.a": 5}),
    "ce_eps_mae": ({"alpha": 0.015, "beta": 0.3, "active.m": 1e3}, {"alpha": 0.012, "beta": 0.1, "active.m": 1e3}),
    "fl": ({"gamma": 0.5}, {"gamma": 0.5}),
}


@pytest.mark.parametrize("loss", REFERENCE_LOSSES)
def test_loss_hyperparameters_are_the_references(loss):
    for dataset, expected in zip(("webvision", "clothing1m"), REFERENCE_LOSSES[loss]):
        cfg = compose_train([f"dataset={dataset}", f"loss={loss}", "logger=none"])
        got = {key: float(cfg.loss[key] if "." not in key else cfg.loss[key.split(".")[0]][key.split(".")[1]])
               for key in expected}
        assert got == pytest.approx(expected), (dataset, loss)
        # every loss: L2 at the dataset's strength, no L1 (the reference's get_weight_decay_config)
        assert (cfg.optim.l1, cfg.optim.weight_decay) == (0.0, 3e-5 if dataset == "webvision" else 1e-3)


def test_recipes_are_the_references():
    web = compose_train(["dataset=webvision", "logger=none"])
    assert (web.trainer.batch_size, web.dataset.epochs, web.optim.lr, web.optim.momentum) == (256, 250, 0.4, 0.9)
    assert (web.dataset.nesterov, web.dataset.lr_decay, web.dataset.lr_decay_every, web.optim.grad_clip) == (
        True, 0.97, 1, 5.0)
    assert (web.dataset.num_classes, web.model.pretrained, web.model.zero_init_residual) == (50, False, True)
    clo = compose_train(["dataset=clothing1m", "logger=none"])
    assert (clo.trainer.batch_size, clo.dataset.epochs, clo.optim.lr, clo.optim.momentum) == (256, 10, 5e-3, 0.9)
    assert (clo.dataset.nesterov, clo.dataset.lr_decay, clo.dataset.lr_decay_every, clo.optim.grad_clip) == (
        False, 0.1, 5, None)
    assert (clo.dataset.num_classes, clo.model.pretrained) == (14, True)
    assert list(clo.dataset.mean) == [0.6959, 0.6537, 0.6371] and list(web.dataset.std) == [0.229, 0.224, 0.225]


def test_resnet50_from_scratch_zeroes_each_residual_branchs_last_batchnorm():
    from jal.models import resnet50

    model = resnet50(50, zero_init_residual=True)
    assert model.fc.out_features == 50
    blocks = [block for layer in (model.layer1, model.layer4) for block in layer]
    assert all(float(block.bn3.weight.detach().abs().sum()) == 0 for block in blocks)
