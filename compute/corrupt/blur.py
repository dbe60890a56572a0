"""Blur corruptions: defocus, glass, motion and zoom blur, and the extra Gaussian blur.

The weather corruptions share the helpers defined here: per-sample random angles, the
original's clipped_zoom and ImageMagick's motion blur.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from compute import rng
from compute.corrupt import ops, register
from compute.corrupt.ops import disk_kernel, filter2d

# Linear filters whose weights are multiples of 2**-16 with rows summing to exactly 1 give
# exact float32 sums on 0..255 integers (below 2**8 in steps of 2**-16: 24 bits): the result
# does not depend on the order of the additions, so a batch equals its images one at a
# time, bit for bit, and flat areas keep their exact value.
_WEIGHT_BITS = 16


def random_angle(seeds: torch.Tensor, stream: int, low: float, high: float) -> torch.Tensor:
    """One angle per sample, uniform in [low, high) degrees, in float64."""
    return low + (high - low) * rng.uniform(seeds, (), stream).double()


@register("defocus_blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)))
def defocus_blur(x, param, seeds, scale):
    radius, alias_blur = param
    kernel = disk_kernel(radius * scale, alias_blur * scale)
    # the 17x17 kernel is zero beyond the blurred disk: convolve with its support only
    centre = kernel.shape[0] // 2
    support = int((kernel.nonzero() - centre).abs().max())
    half = min(support, x.shape[-1] - 1, x.shape[-2] - 1)
    return filter2d(x, kernel[centre - half : centre + half + 1, centre - half : centre + half + 1])


# -- glass blur ---------------------------------------------------------------------------


def truncate_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """np.uint8(x * 255) / 255 of an x in [0, 1]: the original's cast between steps."""
    return torch.floor(x.clamp(0.0, 1.0) * 255.0) / 255.0


def local_shuffle(x: torch.Tensor, seeds: torch.Tensor, max_delta: int, iterations: int, stream: int = 0):
    """The original's local pixel shuffle as one gather per pass: out[h, w] = in[h + dy, w + dx]
    with dy, dx uniform in [-max_delta, max_delta) for max_delta < h, w <= side - max_delta
    (31 down to 2 at 32x32), other pixels unchanged. The original swaps pixel pairs one at a
    time; docs/CORRUPTIONS.md defines the gather, which moves every pixel independently."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    movable = ((rows > max_delta) & (rows <= h - max_delta))[:, None] & ((cols > max_delta) & (cols <= w - max_delta))
    here = rows[:, None] * w + cols
    flat = x.reshape(n, c, h * w)
    for i in range(iterations):
        delta = rng.integers(seeds, (2, h, w), stream + i, -max_delta, max_delta)
        source = torch.where(movable, here + delta[:, 0] * w + delta[:, 1], here)
        flat = flat.gather(2, source.reshape(n, 1, h * w).expand(n, c, h * w))
    return flat.reshape(n, c, h, w)


@register("glass_blur", ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)))
def glass_blur(x, param, seeds, scale):
    sigma, max_delta, iterations = param
    x = truncate_to_uint8(ops.gaussian_blur(x, sigma * scale))
    x = local_shuffle(x, seeds, max(1, round(max_delta * scale)), iterations)
    return ops.gaussian_blur(x, sigma * scale)


# -- motion blur --------------------------------------------------------------------------


def motion_kernel(radius: float, sigma: float) -> torch.Tensor:
    """ImageMagick's one-sided motion kernel: width 2*ceil(radius)+1, weights exp(-i^2/2s^2)
    normalised to sum 1 (float64)."""
    i = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def motion_offsets(angles: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tap i of ImageMagick's MotionBlurImage reads the pixel at (x + ceil(i cos a - 1/2),
    y + ceil(i sin a - 1/2)); (N, width) row and column offsets for angles (N,) in degrees."""
    theta = torch.deg2rad(angles.double())[:, None]
    point_x, point_y = width * torch.sin(theta), width * torch.cos(theta)  # ImageMagick's names
    length = torch.hypot(point_x, point_y)
    i = torch.arange(width, dtype=torch.float64, device=angles.device)
    dx = torch.ceil(i * point_y / length - 0.5).long()
    dy = torch.ceil(i * point_x / length - 0.5).long()
    return dy, dx


