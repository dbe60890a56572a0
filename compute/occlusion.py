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

import functools
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


def occluded(images: torch.Tensor, corners: list[tuple[int, int]], patch: int, fill: torch.Tensor) -> torch.Tensor:
    """Float images, (3, H, W) or (G, 3, H, W), each once per corner with the patch there set to
    `fill`: (G * P, 3, H, W), image by image, corners in order."""
    images = images[None] if images.dim() == 3 else images
    _, _, height, width = images.shape
    inside = patch_mask(height, width, tuple(corners), patch).to(images.device)  # (P, 1, H, W)
    hidden = torch.where(inside[None], fill.to(images).view(1, 1, 3, 1, 1), images[:, None])
    return hidden.reshape(-1, *images.shape[1:])


@functools.lru_cache(maxsize=8)
def patch_mask(height: int, width: int, corners: tuple[tuple[int, int], ...], patch: int) -> torch.Tensor:
    """(P, 1, H, W): True under the patch at each corner."""
    inside = torch.zeros(len(corners), 1, height, width, dtype=torch.bool)
    for i, (top, left) in enumerate(corners):
        inside[i, :, top : top + patch, left : left + patch] = True
    return inside


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
    per_sample = len(plan.corners)
    together = max(1, batch_size // per_sample)
    d_angle, d_norm = [], []
    for start in range(0, len(plan.positions), together):
        group = plan.positions[start : start + together]
        # one forward for the group: 6 forwards of 49 images took longer than one of 294 on 2 CPU
        # cores, and a sample's features do not depend on the others in its batch
        batch = occluded(to_float(images[group].to(device)), plan.corners, plan.patch, plan.fill)
        with layout(model, device, plan.precision), autocast(device, plan.precision):
            hidden = model.features(batch_layout(batch, device, plan.precision)).float()
        for k, position in enumerate(group.tolist()):
            moved, base = hidden[k * per_sample : (k + 1) * per_sample], features[position : position + 1]
            label = int(labels[position])
            angles = geometry.class_angles(moved, weight)[:, label] - geometry.class_angles(base, weight)[0, label]
            d_angle.append(angles)
            d_norm.append(moved.to(geometry.METRIC_DTYPE).norm(dim=1) - base.to(geometry.METRIC_DTYPE).norm(dim=1))
    samples = len(plan.sample_ids)
    return pl.DataFrame(
        {
            "model_id": model_id,
            "condition_id": np.full(samples * per_sample, condition_id, np.int16),
            "sample_id": np.repeat(plan.sample_ids.astype(np.int32), per_sample),
            "row": np.tile(np.array([top for top, _ in plan.corners], np.int16), samples),
            "col": np.tile(np.array([left for _, left in plan.corners], np.int16), samples),
            "d_angle_true": round_mantissa(torch.cat(d_angle).cpu().numpy(), plan.metric_bits),
            "d_feat_norm": round_mantissa(torch.cat(d_norm).cpu().numpy(), plan.metric_bits),
        }
    )
