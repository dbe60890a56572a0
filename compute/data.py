"""Data sets: a registry of loaders that return uint8 image tensors (N, 3, H, W).

Images stay uint8 until a batch goes into a model, as in the CIFAR-10-C files: the
corruptions work on x/255 and truncate back to uint8.
"""

from __future__ import annotations

import zipfile
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

    def stratified_test_order(self, seed: int) -> np.ndarray:
        """Every test sample id in a class-stratified random order: a seeded shuffle, dealt
        round-robin over the classes, so that any prefix is balanced across them."""
        ids = self.test_index.numpy()
        labels = dict(zip(ids.tolist(), self.test_labels.tolist(), strict=True))
        by_class: dict[int, list[int]] = {}
        for sample in np.random.default_rng(seed).permutation(ids).tolist():
            by_class.setdefault(labels[sample], []).append(sample)
        order: list[int] = []
        while len(order) < len(ids):
            for members in by_class.values():
                if members:
                    order.append(members.pop())
        return np.asarray(order, dtype=np.int64)

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
    test_root: str | None = None  # image folders: the test images (root holds the training ones)


def spec_of(cfg) -> DataSpec:
    """The data set a compute configuration names."""
    return DataSpec(cfg.dataset, cfg.n_test, cfg.n_train, cfg.split_seed, cfg.data_root, cfg.test_root)


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
    dataset = DATASETS[spec.name](spec)
    check_classes(dataset, spec)
    return dataset


def check_classes(dataset: Dataset, spec: DataSpec) -> None:
    """A classifier's metrics need two classes: a test split of one class has no margin to another
    (every logit margin would be infinite), and training on one class learns nothing."""
    where = spec.root or spec.name
    for split, labels in (("test", dataset.test_labels), ("training", dataset.train_labels)):
        if split == "training" and len(labels) == 0:
            continue  # evaluate needs no training split
        found = len(set(labels.tolist()))
        if found < 2:
            raise DataError(
                f"the {split} split of {where} holds {'no image' if not len(labels) else f'{found} class only'}; "
                "prunescope needs images of at least two classes"
            )


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


