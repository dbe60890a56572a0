"""Measures beyond a model's accuracy: prune potential and excess error (Liebenwein et al.,
"Lost in Pruning", torchprune), McNemar's exact test against the dense parent, and accuracy
per class (Hooker et al.: pruning hurts some classes far more than others).

Streamlit-free; definitions in docs/DESIGN.md ("Measures beyond accuracy").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from compute import schema
from compute.answers import Answers
from dashboard.queries import model_batches
from dashboard.roles import is_dense, with_parents
from dashboard.store import Snapshot
from dashboard.store import answers as snapshot_answers


def with_parent_accuracy(accuracy: pl.DataFrame, models: pl.DataFrame, key: str = "condition_id") -> pl.DataFrame:
    """Rows (model_id, `key`, accuracy) of pruned models beside their dense parent's accuracy on
    the same `key` (a condition, or a corruption averaged over severities)."""
    parents = accuracy.select(pl.col("model_id").alias("parent_id"), key, pl.col("accuracy").alias("parent_accuracy"))
    return (
        accuracy.join(models.select("model_id", "method", "seed", "target_sparsity", "parent_id"), on="model_id")
        .filter(~is_dense())
        .join(parents, on=["parent_id", key])
        .with_columns(pl.col("accuracy", "parent_accuracy").cast(pl.Float64))
    )


def corruption_accuracy(summary: pl.DataFrame, conditions: pl.DataFrame) -> pl.DataFrame:
    """model_id, corruption ("clean" for the clean images), accuracy averaged over the given
    conditions' severities."""
    return (
        summary.join(conditions.select("condition_id", "corruption"), on="condition_id")
        .group_by("model_id", "corruption")
        .agg(pl.col("accuracy").cast(pl.Float64).mean())
    )


#: an accuracy less than this far above chance (1 / classes) is "near chance" (docs/DESIGN.md)
CHANCE_MARGIN = 0.10


def near_chance(column: str, n_classes: int) -> pl.Expr:
    """Whether an accuracy is within CHANCE_MARGIN of guessing: there, a comparison with the dense
    parent says nothing about pruning (both models have stopped telling the classes apart)."""
    return pl.col(column) < 1.0 / max(n_classes, 1) + CHANCE_MARGIN


def prune_potential(rows: pl.DataFrame, delta: float, key: str = "condition_id", n_classes: int = 0) -> pl.DataFrame:
    """Per method, seed and `key`: the largest target sparsity whose accuracy is within `delta`
    of the dense parent's (torchprune's definition: a sparser model may pass although a less
    sparse one fails); 0 when none passes. `rows`: with_parent_accuracy's output.
    `informative` is false where the dense parent is near chance on `key` (with `n_classes`):
    there any model passes without telling anything."""
    passed = rows.with_columns(
        pl.when(pl.col("accuracy") >= pl.col("parent_accuracy") - delta - 1e-9)
        .then(pl.col("target_sparsity"))
        .otherwise(0.0)
        .alias("passing")
    )
    informative = ~near_chance("parent_accuracy", n_classes).any() if n_classes else pl.lit(True)
    return passed.group_by("method", "seed", key).agg(
        pl.col("passing").max().alias("prune_potential"), informative.alias("informative")
    )


def excess_error(
    accuracy: pl.DataFrame, models: pl.DataFrame, key: str = "corruption", n_classes: int = 0
) -> pl.DataFrame:
    """Per pruned model and corruption: the change in error from the clean images to the
    corruption, minus the dense parent's change (positive: pruning made the corruption hurt more).
    `accuracy`: rows (model_id, `key`, accuracy) where `key` is "clean" for the clean images.
    `informative` is false where the model and its parent are both near chance under the
    corruption (with `n_classes`): their difference there is noise, not brittleness."""
    rows = with_parent_accuracy(accuracy, models, key)
    clean = rows.filter(pl.col(key) == schema.CLEAN).select(
        "model_id", pl.col("accuracy").alias("clean"), pl.col("parent_accuracy").alias("parent_clean")
    )
    change = (pl.col("clean") - pl.col("accuracy")) - (pl.col("parent_clean") - pl.col("parent_accuracy"))
    return (
        rows.filter(pl.col(key) != schema.CLEAN)
        .join(clean, on="model_id")
        .with_columns(
            change.alias("excess_error"),
            (~(near_chance("accuracy", n_classes) & near_chance("parent_accuracy", n_classes)) if n_classes
             else pl.lit(True)).alias("informative"),
        )  # fmt: skip
        .select("model_id", "method", "target_sparsity", key, "excess_error", "informative")
    )


def mcnemar_p(only_dense_right: pl.Series, only_pruned_right: pl.Series) -> pl.Series:
    """McNemar's exact test, two-sided: twice the binomial tail of the smaller discordant count
    at p = 1/2, capped at 1 (1 when no sample is discordant)."""
    b, c = only_dense_right.to_numpy(), only_pruned_right.to_numpy()
    n = b + c
    p = 2 * stats.binom.cdf(b.clip(max=c), n, 0.5)
    return pl.Series("p_value", p.clip(max=1.0)).fill_nan(1.0)


