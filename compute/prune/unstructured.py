"""One-shot unstructured pruning of the trained model, then fine-tuning: random, magnitude."""

from __future__ import annotations

from compute.prune.base import OneShotFinetune, method_seed, register
from compute.rng import derive_seeds, uniform


@register
class Random(OneShotFinetune):
    name = "random"
    family = "unstructured"
    allocations = ("uniform", "global", "erk")
    description = "a uniformly random mask at the target sparsity, then fine-tuning: the baseline"

    def scores(self, ctx, model, layers, sparsity):
        seed = method_seed(ctx.seed, self.name, sparsity)
        return {
            name: uniform(derive_seeds(seed, index).reshape(1), tuple(module.weight.shape))[0]
            for index, (name, module) in enumerate(layers)
        }


@register
class Magnitude(OneShotFinetune):
    name = "magnitude"
    family = "unstructured"
    allocations = ("global", "uniform", "erk")
    description = (
        "removes the smallest |w| over all prunable layers at once (global, one-shot), then fine-tunes: "
        "the standard baseline (Blalock et al. 2020, ShrinkBench)"
    )

    def scores(self, ctx, model, layers, sparsity):
        return {name: module.weight.detach().abs() for name, module in layers}


@register
class LayerMagnitude(Magnitude):
    name = "layer_magnitude"
    allocations = ("uniform",)
    description = (
        "removes the smallest |w| in each layer, the same fraction everywhere, one-shot, then fine-tunes "
        "(the layer-wise criterion of Han et al. 2015, without their iterations)"
    )
