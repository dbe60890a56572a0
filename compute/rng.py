"""Counter-based random numbers: one independent, reproducible stream per sample.

torch.Generator draws one sequence for a whole batch, so a sample's noise would depend
on its position in the batch. Here every value is a hash of (sample seed, stream,
position), computed for the whole batch at once: corrupting a batch gives exactly what
corrupting each image alone with its seed gives, on any batch size and any device.

The hash is the 32-bit finaliser of MurmurHash3 applied twice. Small tensors (seeds,
keys) are hashed in int64 with 16-bit partial products, which never overflow; the hot
path (every pixel of every image) runs the same hash in int32, where a multiply is
already modulo 2**32 (two's complement wrap-around, checked against the int64 reference
in the tests), which is about ten times faster. The position hash does not depend on the
seed and is computed once per shape.
"""

from __future__ import annotations

import functools
import math

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_C1, _C2 = 0x85EBCA6B, 0xC2B2AE35
_NORMAL_TAG = 0x4E4F524D  # keeps normal's two uniform sub-streams apart from uniform's


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) without int64 overflow."""
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (hi + x * (c & 0xFFFF)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The finaliser on int64 values in [0, 2**32): the reference, for small tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 13)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


def _signed(c: int) -> int:
    return c - (1 << 32) if c >= 1 << 31 else c


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) as int32 with the same bits."""
    return torch.where(x >= 1 << 31, x - (1 << 32), x).to(torch.int32)


def _mix32_i32_(x: torch.Tensor) -> torch.Tensor:
    """The same finaliser on int32 bit patterns, in place (arithmetic shifts are masked to
    act as logical ones)."""
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16).bitwise_and_(0xFFFF))
    x.mul_(_signed(_C1))
    x.bitwise_xor_(torch.bitwise_right_shift(x, 13).bitwise_and_(0x7FFFF))
    x.mul_(_signed(_C2))
    x.bitwise_xor_(torch.bitwise_right_shift(x, 16).bitwise_and_(0xFFFF))
    return x


@functools.lru_cache(maxsize=32)
def _position_hash(numel: int, device: str) -> torch.Tensor:
    return _mix32_i32_(_as_int32(torch.arange(numel, dtype=torch.int64, device=device)))


def derive_seeds(base: int, *keys: int | torch.Tensor) -> torch.Tensor | int:
    """Mix a base seed with keys (ints or int tensors, broadcast) into 32-bit seeds."""
    h = torch.as_tensor(base & _M32, dtype=torch.int64)
    for key in keys:
        k = torch.as_tensor(key, dtype=torch.int64) & _M32
        h = _mix32((_mix32(h) + _mul32(k, _GOLDEN) + 0x7F4A7C15) & _M32)
    return h


