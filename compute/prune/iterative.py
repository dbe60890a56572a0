"""Iterative magnitude pruning: the lottery ticket (weight rewinding) and learning-rate rewinding."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator

import torch

from compute.config import InputError
from compute.prune.base import (
    EpochBudget,
    Finished,
    Method,
    PlannedEpochs,
    PruneContext,
    PrunedModel,
    install,
    register,
)
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

    def planned_epochs(self, budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
        """Each target's rounds from the dense model, each round retrained as round_schedule says."""
        _, reached = round_plan(budget.prunable_weights, budget.imp_rate, sparsities)
        if budget.round_schedule == "restart":
            per_round = float(budget.rounds)
        else:  # the dense schedule's steps from the rewind step (imp) or from the start (lrr)
            steps = budget.dense * budget.steps_per_epoch
            start = min(budget.rewind_step, steps) if self.rewind_weights else 0
            per_round = (steps - start) / budget.steps_per_epoch
        per_model = {t: budget.dense + reached[t] * per_round for t in sparsities}
        return PlannedEpochs(per_model, max(reached.values()) * per_round)

    def prune_one(self, ctx: PruneContext, sparsity: float) -> PrunedModel:
        return next(self.models(ctx, [sparsity], {}))

    def models(self, ctx: PruneContext, sparsities: list[float], finished: Finished) -> Iterator[PrunedModel]:
        """Rounds up to the last target not `finished`, resuming from the furthest finished
        target before it (its model holds every round's state: weights, masks, batch norm)."""
        todo = [t for t in sparsities if t not in finished]
        if not todo:
            return
        model = ctx.fresh_copy()
        total = sum(module.weight.numel() for _, module in ctx.layers(model))
        plan, reached = round_plan(total, ctx.settings.imp_rate, sparsities)
        last = max(reached[t] for t in todo)
        resumable = [t for t, load in finished.items() if load is not None and reached[t] <= last]
        start_round, prune_seconds, train_seconds, epochs = 0, 0.0, 0.0, ctx.dense_epochs
        if resumable:
            furthest = max(resumable, key=lambda t: reached[t])
            state = finished[furthest]()
            model, start_round = state.model, reached[furthest]
            prune_seconds, train_seconds, epochs = state.prune_seconds, state.train_seconds, state.train_epochs
        schedule = self.round_schedule(ctx)
        rounds = [round(s, 6) for s in plan]

        def at(round_index: int) -> Iterator[PrunedModel]:
            for target in todo:
                if reached[target] == round_index:
                    notes = {
                        "round": round_index,
                        "round_sparsities": rounds,
                        "round_schedule": ctx.settings.round_schedule,
                    }
                    yield PrunedModel(copy.deepcopy(model), target, prune_seconds, train_seconds, epochs, notes)

        if start_round == 0:
            yield from at(0)
        for round_index in range(start_round + 1, last + 1):
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
            yield from at(round_index)


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
