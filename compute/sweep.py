"""Train and prune: the dense model of each seed, then every method's models, one at a time.

Each model is checkpointed in the work folder as soon as it is trained and handed on for
evaluation; only the dense parents and the model in hand stay in memory. What an earlier,
interrupted run finished is loaded instead of trained again.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import torch
from torch import nn

from compute import data, models, schema
from compute.checkpoints import fit_to_state
from compute.config import ComputeConfig, InputError, parse_shard, shard_jobs
from compute.diagnostics import in_parent_shapes, layer_weights, state_weights, weight_distance
from compute.layers import layer_counts, layer_table
from compute.masks import LayerPolicy, count_parameters, prunable_layers
from compute.plan import planned_models, prune_settings, schedules
from compute.prune import PruneContext, PrunedModel, get_method
from compute.train import TrainHooks, steps_per_epoch, train
from compute.workdir import SharedDense, WorkFolder


@dataclass
class Trained:
    """A model ready for evaluation, and its row of models.parquet (without clean accuracy and dead_relu)."""

    record: dict
    model: nn.Module


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict, to check that shards pruned the same dense model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def prunable_sparsity(model: nn.Module, parent: nn.Module, policy: LayerPolicy) -> float:
    """1 - nonzero prunable weights / the dense parent's prunable weights.

    For unstructured methods the two totals are equal; a structurally pruned model is
    smaller, and its removed filters count as pruned.
    """
    parent_total = sum(m.weight.numel() for _, m in prunable_layers(parent, policy))
    modules = dict(model.named_modules())
    nonzero = sum(int((modules[name].weight != 0).sum()) for name, _ in prunable_layers(parent, policy))
    return 1.0 - nonzero / parent_total


def check_finite(model: nn.Module, model_id: str, cfg: ComputeConfig) -> None:
    """A model whose training diverged stops the run with a line that says what to change."""
    if not all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point()):
        raise InputError(
            f"training diverged for {model_id} (its weights are not finite); lower the learning rate "
            f"(--lr {cfg.lr:g}, --finetune-lr {cfg.finetune_lr:g}, --supermask-lr {cfg.supermask_lr:g})"
        )


class Sweep:
    """This shard's models, each yielded once trained (or loaded from the work folder)."""

    def __init__(
        self, cfg: ComputeConfig, dataset: data.Dataset, work: WorkFolder, device: torch.device, progress,
        fingerprints: dict[str, str] | None = None, shared: SharedDense | None = None,
    ):  # fmt: skip
        self.cfg, self.dataset, self.work, self.device, self.progress = cfg, dataset, work, device, progress
        #: the dense models the workers of `compute --jobs` share
        self.shared = shared
        self.spec = models.spec_for(cfg.architecture, dataset)
        self.plans = schedules(cfg)
        self.policy = LayerPolicy(cfg.prune_first_layer, cfg.prune_last_layer)
        self.rewind_step = round(cfg.rewind_epochs * steps_per_epoch(len(dataset.train_labels), cfg.batch_size))
        self.planned = planned_models(cfg)
        #: dense id -> SHA-256 of its weights; given ones (a snapshot grown) must be reproduced
        self.fingerprints: dict[str, str] = dict(fingerprints or {})

    @property
    def schedule(self) -> dict:
        return {
            **{name: plan.as_dict() for name, plan in self.plans.items()},
            "rewind_step": self.rewind_step,
            **self.policy.as_dict(),
        }

    def models(self) -> Iterator[Trained]:
        """Every planned model that is not evaluated yet, in the sweep's order per seed.

        Shard K starts at its K-th seed (and wraps round): `--jobs` workers then train different
        seeds' dense models side by side rather than all waiting for the first. Each seed's models
        depend on the seed alone, so the order changes nothing in them."""
        jobs = shard_jobs(self.cfg)
        seeds = sorted({seed for seed, _ in jobs})
        start = (parse_shard(self.cfg.shard)[0] - 1) % len(seeds)
        for seed in seeds[start:] + seeds[:start]:
            methods = [method for job_seed, method in jobs if job_seed == seed]
            wanted = [p for p in self.planned if p.seed == seed and not self.work.evaluated(p.model_id)]
            if not wanted:
                dense_id = schema.model_id_for("dense", 0.0, seed)
                if dense_id not in self.fingerprints:
                    self.fingerprints[dense_id] = self.work.load_dense(seed)[1]["sha256"]
                continue
            dense, ctx = self.dense(seed)
            for method in methods:
                yield from self.method_models(method, seed, dense, ctx)

    def dense(self, seed: int) -> tuple[nn.Module, PruneContext]:
        """The seed's trained dense model and the context its methods prune it in."""
        dense_id = schema.model_id_for("dense", 0.0, seed)
        torch.manual_seed(seed)
        dense = models.build(self.spec)
        prunable_layers(dense, self.policy)  # fail early on an architecture with nothing to prune
        states, info = self.dense_states(seed)
        dense.load_state_dict(states["model"])
        init_state, rewind_state = states["init"], states["rewind"]
        dense.to(self.device).eval()
        expected = self.fingerprints.get(dense_id, info["sha256"])
        if info["sha256"] != expected:
            raise InputError(
                f"{dense_id} trained now differs from the one the snapshot grown was pruned from (its weights' "
                "SHA-256); grow it on the same kind of device with the same software"
            )
        self.fingerprints[dense_id] = info["sha256"]
        self.dense_info = info
        self.init_weights = state_weights(init_state, dense)  # what dist_init measures from
        ctx = PruneContext(
            dense=dense, init_state=init_state, rewind_state=rewind_state, data=self.dataset,
            dense_schedule=self.plans["dense"], rewind_step=self.rewind_step, finetune=self.plans["finetune"],
            rounds=self.plans["rounds"], sparse=self.plans["sparse"], supermask=self.plans["supermask"],
            settings=prune_settings(self.cfg), policy=self.policy, seed=seed, device=self.device,
            progress=self.progress,
        )  # fmt: skip
        return dense, ctx

    def dense_states(self, seed: int) -> tuple[dict[str, dict], dict]:
        """The seed's dense model at initialisation, at the rewind step and trained, and its record:
        from this run's work folder, else trained now, or under `--jobs` by the first worker that
        needs it; kept in the work folder either way, so a resumed run finds it there."""
        if self.work.dense_done(seed):
            return self.work.load_dense(seed)
        if self.shared is None:
            states, info = self.train_dense(seed)
        else:
            with self.shared.claimed(seed):  # another worker may be training it: wait for it
                if self.shared.dense_done(seed):
                    states, info = self.shared.load_dense(seed)
                else:
                    states, info = self.train_dense(seed)
                    self.shared.save_dense(seed, states, info)
        self.work.save_dense(seed, states, info)
        return states, info

    def train_dense(self, seed: int) -> tuple[dict[str, dict], dict]:
        dense_id = schema.model_id_for("dense", 0.0, seed)
        torch.manual_seed(seed)
        dense = models.build(self.spec)
        init_state = copy.deepcopy(dense.state_dict())
        result = train(
            dense, self.dataset, self.plans["dense"], seed=seed, device=self.device, desc=f"dense s{seed}",
            progress=self.progress, hooks=TrainHooks(capture_step=self.rewind_step),
        )  # fmt: skip
        check_finite(dense, dense_id, self.cfg)
        info = {"seconds": result.seconds, "epochs": result.epochs, "sha256": fingerprint(dense)}
        return {"init": init_state, "rewind": result.captured, "model": dense.state_dict()}, info

    def method_models(self, name: str, seed: int, dense: nn.Module, ctx: PruneContext) -> Iterator[Trained]:
        dense_id = schema.model_id_for("dense", 0.0, seed)
        if name == "dense":
            if not self.work.evaluated(dense_id):
                info = self.dense_info
                record, layers = self.record(dense_id, "dense", "dense", 0.0, seed, dense, dense, info["seconds"], 0.0)
                record["train_epochs"] = info["epochs"]
                self.work.save_trained(record, dense, layers)
                yield Trained(record, dense)
            return
        method = get_method(name)
        sparsities = list(self.cfg.sparsities)
        ids = {s: schema.model_id_for(name, s, seed) for s in sparsities}
        if all(self.work.evaluated(i) for i in ids.values()):
            return
        trained = {s for s in sparsities if self.work.trained(ids[s])}
        for sparsity in trained:  # checkpointed before an interruption, not yet evaluated
            if not self.work.evaluated(ids[sparsity]):
                yield Trained(self.work.record(ids[sparsity]), self.load(ids[sparsity], dense))
        finished = {
            s: (lambda s=s: self.resume_point(ids[s], dense)) if self.work.has_checkpoint(ids[s]) else None
            for s in trained
        }
        for pruned in method.models(ctx, sparsities, finished):
            model_id = ids[pruned.target_sparsity]
            if self.work.evaluated(model_id):  # passed on the way (imp, lrr), already in the snapshot grown
                continue
            check_finite(pruned.model, model_id, self.cfg)
            record, layers = self.record(
                model_id, name, method.family, pruned.target_sparsity, seed, pruned.model, dense,
                pruned.train_seconds, pruned.prune_seconds, pruned.notes,
            )  # fmt: skip
            record["train_epochs"] = pruned.train_epochs
            self.work.save_trained(record, pruned.model, layers)
            yield Trained(record, pruned.model)

    def record(
        self, model_id, method, family, target, seed, model, parent, train_s, prune_s, notes=None
    ) -> tuple[dict, pl.DataFrame]:
        """The model's row of models.parquet (without clean accuracy and dead_relu, which
        evaluation measures) and its rows of layers.parquet."""
        notes = notes or {}
        total, nonzero = count_parameters(model)
        counts = layer_counts(model, self.dataset.image_shape)
        prunable = {name for name, _ in prunable_layers(model, self.policy)}
        weights = in_parent_shapes(model, parent, notes.get("kept_filters"))
        record = {
            "model_id": model_id,
            "method": method,
            "family": family,
            "target_sparsity": target,
            "sparsity": prunable_sparsity(model, parent, self.policy),
            "params_total": total,
            "params_nonzero": nonzero,
            "flops": sum(count.flops for count in counts),
            "seed": seed,
            "parent_id": schema.model_id_for("dense", 0.0, seed),
            "train_seconds": train_s,
            "prune_seconds": prune_s,
            "train_epochs": 0.0,
            "dist_init": weight_distance(weights, self.init_weights),
            "dist_dense": weight_distance(weights, layer_weights(parent)),
            "notes": notes,
        }
        return record, layer_table(model_id, counts, prunable)

    def load(self, model_id: str, dense: nn.Module) -> nn.Module:
        """A checkpointed model, in the shape its checkpoint has (structured pruning)."""
        state = self.work.checkpoint(model_id)
        model = fit_to_state(copy.deepcopy(dense), state)
        model.load_state_dict(state)
        return model.to(self.device).eval()

    def resume_point(self, model_id: str, dense: nn.Module) -> PrunedModel:
        record = self.work.record(model_id)
        return PrunedModel(
            self.load(model_id, dense), record["target_sparsity"], record["prune_seconds"], record["train_seconds"],
            record["train_epochs"], record["notes"],
        )  # fmt: skip


def whole_epochs(epochs: float) -> int:
    """The train_epochs column: epochs rounded half up (fractional rewinding can leave halves)."""
    return math.floor(epochs + 0.5)
