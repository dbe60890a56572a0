"""Supermasks: the weights stay frozen at random values; only a score per weight is learned.

Each forward pass keeps the top-k scores of every prunable layer (a straight-through
estimator passes the gradient to all scores), as in edge-popup (Ramanujan et al. 2020).
biprop (Diffenderfer & Kailkhura 2021, multi-prize tickets) also binarises the kept
weights to alpha * sign(w), alpha being the mean |w| of the kept weights of the layer.
The trained model is written back as ordinary weights with exact zeros, so it is
evaluated like every other model. Batch-norm scale and shift stay frozen at 1 and 0.
Layers the layer policy keeps dense (by default the first conv and the classifier) are
trained as ordinary weights, as dense layers are in every other method: frozen random
class directions would leave nothing for the masks to align the features with.
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
from compute.prune.base import Method, PruneContext, PrunedModel, register
from compute.train import TrainHooks


class TopK(torch.autograd.Function):
    """A 0/1 mask of the k largest scores; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        mask = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
        mask[torch.topk(scores.reshape(-1), k).indices] = 1.0
        return mask.reshape(scores.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def frozen_weights(module: nn.Module, init: str, generator: torch.Generator) -> torch.Tensor:
    """Random weights with Kaiming-normal scale: Gaussian, or its sign times the std."""
    fan_in = module.weight[0].numel()
    std = math.sqrt(2.0 / fan_in)
    normal = torch.randn(module.weight.shape, generator=generator)
    weights = normal * std if init == "kaiming" else torch.sign(normal) * std
    return weights.to(module.weight)


def effective_weight(weight: torch.Tensor, mask: torch.Tensor, binarize: bool) -> torch.Tensor:
    if not binarize:
        return weight * mask
    alpha = (weight.abs() * mask).sum().detach() / mask.sum().clamp_min(1.0)
    return alpha * torch.sign(weight) * mask


class Supermask(Method):
    family = "supermask"
    allocations = ("uniform", "erk")
    binarize: bool
    init: str | None = None  # None: the --supermask-init setting

    def run(self, ctx: PruneContext, sparsities: list[float]) -> list[PrunedModel]:
        return [self.train_one(ctx, sparsity, index) for index, sparsity in enumerate(sparsities)]

    def train_one(self, ctx: PruneContext, sparsity: float, index: int) -> PrunedModel:
        check_sparsity(sparsity)
        start = time.perf_counter()
        model = ctx.fresh_init()
        generator = torch.Generator().manual_seed(ctx.seed * 1000 + index)
        init = self.init or ctx.settings.supermask_init
        layers = ctx.layers(model)
        masked = {name for name, _ in layers}
        with torch.no_grad():
            for _, module in layers:
                module.weight.copy_(frozen_weights(module, init, generator))
                if module.bias is not None:
                    module.bias.zero_()
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d) and m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        for p in model.parameters():
            p.requires_grad_(False)
        dense_params = [p for name, m in prunable_modules(model) if name not in masked for p in m.parameters()]
        for p in dense_params:
            p.requires_grad_(True)
        counts = keep_counts({n: tuple(m.weight.shape) for n, m in layers}, sparsity, self.allocation(ctx.settings))
        scores = {}
        for name, module in layers:
            score = torch.empty_like(module.weight)
            nn.init.kaiming_uniform_(score, a=math.sqrt(5))
            scores[name] = score.requires_grad_(True)
        modules = dict(layers)

        def masked_weights() -> dict[str, torch.Tensor]:
            return {
                name: effective_weight(
                    modules[name].weight, TopK.apply(scores[name].abs(), counts[name]), self.binarize
                )
                for name in scores
            }

        def forward(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, {f"{name}.weight": w for name, w in masked_weights().items()}, (x,))

        prune_seconds = time.perf_counter() - start
        hooks = TrainHooks(parameters=[*scores.values(), *dense_params], forward=forward)
        result = ctx.fit(model, ctx.supermask, f"{self.name} {sparsity:g}", hooks=hooks)
        with torch.no_grad():
            final = masked_weights()
            for name, module in layers:
                module.weight.copy_(final[name])
            set_masks(model, {name: weight != 0 for name, weight in final.items()})
        for p in model.parameters():
            p.requires_grad_(True)
        return PrunedModel(model, sparsity, prune_seconds, result.seconds, {"init": init})


@register
class EdgePopup(Supermask):
    name = "edge_popup"
    binarize = False
    description = (
        "learns which frozen random weights to keep: top-k scores per layer, straight-through (Ramanujan et al. 2020)"
    )


@register
class Biprop(Supermask):
    name = "biprop"
    binarize = True
    init = "kaiming"
    description = (
        "a supermask whose kept weights are binarised to alpha * sign(w) "
        "(multi-prize tickets, Diffenderfer & Kailkhura 2021)"
    )
