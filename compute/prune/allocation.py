"""How many weights each layer keeps: global, uniform-layerwise or ERK allocation.

Scores are "keep" scores: higher means more worth keeping. Every function returns exact
counts, so the measured sparsity differs from the target only by integer rounding.
"""

from __future__ import annotations

import math

import torch

ALLOCATIONS = ("global", "uniform", "erk")


def check_sparsity(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity {value} is outside [0, 1); use a fraction such as 0.9")
    return float(value)


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020, RigL): density of a layer is
    proportional to sum(shape) / prod(shape); layers that would exceed 1 stay dense and
    the rest share the remaining budget. The total kept count equals density * total."""
    dense: set[str] = set()
    while True:
        budget, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n = math.prod(shape)
            if name in dense:
                budget -= n * (1.0 - density)
            else:
                budget += n * density
                raw[name] = sum(shape) / n
                divisor += raw[name] * n
        if not raw:
            return {name: 1.0 for name in shapes}
        epsilon = budget / divisor
        largest = max(raw.values())
        if largest * epsilon > 1.0:
            dense.update(name for name, value in raw.items() if value == largest)
            continue
        return {name: 1.0 if name in dense else epsilon * raw[name] for name in shapes}


def keep_counts(shapes: dict[str, tuple[int, ...]], sparsity: float, allocation: str) -> dict[str, int]:
    """Weights to keep per layer for a layerwise allocation (uniform or erk)."""
    check_sparsity(sparsity)
    density = 1.0 - sparsity
    if allocation == "uniform":
        densities = {name: density for name in shapes}
    elif allocation == "erk":
        densities = erk_densities(shapes, density)
    else:
        raise ValueError(f"allocation {allocation!r} is not layerwise; choose uniform or erk")
    return {
        name: min(math.prod(shape), max(1, round(densities[name] * math.prod(shape)))) for name, shape in shapes.items()
    }


def top_masks(scores: dict[str, torch.Tensor], keep: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per layer, keep the `keep[name]` highest scores."""
    masks = {}
    for name, score in scores.items():
        flat = score.reshape(-1)
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[torch.topk(flat, k=keep[name], largest=True).indices] = True
        masks[name] = mask.reshape(score.shape)
    return masks


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Remove the round(sparsity * n) lowest scores over all layers together.

    Same selection as torch.nn.utils.prune.global_unstructured: one topk (largest=False)
    over the concatenated scores, in layer order.
    """
    check_sparsity(sparsity)
    names = list(scores)
    flat = torch.cat([scores[name].reshape(-1) for name in names])
    n_prune = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune:
        keep[torch.topk(flat, k=n_prune, largest=False).indices] = False
    masks, offset = {}, 0
    for name in names:
        size = scores[name].numel()
        masks[name] = keep[offset : offset + size].reshape(scores[name].shape)
        offset += size
    return masks


def select_masks(scores: dict[str, torch.Tensor], sparsity: float, allocation: str) -> dict[str, torch.Tensor]:
    """Masks that keep the highest scores at `sparsity` under an allocation."""
    if allocation == "global":
        return global_masks(scores, sparsity)
    shapes = {name: tuple(score.shape) for name, score in scores.items()}
    return top_masks(scores, keep_counts(shapes, sparsity, allocation))
