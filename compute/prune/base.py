"""The pruning-method interface, its context and registry."""

from __future__ import annotations

import copy
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from compute.data import Dataset
from compute.masks import LayerPolicy, prunable_layers, set_masks
from compute.models import Classifier
from compute.prune.allocation import ALLOCATIONS, check_sparsity, select_masks
from compute.rng import derive_seeds
from compute.train import TrainConfig, TrainResult, train

#: batch-norm mode of the scoring pass of each pruning-at-initialisation method in its
#: authors' code: SNIP (snip-public) and SynFlow (Synaptic-Flow) score in inference mode,
#: GraSP (alecwangcq/GraSP) in training mode
AUTHORS_SCORE_MODE = {"snip": "eval", "grasp": "train", "synflow": "eval"}

#: key of the random stream that orders and augments the training batches after pruning
TRAINING_STREAM = 0x7472


@dataclass(frozen=True)
class PruneSettings:
    """Method hyperparameters (each is a `prunescope compute` flag)."""

    allocation: str = "auto"  # global | uniform | erk, or auto: each method's own default
    imp_rate: float = 0.2  # fraction of the remaining weights each IMP/LRR round removes
    round_schedule: str = "restart"  # IMP/LRR retraining: restart a short schedule | rewind (open_lth)
    score_batch: int = 256  # images SNIP scores on
    grasp_samples_per_class: int = 10  # GraSP's class-balanced scoring batch
    grasp_temperature: float = 200.0
    score_mode: str = "auto"  # batch norm while scoring at init: train | eval | auto (the authors')
    synflow_rounds: int = 100
    dst_update_every: int = 10  # optimizer steps between RigL/SET mask updates
    dst_drop_fraction: float = 0.3  # initial fraction of active weights replaced per update
    dst_end: float = 0.75  # fraction of training after which masks stop changing
    supermask_init: str = "signed_constant"  # edge_popup's frozen weights: signed_constant | kaiming

    def scoring_mode(self, method: str) -> str:
        """'train' or 'eval': how batch norm behaves while `method` scores at initialisation."""
        return AUTHORS_SCORE_MODE[method] if self.score_mode == "auto" else self.score_mode


def method_seed(seed: int, method: str, sparsity: float) -> int:
    """The seed of every random draw a method makes for one model.

    A function of the run's seed, the method's id and the sparsity value only, so a model
    comes out the same whichever methods ran before it in the process or in another shard.
    """
    return int(derive_seeds(seed, zlib.crc32(method.encode()), round(sparsity * 1_000_000)))


