"""Weather corruptions: snow, frost, fog, and the extra spatter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compute import rng
from compute.corrupt import register
from compute.corrupt.blur import clipped_zoom, directional_blur, random_angle
from compute.corrupt.ops import gaussian_blur, symmetric_filter

# ITU-R 601 luma, the weights of cv2.COLOR_RGB2GRAY
_LUMA = (0.299, 0.587, 0.114)

# -- snow ---------------------------------------------------------------------------------


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of an RGB batch, as cv2.cvtColor(x, COLOR_RGB2GRAY) on floats."""
    return _LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3]


@register(
    "snow",
    (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
)
def snow(x, param, seeds, scale):
    loc, spread, zoom, threshold, blur_radius, blur_sigma, blend = param
    h, w = x.shape[-2:]
    flakes = loc + spread * rng.normal(seeds, (1, h, w), stream=0)
    zoom = max(zoom * scale, 1.0)  # on larger images the noise grain grows with the image
    if zoom != 1:
        flakes = clipped_zoom(flakes, zoom)
    # the thresholded layer as the 8-bit image the original hands to ImageMagick (0..255)
    flakes = torch.floor((flakes * 255.0).clamp(0.0, 255.0)).masked_fill_(flakes < threshold, 0.0)
    angles = random_angle(seeds, 2, -135.0, -45.0)
    flakes = directional_blur(flakes, blur_radius * scale, blur_sigma * scale, angles)
    flakes = torch.floor(flakes + 0.5)  # ImageMagick's 8-bit output is rounded
    # blend * x + (1 - blend) * max(x, lifted grey), written so that x stays exactly x where
    # the lift is darker (the float rounding of the plain form can cost a level there)
    x = x + (1.0 - blend) * (torch.maximum(x, grey(x) * 1.5 + 0.5) - x)
    return x + (flakes + flakes.flip(-2, -1)) / 255.0


# -- frost --------------------------------------------------------------------------------

# the five textures the original draws from (frost6.jpg ships too but was never picked)
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
_FROST_SHRINK = 0.2
_frost_cache: dict[tuple[str, float], tuple[torch.Tensor, torch.Tensor]] = {}


def frost_folder() -> Path:
    """The frost textures of the `imagecorruptions` package, found without importing it
    (its import needs pkg_resources)."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("frost needs the frost textures of imagecorruptions: pip install imagecorruptions")
    return Path(spec.submodule_search_locations[0]) / "frost"


def shrink_texture(image: torch.Tensor, factor: float) -> torch.Tensor:
    """cv2.resize(fx=fy=factor, INTER_LINEAR) of a (3, H, W) 0..255 image: bilinear with
    half-pixel centres and no antialiasing (at 0.2 it picks every fifth pixel, from the
    third), rounded to uint8 values."""
    out = F.interpolate(
        image[None], scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )
    return out[0].round().clamp(0, 255)


def frost_textures(device: torch.device, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The five shrunk textures, 0..255 floats zero-padded into one (5, 3, Hmax, Wmax)
    tensor on `device`, and their (5, 2) sizes; cached per device and scale."""
    key = (str(device), scale)
    if key not in _frost_cache:
        from PIL import Image

        folder = frost_folder()
        textures = []
        for name in FROST_FILES:
            with Image.open(folder / name) as image:
                rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy())
            textures.append(shrink_texture(rgb.permute(2, 0, 1), _FROST_SHRINK * scale))
        sizes = torch.tensor([t.shape[1:] for t in textures])
        stack = torch.zeros(len(textures), 3, *sizes.max(dim=0).values.tolist())
        for i, t in enumerate(textures):
            stack[i, :, : t.shape[1], : t.shape[2]] = t
        _frost_cache[key] = (stack.to(device), sizes.to(device))
    return _frost_cache[key]


