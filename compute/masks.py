"""Masks as plain `weight_mask` buffers, kept exact through training, and size accounting.

Weights outside the mask are stored as exact zeros. The training loop keeps them zero by
masking gradients before each optimizer step and weights and optimizer state (momentum,
Adam moments) after it, so weight decay and momentum cannot revive a pruned weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compute.config import InputError
from compute.layers import layer_counts
from compute.models import prunable_modules


@dataclass(frozen=True)
class LayerPolicy:
    """Which mask-carrying layers a pruning method may prune."""

    prune_first: bool = False  # the first conv sees raw pixels; most papers keep it dense
    prune_last: bool = False  # the classifier holds the class directions of the geometry

    def as_dict(self) -> dict[str, bool]:
        return {"prune_first_layer": self.prune_first, "prune_last_layer": self.prune_last}


class NoPrunableLayersError(InputError):
    """The layer policy leaves nothing to prune."""


def prunable_layers(model: nn.Module, policy: LayerPolicy) -> list[tuple[str, nn.Module]]:
    layers = prunable_modules(model)
    if not layers:
        raise NoPrunableLayersError(
            f"{type(model).__name__} has no Conv2d or Linear layer to prune; choose an architecture that has some"
        )
    first_name, last_name = layers[0][0], layers[-1][0]
    chosen = [
        (name, module)
        for name, module in layers
        if (policy.prune_first or name != first_name) and (policy.prune_last or name != last_name)
    ]
    if not chosen:
        raise NoPrunableLayersError(
            f"{type(model).__name__} has no layer left to prune under {policy.as_dict()}; "
            "allow the first or last layer to be pruned"
        )
    return chosen


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight_mask.clone() for name, m in prunable_modules(model)}


@torch.no_grad()
def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Install masks (layer name -> bool tensor) and zero the weights they remove."""
    modules = dict(prunable_modules(model))
    for name, mask in masks.items():
        module = modules[name]
        if mask.shape != module.weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(module.weight.shape)}")
        module.weight_mask.copy_(mask.to(module.weight_mask.device, torch.bool))
    enforce_masks(model)


@torch.no_grad()
def enforce_masks(model: nn.Module) -> None:
    for _, module in prunable_modules(model):
        # masked_fill, not mul: a diverged weight (inf, NaN) times zero is NaN
        module.weight.masked_fill_(~module.weight_mask, 0.0)


def masked_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step() that leaves every masked weight, and its state, exactly zero: gradients
    masked before the step, weights and optimizer state (momentum, Adam moments) after it."""
    # each layer's removed weights found once per step, not once per use: this runs every step
    removed = [(module.weight, ~module.weight_mask) for _, module in prunable_modules(model)]
    for weight, off in removed:
        if weight.grad is not None:
            weight.grad.masked_fill_(off, 0.0)
    optimizer.step()
    with torch.no_grad():
        for weight, off in removed:
            weight.masked_fill_(off, 0.0)  # masked_fill, not mul: a diverged weight times zero is NaN
            for value in optimizer.state.get(weight, {}).values():
                if torch.is_tensor(value) and value.shape == weight.shape:
                    value.masked_fill_(off, 0.0)


# --- accounting --------------------------------------------------------------------


def layer_sparsity(layers: list[tuple[str, nn.Module]]) -> float:
    """Fraction of zero weights over the given layers' weight tensors."""
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / total if total else 0.0


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) over every parameter: weights, biases and normalisation layers."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return total, nonzero


def count_flops(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Multiply-adds per image performed by nonzero Conv2d and Linear weights: the sum of
    the per-layer counts (`layers.layer_counts`)."""
    return sum(count.flops for count in layer_counts(model, image_shape))
