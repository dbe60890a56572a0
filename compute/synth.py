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
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from compute import answers, geometry, schema
from compute.config import InputError
from compute.evaluate import clean_geometry
from compute.occlusion import patch_corners
from compute.snapshot import SnapshotWriter, round_mantissa, summarize

FEATURES = 32
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
#: a small CNN on the 8x8 synthetic images: (layer, kind, weights, output positions); the
#: first and last layers stay dense, as the default layer policy keeps them
LAYERS = (("body.0", "conv", 3 * 16 * 9, 64), ("body.3", "conv", 16 * 32 * 9, 16), ("body.6", "conv", 32 * 32 * 9, 4))
OTHER_PARAMETERS = 2 * (16 + 32 + 32)  # batch-norm scales and shifts
#: occlusion of the first samples, as a real run's: clean and severity 3, a 2 px patch every 1 px of the
#: 8x8 image (7 x 7 = 49 positions, as an 8 px patch every 4 px of a 32 x 32 one)
OCCLUSION = {"samples": 10, "severity": 3, "patch": 2, "stride": 1}


@dataclass(frozen=True)
class SynthSpec:
    models: int
    samples: int
    classes: int = 10
    seed: int = 0
    metric_bits: int = 23  # as compute's --metric-bits: mantissa bits kept of each float metric


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


def synth_layers(models: pl.DataFrame, classes: int) -> pl.DataFrame:
    """Every model's rows of layers.parquet: its prunable layers keep 1 - target_sparsity of their weights."""
    layers = [*LAYERS, ("classifier", "linear", FEATURES * classes, 1)]
    rows = []
    for model_id, target in models.select("model_id", "target_sparsity").iter_rows():
        for i, (name, kind, params, positions) in enumerate(layers):
            prunable = 0 < i < len(layers) - 1
            nonzero = round(params * (1 - target)) if prunable else params
            rows.append((model_id, name, kind, prunable, params, nonzero, 1 - nonzero / params, nonzero * positions))
    columns = ["model_id", "layer", "kind", "prunable", "params", "nonzero", "sparsity", "flops"]
    return pl.DataFrame(rows, schema=columns, orient="row")


def synth_model_columns(models: pl.DataFrame, layers: pl.DataFrame, classes: int, seed: int) -> pl.DataFrame:
    """The size columns of models.parquet, summed from its layers, and diagnostics that grow
    with sparsity: dead ReLU units, distances to the initialisation and to the dense parent."""
    sums = layers.group_by("model_id").agg(
        pl.col("params").sum().alias("weights"),
        pl.col("nonzero").sum().alias("nonzero"),
        pl.col("flops").sum(),
        (1 - pl.col("nonzero").filter(pl.col("prunable")).sum() / pl.col("params").filter(pl.col("prunable")).sum())
        .alias("sparsity"),
    )
    rng = np.random.default_rng(seed)
    target = models["target_sparsity"].to_numpy()
    dense = (models["model_id"] == models["parent_id"]).to_numpy()
    others = OTHER_PARAMETERS + classes  # normalisation and classifier biases, never pruned
    return models.join(sums, on="model_id", how="left", maintain_order="left").with_columns(
        (pl.col("weights") + others).alias("params_total"),
        (pl.col("nonzero") + others).alias("params_nonzero"),
        pl.Series("dead_relu", dead := np.clip(0.05 + 0.3 * target + rng.normal(0, 0.02, len(target)), 0, 1)),
        # at least the never-active share, and smaller the more is pruned (as Activating-while-Pruning finds)
        pl.Series("dynamic_dead_relu", np.clip(np.maximum(dead, 0.6 - 0.2 * target), 0, 1)),
        pl.Series("dist_init", 25 * (1 + 0.3 * target) + np.abs(rng.normal(0, 1, len(target)))),
        pl.Series("dist_dense", np.where(dense, 0.0, 20 * target * (1 + 0.1 * np.abs(rng.normal(size=len(target)))))),
    )