@dataclass
class PruneContext:
    """What every method may use: the trained dense model, its history and the schedules."""

    dense: Classifier  # trained; methods must not modify it
    init_state: dict[str, torch.Tensor]  # the dense model at initialisation
    rewind_state: dict[str, torch.Tensor]  # the dense model at the IMP rewind point
    data: Dataset
    dense_schedule: TrainConfig  # how the dense model was trained
    rewind_step: int  # the optimizer step rewind_state was captured at
    finetune: TrainConfig  # after one-shot pruning of the trained model
    rounds: TrainConfig  # each IMP / LRR round under the restart schedule
    sparse: TrainConfig  # sparse training from initialisation (at-init and dynamic methods)
    supermask: TrainConfig  # score training of supermask methods
    settings: PruneSettings
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

    @property
    def dense_epochs(self) -> float:
        return float(self.dense_schedule.epochs)

    def layers(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return prunable_layers(model, self.policy)

    def fit(self, model: nn.Module, schedule: TrainConfig, desc: str, seed_offset: int = 1, hooks=None) -> TrainResult:
        """Train with a data order and augmentation of its own (common to every method, so
        they compare on the same batches, and apart from any seed's dense training)."""
        seed = int(derive_seeds(self.seed, TRAINING_STREAM, seed_offset))
        return train(
            model, self.data, schedule, seed=seed, device=self.device, desc=desc, progress=self.progress, hooks=hooks
        )


@dataclass(frozen=True)
class EpochBudget:
    """The training schedules of a sweep in epochs, and what the rounds of imp and lrr depend
    on: what a method's epochs can be planned from before any training."""

    dense: int
    finetune: int
    rounds: int  # each imp / lrr round under --round-schedule restart
    sparse: int  # training from initialisation
    supermask: int  # score training
    round_schedule: str
    imp_rate: float
    steps_per_epoch: int
    rewind_step: int
    prunable_weights: int  # of the dense model, under the sweep's layer policy


@dataclass(frozen=True)
class PlannedEpochs:
    """A method's training at a sweep's sparsities, before it runs."""

    #: each model's train_epochs, as PrunedModel (and models.parquet) records it
    per_model: dict[float, float]
    #: the epochs the (seed, method) job trains to make all of them (imp's rounds are shared)
    trained: float


def each(sparsities: list[float], epochs: float) -> PlannedEpochs:
    """Every model trained apart for `epochs`."""
    return PlannedEpochs(dict.fromkeys(sparsities, float(epochs)), float(epochs) * len(sparsities))


def finetuned(budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
    """Every model pruned from the trained dense model and fine-tuned apart: its record counts the
    dense training behind it too."""
    return PlannedEpochs(dict.fromkeys(sparsities, float(budget.dense + budget.finetune)),
                         float(budget.finetune) * len(sparsities))  # fmt: skip


@dataclass
class PrunedModel:
    model: Classifier
    target_sparsity: float
    prune_seconds: float
    train_seconds: float
    #: every epoch of training behind the model, the dense training it was pruned from included
    train_epochs: float
    notes: dict = field(default_factory=dict)


#: sparsity -> a loader of the model an earlier run already finished (None: finished, but
#: kept without weights, so nothing can continue from it)
Finished = dict[float, Callable[[], "PrunedModel"] | None]


class Method(ABC):
    """A pruning method: one pruned model per requested sparsity, each from `prune_one`
    (or, for methods whose models build on each other, from `models`)."""

    name: str = ""
    family: str = ""
    #: allocations the method supports; the first is its default
    allocations: tuple[str, ...] = ("global",)
    description: str = ""

    def allocation(self, settings: PruneSettings) -> str:
        """The allocation this method uses: the one asked for if it supports it, else its own."""
        wanted = settings.allocation
        return wanted if wanted in self.allocations else self.allocations[0]

    @abstractmethod
    def planned_epochs(self, budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
        """The training this method does at `sparsities`, without doing it (compute --dry-run)."""

    def run(self, ctx: PruneContext, sparsities: list[float]) -> list[PrunedModel]:
        """One pruned model per requested sparsity, in that order."""
        by_sparsity = {pruned.target_sparsity: pruned for pruned in self.models(ctx, sparsities, {})}
        return [by_sparsity[sparsity] for sparsity in sparsities]

    def models(self, ctx: PruneContext, sparsities: list[float], finished: Finished) -> Iterator[PrunedModel]:
        """The models of the sparsities not `finished`, each yielded as soon as it is trained."""
        for sparsity in sparsities:
            if sparsity not in finished:
                yield self.prune_one(ctx, sparsity)

    @abstractmethod
    def prune_one(self, ctx: PruneContext, sparsity: float) -> PrunedModel:
        """The pruned (and trained) model at one sparsity."""


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    unknown = set(cls.allocations) - set(ALLOCATIONS)
    if unknown:
        raise ValueError(f"{cls.name}: unknown allocation(s) {sorted(unknown)}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]()


def install(model: nn.Module, scores: dict[str, torch.Tensor], sparsity: float, allocation: str) -> None:
    """Keep the highest-scoring weights at `sparsity` and zero the rest."""
    with torch.no_grad():
        set_masks(model, select_masks(scores, check_sparsity(sparsity), allocation))


class OneShotFinetune(Method):
    """Prune the trained dense model once by a score, then fine-tune with the mask fixed."""

    @abstractmethod
    def scores(self, ctx: PruneContext, model: nn.Module, layers, sparsity: float) -> dict[str, torch.Tensor]:
        """Per prunable layer, a score per weight; the highest scores are kept."""

    def planned_epochs(self, budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
        return finetuned(budget, sparsities)

    def prune_one(self, ctx: PruneContext, sparsity: float) -> PrunedModel:
        start = time.perf_counter()
        model = ctx.fresh_copy()
        scores = self.scores(ctx, model, ctx.layers(model), sparsity)
        install(model, scores, sparsity, self.allocation(ctx.settings))
        prune_seconds = time.perf_counter() - start
        result = ctx.fit(model, ctx.finetune, f"{self.name} {sparsity:g}")
        return PrunedModel(model, sparsity, prune_seconds, result.seconds, ctx.dense_epochs + result.epochs)


class FromInit(Method):
    """Choose a mask at initialisation, then train the sparse network from there."""

    @abstractmethod
    def mask_at_init(self, ctx: PruneContext, model: nn.Module, sparsity: float) -> dict:
        """Install the mask on `model` (at initialisation); return notes for the manifest."""

    def planned_epochs(self, budget: EpochBudget, sparsities: list[float]) -> PlannedEpochs:
        return each(sparsities, budget.sparse)

    def train_sparse(self, ctx: PruneContext, model: nn.Module, sparsity: float) -> tuple[TrainResult, dict]:
        return ctx.fit(model, ctx.sparse, f"{self.name} {sparsity:g}"), {}

    def prune_one(self, ctx: PruneContext, sparsity: float) -> PrunedModel:
        start = time.perf_counter()
        model = ctx.fresh_init()
        notes = self.mask_at_init(ctx, model, sparsity) or {}
        prune_seconds = time.perf_counter() - start
        result, train_notes = self.train_sparse(ctx, model, sparsity)
        notes = {**notes, **train_notes}
        return PrunedModel(model, sparsity, prune_seconds, result.seconds, result.epochs, notes)
