"""The pruning-method interface and registry."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from compute.data import Dataset
from compute.masks import LayerPolicy, prunable_layers, set_masks
from compute.models import Classifier
from compute.train import TrainConfig, train


@dataclass
class PruneContext:
    """What every method may use: the trained dense model and how to train."""

    dense: Classifier  # trained; methods must not modify it
    init_state: dict[str, torch.Tensor]  # the dense model's weights at initialisation
    data: Dataset
    train: TrainConfig  # the dense model's schedule
    finetune: TrainConfig  # the schedule after one-shot pruning
    policy: LayerPolicy
    seed: int
    device: torch.device
    progress: bool = True

    def fresh_copy(self) -> Classifier:
        return copy.deepcopy(self.dense)

    def fresh_init(self) -> Classifier:
        model = copy.deepcopy(self.dense)
        model.load_state_dict(self.init_state)
        return model


@dataclass
class PrunedModel:
    model: Classifier
    target_sparsity: float
    prune_seconds: float
    train_seconds: float
    notes: dict = field(default_factory=dict)


class Method:
    """A pruning method: `run` returns one pruned model per requested sparsity."""

    name: str = ""
    family: str = ""

    def run(self, ctx: PruneContext, sparsities: list[float]) -> list[PrunedModel]:
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def check_sparsity(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity {value} is outside [0, 1); use a fraction such as 0.9")
    return float(value)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]()


# --- mask selection ----------------------------------------------------------------


def global_prune_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Remove the round(sparsity * n) lowest scores over all layers together.

    Same selection as torch.nn.utils.prune.global_unstructured: one topk over the
    concatenated scores, in layer order.
    """
    check_sparsity(sparsity)
    names = list(scores)
    flat = torch.cat([scores[name].reshape(-1) for name in names])
    n_prune = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune:
        keep[torch.topk(flat, k=n_prune, largest=False).indices] = False
    masks, offset = {}, 0
    for name in names:
        size = scores[name].numel()
        masks[name] = keep[offset : offset + size].reshape(scores[name].shape)
        offset += size
    return masks


class OneShotFinetune(Method):
    """Prune the trained dense model once by a score, then fine-tune with the mask fixed."""

    def scores(self, ctx: PruneContext, model: nn.Module, layers) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def run(self, ctx: PruneContext, sparsities: list[float]) -> list[PrunedModel]:
        out = []
        for sparsity in sparsities:
            start = time.perf_counter()
            model = ctx.fresh_copy()
            layers = prunable_layers(model, ctx.policy)
            with torch.no_grad():
                set_masks(model, global_prune_masks(self.scores(ctx, model, layers), sparsity))
            prune_seconds = time.perf_counter() - start
            result = train(
                model,
                ctx.data,
                ctx.finetune,
                seed=ctx.seed + 1,
                device=ctx.device,
                desc=f"{self.name} {sparsity:g}",
                progress=ctx.progress,
            )
            out.append(PrunedModel(model, sparsity, prune_seconds, result.seconds))
        return out
