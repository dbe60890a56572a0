"""Iterative magnitude pruning: the lottery ticket (weight rewinding) and learning-rate rewinding."""

from __future__ import annotations

import copy
import dataclasses
import time

import torch

from compute.config import InputError
from compute.prune.base import Method, PruneContext, PrunedModel, install, register
from compute.train import TrainConfig


def round_plan(total: int, rate: float, targets: list[float]) -> tuple[list[float], dict[float, int]]:
    """Sparsity after each round (round 0 is the dense model) and the round that reaches each target.

    Each round removes round(rate * remaining) weights, except that a round that would
    pass the next requested sparsity stops exactly at it, so every target is reached
    exactly (to the integer weight) rather than by the nearest round.
    """
    if not 0.0 < rate < 1.0:
        raise InputError(f"imp_rate {rate} is outside (0, 1); use a fraction such as 0.2")
    stops = sorted({total - round(t * total) for t in targets}, reverse=True)  # weights kept at each target
    if stops[-1] < 1:
        raise InputError(f"sparsity {max(targets)} leaves no weight of {total} to keep")
    remaining, kept = total, [total]
    for stop in stops:
        while remaining > stop:
            remaining = max(stop, remaining - max(1, round(rate * remaining)))
            kept.append(remaining)
    sparsities = [1.0 - k / total for k in kept]
    reached = {t: kept.index(total - round(t * total)) for t in targets}
    return sparsities, reached


class IterativeMagnitude(Method):
    family = "unstructured"
    allocations = ("global", "uniform", "erk")
    rewind_weights: bool

    def round_schedule(self, ctx: PruneContext) -> TrainConfig:
        """Each round's retraining. 'restart': a short schedule of --round-epochs. 'rewind':
        the dense schedule replayed from the rewind step to its end (open_lth's lottery
        ticket), or, for learning-rate rewinding, the whole of it (Renda et al. 2020:
        retrain for the original training time)."""
        if ctx.settings.round_schedule == "restart":
            return ctx.rounds
        return dataclasses.replace(ctx.dense_schedule, start_step=ctx.rewind_step if self.rewind_weights else 0)

    def run(self, ctx: PruneContext, sparsities: list[float]) -> list[PrunedModel]:
        model = ctx.fresh_copy()
        layers = ctx.layers(model)
        total = sum(module.weight.numel() for _, module in layers)
        plan, reached = round_plan(total, ctx.settings.imp_rate, sparsities)
        wanted = set(reached.values())
        schedule = self.round_schedule(ctx)
        # model, prune seconds, train seconds, training epochs after each wanted round
        kept: dict[int, tuple] = {0: (copy.deepcopy(model), 0.0, 0.0, ctx.dense_epochs)} if 0 in wanted else {}
        prune_seconds = train_seconds = 0.0
        epochs = ctx.dense_epochs
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
            result = ctx.fit(model, schedule, f"{self.name} round {round_index}", seed_offset=round_index)
            train_seconds += result.seconds
            epochs += result.epochs
            if round_index in wanted:
                kept[round_index] = (copy.deepcopy(model), prune_seconds, train_seconds, epochs)
        rounds = [round(s, 6) for s in plan]
        out = []
        for target in sparsities:
            snapshot, prune_s, train_s, train_epochs = kept[reached[target]]
            notes = {
                "round": reached[target],
                "round_sparsities": rounds,
                "round_schedule": ctx.settings.round_schedule,
            }
            out.append(PrunedModel(copy.deepcopy(snapshot), target, prune_s, train_s, train_epochs, notes))
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
