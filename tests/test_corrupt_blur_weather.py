"""Blur and weather corruptions against their definitions and independent references:
skimage, scipy and OpenCV computations of the original CIFAR-10-C recipe, and hand-written
loops over pixels."""

import importlib.util
import math

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import zoom as scipy_zoom
from skimage.filters import gaussian as skimage_gaussian

from compute import corrupt, rng
from compute.corrupt import blur, weather
from tests.corruption_images import corruption_batch

ZOOM_ENDS = (1.06, 1.11, 1.16, 1.21, 1.26)


def images(n=6, seed=0, side=32):
    return corruption_batch(n, seed, side)


def skimage_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage.filters.gaussian of every image: mode 'nearest', truncate 4, float64."""
    out = [
        skimage_gaussian(img.double().numpy(), sigma=sigma, mode="nearest", truncate=4.0, channel_axis=0) for img in x
    ]
    return torch.from_numpy(np.stack(out)).float()


# -- random numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("low,high", [(-1, 1), (-2, 2), (0, 5), (0, 256)])
def test_rng_integers_are_uniform_on_their_range(low, high):
    values = rng.integers(torch.arange(50), (40, 40), 3, low, high)
    assert values.shape == (50, 40, 40) and values.dtype == torch.int64
    counts = torch.bincount((values - low).flatten(), minlength=high - low)
    assert len(counts) == high - low  # nothing outside [low, high)
    expected = values.numel() / (high - low)
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()  # a fair die, within 5 sigma
    assert torch.equal(values[7], rng.integers(torch.tensor([7]), (40, 40), 3, low, high)[0])  # per sample


def test_rng_normal_is_standard_normal_per_sample():
    z = rng.normal(torch.arange(20), (3, 50, 50), stream=4)
    assert z.shape == (20, 3, 50, 50)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.01) and float(z.std()) == pytest.approx(1.0, abs=0.01)
    assert float((z.abs() > 1.96).float().mean()) == pytest.approx(0.05, abs=0.005)
    flat = z.reshape(20, -1)  # the cosine half and the sine half are independent
    assert abs(float(torch.corrcoef(torch.stack([flat[:, :3750].flatten(), flat[:, 3750:].flatten()]))[0, 1])) < 0.02
    assert torch.equal(z[5], rng.normal(torch.tensor([5]), (3, 50, 50), stream=4)[0])
    assert not torch.equal(z[5], rng.normal(torch.tensor([5]), (3, 50, 50), stream=5)[0])


# -- glass blur ---------------------------------------------------------------------------


def test_glass_shuffle_moves_pixels_by_minus_one_or_zero_inside_the_documented_range():
    n, side = 4, 32
    ids = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side)
    x = torch.cat([ids, ids + 10_000, ids + 20_000], dim=1).expand(n, 3, side, side).contiguous()
    out = blur.local_shuffle(x, torch.arange(n), max_delta=1, iterations=1)
    # the three channels of a pixel move together
    assert torch.equal(out[:, 1] - 10_000, out[:, 0])
    assert torch.equal(out[:, 2] - 20_000, out[:, 0])
    source = out[:, 0].long()
    dy = source // side - torch.arange(side).view(1, side, 1)
    dx = source % side - torch.arange(side).view(1, 1, side)
    inside = torch.zeros(side, side, dtype=torch.bool)
    inside[2:, 2:] = True  # h, w from 31 down to 2
    assert set(dy[:, inside].unique().tolist()) == {-1, 0} and set(dx[:, inside].unique().tolist()) == {-1, 0}
    assert (dy[:, ~inside] == 0).all() and (dx[:, ~inside] == 0).all()
    # each offset is about equally likely (a fair randint(-1, 1) per axis)
    assert float((dy[:, inside] == -1).float().mean()) == pytest.approx(0.5, abs=0.05)
    # another seed, another shuffle
    assert not torch.equal(out[0], out[1])


def test_glass_shuffle_passes_compose():
    side = 32
    x = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side).expand(3, 3, side, side).contiguous()
    twice = blur.local_shuffle(x, torch.arange(3), max_delta=1, iterations=2)[:, 0].long()
    dy = twice // side - torch.arange(side).view(1, side, 1)
    dx = twice % side - torch.arange(side).view(1, 1, side)
    assert dy.min() == -2 and dx.min() == -2 and dy.max() == 0 and dx.max() == 0


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_is_blur_truncate_shuffle_blur(severity):
    sigma, max_delta, iterations = corrupt.CORRUPTIONS["glass_blur"].params[severity - 1]
    x, seeds = images(), torch.arange(6)
    first = blur.truncate_to_uint8(blur.gaussian_blur(x, sigma, seeds, 1.0))
    # the original's np.uint8 cast of the float64 blur; where that lands within rounding noise
    # of a whole level (flat areas), either side is right
    reference = skimage_blur(x, sigma) * 255
    clear = (reference - reference.round()).abs() > 1e-4
    assert torch.equal(first[clear], torch.floor(reference[clear]) / 255)
    expected = skimage_blur(blur.local_shuffle(first, seeds, max_delta, iterations), sigma)
    assert torch.allclose(blur.glass_blur(x, (sigma, max_delta, iterations), seeds, 1.0), expected, atol=1e-5)


# -- gaussian blur ------------------------------------------------------------------------


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_gaussian_blur_equals_skimage(severity):
    sigma = corrupt.CORRUPTIONS["gaussian_blur"].params[severity - 1]
    x = images()
    assert torch.allclose(blur.gaussian_blur(x, sigma, torch.arange(6), 1.0), skimage_blur(x, sigma), atol=1e-6)
    # on 64x64 images the sigma doubles
    big = images(3, side=64)
    assert torch.allclose(blur.gaussian_blur(big, sigma, torch.arange(3), 2.0), skimage_blur(big, 2 * sigma), atol=1e-6)


# -- motion blur --------------------------------------------------------------------------


def imagemagick_motion_blur(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """MagickCore's MotionBlurImage, pixel by pixel, edge virtual pixels: (C, H, W)."""
    width = 2 * math.ceil(radius) + 1
    kernel = np.array([math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(width)])
    kernel /= kernel.sum()
    point_x, point_y = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(point_x, point_y)
    _, h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(width):
        ox, oy = math.ceil(i * point_y / hyp - 0.5), math.ceil(i * point_x / hyp - 0.5)
        for y in range(h):
            for x in range(w):
                out[:, y, x] += kernel[i] * image[:, min(max(y + oy, 0), h - 1), min(max(x + ox, 0), w - 1)]
    return out


