"""Data loaders: the built-in digits set, and CIFAR-10/100, image folders and .npz files
written by the tests in their real on-disk formats."""

import json
import pickle

import numpy as np
import pytest
import torch

from compute.data import DataError, DataSpec, load


def test_digits_is_32x32_rgb_uint8_with_a_stratified_split():
    data = load(DataSpec("digits", n_test=360, n_train=0, split_seed=0))
    assert data.test_images.shape == (360, 3, 32, 32) and data.test_images.dtype == torch.uint8
    assert data.train_images.shape == (1797 - 360, 3, 32, 32)
    assert data.class_names == tuple(str(c) for c in range(10))
    from sklearn.datasets import load_digits

    frequency = np.bincount(load_digits().target, minlength=10) / 1797
    counts = torch.bincount(data.test_labels, minlength=10).numpy()
    assert np.abs(counts - 360 * frequency).max() <= 1  # stratified: class shares kept
    assert len(set(data.test_index.tolist())) == 360
    assert torch.equal(data.test_images[:, 0], data.test_images[:, 1])  # grey digits as RGB
    assert data.test_images.float().max() >= 250  # ink reaches white
    again = load(DataSpec("digits", n_test=360, n_train=0, split_seed=0))
    assert torch.equal(again.test_index, data.test_index)
    other = load(DataSpec("digits", n_test=360, n_train=0, split_seed=1))
    assert not torch.equal(other.test_index, data.test_index)


def test_digits_matches_the_scikit_learn_source():
    from sklearn.datasets import load_digits

    data = load(DataSpec("digits", n_test=100, n_train=0))
    source = load_digits()
    i = int(data.test_index[0])
    assert int(data.test_labels[0]) == int(source.target[i])
    # the 8x8 original, averaged back down from 32x32, matches up to interpolation blur
    small = torch.nn.functional.avg_pool2d(data.test_images[:1, :1].float() / 255, 4)[0, 0]
    assert np.corrcoef(small.flatten().numpy(), source.images[i].flatten() / 16)[0, 1] > 0.9


def test_digits_refuses_an_impossible_test_size():
    with pytest.raises(DataError, match="n_test=5000"):
        load(DataSpec("digits", n_test=5000, n_train=0))


