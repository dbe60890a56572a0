"""Digital corruptions: brightness, contrast, elastic transform, pixelate, JPEG, and the extra saturate."""

from __future__ import annotations

from compute.corrupt import register


@register("contrast", (0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x, c, seeds, scale):
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means
