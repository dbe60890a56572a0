"""Pruning at initialisation: SNIP, GraSP and SynFlow choose a mask before any training.

The saliency functions are pure (they score a copy and leave the model untouched) so they
can be checked against hand computations. Batch norm scores in the mode of each method's
authors' code (`PruneSettings.scoring_mode`): inference mode for SNIP and SynFlow,
training mode (batch statistics) for GraSP.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from compute.models import prunable_modules
from compute.prune.base import FromInit, PruneContext, install, method_seed, register
from compute.train import to_float

Batch = tuple[torch.Tensor, torch.Tensor]


def score_batch(ctx: PruneContext, method: str, sparsity: float) -> Batch:
    """SNIP's one batch: seeded random training images (float, on the device), labels."""
    generator = torch.Generator().manual_seed(method_seed(ctx.seed, method, sparsity))
    n = min(ctx.settings.score_batch, len(ctx.data.train_labels))
    idx = torch.randperm(len(ctx.data.train_labels), generator=generator)[:n]
    return to_float(ctx.data.train_images[idx].to(ctx.device)), ctx.data.train_labels[idx].to(ctx.device)


def class_balanced_halves(labels: torch.Tensor, per_class: int, generator: torch.Generator) -> list[torch.Tensor]:
    """GraSP's scoring data (GraSP_fetch_data): the first `per_class` images of every class
    in a shuffled order, grouped class by class, then split into two halves, which the
    authors' code passes through the network separately."""
    order = torch.randperm(len(labels), generator=generator)
    chosen = torch.cat([order[labels[order] == c][:per_class] for c in labels.unique(sorted=True)])
    half = len(chosen) // 2
    return [chosen[:half], chosen[half:]]


def with_redrawn_linear_layers(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """A copy whose linear layers are drawn afresh, Xavier-normal (std sqrt(2 / (fan_in +
    fan_out))): GraSP's authors score such a copy (reinit=True) and prune the original."""
    scorer = copy.deepcopy(model)
    with torch.no_grad():
        for _, module in prunable_modules(scorer):
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                normal = torch.randn(module.weight.shape, generator=generator)
                module.weight.copy_(normal * math.sqrt(2.0 / (fan_in + fan_out)))
    return scorer


def _weights(model: nn.Module, names: list[str]) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    return [modules[name].weight for name in names]


def _scorer(model: nn.Module, mode: str) -> nn.Module:
    scorer = copy.deepcopy(model)
    return scorer.train() if mode == "train" else scorer.eval()


def snip_saliency(
    model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, mode: str = "eval"
) -> dict[str, torch.Tensor]:
    """|w * dL/dw| on one batch (Lee et al. 2019): the connection sensitivity."""
    scorer = _scorer(model, mode)
    weights = _weights(scorer, names)
    loss = F.cross_entropy(scorer(x), y)
    grads = torch.autograd.grad(loss, weights)
    return {name: (w * g).detach().abs() for name, w, g in zip(names, weights, grads, strict=True)}


def grasp_saliency(
    model: nn.Module, names: list[str], batches: list[Batch], temperature: float, mode: str = "train"
) -> dict[str, torch.Tensor]:
    """S = -w * (H g) with temperature-scaled logits (Wang et al. 2020); the highest S go.

    As in the authors' code, g and H g are taken over the weights of every conv and linear
    layer, whether or not it may be pruned (the Hessian couples them all), and only the
    `names` layers are scored. g is the sum of the batches' mean-loss gradients; H g is
    the sum over the batches of the gradient of g_fixed . grad(batch loss).
    """
    scorer = _scorer(model, mode)
    every = [name for name, _ in prunable_modules(scorer)]
    weights = _weights(scorer, every)
    gradient = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(scorer(x) / temperature, y), weights)
        for total, g in zip(gradient, grads, strict=True):
            total += g
    hessian_gradient = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(scorer(x) / temperature, y), weights, create_graph=True)
        product = sum((g * fixed).sum() for g, fixed in zip(grads, gradient, strict=True))
        for total, hg in zip(hessian_gradient, torch.autograd.grad(product, weights), strict=True):
            total += hg
    by_name = dict(zip(every, zip(weights, hessian_gradient, strict=True), strict=True))
    return {name: -(by_name[name][0] * by_name[name][1]).detach() for name in names}


def synflow_saliency(
    model: nn.Module, names: list[str], image_shape: tuple[int, ...], mode: str = "eval"
) -> dict[str, torch.Tensor]:
    """|w * dR/dw| with R = sum of the network's output on an all-ones input when every
    parameter is replaced by its absolute value (Tanaka et al. 2020). Data-free; float64
    because R is a product over all layers."""
    scorer = _scorer(model, mode).double()
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
        x, y = score_batch(ctx, self.name, sparsity)
        mode = ctx.settings.scoring_mode(self.name)
        install(model, snip_saliency(model, names, x, y, mode), sparsity, self.allocation(ctx.settings))
        return {"score_batch": len(y), "score_mode": mode}


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
        generator = torch.Generator().manual_seed(method_seed(ctx.seed, self.name, sparsity))
        halves = class_balanced_halves(ctx.data.train_labels, ctx.settings.grasp_samples_per_class, generator)
        scorer = with_redrawn_linear_layers(model, generator)
        batches = [
            (to_float(ctx.data.train_images[i].to(ctx.device)), ctx.data.train_labels[i].to(ctx.device)) for i in halves
        ]
        mode = ctx.settings.scoring_mode(self.name)
        saliency = grasp_saliency(scorer, names, batches, ctx.settings.grasp_temperature, mode)
        install(model, {name: -s for name, s in saliency.items()}, sparsity, self.allocation(ctx.settings))
        return {
            "score_batch": sum(len(i) for i in halves),
            "temperature": ctx.settings.grasp_temperature,
            "score_mode": mode,
        }


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
        mode = ctx.settings.scoring_mode(self.name)
        for k in range(1, rounds + 1):
            # exponential schedule: density (1 - s)^(k / rounds) after round k
            round_sparsity = 1.0 - (1.0 - sparsity) ** (k / rounds)
            saliency = synflow_saliency(model, names, ctx.data.image_shape, mode)
            install(model, saliency, round_sparsity, self.allocation(ctx.settings))
        return {"rounds": rounds, "score_mode": mode}