@pytest.mark.parametrize("angle", [-45.0, -30.5, -3.0, 0.0, 17.2, 44.9, -100.0, -135.0])
@pytest.mark.parametrize("radius,sigma", [(6, 1), (9, 2.5), (14, 12)])
def test_directional_blur_equals_imagemagick_per_pixel(angle, radius, sigma):
    x = images(2, side=16)
    got = blur.directional_blur(x, radius, sigma, torch.tensor([angle, angle + 7.0], dtype=torch.float64))
    for i, a in enumerate([angle, angle + 7.0]):
        expected = imagemagick_motion_blur(x[i].double().numpy(), radius, sigma, a)
        assert np.abs(got[i].numpy() - expected).max() < 1e-5


def test_motion_blur_keeps_flat_images_and_smears_a_point_to_one_side_only():
    angles = torch.tensor([-45.0, -20.0, 0.0, 33.0, 45.0], dtype=torch.float64)
    flat = torch.full((5, 3, 32, 32), 0.4)
    assert (blur.directional_blur(flat, 9, 2.5, angles) - 0.4).abs().max() < 1e-6
    point = torch.zeros(5, 1, 32, 32)
    point[:, :, 16, 24] = 1.0
    smear = blur.directional_blur(point, 9, 2.5, angles)[:, 0]
    weights = np.exp(-(np.arange(19) ** 2) / (2 * 2.5**2))
    for i, angle in enumerate(angles.tolist()):
        ys, xs = torch.nonzero(smear[i] > 1e-9, as_tuple=True)
        # the taps read forwards along (cos a, sin a), so the point spreads backwards from itself
        along = (xs - 24) * math.cos(math.radians(angle)) + (ys - 16) * math.sin(math.radians(angle))
        across = -(xs - 24) * math.sin(math.radians(angle)) + (ys - 16) * math.cos(math.radians(angle))
        assert (along <= 1e-9).all() and (across.abs() <= 0.75).all() and along.min() < -10
        assert float(smear[i].sum()) == pytest.approx(1.0, abs=1e-6)  # no mass lost away from the borders
        assert float(smear[i, 16, 24]) == pytest.approx(1 / weights.sum(), rel=1e-6)