def _stream_keys(seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """One 32-bit key per seed for stream `stream` (int64, in [0, 2**32))."""
    return _mix32((_mix32(seeds & _M32) ^ _mul32(torch.tensor(stream + 1, dtype=torch.int64), _GOLDEN)) & _M32)


def random_bits(seeds: torch.Tensor, shape: tuple[int, ...], stream: int) -> torch.Tensor:
    """Uniform 32-bit patterns (int32), shape (N, *shape), stream `stream` of each seed."""
    seeds = seeds.to(torch.int64).reshape(-1, *([1] * len(shape)))
    positions = _position_hash(math.prod(shape), str(seeds.device)).reshape(shape)
    return _mix32_i32_(positions + _as_int32(_stream_keys(seeds, stream)))


def _to_unit(bits: torch.Tensor) -> torch.Tensor:
    """32-bit patterns to U(0, 1) in float64, both ends excluded."""
    return ((bits.to(torch.int64) & _M32).to(torch.float64) + 0.5) / 2.0**32


def uniform(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """U(0, 1) (both ends excluded) in float32 from the top 24 bits, shape (N, *shape)."""
    bits = torch.bitwise_right_shift(random_bits(seeds, shape, stream), 8).bitwise_and_(0xFFFFFF)
    return bits.to(torch.float32).add_(0.5).mul_(2.0**-24)


def normal(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """N(0, 1) in float32, shape (N, *shape): Box-Muller on two uniform sub-streams of its
    own, using both the cosine and the sine output (half the hashing).

    24-bit uniforms bound |z| by 5.9, a tail of 4e-9 that image noise never misses.
    """
    count = math.prod(shape)
    half = -(-count // 2)
    radius = torch.sqrt(-2.0 * torch.log(uniform(seeds, (half,), int(derive_seeds(stream, _NORMAL_TAG, 0)))))
    angle = uniform(seeds, (half,), int(derive_seeds(stream, _NORMAL_TAG, 1))).mul_(2.0 * math.pi)
    pairs = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return pairs[:, :count].reshape(-1, *shape)


def integers(seeds: torch.Tensor, shape: tuple[int, ...], stream: int, low: int, high: int) -> torch.Tensor:
    """Integers in [low, high) (int64), shape (N, *shape), like numpy's randint. A range of
    2**b values takes b bits of each 32-bit word (32 // b values per hash: glass blur's coin
    flips); other ranges scale a uniform."""
    span = high - low
    count = math.prod(shape)
    bits = span.bit_length() - 1
    if span & (span - 1) == 0 and 0 < bits <= 16:
        per_word = 32 // bits
        words = random_bits(seeds, (-(-count // per_word),), stream)
        offsets = torch.arange(per_word, device=words.device) * bits
        values = (words[..., None] >> offsets) & (span - 1)
        return values.reshape(len(words), -1)[:, :count].reshape(len(words), *shape).long() + low
    u = uniform(seeds, shape, stream)
    return (u * span).floor().long().clamp(max=span - 1) + low


_POISSON_TAG = 0x504F4953  # keeps poisson's sub-streams apart from the small stream numbers callers use


def _substream(stream: int, index: int) -> int:
    return int(derive_seeds(stream, _POISSON_TAG, index))


# -- Poisson counts of few distinct rates (shot noise on 8-bit images) -------------------

_GUIDE_BINS = 1024
_GUIDE_STEPS = 4  # linear steps after the guide before a binary search finishes the tails


@functools.lru_cache(maxsize=16)
def _poisson_tables(rates: tuple[float, ...], device: str) -> tuple[torch.Tensor, ...]:
    """Exact Poisson CDFs of each rate, laid end to end (float64), each row's start in that
    array, a guide table (for rate r and bin g, the smallest k with CDF_r(k) >= g / bins,
    where the inversion of a u in bin g starts: an indexed search, Chen & Asau 1974), and
    the rows offset by their index (r + CDF_r), one sorted array for a binary search."""
    rows, starts, guides, offset = [], [], [], 0
    for rate in rates:
        top = int(rate + 12.0 * math.sqrt(rate) + 20.0)  # P(X > top) < 1e-30 for these rates
        k = torch.arange(top + 1, dtype=torch.float64)
        log_pmf = (
            k * math.log(rate) - rate - torch.lgamma(k + 1.0) if rate > 0 else torch.where(k == 0, 0.0, -torch.inf)
        )
        cdf = torch.cumsum(torch.exp(log_pmf), 0)
        cdf[-1] = 1.0  # the last count takes the (astronomically small) rest of the tail
        rows.append(cdf)
        starts.append(offset)
        guides.append(torch.searchsorted(cdf, torch.arange(_GUIDE_BINS, dtype=torch.float64) / _GUIDE_BINS))
        offset += len(cdf)
    offset_rows = torch.cat([r + cdf for r, cdf in enumerate(rows)])  # row r holds r + CDF_r: sorted
    return (
        torch.cat(rows).to(device),
        torch.tensor(starts, dtype=torch.int64, device=device),
        torch.stack(guides).to(device),
        offset_rows.to(device),
    )


def poisson_levels(
    seeds: torch.Tensor, levels: torch.Tensor, rates: tuple[float, ...], stream: int = 0
) -> torch.Tensor:
    """Poisson counts with rate `rates[levels]` for integer `levels` (N, ...), one seed per
    sample: exact inversion of each rate's CDF (one uniform, a guide-table lookup and
    usually no further step per element), for images whose rates take few values, such as
    8-bit pixels times a photon count. Returns int64 counts, each depending only on its
    seed, position and stream."""
    seeds = seeds.to(device=levels.device, dtype=torch.int64).reshape(-1)
    if levels.shape[0] != seeds.numel():
        raise ValueError(f"need one seed per sample: {seeds.numel()} seeds for {levels.shape[0]} samples")
    cdf, starts, guide, offset_rows = _poisson_tables(tuple(float(r) for r in rates), str(levels.device))
    u = _to_unit(random_bits(seeds, tuple(levels.shape[1:]), _substream(stream, 0))).reshape(-1)
    flat_levels = levels.reshape(-1)
    # flat gathers (torch.take) are several times faster than 2-D advanced indexing here
    k = torch.take(guide, flat_levels * _GUIDE_BINS + (u * _GUIDE_BINS).long().clamp_max(_GUIDE_BINS - 1))
    base = torch.take(starts, flat_levels)
    # inversion: the smallest k with CDF(k) >= u, a few steps up from the guide's start
    pending = torch.nonzero(torch.take(cdf, base + k) < u).squeeze(1)
    for _ in range(_GUIDE_STEPS):
        if pending.numel() == 0:
            break
        k[pending] += 1
        pending = pending[torch.take(cdf, base[pending] + k[pending]) < u[pending]]
    if pending.numel():  # the tail bins span many counts: a binary search for those few
        found = torch.searchsorted(offset_rows, flat_levels[pending].to(torch.float64) + u[pending])
        k[pending] = found - base[pending]
    return k.reshape(levels.shape)
