"""layers.parquet's counts, worked out by hand on tiny networks: weights, nonzero weights and
multiply-adds per layer, and models' flops as their sum."""

import polars as pl
import torch
from torch import nn

from compute.layers import layer_counts, layer_table
from compute.masks import count_flops
from compute.models import ModelSpec, build
from compute.prune.structured import prunable_groups, shrink


class Twice(nn.Module):
    """A conv, a linear layer applied twice, and one never applied."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)  # 8x8 -> 4x4
        self.fc = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3))
        return self.fc(self.fc(h))


def test_counts_of_a_masked_network_by_hand():
    net = Twice()
    with torch.no_grad():
        net.conv.weight[0] = 0.0  # one of 4 filters: 27 of 108 weights
        net.fc.weight[:, 0] = 0.0  # 4 of 16 weights
    counts = {c.layer: c for c in layer_counts(net, (3, 8, 8))}
    assert [c.layer for c in layer_counts(net, (3, 8, 8))] == ["conv", "fc", "unused"]
    assert (counts["conv"].kind, counts["conv"].params, counts["conv"].nonzero) == ("conv", 108, 81)
    assert counts["conv"].flops == 81 * 16  # nonzero weights x 4x4 output positions
    assert (counts["fc"].kind, counts["fc"].params, counts["fc"].nonzero) == ("linear", 16, 12)
    assert counts["fc"].flops == 2 * 12  # applied twice per forward
    assert (counts["unused"].nonzero, counts["unused"].flops) == (16, 0)
    assert count_flops(net, (3, 8, 8)) == 81 * 16 + 24

    table = layer_table("m", list(counts.values()), prunable={"fc"})
    assert table["prunable"].to_list() == [False, True, False]
    assert table["sparsity"].to_list() == [0.25, 0.25, 0.0]
    assert table["model_id"].to_list() == ["m"] * 3
    assert table.schema["params"] == table.schema["nonzero"] == table.schema["flops"] == pl.Int64


def test_a_structurally_pruned_model_counts_its_real_shapes():
    torch.manual_seed(0)
    model = build(ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3)).eval()
    dense = {c.layer: c for c in layer_counts(model, (3, 32, 32))}
    # small_cnn: 3->16->32->64 channels, stride 2 each: 16x16, 8x8 and 4x4 outputs
    assert [dense[n].params for n in ("body.0", "body.3", "body.6", "classifier")] == [432, 4608, 18432, 640]
    assert [dense[n].flops for n in ("body.0", "body.3", "body.6", "classifier")] == [
        432 * 256, 4608 * 64, 18432 * 16, 640,
    ]  # fmt: skip
    groups = [g for g in prunable_groups(model, {"body.3"}) if g.producer == "body.3"]
    shrink(model, groups, {"body.3": torch.tensor([2, 5, 7])})  # 3 of body.3's 32 filters stay
    small = {c.layer: c for c in layer_counts(model, (3, 32, 32))}
    assert small["body.3"].params == 3 * 16 * 9 and small["body.3"].flops == 3 * 16 * 9 * 64
    assert small["body.6"].params == 64 * 3 * 9 and small["body.6"].flops == 64 * 3 * 9 * 16  # reads 3 channels
    assert small["body.0"] == dense["body.0"] and small["classifier"] == dense["classifier"]
    assert count_flops(model, (3, 32, 32)) == sum(c.flops for c in small.values())
