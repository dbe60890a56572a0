"""Dynamic sparse training from scratch at a fixed sparsity: RigL and SET.

Every `dst_update_every` steps (until `dst_end` of training) each layer drops its
smallest-|w| active weights and regrows as many inactive ones: by the largest dense
gradient (RigL, Evci et al. 2020) or at random (SET, Mocanu et al. 2018). The replaced
fraction decays on a cosine; regrown weights start at zero. Every layer keeps its count
of active weights, so the sparsity never changes while the mask does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compute.prune.base import FromInit, PruneSettings, install, method_seed, register
from compute.rng import derive_seeds, uniform
from compute.train import TrainHooks


def drop_fraction(step: int, total_steps: int, settings: PruneSettings) -> float:
    """Cosine-annealed fraction of active weights to replace at `step` (0 when no update)."""
    end = settings.dst_end * total_steps
    if step == 0 or step % settings.dst_update_every or step >= end:
        return 0.0
    return settings.dst_drop_fraction / 2.0 * (1.0 + math.cos(math.pi * step / end))


class MaskUpdater:
    """The on_backward hook of a dynamic sparse run: reads dense gradients, moves masks."""

    def __init__(self, layers: list[tuple[str, nn.Module]], settings: PruneSettings, grow: str, seed: int):
        self.layers, self.settings, self.grow, self.seed = layers, settings, grow, seed
        self.updates = 0
        self.moved = 0

    @torch.no_grad()
    def __call__(self, step: int, total_steps: int) -> None:
        fraction = drop_fraction(step, total_steps, self.settings)
        if fraction == 0.0:
            return
        self.updates += 1
        for index, (_, module) in enumerate(self.layers):
            mask = module.weight_mask.reshape(-1)
            active = int(mask.sum())
            k = min(math.floor(fraction * active), mask.numel() - active)
            if k == 0:
                continue
            drop_score = torch.where(mask, module.weight.reshape(-1).abs(), torch.inf)
            new_mask = mask.clone()
            new_mask[torch.topk(drop_score, k, largest=False).indices] = False
            if self.grow == "gradient":
                grow_score = module.weight.grad.reshape(-1).abs()
            else:
                seed = derive_seeds(self.seed, step, index).reshape(1)
                grow_score = uniform(seed, (mask.numel(),))[0].to(mask.device)
            grow_score = torch.where(new_mask, -torch.inf, grow_score)
            new_mask[torch.topk(grow_score, k, largest=True).indices] = True
            grown = (new_mask & ~mask).reshape(module.weight.shape)
            module.weight.masked_fill_(grown, 0.0)  # regrown connections start at zero
            self.moved += int(grown.sum())
            module.weight_mask.copy_(new_mask.reshape(module.weight_mask.shape))


class DynamicSparse(FromInit):
    family = "dynamic"
    allocations = ("erk", "uniform")
    grow: str

    def mask_at_init(self, ctx, model, sparsity):
        seed = method_seed(ctx.seed, self.name, sparsity)
        random_scores = {
            name: uniform(derive_seeds(seed, index).reshape(1), tuple(module.weight.shape))[0]
            for index, (name, module) in enumerate(ctx.layers(model))
        }
        install(model, random_scores, sparsity, self.allocation(ctx.settings))
        return {}

    def train_sparse(self, ctx, model, sparsity):
        # regrowth draws (SET) use a stream of their own, apart from the initial mask's
        seed = int(derive_seeds(method_seed(ctx.seed, self.name, sparsity), 1))
        updater = MaskUpdater(ctx.layers(model), ctx.settings, self.grow, seed)
        result = ctx.fit(model, ctx.sparse, f"{self.name} {sparsity:g}", hooks=TrainHooks(on_backward=updater))
        return result, {"mask_updates": updater.updates, "connections_moved": updater.moved}


@register
class RigL(DynamicSparse):
    name = "rigl"
    grow = "gradient"
    description = (
        "sparse from scratch; periodically drops the smallest weights and regrows by the largest gradient "
        "(Evci et al. 2020)"
    )


@register
class SET(DynamicSparse):
    name = "set"
    grow = "random"
    description = (
        "sparse from scratch; periodically drops the smallest weights and regrows at random (Mocanu et al. 2018)"
    )
