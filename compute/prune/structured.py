"""Structured pruning: remove whole conv filters by L1 norm (Li et al. 2017), physically.

The pruned model is a smaller network: fewer output channels in each pruned conv, the
matching batch-norm channels removed, and fewer input channels in the layers that read
them. Parameter and FLOP counts of the snapshot are therefore physical.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils import skip_init

from compute.config import InputError
from compute.models import ChannelGroup, add_mask_buffers, prunable_modules
from compute.prune.allocation import check_sparsity
from compute.prune.base import EpochBudget, Method, PlannedEpochs, PruneContext, PrunedModel, finetuned, register


class StructuredError(InputError):
    """The architecture has no filters that may be removed."""


def _module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def prunable_groups(model: nn.Module, prunable: set[str]) -> list[ChannelGroup]:
    """The model's channel groups whose producer the layer policy lets us prune, except a
    group the classifier reads: the feature vector keeps the dense model's dimension (as
    ResNet block outputs do), so every model's geometry lives in the same space."""
    classifier = prunable_modules(model)[-1][0]
    groups = [
        g
        for g in getattr(model, "channel_groups", lambda: [])()
        if g.producer in prunable and classifier not in g.consumers
    ]
    if not groups:
        raise StructuredError(
            f"{type(model).__name__} has no filter group that l1_filter may remove under the layer policy; "
            "use an architecture with channel groups or allow the first layer to be pruned"
        )
    return groups


def filter_norms(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    return _module(model, group.producer).weight.detach().abs().sum(dim=(1, 2, 3))


def kept_counts(model: nn.Module, groups: list[ChannelGroup], fraction: float) -> dict[str, int]:
    """Filters kept per group when `fraction` of each is removed; never fewer than one."""
    return {g.producer: max(1, round((1.0 - fraction) * _module(model, g.producer).out_channels)) for g in groups}


def weight_count(model: nn.Module, groups: list[ChannelGroup], keep: dict[str, int], names: list[str]) -> int:
    """Weights of the named layers once the groups keep `keep` channels."""
    outs = {g.producer: keep[g.producer] for g in groups}
    ins = {c: keep[g.producer] for g in groups for c in g.consumers}
    total = 0
    for name in names:
        module = _module(model, name)
        if isinstance(module, nn.Conv2d):
            c_out = outs.get(name, module.out_channels)
            c_in = ins.get(name, module.in_channels)
            total += c_out * c_in * math.prod(module.kernel_size) // module.groups
        else:
            total += module.out_features * ins.get(name, module.in_features)
    return total


def fraction_for(model: nn.Module, groups: list[ChannelGroup], names: list[str], sparsity: float) -> float:
    """The per-group filter fraction whose removal best matches `sparsity` of the named layers' weights."""
    dense = weight_count(model, groups, kept_counts(model, groups, 0.0), names)
    fractions = np.linspace(0.0, 1.0, 2001)
    removed = [1.0 - weight_count(model, groups, kept_counts(model, groups, f), names) / dense for f in fractions]
    return float(fractions[int(np.argmin([abs(r - sparsity) for r in removed]))])


def choose_filters(model: nn.Module, groups: list[ChannelGroup], fraction: float) -> dict[str, torch.Tensor]:
    """Indices (sorted) of the filters with the largest L1 norms, per producer."""
    counts = kept_counts(model, groups, fraction)
    return {g.producer: torch.topk(filter_norms(model, g), counts[g.producer]).indices.sort().values for g in groups}


@torch.no_grad()
def mask_filters(model: nn.Module, groups: list[ChannelGroup], keep: dict[str, torch.Tensor]) -> None:
    """The masked equivalent of `shrink`: zero the removed filters and their batch-norm
    scale and shift, so those channels output exactly zero."""
    for g in groups:
        producer = _module(model, g.producer)
        removed = torch.ones(producer.out_channels, dtype=torch.bool, device=producer.weight.device)
        removed[keep[g.producer]] = False
        producer.weight[removed] = 0.0
        if producer.bias is not None:
            producer.bias[removed] = 0.0
        if g.norm:
            norm = _module(model, g.norm)
            norm.weight[removed] = 0.0
            norm.bias[removed] = 0.0


@torch.no_grad()
def shrink(model: nn.Module, groups: list[ChannelGroup], keep: dict[str, torch.Tensor]) -> None:
    """Remove the filters not in `keep` from the model, in place (a physically smaller net)."""
    for g in groups:
        idx = keep[g.producer]
        old = _module(model, g.producer)
        new = skip_init(
            nn.Conv2d, old.in_channels, len(idx), old.kernel_size, old.stride, old.padding, old.dilation,
            old.groups, old.bias is not None, old.padding_mode, device=old.weight.device, dtype=old.weight.dtype,
        )  # fmt: skip
        new.weight.copy_(old.weight[idx])
        if old.bias is not None:
            new.bias.copy_(old.bias[idx])
        _replace(model, g.producer, new)
        if g.norm:
            bn = _module(model, g.norm)
            new_bn = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats).to(bn.weight)
            new_bn.weight.copy_(bn.weight[idx])
            new_bn.bias.copy_(bn.bias[idx])
            new_bn.running_mean.copy_(bn.running_mean[idx])
            new_bn.running_var.copy_(bn.running_var[idx])
            new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
            _replace(model, g.norm, new_bn)
        for name in g.consumers:
            old = _module(model, name)
            if isinstance(old, nn.Conv2d):
                new = skip_init(
                    nn.Conv2d, len(idx), old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, old.bias is not None, old.padding_mode, device=old.weight.device,
                    dtype=old.weight.dtype,
                )  # fmt: skip
            else:
                new = skip_init(
                    nn.Linear, len(idx), old.out_features, old.bias is not None, device=old.weight.device,
                    dtype=old.weight.dtype,
                )  # every value is copied below: no random initialisation to draw
            new.weight.copy_(old.weight[:, idx])
            if old.bias is not None:
                new.bias.copy_(old.bias)
            _replace(model, name, new)
    add_mask_buffers(model)