def test_motion_blur_angles_differ_per_sample_within_45_degrees():
    point = torch.zeros(40, 3, 32, 32)
    point[:, :, 16, 24] = 1.0
    out = corrupt.corrupt(point, "motion_blur", 5, torch.arange(40))[:, 0]
    assert len({tuple(torch.nonzero(o > 0).flatten().tolist()) for o in out}) > 10
    ys, xs = torch.nonzero(out.amax(dim=0) > 0, as_tuple=True)
    assert (xs <= 24).all() and ((ys - 16).abs() <= (24 - xs) + 1).all()  # a cone of +-45 degrees
    angles = blur.random_angle(torch.arange(1000), 0, -45.0, 45.0)
    assert angles.min() >= -45 and angles.max() < 45 and angles.std() > 20


# -- zoom blur ----------------------------------------------------------------------------


def scipy_clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """The original's clipped_zoom of an (H, W, C) image with scipy.ndimage.zoom(order=1)."""
    h = image.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = scipy_zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim : trim + h, trim : trim + h]


def scipy_zoom_blur(x: torch.Tensor, end: float) -> torch.Tensor:
    out = []
    for img in x.permute(0, 2, 3, 1).double().numpy():
        factors = np.arange(1, end, 0.01)
        total = img + sum(scipy_clipped_zoom(img, z) for z in factors)
        out.append(total / (len(factors) + 1))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_zoom_blur_equals_scipy_clipped_zooms(severity):
    end = ZOOM_ENDS[severity - 1]
    x = images()
    expected = scipy_zoom_blur(x, end)
    # the banded matrix form (32x32) rounds its weights to 2**-16: within 0.01 of a level
    assert (blur.zoom_blur(x, end, torch.arange(6), 1.0) - expected).abs().max() < 0.01 / 255
    assert (blur.zoom_mean_separable(x, blur.zoom_factors(end)) - expected).abs().max() < 1e-6
    big = images(2, side=64)
    assert (blur.zoom_blur(big, end, torch.arange(2), 2.0) - scipy_zoom_blur(big, end)).abs().max() < 1e-6


def test_zoom_blur_keeps_a_flat_image_exactly():
    flat = torch.full((2, 3, 32, 32), 117 / 255)
    assert torch.equal(corrupt.corrupt(flat, "zoom_blur", 5, torch.arange(2)), flat)


@pytest.mark.parametrize("factor", [1.25, 1.75, 2.25])
def test_clipped_zoom_equals_scipy(factor):
    layer = rng.normal(torch.arange(3), (1, 32, 32), stream=0)
    expected = [scipy_clipped_zoom(img.permute(1, 2, 0).double().numpy(), factor) for img in layer]
    got = blur.clipped_zoom(layer, factor).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - np.stack(expected)).max() < 1e-5


# -- snow ---------------------------------------------------------------------------------


def test_snow_never_darkens_and_its_flakes_are_symmetric_under_half_turns():
    x = images(6)
    for severity in range(1, 6):
        y = corrupt.corrupt(x, "snow", severity, torch.arange(6))
        assert (y >= x).all()
    # on black, the output is the grey lift (1 - blend) * 0.5 plus flakes + flakes rotated 180 degrees
    black = torch.zeros(4, 3, 32, 32)
    for params in corrupt.CORRUPTIONS["snow"].params:
        flakes = weather.snow(black, params, torch.arange(4), 1.0) - (1 - params[-1]) * 0.5
        assert torch.allclose(flakes, flakes.flip(-2, -1), atol=1e-6) and flakes.min() >= -1e-6
        assert flakes.max() > 0.05


