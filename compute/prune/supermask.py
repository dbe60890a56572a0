"""Supermasks: every weight stays frozen at its random initialisation; only a score per
weight is learned, as in the authors' code (allenai/hidden-networks, chrundle/biprop).

Each forward pass keeps the top-k scores |s| of every prunable layer. edge-popup
(Ramanujan et al. 2020) uses w * mask and passes the gradient straight through to the
scores. biprop (Diffenderfer & Kailkhura 2021, multi-prize tickets) uses
alpha * sign(w) * mask, alpha the mean |w| of the layer's kept weights; its scores receive
g * |w| (GetQuantnet_binary), alpha is not differentiated.

Nothing else trains (freeze_model_weights): layers the layer policy keeps dense (by
default the first conv and the classifier) keep their random initial weights, biases are
zero, and batch norm is non-affine (scale 1, shift 0; running statistics still update).
The trained model is written back as ordinary weights with exact zeros, so it is
evaluated like every other model.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.func import functional_call

from compute.masks import set_masks
from compute.models import prunable_modules
from compute.prune.allocation import check_sparsity, keep_counts
from compute.prune.base import (
    EpochBudget,
    Method,
    PlannedEpochs,
    PruneContext,
    PrunedModel,
    each,
    method_seed,
    register,
)
from compute.train import TrainHooks


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask of the k largest scores, shaped like them."""
    mask = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
    mask[torch.topk(scores.reshape(-1), k).indices] = 1.0
    return mask.reshape(scores.shape)


class TopK(torch.autograd.Function):
    """edge-popup's GetSubnet: the top-k mask; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        return top_k_mask(scores, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class BinaryTopK(torch.autograd.Function):
    """biprop's GetQuantnet_binary: alpha * mask, alpha = mean |w| over the kept weights;
    the scores receive grad * |w|, and nothing flows through alpha or the mask count."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
        mask = top_k_mask(scores, k)
        magnitude = weight.abs()
        ctx.save_for_backward(magnitude)
        return (magnitude * mask).sum() / k * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (magnitude,) = ctx.saved_tensors
        return grad * magnitude, None, None


def effective_weight(weight: torch.Tensor, scores: torch.Tensor, k: int, binarize: bool) -> torch.Tensor:
    """The weight a supermask layer computes with, from its frozen weight and its scores."""
    if binarize:
        return torch.sign(weight) * BinaryTopK.apply(scores.abs(), weight, k)
    return weight * TopK.apply(scores.abs(), k)


def frozen_weights(module: nn.Module, init: str, generator: torch.Generator) -> torch.Tensor:
    """Random weights with Kaiming-normal scale (fan-in, ReLU gain): Gaussian, or its sign
    times the std (the signed constant of edge-popup)."""
    std = math.sqrt(2.0 / module.weight[0].numel())
    normal = torch.randn(module.weight.shape, generator=generator)
    weights = normal * std if init == "kaiming" else torch.sign(normal) * std
    return weights.to(module.weight)


def initial_scores(module: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """nn.init.kaiming_uniform_(scores, a=sqrt(5)), drawn from `generator`: U(-b, b) with
    b = 1 / sqrt(fan_in), the score initialisation of the authors' SubnetConv."""
    bound = 1.0 / math.sqrt(module.weight[0].numel())
    uniform = torch.rand(module.weight.shape, generator=generator)
    return ((2.0 * uniform - 1.0) * bound).to(module.weight)


@torch.no_grad()
def freeze_at_init(model: nn.Module, init: str, generator: torch.Generator) -> None:
    """Random frozen weights in every conv and linear layer, zero biases, non-affine batch norm."""
    for _, module in prunable_modules(model):
        module.weight.copy_(frozen_weights(module, init, generator))
        if module.bias is not None:
            module.bias.zero_()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()
    for p in model.parameters():
        p.requires_grad_(False)


class Supermask(Method):
    family = "supermask"
    allocations = ("uniform", "erk")
    binarize: bool
    init: str | None = None  # None: the --supermask-init setting

    def planned_epochs(self, budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
        return each(sparsities, budget.supermask)

    def prune_one(self, ctx: PruneContext, sparsity: float) -> PrunedModel:
        check_sparsity(sparsity)
        start = time.perf_counter()
        model = ctx.fresh_init()
        generator = torch.Generator().manual_seed(method_seed(ctx.seed, self.name, sparsity))
        init = self.init or ctx.settings.supermask_init
        freeze_at_init(model, init, generator)
        layers = dict(ctx.layers(model))
        shapes = {name: tuple(module.weight.shape) for name, module in layers.items()}
        counts = keep_counts(shapes, sparsity, self.allocation(ctx.settings))
        scores = {name: initial_scores(module, generator).requires_grad_(True) for name, module in layers.items()}
        initial = {name: top_k_mask(s.detach().abs(), counts[name]).bool() for name, s in scores.items()}

        def masked_weights() -> dict[str, torch.Tensor]:
            return {
                name: effective_weight(layers[name].weight, scores[name], counts[name], self.binarize)
                for name in scores
            }

        def forward(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, {f"{name}.weight": w for name, w in masked_weights().items()}, (x,))

        prune_seconds = time.perf_counter() - start
        hooks = TrainHooks(parameters=list(scores.values()), forward=forward)
        result = ctx.fit(model, ctx.supermask, f"{self.name} {sparsity:g}", hooks=hooks)
        with torch.no_grad():
            final = masked_weights()
            for name, module in layers.items():
                module.weight.copy_(final[name])
            kept = {name: weight != 0 for name, weight in final.items()}
            set_masks(model, kept)
        for p in model.parameters():
            p.requires_grad_(True)
        notes = {
            "init": init,
            "mask_drift": round(mask_drift(initial, kept), 4),
            "mask_drift_if_unrelated": round(unrelated_drift(counts, shapes), 4),
        }
        return PrunedModel(model, sparsity, prune_seconds, result.seconds, result.epochs, notes)


def mask_drift(initial: dict[str, torch.Tensor], final: dict[str, torch.Tensor]) -> float:
    """Fraction of the finally kept weights that were not in the initial top-k of the
    random scores: 0 means training learned nothing, the mask is the random one."""
    kept = sum(int(final[name].sum()) for name in final)
    moved = sum(int((final[name] & ~initial[name]).sum()) for name in final)
    return moved / kept if kept else 0.0


def unrelated_drift(counts: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> float:
    """The expected drift of a mask drawn independently of the initial scores: in a layer
    keeping k of n weights, a fraction 1 - k/n of the kept weights lies outside the initial
    top-k. A learned mask at about this value has forgotten its random start."""
    kept = sum(counts.values())
    return sum(k * (1.0 - k / math.prod(shapes[name])) for name, k in counts.items()) / kept


@register
class EdgePopup(Supermask):
    name = "edge_popup"
    binarize = False
    description = (
        "learns which frozen random weights to keep: top-k scores per layer, straight-through; no weight "
        "is trained (Ramanujan et al. 2020)"
    )


@register
class Biprop(Supermask):
    name = "biprop"
    binarize = True
    init = "kaiming"
    description = (
        "a supermask of frozen random weights whose kept weights are binarised to alpha * sign(w); no weight "
        "is trained (multi-prize tickets, Diffenderfer & Kailkhura 2021)"
    )
