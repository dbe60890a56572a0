"""Noise and digital corruptions held to their definitions and to the reference libraries
the original generator used (numpy's Poisson law, skimage HSV, Pillow BOX and JPEG, cv2
warpAffine, scipy map_coordinates)."""

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage, stats
from skimage import color, filters

from compute import corrupt, rng
from compute.corrupt import digital
from tests.corruption_images import corruption_batch


def params(name):
    return corrupt.CORRUPTIONS[name].params


def raw(name, x, severity, seeds=None, scale=1.0):
    """The corruption before the final quantisation."""
    seeds = torch.arange(len(x)) if seeds is None else seeds
    return corrupt.CORRUPTIONS[name].fn(x, params(name)[severity - 1], seeds, scale)


def random_pixels(n=4, side=32, seed=0):
    """uint8-grid colour images with grey, black and white patches, as float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, side, side), generator=gen).double()
    x[:, :, :4] = x[:, :1, :4]  # grey
    x[:, :, 4:6] = 0  # black
    x[:, :, 6, :8] = 255  # white
    return x / 255


def to_numpy_hwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def from_numpy_hwc(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


# -- Poisson sampler ---------------------------------------------------------------------


RATES = tuple(np.linspace(0.0, 600.0, 241).tolist())  # few distinct rates, as shot noise has


def draw(seeds, levels, stream=0):
    return rng.poisson_levels(seeds, levels, RATES, stream)


@pytest.mark.parametrize("level", [1, 3, 4, 16, 100, 240])  # rates 2.5 .. 600
def test_poisson_follows_the_poisson_law(level):
    rate = RATES[level]
    counts = draw(torch.arange(40), torch.full((40, 5000), level), stream=7).flatten().numpy()
    assert counts.dtype == np.int64 and counts.min() >= 0
    assert counts.mean() == pytest.approx(rate, abs=4 * np.sqrt(rate / counts.size))
    assert counts.var() == pytest.approx(rate, rel=0.02)
    # chi-square against the pmf, with the tails pooled so every bin expects >= 20
    lo, hi = int(stats.poisson.ppf(1e-4, rate)), int(stats.poisson.isf(1e-4, rate))
    edges = np.arange(lo, hi + 2)
    observed = np.histogram(np.clip(counts, lo, hi), bins=edges - 0.5)[0]
    expected = np.diff(np.concatenate([[0.0], stats.poisson.cdf(edges[:-1], rate)]))
    expected[-1] += stats.poisson.sf(hi, rate)
    expected *= counts.size
    keep = expected >= 20
    if not keep.all():
        observed = np.append(observed[keep], observed[~keep].sum())
        expected = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_poisson_over_all_rates_passes_a_randomised_pit_ks_test():
    # for X ~ Poisson(r), F(X - 1) + U * P(X) is U(0, 1): one KS test covers every rate,
    # tails included (where the guide table hands over to a binary search)
    levels = torch.arange(len(RATES)).repeat(25, 40)
    counts = draw(torch.arange(25) + 1000, levels).numpy()
    jitter = rng.uniform(torch.arange(25) + 5000, (levels.shape[1],)).double().numpy()
    r = np.asarray(RATES)[levels.numpy()]
    pit = stats.poisson.cdf(counts - 1, r) + jitter * stats.poisson.pmf(counts, r)
    assert stats.kstest(pit.ravel(), "uniform").pvalue > 1e-3


def test_poisson_is_per_sample_deterministic_and_batch_invariant():
    levels = torch.randint(0, len(RATES), (6, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    levels[0] = 0
    seeds = torch.tensor([5, 6, 7, 8, 9, 10])
    counts = draw(seeds, levels, stream=2)
    assert counts.shape == levels.shape
    assert torch.equal(counts[0], torch.zeros_like(counts[0]))  # Poisson(0) is 0
    assert torch.equal(counts, draw(seeds, levels, stream=2))
    for i in range(6):
        assert torch.equal(counts[i : i + 1], draw(seeds[i : i + 1], levels[i : i + 1], stream=2))
    assert torch.equal(counts, draw(seeds.flip(0), levels.flip(0), stream=2).flip(0))
    assert not torch.equal(counts, draw(seeds, levels, stream=3))
    with pytest.raises(ValueError, match="one seed per sample"):
        draw(seeds[:2], levels)


# -- noise -------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_is_poisson_photon_counts(severity):
    lam = params("shot_noise")[severity - 1]
    levels = [26 / 255, 102 / 255, 204 / 255]  # 8-bit images: shot noise counts their photons
    x = torch.tensor(levels).view(1, 3, 1, 1).expand(64, 3, 32, 32).contiguous()
    y = raw("shot_noise", x, severity).double()
    counts = y * lam
    assert torch.allclose(counts, counts.round(), atol=1e-3)  # whole photon counts
    for c, level in enumerate(levels):
        channel = y[:, c]
        sd = (level / lam / channel.numel()) ** 0.5
        assert float(channel.mean()) == pytest.approx(level, abs=4 * sd)
        assert float(channel.var()) == pytest.approx(level / lam, rel=0.04)
    assert torch.equal(raw("shot_noise", torch.zeros(2, 3, 8, 8), severity), torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_impulse_noise_flips_elements_to_zero_or_one_half_each(severity):
    amount = params("impulse_noise")[severity - 1]
    x = torch.full((100, 3, 32, 32), 128 / 255)
    y = corrupt.corrupt(x, "impulse_noise", severity, torch.arange(100))
    changed = y != x
    assert float(changed.float().mean()) == pytest.approx(amount, rel=0.05)
    assert torch.all((y[changed] == 0) | (y[changed] == 1))
    assert float((y[changed] == 1).float().mean()) == pytest.approx(0.5, abs=0.02)
    # channels flip on their own: pixels with exactly one changed channel ~ 3 a (1 - a)^2
    one_channel = (changed.sum(dim=1) == 1).float().mean()
    assert float(one_channel) == pytest.approx(3 * amount * (1 - amount) ** 2, rel=0.06)


def test_impulse_noise_leaves_the_other_elements_alone():
    x = corruption_batch(6)
    y = corrupt.corrupt(x, "impulse_noise", 5, torch.arange(6))
    kept = (y != 0) & (y != 1)
    assert torch.equal(y[kept], x[kept])


def test_speckle_noise_scales_with_the_intensity():
    levels = torch.tensor([0.0, 0.25, 0.75]).view(1, 3, 1, 1)
    x = levels.expand(64, 3, 32, 32).contiguous()
    for severity, sigma in enumerate(params("speckle_noise"), start=1):
        y = raw("speckle_noise", x, severity)
        assert torch.equal(y[:, 0], x[:, 0])  # black stays black
        relative = (y[:, 1:] - x[:, 1:]) / x[:, 1:]
        assert float(relative.std()) == pytest.approx(sigma, rel=0.03)
        assert float(relative.mean()) == pytest.approx(0.0, abs=0.01)
        spread = (y - x).std(dim=(0, 2, 3))
        assert float(spread[2] / spread[1]) == pytest.approx(3.0, rel=0.06)


# -- brightness and saturate -------------------------------------------------------------


def skimage_hsv_edit(x, channel, edit):
    hsv = color.rgb2hsv(to_numpy_hwc(x))
    hsv[..., channel] = edit(hsv[..., channel])
    return from_numpy_hwc(color.hsv2rgb(hsv))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_brightness_is_skimage_value_shift(severity):
    c = params("brightness")[severity - 1]
    x = random_pixels()
    expected = skimage_hsv_edit(x, 2, lambda v: np.clip(v + c, 0, 1))
    assert torch.allclose(raw("brightness", x, severity), expected, atol=1e-12, rtol=0)
    black = corrupt.corrupt(torch.zeros(1, 3, 4, 4), "brightness", severity, torch.tensor([0]))
    assert torch.equal(black, torch.full_like(black, np.floor(c * 255) / 255))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_saturate_is_skimage_saturation_edit(severity):
    a, b = params("saturate")[severity - 1]
    x = random_pixels()
    expected = skimage_hsv_edit(x, 1, lambda s: np.clip(s * a + b, 0, 1))
    assert torch.allclose(raw("saturate", x, severity), expected, atol=1e-12, rtol=0)


def test_saturate_tints_grey_towards_red_like_skimage():
    grey = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    y = raw("saturate", grey, 5)  # S: 0 -> 0.2, grey has hue 0 (red)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([0.5, 0.4, 0.4], dtype=torch.float64))
    assert torch.equal(raw("saturate", grey, 3), grey)  # b = 0 keeps grey grey


# -- pixelate ----------------------------------------------------------------------------


def pil_pixelate(x, s):
    side = x.shape[-1]
    out = []
    for image in (x * 255).round().to(torch.uint8):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        small = pil.resize((int(side * s), int(side * s)), Image.BOX)
        out.append(torch.from_numpy(np.array(small.resize((side, side), Image.BOX))).permute(2, 0, 1))
    return torch.stack(out).float() / 255


@pytest.mark.parametrize("side", [32, 48])
def test_pixelate_is_pillow_box_resize_down_and_up(side):
    x = torch.cat([corruption_batch(6, side=side), random_pixels(2, side).float()])
    for severity, s in enumerate(params("pixelate"), start=1):
        y = corrupt.corrupt(x, "pixelate", severity, torch.arange(len(x)))
        # Pillow's fixed-point arithmetic is reproduced, so the match is exact
        assert torch.equal((y * 255).round(), (pil_pixelate(x, s) * 255).round()), severity


def test_pixelate_at_an_integer_ratio_is_block_means():
    x = random_pixels(3)
    values = (x * 255).round()
    small = digital._pil_box_resize(values, 16, 16)
    block_means = torch.nn.functional.avg_pool2d(values, 2)
    assert (small - block_means).abs().max() <= 1.0  # two rounded passes, rows then columns
    # rows first, each pass rounding half up, is exactly this
    rows = torch.floor((values[..., 0::2] + values[..., 1::2]) / 2 + 0.5)
    assert torch.equal(small, torch.floor((rows[..., 0::2, :] + rows[..., 1::2, :]) / 2 + 0.5))
    # an integer upscale repeats each pixel
    assert torch.equal(digital._pil_box_resize(small, 32, 32), small.repeat_interleave(2, -1).repeat_interleave(2, -2))


# -- JPEG --------------------------------------------------------------------------------


def pil_jpeg(x, quality):
    out = []
    for image in (x * 255).round().to(torch.uint8):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
        out.append(torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def test_jpeg_matches_pillow_and_lower_quality_errs_more():
    x = corruption_batch(12)
    errors = []
    for severity, quality in enumerate(params("jpeg_compression"), start=1):
        y = corrupt.corrupt(x, "jpeg_compression", severity, torch.arange(12))
        levels = ((y - pil_jpeg(x, quality)) * 255).round().abs()
        # both use libjpeg with 4:2:0 chroma; allow for a different IDCT build
        assert float(levels.mean()) < 0.25 and float(levels.max()) <= 4
        errors.append(float((y - x).pow(2).mean()))
    assert all(b > a for a, b in zip(errors, errors[1:], strict=False)), errors


# -- elastic transform -------------------------------------------------------------------


def cv2_affine(x, seeds, jitter):
    anchors, moved = digital._affine_points(seeds, 32, 32, jitter)
    out = []
    for image, target in zip(to_numpy_hwc(x.float()), moved, strict=True):
        m = cv2.getAffineTransform(anchors.float().numpy(), target.float().numpy())
        out.append(cv2.warpAffine(image, m, (32, 32), borderMode=cv2.BORDER_REFLECT_101))
    return np.stack(out)


def test_elastic_severity_1_is_the_cv2_affine_warp():
    x = corruption_batch(6)
    seeds = torch.arange(6) + 40
    jitter = params("elastic_transform")[0][2] * 32
    expected = from_numpy_hwc(cv2_affine(x, seeds, jitter))
    y = raw("elastic_transform", x, 1, seeds)
    assert (y - expected).abs().max() < 1e-3
    assert (y - x).abs().mean() > 0.02  # it did move


@pytest.mark.parametrize("severity", [2, 3, 4, 5])
def test_elastic_displacement_resamples_like_scipy_map_coordinates(severity):
    alpha, sigma, jitter = (p * 32 for p in params("elastic_transform")[severity - 1])
    x = corruption_batch(3)
    seeds = torch.tensor([3, 4, 5])
    warped = cv2_affine(x, seeds, jitter)
    shift = digital._displacement(seeds, 32, 32, alpha, sigma).float().numpy()
    rows, cols, chans = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    expected = []
    for image, (dx, dy) in zip(warped, shift, strict=True):
        where = (rows + dy[..., None]).ravel(), (cols + dx[..., None]).ravel(), chans.ravel()
        expected.append(ndimage.map_coordinates(image, where, order=1, mode="reflect").reshape(32, 32, 3))
    y = raw("elastic_transform", x, severity, seeds)
    assert (y - from_numpy_hwc(np.stack(expected))).abs().max() < 1e-3


@pytest.mark.parametrize("severity", [2, 5])
def test_elastic_field_is_skimage_gaussian_of_uniform_noise(severity):
    alpha, sigma, _ = (p * 32 for p in params("elastic_transform")[severity - 1])
    seeds = torch.tensor([9])
    noise = (rng.uniform(seeds, (2, 32, 32), stream=1) * 2 - 1).double()[0].numpy()
    expected = [filters.gaussian(plane, sigma=sigma, mode="reflect", truncate=3) * alpha for plane in noise]
    field = digital._displacement(seeds, 32, 32, alpha, sigma)[0].numpy()
    assert np.abs(field - np.stack(expected)).max() < 1e-6


def test_elastic_displacements_grow_with_severity():
    seeds = torch.arange(200)
    sizes = []
    for alpha, sigma, _ in params("elastic_transform")[1:]:
        field = digital._displacement(seeds, 32, 32, alpha * 32, sigma * 32)
        sizes.append(float(field.norm(dim=1).mean()))
    assert all(b > 1.2 * a for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    assert sizes[0] > 0.01


def test_elastic_scales_with_the_image_side():
    x = corruption_batch(2, side=64)
    y = corrupt.corrupt(x, "elastic_transform", 4, torch.tensor([1, 2]))
    assert y.shape == x.shape and 0.01 < float((y - x).abs().mean()) < 0.3
