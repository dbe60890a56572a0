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


def gaussian_blur(
    x: torch.Tensor, sigma: float, padding_mode: str = "replicate", truncate: float = 4.0
) -> torch.Tensor:
    """Separable Gaussian blur of every channel, as skimage.filters.gaussian: radius
    int(truncate * sigma + 0.5); `replicate` is its default mode 'nearest'. A radius of
    zero (sigma 0.05 at 32x32) is the identity. Works on (N, C, H, W)."""
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return x
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1) if padding_mode == "reflect" else radius
    k = gaussian_kernel1d(sigma, radius).to(x)
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode=padding_mode)
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode=padding_mode)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


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
