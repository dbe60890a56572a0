"""The released CIFAR-10-C files (Hendrycks & Dietterich 2019) as test conditions.

The folder holds `<corruption>.npy`, uint8 of shape (50000, 32, 32, 3) HWC RGB, where row
(s - 1) * 10000 + i is test image i at severity s, and `labels.npy` (50000,), the test
labels five times. Files are memory-mapped: only the rows of the evaluated test images
are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compute.config import InputError

ROWS_PER_SEVERITY = 10_000
SHAPE = (5 * ROWS_PER_SEVERITY, 32, 32, 3)


class Cifar10CError(InputError):
    """The CIFAR-10-C folder cannot serve the requested conditions."""


def _open(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise Cifar10CError(
            f"{path} is missing; --cifar10c must point at the folder of the released CIFAR-10-C files "
            f"({what}), e.g. the extracted CIFAR-10-C.tar"
        )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise Cifar10CError(f"{path} is not a readable .npy file ({err}); re-extract CIFAR-10-C.tar") from err


def check_folder(folder: str | Path, corruptions: list[str], test_index: np.ndarray, test_labels: np.ndarray) -> None:
    """Raise Cifar10CError unless every requested file is there, well-formed, and its
    labels agree with the test set. Cheap: reads headers and the labels only."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise Cifar10CError(f"--cifar10c: {folder} is not a folder; point it at the extracted CIFAR-10-C files")
    labels = _open(folder / "labels.npy", "labels.npy")
    if labels.shape != (SHAPE[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise Cifar10CError(
            f"{folder / 'labels.npy'} has shape {labels.shape} and dtype {labels.dtype}; "
            f"expected ({SHAPE[0]},) integers, the test labels five times"
        )
    if test_index.max(initial=-1) >= ROWS_PER_SEVERITY:
        raise Cifar10CError(
            f"test index {int(test_index.max())} is beyond the {ROWS_PER_SEVERITY} CIFAR-10 test images"
        )
    for severity in range(1, 6):
        rows = (severity - 1) * ROWS_PER_SEVERITY + test_index
        disagree = np.flatnonzero(np.asarray(labels[rows]) != test_labels)
        if disagree.size:
            raise Cifar10CError(
                f"{folder / 'labels.npy'} disagrees with the CIFAR-10 test labels at severity {severity} for "
                f"{disagree.size} images (first: test image {int(test_index[disagree[0]])}); "
                "the files must come from the same CIFAR-10 test set, in its order"
            )
    for name in corruptions:
        array = _open(folder / f"{name}.npy", f"{name}.npy")
        if array.shape != SHAPE or array.dtype != np.uint8:
            raise Cifar10CError(
                f"{folder / f'{name}.npy'} has shape {array.shape} and dtype {array.dtype}; expected {SHAPE} uint8"
            )


def load_condition(folder: str | Path, corruption: str, severity: int, test_index: np.ndarray) -> np.ndarray:
    """The test images under one condition as uint8 (N, 3, 32, 32), in `test_index` order."""
    array = _open(Path(folder).expanduser() / f"{corruption}.npy", f"{corruption}.npy")
    rows = (severity - 1) * ROWS_PER_SEVERITY + np.asarray(test_index)
    return np.ascontiguousarray(np.asarray(array[rows]).transpose(0, 3, 1, 2))