def _cifar_split(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images (N, 32, 32, 3), labels and class names of one split of CIFAR-10 or CIFAR-100
    (its 100 fine labels) in torchvision's on-disk format under `root`."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100
    classes = 10 if name == "cifar10" else 100

    class LocalCIFAR(base):
        # torchvision checks md5 sums of the full release; we check presence here and
        # shapes below, so a partial or test copy in the same format also loads.
        train_list = [[file, None] for file, _ in base.train_list]
        test_list = [[file, None] for file, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    try:
        ds = LocalCIFAR(str(root), train=train, download=False)
    except (RuntimeError, OSError, KeyError) as err:
        raise DataError(
            f"{name.upper()} not found or unreadable under {root}/{base.base_folder} ({err}); download it once with "
            f"`python -c \"import torchvision; torchvision.datasets.{base.__name__}('{root}', download=True)\"` "
            f"and pass --data-root {root}"
        ) from err
    data, targets = np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise DataError(f"{name} under {root} has images of shape {data.shape}, not (N, 32, 32, 3)")
    if len(targets) != len(data) or targets.min() < 0 or targets.max() >= classes:
        raise DataError(f"{name} under {root} has labels that are not 0-{classes - 1}, one per image")
    names = tuple(ds.classes) if len(ds.classes) == classes else tuple(str(c) for c in range(classes))
    return data, targets, names


def _chw(x: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _from_splits(
    name: str, spec: DataSpec, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...], flip: bool,
) -> Dataset:  # fmt: skip
    """A Dataset from (N, H, W, 3) uint8 splits, with the --n-test / --n-train subsets."""
    test_idx = _subsample(test[1], spec.n_test, spec.split_seed)
    train_idx = _subsample(train[1], spec.n_train, spec.split_seed)
    return Dataset(
        name=name,
        class_names=class_names,
        train_images=_chw(train[0][train_idx]),
        train_labels=torch.from_numpy(train[1][train_idx]),
        test_images=_chw(test[0][test_idx]),
        test_labels=torch.from_numpy(test[1][test_idx]),
        test_index=torch.from_numpy(test_idx),
        augment_flip=flip,
    )


def _cifar(name: str, spec: DataSpec) -> Dataset:
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if not spec.root:
        raise DataError(f"the {name} data set needs --data-root PATH (the folder holding {folder})")
    root = Path(spec.root).expanduser()
    train_x, train_y, names = _cifar_split(name, root, train=True)
    test_x, test_y, _ = _cifar_split(name, root, train=False)
    return _from_splits(name, spec, (train_x, train_y), (test_x, test_y), names, flip=True)


@register("cifar10")
def load_cifar10(spec: DataSpec) -> Dataset:
    """CIFAR-10 in torchvision's on-disk format under `--data-root`."""
    return _cifar("cifar10", spec)


@register("cifar100")
def load_cifar100(spec: DataSpec) -> Dataset:
    """CIFAR-100 (the 100 fine classes) in torchvision's on-disk format under `--data-root`."""
    return _cifar("cifar100", spec)


def _image_folder(path: Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image of an ImageFolder layout (a sub-folder per class), as (N, H, W, 3) uint8."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not path.is_dir():
        raise DataError(f"{path} is not a folder; give a folder with one sub-folder of images per class")
    try:
        found, _ = find_classes(str(path))
    except FileNotFoundError:
        entries = sorted(p.name for p in path.iterdir())[:5]
        raise DataError(
            f"{path} has no class sub-folders (found {', '.join(entries) or 'nothing'}); an image folder holds "
            "one sub-folder of images per class, as torchvision's ImageFolder reads it"
        ) from None
    if classes is not None and found != classes:
        raise DataError(f"{path} has the classes {found[:5]}..., the training folder {classes[:5]}...; they must match")
    index = {c: i for i, c in enumerate(found)}
    try:
        samples = make_dataset(str(path), index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise DataError(f"{path}: {err}; every class sub-folder needs at least one image") from None
    images, sizes = [], set()
    for file, _ in samples:
        with Image.open(file) as picture:
            pixels = np.asarray(picture.convert("RGB"), dtype=np.uint8)
        sizes.add(pixels.shape[:2])
        if len(sizes) > 1:
            raise DataError(
                f"{path}: images of different sizes ({' and '.join(f'{h}x{w}' for h, w in sorted(sizes))}, e.g. "
                f"{file}); resize them to one size first"
            )
        images.append(pixels)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return np.stack(images), labels, found


@register("imagefolder")
def load_image_folder(spec: DataSpec) -> Dataset:
    """Images in torchvision's ImageFolder layout: --data-root the training folder and
    --test-root the test folder, each with one sub-folder per class (the same classes)."""
    if not spec.test_root:
        raise DataError("the imagefolder data set needs --test-root TEST_FOLDER (and, to train, --data-root TRAIN)")
    if spec.root:
        train_x, train_y, classes = _image_folder(Path(spec.root).expanduser())
        test_x, test_y, _ = _image_folder(Path(spec.test_root).expanduser(), classes)
    else:  # evaluating given models needs no training images
        test_x, test_y, classes = _image_folder(Path(spec.test_root).expanduser())
        train_x, train_y = test_x[:0], test_y[:0]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"training images are {train_x.shape[1:3]}, test images {test_x.shape[1:3]}; use one size")
    return _from_splits("imagefolder", spec, (train_x, train_y), (test_x, test_y), tuple(classes), flip=True)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@register("npz")
def load_npz(spec: DataSpec) -> Dataset:
    """A .npz file (--data-root) with uint8 images x_train, x_test of shape (N, H, W, 3)
    and integer labels y_train, y_test; class names in an optional `classes` array."""
    if not spec.root:
        raise DataError("the npz data set needs --data-root FILE.npz (arrays x_train, y_train, x_test, y_test)")
    path = Path(spec.root).expanduser()
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a text file, a cut-off archive
        # numpy calls any file that is not an archive "pickled data": say what it is instead
        unreadable = isinstance(err, OSError) and not isinstance(err, zipfile.BadZipFile)
        reason = err.strerror or err if unreadable else "it is cut short or not a zip archive of arrays"
        raise DataError(f"{path} is not a readable .npz file ({reason}); write it with numpy.savez") from None
    missing = [key for key in NPZ_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{path} holds {', '.join(sorted(arrays)) or 'no arrays'}; it needs {', '.join(NPZ_KEYS)}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
            raise DataError(f"{path}: x_{split} is {x.dtype} {x.shape}; it must be uint8 (N, H, W, 3)")
        if split == "test" and len(x) == 0:
            raise DataError(f"{path}: x_test holds no image; it needs the test images, uint8 (N, H, W, 3)")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise DataError(f"{path}: y_{split} must hold one label 0, 1, ... per image of x_{split}")
    n_classes = int(np.concatenate([arrays["y_train"], arrays["y_test"]]).max()) + 1  # x_test is never empty
    names = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else tuple(map(str, range(n_classes)))
    if len(names) < n_classes:
        raise DataError(
            f"{path}: `classes` names {len(names)} classes, but the labels go up to {n_classes - 1} ({n_classes} "
            "classes); give one name per class"
        )
    train = (arrays["x_train"], arrays["y_train"].astype(np.int64))
    test = (arrays["x_test"], arrays["y_test"].astype(np.int64))
    return _from_splits("npz", spec, train, test, names, flip=False)