@pytest.mark.parametrize("severity", [1, 3, 4])
def test_snow_follows_the_original_recipe(severity):
    loc, spread, zoom, threshold, radius, sigma, blend = corrupt.CORRUPTIONS["snow"].params[severity - 1]
    x, seeds = images(3), torch.arange(3)
    noise = loc + spread * rng.normal(seeds, (1, 32, 32), stream=0)
    angles = blur.random_angle(seeds, 2, -135.0, -45.0)
    got = weather.snow(x, corrupt.CORRUPTIONS["snow"].params[severity - 1], seeds, 1.0)
    for i in range(3):
        layer = scipy_clipped_zoom(noise[i].permute(1, 2, 0).double().numpy(), zoom)[..., 0]
        layer[layer < threshold] = 0
        layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
        layer = np.round(imagemagick_motion_blur(layer[None].astype(np.float64), radius, sigma, float(angles[i])))
        layer = layer[0] / 255.0
        img = x[i].permute(1, 2, 0).double().numpy()
        grey = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_RGB2GRAY)[..., None]
        base = blend * img + (1 - blend) * np.maximum(img, grey * 1.5 + 0.5)
        expected = base + layer[..., None] + np.rot90(layer, k=2)[..., None]
        assert np.abs(got[i].permute(1, 2, 0).numpy() - expected).max() < 1e-5


# -- frost --------------------------------------------------------------------------------


def cv2_frost_textures() -> list[np.ndarray]:
    """The textures as the original loads them: cv2.imread, resize by 0.2, BGR to RGB."""
    folder = weather.frost_folder()
    return [
        cv2.resize(cv2.imread(str(folder / name)), (0, 0), fx=0.2, fy=0.2)[..., ::-1].astype(np.float64)
        for name in weather.FROST_FILES
    ]


def find_window(texture: np.ndarray, window: np.ndarray, probe: int = 12) -> tuple[float, int, int]:
    """Where `window` (32, 32, 3) sits in `texture`: the least-squares position of its
    top-left probe x probe patch, and the mean absolute difference of the whole window there."""
    t = torch.from_numpy(texture).permute(2, 0, 1)[None]
    k = torch.from_numpy(window[:probe, :probe]).permute(2, 0, 1)[None]
    ssd = torch.nn.functional.conv2d(t**2, torch.ones_like(k)) - 2 * torch.nn.functional.conv2d(t, k) + (k**2).sum()
    row, col = divmod(int(ssd[0, 0, : t.shape[2] - 31, : t.shape[3] - 31].argmin()), t.shape[3] - 31)
    return float(np.abs(texture[row : row + 32, col : col + 32] - window).mean()), row, col


def test_frost_textures_are_the_original_shrunk_textures():
    textures, sizes = weather.frost_textures(torch.device("cpu"), 1.0)
    for i, reference in enumerate(cv2_frost_textures()):
        h, w = reference.shape[:2]
        assert tuple(sizes[i].tolist()) == (h, w)
        ours = textures[i, :, :h, :w].permute(1, 2, 0).double().numpy()
        assert np.abs(ours - reference).mean() < 0.5  # PNGs exact; the JPEG decoders may differ a little


def test_frost_adds_a_crop_of_one_of_the_five_textures():
    references = cv2_frost_textures()
    n = 12
    x, seeds = images(n), torch.arange(n) * 7
    crops = weather.frost_crops(seeds, 32, 32, 1.0)
    picked = set()
    for crop in crops.permute(0, 2, 3, 1).double().numpy():
        (error, row, col), which = min((find_window(ref, crop), i) for i, ref in enumerate(references))
        assert error < 0.5
        # randint(0, size - 32): the last row and column are never a corner
        assert row <= references[which].shape[0] - 33 and col <= references[which].shape[1] - 33
        picked.add(which)
    assert len(picked) >= 3  # the texture is drawn per sample
    for a, b in corrupt.CORRUPTIONS["frost"].params:
        assert torch.allclose(weather.frost(x, (a, b), seeds, 1.0), a * x + b * crops / 255, atol=1e-6)


def test_frost_names_the_package_when_it_is_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install imagecorruptions"):
        weather.frost_folder()


# -- fog ----------------------------------------------------------------------------------


