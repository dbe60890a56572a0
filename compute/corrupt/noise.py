"""Noise corruptions: gaussian, shot and impulse noise, and the extra speckle noise."""

from __future__ import annotations

import torch

from compute import rng
from compute.corrupt import register


@register("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x, sigma, seeds, scale):
    return x + sigma * rng.normal(seeds, tuple(x.shape[1:])).to(x.device)


@register("shot_noise", (500, 250, 100, 75, 50))
def shot_noise(x, photons, seeds, scale):
    """Photon counts Poisson(x * lambda) / lambda of the 8-bit image x represents: its 256
    levels give 256 rates, whose exact CDFs are inverted by table."""
    levels = torch.round(x.clamp(0.0, 1.0) * 255.0).long()
    rates = tuple(level / 255.0 * photons for level in range(256))
    return (rng.poisson_levels(seeds, levels, rates).double() / photons).to(x.dtype)


@register("impulse_noise", (0.01, 0.02, 0.03, 0.05, 0.07))
def impulse_noise(x, amount, seeds, scale):
    # skimage random_noise 's&p': every element (channels apart) flips with probability
    # `amount`, to 1 or 0 with equal odds
    shape = tuple(x.shape[1:])
    flipped = rng.uniform(seeds, shape, stream=0).to(x.device) < amount
    salt = (rng.uniform(seeds, shape, stream=1).to(x.device) < 0.5).to(x.dtype)
    return torch.where(flipped, salt, x)


@register("speckle_noise", (0.06, 0.10, 0.12, 0.16, 0.20))
def speckle_noise(x, sigma, seeds, scale):
    # multiplicative: the noise grows with the intensity, black stays black
    return x + x * sigma * rng.normal(seeds, tuple(x.shape[1:])).to(x)
