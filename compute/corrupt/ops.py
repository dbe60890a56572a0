"""Tensor building blocks shared by the corruptions: filters, kernels, resampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def filter2d(x: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "reflect") -> torch.Tensor:
    """Apply one 2-D kernel (or one per sample, shape (N, kh, kw)) to every channel,
    padding so the output keeps its size. `reflect` is cv2's BORDER_REFLECT_101."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape[-2:]
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=padding_mode)
    if kernel.ndim == 2:
        return F.conv2d(padded, kernel.to(x).expand(c, 1, kh, kw), groups=c)
    # per-sample kernels: fold the batch into the channels of one grouped convolution
    weight = kernel.to(x)[:, None].expand(n, c, kh, kw).reshape(n * c, 1, kh, kw)
    out = F.conv2d(padded.reshape(1, n * c, *padded.shape[-2:]), weight, groups=n * c)
    return out.reshape(n, c, h, w)


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2.0 * sigma**2)) if sigma > 0 else (t == 0).double()
    return (k / k.sum()).float()


def symmetric_filter(x: torch.Tensor, taps: list[float], padding_mode: str = "replicate") -> torch.Tensor:
    """Filter every channel's rows, then its columns, with the same symmetric 1-D taps, by
    shifted sums: on the CPU far faster for small images than a depthwise convolution, and
    the same order of additions for every image, batched or alone."""
    radius = len(taps) // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (radius, radius, 0, 0), mode=padding_mode)
    rows = taps[radius] * padded[..., radius : radius + w]
    for i in range(radius):
        rows = rows + taps[i] * (padded[..., i : i + w] + padded[..., 2 * radius - i : 2 * radius - i + w])
    padded = F.pad(rows, (0, 0, radius, radius), mode=padding_mode)
    out = taps[radius] * padded[..., radius : radius + h, :]
    for i in range(radius):
        out = out + taps[i] * (padded[..., i : i + h, :] + padded[..., 2 * radius - i : 2 * radius - i + h, :])
    return out


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur of every channel as skimage.filters.gaussian with its default mode
    'nearest' (replicate padding): radius int(truncate * sigma + 0.5); a radius of zero
    (sigma 0.05 at 32x32) is the identity. (N, C, H, W)."""
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return x
    return symmetric_filter(x, gaussian_kernel1d(sigma, radius).tolist())


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The benchmark's defocus kernel: an aliased disk smoothed by a small Gaussian."""
    half = 8 if radius <= 8 else math.ceil(radius)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).double()
    disk /= disk.sum()
    k1 = gaussian_kernel1d(alias_blur, 1 if radius <= 8 else 2).double()
    smooth = F.conv2d(disk[None, None], (k1[:, None] * k1[None, :])[None, None], padding=len(k1) // 2)[0, 0]
    # weights below 1e-12 (the far tails of a sigma-0.1 alias blur) would be float32
    # denormals, which slow a convolution several times over
    return torch.where(smooth < 1e-12, 0.0, smooth).float()