def reference_plasma(seed: int, size: int, decay: float) -> np.ndarray:
    """The original's plasma_fractal, one image at a time with np.roll, taking its
    U(-wibble, wibble) values in turn from the sample's uniform stream 0."""
    uniforms = iter(rng.uniform(torch.tensor([seed]), (size * size - 1,), 0)[0].double().numpy())
    maps = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled_mean(array):
        noise = np.array([next(uniforms) for _ in range(array.size)]).reshape(array.shape)
        return array / 4 + wibble * (wibble * (2 * noise - 1))

    while step >= 2:
        half = step // 2
        corner = maps[0:size:step, 0:size:step]
        square = corner + np.roll(corner, -1, axis=0)
        square += np.roll(square, -1, axis=1)
        maps[half:size:step, half:size:step] = wibbled_mean(square)
        centre = maps[half:size:step, half:size:step]
        corner = maps[0:size:step, 0:size:step]
        maps[0:size:step, half:size:step] = wibbled_mean(
            centre + np.roll(centre, 1, axis=0) + corner + np.roll(corner, -1, axis=1)
        )
        maps[half:size:step, 0:size:step] = wibbled_mean(
            centre + np.roll(centre, 1, axis=1) + corner + np.roll(corner, -1, axis=0)
        )
        step, wibble = half, wibble / decay
    assert next(uniforms, None) is None  # every value used once
    maps -= maps.min()
    return maps / maps.max()


@pytest.mark.parametrize("decay", [3, 1.75])
def test_plasma_fractal_is_the_diamond_square_map_scaled_to_unit_range(decay):
    seeds = torch.tensor([3, 17, 99])
    maps = weather.plasma_fractal(seeds, 32, decay)
    for i, seed in enumerate(seeds.tolist()):
        assert np.abs(maps[i].numpy() - reference_plasma(seed, 32, decay)).max() < 1e-9
    assert torch.equal(maps.amin(dim=(1, 2)), torch.zeros(3)) and torch.equal(maps.amax(dim=(1, 2)), torch.ones(3))
    assert not torch.equal(maps[0], maps[1])


def test_fog_adds_the_plasma_and_rescales_by_max_over_max_plus_strength():
    x, seeds = images(4), torch.arange(4) + 5
    for strength, decay in corrupt.CORRUPTIONS["fog"].params:
        got = weather.fog(x, (strength, decay), seeds, 1.0)
        for i, seed in enumerate(seeds.tolist()):
            plasma = torch.from_numpy(reference_plasma(seed, 32, decay)).float()
            peak = float(x[i].max())
            assert torch.allclose(got[i], (x[i] + strength * plasma) * peak / (peak + strength), atol=1e-6)


# -- spatter ------------------------------------------------------------------------------


def spatter_layer(seeds, loc, spread, sigma, threshold):
    noise = (loc + spread * rng.normal(seeds, (1, 32, 32), stream=0)).double().numpy()[:, 0]
    layers = np.stack([skimage_gaussian(n, sigma=sigma, mode="nearest", truncate=4.0) for n in noise])
    layers[layers < threshold] = 0
    return layers


def opencv_liquid_mask(layer: np.ndarray) -> np.ndarray:
    """The original's liquid branch with OpenCV, on one thresholded layer (values above 1
    wrap in the uint8 cast, as in make_cifar_c.py)."""
    level = (layer * 255).astype(np.uint8)
    dist = cv2.distanceTransform(255 - cv2.Canny(level, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32))
    mask = level * cv2.blur(dist, (3, 3)).astype(np.float32)
    return mask / mask.max()


@pytest.mark.parametrize("severity", [1, 2, 3])
def test_spatter_liquid_mask_equals_opencv(severity):
    loc, spread, sigma, threshold, strength, _ = corrupt.CORRUPTIONS["spatter"].params[severity - 1]
    seeds = torch.arange(60) + 1000 * severity
    layers = spatter_layer(seeds, loc, spread, sigma, threshold)
    if severity == 3:
        assert (layers > 1).any()  # the wrap-around case the released files carry is exercised
    got = weather.liquid_mask(torch.from_numpy(layers).float()[:, None])[:, 0].numpy()
    expected = np.stack([opencv_liquid_mask(layer) for layer in layers])
    assert np.abs(got - expected).max() < 1e-6
    x = images(4)
    out = weather.spatter(x, corrupt.CORRUPTIONS["spatter"].params[severity - 1], seeds[:4], 1.0)
    water = torch.tensor([175, 238, 238]).view(1, 3, 1, 1) / 255
    assert torch.allclose(out, x + strength * torch.from_numpy(expected[:4])[:, None] * water, atol=1e-5)