def frost_crops(seeds: torch.Tensor, h: int, w: int, scale: float) -> torch.Tensor:
    """Per sample: a texture index in [0, 5) and a random h x w crop of it, 0..255 floats.
    Crop corners are randint(0, size - side), as the original (which never uses the last
    row and column)."""
    textures, sizes = frost_textures(seeds.device, scale)
    _, channels, height, width = textures.shape
    pick = rng.integers(seeds, (), 0, 0, len(FROST_FILES))
    span = sizes[pick] - torch.tensor([h, w], device=seeds.device)  # (N, 2)
    corner = (rng.uniform(seeds, (2,), 1) * span).floor().long()
    top, left = torch.minimum(corner, span - 1).unbind(1)  # in range even at u = 1
    # every crop row is a run of w values of the flat texture stack: gather whole runs
    flat = textures.reshape(-1)
    runs = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
    plane = (pick[:, None] * channels + torch.arange(channels, device=seeds.device)) * (height * width)  # (N, 3)
    rows = (top[:, None] + torch.arange(h, device=seeds.device)) * width + left[:, None]  # (N, h)
    starts = plane[:, :, None] + rows[:, None, :]
    return runs.index_select(0, starts.reshape(-1)).view(len(seeds), channels, h, w)


@register("frost", ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)))
def frost(x, param, seeds, scale):
    image_weight, frost_weight = param
    h, w = x.shape[-2:]
    return image_weight * x + frost_weight * frost_crops(seeds, h, w, scale) / 255.0


# -- fog ----------------------------------------------------------------------------------


def plasma_fractal(seeds: torch.Tensor, size: int, decay: float) -> torch.Tensor:
    """The original's diamond-square height map, (N, size, size) in [0, 1], for all samples
    at once: one loop step per scale (size a power of two). Neighbours wrap around, as
    np.roll does there. The size**2 - 1 random values come from one uniform draw, used in
    the order scales (coarse first), then squares, diamonds in rows, diamonds in columns."""
    n = seeds.numel()
    maps = torch.zeros(n, size, size, dtype=torch.float64, device=seeds.device)
    noise = 2.0 * rng.uniform(seeds, (size * size - 1,), 0).double() - 1.0  # U(-1, 1)
    step, wibble, used = size, 100.0, 0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        nonlocal used
        k = total.shape[1]
        values = noise[:, used : used + k * k].view(n, k, k)
        used += k * k
        return total / 4.0 + wibble * wibble * values  # mean + wibble * U(-wibble, wibble)

    while step >= 2:
        half = step // 2
        # squares: the centre of each square of corners gets their mean plus noise
        corners = maps[:, 0::step, 0::step]
        total = corners + corners.roll(-1, 1)
        maps[:, half::step, half::step] = wibbled_mean(total + total.roll(-1, 2))
        # diamonds: the edge midpoints get the mean of their two corners and two centres
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        maps[:, 0::step, half::step] = wibbled_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        maps[:, half::step, 0::step] = wibbled_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    maps -= maps.amin(dim=(1, 2), keepdim=True)
    return maps / maps.amax(dim=(1, 2), keepdim=True)


@register("fog", ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), cpu_chunk=512)
def fog(x, param, seeds, scale):
    strength, decay = param
    h, w = x.shape[-2:]
    size = 1 << (max(h, w) - 1).bit_length()  # the next power of two, cropped as the ImageNet version does
    plasma = plasma_fractal(seeds, size, decay)[:, None, :h, :w].to(x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * plasma) * peak / (peak + strength)


# -- spatter (extra) ----------------------------------------------------------------------

