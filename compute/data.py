"""Data sets: a registry of loaders that return uint8 image tensors (N, 3, H, W).

Images stay uint8 until a batch goes into a model, as in the CIFAR-10-C files: the
corruptions work on x/255 and truncate back to uint8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compute.config import InputError


class DataError(InputError):
    """A data set cannot be loaded; the message names the problem and the fix."""


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]
    train_images: torch.Tensor  # uint8 (N, 3, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    #: position of each test image in the source's test order (CIFAR-10-C rows use it)
    test_index: torch.Tensor
    #: random crop/flip policy for training
    augment_flip: bool

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images in [0, 1]."""
        x = self.train_images.double() / 255.0
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return mean.tolist(), std.tolist()


@dataclass(frozen=True)
class DataSpec:
    """What the compute config says about data."""

    name: str
    n_test: int  # 0 means the whole test set
    n_train: int  # 0 means the whole training set
    split_seed: int = 0
    root: str | None = None


Loader = Callable[[DataSpec], Dataset]
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def wrap(loader: Loader) -> Loader:
        DATASETS[name] = loader
        return loader

    return wrap


def load(spec: DataSpec) -> Dataset:
    if spec.name not in DATASETS:
        raise DataError(f"unknown data set {spec.name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[spec.name](spec)


def _subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified subset of size n (all indices, in order, when n is 0)."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(kept)


@register("digits")
def load_digits(spec: DataSpec) -> Dataset:
    """scikit-learn's handwritten digits (1,797 8x8 images), as 32x32 RGB."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # (N,1,8,8) in [0,1]
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = digits.target.astype(np.int64)

    n_test = spec.n_test or 360
    if not 10 <= n_test <= len(labels) - 100:
        raise DataError(
            f"n_test={n_test} does not fit the digits data set ({len(labels)} images); choose 10 to {len(labels) - 100}"
        )
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=spec.split_seed
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train_idx = train_idx[_subsample(labels[train_idx], spec.n_train, spec.split_seed)]
    return Dataset(
        name="digits",
        class_names=tuple(str(c) for c in range(10)),
        train_images=images[train_idx],
        train_labels=torch.from_numpy(labels[train_idx]),
        test_images=images[test_idx],
        test_labels=torch.from_numpy(labels[test_idx]),
        test_index=torch.from_numpy(test_idx),
        augment_flip=False,
    )


CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _cifar10_split(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        # torchvision checks md5 sums of the full release; we check presence here and
        # shapes below, so a partial or test copy in the same format also loads.
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    try:
        ds = LocalCIFAR10(str(root), train=train, download=False)
    except RuntimeError as err:
        raise DataError(
            f"CIFAR-10 not found under {root}/cifar-10-batches-py ({err}); download it once "
            f"with `python -c \"import torchvision; torchvision.datasets.CIFAR10('{root}', "
            'download=True)"` and pass --data-root ' + str(root)
        ) from err
    data, targets = np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise DataError(f"CIFAR-10 under {root} has images of shape {data.shape}, not (N, 32, 32, 3)")
    if len(targets) != len(data) or targets.min() < 0 or targets.max() > 9:
        raise DataError(f"CIFAR-10 under {root} has labels that are not 0-9, one per image")
    return data, targets


@register("cifar10")
def load_cifar10(spec: DataSpec) -> Dataset:
    """CIFAR-10 in torchvision's on-disk format under `--data-root`."""
    if not spec.root:
        raise DataError("the cifar10 data set needs --data-root PATH (the folder holding cifar-10-batches-py)")
    root = Path(spec.root).expanduser()
    train_x, train_y = _cifar10_split(root, train=True)
    test_x, test_y = _cifar10_split(root, train=False)
    test_idx = _subsample(test_y, spec.n_test, spec.split_seed)
    train_idx = _subsample(train_y, spec.n_train, spec.split_seed)

    def chw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    return Dataset(
        name="cifar10",
        class_names=CIFAR10_CLASSES,
        train_images=chw(train_x[train_idx]),
        train_labels=torch.from_numpy(train_y[train_idx]),
        test_images=chw(test_x[test_idx]),
        test_labels=torch.from_numpy(test_y[test_idx]),
        test_index=torch.from_numpy(test_idx),
        augment_flip=True,
    )
