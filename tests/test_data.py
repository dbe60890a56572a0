"""Data loaders: the built-in digits set and CIFAR-10 from files in torchvision's format."""

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
