"""Model diagnostics of models.parquet: the ReLU units a model never activates on the clean
test images (`dead_relu`) and the share it leaves at zero per image (`dynamic_dead_relu`),
and how far its conv and linear weights are from the dense
initialisation (`dist_init`) and from its dense parent (`dist_dense`)."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from compute.models import prunable_modules


class DeadUnits:
    """Inside `with DeadUnits(model) as dead:`, every application of an nn.ReLU module
    records which of its output units (channel x position, or feature) were above zero for
    some image of the batch, and how many of its outputs were at zero. A ReLU module applied
    several times per forward (a ResNet block's) counts each application's units separately."""

    def __init__(self, model: nn.Module):
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self.active: list[torch.Tensor] = []  # one per application, in the order they ran
        self.zeros = self.outputs = 0  # unit x image outputs at zero, and all of them
        self.handles: list = []

    def __enter__(self) -> DeadUnits:
        self.handles = [relu.register_forward_hook(self.record) for relu in self.relus]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def record(self, _module: nn.Module, _inputs, output: torch.Tensor) -> None:
        on = output > 0  # at once: an in-place ReLU's output changes later
        self.active.append(on.any(dim=0))
        self.zeros += int(on.numel() - on.sum())
        self.outputs += on.numel()

    def fraction(self, forwards: int) -> float | None:
        """The fraction of units never above zero over the `forwards` forward passes run in
        the block, each of which applied the ReLUs in the same order; None without ReLUs."""
        if not self.active:
            return None
        per_forward, left = divmod(len(self.active), forwards)
        if left:
            raise ValueError(f"{len(self.active)} ReLU applications do not split into {forwards} forward passes")
        units = dead = 0
        for slot in range(per_forward):
            ever = functools.reduce(torch.logical_or, self.active[slot::per_forward])
            units += ever.numel()
            dead += int((~ever).sum())
        return dead / units

    def inactive_share(self) -> float | None:
        """The share of unit x image outputs at zero: per image, the fraction of units ReLU
        silences, averaged over the images (the dynamic dead neuron rate); None without ReLUs."""
        return self.zeros / self.outputs if self.outputs else None


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every conv and linear layer, by name; masked weights are stored as
    zeros, so these are the weights the model computes with."""
    return {name: module.weight.detach() for name, module in prunable_modules(model)}


def state_weights(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The conv and linear weights of a state dict of `model`'s architecture (an initialisation)."""
    return {name: state[f"{name}.weight"] for name, _ in prunable_modules(model)}


def in_parent_shapes(
    model: nn.Module, parent: nn.Module, kept_filters: dict[str, list[int]] | None
) -> dict[str, torch.Tensor]:
    """The model's weights in its dense parent's shapes. A structurally pruned layer (`kept_filters`:
    producer conv -> the parent's filter indices it kept, as l1_filter records them) has its
    kept filters, and the input channels that read them, put back in their places and
    zeros for the removed ones; other layers are as they are."""
    weights = layer_weights(model)
    if not kept_filters:
        return weights
    shapes = {name: w.shape for name, w in layer_weights(parent).items()}
    groups = [g for g in parent.channel_groups() if g.producer in kept_filters]
    rows = {g.producer: kept_filters[g.producer] for g in groups}
    cols = {consumer: kept_filters[g.producer] for g in groups for consumer in g.consumers}
    out = {}
    for name, weight in weights.items():
        full = weight.new_zeros(shapes[name])
        r = torch.as_tensor(rows.get(name, range(shapes[name][0])), device=weight.device)
        c = torch.as_tensor(cols.get(name, range(shapes[name][1])), device=weight.device)
        full[r[:, None], c[None, :]] = weight
        out[name] = full
    return out


def weight_distance(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None) -> float | None:
    """||w - w_ref||_2 over every conv and linear weight together, in float64; None without
    a reference or when the two differ in their layers or shapes."""
    if reference is None or weights.keys() != reference.keys():
        return None
    if any(weights[name].shape != reference[name].shape for name in weights):
        return None
    squares = sum(
        float((weights[name].double().cpu() - reference[name].double().cpu()).square().sum()) for name in weights
    )
    return math.sqrt(squares)
