"""Iterative magnitude pruning: the lottery ticket (weight rewinding) and learning-rate rewinding."""

from __future__ import annotations

import copy
import time

import torch

from compute.config import InputError
from compute.prune.base import Method, PruneContext, PrunedModel, install, register


def round_plan(total: int, rate: float, targets: list[float]) -> tuple[list[float], dict[float, int]]:
    """Sparsity after each round (round 0 is the dense model) and, per target, the nearest round.

    Each round removes round(rate * remaining) weights, so after n rounds the sparsity is
    close to 1 - (1 - rate)^n.
    """
    if not 0.0 < rate < 1.0:
        raise InputError(f"imp_rate {rate} is outside (0, 1); use a fraction such as 0.2")
    remaining, sparsities = total, [0.0]
    while sparsities[-1] < max(targets) and remaining > 1:
        remaining -= max(1, round(rate * remaining))
        sparsities.append(1.0 - remaining / total)
    if sparsities[-1] < max(targets):
        raise InputError(f"sparsity {max(targets)} cannot be reached by removing {rate:.0%} per round")
    nearest = {t: min(range(len(sparsities)), key=lambda n: (abs(sparsities[n] - t), n)) for t in targets}
    return sparsities, nearest


class IterativeMagnitude(Method):
    family = "unstructured"
    allocations = ("global", "uniform", "erk")
    rewind_weights: bool

    def run(self, ctx: PruneContext, sparsities: list[float]) -> list[PrunedModel]:
        model = ctx.fresh_copy()
        layers = ctx.layers(model)
        total = sum(module.weight.numel() for _, module in layers)
        plan, nearest = round_plan(total, ctx.settings.imp_rate, sparsities)
        wanted = set(nearest.values())
        kept: dict[int, tuple] = {}
        if 0 in wanted:
            kept[0] = (copy.deepcopy(model), 0.0, 0.0)
        prune_seconds = train_seconds = 0.0
        for round_index in range(1, max(wanted) + 1):
            start = time.perf_counter()
            scores = {
                name: torch.where(module.weight_mask, module.weight.detach().abs(), -torch.inf)
                for name, module in ctx.layers(model)
            }
            if self.rewind_weights:
                # the survivors restart from their values early in dense training
                model.load_state_dict(ctx.rewind_state)
            install(model, scores, plan[round_index], self.allocation(ctx.settings))
            prune_seconds += time.perf_counter() - start
            result = ctx.fit(model, ctx.rounds, f"{self.name} round {round_index}", seed_offset=round_index)
            train_seconds += result.seconds
            if round_index in wanted:
                kept[round_index] = (copy.deepcopy(model), prune_seconds, train_seconds)
        out = []
        for target in sparsities:
            snapshot, prune_s, train_s = kept[nearest[target]]
            out.append(
                PrunedModel(
                    copy.deepcopy(snapshot), target, prune_s, train_s,
                    {"round": nearest[target], "round_sparsity": plan[nearest[target]]},
                )
            )  # fmt: skip
        return out


@register
class LotteryTicket(IterativeMagnitude):
    name = "imp"
    rewind_weights = True
    description = (
        "iterative magnitude pruning: each round removes a fraction of the remaining weights, rewinds the "
        "survivors to their early-training values and retrains (Frankle et al. 2019, 2020)"
    )


@register
class LearningRateRewinding(IterativeMagnitude):
    name = "lrr"
    rewind_weights = False
    description = (
        "iterative magnitude pruning that keeps the trained weights and replays the learning-rate "
        "schedule after each round (Renda et al. 2020)"
    )
