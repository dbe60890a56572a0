"""Plan a compute run: check the configuration against the registries, expand it into the
models this shard makes and the training schedules and method settings they use."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from compute import corrupt, models, schema
from compute.config import ComputeConfig, ConfigError, check_basic, parse_shard, shard_jobs
from compute.prune import METHODS, PruneSettings, get_method
from compute.train import TrainConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: 'cuda' is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def method_order() -> list[str]:
    """Registered methods in the design's order, any others after them."""
    known = [m for m in schema.METHOD_FAMILIES if m in METHODS]
    return known + sorted(set(METHODS) - set(known))


def resolve_config(cfg: ComputeConfig) -> ComputeConfig:
    """Check every flag against the registries; expand 'all'; put dense first."""
    check_basic(cfg)
    # released files exist for all 19; generated ones need an implementation
    available = tuple(schema.CORRUPTION_FAMILIES) if cfg.cifar10c else tuple(corrupt.CORRUPTIONS)
    corruptions = available if cfg.corruptions == ("all",) else cfg.corruptions
    for name in corruptions:
        if name not in available:
            raise ConfigError(f"--corruptions: {name!r} is not allowed; choose from {', '.join(available)} or 'all'")
    if cfg.methods == ("all",):
        cfg = dataclasses.replace(cfg, methods=("dense", *method_order()))
    for name in cfg.methods:
        if name != "dense" and name not in METHODS:
            raise ConfigError(
                f"--methods: {name!r} is not allowed; choose from dense, {', '.join(method_order())} or 'all'"
            )
    if cfg.architecture not in models.ARCHITECTURES:
        raise ConfigError(
            f"--architecture: {cfg.architecture!r} is not allowed; choose one of {', '.join(models.ARCHITECTURES)}"
        )
    methods = ("dense",) + tuple(m for m in cfg.methods if m != "dense")
    shard = "{}/{}".format(*parse_shard(cfg.shard))  # 'auto' becomes this task's K/N, as the manifest records it
    cfg = dataclasses.replace(cfg, corruptions=tuple(corruptions), methods=methods, shard=shard)
    shard_jobs(cfg)  # a shard without work fails here, before any training
    return cfg


@dataclass(frozen=True)
class PlannedModel:
    model_id: str
    method: str
    target_sparsity: float
    seed: int


def planned_models(cfg: ComputeConfig) -> list[PlannedModel]:
    """Every model this shard records, in the sweep's order (seed, method, sparsity)."""
    out = []
    for seed, method in shard_jobs(cfg):
        targets = (0.0,) if method == "dense" else cfg.sparsities
        out += [PlannedModel(schema.model_id_for(method, s, seed), method, s, seed) for s in targets]
    return out


def from_config(cls, cfg: ComputeConfig, **overrides):
    """A dataclass built from the config fields of the same names (then `overrides`)."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
    return cls(**{**values, **overrides})


def schedules(cfg: ComputeConfig) -> dict[str, TrainConfig]:
    """Every training schedule of the run, from the flat config."""
    dense = from_config(TrainConfig, cfg)
    return {
        "dense": dense,
        "finetune": dataclasses.replace(dense, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, warmup_epochs=0.0),
        # each round restarts the decay from the peak: the schedule replayed (lrr) or resumed after rewinding (imp)
        "rounds": dataclasses.replace(dense, epochs=cfg.round_epochs, warmup_epochs=0.0),
        "sparse": dataclasses.replace(dense, epochs=cfg.from_init_epochs),
        "supermask": dataclasses.replace(dense, epochs=cfg.score_epochs, lr=cfg.supermask_lr),
    }


def prune_settings(cfg: ComputeConfig) -> PruneSettings:
    return from_config(PruneSettings, cfg)


def method_table(cfg: ComputeConfig) -> dict[str, dict]:
    """What the manifest records of each method: family, allocation used, what it does."""
    settings = prune_settings(cfg)
    out = {"dense": {"family": "dense", "description": "the trained, unpruned model every pruned model comes from"}}
    for name in cfg.methods[1:]:
        method = get_method(name)
        out[name] = {
            "family": method.family,
            "allocation": method.allocation(settings),
            "allocations": list(method.allocations),
            "description": method.description,
        }
    return out
