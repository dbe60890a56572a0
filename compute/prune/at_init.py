"""Pruning at initialisation: SNIP, GraSP and SynFlow choose a mask before any training.

The saliency functions are pure (they score a copy and leave the model untouched) so they
can be checked against hand computations.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from compute.prune.base import FromInit, PruneContext, install, register
from compute.train import to_float


def score_batch(ctx: PruneContext) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch of training images (float, on the device) and their labels."""
    generator = torch.Generator().manual_seed(ctx.seed)
    n = min(ctx.settings.score_batch, len(ctx.data.train_labels))
    idx = torch.randperm(len(ctx.data.train_labels), generator=generator)[:n]
    return to_float(ctx.data.train_images[idx].to(ctx.device)), ctx.data.train_labels[idx].to(ctx.device)


def _weights(model: nn.Module, names: list[str]) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    return [modules[name].weight for name in names]


def snip_saliency(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """|w * dL/dw| on one batch (Lee et al. 2019): the connection sensitivity."""
    scorer = copy.deepcopy(model).train()
    weights = _weights(scorer, names)
    loss = F.cross_entropy(scorer(x), y)
    grads = torch.autograd.grad(loss, weights)
    return {name: (w * g).detach().abs() for name, w, g in zip(names, weights, grads, strict=True)}


def grasp_saliency(
    model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, temperature: float
) -> dict[str, torch.Tensor]:
    """S = -w * (H g) with temperature-scaled logits (Wang et al. 2020); the highest S go.

    g is the gradient of the loss, H its Hessian; H g comes from differentiating g . stop(g).
    """
    scorer = copy.deepcopy(model).train()
    weights = _weights(scorer, names)
    loss = F.cross_entropy(scorer(x) / temperature, y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    fixed = [g.detach() for g in grads]
    hessian_grad = torch.autograd.grad(sum((g * f).sum() for g, f in zip(grads, fixed, strict=True)), weights)
    return {name: -(w * hg).detach() for name, w, hg in zip(names, weights, hessian_grad, strict=True)}


def synflow_saliency(model: nn.Module, names: list[str], image_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """|w * dR/dw| with R = sum of the network's output on an all-ones input when every
    parameter is replaced by its absolute value (Tanaka et al. 2020). Data-free; float64
    because R is a product over all layers."""
    scorer = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in scorer.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    weights = _weights(scorer, names)
    device = weights[0].device
    total = scorer(torch.ones(1, *image_shape, dtype=torch.float64, device=device)).sum()
    grads = torch.autograd.grad(total, weights)
    return {name: (w * g).detach().abs().float() for name, w, g in zip(names, weights, grads, strict=True)}


@register
class Snip(FromInit):
    name = "snip"
    family = "at_init"
    allocations = ("global", "uniform", "erk")
    description = "keeps the weights with the largest |w * dL/dw| on one batch at initialisation (Lee et al. 2019)"

    def mask_at_init(self, ctx, model, sparsity):
        names = [name for name, _ in ctx.layers(model)]
        x, y = score_batch(ctx)
        install(model, snip_saliency(model, names, x, y), sparsity, self.allocation(ctx.settings))
        return {"score_batch": len(y)}


@register
class Grasp(FromInit):
    name = "grasp"
    family = "at_init"
    allocations = ("global", "uniform", "erk")
    description = (
        "removes the weights whose removal least reduces gradient flow, -w * Hg, at initialisation (Wang et al. 2020)"
    )

    def mask_at_init(self, ctx, model, sparsity):
        names = [name for name, _ in ctx.layers(model)]
        x, y = score_batch(ctx)
        saliency = grasp_saliency(model, names, x, y, ctx.settings.grasp_temperature)
        install(model, {name: -s for name, s in saliency.items()}, sparsity, self.allocation(ctx.settings))
        return {"score_batch": len(y), "temperature": ctx.settings.grasp_temperature}


@register
class SynFlow(FromInit):
    name = "synflow"
    family = "at_init"
    allocations = ("global", "uniform", "erk")
    description = (
        "data-free: iteratively removes the weights with the least synaptic flow |w * dR/dw| (Tanaka et al. 2020)"
    )

    def mask_at_init(self, ctx, model, sparsity):
        names = [name for name, _ in ctx.layers(model)]
        rounds = ctx.settings.synflow_rounds
        for k in range(1, rounds + 1):
            # exponential schedule: density (1 - s)^(k / rounds) after round k
            round_sparsity = 1.0 - (1.0 - sparsity) ** (k / rounds)
            saliency = synflow_saliency(model, names, ctx.data.image_shape)
            install(model, saliency, round_sparsity, self.allocation(ctx.settings))
        return {"rounds": rounds}
