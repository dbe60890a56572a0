"""Patch occlusion: the patch positions, the occluded images, and each row against a direct
forward of a hand-occluded image; the occluded samples are always among the thumbnails."""

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from compute.assemble import thumbnail_subset
from compute.config import ComputeConfig, ConfigError, InputError, check_basic
from compute.evaluate import forward_features
from compute.models import ModelSpec, build
from compute.occlusion import OcclusionPlan, occluded, occlusion_rows, patch_corners, plan_occlusion


def test_patch_positions_cover_the_image_from_the_top_left_and_stay_inside():
    corners = patch_corners(32, 32, 8, 4)
    assert len(corners) == 7 * 7 and corners[:2] == [(0, 0), (0, 4)] and corners[-1] == (24, 24)
    assert patch_corners(13, 8, 8, 4) == [(0, 0), (4, 0)]  # 4 + 8 <= 13 < 8 + 8; one column fits
    assert patch_corners(8, 8, 8, 3) == [(0, 0)]


def test_an_occluded_image_differs_only_under_the_patch():
    image = torch.rand(3, 12, 12)
    fill = torch.tensor([0.1, 0.2, 0.3])
    batch = occluded(image, [(0, 0), (4, 8)], 4, fill)
    assert batch.shape == (2, 3, 12, 12)
    assert torch.equal(batch[1, :, 4:8, 8:12], fill.view(3, 1, 1).expand(3, 4, 4))
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[4:8, 8:12] = False
    assert torch.equal(batch[1][:, outside], image[:, outside])
    assert torch.equal(batch[0, :, 4:, :], image[:, 4:, :])


def test_each_row_is_the_change_a_hand_occluded_image_makes():
    torch.manual_seed(0)
    mean = (0.2, 0.3, 0.4)
    model = build(ModelSpec("small_cnn", 10, mean, (0.5,) * 3)).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1, 5])
    features = forward_features(model, images, torch.device("cpu"), 256)
    plan = OcclusionPlan(
        sample_ids=np.array([11, 40]), positions=np.array([1, 3]), severity=3, corners=patch_corners(32, 32, 8, 4),
        patch=8, stride=4, fill=torch.tensor(mean), metric_bits=23,
    )  # fmt: skip
    rows = occlusion_rows(model, "m", 7, images, features, labels, plan, torch.device("cpu"))
    assert len(rows) == 2 * 49 and rows["sample_id"].unique().sort().to_list() == [11, 40]
    assert set(rows["condition_id"]) == {7} and set(rows["model_id"]) == {"m"}

    # sample 40 (row 3 of the test set), patch at top 12, left 20, worked out directly in float64
    x = images[3].double() / 255
    x[:, 12:20, 20:28] = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)  # 0 after normalising
    assert torch.allclose(model.normalize(x[None].float())[0, :, 12:20, 20:28], torch.zeros(3, 8, 8), atol=1e-6)
    w = model.classifier.weight.detach().double()[labels[3]]
    with torch.no_grad():
        hidden = model.features(x[None].float())[0].double()
        plain = model.features(images[3:4].float() / 255)[0].double()

    def angle(f):
        return np.degrees(np.arccos(np.clip(float(f @ w) / float(f.norm() * w.norm()), -1, 1)))

    row = rows.filter((pl.col("sample_id") == 40) & (pl.col("row") == 12) & (pl.col("col") == 20))
    assert row["d_angle_true"][0] == pytest.approx(angle(hidden) - angle(plain), abs=1e-3)
    assert row["d_feat_norm"][0] == pytest.approx(float(hidden.norm() - plain.norm()), abs=1e-4)

    # one sample per forward pass (49 images) gives the rows both samples in one pass gave
    apart = occlusion_rows(model, "m", 7, images, features, labels, plan, torch.device("cpu"), batch_size=49)
    assert apart.select("sample_id", "row", "col").equals(rows.select("sample_id", "row", "col"))
    for column in ("d_angle_true", "d_feat_norm"):
        np.testing.assert_allclose(apart[column].to_numpy(), rows[column].to_numpy(), rtol=1e-5, atol=1e-5)


def test_occluded_samples_are_among_the_thumbnails_whatever_the_errors(tiny_data):
    cfg = ComputeConfig(occlusion_samples=3, thumbnail_samples=6, split_seed=2)
    plan = plan_occlusion(cfg, tiny_data)
    assert len(plan.sample_ids) == 3 and list(plan.sample_ids) == sorted(plan.sample_ids)
    first = tiny_data.stratified_test_order(2)[:3]
    assert set(plan.sample_ids) == set(first)
    labels = dict(zip(tiny_data.test_index.tolist(), tiny_data.test_labels.tolist(), strict=True))
    assert len({labels[s] for s in first}) == 3  # a prefix of the stratified order: one per class
    assert torch.equal(tiny_data.test_index[plan.positions], torch.from_numpy(plan.sample_ids))
    rng = np.random.default_rng(0)
    for _ in range(5):  # any most-misclassified half
        errors = pl.DataFrame({"sample_id": tiny_data.test_index.numpy(), "errors": rng.integers(0, 9, 50)})
        assert set(plan.sample_ids) <= set(thumbnail_subset(errors, tiny_data, 6, 2))
    assert plan_occlusion(dataclasses.replace(cfg, occlusion_samples=0), tiny_data) is None


@pytest.mark.parametrize(
    "change,message",
    [
        ({"occlusion_samples": 4, "thumbnail_samples": 6}, "more than the 3 stratified samples"),
        ({"occlusion_samples": 1, "thumbnail_samples": 2, "severities": (1, 2)}, "not among --severities 1,2"),
        ({"occlusion_severity": 6}, "--occlusion-severity: 6"),
        ({"occlusion_stride": 0}, "--occlusion-stride: 0"),
    ],
)
def test_occlusion_flags_that_cannot_work_stop_before_any_work(change, message):
    with pytest.raises(ConfigError, match=message):
        check_basic(ComputeConfig(**change))


def test_a_patch_larger_than_the_images_is_one_line(tiny_data):
    with pytest.raises(InputError, match="--occlusion-patch: 40 px does not fit in the 32x32 images"):
        plan_occlusion(ComputeConfig(occlusion_samples=1, thumbnail_samples=2, occlusion_patch=40), tiny_data)
