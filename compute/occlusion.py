"""Patch occlusion (the geometric attribution of Li et al.): how a model's feature geometry
of a sample moves when a square patch of its image is hidden.

For a few samples whose corrupted images the snapshot keeps, on the clean condition and on
every corruption at one severity, a patch slides over the image exactly as the models saw
it, filled with the data set's mean colour (0 in the models' normalised input); each
position records the change of `angle_true` and `feat_norm` (docs/DESIGN.md) from the
unoccluded image. The evaluation's model and its features of the unoccluded images are
reused, so each position costs one forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from compute import geometry, schema
from compute.config import ComputeConfig, InputError
from compute.data import Dataset
from compute.models import Classifier
from compute.precision import autocast, batch_layout, layout
from compute.snapshot import round_mantissa
from compute.train import to_float


@dataclass(frozen=True)
class OcclusionPlan:
    """The samples, conditions and patches `--occlusion-*` asks for, on one data set."""

    sample_ids: np.ndarray  # sorted
    positions: np.ndarray  # their rows in the test set
    severity: int  # the corrupted conditions occluded; the clean one always is
    corners: list[tuple[int, int]]  # (top, left) of each patch position, row-major
    patch: int
    stride: int
    fill: torch.Tensor  # (3,) the data set's mean colour in [0, 1]
    metric_bits: int
    precision: str = "fp32"  # the evaluation's, so occluded and unoccluded features compare like for like

    def covers(self, condition: schema.Condition) -> bool:
        return condition.corruption == schema.CLEAN or condition.severity == self.severity

    def settings(self) -> dict:
        """What the manifest records of it."""
        return {
            "samples": len(self.sample_ids),
            "sample_ids": self.sample_ids.tolist(),
            "severity": self.severity,
            "patch": self.patch,
            "stride": self.stride,
            "fill": "the data set's mean colour: 0 in the models' normalised input",
        }


def patch_corners(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Every (top, left) from the top-left corner in steps of `stride` that keeps the patch
    inside the image, row-major."""
    return [(top, left) for top in range(0, height - patch + 1, stride) for left in range(0, width - patch + 1, stride)]


def plan_occlusion(cfg: ComputeConfig, dataset: Dataset) -> OcclusionPlan | None:
    """The occlusion of a run, or None when `--occlusion-samples` is 0. The samples are the
    first N of the class-stratified order the thumbnails are filled from (which keeps them
    among the thumbnails whenever N <= ceil(thumbnail_samples / 2)), known before any model
    is evaluated, so every model, shard and resumed run occludes the same ones."""
    if not cfg.occlusion_samples:
        return None
    _, height, width = dataset.image_shape
    if cfg.occlusion_patch > min(height, width):
        raise InputError(
            f"--occlusion-patch: {cfg.occlusion_patch} px does not fit in the {height}x{width} images; give at most "
            f"{min(height, width)}"
        )
    if len(dataset.train_labels) == 0:
        raise InputError(
            "--occlusion-samples: the patch takes the training images' mean colour (the models' normalisation); "
            "give the training images with --data-root"
        )
    ids = np.sort(dataset.stratified_test_order(cfg.split_seed)[: cfg.occlusion_samples])
    mean, _ = dataset.channel_stats()
    return OcclusionPlan(
        sample_ids=ids,
        positions=np.flatnonzero(np.isin(dataset.test_index.numpy(), ids)),
        severity=cfg.occlusion_severity,
        corners=patch_corners(height, width, cfg.occlusion_patch, cfg.occlusion_stride),
        patch=cfg.occlusion_patch,
        stride=cfg.occlusion_stride,
        fill=torch.tensor(mean, dtype=torch.float32),
        metric_bits=cfg.metric_bits,
        precision=cfg.precision,
    )


def occluded(image: torch.Tensor, corners: list[tuple[int, int]], patch: int, fill: torch.Tensor) -> torch.Tensor:
    """A float (3, H, W) image once per corner, each with the patch there set to `fill`: (P, 3, H, W)."""
    batch = image.repeat(len(corners), 1, 1, 1)
    for i, (top, left) in enumerate(corners):
        batch[i, :, top : top + patch, left : left + patch] = fill.to(batch)[:, None, None]
    return batch


@torch.inference_mode()
def occlusion_rows(
    model: Classifier,
    model_id: str,
    condition_id: int,
    images: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    plan: OcclusionPlan,
    device: torch.device,
) -> pl.DataFrame:
    """The model's occlusion rows on one condition: `images` are the condition's uint8 test
    images, `features` the model's features of them (N, D); one batch of every patch
    position per sample."""
    weight = model.classifier.weight
    frames = []
    for sample_id, position in zip(plan.sample_ids.tolist(), plan.positions.tolist(), strict=True):
        label = int(labels[position])
        batch = occluded(to_float(images[position].to(device)), plan.corners, plan.patch, plan.fill)
        with layout(model, device, plan.precision), autocast(device, plan.precision):
            hidden = model.features(batch_layout(batch, device, plan.precision)).float()
        base = features[position : position + 1]
        d_angle = geometry.class_angles(hidden, weight)[:, label] - geometry.class_angles(base, weight)[0, label]
        d_norm = hidden.to(geometry.METRIC_DTYPE).norm(dim=1) - base.to(geometry.METRIC_DTYPE).norm(dim=1)
        frames.append(
            pl.DataFrame(
                {
                    "model_id": model_id,
                    "condition_id": np.full(len(plan.corners), condition_id, np.int16),
                    "sample_id": np.full(len(plan.corners), sample_id, np.int32),
                    "row": np.array([top for top, _ in plan.corners], np.int16),
                    "col": np.array([left for _, left in plan.corners], np.int16),
                    "d_angle_true": round_mantissa(d_angle.cpu().numpy(), plan.metric_bits),
                    "d_feat_norm": round_mantissa(d_norm.cpu().numpy(), plan.metric_bits),
                }
            )
        )
    return pl.concat(frames)
