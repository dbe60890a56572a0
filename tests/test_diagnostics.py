"""Model diagnostics against hand-set networks and plain torch: dead ReLU units, and the
distances of the weights to the initialisation and to the dense parent."""

import math

import pytest
import torch
from torch import nn

from compute.diagnostics import DeadUnits, in_parent_shapes, layer_weights, state_weights, weight_distance
from compute.models import ModelSpec, build
from compute.prune.structured import prunable_groups, shrink


class SharedReLU(nn.Module):
    """h = relu(fc1 x), g = relu(fc2 h): one ReLU module applied twice per forward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.relu = nn.Linear(2, 3), nn.Linear(3, 2), nn.ReLU()
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, -1.0, 0.0]))  # h1 = -1: never active
            self.fc2.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
            self.fc2.bias.copy_(torch.tensor([0.0, -5.0]))  # g1 = -5: never active

    def forward(self, x):
        return self.relu(self.fc2(self.relu(self.fc1(x))))


def test_dead_units_of_a_hand_set_network_pool_every_application_over_every_batch():
    net = SharedReLU()
    images = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    with DeadUnits(net) as dead, torch.no_grad():
        net(images[:2])  # h2 stays 0 in this batch, active only in the next
        net(images[2:])
    # units: h0 (image 0), h1 (never), h2 (image 2), g0 (images 0 and 2), g1 (never): 2 of 5 dead
    assert dead.fraction(forwards=2) == pytest.approx(2 / 5)
    # at zero per image: image 0 h1 h2 g1, image 1 all five, image 2 h0 h1 g1: 11 of 15 outputs
    assert dead.inactive_share() == pytest.approx(11 / 15)
    with DeadUnits(net) as first_only, torch.no_grad():
        net(images[:1])
    assert first_only.fraction(forwards=1) == pytest.approx(3 / 5)  # h2 too
    assert first_only.inactive_share() == pytest.approx(3 / 5)  # one image: the same units
    with pytest.raises(ValueError, match="do not split"):
        dead.fraction(forwards=3)
    net(images)  # the hooks are gone once the block ends
    assert len(dead.active) == 4


def test_a_convolutional_unit_is_a_channel_at_a_position():
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(inplace=True))
    image = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # one bright pixel of four
    with DeadUnits(net) as dead, torch.no_grad():
        net(image)
    assert dead.fraction(forwards=1) == pytest.approx(7 / 8)  # only channel 0 at the bright pixel fires
    assert dead.inactive_share() == pytest.approx(7 / 8)
    assert DeadUnits(nn.Linear(2, 2)).fraction(forwards=1) is None  # no ReLU, no value
    assert DeadUnits(nn.Linear(2, 2)).inactive_share() is None


def test_distances_match_plain_torch_on_two_state_dicts():
    spec = ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3)
    torch.manual_seed(0)
    init = build(spec).state_dict()
    torch.manual_seed(1)
    model = build(spec)
    with torch.no_grad():
        model.body[3].weight[:, :4] = 0.0  # removed weights count as 0
    trained = model.state_dict()
    # every conv and linear weight: the tensors beside a weight_mask buffer
    keys = [k.removesuffix("_mask") for k in trained if k.endswith("weight_mask")]
    expected = torch.cat([(trained[k].double() - init[k].double()).flatten() for k in keys]).norm().item()
    assert weight_distance(layer_weights(model), state_weights(init, model)) == pytest.approx(expected, rel=1e-12)
    assert weight_distance(layer_weights(model), layer_weights(model)) == 0.0
    assert weight_distance(layer_weights(model), None) is None
    other = build(ModelSpec("small_cnn", 7, (0.0,) * 3, (1.0,) * 3))  # a 7-class head: shapes differ
    assert weight_distance(layer_weights(model), layer_weights(other)) is None


def test_removed_filters_are_scattered_back_into_the_dense_shapes():
    torch.manual_seed(0)
    dense = build(ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3)).eval()
    model = build(ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3))
    model.load_state_dict(dense.state_dict())
    kept = [1, 4, 30]
    groups = [g for g in prunable_groups(model, {"body.3"}) if g.producer == "body.3"]
    shrink(model, groups, {"body.3": torch.tensor(kept)})
    placed = in_parent_shapes(model, dense, {"body.3": kept})
    assert placed["body.3"].shape == dense.body[3].weight.shape
    assert torch.equal(placed["body.3"][kept], dense.body[3].weight[kept])
    assert torch.equal(placed["body.6"][:, kept], dense.body[6].weight[:, kept])
    removed = [i for i in range(32) if i not in kept]
    assert not placed["body.3"][removed].any() and not placed["body.6"][:, removed].any()
    # no training after the cut: the distance to the parent is the norm of the removed weights
    w3, w6 = dense.body[3].weight.detach().double(), dense.body[6].weight.detach().double()
    gone = w3[removed].square().sum().item() + w6[:, removed].square().sum().item()
    assert weight_distance(placed, layer_weights(dense)) == pytest.approx(math.sqrt(gone), rel=1e-12)
    assert weight_distance(layer_weights(model), layer_weights(dense)) is None  # without the indices: no value
