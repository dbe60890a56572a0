"""Test images for the corruptions: real digits (grey), colour scenes, and textures."""

from __future__ import annotations

import torch


def colour_scene(seed: int, side: int = 32) -> torch.Tensor:
    """A smooth colour gradient with a bright disc and a dark bar: edges, hues, flat areas."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, side)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    base = torch.rand(3, 1, 1, generator=gen)
    tilt = torch.rand(3, 1, 1, generator=gen) - 0.5
    img = (base * 0.6 + 0.2 + tilt * (xx + yy) / 2).clamp(0, 1)
    cy, cx = torch.rand(2, generator=gen) * 0.5 + 0.25
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < 0.04
    img = torch.where(disc, torch.rand(3, 1, 1, generator=gen) * 0.3 + 0.7, img)
    bar = (xx > 0.1) & (xx < 0.25)
    return torch.where(bar, img * 0.2, img)


def corruption_batch(n: int = 8, seed: int = 0, side: int = 32) -> torch.Tensor:
    """(n, 3, side, side) float on the uint8 grid: digits, colour scenes, textures in turn."""
    from compute.data import DataSpec, load

    digits = load(DataSpec("digits", n_test=100, n_train=0)).test_images[: n // 3 + 1].float() / 255
    if side != 32:
        digits = torch.nn.functional.interpolate(digits, size=(side, side), mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(digits[i // 3])
        elif kind == 1:
            out.append(colour_scene(seed + i, side))
        else:
            out.append(torch.rand(3, side, side, generator=gen))
    return torch.floor(torch.stack(out).clamp(0, 1) * 255) / 255
