"""Blur corruptions: defocus, glass, motion and zoom blur, and the extra Gaussian blur."""

from __future__ import annotations

from compute.corrupt import register
from compute.corrupt.ops import disk_kernel, filter2d


@register("defocus_blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)))
def defocus_blur(x, param, seeds, scale):
    radius, alias_blur = param
    kernel = disk_kernel(radius * scale, alias_blur * scale)
    half = min(kernel.shape[0] // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    centre = kernel.shape[0] // 2
    return filter2d(x, kernel[centre - half : centre + half + 1, centre - half : centre + half + 1])
