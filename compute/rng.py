"""Counter-based random numbers: one independent, reproducible stream per sample.

torch.Generator draws one sequence for a whole batch, so a sample's noise would depend
on its position in the batch. Here every value is a hash of (sample seed, stream,
position), computed for the whole batch at once: corrupting a batch gives exactly what
corrupting each image alone with its seed gives, on any batch size and any device.

The hash is the 32-bit finaliser of MurmurHash3 applied twice, computed in int64 with
16-bit partial products so no intermediate overflows.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) without int64 overflow."""
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (hi + x * (c & 0xFFFF)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def derive_seeds(base: int, *keys: int | torch.Tensor) -> torch.Tensor | int:
    """Mix a base seed with keys (ints or int tensors, broadcast) into 32-bit seeds."""
    h = torch.as_tensor(base & _M32, dtype=torch.int64)
    for key in keys:
        k = torch.as_tensor(key, dtype=torch.int64) & _M32
        h = _mix32((_mix32(h) + _mul32(k, _GOLDEN) + 0x7F4A7C15) & _M32)
    return h


def random_bits(seeds: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """Uniform 32-bit integers (as int64), shape (N, *shape), stream `stream` of each seed."""
    seeds = seeds.to(torch.int64).reshape(-1, *([1] * len(shape)))
    numel = math.prod(shape)
    counter = torch.arange(numel, dtype=torch.int64, device=seeds.device).reshape(shape)
    key = _mix32((_mix32(seeds & _M32) ^ _mul32(torch.tensor(stream + 1, dtype=torch.int64), _GOLDEN)) & _M32)
    return _mix32((_mix32(counter) + key) & _M32)


def uniform(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """U(0, 1) (both ends excluded) in float32, shape (N, *shape)."""
    bits = random_bits(seeds, shape, stream).to(torch.float64)
    return ((bits + 0.5) / 2.0**32).to(torch.float32)


def normal(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """N(0, 1) in float32 by the Box-Muller transform of two uniform streams."""
    u1 = uniform(seeds, shape, 2 * stream).double()
    u2 = uniform(seeds, shape, 2 * stream + 1).double()
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()
