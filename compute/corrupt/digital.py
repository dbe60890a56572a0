"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG, and the extra saturate."""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from compute import rng
from compute.corrupt import register
from compute.corrupt.ops import gaussian_kernel1d

# -- brightness and saturate: HSV edits in closed form ------------------------------------
#
# skimage's hsv2rgb writes every channel as V * (1 - S * w), where the weight w in [0, 1]
# depends on the hue only (0 for the largest channel, 1 for the smallest). So a new V
# scales RGB, and a new S moves each channel along its own weight, without a round trip.


@register("brightness", (0.05, 0.1, 0.15, 0.2, 0.3))
def brightness(x, c, seeds, scale):
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + c).clamp(0.0, 1.0)
    # a black pixel has S = H = 0 in skimage, so it becomes the grey (V', V', V')
    return torch.where(value > 0, x * (brighter / value.clamp_min(1e-12)), brighter)


@register("saturate", ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)))
def saturate(x, param, seeds, scale):
    a, b = param
    value = x.amax(dim=1, keepdim=True)
    spread = value - x.amin(dim=1, keepdim=True)
    saturation = torch.where(spread > 0, spread / value.clamp_min(1e-12), torch.zeros_like(value))
    new_saturation = (saturation * a + b).clamp(0.0, 1.0)
    # the hue weights w = (V - x) / (V - min); a grey pixel has hue 0 in skimage, whose
    # weights are (0, 1, 1): added saturation tints grey towards red, as in the original
    red_hue = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    weights = torch.where(spread > 0, (value - x) / spread.clamp_min(1e-12), red_hue)
    return value * (1.0 - new_saturation * weights)


