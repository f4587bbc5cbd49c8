"""A researcher's own data (docs/your-data.md): a stand-in ImageFolder and a stand-in .npz, made here (a few
hundred small images in 4 classes, some labels flipped), read, checked, trained, resumed and skipped as CIFAR runs
are; every bad layout stopped in one line; the noisy validation split held out, recorded and scored; the
committed records' identities kept."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, compose_train, given_once
from PIL import Image

from jal import experiment
from jal import run as jal_run
from jal import train as jal_train
from jal.config import ConfigError, DataError
from jal.config_check import check_config
from jal.data import validation_rows
from jal.models import CNN8
from jal.own_data import channel_statistics, describe_arrays, describe_folder
from jal.record import Record, Status, ending

K, SIZE, PER_CLASS, FLIPPED = 4, 8, 40, 0.1  # the stand-ins: 4 classes of 8-pixel images, 10% of labels flipped
COLOURS = np.array([(220, 60, 60), (60, 200, 60), (60, 60, 220), (210, 200, 60)])


def stand_in_images(n_per_class: int, seed: int, flip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images coloured by their true class (learnable), their true labels, and their given labels (a share
    `flip` of them another class's)."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(K), n_per_class)
    x = np.clip(rng.normal(COLOURS[true][:, None, None, :], 50, (len(true), SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    given = true.copy()
    flips = rng.choice(len(true), int(flip * len(true)), replace=False)
    given[flips] = (true[flips] + rng.integers(1, K, len(flips))) % K
    return x, true, given


def make_arrays(path: Path, test: bool = True, **changes) -> Path:
    x, _, given = stand_in_images(PER_CLASS, 0, FLIPPED)
    x_test, y_test, _ = stand_in_images(8, 1, 0.0)
    arrays = dict(x_train=x, y_train=given) | (dict(x_test=x_test, y_test=y_test) if test else {})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in (arrays | changes).items() if v is not None})
    return path


def make_folder(root: Path, test: bool = True) -> Path:
    """<root>/train/<class>/*.png (by given label) and <root>/test/<class>/*.png, classes named out of order."""
    names = ["dog", "cat", "owl", "ant"]  # sorted: ant cat dog owl -> labels 0..3
    x, true, given = stand_in_images(PER_CLASS, 0, FLIPPED)
    for i, (image, label) in enumerate(zip(x, given)):
        write(root / "train" / names[label] / f"{true[i]}_{i:03d}.png", image)
    if test:
        x_test, y_test, _ = stand_in_images(8, 1, 0.0)
        for i, (image, label) in enumerate(zip(x_test, y_test)):
            write(root / "test" / names[label] / f"{i:03d}.png", image)
    return root


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def overrides(dataset: str, location: Path | None, out_root: Path, *more: str) -> list[str]:
    """A CPU-sized run: the stand-in, 2 epochs of batch 32, one thread, no workers, no W&B."""
    where = ([] if location is None else [f"dataset.path={location}"] if dataset == "arrays" else
             [f"dataset.root={location}/train", f"dataset.test_root={location}/test", "dataset.workers=0",
              f"dataset.image_size={SIZE}", f"dataset.resize={SIZE + 2}"])
    return given_once([f"dataset={dataset}", *where, f"out_root={out_root}", "logger=none", "trainer.progress=false",
                       "trainer.epochs=2", "trainer.batch_size=32", "trainer.threads=1", "loss=jal_ce", *more])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    top = tmp_path_factory.mktemp("own")
    return dict(arrays=make_arrays(top / "stand_in.npz"), folder=make_folder(top / "stand_in"))


def run_dir(cfg) -> Path:
    return Path(cfg.out_root) / cfg.run_name


def deterministic(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("images_per_second", "seconds")} for h in history]


# ---------------------------------------------------------------------------------------------------
# What a run knows of the data before it loads


def test_arrays_give_their_classes_size_statistics_and_a_name_of_their_own(data, tmp_path):
    cfg = compose_train(overrides("arrays", data["arrays"], tmp_path))
    x = np.load(data["arrays"])["x_train"].astype(np.float64) / 255
    d = cfg.dataset
    assert (d.num_classes, d.train_size, d.image_size) == (K, K * PER_CLASS, SIZE)
    assert cfg.model.image_size == SIZE and cfg.loss.passive.num_classes == K  # the model and the loss read them
    # rounded to 4 decimals: within 5e-5 of the float64 statistics (plus their own rounding, ~1e-15)
    assert list(d.mean) == pytest.approx(x.mean((0, 1, 2)).tolist(), abs=5.1e-5)
    assert list(d.std) == pytest.approx(x.std((0, 1, 2)).tolist(), abs=5.1e-5)
    assert d.name == f"stand_in-{d.digest[:8]}" and re.fullmatch("[0-9a-f]{16}", d.digest)
    assert cfg.noise.type == "as_given" and cfg.run_name == f"stand_in-{d.digest[:8]}/as_given/jal_ce/seed123/" \
        "trainer.batch_size=32,trainer.epochs=2"  # the path is not in the directory's name, nor the identity
    assert "dataset.path" not in experiment.experiment(cfg).identity


def test_the_digest_is_the_contents_so_two_files_of_one_name_never_share_a_directory(data, tmp_path):
    arrays = dict(np.load(data["arrays"]))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    np.savez_compressed(tmp_path / "a" / "stand_in.npz", **arrays)  # a copy elsewhere, compressed
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % K  # one label changed: another dataset
    np.savez(tmp_path / "b" / "stand_in.npz", **arrays)
    same, other = describe_arrays(tmp_path / "a" / "stand_in.npz"), describe_arrays(tmp_path / "b" / "stand_in.npz")
    assert same.digest == describe_arrays(data["arrays"]).digest  # a compressed copy elsewhere: the same data
    assert other.digest != same.digest and other.name != same.name and other.name.startswith("stand_in-")


def test_a_folder_is_listed_in_imagefolders_order_and_tested_by_class_name(tmp_path):
    root = make_folder(tmp_path / "data")
    for image in (root / "test" / "owl").iterdir():  # a test folder without one class: matched by name
        image.unlink()
    (root / "test" / "owl").rmdir()
    listed = describe_folder(root / "train", root / "test")
    assert listed.classes == ("ant", "cat", "dog", "owl") and listed.num_classes == K
    assert list(listed.labels) == sorted(listed.labels) and len(listed.files) == K * PER_CLASS
    assert listed.files[0].startswith("ant/") and listed.files[-1].startswith("owl/")
    assert {f.split("/")[0] for f in listed.test_files} == {"ant", "cat", "dog"}
    assert all(listed.classes[y] == f.split("/")[0] for f, y in zip(listed.test_files, listed.test_labels))
    assert listed.name == f"data-{listed.digest[:8]}"  # <data>/train is named by <data>


def test_channel_statistics_are_exact_integer_sums():
    images = [np.full((2, 2, 3), 255, np.uint8), np.zeros((1, 4, 3), np.uint8)]  # 4 white pixels, 4 black
    assert channel_statistics(images) == ((0.5,) * 3, (0.5,) * 3)


# ---------------------------------------------------------------------------------------------------
# Bad data: one line naming the file and what is wrong, before anything is written


def bad_arrays(tmp_path, **changes):
    return make_arrays(tmp_path / "bad.npz", **changes)


x_ok = stand_in_images(PER_CLASS, 0, 0.0)[0]
BAD_ARRAYS = {
    "float images": (dict(x_train=x_ok.astype(np.float32)), "x_train is float32, not uint8"),
    "channels first": (dict(x_train=x_ok.transpose(0, 3, 1, 2).copy()), "channels first"),
    "grey images": (dict(x_train=x_ok[..., 0]), "not (N, H, W, 3) RGB images"),
    "mismatched lengths": (dict(y_train=np.zeros(len(x_ok) - 1, np.int64)), "holds 159 labels for the 160 images"),
    "a negative label": (dict(y_train=np.full(len(x_ok), -1)), "holds label -1"),
    "an empty class": (dict(y_train=np.arange(len(x_ok)) % 2 * 2), "class 1 has no training image"),
    "test labels out of range": (dict(y_test=np.full(32, K)), f"y_test holds labels {K}..{K}, outside"),
    "float labels": (dict(y_train=np.zeros(len(x_ok))), "y_train is float64 (160,), not a vector of integer"),
    "no y_train": (dict(y_train=None), "has no x_train or y_train"),
    "x_test alone": (dict(y_test=None), "has one of x_test and y_test without the other"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_bad_arrays_stop_the_check_in_one_line_naming_the_file(case, tmp_path):
    changes, said = BAD_ARRAYS[case]
    path = bad_arrays(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        check_config(compose_train(overrides("arrays", path, tmp_path / "out")))
    assert str(err.value).startswith(str(path)) and said in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def remove_images(folder: Path) -> None:
    for image in folder.iterdir():
        image.unlink()


BAD_FOLDERS = {
    "images outside class folders": (lambda r: write(r / "train" / "stray.png", x_ok[0]),
                                     "train holds 1 image outside any class folder (the first: stray.png)"),
    "an empty class": (lambda r: remove_images(r / "train" / "cat"), "train/cat holds no images"),
    "one class": (lambda r: [remove_images(r / "train" / c) or (r / "train" / c).rmdir()
                             for c in ("cat", "dog", "owl")], "has 1 class folder (ant)"),
    "a test class not trained": (lambda r: write(r / "test" / "emu" / "0.png", x_ok[0]),
                                 "has class folders that"),
    "no folder": (lambda r: [remove_images(r / "train" / c) or (r / "train" / c).rmdir()
                             for c in ("ant", "cat", "dog", "owl")] and (r / "train").rmdir(), "train is missing"),
    "an unreadable image": (lambda r: (r / "train" / "ant" / "0_000.png").write_bytes(b"not a png"),
                            "0_000.png is damaged"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_bad_folders_stop_the_check_in_one_line_naming_the_folder(case, tmp_path):
    spoil, said = BAD_FOLDERS[case]
    root = make_folder(tmp_path / "data")
    spoil(root)
    with pytest.raises(DataError) as err:
        check_config(compose_train(overrides("folder", root, tmp_path / "out")))
    assert str(err.value).startswith(str(root)) and said in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("more, said", [
    (["noise=none"], "noise=none on dataset=arrays says the labels are clean"),
    (["noise=asymmetric"], "flips pairs of CIFAR's classes"),
    (["dataset.num_classes=10"], "dataset.num_classes=10 is read from the data"),
    (None, "dataset=arrays needs dataset.path=FILE.npz"),
])
def test_settings_that_do_not_fit_the_data_are_refused_in_one_line(data, tmp_path, more, said):
    path = None if more is None else data["arrays"]
    with pytest.raises(ConfigError, match=re.escape(said)) as err:
        check_config(compose_train(overrides("arrays", path, tmp_path, *more or [])))
    assert "\n" not in str(err.value)


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_the_8_layer_cnn_stops_at_64_pixels_and_names_resnet50(data, tmp_path):
    base = overrides("folder", data["folder"], tmp_path)
    check_config(compose_train(base + ["dataset.image_size=64", "dataset.resize=72"]))
    with pytest.raises(ConfigError, match="72-pixel images are large for the 8-layer CNN.*model=resnet50"):
        check_config(compose_train(base + ["dataset.image_size=72", "dataset.resize=80"]))
    check_config(compose_train(base + ["dataset.image_size=72", "dataset.resize=80", "model=resnet50"]))
    with pytest.raises(ConfigError, match="noise=instance on dataset=folder draws from the images' pixels"):
        check_config(compose_train(base + ["noise=instance", "noise.generate=true"]))


@pytest.mark.slow
def test_the_command_line_names_bad_data_in_one_line_and_writes_nothing(tmp_path):
    path = bad_arrays(tmp_path, x_train=x_ok.astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "jal.train", "dataset=arrays", f"dataset.path={path}",
                           f"out_root={tmp_path}/out", "logger=none"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: {path}: x_train is float32, not uint8: store 0-255 pixels as uint8 (floats in [0, 1]: "
        "(x * 255).round().astype(np.uint8))"]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------
# Training, resuming and skipping like CIFAR runs


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
@pytest.mark.parametrize("dataset", ["arrays", "folder"])
def test_a_run_trains_resumes_to_the_uninterrupted_result_and_is_skipped_when_finished(data, tmp_path, dataset,
                                                                                       monkeypatch, one_torch_thread):
    base = overrides(dataset, data[dataset], tmp_path / "paused", "dataset.val_fraction=0.1")
    whole = compose_train(overrides(dataset, data[dataset], tmp_path / "whole", "dataset.val_fraction=0.1"))
    uninterrupted = jal_train.train(whole, run_dir(whole))
    where = run_dir(compose_train(base))
    paused = jal_train.train(compose_train(base + ["trainer.pause_after=1"]), where)
    assert paused.status == Status.PAUSED and paused.epoch == 1
    resumed = jal_train.train(compose_train(base), where)
    assert resumed.status == Status.FINISHED and deterministic(resumed.history) == deterministic(uninterrupted.history)
    weights = [torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (run_dir(whole), where)]
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0)
    # the record: the cell by the data, labels as given (their noise not known), the accuracies scored
    assert resumed.dataset == compose_train(base).dataset.name and resumed.noise_type == "as_given"
    assert resumed.realised_noise_rate is None and resumed.noise_transition is None and resumed.noise_rate is None
    assert all(h["train_acc_clean_subset"] is None for h in resumed.history)  # which labels are clean: unknown
    n_test, n_val = 32, 16  # accuracies are counts out of the 32 test images and the 16 held out
    assert resumed.last_test_acc == resumed.history[-1]["test_acc"] and resumed.last_val_acc is not None
    assert round(resumed.last_test_acc * n_test / 100, 6).is_integer()
    assert round(resumed.last_val_acc * n_val / 100, 6).is_integer()
    load = "read_folder" if dataset == "folder" else "load_arrays"
    monkeypatch.setattr(jal_run, load, lambda *a, **k: pytest.fail("a finished run must not load its data"))
    assert jal_train.train(compose_train(base), where) == resumed


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_synthetic_noise_is_drawn_on_the_labels_as_given(data, tmp_path, one_torch_thread):
    cfg = compose_train(overrides("arrays", data["arrays"], tmp_path, "noise=symmetric", "noise.rate=0.5",
                                  "trainer.epochs=1"))
    record = jal_train.train(cfg, run_dir(cfg))
    labels = np.load(run_dir(cfg) / "labels.npz")
    given = np.load(data["arrays"])["y_train"]
    assert np.array_equal(labels["clean"], given)  # "clean": as given, the noise drawn on top
    flipped = np.mean(labels["noisy"] != given)  # exact sampling: int(rate / (K-1) * n_c) per pair, so a bit under
    assert 0.4 < flipped <= 0.5 and record.realised_noise_rate == pytest.approx(flipped, abs=1e-12)
    assert record.noise_type == "symmetric" and record.noise_rate == 0.5


# ---------------------------------------------------------------------------------------------------
# The noisy validation split


def test_the_split_is_stratified_by_the_given_labels_seeded_and_exact_in_size():
    labels = np.repeat(np.arange(3), [50, 30, 21])  # 101 samples; 0.1 of each class: 5, 3, 2.1 -> 10 of 10.1
    held = validation_rows(labels, 0.1, 3, seed=7)
    assert len(held) == 10 and np.bincount(labels[held], minlength=3).tolist() == [5, 3, 2]
    assert np.array_equal(held, np.sort(held)) and len(set(held)) == 10
    assert np.array_equal(held, validation_rows(labels, 0.1, 3, seed=7))
    assert not np.array_equal(held, validation_rows(labels, 0.1, 3, seed=8))
    # 0.25 of 101 = 25.25 -> 25: 12.5, 7.5, 5.25 floored to 24, the one left to the largest remainder (0.5, a tie
    # of classes 0 and 1: the lower class)
    assert np.bincount(labels[validation_rows(labels, 0.25, 3, seed=0)]).tolist() == [13, 7, 5]
    assert len(validation_rows(labels, 0.0, 3, seed=0)) == 0
    with pytest.raises(ConfigError, match="cannot hold out 0 of 3"):
        validation_rows(np.arange(3), 0.1, 3, seed=0)


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_every_record_of_a_split_run_carries_its_validation_accuracy_against_the_given_labels(data, tmp_path,
                                                                                               one_torch_thread):
    cfg = compose_train(overrides("arrays", data["arrays"], tmp_path, "dataset.val_fraction=0.15",
                                  "trainer.epochs=3", "trainer.eval_every=2", "trainer.eval_batch_size=64"))
    record = jal_train.train(cfg, run_dir(cfg))
    assert [h["val_acc"] is None for h in record.history] == [True, False, False]  # evaluated: 2 and the last
    assert record.last_val_acc == record.history[-1]["val_acc"]
    assert record.best_val_acc == max(record.history[1]["val_acc"], record.history[2]["val_acc"])
    saved = json.loads((run_dir(cfg) / "result.json").read_text())
    assert saved["last_val_acc"] == record.last_val_acc and all("val_acc" in h for h in saved["history"])
    # labels.npz: the held-out rows, stratified by the noisy labels, out of the 136 trained on
    labels = np.load(run_dir(cfg) / "labels.npz")
    held = labels["val_indices"]
    assert np.array_equal(held, validation_rows(labels["noisy"], 0.15, K, cfg.seed)) and len(held) == 24
    assert record.history[0]["train_loss"] > 0 and record.epochs == 3
    # the accuracy recorded is the final model's on those rows, unaugmented, against their given labels
    x = torch.from_numpy(np.load(data["arrays"])["x_train"][labels["indices"][held]]).permute(0, 3, 1, 2).float()
    mean, std = (torch.tensor(cfg.dataset[k]).view(1, 3, 1, 1) * 255 for k in ("mean", "std"))
    model = CNN8(K, SIZE)
    model.load_state_dict(torch.load(run_dir(cfg) / "checkpoint.pt", weights_only=True)["model"])
    with torch.no_grad():
        logits = model.eval()(((x - mean) / std).contiguous(memory_format=torch.channels_last))
    assert record.last_val_acc == 100.0 * (logits.argmax(1).numpy() == labels["noisy"][held]).sum() / len(held)


def test_a_run_without_a_test_set_records_none_and_says_so(tmp_path, one_torch_thread):
    path = make_arrays(tmp_path / "no_test.npz", test=False)
    cfg = compose_train(overrides("arrays", path, tmp_path, "dataset.val_fraction=0.1", "trainer.epochs=1"))
    record = jal_train.train(cfg, run_dir(cfg))
    assert record.last_test_acc is None and record.best_test_acc is None and record.history[0]["test_acc"] is None
    assert ending(record) == f"finished: no test set, noisy validation accuracy {record.last_val_acc:.2f}% (epoch 1)"
    assert ending(Record(status=Status.FINISHED, epochs=3)) == "finished: no test set (epoch 3)"
    assert ending(Record(status=Status.FINISHED, epochs=3, last_test_acc=50.0)) == "finished: test accuracy 50.00% " \
        "(epoch 3)"  # a run without a split says what it always said


# ---------------------------------------------------------------------------------------------------
# Identity: the settings added here leave every earlier experiment as it was


@pytest.mark.full  # over 1 s of CPU (a run trained, a model built, or hundreds composed)
def test_the_new_settings_at_their_old_values_leave_the_identity_as_it_was(synthetic_run):
    cfg = synthetic_run()
    exp = experiment.experiment(cfg)
    assert exp.config["dataset"]["val_fraction"] == 0.0 and exp.config["model"]["image_size"] == 32
    assert "dataset.val_fraction" not in exp.identity and "model.image_size" not in exp.identity
    earlier = json.loads(json.dumps(exp.config))  # a record written before the settings were
    del earlier["dataset"]["val_fraction"], earlier["model"]["image_size"]
    assert experiment.identity_of(dict(config=earlier, precision=exp.precision)) == exp.identity
    mine = compose_train(overrides("arrays", make_arrays(Path(cfg.out_root) / "a.npz"), cfg.out_root))
    assert "dataset.path" in experiment.fixed_settings(mine)  # not the experiment, but fused runs share it
    split = experiment.experiment(synthetic_run("dataset.val_fraction=0.1"))
    assert split.identity["dataset.val_fraction"] == 0.1 and split.fingerprint != exp.fingerprint
    assert split.name.endswith("/dataset.val_fraction=0.1")


# ---------------------------------------------------------------------------------------------------
# The documentation's toy folder


def test_the_docs_toy_folder_and_its_packing_write_what_the_docs_say(tmp_path, monkeypatch):
    text = (REPO / "docs" / "your-data.md").read_text()
    monkeypatch.chdir(tmp_path)
    for name in ("make_toy", "pack_toy"):  # as written, in the order the docs give them
        script = re.search(rf"```python\n(# {name}\.py.*?)```", text, re.S).group(1)
        exec(compile(script, f"{name}.py", "exec"), {})
    images = sorted((tmp_path / "toy").rglob("*.png"))
    flipped = (tmp_path / "toy" / "flipped.csv").read_text().splitlines()[1:]
    assert len(images) == 400 and describe_folder(tmp_path / "toy" / "train").classes == ("blue", "green", "red",
                                                                                            "yellow")
    assert len(flipped) == 47  # of the 320 training images, each drawn into another class's folder at 15% (the docs)
    for line in flipped:
        file, true, given = line.split(",")
        assert (tmp_path / file).parent.name == given != true
    packed = describe_arrays(tmp_path / "toy.npz")
    assert (packed.num_classes, packed.train_size, packed.image_size) == (4, 320, 32)
