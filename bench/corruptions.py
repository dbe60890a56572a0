"""Images per second of every corruption on 10,000 32x32 images, against `imagecorruptions`.

Ours: compute.corrupt on the whole batch (chunks of --batch), all five severities timed,
severity 3 reported. Baseline: the per-image functions of the `imagecorruptions` package
(ImageNet strengths) at severity 3 on the same images, timed on the first --baseline
images and reported per image; where a function fails at 32x32 the table says so.
Ratio = our images/s / baseline images/s; overall = summed time over the corruptions that
ran in both, scaled to 10,000 images.

Run: python bench/corruptions.py [--images 10000] [--baseline 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from compute import corrupt
from compute.data import DataSpec, load


def bench_images(n: int, seed: int = 0) -> torch.Tensor:
    """n real digits (scikit-learn's), each with a random colour tint and background, uint8 (n, 3, 32, 32)."""
    digits = load(DataSpec("digits", n_test=360, n_train=0))
    pool = torch.cat([digits.train_images, digits.test_images]).float() / 255
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(pool), (n,), generator=gen)
    ink = torch.rand(n, 3, 1, 1, generator=gen)
    paper = torch.rand(n, 3, 1, 1, generator=gen) * 0.5
    images = paper + (ink - paper) * pool[idx]
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def import_imagecorruptions():
    """imagecorruptions 1.1.2 predates numpy 2, scikit-image 0.19 and setuptools 81. Three
    renames, not 32x32 images, stop some of its functions here; shims restore the old names
    so the baseline measures the package's real work:
    - pkg_resources.resource_filename (only used to locate the frost textures);
    - skimage.filters.gaussian(multichannel=...) -> channel_axis (glass blur, Gaussian blur);
    - np.float_ -> np.float64 (fog)."""
    if importlib.util.find_spec("imagecorruptions") is None:
        sys.exit("bench/corruptions.py needs the baseline package: pip install imagecorruptions")
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda module, path: str(Path(sys.modules[module].__file__).parent / path)
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import skimage.filters

    modern_gaussian = skimage.filters.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return modern_gaussian(image, *args, **kwargs)

    skimage.filters.gaussian = gaussian  # before imagecorruptions imports it by name
    import imagecorruptions

    return imagecorruptions


def time_ours(images: torch.Tensor, name: str, batch: int) -> dict[int, float]:
    """Seconds per severity for the whole set."""
    seeds = torch.arange(len(images))
    corrupt.corrupt_uint8(images[:8], name, 1, seeds[:8])  # first-call set-up (imports, caches) is not timed
    out = {}
    for severity in range(1, 6):
        start = time.perf_counter()
        for lo in range(0, len(images), batch):
            corrupt.corrupt_uint8(images[lo : lo + batch], name, severity, seeds[lo : lo + batch])
        out[severity] = time.perf_counter() - start
    return out


def time_baseline(ic, images: np.ndarray, name: str) -> tuple[float | None, str]:
    """Seconds per image at severity 3, or None and the error."""
    np.random.seed(0)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for image in images:
                result = ic.corrupt(image, corruption_name=name, severity=3)
                if np.asarray(result).shape[:2] != image.shape[:2]:
                    return None, f"returns shape {np.asarray(result).shape}"
    except Exception as err:  # noqa: BLE001 - the point is to report what fails at 32x32
        return None, f"{type(err).__name__}: {str(err).splitlines()[0][:60]}"
    return (time.perf_counter() - start) / len(images), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=200, help="images the baseline is timed on")
    parser.add_argument("--batch", type=int, default=2_000, help="images per call of ours")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ic = import_imagecorruptions()
    images = bench_images(args.images)
    hwc = images[: args.baseline].permute(0, 2, 3, 1).numpy()
    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads")
    print(f"{args.images} images of 32x32 (digits with random colours); baseline timed on {len(hwc)} of them\n")
    print(f"{'corruption':<18}{'ours img/s':>12}{'(sev 1..5 s)':>28}{'baseline img/s':>16}{'ratio':>9}  note")
    ours_total = base_total = 0.0
    for name in corrupt.CORRUPTIONS:
        seconds = time_ours(images, name, args.batch)
        ours_ips = args.images / seconds[3]
        per_image, note = time_baseline(ic, hwc, name)
        severities = " ".join(f"{seconds[s]:.2f}" for s in range(1, 6))
        if per_image is None:
            print(f"{name:<18}{ours_ips:>12,.0f}{severities:>28}{'fails':>16}{'':>9}  {note}")
            continue
        base_ips = 1.0 / per_image
        ours_total += seconds[3]
        base_total += per_image * args.images
        print(f"{name:<18}{ours_ips:>12,.0f}{severities:>28}{base_ips:>16,.0f}{ours_ips / base_ips:>8.0f}x  {note}")
    print(
        f"\noverall (corruptions that run in both, severity 3, {args.images} images): ours {ours_total:.1f} s, "
        f"baseline {base_total:.1f} s -> {base_total / ours_total:.0f}x faster"
    )


if __name__ == "__main__":
    main()