_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise, RGB
_MUD = (63 / 255, 42 / 255, 20 / 255)  # brown, RGB
# cv2.distanceTransform(DIST_L2, 5): Borgefors' 5x5 chamfer weights 1, 1.4, 2.1969 in the
# 16-bit fixed point OpenCV uses (whole numbers, exact in float32 below 2**24)
_CHAMFER_STRAIGHT, _CHAMFER_DIAGONAL, _CHAMFER_KNIGHT = 65536.0, 91750.0, 143976.0
_CHAMFER_FAR = 2.0**40


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[..., y + dy, x + dx] of a tensor padded by one pixel on every side."""
    h, w = x.shape[-2] - 2, x.shape[-1] - 2
    return x[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """3x3 binary dilation of a bool (N, 1, H, W) mask, outside the image counting as False."""
    p = F.pad(mask, (1, 1, 0, 0))
    rows = p[..., :-2] | p[..., 1:-1] | p[..., 2:]
    p = F.pad(rows, (0, 0, 1, 1))
    return p[..., :-2, :] | p[..., 1:-1, :] | p[..., 2:, :]


def canny(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """cv2.Canny(image, low, high) of (N, 1, H, W) 0..255 integer images: 3x3 Sobel with
    replicated borders, L1 magnitude, OpenCV's non-maximum suppression (tan 22.5 sectors,
    magnitude zero outside the image), then hysteresis: candidates above `low` joined
    8-connectedly to a pixel above `high`. Returns a bool edge map."""
    p = F.pad(image, (1, 1, 1, 1), mode="replicate")
    across, down = p[..., 2:] - p[..., :-2], p[..., 2:, :] - p[..., :-2, :]
    gx = across[..., :-2, :] + 2.0 * across[..., 1:-1, :] + across[..., 2:, :]
    gy = down[..., :-2] + 2.0 * down[..., 1:-1] + down[..., 2:]
    m = gx.abs() + gy.abs()
    around = F.pad(m, (1, 1, 1, 1))
    # OpenCV's integer sector test: |gy| << 15 against |gx| * round(tan(22.5) << 15) and
    # that plus |gx| << 16; every side below is a whole number exact in float32
    ax, ay = gx.abs(), gy.abs()
    tg22x = ax * float(int(0.4142135623730950488 * (1 << 15) + 0.5))
    horizontal = ay * 32768.0 < tg22x
    vertical = (ay - 2.0 * ax) * 32768.0 > tg22x
    diagonal = ~(horizontal | vertical)
    opposite = (gx < 0) != (gy < 0)
    peak = horizontal & (m > shifted(around, 0, -1)) & (m >= shifted(around, 0, 1))
    peak |= vertical & (m > shifted(around, -1, 0)) & (m >= shifted(around, 1, 0))
    peak |= diagonal & opposite & (m > shifted(around, -1, 1)) & (m > shifted(around, 1, -1))
    peak |= diagonal & ~opposite & (m > shifted(around, -1, -1)) & (m > shifted(around, 1, 1))
    candidate = (m > low) & peak
    edges = candidate & (m > high)
    while True:
        grown = candidate & dilate(edges)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def chamfer_distance(zero: torch.Tensor) -> torch.Tensor:
    """cv2.distanceTransform(mask, DIST_L2, 5) of (N, H, W), distance to the nearest `zero`
    pixel: OpenCV's two raster passes of the 5x5 chamfer mask in its fixed point, each row
    at once. Along a row the left (right) neighbour term is a running minimum, so
    t[j] = min_i<=j (base[i] + a (j - i)) is a cummin. No zero pixel gives a large value."""
    n, h, w = zero.shape
    a, b, c = _CHAMFER_STRAIGHT, _CHAMFER_DIAGONAL, _CHAMFER_KNIGHT
    t = torch.full((n, h + 4, w + 4), _CHAMFER_FAR, device=zero.device)
    ramp = torch.arange(w, device=zero.device) * a

    def cols(row: torch.Tensor, shift: int) -> torch.Tensor:  # row[j + shift] for the image columns j
        return row[:, 2 + shift : 2 + shift + w]

    for y in range(h):  # forward: the two rows above and the pixel to the left
        up1, up2 = t[:, y + 1], t[:, y]
        base = torch.minimum(
            torch.minimum(cols(up2, -1), cols(up2, 1)) + c, torch.minimum(cols(up1, -2), cols(up1, 2)) + c
        )
        base = torch.minimum(base, torch.minimum(cols(up1, -1), cols(up1, 1)) + b)
        base = torch.minimum(base, cols(up1, 0) + a).masked_fill(zero[:, y], 0.0)
        t[:, y + 2, 2 : 2 + w] = (base - ramp).cummin(dim=1).values + ramp
    for y in range(h - 1, -1, -1):  # backward: the two rows below and the pixel to the right
        down1, down2 = t[:, y + 3], t[:, y + 4]
        base = torch.minimum(
            torch.minimum(cols(down2, -1), cols(down2, 1)) + c, torch.minimum(cols(down1, -2), cols(down1, 2)) + c
        )
        base = torch.minimum(base, torch.minimum(cols(down1, -1), cols(down1, 1)) + b)
        base = torch.minimum(torch.minimum(base, cols(down1, 0) + a), cols(t[:, y + 2], 0))
        t[:, y + 2, 2 : 2 + w] = (base + ramp).flip(1).cummin(dim=1).values.flip(1) - ramp
    return t[:, 2:-2, 2:-2] / a


def box3(x: torch.Tensor) -> torch.Tensor:
    """cv2.blur(x, (3, 3)): 3x3 mean, BORDER_REFLECT_101."""
    return symmetric_filter(x, [1.0, 1.0, 1.0], padding_mode="reflect") / 9.0


def emboss(x: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D(x, CV_8U, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]) of 0..255 integers:
    correlation, BORDER_REFLECT_101, saturated to 0..255."""
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    total = shifted(p, 0, 0) + shifted(p, 0, 1) + shifted(p, 1, 0) - shifted(p, -1, 0) - shifted(p, 0, -1)
    total = total + 2.0 * (shifted(p, 1, 1) - shifted(p, -1, -1))
    return total.clamp(0.0, 255.0)