def synth_occlusion(
    models: pl.DataFrame, conditions: list[schema.Condition], sample_ids: np.ndarray, seed: int
) -> pl.DataFrame:
    """Occlusion rows in which hiding a sample's salient spot turns its feature vector away
    from its class and shortens it, more so the sparser the model and the stronger the corruption."""
    rng = np.random.default_rng(seed + 1)
    corners = np.array(patch_corners(8, 8, OCCLUSION["patch"], OCCLUSION["stride"]))
    centres = rng.uniform(1, 6, size=(len(sample_ids), 1, 2))
    distance = np.linalg.norm(corners[None, :, :] + OCCLUSION["patch"] / 2 - centres, axis=2)
    bump = np.exp(-(distance**2) / 4.5)  # (samples, positions)
    chosen = [c for c in conditions if c.corruption == schema.CLEAN or c.severity == OCCLUSION["severity"]]
    n = len(sample_ids) * len(corners)
    frames = []
    for model_id, target in models.select("model_id", "target_sparsity").iter_rows():
        for condition in chosen:
            amplitude = (3 + 20 * target) * (1 + 0.1 * condition.severity)
            frames.append(
                pl.DataFrame(
                    {
                        "model_id": model_id,
                        "condition_id": np.full(n, condition.condition_id, np.int16),
                        "sample_id": np.repeat(sample_ids, len(corners)).astype(np.int32),
                        "row": np.tile(corners[:, 0], len(sample_ids)).astype(np.int16),
                        "col": np.tile(corners[:, 1], len(sample_ids)).astype(np.int16),
                        "d_angle_true": (amplitude * bump).ravel() + rng.normal(0, 0.5, n),
                        "d_feat_norm": (-0.2 * amplitude * bump).ravel() + rng.normal(0, 0.1, n),
                    }
                )
            )
    return pl.concat(frames)


def _png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value % 256, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def run(spec: SynthSpec, out: str | Path, overwrite: bool = False, progress: bool = True) -> str:
    if not 1 <= spec.metric_bits <= 23:
        raise InputError(f"--metric-bits: {spec.metric_bits} is not allowed; choose 1 to 23 (23 keeps float32 exact)")
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
        class_rows, embedding_rows, summaries, answer_rows = [], [], [], []
        answer_seconds = 0.0
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
                    frame[name] = round_mantissa(metrics[name].numpy().astype(np.float32), spec.metric_bits)
                frames.append(pl.DataFrame(frame))
                if condition.corruption == schema.CLEAN:
                    embedding_rows.append(clean_geometry(model_id, sample_ids, feats, weight, spec.metric_bits))
            table = pl.concat(frames)
            writer.write_metrics(model_id, table)
            tick = time.perf_counter()
            answer_rows.append(answers.model_answers(model_id, table, sample_ids, [0]))
            answer_seconds += time.perf_counter() - tick
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
        layers = synth_layers(models, spec.classes)
        writer.write_table(schema.LAYERS, layers)
        occluded = sample_ids[: OCCLUSION["samples"]]
        writer.write_table(schema.OCCLUSION, synth_occlusion(models, conditions, occluded, spec.seed))
        writer.write_table(
            schema.THUMBNAILS,
            pl.DataFrame(
                [
                    {"sample_id": int(s), "condition_id": c.condition_id, "thumbnail": _png(int(s))}
                    for s in occluded
                    for c in conditions
                    if c.corruption != schema.CLEAN
                ]
            ),
        )
        writer.write_table(
            schema.MODELS,
            synth_model_columns(models, layers, spec.classes, spec.seed).with_columns(
                pl.col("model_id").replace_strict(clean_accuracy).alias("clean_accuracy"),
                pl.lit(0.0).alias("train_seconds"),
                pl.lit(0.0).alias("prune_seconds"),
                pl.lit(0, dtype=pl.Int32).alias("train_epochs"),  # nothing was trained
            ),
        )
        writer.write_table(schema.SUMMARY, summary)
        tick = time.perf_counter()
        writer.write_table(schema.ANSWERS, pa.concat_tables(answer_rows))
        answer_seconds += time.perf_counter() - tick
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
                "storage": {
                    "metric_bits": spec.metric_bits, "float_encoding": "BYTE_STREAM_SPLIT", "compression": "zstd"
                },  # fmt: skip
                "counts": {
                    "models": spec.models,
                    "conditions": len(conditions),
                    "samples": spec.samples,
                    "metric_rows": rows_total,
                },
                "occlusion": {
                    **OCCLUSION,
                    "samples": len(occluded),
                    "sample_ids": occluded.tolist(),
                    "fill": "synthetic: no image was occluded",
                },
                "timings": {"total": round(time.perf_counter() - started, 3), "answers": round(answer_seconds, 3)},
            }
        )
    seconds = time.perf_counter() - started
    return (
        f"wrote {path}: {spec.models} models x {len(conditions)} conditions x {spec.samples} samples "
        f"= {rows_total:,} synthetic rows in {seconds:.1f} s ({math.ceil(rows_total / max(seconds, 1e-9)):,} rows/s; "
        f"answers.parquet {answer_seconds:.1f} s of it)"
    )
