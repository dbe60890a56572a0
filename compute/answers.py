"""The per-sample answers written with a snapshot (`answers.parquet`, schema version 5).

The views that rank or correlate samples (fragile samples, corruptions per sample, pruning
identified exemplars) need, per model, condition and sample, only whether the model is
right, and on the clean images what it predicts. Scanning `metrics/` for that on every
visit grows with its rows (190 M at three CIFAR-10 seeds); written once here it is one bit
per row: a (model, condition) row holds `correct` over every sample packed into bytes, in
the order of the samples' ids, and on a clean condition also every prediction.

Torch-free: the writers (assemble, merge, synth), `validate` and the app (which computes
the table from `metrics/` once for a snapshot of schema version 4) share these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from compute import schema


def pack(correct: np.ndarray) -> bytes:
    """Bits of a bool vector, the first sample in the highest bit of the first byte
    (numpy.packbits' order); the last byte is padded with zeros."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes()


def model_answers(model_id: str, rows: pl.DataFrame, sample_ids: np.ndarray, clean_ids: Iterable[int]) -> pa.Table:
    """One model's rows of answers.parquet from its per-sample rows (condition_id,
    sample_id, correct, pred), which must hold every sample of `sample_ids` (sorted) on
    each of its conditions."""
    clean = set(clean_ids)
    rows = rows.select("condition_id", "sample_id", "correct", "pred").sort("condition_id", "sample_id")
    n = len(sample_ids)
    conditions = rows["condition_id"].unique(maintain_order=True).to_list()
    if rows.height != n * len(conditions) or not np.array_equal(
        rows["sample_id"].to_numpy().reshape(len(conditions), n), np.broadcast_to(sample_ids, (len(conditions), n))
    ):
        raise ValueError(f"metrics of {model_id}: not every sample on every condition, once")
    correct = rows["correct"].to_numpy().reshape(len(conditions), n)
    pred = rows["pred"].to_numpy().reshape(len(conditions), n)
    return pa.table(
        {
            "model_id": [model_id] * len(conditions),
            "condition_id": pa.array(conditions, pa.int16()),
            "correct": [pack(c) for c in correct],
            "pred": [p.tolist() if c in clean else None for c, p in zip(conditions, pred, strict=True)],
        },
        schema=schema.ANSWERS_SCHEMA,
    )


def from_metrics(path: Path, model_ids: Sequence[str]) -> pa.Table:
    """answers.parquet of the snapshot (or snapshot being written) at `path`, read from its
    `metrics/` one model at a time."""
    sample_ids = np.sort(pl.read_parquet(path / schema.SAMPLES, columns=["sample_id"])["sample_id"].to_numpy())
    conditions = pl.read_parquet(path / schema.CONDITIONS, columns=["condition_id", "corruption"])
    clean = conditions.filter(pl.col("corruption") == schema.CLEAN)["condition_id"].to_list()
    parts = []
    for model_id in model_ids:
        rows = pl.read_parquet(
            path / schema.metrics_partition(model_id) / "*.parquet",
            columns=["condition_id", "sample_id", "correct", "pred"],
        )
        parts.append(model_answers(model_id, rows, sample_ids, clean))
    return pa.concat_tables(parts) if parts else schema.ANSWERS_SCHEMA.empty_table()


@dataclasses.dataclass(frozen=True)
class Answers:
    """answers.parquet in memory: `bits[m, c]` the packed correctness of model `model_ids[m]`
    on condition `condition_ids[c]` over `sample_ids` (sorted); `pred[m, k]` its predictions
    on the clean condition `clean_ids[k]`. About one bit per per-sample row."""

    model_ids: tuple[str, ...]
    condition_ids: tuple[int, ...]
    clean_ids: tuple[int, ...]
    sample_ids: np.ndarray
    bits: np.ndarray
    pred: np.ndarray

    def correct(self, model_ids: Sequence[str], condition_ids: Sequence[int]) -> np.ndarray:
        """bool array (models, conditions, samples) in the order asked for."""
        models = [self.model_ids.index(m) for m in model_ids]
        conditions = [self.condition_ids.index(int(c)) for c in condition_ids]
        packed = self.bits[np.ix_(models, conditions)] if models and conditions else self.bits[:0, :0]
        return np.unpackbits(packed, axis=2, count=len(self.sample_ids)).astype(bool)

    def clean_predictions(self, model_ids: Sequence[str]) -> np.ndarray:
        """int array (models, clean conditions, samples)."""
        return self.pred[[self.model_ids.index(m) for m in model_ids]]


def in_memory(table: pa.Table | pl.DataFrame, model_ids: Sequence[str], sample_ids: np.ndarray) -> Answers:
    """The Answers of a table of answers.parquet, its models in `model_ids`' order."""
    frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    condition_ids = tuple(sorted(int(c) for c in frame["condition_id"].unique()))
    clean_ids = tuple(sorted(int(c) for c in frame.filter(pl.col("pred").is_not_null())["condition_id"].unique()))
    order = {m: i for i, m in enumerate(model_ids)}
    frame = frame.sort(pl.col("model_id").replace_strict(order, return_dtype=pl.Int64), "condition_id")
    width = (len(sample_ids) + 7) // 8
    bits = np.frombuffer(b"".join(frame["correct"].to_list()), dtype=np.uint8)
    bits = bits.reshape(len(model_ids), len(condition_ids), width)
    clean = frame.filter(pl.col("condition_id").is_in(list(clean_ids)))["pred"]
    pred = (
        np.asarray(clean.explode().to_numpy(), dtype=np.int16).reshape(len(model_ids), len(clean_ids), len(sample_ids))
        if clean_ids
        else np.zeros((len(model_ids), 0, len(sample_ids)), np.int16)
    )
    return Answers(tuple(model_ids), condition_ids, clean_ids, np.asarray(sample_ids), bits, pred)
