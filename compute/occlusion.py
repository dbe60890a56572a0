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

    def patches(self) -> tuple[list[tuple[int, int]], int, torch.Tensor]:
        """`occluded`'s corners, patch side and fill."""
        return self.corners, self.patch, self.fill

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
    batch_size: int = 256,
) -> pl.DataFrame:
    """The model's occlusion rows on one condition: `images` are the condition's uint8 test
    images, `features` the model's features of them (N, D); every patch position of as many
    samples as fit in `batch_size` images (at least one sample) per forward pass."""
    weight = model.classifier.weight
    positions_per_sample = len(plan.corners)
    together = max(1, batch_size // positions_per_sample)
    samples = list(zip(plan.sample_ids.tolist(), plan.positions.tolist(), strict=True))
    frames = []
    for start in range(0, len(samples), together):
        group = samples[start : start + together]
        # one forward for the group: 6 forwards of 49 images cost 3 times one of 294 on 2 CPU cores,
        # and a sample's features do not depend on the others in its batch
        batch = torch.cat([occluded(to_float(images[p].to(device)), *plan.patches()) for _, p in group])
        with layout(model, device, plan.precision), autocast(device, plan.precision):
            hidden = model.features(batch_layout(batch, device, plan.precision)).float()
        for k, (sample_id, position) in enumerate(group):
            frames.append(
                sample_rows(
                    model_id, condition_id, sample_id, plan,
                    hidden[k * positions_per_sample : (k + 1) * positions_per_sample],
                    features[position : position + 1], int(labels[position]), weight,
                )
            )  # fmt: skip
    return pl.concat(frames)


def sample_rows(
    model_id: str,
    condition_id: int,
    sample_id: int,
    plan: OcclusionPlan,
    hidden: torch.Tensor,
    base: torch.Tensor,
    label: int,
    weight: torch.Tensor,
) -> pl.DataFrame:
    """One sample's rows: the change of angle to its class and of feature length at each patch
    position (`hidden`, one feature vector per position) from the unoccluded `base` (1, D)."""
    d_angle = geometry.class_angles(hidden, weight)[:, label] - geometry.class_angles(base, weight)[0, label]
    d_norm = hidden.to(geometry.METRIC_DTYPE).norm(dim=1) - base.to(geometry.METRIC_DTYPE).norm(dim=1)
    return pl.DataFrame(
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
