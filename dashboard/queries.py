"""Aggregations behind the app's views: pure functions of polars frames, no Streamlit."""

from __future__ import annotations

import polars as pl

from compute import schema
from dashboard.store import Snapshot

METHOD_ORDER = list(schema.METHOD_FAMILIES)


def method_rank(method: str) -> int:
    """Known methods in DESIGN.md order, unknown ones after them."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def benchmark_condition_ids(conditions: pl.DataFrame) -> list[int]:
    """The conditions of the 15 CIFAR-10-C corruptions: what mean corruption accuracy averages."""
    return conditions.filter(pl.col("corruption").is_in(schema.BENCHMARK_CORRUPTIONS))["condition_id"].to_list()


def mean_corruption_accuracy(summary: pl.DataFrame, conditions: pl.DataFrame) -> pl.DataFrame:
    """model_id -> plain mean of accuracy over the benchmark conditions present (DESIGN.md)."""
    ids = benchmark_condition_ids(conditions)
    return (
        summary.filter(pl.col("condition_id").is_in(ids))
        .group_by("model_id")
        .agg(
            pl.col("accuracy").cast(pl.Float64).mean().alias("mean_corruption_accuracy"),
            pl.len().alias("corruption_conditions"),
        )
    )


def models_table(snapshot: Snapshot) -> pl.DataFrame:
    """One row per model: size, clean and mean corruption accuracy, both relative to its dense parent."""
    mca = mean_corruption_accuracy(snapshot.summary, snapshot.conditions)
    table = snapshot.models.join(mca, on="model_id", how="left").with_columns(pl.col("clean_accuracy").cast(pl.Float64))
    parents = table.select(
        pl.col("model_id").alias("parent_id"),
        pl.col("clean_accuracy").alias("parent_clean_accuracy"),
        pl.col("mean_corruption_accuracy").alias("parent_mean_corruption_accuracy"),
    )
    table = table.join(parents, on="parent_id", how="left").with_columns(
        (pl.col("clean_accuracy") - pl.col("parent_clean_accuracy")).alias("clean_vs_dense"),
        (pl.col("mean_corruption_accuracy") - pl.col("parent_mean_corruption_accuracy")).alias("relative_robustness"),
        pl.col("method").map_elements(method_rank, return_dtype=pl.Int64).alias("_rank"),
    )
    return table.sort("_rank", "method", "target_sparsity", "seed").drop(
        "_rank", "parent_clean_accuracy", "parent_mean_corruption_accuracy"
    )


def method_curves(table: pl.DataFrame, value: str) -> pl.DataFrame:
    """Mean and spread over seeds of `value` per method and target sparsity."""
    return (
        table.group_by("method", "target_sparsity")
        .agg(
            pl.col("sparsity").mean(),
            pl.col(value).mean().alias("mean"),
            pl.col(value).std().fill_null(0.0).alias("std"),
            pl.col(value).min().alias("min"),
            pl.col(value).max().alias("max"),
            pl.len().alias("seeds"),
        )
        .with_columns(pl.col("method").map_elements(method_rank, return_dtype=pl.Int64).alias("_rank"))
        .sort("_rank", "method", "target_sparsity")
        .drop("_rank")
    )


def snapshot_facts(snapshot: Snapshot) -> dict[str, str]:
    """Short facts for the header of the overview page."""
    manifest = snapshot.manifest
    dataset = manifest.get("dataset", {})
    corrupted = snapshot.conditions.filter(pl.col("corruption") != schema.CLEAN)
    methods = sorted(set(snapshot.models["method"]), key=method_rank)
    counts = manifest.get("counts", {})
    rows = counts.get("metric_rows", len(snapshot.models) * len(snapshot.conditions) * len(snapshot.samples))
    shape = dataset.get("image_shape", [])
    severities = ", ".join(map(str, sorted(set(corrupted["severity"]))))
    timings = manifest.get("timings", {})
    return {
        "Data set": f"{dataset.get('name', '?')} ({len(snapshot.samples):,} test images, {'x'.join(map(str, shape))})",
        "Architecture": str(manifest.get("architecture", "?")),
        "Models": f"{len(snapshot.models)} ({len(methods)} methods, {len(manifest.get('seeds', [0]))} seed(s))",
        "Methods": ", ".join(methods),
        "Corruptions": f"{corrupted['corruption'].n_unique()} x severities {severities}",
        "Per-sample rows": f"{rows:,}",
        "Computed": f"{manifest.get('created', '?')} on {manifest.get('device', '?')}",
        "Compute time": f"{timings.get('total', 0):.0f} s",
    }
