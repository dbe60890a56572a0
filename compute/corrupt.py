"""Common corruptions at CIFAR scale (CORRUPTIONS.md), batched tensor code for CPU and CUDA.

Every corruption maps a batch x (N, 3, H, W) float in [0, 1] to the same shape, quantised
like the original benchmark: clip to [0, 1], scale to [0, 255], truncate to an integer.
Randomness comes from one seed per sample (compute.rng), so a batch gives the same result
as its images one at a time. Spatial parameters are given for 32x32 images and scale
with the image side on other sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compute import rng
from compute.schema import CORRUPTION_FAMILIES

#: fn(x, severity parameter, per-sample seeds, spatial scale) -> corrupted x (unquantised)
CorruptionFn = Callable[[torch.Tensor, object, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str
    params: tuple  # one entry per severity 1..5
    fn: CorruptionFn


CORRUPTIONS: dict[str, Corruption] = {}


def register(name: str, params: tuple) -> Callable[[CorruptionFn], CorruptionFn]:
    if len(params) != 5:
        raise ValueError(f"{name}: need parameters for 5 severities, got {len(params)}")

    def wrap(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = Corruption(name, CORRUPTION_FAMILIES[name], tuple(params), fn)
        return fn

    return wrap


def quantize(x: torch.Tensor) -> torch.Tensor:
    """clip to [0, 1], then floor to the uint8 grid, as the benchmark's final uint8 cast."""
    return torch.floor(x.clamp(0.0, 1.0) * 255.0) / 255.0


def corrupt(x: torch.Tensor, name: str, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    """Corrupt a float batch in [0, 1]; `seeds` holds one int seed per image."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1 to 5, got {severity}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch of shape (N, 3, H, W), got {tuple(x.shape)}")
    spec = CORRUPTIONS[name]
    scale = x.shape[-1] / 32.0
    seeds = torch.as_tensor(seeds, dtype=torch.int64, device=x.device).reshape(-1)
    return quantize(spec.fn(x.float(), spec.params[severity - 1], seeds, scale))


def corrupt_uint8(images: torch.Tensor, name: str, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) in, uint8 out: the storage format of CIFAR-10-C."""
    out = corrupt(images.float() / 255.0, name, severity, seeds)
    return torch.round(out * 255.0).to(torch.uint8)


# --- shared building blocks ------------------------------------------------------


def filter2d(x: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "reflect") -> torch.Tensor:
    """Apply one 2-D kernel to every channel, padding so the output keeps its size."""
    kh, kw = kernel.shape
    c = x.shape[1]
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    padded = F.pad(x, pad, mode=padding_mode)
    weight = kernel.to(x).expand(c, 1, kh, kw)
    return F.conv2d(padded, weight, groups=c)


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2.0 * sigma**2))
    return (k / k.sum()).float()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The benchmark's defocus kernel: an aliased disk smoothed by a small Gaussian."""
    half = 8 if radius <= 8 else math.ceil(radius)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).double()
    disk /= disk.sum()
    k1 = gaussian_kernel1d(alias_blur, 1 if radius <= 8 else 2).double()
    smooth = F.conv2d(disk[None, None], (k1[:, None] * k1[None, :])[None, None], padding=len(k1) // 2)
    return smooth[0, 0].float()


# --- noise -----------------------------------------------------------------------


@register("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x, sigma, seeds, scale):
    return x + sigma * rng.normal(seeds, tuple(x.shape[1:])).to(x.device)


# --- blur ------------------------------------------------------------------------


@register("defocus_blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)))
def defocus_blur(x, param, seeds, scale):
    radius, alias_blur = param
    kernel = disk_kernel(radius * scale, alias_blur * scale)
    half = min(kernel.shape[0] // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    centre = kernel.shape[0] // 2
    kernel = kernel[centre - half : centre + half + 1, centre - half : centre + half + 1]
    return filter2d(x, kernel)


# --- digital ---------------------------------------------------------------------


@register("contrast", (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x, c, seeds, scale):
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means
