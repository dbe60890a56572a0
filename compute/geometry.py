"""Geometry of the last layer: the one definition of every per-sample metric (docs/DESIGN.md).

For feature vector f, class weights w_c, biases b_c and true label y:
    z_c = w_c . f + b_c = |w_c| |f| cos(theta_c) + b_c
The metrics are computed in float64 from (f, W, b) and stored as float32, so that the
stored columns agree with each other exactly: correct == (pred == label), the sign of
logit_margin and of geom_margin, loss == -log(p_true).
"""

from __future__ import annotations

import math

import torch

METRIC_DTYPE = torch.float64


def logits_from_geometry(
    weight_norm: torch.Tensor, feat_norm: torch.Tensor, angles_deg: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """z[n, c] = |w_c| |f_n| cos(theta_nc) + b_c; the decomposition the paper builds on."""
    return weight_norm[None, :] * feat_norm[:, None] * torch.cos(torch.deg2rad(angles_deg)) + bias[None, :]


def class_angles(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between each feature vector and each class direction, (N, C).

    NaN where the feature vector or the class row is zero: a zero vector has no direction.
    """
    f = features.to(METRIC_DTYPE)
    w = weight.to(METRIC_DTYPE)
    dots = f @ w.T
    norms = f.norm(dim=1)[:, None] * w.norm(dim=1)[None, :]
    cos = (dots / norms).clamp(-1.0, 1.0)  # 0/0 gives NaN and stays NaN through clamp
    return torch.rad2deg(torch.acos(cos))


def boundary_distances(weight: torch.Tensor) -> torch.Tensor:
    """|w_a - w_b| for every pair of classes, (C, C)."""
    w = weight.to(METRIC_DTYPE)
    return torch.cdist(w, w)


def sample_metrics(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every per-sample metric of docs/DESIGN.md for features (N, D), weight (C, D), labels (N,).

    Returns float64 tensors (and int64 `pred`, bool `correct`), one value per sample.
    """
    f = features.to(METRIC_DTYPE)
    w = weight.to(METRIC_DTYPE)
    b = torch.zeros(w.shape[0], dtype=METRIC_DTYPE, device=w.device) if bias is None else bias.to(METRIC_DTYPE)
    y = labels.to(device=f.device, dtype=torch.long)
    rows = torch.arange(len(y), device=f.device)

    logits = f @ w.T + b
    log_probs = torch.log_softmax(logits, dim=1)
    pred = logits.argmax(dim=1)
    loss = -log_probs[rows, y]

    z_true = logits[rows, y]
    others = logits.clone()
    others[rows, y] = -math.inf
    logit_margin = z_true - others.max(dim=1).values

    # distance to the boundary {z_y = z_c} is (z_y - z_c) / |w_y - w_c|; the nearest one
    # is the margin. Equal rows (|w_y - w_c| = 0) have no boundary: the ratio is +-inf.
    gaps = (z_true[:, None] - logits) / boundary_distances(w)[y]
    gaps[rows, y] = math.inf
    geom_margin = gaps.min(dim=1).values

    angles = class_angles(f, w)
    return {
        "pred": pred,
        "correct": pred == y,
        "p_true": torch.exp(-loss),
        "confidence": log_probs.max(dim=1).values.exp(),
        "loss": loss,
        "feat_norm": f.norm(dim=1),
        "angle_true": angles[rows, y],
        "angle_pred": angles[rows, pred],
        "logit_margin": logit_margin,
        "geom_margin": geom_margin,
    }


def class_geometry(weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per class: weight-row norm, bias, and the angle (degrees) to every class direction."""
    w = weight.to(METRIC_DTYPE)
    b = torch.zeros(w.shape[0], dtype=METRIC_DTYPE) if bias is None else bias.to(METRIC_DTYPE)
    return {"weight_norm": w.norm(dim=1), "bias": b, "angle_to": class_angles(w, w)}
