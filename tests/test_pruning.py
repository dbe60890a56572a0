"""Masks stay exact through training; one-shot methods pick the masks they claim to."""

import pytest
import torch
from torch import nn

from compute import models
from compute.masks import (
    LayerPolicy,
    NoPrunableLayersError,
    count_flops,
    count_parameters,
    layer_sparsity,
    masked_step,
    prunable_layers,
    set_masks,
)
from compute.prune import get_method
from compute.prune.base import PruneContext, global_prune_masks
from compute.train import TrainConfig, make_optimizer


def small_model(seed=0):
    torch.manual_seed(seed)
    return models.build(models.ModelSpec("small_cnn", 10, (0.5,) * 3, (0.25,) * 3))


def test_masked_weights_stay_zero_under_momentum_and_weight_decay():
    model = small_model()
    layers = prunable_layers(model, LayerPolicy())
    scores = {name: m.weight.detach().abs() for name, m in layers}
    set_masks(model, global_prune_masks(scores, 0.8))
    optimizer = make_optimizer(model, TrainConfig(epochs=1, lr=0.5, momentum=0.9, weight_decay=0.1))
    # give the optimizer momentum on every weight first, as a model trained dense has
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
        optimizer.zero_grad()
        loss.backward()
        masked_step(model, optimizer)
    for _, module in layers:
        removed = ~module.weight_mask
        assert removed.sum() > 0
        assert (module.weight[removed] == 0).all()
        assert (optimizer.state[module.weight]["momentum_buffer"][removed] == 0).all()
        assert (module.weight[module.weight_mask] != 0).float().mean() > 0.99  # kept weights still train
    assert layer_sparsity(layers) == pytest.approx(0.8, abs=1e-3)


def test_masks_hold_even_when_training_diverges():
    model = small_model()
    layers = prunable_layers(model, LayerPolicy())
    set_masks(model, global_prune_masks({n: m.weight.detach().abs() for n, m in layers}, 0.5))
    optimizer = make_optimizer(model, TrainConfig(epochs=1, lr=1e6))
    for _ in range(3):
        loss = model(torch.rand(4, 3, 32, 32)).pow(2).sum() * 1e30
        optimizer.zero_grad()
        loss.backward()
        masked_step(model, optimizer)
    for _, module in layers:
        assert (module.weight[~module.weight_mask] == 0).all()


def test_global_magnitude_equals_torch_global_unstructured():
    import torch.nn.utils.prune as torch_prune

    ours, theirs = small_model(1), small_model(1)
    layers = prunable_layers(ours, LayerPolicy())
    masks = global_prune_masks({name: m.weight.detach().abs() for name, m in layers}, 0.9)
    their_layers = dict(theirs.named_modules())
    torch_prune.global_unstructured(
        [(their_layers[name], "weight") for name, _ in layers], pruning_method=torch_prune.L1Unstructured, amount=0.9
    )
    for name, _ in layers:
        assert torch.equal(masks[name], their_layers[name].weight_mask.bool()), name


def test_policy_keeps_first_and_last_layer_dense_by_default():
    model = small_model()
    names = [name for name, _ in prunable_layers(model, LayerPolicy())]
    all_names = [name for name, _ in models.prunable_modules(model)]
    assert names == all_names[1:-1]
    assert [n for n, _ in prunable_layers(model, LayerPolicy(True, True))] == all_names
    with pytest.raises(NoPrunableLayersError, match="no Conv2d or Linear"):
        prunable_layers(nn.Sequential(nn.ReLU()), LayerPolicy())


def test_pruned_checkpoint_loads_into_an_unpruned_model():
    pruned, fresh = small_model(0), small_model(5)
    layers = prunable_layers(pruned, LayerPolicy())
    set_masks(pruned, global_prune_masks({n: m.weight.detach().abs() for n, m in layers}, 0.5))
    fresh.load_state_dict(pruned.state_dict())  # strict: same keys, masks included
    x = torch.rand(4, 3, 32, 32)
    pruned.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), pruned(x))


def test_parameter_and_flop_counts_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    models.add_mask_buffers(model)
    total, nonzero = count_parameters(model)
    assert total == 3 * 4 * 9 + 256 * 2 + 2 and nonzero == total
    assert count_flops(model, (3, 8, 8)) == 3 * 4 * 9 * 64 + 256 * 2
    with torch.no_grad():
        model[0].weight[:2] = 0  # two of four filters gone
    assert count_flops(model, (3, 8, 8)) == 3 * 2 * 9 * 64 + 256 * 2
    assert count_parameters(model)[1] == total - 2 * 27


@pytest.mark.parametrize("method", ["random", "magnitude"])
def test_one_shot_methods_reach_their_sparsity_and_train(method, tiny_data):
    dense = small_model()
    ctx = PruneContext(
        dense=dense,
        init_state=dense.state_dict(),
        data=tiny_data,
        train=TrainConfig(epochs=1, batch_size=32),
        finetune=TrainConfig(epochs=1, batch_size=32, lr=0.01),
        policy=LayerPolicy(),
        seed=0,
        device=torch.device("cpu"),
        progress=False,
    )
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    results = get_method(method).run(ctx, [0.5, 0.95])
    for result, target in zip(results, [0.5, 0.95], strict=True):
        layers = prunable_layers(result.model, LayerPolicy())
        assert layer_sparsity(layers) == pytest.approx(target, abs=0.005)
        assert result.train_seconds > 0
    for key, value in dense.state_dict().items():
        assert torch.equal(value, before[key]), f"{method} changed the dense model's {key}"


def test_magnitude_removes_exactly_the_smallest_weights(tiny_data):
    dense = small_model(3)
    layers = prunable_layers(dense, LayerPolicy())
    magnitudes = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    threshold = magnitudes.sort().values[round(0.8 * magnitudes.numel()) - 1]
    masks = global_prune_masks({n: m.weight.detach().abs() for n, m in layers}, 0.8)
    for name, module in layers:
        assert (module.weight.detach().abs()[~masks[name]] <= threshold).all()
        assert (module.weight.detach().abs()[masks[name]] >= threshold).all()


def test_sparsity_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        global_prune_masks({"w": torch.ones(4)}, 1.0)
    with pytest.raises(ValueError, match="unknown pruning method 'nope'"):
        get_method("nope")