def equalize_hist(image: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist per image of (N, 1, H, W) 0..255 integers: lut[v] =
    round(255 (cdf(v) - count(min)) / (pixels - count(min))) in float32; a constant image
    stays as it is."""
    n = image.shape[0]
    values = image.reshape(n, -1).long()
    pixels = values.shape[1]
    counts = torch.zeros(n, 256, dtype=torch.int64, device=image.device)
    counts.scatter_add_(1, values, torch.ones_like(values))
    first = (counts > 0).long().argmax(dim=1, keepdim=True)
    first_count = counts.gather(1, first)
    spread = pixels - first_count
    step = torch.tensor(255.0, device=image.device) / spread.clamp(min=1).float()
    lut = torch.round((counts.cumsum(dim=1) - first_count).float() * step)
    identity = torch.arange(256, device=image.device, dtype=lut.dtype).expand(n, 256)
    lut = torch.where(spread == 0, identity, lut)
    return lut.gather(1, values).reshape(image.shape)


def liquid_mask(layer: torch.Tensor) -> torch.Tensor:
    """The original's water mask, L * D / max(L * D), from the thresholded liquid layer
    (N, 1, H, W): L its uint8 values, D an embossed, equalised distance-to-edge map."""
    # the original's (layer * 255).astype(np.uint8) wraps values above 255 (layers above 1,
    # frequent at severity 3) modulo 256; the released CIFAR-10-C files carry that
    level = torch.remainder(torch.floor(layer * 255.0), 256.0)
    distance = chamfer_distance(canny(level, 50, 150)[:, 0])[:, None].clamp(max=20.0)
    distance = equalize_hist(torch.floor(box3(distance)))  # float blur, astype(uint8), equalise
    distance = torch.round(box3(emboss(distance)))  # the uint8 blur rounds
    mask = level * distance
    peak = mask.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, mask / peak.clamp(min=1.0), 0.0)


def mud_mask(layer: torch.Tensor, threshold: float, sigma: float) -> torch.Tensor:
    """The original's mud mask: the thresholded area blurred, kept where it is >= 0.8."""
    mask = gaussian_blur((layer > threshold).to(layer.dtype), sigma)
    return torch.where(mask < 0.8, 0.0, mask)


def colour(rgb: tuple[float, float, float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rgb, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


@register(
    "spatter",
    (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    cpu_chunk=512,  # its row-by-row loops (Canny, distance transform) favour larger slices
)
def spatter(x, param, seeds, scale):
    loc, spread, sigma, threshold, strength, mud = param
    h, w = x.shape[-2:]
    # the splashes come from thresholded blurred noise, whose statistics change with the
    # resolution: make the mask at the 32x32 scale and resize it to the image
    base = (max(1, round(h / scale)), max(1, round(w / scale)))
    layer = gaussian_blur(loc + spread * rng.normal(seeds, (1, *base), stream=0), sigma)
    layer = torch.where(layer < threshold, 0.0, layer)
    mask = mud_mask(layer, threshold, strength) if mud else liquid_mask(layer)  # for mud, `strength` is a sigma
    if base != (h, w):
        mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
    if mud:
        return x * (1.0 - mask) + colour(_MUD, x) * mask
    return x + strength * mask * colour(_WATER, x)