@register("contrast", (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x, c, seeds, scale):
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


# -- elastic transform --------------------------------------------------------------------


def _affine_points(seeds: torch.Tensor, height: int, width: int, jitter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's three anchors (x, y) and, per sample, the anchors moved by U(-jitter, jitter):
    ((3, 2), (N, 3, 2)), float64 holding the float32 values the original computes."""
    # the original builds the anchors from (height // 2, width // 2) used as (x, y)
    centre = torch.tensor([height // 2, width // 2], dtype=torch.float32)
    half = min(height, width) // 3
    anchors = torch.stack([centre + half, centre + torch.tensor([half, -half]), centre - half])
    offsets = (rng.uniform(seeds, (3, 2), stream=0) * 2.0 - 1.0) * jitter
    moved = anchors.to(offsets.device) + offsets
    return anchors.double().to(offsets.device), moved.double()


def _inverse_affine(anchors: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) maps taking each output pixel back to where it samples the input: the
    inverse of the affine map anchors -> moved (cv2.warpAffine without WARP_INVERSE_MAP).
    Written out elementwise so each sample's numbers never depend on the batch."""
    p1, p2, p3 = anchors[0], anchors[1], anchors[2]
    q1, q2, q3 = moved[:, 0], moved[:, 1], moved[:, 2]
    u, v = q2 - q1, q3 - q1  # the map sends u -> r and v -> s
    r, s = p2 - p1, p3 - p1
    det = u[:, 0] * v[:, 1] - v[:, 0] * u[:, 1]
    rows = []
    for i in range(2):
        a_x = (r[i] * v[:, 1] - s[i] * u[:, 1]) / det
        a_y = (s[i] * u[:, 0] - r[i] * v[:, 0]) / det
        rows.append(torch.stack([a_x, a_y, p1[i] - a_x * q1[:, 0] - a_y * q1[:, 1]], dim=1))
    return torch.stack(rows, dim=1)


def _pixel_grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(height, dtype=torch.float64, device=device)
    cols = torch.arange(width, dtype=torch.float64, device=device)
    return torch.meshgrid(cols, rows, indexing="xy")  # (H, W) column and row indices


def _resample(x: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, reflect_101: bool) -> torch.Tensor:
    """Bilinear samples of x at pixel coordinates (N, H, W). reflect_101 mirrors about the edge
    pixels' centres (cv2 BORDER_REFLECT_101); otherwise about their outer edges (scipy 'reflect')."""
    height, width = x.shape[-2:]
    if reflect_101:  # align_corners=True: -1 and 1 are the centres of the edge pixels
        grid_x, grid_y = src_x * (2.0 / (width - 1)) - 1.0, src_y * (2.0 / (height - 1)) - 1.0
    else:  # align_corners=False: -1 and 1 are the outer edges
        grid_x, grid_y = (2.0 * src_x + 1.0) / width - 1.0, (2.0 * src_y + 1.0) / height - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=reflect_101)


def _symmetric_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a signal padded by `pad` with scipy's 'reflect' (d c b a | a b c d), any pad."""
    index = torch.remainder(torch.arange(-pad, size + pad, device=device), 2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


@functools.lru_cache(maxsize=64)
def _smoothing_operator(size: int, sigma: float, truncate: float, device: str) -> torch.Tensor:
    """The (size, size) matrix of a 1-D Gaussian with scipy's 'reflect' boundary: row i
    holds the weights output i gives each input, reflections folded in."""
    radius = int(truncate * sigma + 0.5)
    kernel = gaussian_kernel1d(sigma, radius).double()
    sources = _symmetric_index(size, radius, torch.device("cpu"))
    operator = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        operator[i].index_add_(0, sources[i : i + 2 * radius + 1], kernel)
    return operator.to(device)


def _smooth(noise: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """skimage.filters.gaussian(mode='reflect', truncate=3) over the last two dims, as two
    small matrix products (a wide kernel on a 32-pixel field: the rows of the operator
    fold every reflection in, far cheaper than 2 x 39 shifted slices)."""
    if int(truncate * sigma + 0.5) == 0:
        return noise
    height, width = noise.shape[-2:]
    rows = _smoothing_operator(height, sigma, truncate, str(noise.device))
    cols = _smoothing_operator(width, sigma, truncate, str(noise.device))
    return rows @ noise @ cols.T


def _displacement(seeds: torch.Tensor, height: int, width: int, alpha: float, sigma: float) -> torch.Tensor:
    """(N, 2, H, W) displacements (dx, dy) in pixels: smoothed U(-1, 1) noise times alpha,
    smoothed in float64 and stored in float32 as in the original."""
    noise = rng.uniform(seeds, (2, height, width), stream=1) * 2.0 - 1.0
    return (_smooth(noise.double(), sigma) * alpha).float()


@register(
    "elastic_transform",
    ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
)
def elastic_transform(x, param, seeds, scale):
    height, width = x.shape[-2:]
    # (alpha, sigma, jitter) are fractions of the side, 32 in the original
    alpha, sigma, jitter = (p * 32.0 * scale for p in param)
    cols, rows = _pixel_grid(height, width, x.device)
    inverse = _inverse_affine(*_affine_points(seeds, height, width, jitter))[..., None, None]
    src_x = inverse[:, 0, 0] * cols + inverse[:, 0, 1] * rows + inverse[:, 0, 2]
    src_y = inverse[:, 1, 0] * cols + inverse[:, 1, 1] * rows + inverse[:, 1, 2]
    x = _resample(x, src_x, src_y, reflect_101=True)
    if alpha == 0:  # no displacement: the original's resampling at whole pixels is the identity
        return x
    shift = _displacement(seeds, height, width, alpha, sigma).to(x.device).double()
    return _resample(x, cols + shift[:, 0], rows + shift[:, 1], reflect_101=False)


# -- pixelate: Pillow's BOX resize, exactly -----------------------------------------------
#
# Pillow's BOX filter is not an area average: a source pixel counts fully for an output
# pixel when its centre falls in that pixel's footprint, and not at all otherwise (area
# weights differ from it by up to ~150 levels on textures at these ratios). Pillow resizes
# in two passes, horizontal first, each with 22-bit fixed-point weights and rounding to
# uint8; both are reproduced, in float64, which holds every fixed-point sum exactly.

_PRECISION_BITS = 22  # Pillow: 32 bits - 8 for the pixel - 2 for overshoot


@functools.cache
def _pil_box_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Pillow's BOX coefficients, (out_size, in_size): its fixed-point integers over 2**22,
    which float64 holds exactly, as it does every sum of them times uint8 values."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out_index in range(out_size):  # weight tables only: a few dozen entries, once per size
        centre = (out_index + 0.5) * scale
        first, last = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        taps = [1.0 if -0.5 < (i - centre + 0.5) * (1.0 / filter_scale) <= 0.5 else 0.0 for i in range(first, last)]
        total = sum(taps)
        for i, tap in zip(range(first, last), taps, strict=True):
            weights[out_index, i] = int(0.5 + (tap / total if total else tap) * (1 << _PRECISION_BITS))
    return weights / (1 << _PRECISION_BITS)


def _pil_round(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: add half, truncate, clip to uint8 (in place)."""
    return acc.add_(0.5).floor_().clamp_(0.0, 255.0)


def _pil_box_resize(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize uint8-valued float64 (N, C, H, W) like Pillow: columns first, rounded, then rows."""
    across = _pil_box_weights(values.shape[-1], width).to(values.device)
    values = _pil_round(values @ across.T)
    down = _pil_box_weights(values.shape[-2], height).to(values.device)
    return _pil_round(down @ values)


@register("pixelate", (0.95, 0.9, 0.85, 0.75, 0.65))
def pixelate(x, s, seeds, scale):
    height, width = x.shape[-2:]
    values = torch.round(x.clamp(0.0, 1.0).double() * 255.0)  # the original resizes a uint8 image
    small = _pil_box_resize(values, int(height * s), int(width * s))
    return (_pil_box_resize(small, height, width) / 255.0).to(x.dtype)


# -- JPEG ---------------------------------------------------------------------------------


@register("jpeg_compression", (80, 65, 58, 50, 40))
def jpeg_compression(x, quality, seeds, scale):
    from torchvision.io import decode_jpeg, encode_jpeg  # torchvision loads only when needed

    images = torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 points to TorchCodec for images; its batched codec still does the job
        warnings.filterwarnings("ignore", message=".*image decoding and encoding.*", category=DeprecationWarning)
        encoded = encode_jpeg(list(images), quality=quality)
        # decode_jpeg takes the bytes on the CPU whatever device it decodes on
        decoded = decode_jpeg([data.cpu() for data in encoded], device=x.device)
    return torch.stack(decoded).to(x.dtype) / 255.0
