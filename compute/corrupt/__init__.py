"""Common corruptions at CIFAR scale (docs/CORRUPTIONS.md), batched tensor code for CPU and CUDA.

Every corruption maps a batch x (N, 3, H, W) float in [0, 1] to the same shape, quantised
like the original benchmark: clip to [0, 1], scale to [0, 255], truncate to an integer.
Randomness comes from one seed per sample (compute.rng), so a batch gives the same result
as its images one at a time. Spatial parameters are given for 32x32 images and scale
with the image side on other sizes (`scale` = side / 32).

One module per family registers its corruptions: noise, blur, weather, digital (the four
extras live with the family they resemble).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from compute.schema import CORRUPTION_FAMILIES

#: fn(x, severity parameter, per-sample seeds, spatial scale) -> corrupted x (unquantised)
CorruptionFn = Callable[[torch.Tensor, object, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str
    params: tuple  # one entry per severity 1..5
    fn: CorruptionFn
    #: images per call on the CPU: intermediates then stay in cache, several times faster
    #: than whole-batch passes; every result is per image, so slicing changes nothing
    cpu_chunk: int = 128


CORRUPTIONS: dict[str, Corruption] = {}


def register(name: str, params: tuple, cpu_chunk: int = 128) -> Callable[[CorruptionFn], CorruptionFn]:
    if len(params) != 5:
        raise ValueError(f"{name}: need parameters for 5 severities, got {len(params)}")

    def wrap(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = Corruption(name, CORRUPTION_FAMILIES[name], tuple(params), fn, cpu_chunk)
        return fn

    return wrap


def quantize(x: torch.Tensor) -> torch.Tensor:
    """clip to [0, 1], then floor to the uint8 grid, as the benchmark's final uint8 cast."""
    return torch.floor(x.clamp(0.0, 1.0) * 255.0) / 255.0


def _checked(x: torch.Tensor, name: str, severity: int, seeds) -> tuple[Corruption, torch.Tensor]:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1 to 5, got {severity}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch of shape (N, 3, H, W), got {tuple(x.shape)}")
    seeds = torch.as_tensor(seeds, dtype=torch.int64, device=x.device).reshape(-1)
    if len(seeds) != len(x):
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {len(x)} images")
    return CORRUPTIONS[name], seeds


def _chunks(n: int, spec: Corruption, device: torch.device) -> list[slice]:
    size = spec.cpu_chunk if device.type == "cpu" else n
    return [slice(i, i + size) for i in range(0, n, max(1, size))]


def corrupt(x: torch.Tensor, name: str, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    """Corrupt a float batch in [0, 1]; `seeds` holds one int seed per image."""
    spec, seeds = _checked(x, name, severity, seeds)
    scale, param = x.shape[-1] / 32.0, spec.params[severity - 1]
    parts = [quantize(spec.fn(x[part].float(), param, seeds[part], scale)) for part in _chunks(len(x), spec, x.device)]
    return torch.cat(parts) if len(parts) != 1 else parts[0]


def corrupt_uint8(images: torch.Tensor, name: str, severity: int, seeds: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) in, uint8 out: the storage format of CIFAR-10-C."""
    spec, seeds = _checked(images, name, severity, seeds)
    scale, param = images.shape[-1] / 32.0, spec.params[severity - 1]
    out = torch.empty_like(images)
    for part in _chunks(len(images), spec, images.device):
        y = quantize(spec.fn(images[part].float() / 255.0, param, seeds[part], scale))
        out[part] = torch.round(y * 255.0).to(torch.uint8)
    return out


# the family modules register their corruptions on import (after `register` exists)
from compute.corrupt import blur, digital, noise, weather  # noqa: E402, F401

#: registry order = docs/CORRUPTIONS.md order, whatever the import order
CORRUPTIONS = {name: CORRUPTIONS[name] for name in CORRUPTION_FAMILIES if name in CORRUPTIONS}