def discordant_pairs(
    answers: Answers, models: pl.DataFrame, model_ids: Sequence[str], condition_ids: Sequence[int]
) -> pl.DataFrame:
    """Per pruned model of `model_ids` and condition: samples only the dense parent gets right,
    samples only the pruned model gets right, and McNemar's p for the difference."""
    pruned = models.filter(pl.col("model_id").is_in(list(model_ids)) & ~is_dense())
    conditions = [int(c) for c in condition_ids]
    ids, parents = pruned["model_id"].to_list(), pruned["parent_id"].to_list()
    only_dense, only_pruned = [], []
    for batch in model_batches(list(range(len(ids))), 2 * len(conditions) * len(answers.sample_ids)):
        mine = answers.correct([ids[i] for i in batch], conditions)
        theirs = answers.correct([parents[i] for i in batch], conditions)
        only_dense.append((theirs & ~mine).sum(axis=2).ravel())
        only_pruned.append((~theirs & mine).sum(axis=2).ravel())
    counts = pl.DataFrame(
        {
            "model_id": np.repeat(ids, len(conditions)),
            "condition_id": np.tile(np.asarray(conditions, dtype=np.int16), len(ids)),
            "only_dense_right": np.concatenate(only_dense) if only_dense else np.zeros(0, np.int64),
            "only_pruned_right": np.concatenate(only_pruned) if only_pruned else np.zeros(0, np.int64),
        },
        schema={"model_id": pl.String, "condition_id": pl.Int16, "only_dense_right": pl.Int64,
                "only_pruned_right": pl.Int64},
    )  # fmt: skip
    return counts.with_columns(mcnemar_p(counts["only_dense_right"], counts["only_pruned_right"])).sort(
        "model_id", "condition_id"
    )


def significance(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]) -> pl.DataFrame:
    """discordant_pairs for the chosen pruned models, from the snapshot's answers."""
    return discordant_pairs(snapshot_answers(snapshot), snapshot.models, model_ids, condition_ids)


def class_accuracy(
    answers: Answers, samples: pl.DataFrame, model_ids: Sequence[str], condition_ids: Sequence[int]
) -> pl.DataFrame:
    """Per model and class: accuracy over the class's samples and the given conditions pooled,
    and how many (condition, sample) pairs that is (`n`)."""
    labels = samples.sort("sample_id")["label"].to_numpy().astype(np.int64)
    classes = np.unique(labels)
    per_class = np.bincount(labels)[classes] * len(condition_ids)
    rows = []
    for batch in model_batches(list(model_ids), len(condition_ids) * len(labels)):
        right = answers.correct(batch, condition_ids).sum(axis=1)  # model, sample
        for model_id, row in zip(batch, right, strict=True):
            hits = np.bincount(labels, weights=row, minlength=classes.max() + 1)[classes]
            rows.append(pl.DataFrame({"model_id": model_id, "label": classes, "hits": hits, "n": per_class}))
    if not rows or not len(condition_ids):
        return pl.DataFrame(schema={"model_id": pl.String, "label": pl.Int16, "accuracy": pl.Float64, "n": pl.Int64})
    return (
        pl.concat(rows)
        .select("model_id", pl.col("label").cast(pl.Int16), (pl.col("hits") / pl.col("n")).alias("accuracy"),
                pl.col("n").cast(pl.Int64))  # fmt: skip
        .sort("model_id", "label")
    )


def class_breakdown(
    snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]
) -> pl.DataFrame:
    """Accuracy per model and class over the given conditions, and that minus the dense parent's."""
    models = snapshot.models.filter(pl.col("model_id").is_in(list(model_ids)))
    wanted = with_parents(snapshot.models, model_ids)
    table = class_accuracy(snapshot_answers(snapshot), snapshot.samples, wanted, [int(c) for c in condition_ids])
    parents = table.select(pl.col("model_id").alias("parent_id"), "label", pl.col("accuracy").alias("parent_accuracy"))
    return (
        table.filter(pl.col("model_id").is_in(list(model_ids)))
        .join(models.select("model_id", "parent_id"), on="model_id")
        .join(parents, on=["parent_id", "label"], how="left")
        .with_columns((pl.col("accuracy") - pl.col("parent_accuracy")).alias("vs_dense"))
        .drop("parent_id", "parent_accuracy")
    )


def significance_by_model(pairs: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """Per model, from discordant_pairs: McNemar's p when one condition was tested, and in how
    many of the tested conditions the difference from the dense parent is significant at `alpha`
    (uncorrected for the number of models and conditions)."""
    return pairs.group_by("model_id").agg(
        pl.when(pl.len() == 1).then(pl.col("p_value").first()).otherwise(None).alias("p_value"),
        (pl.col("p_value") < alpha).sum().cast(pl.Int64).alias("significant_conditions"),
        pl.len().cast(pl.Int64).alias("tested_conditions"),
    )


def most_hurt_class(breakdown: pl.DataFrame, model_id: str) -> int | None:
    """The class whose accuracy `model_id` lowers most against its dense parent (lowest label
    on ties), from `class_breakdown`; None when it has no comparable class."""
    rows = breakdown.filter((pl.col("model_id") == model_id) & pl.col("vs_dense").is_not_null())
    return None if rows.is_empty() else int(rows.sort("vs_dense", "label")["label"][0])