def directional_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur with edge pixels replicated, one angle per sample: a
    weighted sum of per-sample shifted copies. Taps with weight below 1e-9 (beyond ~6 sigma)
    are skipped; they cannot move a result by a visible amount."""
    n, c, h, w = x.shape
    weights = motion_kernel(radius, sigma)
    dy, dx = motion_offsets(angles.to(x.device), len(weights))
    reach = int(max(dx.abs().max(), 1))
    # every shifted copy is a window of one row padded by `reach` replicated pixels per side:
    # read it through an overlapping strided view, one row start per (sample, channel, row)
    padded = F.pad(x, (reach, reach, 0, 0), mode="replicate").reshape(-1)
    row_length = w + 2 * reach
    windows = padded.as_strided((padded.numel() - w + 1, w), (1, 1))
    plane_starts = torch.arange(n * c, device=x.device).view(n, c, 1) * (h * row_length)
    rows = torch.arange(h, device=x.device)
    out = torch.zeros_like(x)
    for i, weight in enumerate(weights.tolist()):
        if weight < 1e-9:
            continue
        source_rows = (rows + dy[:, i : i + 1]).clamp(0, h - 1)  # (n, h)
        starts = plane_starts + (source_rows * row_length + reach + dx[:, i : i + 1])[:, None, :]
        # multiply, then add (no fused alpha): the same rounding wherever the image sits in the batch
        out += windows.index_select(0, starts.reshape(-1)).view(n, c, h, w).mul_(weight)
    return out


def to_nearest_uint8(x: torch.Tensor) -> torch.Tensor:
    """Half a uint8 step up: ImageMagick rounds to 8 bits where corrupt() truncates."""
    return x + 0.5 / 255.0


@register("motion_blur", ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)))
def motion_blur(x, param, seeds, scale):
    radius, sigma = param
    angles = random_angle(seeds, 0, -45.0, 45.0)
    return to_nearest_uint8(directional_blur(x, radius * scale, sigma * scale, angles))


# -- zoom blur ----------------------------------------------------------------------------


def zoom_factors(end: float) -> tuple[float, ...]:
    """np.arange(1, end, 0.01) exactly as the original evaluates it: floating point puts
    `end` itself in the range for 1.06 and 1.11 (7 and 12 factors), not for the others."""
    return tuple(float(z) for z in np.arange(1.0, end, 0.01))


@lru_cache(maxsize=256)
def zoom_taps(side: int, factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The original's clipped_zoom along one axis: crop the centre ceil(side/z) pixels, zoom
    them with scipy.ndimage.zoom(order=1) to round(crop*z) pixels (output o reads input
    o*(crop-1)/(out-1)), trim to `side`. Returns (low index, high index, weight of high)."""
    crop = math.ceil(side / factor)
    top = (side - crop) // 2
    zoomed = int(round(crop * factor))
    trim = (zoomed - side) // 2
    step = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0
    position = torch.arange(trim, trim + side, dtype=torch.float64) * step
    low = position.floor().clamp(max=crop - 1)
    frac = position - low
    low = low.long()
    return top + low, top + (low + 1).clamp(max=crop - 1), frac


def zoom_matrix(side: int, factor: float) -> torch.Tensor:
    """clipped_zoom along one axis as a (side, side) float64 matrix."""
    low, high, frac = zoom_taps(side, factor)
    matrix = torch.zeros(side, side, dtype=torch.float64)
    rows = torch.arange(side)
    matrix.index_put_((rows, low), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The original's clipped_zoom of every image and channel: two separable linear passes."""
    h, w = x.shape[-2:]
    low, high, frac = (t.to(x.device) for t in zoom_taps(h, factor))
    frac = frac.to(x.dtype)[:, None]
    x = x.index_select(-2, low) * (1.0 - frac) + x.index_select(-2, high) * frac
    low, high, frac = (t.to(x.device) for t in zoom_taps(w, factor))
    frac = frac.to(x.dtype)
    return x.index_select(-1, low) * (1.0 - frac) + x.index_select(-1, high) * frac


def exact_weights(matrix: torch.Tensor) -> torch.Tensor:
    """Round a non-negative row-stochastic matrix to multiples of 2**-16 with rows summing to
    1 exactly: round down, then give the missing units to the largest remainders."""
    unit = 2.0**_WEIGHT_BITS
    scaled = matrix * unit
    q = scaled.floor()
    missing = (unit - q.sum(dim=1)).round().long()  # (rows,), fewer than the row's nonzeros
    order = (scaled - q).argsort(dim=1, descending=True)
    bonus = (torch.arange(matrix.shape[1])[None, :] < missing[:, None]).to(q.dtype)
    q.scatter_add_(1, order, bonus)
    return q / unit


@lru_cache(maxsize=32)
def zoom_blur_blocks(h: int, w: int, factors: tuple[float, ...], device: torch.device, block_rows: int = 4):
    """The zoom blur as one (h*w, h*w) matrix: the mean of the identity (the image itself)
    and the Kronecker products of the per-axis zooms. It is banded (a zoom by at most 1.26
    moves a pixel by a few rows), so it is stored as blocks of `block_rows` output rows with
    the slice of input columns they read: (output slice, input slice, transposed block)."""
    total = torch.eye(h * w, dtype=torch.float64)
    for z in factors:
        total += torch.kron(zoom_matrix(h, z), zoom_matrix(w, z))
    total = exact_weights(total / (len(factors) + 1))
    blocks = []
    for top in range(0, h, block_rows):
        out_rows = slice(top * w, min(top + block_rows, h) * w)
        used = total[out_rows].abs().sum(dim=0).nonzero().squeeze(1)
        in_cols = slice(int(used.min()), int(used.max()) + 1)
        blocks.append((out_rows, in_cols, total[out_rows, in_cols].T.float().contiguous().to(device)))
    return blocks


def zoom_mean_dense(x: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """Zoom blur by banded matrix products on the 0..255 scale (exact sums, see _WEIGHT_BITS)."""
    n, c, h, w = x.shape
    flat = (x * 255.0).reshape(n * c, h * w)
    parts = [flat[:, cols] @ block for _, cols, block in zoom_blur_blocks(h, w, factors, x.device)]
    return (torch.cat(parts, dim=1) / 255.0).reshape(n, c, h, w)


def zoom_mean_separable(x: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """Zoom blur one zoom at a time: for images too large for the dense operator."""
    out = x.clone()
    for z in factors:
        out += clipped_zoom(x, z)
    return out / (len(factors) + 1)


@register("zoom_blur", (1.06, 1.11, 1.16, 1.21, 1.26))
def zoom_blur(x, end, seeds, scale):
    factors = zoom_factors(end)
    if x.shape[-2] * x.shape[-1] <= 32 * 32:
        return zoom_mean_dense(x, factors)
    return zoom_mean_separable(x, factors)


# -- gaussian blur (extra) ----------------------------------------------------------------


@register("gaussian_blur", (0.4, 0.6, 0.7, 0.8, 1.0))
def gaussian_blur(x, sigma, seeds, scale):
    return ops.gaussian_blur(x, sigma * scale)
