"""The compute step: data -> dense -> pruned models -> corruptions -> metrics -> snapshot."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from compute import cifar10c, corrupt, data, models, schema
from compute.checkpoints import checkpoint_bytes
from compute.config import ComputeConfig, ConfigError, check_basic, parse_shard, shard_jobs
from compute.evaluate import class_table, condition_metrics, forward_features, pca_2d
from compute.masks import LayerPolicy, count_flops, count_parameters, prunable_layers
from compute.prune import METHODS, PruneContext, PruneSettings, get_method
from compute.rng import derive_seeds
from compute.snapshot import SnapshotWriter, round_mantissa, scan_metrics, summarize
from compute.train import TrainConfig, TrainHooks, steps_per_epoch, train

#: a model's buffered per-sample rows are written out as a part file beyond this many
FLUSH_ROWS = 4_000_000


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: 'cuda' is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def method_order() -> list[str]:
    """Registered methods in DESIGN.md order, any others after them."""
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
    cfg = dataclasses.replace(cfg, corruptions=tuple(corruptions), methods=methods)
    shard_jobs(cfg)  # a shard without work fails here, before any training
    return cfg


@dataclass
class ModelRecord:
    model_id: str
    method: str
    family: str
    target_sparsity: float
    seed: int
    parent_id: str
    model: models.Classifier
    train_seconds: float
    prune_seconds: float
    train_epochs: float
    notes: dict


@dataclass
class RunSummary:
    path: Path
    models: int
    conditions: int
    samples: int
    rows: int
    bytes: int
    seconds: float
    device: str

    def line(self) -> str:
        return (
            f"wrote {self.path}: {self.models} models x {self.conditions} conditions x {self.samples} samples "
            f"= {self.rows:,} rows ({self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s on {self.device}"
        )


def png_bytes(image: torch.Tensor) -> bytes:
    """PNG of a uint8 (3, H, W) image; single-channel when the image is grey (same pixels)."""
    from PIL import Image

    pixels = image.permute(1, 2, 0).cpu().numpy()
    grey = bool((pixels == pixels[..., :1]).all())
    picture = Image.fromarray(pixels[..., 0]) if grey else Image.fromarray(pixels)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("prunescope", "torch", "torchvision", "numpy", "polars", "pyarrow", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict, to check that shards pruned the same dense model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_models(
    cfg: ComputeConfig, dataset: data.Dataset, device: torch.device, progress: bool
) -> tuple[list[ModelRecord], dict[str, nn.Module], dict]:
    """This shard's models: the dense model of every seed it needs and every method's
    pruned models from it. Returns the recorded models, every dense parent and the schedule."""
    mean, std = dataset.channel_stats()
    spec = models.ModelSpec(cfg.architecture, dataset.num_classes, tuple(mean), tuple(std))
    plans = schedules(cfg)
    settings = prune_settings(cfg)
    policy = LayerPolicy(cfg.prune_first_layer, cfg.prune_last_layer)
    rewind_step = round(cfg.rewind_epochs * steps_per_epoch(len(dataset.train_labels), cfg.batch_size))
    jobs = shard_jobs(cfg)
    records: list[ModelRecord] = []
    parents: dict[str, nn.Module] = {}
    bar = tqdm(total=len(jobs), desc="models", unit="method", disable=not progress)
    for seed in sorted({seed for seed, _ in jobs}):
        torch.manual_seed(seed)
        dense = models.build(spec)
        prunable_layers(dense, policy)  # fail early on an architecture with nothing to prune
        init_state = copy.deepcopy(dense.state_dict())
        result = train(
            dense, dataset, plans["dense"], seed=seed, device=device, desc=f"dense s{seed}", progress=progress,
            hooks=TrainHooks(capture_step=rewind_step),
        )  # fmt: skip
        dense_id = schema.model_id_for("dense", 0.0, seed)
        parents[dense_id] = dense
        if (seed, "dense") in jobs:
            record = ModelRecord(
                dense_id, "dense", "dense", 0.0, seed, dense_id, dense, result.seconds, 0.0, result.epochs, {}
            )
            records.append(record)
            bar.update()
        ctx = PruneContext(
            dense=dense,
            init_state=init_state,
            rewind_state=result.captured,
            data=dataset,
            dense_schedule=plans["dense"],
            rewind_step=rewind_step,
            finetune=plans["finetune"],
            rounds=plans["rounds"],
            sparse=plans["sparse"],
            supermask=plans["supermask"],
            settings=settings,
            policy=policy,
            seed=seed,
            device=device,
            progress=progress,
        )
        for name in [method for job_seed, method in jobs if job_seed == seed and method != "dense"]:
            method = get_method(name)
            bar.set_postfix(method=name)
            for pruned in method.run(ctx, list(cfg.sparsities)):
                records.append(
                    ModelRecord(
                        schema.model_id_for(name, pruned.target_sparsity, seed),
                        name,
                        method.family,
                        pruned.target_sparsity,
                        seed,
                        dense_id,
                        pruned.model,
                        pruned.train_seconds,
                        pruned.prune_seconds,
                        pruned.train_epochs,
                        pruned.notes,
                    )
                )
            bar.update()
    bar.close()
    schedule = {
        **{name: plan.as_dict() for name, plan in plans.items()},
        "rewind_step": rewind_step,
        **policy.as_dict(),
    }
    return records, parents, schedule


def prunable_sparsity(model: nn.Module, parent: nn.Module, policy: LayerPolicy) -> float:
    """1 - nonzero prunable weights / the dense parent's prunable weights.

    For unstructured methods the two totals are equal; a structurally pruned model is
    smaller, and its removed filters count as pruned.
    """
    parent_total = sum(m.weight.numel() for _, m in prunable_layers(parent, policy))
    modules = dict(model.named_modules())
    nonzero = sum(int((modules[name].weight != 0).sum()) for name, _ in prunable_layers(parent, policy))
    return 1.0 - nonzero / parent_total


def condition_images(
    dataset: data.Dataset, condition: schema.Condition, cfg: ComputeConfig, device: torch.device
) -> torch.Tensor:
    """The test images under one condition, uint8 on `device`: generated, or read from
    the released CIFAR-10-C files when --cifar10c is given."""
    images = dataset.test_images.to(device)
    if condition.corruption == schema.CLEAN:
        return images
    if cfg.cifar10c:
        rows = cifar10c.load_condition(
            cfg.cifar10c, condition.corruption, condition.severity, dataset.test_index.numpy()
        )
        return torch.from_numpy(rows).to(device)
    corruption_index = list(schema.CORRUPTION_FAMILIES).index(condition.corruption)
    # the same per-sample seed at every severity: severity curves compare like with like
    seeds = derive_seeds(cfg.corruption_seed, corruption_index, dataset.test_index)
    out = torch.empty_like(images)
    for start in range(0, len(images), cfg.eval_batch_size):
        stop = start + cfg.eval_batch_size
        out[start:stop] = corrupt.corrupt_uint8(
            images[start:stop], condition.corruption, condition.severity, seeds[start:stop]
        )
    return out


def summary_errors(snapshot_dir: Path) -> pl.DataFrame:
    """Per sample: how many model x condition rows got it wrong."""
    return scan_metrics(snapshot_dir).group_by("sample_id").agg((~pl.col("correct")).sum().alias("errors")).collect()


def thumbnail_subset(errors: pl.DataFrame, dataset: data.Dataset, n: int, seed: int) -> np.ndarray:
    """Sample ids whose corrupted images the snapshot keeps: the n/2 most misclassified (the
    fragile lists lead with them), then a class-stratified random rest. Sorted."""
    ids = dataset.test_index.numpy()
    if n >= len(ids):
        return np.sort(ids)
    ranked = errors.sort("errors", "sample_id", descending=[True, False])["sample_id"].to_numpy()
    chosen = list(ranked[: n // 2])
    rest = np.setdiff1d(ids, chosen)
    labels = dict(zip(ids.tolist(), dataset.test_labels.tolist(), strict=True))
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for sample in rng.permutation(rest).tolist():
        by_class.setdefault(labels[sample], []).append(sample)
    while len(chosen) < n:  # round-robin over classes keeps the rest stratified
        for members in by_class.values():
            if members and len(chosen) < n:
                chosen.append(members.pop())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def corrupted_thumbnails(
    dataset: data.Dataset, conditions: list[schema.Condition], cfg: ComputeConfig, device: torch.device, ids: np.ndarray
) -> pl.DataFrame:
    """PNGs of the chosen samples under every corrupted condition. Corruptions are seeded per
    sample, so regenerating a subset gives exactly the images the models were evaluated on."""
    positions = np.flatnonzero(np.isin(dataset.test_index.numpy(), ids))
    subset = dataclasses.replace(
        dataset, test_images=dataset.test_images[positions], test_labels=dataset.test_labels[positions],
        test_index=dataset.test_index[positions],
    )  # fmt: skip
    rows = []
    for condition in conditions:
        if condition.corruption == schema.CLEAN:
            continue
        images = condition_images(subset, condition, cfg, device).cpu()
        for sample_id, image in zip(subset.test_index.tolist(), images, strict=True):
            rows.append({"sample_id": sample_id, "condition_id": condition.condition_id, "thumbnail": png_bytes(image)})
    return pl.DataFrame(rows, schema={"sample_id": pl.Int32, "condition_id": pl.Int16, "thumbnail": pl.Binary})


def corruption_source(cfg: ComputeConfig, dataset: data.Dataset) -> dict:
    if cfg.cifar10c:
        return {"source": "CIFAR-10-C files", "path": str(Path(cfg.cifar10c).expanduser().resolve())}
    side = dataset.image_shape[-1]
    return {
        "source": "generated",
        "parameters": "CIFAR-10-C (CORRUPTIONS.md)",
        "seed": cfg.corruption_seed,
        "spatial_scale": side / 32.0,
        "note": f"kernel radii, crop sizes and blur sigmas scaled by {side}/32" if side != 32 else "32x32: no scaling",
    }


def run(cfg: ComputeConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> RunSummary:
    """Run the whole compute step and write a snapshot folder at `out`."""
    started = time.perf_counter()
    cfg = resolve_config(cfg)
    device = resolve_device(cfg.device)
    timings: dict[str, float] = {}

    with SnapshotWriter(out, overwrite=overwrite) as writer:
        tick = time.perf_counter()
        dataset = data.load(data.DataSpec(cfg.dataset, cfg.n_test, cfg.n_train, cfg.split_seed, cfg.data_root))
        if cfg.cifar10c:  # before hours of training, not after
            cifar10c.check_folder(
                cfg.cifar10c, list(cfg.corruptions), dataset.test_index.numpy(), dataset.test_labels.numpy()
            )
        timings["data"] = time.perf_counter() - tick

        tick = time.perf_counter()
        records, parents, schedule = train_models(cfg, dataset, device, progress)
        timings["train_and_prune"] = time.perf_counter() - tick

        conditions = schema.build_conditions(cfg.corruptions, cfg.severities)
        sample_ids = dataset.test_index.numpy().astype(np.int32)
        labels = dataset.test_labels.to(device)
        buffers: dict[str, list[pl.DataFrame]] = {r.model_id: [] for r in records}
        parts: dict[str, int] = {r.model_id: 0 for r in records}
        clean_features: dict[str, np.ndarray] = {}
        tick = time.perf_counter()
        corrupt_seconds = 0.0
        bar = tqdm(total=len(conditions) * len(records), desc="evaluate", unit="model", disable=not progress)
        for condition in conditions:
            bar.set_postfix(condition=condition.label)
            corrupt_tick = time.perf_counter()
            images = condition_images(dataset, condition, cfg, device)
            corrupt_seconds += time.perf_counter() - corrupt_tick
            for record in records:
                features = forward_features(record.model, images, device, cfg.eval_batch_size)
                if condition.corruption == schema.CLEAN:
                    clean_features[record.model_id] = features.cpu().numpy()
                metrics = condition_metrics(record.model, features, labels)
                for name in schema.FLOAT_METRICS:
                    metrics[name] = round_mantissa(metrics[name], cfg.metric_bits)
                frame = pl.DataFrame(
                    {
                        "condition_id": np.full(len(sample_ids), condition.condition_id, np.int16),
                        "sample_id": sample_ids,
                        **metrics,
                    }
                )
                buffers[record.model_id].append(frame)
                if sum(len(f) for f in buffers[record.model_id]) >= FLUSH_ROWS:
                    writer.write_metrics(record.model_id, pl.concat(buffers[record.model_id]), parts[record.model_id])
                    buffers[record.model_id], parts[record.model_id] = [], parts[record.model_id] + 1
                bar.update()
        bar.close()
        for model_id, frames in buffers.items():
            if frames:
                writer.write_metrics(model_id, pl.concat(frames), parts[model_id])
        timings["corrupt"] = corrupt_seconds
        timings["evaluate"] = time.perf_counter() - tick - corrupt_seconds

        tick = time.perf_counter()
        summary = summarize(scan_metrics(writer.tmp))
        writer.write_table(schema.SUMMARY, summary)
        clean_accuracy = dict(summary.filter(pl.col("condition_id") == 0).select("model_id", "accuracy").iter_rows())
        policy = LayerPolicy(cfg.prune_first_layer, cfg.prune_last_layer)
        model_rows, class_rows, embedding_rows = [], [], []
        for record in records:
            total, nonzero = count_parameters(record.model)
            model_rows.append(
                {
                    "model_id": record.model_id,
                    "method": record.method,
                    "family": record.family,
                    "target_sparsity": record.target_sparsity,
                    "sparsity": prunable_sparsity(record.model, parents[record.parent_id], policy),
                    "params_total": total,
                    "params_nonzero": nonzero,
                    "flops": count_flops(record.model, dataset.image_shape),
                    "seed": record.seed,
                    "parent_id": record.parent_id,
                    "clean_accuracy": clean_accuracy[record.model_id],
                    "train_seconds": record.train_seconds,
                    "prune_seconds": record.prune_seconds,
                    "train_epochs": round(record.train_epochs),
                }
            )
            classes = class_table(record.model, dataset.class_names)
            class_rows.append(pl.DataFrame({"model_id": record.model_id, **classes}))
            xy = pca_2d(clean_features[record.model_id])
            embedding_rows.append(
                pl.DataFrame({"model_id": record.model_id, "sample_id": sample_ids, "x": xy[:, 0], "y": xy[:, 1]})
            )
        writer.write_table(schema.MODELS, pl.DataFrame(model_rows))
        if cfg.checkpoints:
            for record in records:
                writer.write_file(f"{schema.CHECKPOINTS_DIR}/{record.model_id}.pt", checkpoint_bytes(record.model))
        writer.write_table(schema.CLASSES, pl.concat(class_rows))
        if cfg.thumbnail_samples:
            chosen = thumbnail_subset(summary_errors(writer.tmp), dataset, cfg.thumbnail_samples, cfg.split_seed)
            writer.write_table(schema.THUMBNAILS, corrupted_thumbnails(dataset, conditions, cfg, device, chosen))
        writer.write_table(schema.EMBEDDING, pl.concat(embedding_rows))
        writer.write_table(
            schema.CONDITIONS,
            pl.DataFrame([dataclasses.asdict(c) for c in conditions]),
        )
        writer.write_table(
            schema.SAMPLES,
            pl.DataFrame(
                {
                    "sample_id": sample_ids,
                    "label": dataset.test_labels.numpy().astype(np.int16),
                    "class_name": [dataset.class_names[int(y)] for y in dataset.test_labels],
                    "thumbnail": [png_bytes(img) for img in dataset.test_images],
                }
            ),
        )
        timings["write"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - started

        rows = len(records) * len(conditions) * len(sample_ids)
        shard_index, shard_count = parse_shard(cfg.shard)
        manifest = {
            "name": Path(out).name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": {
                "name": dataset.name,
                "classes": list(dataset.class_names),
                "image_shape": list(dataset.image_shape),
                "n_test": len(sample_ids),
                "n_train": len(dataset.train_labels),
            },
            "architecture": cfg.architecture,
            "seeds": sorted({r.seed for r in records}),
            "shard": {"index": shard_index, "count": shard_count, "jobs": [list(job) for job in shard_jobs(cfg)]},
            "parents": {dense_id: fingerprint(model) for dense_id, model in parents.items()},
            "device": _device_name(device),
            "packages": _package_versions(),
            "config": cfg.as_dict(),
            "schedule": schedule,
            "methods": method_table(cfg),
            "model_notes": {r.model_id: r.notes for r in records if r.notes},
            "corruptions": corruption_source(cfg, dataset),
            "storage": {"metric_bits": cfg.metric_bits, "float_encoding": "BYTE_STREAM_SPLIT", "compression": "zstd"},
            "flops": "multiply-adds per image by nonzero conv and linear weights",
            "counts": {
                "models": len(records),
                "conditions": len(conditions),
                "samples": len(sample_ids),
                "metric_rows": rows,
            },
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        path = writer.finish(manifest)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return RunSummary(
        path, len(records), len(conditions), len(sample_ids), rows, size, time.perf_counter() - started, str(device)
    )
