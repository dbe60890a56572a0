"""The architectures the CIFAR literature uses: each is built, pruned, and its multiply-adds
are counted against the published layer tables worked out by hand."""

import copy

import pytest
import torch

from compute import models
from compute.masks import LayerPolicy, count_flops, count_parameters, prunable_layers, set_masks
from compute.prune.allocation import global_masks
from compute.prune.structured import StructuredError, choose_filters, prunable_groups, shrink
from compute.sweep import prunable_sparsity


def conv(c_in, c_out, side, k=3):
    """Multiply-adds of a k x k convolution producing a side x side map."""
    return c_in * c_out * k * k * side * side


def build(architecture, classes=10):
    torch.manual_seed(0)
    return models.build(models.ModelSpec(architecture, classes, (0.5,) * 3, (0.25,) * 3))


# the layer tables: VGG-16 (open_lth's cifar_vgg_16), ResNet-18 with the CIFAR stem
# (kuangliu/pytorch-cifar), Conv-2/4/6 (Frankle & Carbin 2019, Figure 2), Conv-8
# (Ramanujan et al. 2020), all on 32 x 32 images
VGG16 = (
    conv(3, 64, 32) + conv(64, 64, 32) + conv(64, 128, 16) + conv(128, 128, 16)
    + conv(128, 256, 8) + 2 * conv(256, 256, 8) + conv(256, 512, 4) + 2 * conv(512, 512, 4)
    + 3 * conv(512, 512, 2)
)  # fmt: skip
RESNET18 = (
    conv(3, 64, 32) + 4 * conv(64, 64, 32)
    + conv(64, 128, 16) + 3 * conv(128, 128, 16) + conv(64, 128, 16, k=1)
    + conv(128, 256, 8) + 3 * conv(256, 256, 8) + conv(128, 256, 8, k=1)
    + conv(256, 512, 4) + 3 * conv(512, 512, 4) + conv(256, 512, 4, k=1)
)  # fmt: skip
CONV_STAGES = [(3, 64, 64, 32), (64, 128, 128, 16), (128, 256, 256, 8), (256, 512, 512, 4)]


def conv_n(n):
    stages = CONV_STAGES[: n // 2]
    convs = sum(conv(a, b, side) + conv(b, c, side) for a, b, c, side in stages)
    flat = stages[-1][2] * (stages[-1][3] // 2) ** 2
    return convs + flat * 256 + 256 * 256


EXPECTED = {
    "vgg16_bn": (VGG16, 512),
    "resnet18": (RESNET18, 512),
    "conv2": (conv_n(2), 256),
    "conv4": (conv_n(4), 256),
    "conv6": (conv_n(6), 256),
    "conv8": (conv_n(8), 256),
}


@pytest.mark.parametrize("architecture", list(EXPECTED))
def test_multiply_adds_and_feature_width_follow_the_layer_table(architecture):
    body, width = EXPECTED[architecture]
    model = build(architecture, classes=100)
    assert count_flops(model, (3, 32, 32)) == body + width * 100
    features, logits = model.forward_features(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, width) and logits.shape == (2, 100)


def test_parameter_counts_match_the_papers():
    # Frankle & Carbin's Figure 2 lists 4.3 M weights for Conv-2 and 2.4 M for Conv-4
    assert round(count_parameters(build("conv2"))[0] / 1e6, 1) == 4.3
    assert round(count_parameters(build("conv4"))[0] / 1e6, 1) == 2.4
    assert round(count_parameters(build("resnet18"))[0] / 1e6, 1) == 11.2  # the usual CIFAR ResNet-18
    assert round(count_parameters(build("vgg16_bn"))[0] / 1e6, 1) == 14.7


@pytest.mark.parametrize("architecture", list(EXPECTED))
def test_each_architecture_prunes_unstructured_and_by_filters(architecture):
    model = build(architecture)
    policy = LayerPolicy()
    layers = prunable_layers(model, policy)
    masked = copy.deepcopy(model)
    set_masks(masked, global_masks({n: m.weight.detach().abs() for n, m in layers}, 0.9))
    assert prunable_sparsity(masked, model, policy) == pytest.approx(0.9, abs=1e-4)
    # zero weights cost nothing: the count falls by the pruned weights' share of each layer
    assert count_flops(masked, (3, 32, 32)) < count_flops(model, (3, 32, 32))

    if architecture == "conv2":  # its one filter group is the first conv's, kept dense by default
        with pytest.raises(StructuredError, match="no filter group"):
            prunable_groups(model, {n for n, _ in layers})
        policy = LayerPolicy(prune_first=True)
        layers = prunable_layers(model, policy)
    groups = prunable_groups(model, {n for n, _ in layers})
    small = copy.deepcopy(model)
    shrink(small, groups, choose_filters(model, groups, 0.5))
    x = torch.rand(2, 3, 32, 32)
    assert small.eval().features(x).shape == model.eval().features(x).shape  # the feature width is kept
    assert count_parameters(small)[0] < count_parameters(model)[0]
    sparsity = prunable_sparsity(small, model, policy)
    assert 0 < sparsity < 0.8  # half the filters of every group; the last conv and the dense layers stay
    if architecture == "conv2":  # by hand: 32 of conv 1's 64 filters go, and their 32 input channels of conv 2
        removed = 3 * 32 * 9 + 32 * 64 * 9
        total = 3 * 64 * 9 + 64 * 64 * 9 + 64 * 16 * 16 * 256 + 256 * 256
        assert sparsity == pytest.approx(removed / total)


def test_conv_n_needs_image_sides_its_pooling_divides():
    spec = models.ModelSpec("conv6", 10, (0.5,) * 3, (0.25,) * 3, (28, 28))
    with pytest.raises(ValueError, match="divide by 8"):
        models.build(spec)
    wide = models.build(models.ModelSpec("conv4", 10, (0.5,) * 3, (0.25,) * 3, (64, 48)))
    assert wide(torch.rand(1, 3, 64, 48)).shape == (1, 10)
