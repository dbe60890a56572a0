"""Per-layer accounting: the weights, nonzero weights and multiply-adds of every conv and
linear layer. One count makes both layers.parquet and models.parquet's `flops` (its sum),
so the two agree exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from compute.models import prunable_modules


@dataclass(frozen=True)
class LayerCount:
    layer: str  # the module's qualified name
    kind: str  # schema.LAYER_KINDS
    params: int
    nonzero: int
    flops: int


def layer_kind(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "linear"


@torch.no_grad()
def layer_counts(model: nn.Module, image_shape: tuple[int, int, int]) -> list[LayerCount]:
    """Every Conv2d and Linear layer, in definition order, with its multiply-adds per image
    by nonzero weights.

    A zero weight costs nothing (the ShrinkBench convention), so the count falls with
    unstructured sparsity and, for physically smaller structured models, with their size.
    A conv costs its nonzero weights times its output positions, a linear layer its nonzero
    weights; a layer applied several times per forward counts every application, one never
    applied counts 0. One forward of a blank image measures the output positions.
    """
    layers = prunable_modules(model)
    flops = {module: 0 for _, module in layers}

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        flops[module] += int((module.weight != 0).sum()) * positions

    handles = [module.register_forward_hook(hook) for _, module in layers]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, *image_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [
        LayerCount(name, layer_kind(m), m.weight.numel(), int((m.weight != 0).sum()), flops[m]) for name, m in layers
    ]


def layer_table(model_id: str, counts: list[LayerCount], prunable: set[str]) -> pl.DataFrame:
    """A model's rows of layers.parquet; `prunable`: the names of the layers the layer
    policy lets methods prune."""
    params = np.array([c.params for c in counts], dtype=np.int64)
    nonzero = np.array([c.nonzero for c in counts], dtype=np.int64)
    return pl.DataFrame(
        {
            "model_id": [model_id] * len(counts),
            "layer": [c.layer for c in counts],
            "kind": [c.kind for c in counts],
            "prunable": [c.layer in prunable for c in counts],
            "params": params,
            "nonzero": nonzero,
            "sparsity": (1.0 - nonzero / params).astype(np.float32),
            "flops": np.array([c.flops for c in counts], dtype=np.int64),
        }
    )
