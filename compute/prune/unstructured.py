"""Unstructured one-shot methods: random and global magnitude."""

from __future__ import annotations

from compute.prune.base import OneShotFinetune, register
from compute.rng import derive_seeds, uniform


@register
class Random(OneShotFinetune):
    """A uniformly random mask at the target sparsity: the baseline every method must beat."""

    name = "random"
    family = "unstructured"

    def scores(self, ctx, model, layers):
        out = {}
        for index, (name, module) in enumerate(layers):
            seed = derive_seeds(ctx.seed, index)
            out[name] = uniform(seed.reshape(1), tuple(module.weight.shape))[0]
        return out


@register
class Magnitude(OneShotFinetune):
    """Global |w|: the smallest weights over all prunable layers go first (Han et al. 2015)."""

    name = "magnitude"
    family = "unstructured"

    def scores(self, ctx, model, layers):
        return {name: module.weight.detach().abs() for name, module in layers}
