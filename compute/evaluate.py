"""Evaluate one model: forward passes on every condition, and its per-sample, per-class
and embedding tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from compute import geometry, schema
from compute.corrupted import ConditionImages
from compute.models import Classifier
from compute.schema import FLOAT_METRICS
from compute.snapshot import round_mantissa
from compute.train import to_float


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
) -> dict[str, pl.DataFrame]:
    """The model's rows of the snapshot: per-sample metrics on every condition, its class
    directions and the 2-D embedding of its clean features."""
    labels = labels.to(device)
    frames, embedding = [], None
    for condition in images.conditions:
        features = forward_features(model, images.images(condition), device, batch_size)
        if condition.corruption == schema.CLEAN:
            xy = pca_2d(features.cpu().numpy())
            embedding = pl.DataFrame({"model_id": model_id, "sample_id": sample_ids, "x": xy[:, 0], "y": xy[:, 1]})
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
    return {"metrics": pl.concat(frames), "classes": classes, "embedding": embedding}


@torch.inference_mode()
def forward_features(model: Classifier, images: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """Penultimate feature vectors of uint8 images, (N, D) float32 on `device`."""
    model.to(device).eval()
    chunks = [
        model.features(to_float(images[start : start + batch_size].to(device)))
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


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
