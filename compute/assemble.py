"""Assemble the snapshot from the work folder's files only: every model evaluated there,
in the sweep's order, the shared tables, the thumbnails and the manifest."""

from __future__ import annotations

import dataclasses
import io
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import torch

from compute import answers, data, schema
from compute.config import ComputeConfig
from compute.corrupted import ConditionImages, SampleImages
from compute.occlusion import OcclusionPlan
from compute.plan import PlannedModel
from compute.snapshot import SnapshotWriter, sample_errors, scan_metrics, summarize
from compute.sweep import whole_epochs
from compute.workdir import WorkFolder


def png_bytes(image: torch.Tensor) -> bytes:
    """PNG of a uint8 (3, H, W) image; single-channel when the image is grey (same pixels)."""
    from PIL import Image

    pixels = image.permute(1, 2, 0).cpu().numpy()
    grey = bool((pixels == pixels[..., :1]).all())
    picture = Image.fromarray(pixels[..., 0]) if grey else Image.fromarray(pixels)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnail_subset(errors: pl.DataFrame, dataset: data.Dataset, n: int, seed: int) -> np.ndarray:
    """Sample ids whose corrupted images the snapshot keeps: the n/2 most misclassified (the
    fragile lists lead with them), then the rest in the class-stratified random order
    (`Dataset.stratified_test_order`), whose first ceil(n/2) are therefore always kept. Sorted."""
    ids = dataset.test_index.numpy()
    if n >= len(ids):
        return np.sort(ids)
    ranked = errors.sort("errors", "sample_id", descending=[True, False])["sample_id"].to_numpy()
    chosen = ranked[: n // 2].tolist()
    taken = set(chosen)
    rest = [sample for sample in dataset.stratified_test_order(seed).tolist() if sample not in taken]
    return np.sort(np.asarray(chosen + rest[: n - len(chosen)], dtype=np.int64))


def corrupted_thumbnails(images: ConditionImages | SampleImages, ids: np.ndarray) -> pl.DataFrame:
    """PNGs of the chosen samples under every corrupted condition, exactly as evaluated."""
    positions = np.flatnonzero(np.isin(images.dataset.test_index.numpy(), ids))
    sample_ids = images.dataset.test_index[positions].tolist()
    rows = []
    for condition in images.conditions:
        if condition.corruption == schema.CLEAN:
            continue
        chosen = images.images(condition)[positions]
        for sample_id, image in zip(sample_ids, chosen, strict=True):
            rows.append({"sample_id": sample_id, "condition_id": condition.condition_id, "thumbnail": png_bytes(image)})
    return pl.DataFrame(rows, schema={"sample_id": pl.Int32, "condition_id": pl.Int16, "thumbnail": pl.Binary})


def corruption_source(cfg: ComputeConfig, dataset: data.Dataset) -> dict:
    if cfg.cifar10c:
        return {"source": "CIFAR-10-C files", "path": str(Path(cfg.cifar10c).expanduser().resolve())}
    side = dataset.image_shape[-1]
    return {
        "source": "generated",
        "parameters": "CIFAR-10-C (docs/CORRUPTIONS.md)",
        "seed": cfg.corruption_seed,
        "spatial_scale": side / 32.0,
        "note": f"kernel radii, crop sizes and blur sigmas scaled by {side}/32" if side != 32 else "32x32: no scaling",
    }


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("prunescope", "torch", "torchvision", "numpy", "polars", "pyarrow", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@dataclasses.dataclass
class RunFacts:
    """What the manifest says of the run beyond the work folder's files."""

    cfg: ComputeConfig
    dataset: data.Dataset
    device: torch.device
    #: what the command that made the models says of them: architecture, methods, schedule, shard, source
    described: dict
    parents: dict[str, str]
    timings: dict[str, float]
    resumed_models: int
    #: keep the checkpoints of the models that have one (--checkpoints, or a grown snapshot that kept them)
    checkpoints: bool = False
    #: the occlusion the models were evaluated with (--occlusion-samples), if any
    occlusion: OcclusionPlan | None = None


def assemble(
    writer: SnapshotWriter,
    work: WorkFolder,
    planned: list[PlannedModel],
    images: ConditionImages,
    facts: RunFacts,
    started: float,
) -> int:
    """Write the whole snapshot into `writer` from the work folder; returns its per-sample row count."""
    tick = time.perf_counter()
    cfg, dataset = facts.cfg, facts.dataset
    records = [work.record(p.model_id) for p in planned]
    for record in records:
        partition = schema.metrics_partition(record["model_id"])
        writer.copy_file(f"{partition}/part-0.parquet", work.table(record["model_id"], "metrics"))
    summary = summarize(scan_metrics(writer.tmp))
    writer.write_table(schema.SUMMARY, summary)
    clean = dict(summary.filter(pl.col("condition_id") == 0).select("model_id", "accuracy").iter_rows())
    models = pl.DataFrame(
        [
            {
                **{k: v for k, v in record.items() if k != "notes"},
                "clean_accuracy": clean[record["model_id"]],
                "train_epochs": whole_epochs(record["train_epochs"]),
                **work.relu_diagnostics(record["model_id"]),
            }
            for record in records
        ],
        schema_overrides={name: pl.Float64 for name in schema.MODEL_DIAGNOSTICS},  # all-null columns too
    )
    writer.write_table(schema.MODELS, models)
    writer.write_table(schema.LAYERS, pl.concat([pl.read_parquet(work.table(p.model_id, "layers")) for p in planned]))
    if facts.occlusion is not None:
        writer.write_table(
            schema.OCCLUSION, pl.concat([pl.read_parquet(work.table(p.model_id, "occlusion")) for p in planned])
        )
    if facts.checkpoints:
        for record in records:
            model_id = record["model_id"]
            if work.has_checkpoint(model_id):  # given models and ones kept without weights have none
                writer.copy_file(f"{schema.CHECKPOINTS_DIR}/{model_id}.pt", work.model_dir(model_id) / "checkpoint.pt")
    writer.write_table(schema.CLASSES, pl.concat([pl.read_parquet(work.table(p.model_id, "classes")) for p in planned]))
    if cfg.thumbnail_samples:
        chosen = thumbnail_subset(sample_errors(writer.tmp), dataset, cfg.thumbnail_samples, cfg.split_seed)
        writer.write_table(schema.THUMBNAILS, corrupted_thumbnails(images, chosen))
    writer.write_table(
        schema.EMBEDDING, pl.concat([pl.read_parquet(work.table(p.model_id, "embedding")) for p in planned])
    )
    conditions = images.conditions
    writer.write_table(schema.CONDITIONS, pl.DataFrame([dataclasses.asdict(c) for c in conditions]))
    sample_ids = dataset.test_index.numpy().astype(np.int32)
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
    writer.write_table(schema.ANSWERS, answers.from_metrics(writer.tmp, [r["model_id"] for r in records]))
    rows = len(records) * len(conditions) * len(sample_ids)
    timings = {**facts.timings, "write": time.perf_counter() - tick, "total": time.perf_counter() - started}
    manifest = {
        "name": writer.final.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name,
            "classes": list(dataset.class_names),
            "image_shape": list(dataset.image_shape),
            "n_test": len(sample_ids),
            "n_train": len(dataset.train_labels),
        },
        "seeds": sorted({r["seed"] for r in records}),
        "config": cfg.as_dict(),
        **facts.described,
        "parents": facts.parents,
        "device": device_name(facts.device),
        "packages": package_versions(),
        "model_notes": {r["model_id"]: r["notes"] for r in records if r["notes"]},
        "corruptions": corruption_source(cfg, dataset),
        "storage": {"metric_bits": cfg.metric_bits, "float_encoding": "BYTE_STREAM_SPLIT", "compression": "zstd"},
        "flops": "multiply-adds per image by nonzero conv and linear weights",
        "counts": {
            "models": len(records),
            "conditions": len(conditions),
            "samples": len(sample_ids),
            "metric_rows": rows,
        },
        "resumed": {"models_from_earlier_runs": facts.resumed_models},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    if facts.occlusion is not None:
        manifest["occlusion"] = facts.occlusion.settings()
    writer.finish(manifest)
    return rows