def test_canny_distance_and_equalisation_steps_equal_opencv():
    layers = spatter_layer(torch.arange(40), 0.65, 0.3, 1.0, 0.69)
    level = np.floor(np.clip(layers, 0, 1) * 255).astype(np.uint8)
    edges = weather.canny(torch.from_numpy(level).float()[:, None], 50, 150)[:, 0].numpy()
    expected_edges = np.stack([cv2.Canny(img, 50, 150) > 0 for img in level])
    assert (edges == expected_edges).all() and expected_edges.any()
    distance = weather.chamfer_distance(torch.from_numpy(expected_edges)).numpy()
    expected = np.stack([cv2.distanceTransform(255 - 255 * e.astype(np.uint8), cv2.DIST_L2, 5) for e in expected_edges])
    assert np.abs(np.minimum(distance, 20) - np.minimum(expected, 20)).max() < 1e-3
    small = np.minimum(expected, 20).astype(np.uint8)
    hist = weather.equalize_hist(torch.from_numpy(small).float()[:, None])[:, 0].numpy()
    assert (hist == np.stack([cv2.equalizeHist(img) for img in small])).all()
    flat = torch.full((1, 1, 8, 8), 7.0)
    assert torch.equal(weather.equalize_hist(flat), flat)  # OpenCV leaves a constant image alone


@pytest.mark.parametrize("severity", [4, 5])
def test_spatter_mud_equals_the_original_recipe(severity):
    loc, spread, sigma, threshold, mud_sigma, mud = corrupt.CORRUPTIONS["spatter"].params[severity - 1]
    assert mud == 1
    x, seeds = images(6), torch.arange(6)
    layers = spatter_layer(seeds, loc, spread, sigma, threshold)
    masks = [
        skimage_gaussian((layer > threshold).astype(np.float32), sigma=mud_sigma, mode="nearest") for layer in layers
    ]
    masks = torch.from_numpy(np.stack([np.where(m < 0.8, 0, m) for m in masks])).float()[:, None]
    mud_colour = torch.tensor([63, 42, 20]).view(1, 3, 1, 1) / 255
    got = weather.spatter(x, corrupt.CORRUPTIONS["spatter"].params[severity - 1], seeds, 1.0)
    assert torch.allclose(got, x * (1 - masks) + mud_colour * masks, atol=1e-5)
    thick = masks[:, 0] > 0.99
    assert thick.any()  # where the mud is thick, the pixels take the mud colour
    assert torch.allclose(got.permute(0, 2, 3, 1)[thick], mud_colour.view(1, 3), atol=0.01)
    assert torch.equal(got.permute(0, 2, 3, 1)[masks[:, 0] == 0], x.permute(0, 2, 3, 1)[masks[:, 0] == 0])


@pytest.mark.parametrize("severity", [2, 4])
def test_spatter_on_larger_images_is_the_32_pixel_splash_resized(severity):
    params, seeds = corrupt.CORRUPTIONS["spatter"].params[severity - 1], torch.arange(4)

    def splash(side, scale):  # on white, water adds and mud subtracts in proportion to the mask
        white = torch.ones(4, 3, side, side)
        return (weather.spatter(white, params, seeds, scale) - white).abs()

    small = splash(32, 1.0)
    resized = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    assert small.amax() > 0.05 and torch.allclose(splash(64, 2.0), resized, atol=1e-6)


# -- all of them --------------------------------------------------------------------------

MINE = ("glass_blur", "motion_blur", "zoom_blur", "gaussian_blur", "snow", "frost", "fog", "spatter")


@pytest.mark.parametrize("name", MINE)
def test_larger_images_scale_and_batches_equal_single_images(name):
    x, seeds = images(3, side=64), torch.tensor([5, 6, 7])
    batch = corrupt.corrupt(x, name, 4, seeds)
    assert batch.shape == x.shape and (batch - x).abs().mean() > 1e-3
    for i in range(3):
        assert torch.equal(batch[i : i + 1], corrupt.corrupt(x[i : i + 1], name, 4, seeds[i : i + 1]))


@pytest.mark.parametrize("name", MINE)
def test_large_batches_equal_single_images(name):
    x = images(30)[torch.arange(300) % 30]
    seeds = torch.arange(300) * 3
    batch = corrupt.corrupt(x, name, 3, seeds)
    for i in (0, 1, 150, 299):
        assert torch.equal(batch[i : i + 1], corrupt.corrupt(x[i : i + 1], name, 3, seeds[i : i + 1]))
