"""Which model is dense and which is whose parent: read from models.parquet, never from ids or labels.

A snapshot from `prunescope evaluate` names its models and methods freely (`resnet18-dense`,
`base-s0`, method `baseline`), so the only facts every writer records are `parent_id` (itself
for a dense model, docs/DESIGN.md) and `family`. Every page and query asks this module.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl


def is_dense() -> pl.Expr:
    """A dense model is its own parent (a row without a parent has nothing to be compared with,
    so it is a reference too)."""
    return pl.col("parent_id").is_null() | (pl.col("parent_id") == pl.col("model_id"))


def dense(models: pl.DataFrame) -> pl.DataFrame:
    return models.filter(is_dense())


def pruned(models: pl.DataFrame) -> pl.DataFrame:
    return models.filter(~is_dense())


def dense_ids(models: pl.DataFrame) -> list[str]:
    return dense(models)["model_id"].to_list()


def pruned_ids(models: pl.DataFrame) -> list[str]:
    return pruned(models)["model_id"].to_list()


def with_parents(models: pl.DataFrame, model_ids: Iterable[str]) -> list[str]:
    """The given models and their dense parents: what a comparison against the parent reads."""
    wanted = set(model_ids)
    chosen = models.filter(pl.col("model_id").is_in(list(wanted)))
    return sorted(wanted | set(chosen["parent_id"].drop_nulls()))


def parent_of(models: pl.DataFrame, model_id: str) -> str | None:
    """The dense parent of `model_id` (itself for a dense model), None for an unknown id."""
    row = models.filter(pl.col("model_id") == model_id)
    if row.is_empty():
        return None
    parent = row["parent_id"][0]
    return model_id if parent is None else parent