@register
class L1Filter(Method):
    name = "l1_filter"
    family = "structured"
    allocations = ("uniform",)
    description = (
        "removes whole conv filters with the smallest L1 norm, the same fraction per layer, giving a "
        "physically smaller network whose feature vector keeps its width, then fine-tunes (Li et al. 2017)"
    )

    def planned_epochs(self, budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
        return finetuned(budget, sparsities)

    def prune_one(self, ctx: PruneContext, sparsity: float) -> PrunedModel:
        check_sparsity(sparsity)
        start = time.perf_counter()
        model = ctx.fresh_copy()
        names = [name for name, _ in ctx.layers(model)]
        groups = prunable_groups(model, set(names))
        fraction = fraction_for(model, groups, names, sparsity)
        keep = choose_filters(model, groups, fraction)
        widths = {p: model.get_submodule(p).out_channels for p in keep}
        shrink(model, groups, keep)
        prune_seconds = time.perf_counter() - start
        result = ctx.fit(model, ctx.finetune, f"{self.name} {sparsity:g}")
        notes = {
            "filter_fraction": round(fraction, 4),
            "channels": {p: len(i) for p, i in keep.items()},
            # the dense filters each pruned conv kept, in order: where its weights sit in the dense shapes
            "kept_filters": {p: i.tolist() for p, i in keep.items()},
        }
        if len(keep) == 1:  # the whole sparsity falls on one conv: a bottleneck, unlike the unstructured methods
            (layer, kept), = keep.items()
            notes["bottleneck"] = (
                f"only {layer} can lose filters in this architecture, so it keeps {len(kept)} of its "
                f"{widths[layer]}: this model's robustness is that bottleneck's"
            )
        return PrunedModel(model, sparsity, prune_seconds, result.seconds, ctx.dense_epochs + result.epochs, notes)
