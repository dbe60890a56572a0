"""The released CIFAR-10-C files as conditions: loader, checks, and the compute step on them."""

import io
import json
import re

import numpy as np
import polars as pl
import pytest
from PIL import Image

from compute import schema
from compute.cifar10c import SHAPE, Cifar10CError, check_folder, load_condition
from tests.conftest import run_cli, run_cli_here
from tests.test_data import write_cifar10


def write_cifar10c(folder, test_images: np.ndarray, test_labels: list[int], corruptions, shift=17):
    """Full-size release files (sparse on disk): row (s-1)*10000+i holds test image i at
    severity s, here the image plus a known per-severity shift so rows can be recognised."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(test_labels)
    labels = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.uint8, shape=(SHAPE[0],))
    for s in range(5):
        labels[s * 10_000 : s * 10_000 + n] = test_labels
    labels.flush()
    for name in corruptions:
        array = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.uint8, shape=SHAPE)
        hwc = test_images.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
        for s in range(1, 6):
            array[(s - 1) * 10_000 : (s - 1) * 10_000 + n] = (hwc.astype(np.int32) + shift * s) % 256
        array.flush()


@pytest.fixture
def cifar_root(tmp_path):
    batches = write_cifar10(tmp_path / "cifar", n_per_batch=40)
    data, labels = batches["test_batch"]
    write_cifar10c(tmp_path / "c", data, labels, ["gaussian_noise", "contrast"])
    return tmp_path, data, np.asarray(labels)


def test_rows_come_from_the_right_severity_block(cifar_root):
    tmp, data, labels = cifar_root
    index = np.array([3, 0, 39])
    check_folder(tmp / "c", ["gaussian_noise"], index, labels[index])
    for severity in (1, 4):
        rows = load_condition(tmp / "c", "gaussian_noise", severity, index)
        assert rows.shape == (3, 3, 32, 32) and rows.dtype == np.uint8
        expected = (data[index].reshape(3, 3, 32, 32).astype(np.int32) + 17 * severity) % 256
        np.testing.assert_array_equal(rows, expected)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "frost.npy is missing"),
        ("shape", "expected (50000, 32, 32, 3) uint8"),
        ("dtype", "dtype float32"),
        ("labels", "disagrees with the CIFAR-10 test labels"),
        ("not a folder", "is not a folder"),
    ],
)
def test_bad_folders_get_a_clear_error(cifar_root, damage, message):
    tmp, _, labels = cifar_root
    folder, corruptions = tmp / "c", ["gaussian_noise"]
    index = np.arange(10)
    if damage == "missing":
        corruptions = ["frost"]
    elif damage == "shape":
        np.save(folder / "gaussian_noise.npy", np.zeros((100, 32, 32, 3), np.uint8))
    elif damage == "dtype":
        np.lib.format.open_memmap(folder / "gaussian_noise.npy", mode="w+", dtype=np.float32, shape=SHAPE).flush()
    elif damage == "labels":
        labels = (labels + 1) % 10
    else:
        folder = folder / "labels.npy"
    with pytest.raises(Cifar10CError, match=re.escape(message)):
        check_folder(folder, corruptions, index, labels[index])


def test_compute_evaluates_the_files_instead_of_generating(cifar_root):
    tmp, data, labels = cifar_root
    out = tmp / "snap"
    result = run_cli(
        "compute", "--preset", "tiny", "--out", str(out), "--quiet", "--dataset", "cifar10",
        "--data-root", str(tmp / "cifar"), "--cifar10c", str(tmp / "c"), "--n-test", "0", "--n-train", "0",
        "--methods", "dense,magnitude", "--sparsities", "0.5", "--corruptions", "gaussian_noise,contrast",
        "--severities", "1,5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / schema.MANIFEST).read_text())
    assert manifest["corruptions"]["source"] == "CIFAR-10-C files"
    assert manifest["corruptions"]["path"] == str((tmp / "c").resolve())
    assert run_cli("validate", str(out)).returncode == 0
    conditions = pl.read_parquet(out / schema.CONDITIONS)
    assert conditions["corruption"].to_list() == ["clean"] + ["gaussian_noise"] * 2 + ["contrast"] * 2
    samples = pl.read_parquet(out / schema.SAMPLES)
    assert samples["sample_id"].to_list() == list(range(40)) and samples["label"].to_list() == labels.tolist()


def test_cli_refuses_a_bad_folder_before_training(cifar_root):
    tmp, _, _ = cifar_root
    result = run_cli_here(
        "compute", "--preset", "tiny", "--out", str(tmp / "never"), "--dataset", "cifar10",
        "--data-root", str(tmp / "cifar"), "--cifar10c", str(tmp / "c"), "--corruptions", "frost",
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "frost.npy is missing" in result.stderr
    assert not (tmp / "never").exists()
    result = run_cli_here("compute", "--preset", "tiny", "--out", str(tmp / "never"), "--cifar10c", str(tmp / "c"))
    assert result.returncode == 2 and "--dataset cifar10" in result.stderr


def test_cifar100_c_files_go_with_cifar100(tmp_path):
    from tests.test_data import write_cifar100

    splits = write_cifar100(tmp_path / "cifar", n_train=60, n_test=20)
    data, labels = splits["test"]
    write_cifar10c(tmp_path / "c100", data, labels, ["fog"], shift=5)
    out = tmp_path / "snap"
    result = run_cli(
        "compute", "--preset", "tiny", "--dataset", "cifar100", "--data-root", str(tmp_path / "cifar"),
        "--n-test", "0", "--n-train", "0", "--methods", "dense", "--cifar10c", str(tmp_path / "c100"),
        "--corruptions", "fog", "--severities", "2", "--thumbnail-samples", "20", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    thumbs = pl.read_parquet(out / schema.THUMBNAILS)
    assert len(thumbs) == 20  # every test image under fog 2, read from the files
    first = thumbs.sort("sample_id").row(0, named=True)
    pixels = np.asarray(Image.open(io.BytesIO(first["thumbnail"])).convert("RGB"))
    expected = (data[first["sample_id"]].reshape(3, 32, 32).transpose(1, 2, 0).astype(np.int32) + 10) % 256
    np.testing.assert_array_equal(pixels, expected)
    wrong = run_cli_here(
        "compute", "--preset", "tiny", "--cifar10c", str(tmp_path / "c100"), "--out", str(tmp_path / "x")
    )
    assert wrong.returncode == 2 and "cifar10 or cifar100" in wrong.stderr


def test_some_samples_images_made_again_are_their_release_rows(cifar_root):
    """compute --jobs makes the chosen thumbnails' images again for a few samples: their own rows of
    the release file, in the samples' order, whatever the others."""
    import torch

    from compute.config import ComputeConfig
    from compute.corrupted import SampleImages
    from compute.data import DataSpec, load

    tmp, data, _ = cifar_root
    dataset = load(DataSpec("cifar10", n_test=0, n_train=0, root=str(tmp / "cifar")))
    conditions = schema.build_conditions(("contrast",), (2, 5))
    cfg = ComputeConfig(dataset="cifar10", cifar10c=str(tmp / "c"))
    chosen = np.array([31, 2, 7])
    images = SampleImages(dataset, chosen, conditions, cfg, torch.device("cpu"))
    assert images.dataset.test_index.tolist() == [2, 7, 31]
    for condition in conditions:
        shift = 0 if condition.corruption == schema.CLEAN else 17 * condition.severity
        expected = (data[[2, 7, 31]].reshape(3, 3, 32, 32).astype(np.int32) + shift) % 256
        np.testing.assert_array_equal(images.images(condition).numpy(), expected)
