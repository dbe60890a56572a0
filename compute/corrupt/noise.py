"""Noise corruptions: gaussian, shot and impulse noise, and the extra speckle noise."""

from __future__ import annotations

from compute import rng
from compute.corrupt import register


@register("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x, sigma, seeds, scale):
    return x + sigma * rng.normal(seeds, tuple(x.shape[1:])).to(x.device)