def write_cifar10(root, n_per_batch=20, seed=0):
    """A tiny CIFAR-10 in the real python-pickle layout that torchvision reads."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            f,
        )
    return batches


def test_cifar10_loads_from_files_in_the_released_format(tmp_path):
    batches = write_cifar10(tmp_path)
    data = load(DataSpec("cifar10", n_test=0, n_train=0, root=str(tmp_path)))
    test_data, test_labels = batches["test_batch"]
    assert data.test_images.shape == (20, 3, 32, 32) and data.train_images.shape == (100, 3, 32, 32)
    # row layout: 1024 red, 1024 green, 1024 blue values per image, row-major
    assert torch.equal(data.test_images[3], torch.from_numpy(test_data[3].reshape(3, 32, 32)))
    assert data.test_labels.tolist() == test_labels
    assert data.test_index.tolist() == list(range(20))
    assert data.class_names[0] == "airplane" and data.augment_flip


def test_cifar10_without_files_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="download it once"):
        load(DataSpec("cifar10", n_test=0, n_train=0, root=str(tmp_path)))
    with pytest.raises(DataError, match="--data-root"):
        load(DataSpec("cifar10", n_test=0, n_train=0, root=None))


def test_cifar10_with_malformed_images_is_refused(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises((DataError, ValueError)):
        load(DataSpec("cifar10", n_test=0, n_train=0, root=str(tmp_path)))


# --- CIFAR-100, image folders, .npz ---------------------------------------------------------


def write_cifar100(root, n_train=40, n_test=20, seed=0):
    """A tiny CIFAR-100 in the released python-pickle layout (train, test, meta; fine and
    coarse labels), as torchvision's CIFAR100 reads it."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine, "coarse_labels": [v // 5 for v in fine]}, f)
        splits[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{c:02d}" for c in range(100)], "coarse_label_names": []}, f)
    return splits


def test_cifar100_loads_its_fine_labels_from_the_released_format(tmp_path):
    splits = write_cifar100(tmp_path)
    data = load(DataSpec("cifar100", n_test=0, n_train=0, root=str(tmp_path)))
    test_data, test_labels = splits["test"]
    assert data.num_classes == 100 and data.class_names[7] == "class07"
    assert data.test_images.shape == (20, 3, 32, 32) and data.train_images.shape == (40, 3, 32, 32)
    assert torch.equal(data.test_images[5], torch.from_numpy(test_data[5].reshape(3, 32, 32)))
    assert data.test_labels.tolist() == test_labels
    with pytest.raises(DataError, match="cifar-100-python"):
        load(DataSpec("cifar100", n_test=0, n_train=0, root=str(tmp_path / "nowhere")))


def write_image_folder(root, classes, per_class, size=(40, 24), seed=0):
    """PNG files in torchvision's ImageFolder layout; returns {(class, file name): pixels}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"img{i}.png")
            pixels[(name, f"img{i}.png")] = image
    return pixels


def test_an_image_folder_loads_with_its_classes_and_its_own_image_size(tmp_path):
    classes = ["cat", "dog", "owl"]
    train = write_image_folder(tmp_path / "train", classes, 4)
    test = write_image_folder(tmp_path / "test", classes, 2, seed=1)
    data = load(DataSpec("imagefolder", 0, 0, root=str(tmp_path / "train"), test_root=str(tmp_path / "test")))
    assert data.class_names == ("cat", "dog", "owl") and data.image_shape == (3, 40, 24)
    assert len(data.train_labels) == 12 and data.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    # ImageFolder order: classes sorted, files sorted within each class
    assert torch.equal(data.test_images[3], torch.from_numpy(test["dog", "img1.png"].transpose(2, 0, 1)))
    assert torch.equal(data.train_images[0], torch.from_numpy(train["cat", "img0.png"].transpose(2, 0, 1)))


@pytest.mark.parametrize("layout", ["flat files", "other classes", "mixed sizes", "no test folder"])
def test_an_unexpected_image_folder_layout_names_what_was_found(tmp_path, layout):
    from PIL import Image

    write_image_folder(tmp_path / "train", ["a", "b"], 2)
    test = tmp_path / "test"
    if layout == "flat files":
        test.mkdir()
        Image.fromarray(np.zeros((40, 24, 3), np.uint8)).save(test / "loose.png")
        message = "no class sub-folders .*loose.png"
    elif layout == "other classes":
        write_image_folder(test, ["a", "c"], 1)
        message = "classes"
    elif layout == "mixed sizes":
        write_image_folder(test, ["a", "b"], 1)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(test / "b" / "small.png")
        message = "different sizes"
    else:
        message = "--test-root"
        test = None
    with pytest.raises(DataError, match=message):
        load(DataSpec("imagefolder", 0, 0, root=str(tmp_path / "train"), test_root=str(test) if test else None))


def test_an_npz_data_set_loads_and_a_bad_one_names_its_keys(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8) for n in (30, 12))
    y_train, y_test = rng.integers(0, 3, 30), np.array([0, 1, 2] * 4)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(["r", "g", "b"]))
    data = load(DataSpec("npz", 0, 0, root=str(path)))
    assert data.class_names == ("r", "g", "b") and data.image_shape == (3, 16, 16)
    assert torch.equal(data.test_images[4], torch.from_numpy(x_test[4].transpose(2, 0, 1)))
    assert data.test_labels.tolist() == y_test.tolist()
    np.savez(path, x_train=x_train, y_train=y_train, images=x_test)
    with pytest.raises(DataError, match="holds images, x_train, y_train; it needs"):
        load(DataSpec("npz", 0, 0, root=str(path)))
    np.savez(path, x_train=x_train.astype(np.float32), y_train=y_train, x_test=x_test, y_test=y_test)
    with pytest.raises(DataError, match="x_train is float32"):
        load(DataSpec("npz", 0, 0, root=str(path)))


@pytest.mark.parametrize("kind", ["imagefolder", "npz"])
def test_an_image_folder_and_an_npz_go_through_compute_end_to_end(tmp_path, kind):
    from tests.conftest import run_cli

    if kind == "imagefolder":  # not 32 x 32, not square: spatial corruption parameters scale
        write_image_folder(tmp_path / "train", ["a", "b", "c"], 20, size=(48, 40))
        write_image_folder(tmp_path / "test", ["a", "b", "c"], 5, size=(48, 40), seed=1)
        where = ["--data-root", str(tmp_path / "train"), "--test-root", str(tmp_path / "test")]
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8)
        np.savez(tmp_path / "d.npz", x_train=x[:60], y_train=np.arange(60) % 4, x_test=x[60:], y_test=np.arange(20) % 4)
        where = ["--data-root", str(tmp_path / "d.npz")]
    out = tmp_path / "snap"
    result = run_cli(
        "compute", "--preset", "tiny", "--dataset", kind, *where, "--n-test", "0", "--n-train", "0",
        "--methods", "dense,magnitude", "--corruptions", "zoom_blur,glass_blur", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert run_cli("validate", str(out)).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["name"] == kind
    if kind == "imagefolder":
        assert manifest["dataset"]["image_shape"] == [3, 48, 40] and manifest["dataset"]["classes"] == ["a", "b", "c"]
        assert manifest["corruptions"]["spatial_scale"] == 40 / 32


def write_npz(path, y_train=None, y_test=None, size=(8, 8), **arrays):
    """An npz data set of 12 random images in each split, three classes unless labels are given."""
    x = np.random.default_rng(0).integers(0, 256, (12, *size, 3), dtype=np.uint8)
    three = np.arange(12) % 3
    split = {"x_train": x, "y_train": three if y_train is None else y_train, "x_test": x}
    np.savez(path, **{**split, "y_test": three if y_test is None else y_test, **arrays})
    return path


def test_npz_files_a_user_gets_wrong_are_one_line_each(tmp_path):
    path = write_npz(tmp_path / "d.npz", x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.arange(0))
    with pytest.raises(DataError, match="x_test holds no image"):
        load(DataSpec("npz", 0, 0, root=str(path)))
    write_npz(path)
    path.write_bytes(path.read_bytes()[:300])  # cut short
    with pytest.raises(DataError, match="cut short or not a zip archive"):
        load(DataSpec("npz", 0, 0, root=str(path)))
    path.write_text("not an archive at all")
    with pytest.raises(DataError, match="not a zip archive of arrays") as caught:
        load(DataSpec("npz", 0, 0, root=str(path)))
    assert "pickled" not in str(caught.value)
    write_npz(path, classes=np.array(["a"]))
    with pytest.raises(DataError, match="`classes` names 1 classes, but the labels go up to 2 \\(3 classes\\)"):
        load(DataSpec("npz", 0, 0, root=str(path)))


def test_a_single_class_is_refused_at_load(tmp_path):
    path = write_npz(tmp_path / "one.npz", y_test=np.zeros(12, dtype=np.int64))
    with pytest.raises(DataError, match="the test split of .* holds 1 class only; .* at least two classes"):
        load(DataSpec("npz", 0, 0, root=str(path)))
    write_npz(path, y_train=np.zeros(12, dtype=np.int64))
    with pytest.raises(DataError, match="the training split of .* holds 1 class only"):
        load(DataSpec("npz", 0, 0, root=str(path)))


def test_an_architecture_that_pools_small_images_away_is_one_line(tmp_path):
    from tests.conftest import run_cli_here

    path = write_npz(tmp_path / "small.npz", size=(7, 9))
    result = run_cli_here("compute", "--preset", "tiny", "--dataset", "npz", "--data-root", str(path),
                          "--architecture", "conv8", "--out", str(tmp_path / "out"))  # fmt: skip
    line = result.stderr.strip()
    assert result.returncode == 2 and len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert "--architecture conv8 cannot take 7x9 images" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.npz"]
    result = run_cli_here("compute", "--preset", "tiny", "--split-seed", "-3", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--split-seed: -3 is not allowed; it must be 0 or more" in result.stderr
