"""`prunescope synth`: a synthetic snapshot of any size, for scale tests of the app.

No training: each model gets random class directions (a shared base, perturbed more the
sparser it is), each sample a feature vector near its class direction, pushed off it by
corruptions in proportion to severity. The per-sample metrics then come from the same
geometry as real snapshots, so every invariant of `prunescope validate` holds.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from compute import geometry, schema
from compute.config import InputError
from compute.evaluate import pca_2d
from compute.snapshot import SnapshotWriter, summarize

FEATURES = 32
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class SynthSpec:
    models: int
    samples: int
    classes: int = 10
    seed: int = 0


def model_grid(n: int) -> pl.DataFrame:
    """n models: one dense per seed, then every method at every sparsity, seed after seed."""
    methods = [m for m in schema.METHOD_FAMILIES if m != "dense"]
    rows, seed = [], 0
    while len(rows) < n:
        dense_id = schema.model_id_for("dense", 0.0, seed)
        rows.append(("dense", 0.0, seed, dense_id))
        for method in methods:
            for sparsity in SPARSITIES:
                if len(rows) < n:
                    rows.append((method, sparsity, seed, dense_id))
        seed += 1
    return pl.DataFrame(rows, schema=["method", "target_sparsity", "seed", "parent_id"], orient="row").with_columns(
        pl.struct("method", "target_sparsity", "seed")
        .map_elements(
            lambda r: schema.model_id_for(r["method"], r["target_sparsity"], r["seed"]), return_dtype=pl.String
        )
        .alias("model_id"),
        pl.col("method").replace_strict(schema.METHOD_FAMILIES).alias("family"),
    )


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value % 256, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def run(spec: SynthSpec, out: str | Path, overwrite: bool = False, progress: bool = True) -> str:
    if spec.models < 1 or spec.samples < spec.classes:
        raise InputError(f"synth needs at least 1 model and {spec.classes} samples (got {spec.models}, {spec.samples})")
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(spec.seed)
    conditions = schema.build_conditions(list(schema.CORRUPTION_FAMILIES), schema.SEVERITIES)
    models = model_grid(spec.models)
    labels = torch.arange(spec.samples) % spec.classes
    base_w = torch.randn(spec.classes, FEATURES, generator=gen, dtype=torch.float64)
    centres = base_w / base_w.norm(dim=1, keepdim=True) * 4.0
    clean = centres[labels] + torch.randn(spec.samples, FEATURES, generator=gen, dtype=torch.float64) * 1.5
    drift = torch.randn(len(conditions), FEATURES, generator=gen, dtype=torch.float64)
    sample_ids = np.arange(spec.samples, dtype=np.int32)
    rows_total = spec.models * len(conditions) * spec.samples
    with SnapshotWriter(out, overwrite=overwrite) as writer:
        class_rows, embedding_rows, summaries = [], [], []
        bar = tqdm(total=spec.models, desc="synth", unit="model", disable=not progress)
        for model_id, sparsity in models.select("model_id", "target_sparsity").iter_rows():
            weight = base_w + torch.randn(base_w.shape, generator=gen, dtype=torch.float64) * sparsity
            bias = torch.randn(spec.classes, generator=gen, dtype=torch.float64) * 0.1
            frames = []
            for condition in conditions:
                shift = condition.severity * (0.4 + sparsity) / 5.0
                noise = torch.randn(clean.shape, generator=gen, dtype=torch.float64) * shift
                feats = torch.relu(clean + shift * drift[condition.condition_id] + noise)
                metrics = geometry.sample_metrics(feats, weight, bias, labels)
                frame = {
                    "condition_id": np.full(spec.samples, condition.condition_id, np.int16),
                    "sample_id": sample_ids,
                }
                frame["pred"] = metrics["pred"].numpy().astype(np.int16)
                frame["correct"] = metrics["correct"].numpy()
                for name in schema.FLOAT_METRICS:
                    frame[name] = metrics[name].numpy().astype(np.float32)
                frames.append(pl.DataFrame(frame))
                if condition.corruption == schema.CLEAN:
                    xy = pca_2d(feats.numpy())
                    embedding_rows.append(
                        pl.DataFrame({"model_id": model_id, "sample_id": sample_ids, "x": xy[:, 0], "y": xy[:, 1]})
                    )
            table = pl.concat(frames)
            writer.write_metrics(model_id, table)
            summaries.append(summarize(table.with_columns(pl.lit(model_id).alias("model_id"))))
            geo = geometry.class_geometry(weight, bias)
            class_rows.append(
                pl.DataFrame(
                    {
                        "model_id": model_id,
                        "class": list(range(spec.classes)),
                        "class_name": [str(c) for c in range(spec.classes)],
                        "weight_norm": geo["weight_norm"].float().tolist(),
                        "bias": geo["bias"].float().tolist(),
                        "angle_to": geo["angle_to"].float().tolist(),
                    }
                )
            )
            bar.update()
        bar.close()
        summary = pl.concat(summaries)
        clean_accuracy = dict(summary.filter(pl.col("condition_id") == 0).select("model_id", "accuracy").iter_rows())
        total = 450_000
        writer.write_table(
            schema.MODELS,
            models.with_columns(
                pl.col("target_sparsity").alias("sparsity"),
                pl.lit(total).alias("params_total"),
                (total * (1 - pl.col("target_sparsity"))).cast(pl.Int64).alias("params_nonzero"),
                (4e7 * (1 - pl.col("target_sparsity"))).cast(pl.Int64).alias("flops"),
                pl.col("model_id").replace_strict(clean_accuracy).alias("clean_accuracy"),
                pl.lit(0.0).alias("train_seconds"),
                pl.lit(0.0).alias("prune_seconds"),
                pl.lit(0, dtype=pl.Int32).alias("train_epochs"),  # nothing was trained
            ),
        )
        writer.write_table(schema.SUMMARY, summary)
        writer.write_table(schema.CLASSES, pl.concat(class_rows))
        writer.write_table(schema.EMBEDDING, pl.concat(embedding_rows))
        writer.write_table(schema.CONDITIONS, pl.DataFrame([c.__dict__ for c in conditions]))
        writer.write_table(
            schema.SAMPLES,
            pl.DataFrame(
                {
                    "sample_id": sample_ids,
                    "label": labels.numpy().astype(np.int16),
                    "class_name": [str(int(y)) for y in labels],
                    "thumbnail": [_png(int(s)) for s in sample_ids],
                }
            ),
        )
        path = writer.finish(
            {
                "name": Path(out).name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "synthetic": True,
                "dataset": {
                    "name": "synthetic",
                    "classes": [str(c) for c in range(spec.classes)],
                    "image_shape": [1, 8, 8],
                    "n_test": spec.samples,
                    "n_train": 0,
                },
                "architecture": "synthetic",
                "seeds": sorted(set(models["seed"].to_list())),
                "device": "none",
                "config": {"models": spec.models, "samples": spec.samples, "classes": spec.classes, "seed": spec.seed},
                "counts": {
                    "models": spec.models,
                    "conditions": len(conditions),
                    "samples": spec.samples,
                    "metric_rows": rows_total,
                },
                "timings": {"total": round(time.perf_counter() - started, 3)},
            }
        )
    seconds = time.perf_counter() - started
    return (
        f"wrote {path}: {spec.models} models x {len(conditions)} conditions x {spec.samples} samples "
        f"= {rows_total:,} synthetic rows in {seconds:.1f} s ({math.ceil(rows_total / max(seconds, 1e-9)):,} rows/s)"
    )
