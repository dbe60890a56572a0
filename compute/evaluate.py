"""Evaluate one model: forward passes on every condition, and its per-sample, per-class,
embedding and (when asked for) occlusion tables, and its dead ReLU units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from compute import geometry, schema
from compute.corrupted import ConditionImages
from compute.diagnostics import DeadUnits
from compute.models import Classifier
from compute.occlusion import OcclusionPlan, occlusion_rows
from compute.precision import autocast, batch_layout, layout
from compute.schema import FLOAT_METRICS
from compute.snapshot import round_mantissa
from compute.train import to_float


@dataclass
class Evaluation:
    #: metrics, classes, embedding and, with an occlusion plan, occlusion
    tables: dict[str, pl.DataFrame]
    #: schema.RELU_DIAGNOSTICS on the clean images; None for a model without nn.ReLU
    relu: dict[str, float | None]


def evaluate_model(
    model: Classifier,
    model_id: str,
    images: ConditionImages,
    labels: torch.Tensor,
    sample_ids: np.ndarray,
    class_names: tuple[str, ...],
    metric_bits: int,
    batch_size: int,
    device: torch.device,
    occlusion: OcclusionPlan | None = None,
    precision: str = "fp32",
) -> Evaluation:
    """The model's rows of the snapshot: per-sample metrics on every condition, its class
    directions, the 2-D embedding of its clean features, its occlusion rows, and its dead
    ReLU units, counted in the clean forward passes."""
    labels = labels.to(device)
    frames, occluded, embedding, relu = [], [], None, dict.fromkeys(schema.RELU_DIAGNOSTICS)
    for condition in images.conditions:
        condition_images = images.images(condition)
        if condition.corruption == schema.CLEAN:
            with DeadUnits(model) as dead:
                features = forward_features(model, condition_images, device, batch_size, precision)
            relu = {
                "dead_relu": dead.fraction(forwards=math.ceil(len(condition_images) / batch_size)),
                "dynamic_dead_relu": dead.inactive_share(),
            }
            embedding = clean_geometry(model_id, sample_ids, features, model.classifier.weight, metric_bits)
        else:
            features = forward_features(model, condition_images, device, batch_size, precision)
        if occlusion is not None and occlusion.covers(condition):
            occluded.append(
                occlusion_rows(
                    model, model_id, condition.condition_id, condition_images, features, labels, occlusion, device,
                    batch_size,
                )  # fmt: skip
            )
        metrics = condition_metrics(model, features, labels)
        for name in FLOAT_METRICS:
            metrics[name] = round_mantissa(metrics[name], metric_bits)
        frames.append(
            pl.DataFrame(
                {"condition_id": np.full(len(sample_ids), condition.condition_id, np.int16), "sample_id": sample_ids}
                | metrics
            )
        )
    classes = pl.DataFrame({"model_id": model_id, **class_table(model, class_names)})
    tables = {"metrics": pl.concat(frames), "classes": classes, "embedding": embedding}
    if occlusion is not None:
        tables["occlusion"] = pl.concat(occluded)
    return Evaluation(tables, relu)


@torch.inference_mode()
def forward_features(
    model: Classifier, images: torch.Tensor, device: torch.device, batch_size: int, precision: str = "fp32"
) -> torch.Tensor:
    """Penultimate feature vectors of uint8 images, (N, D) float32 on `device` (under bf16, the
    network's bfloat16 output widened)."""
    model.to(device).eval()
    with layout(model, device, precision), autocast(device, precision):
        chunks = [
            model.features(batch_layout(to_float(images[start : start + batch_size].to(device)), device, precision))
            for start in range(0, len(images), batch_size)
        ]
    return torch.cat(chunks).float()


@torch.inference_mode()
def condition_metrics(model: Classifier, features: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Every per-sample metric for one model on one condition, in the snapshot's dtypes."""
    head = model.classifier
    metrics = geometry.sample_metrics(features, head.weight, head.bias, labels.to(features.device))
    out = {
        "pred": metrics["pred"].cpu().numpy().astype(np.int16),
        "correct": metrics["correct"].cpu().numpy(),
    }
    for name in FLOAT_METRICS:
        out[name] = metrics[name].cpu().numpy().astype(np.float32)
    return out


@torch.inference_mode()
def class_table(model: Classifier, class_names: tuple[str, ...]) -> dict[str, list]:
    head = model.classifier
    geo = geometry.class_geometry(head.weight.cpu(), None if head.bias is None else head.bias.cpu())
    return {
        "class": list(range(len(class_names))),
        "class_name": list(class_names),
        "weight_norm": geo["weight_norm"].float().tolist(),
        "bias": geo["bias"].float().tolist(),
        "angle_to": geo["angle_to"].float().tolist(),
    }


@torch.inference_mode()
def clean_geometry(
    model_id: str, sample_ids: np.ndarray, features: torch.Tensor, weight: torch.Tensor, metric_bits: int
) -> pl.DataFrame:
    """The model's embedding.parquet rows: the 2-D projection of its clean features and each
    feature vector's angle to every class direction (the axes of the global geometry view),
    rounded like the per-sample metrics so that angles[label] equals the clean angle_true."""
    xy = pca_2d(features.cpu().numpy())
    angles = geometry.class_angles(features, weight.to(features.device)).cpu().numpy().astype(np.float32)
    angles = round_mantissa(angles, metric_bits)
    return pl.DataFrame({"model_id": model_id, "sample_id": sample_ids, "x": xy[:, 0], "y": xy[:, 1]}).with_columns(
        pl.Series("angles", angles, dtype=pl.Array(pl.Float32, angles.shape[1])).cast(pl.List(pl.Float32))
    )


def pca_2d(features: np.ndarray) -> np.ndarray:
    """First two principal components, with signs fixed so reruns agree. (N, 2)."""
    x = np.nan_to_num(features.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x = x - x.mean(axis=0, keepdims=True)
    if not np.any(x):
        return np.zeros((len(x), 2), dtype=np.float32)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    components = vt[:2]
    if len(components) < 2:
        components = np.vstack([components, np.zeros_like(components)])
    # the largest loading of each component is positive
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return (x @ (components * signs[:, None]).T).astype(np.float32)
