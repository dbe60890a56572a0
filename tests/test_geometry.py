"""The per-sample metrics against their definitions in docs/DESIGN.md."""

import math

import pytest
import torch

from compute import geometry, models


def metrics_for(features, weight, bias, labels):
    return geometry.sample_metrics(
        torch.as_tensor(features, dtype=torch.float64),
        torch.as_tensor(weight, dtype=torch.float64),
        None if bias is None else torch.as_tensor(bias, dtype=torch.float64),
        torch.as_tensor(labels),
    )


def test_logits_rebuilt_from_lengths_and_angles_match_the_model():
    torch.manual_seed(0)
    spec = models.ModelSpec("small_cnn", 10, (0.5,) * 3, (0.25,) * 3)
    model = models.build(spec).eval()
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        features, logits = model.forward_features(x)
    head = model.classifier
    angles = geometry.class_angles(features, head.weight)
    rebuilt = geometry.logits_from_geometry(
        head.weight.double().norm(dim=1), features.double().norm(dim=1), angles, head.bias.double()
    )
    torch.testing.assert_close(rebuilt.float(), logits, atol=1e-4, rtol=1e-4)


def test_two_class_margins_have_the_known_answer():
    # w_0 = (1, 0), w_1 = (0, 1), f = (3, 1): z = (3, 1); the boundary is the line x = y,
    # at distance |3 - 1| / sqrt(2) from f.
    m = metrics_for([[3.0, 1.0], [3.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [0, 1])
    assert m["logit_margin"].tolist() == pytest.approx([2.0, -2.0])
    assert m["geom_margin"].tolist() == pytest.approx([math.sqrt(2), -math.sqrt(2)])
    assert m["feat_norm"].tolist() == pytest.approx([math.sqrt(10)] * 2)
    assert m["angle_true"].tolist() == pytest.approx([math.degrees(math.atan2(1, 3)), math.degrees(math.atan2(3, 1))])
    assert m["pred"].tolist() == [0, 0]
    assert m["correct"].tolist() == [True, False]


def test_geom_margin_is_the_distance_to_the_nearest_boundary():
    """Independent check: project f onto each boundary and measure the distance there."""
    gen = torch.Generator().manual_seed(1)
    n, d, c = 64, 5, 4
    f = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(c, d, generator=gen, dtype=torch.float64)
    b = torch.randn(c, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    m = geometry.sample_metrics(f, w, b, y)
    for i in range(n):
        best = math.inf
        for k in range(c):
            if k == y[i]:
                continue
            normal = w[y[i]] - w[k]
            offset = b[y[i]] - b[k]
            gap = float(normal @ f[i] + offset)
            point = f[i] - gap * normal / (normal @ normal)  # nearest point with z_y = z_k
            assert float((w[y[i]] - w[k]) @ point + offset) == pytest.approx(0.0, abs=1e-9)
            signed = math.copysign(float((f[i] - point).norm()), gap)
            best = min(best, signed)
        assert float(m["geom_margin"][i]) == pytest.approx(best, rel=1e-9)


def test_probabilities_loss_and_correctness_follow_their_definitions():
    gen = torch.Generator().manual_seed(2)
    f = torch.randn(200, 8, generator=gen, dtype=torch.float64) * 3
    w = torch.randn(10, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (200,), generator=gen)
    m = geometry.sample_metrics(f, w, b, y)
    probs = torch.softmax(f @ w.T + b, dim=1)
    torch.testing.assert_close(m["p_true"], probs[torch.arange(200), y])
    torch.testing.assert_close(m["confidence"], probs.max(dim=1).values)
    torch.testing.assert_close(m["loss"], -torch.log(m["p_true"]))
    assert torch.equal(m["logit_margin"] > 0, m["correct"])
    assert torch.equal(torch.sign(m["geom_margin"]), torch.sign(m["logit_margin"]))
    assert torch.equal(m["correct"], m["pred"] == y)


def test_zero_feature_vector_has_nan_angles_and_finite_everything_else():
    m = metrics_for([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0.3, -0.1], [0, 1])
    assert math.isnan(m["angle_true"][0]) and math.isnan(m["angle_pred"][0])
    assert not math.isnan(m["angle_true"][1])
    assert m["feat_norm"][0] == 0.0
    for name in ("p_true", "loss", "logit_margin", "geom_margin", "confidence"):
        assert torch.isfinite(m[name]).all(), name
    # with f = 0 the logits are the biases: class 0 wins by 0.4, at distance 0.4 / |w_0 - w_1|
    assert float(m["logit_margin"][0]) == pytest.approx(0.4)
    assert float(m["geom_margin"][0]) == pytest.approx(0.4 / math.sqrt(2))


def test_pruned_class_row_gives_nan_angle_and_no_crash():
    # class 1's row is all zero, as after pruning the last layer; class 2 equals class 1
    m = metrics_for([[1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [0.0, 0.5, 0.2], [1])
    assert math.isnan(m["angle_true"][0])
    # w_1 == w_2: their boundary does not exist, so only class 0's boundary counts
    assert float(m["geom_margin"][0]) == pytest.approx((0.5 - 1.0) / 1.0)


def test_class_geometry_angles():
    g = geometry.class_geometry(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), torch.tensor([0.1, 0.2, 0.3]))
    assert g["weight_norm"].tolist() == pytest.approx([1.0, math.sqrt(2), 0.0])
    assert float(g["angle_to"][0, 1]) == pytest.approx(45.0)
    assert float(g["angle_to"][0, 0]) == pytest.approx(0.0, abs=1e-5)
    assert math.isnan(g["angle_to"][0, 2])
