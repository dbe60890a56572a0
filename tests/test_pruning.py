"""Masks, allocation and every pruning method against independent computations."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from compute import models, schema
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
from compute.prune import METHODS, PruneContext, PruneSettings, get_method
from compute.prune.allocation import erk_densities, global_masks, keep_counts, select_masks
from compute.prune.at_init import class_balanced_halves, grasp_saliency, snip_saliency, synflow_saliency
from compute.prune.base import EpochBudget, method_seed
from compute.prune.dynamic import MaskUpdater, drop_fraction
from compute.prune.iterative import round_plan
from compute.prune.structured import choose_filters, fraction_for, mask_filters, prunable_groups, shrink
from compute.prune.supermask import BinaryTopK, TopK, effective_weight, mask_drift, unrelated_drift
from compute.sweep import prunable_sparsity
from compute.train import TrainConfig, TrainHooks, make_optimizer, train


def small_model(seed=0, architecture="small_cnn"):
    torch.manual_seed(seed)
    return models.build(models.ModelSpec(architecture, 10, (0.5,) * 3, (0.25,) * 3))


def magnitude_scores(layers):
    return {name: module.weight.detach().abs() for name, module in layers}


def make_ctx(data, dense=None, **settings) -> PruneContext:
    """A context around a briefly trained dense model, with one-epoch schedules."""
    dense = dense or small_model()
    init_state = copy.deepcopy(dense.state_dict())
    schedule = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    result = train(dense, data, schedule, seed=0, device=torch.device("cpu"), progress=False)
    assert result.steps > 0
    return PruneContext(
        dense=dense,
        init_state=init_state,
        rewind_state=copy.deepcopy(init_state),
        data=data,
        dense_schedule=schedule,
        rewind_step=0,
        finetune=schedule,
        rounds=schedule,
        sparse=schedule,
        supermask=schedule,
        settings=PruneSettings(**{"synflow_rounds": 5, "score_batch": 64, "dst_update_every": 2, **settings}),
        policy=LayerPolicy(),
        seed=0,
        device=torch.device("cpu"),
        progress=False,
    )


# --- masks ---------------------------------------------------------------------------


def test_masked_weights_stay_zero_under_momentum_and_weight_decay():
    model = small_model()
    layers = prunable_layers(model, LayerPolicy())
    set_masks(model, global_masks(magnitude_scores(layers), 0.8))
    optimizer = make_optimizer(model, TrainConfig(epochs=1, lr=0.5, momentum=0.9, weight_decay=0.1))
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(torch.rand(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
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
    set_masks(model, global_masks(magnitude_scores(layers), 0.5))
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
    masks = select_masks(magnitude_scores(layers), 0.9, "global")
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
    set_masks(pruned, global_masks(magnitude_scores(layers), 0.5))
    fresh.load_state_dict(pruned.state_dict())  # strict: same keys, masks included
    x = torch.rand(4, 3, 32, 32)
    pruned.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), pruned(x))
    assert not any("orig" in key for key in pruned.state_dict())  # no weight_orig re-parametrisation
    copy.deepcopy(pruned)


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


# --- allocation ------------------------------------------------------------------------


def test_erk_densities_follow_their_definition():
    shapes = {"a": (16, 3, 3, 3), "b": (32, 16, 3, 3), "c": (64, 32, 3, 3), "d": (10, 64)}
    densities = erk_densities(shapes, 0.2)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    kept = sum(densities[n] * sizes[n] for n in shapes)
    assert kept == pytest.approx(0.2 * sum(sizes.values()))
    sparse = [n for n in shapes if densities[n] < 1.0]
    ratios = {n: densities[n] / (sum(shapes[n]) / sizes[n]) for n in sparse}
    assert max(ratios.values()) == pytest.approx(min(ratios.values()))  # one epsilon for every sparse layer
    assert all(0 < d <= 1 for d in densities.values())
    assert densities["a"] > densities["c"]  # small layers stay denser
    # a density the small layers cannot reach leaves them dense and the rest shares the budget
    capped = erk_densities(shapes, 0.9)
    assert capped["a"] == 1.0
    assert sum(capped[n] * sizes[n] for n in shapes) == pytest.approx(0.9 * sum(sizes.values()))


@pytest.mark.parametrize("allocation", ["global", "uniform", "erk"])
def test_allocations_reach_the_target_exactly(allocation):
    model = small_model()
    layers = prunable_layers(model, LayerPolicy())
    masks = select_masks(magnitude_scores(layers), 0.9, allocation)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs((1 - kept / total) - 0.9) < 0.005
    if allocation == "uniform":
        for name, mask in masks.items():
            assert abs(1 - mask.float().mean().item() - 0.9) < 0.005, name
    counts = keep_counts({n: tuple(m.weight.shape) for n, m in layers}, 0.9, "uniform")
    assert all(c >= 1 for c in counts.values())


# --- every method ------------------------------------------------------------------------


def test_every_registered_method_has_its_design_family():
    assert set(METHODS) == set(schema.METHOD_FAMILIES) - {"dense"}
    for name, cls in METHODS.items():
        assert cls.family == schema.METHOD_FAMILIES[name], name
        assert cls.description


@pytest.fixture(scope="module")
def method_ctx(tiny_data):
    return make_ctx(tiny_data)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_reaches_its_sparsity_and_leaves_the_dense_model_alone(name, method_ctx):
    before = {k: v.clone() for k, v in method_ctx.dense.state_dict().items()}
    targets = [0.5, 0.9]
    results = get_method(name).run(method_ctx, targets)
    assert [r.target_sparsity for r in results] == targets
    for result in results:
        measured = prunable_sparsity(result.model, method_ctx.dense, method_ctx.policy)
        if name == "l1_filter":
            assert abs(measured - result.target_sparsity) < 0.02  # whole filters: coarser steps
        else:
            assert abs(measured - result.target_sparsity) < 0.005
        for _, module in prunable_layers(result.model, method_ctx.policy):
            assert (module.weight[~module.weight_mask] == 0).all()
        assert result.train_seconds > 0
        x = method_ctx.data.test_images[:4].float() / 255
        assert torch.isfinite(result.model.eval()(x)).all()
    for key, value in method_ctx.dense.state_dict().items():
        assert torch.equal(value, before[key]), f"{name} changed the dense model's {key}"


RANDOM_METHODS = ["random", "snip", "grasp", "rigl", "set", "edge_popup", "biprop"]


@pytest.mark.parametrize("name", RANDOM_METHODS)
def test_a_method_does_not_depend_on_what_ran_before_it(name, method_ctx):
    """Every random draw comes from (seed, method, sparsity): not from the global torch
    state, which other methods (or the order of a sweep) leave behind."""
    torch.manual_seed(1)
    alone = get_method(name).run(method_ctx, [0.7])[0].model.state_dict()
    torch.manual_seed(2)
    torch.rand(1000)
    get_method("edge_popup" if name != "edge_popup" else "biprop").run(method_ctx, [0.5])
    after = get_method(name).run(method_ctx, [0.7])[0].model.state_dict()
    for key, value in alone.items():
        assert torch.equal(value, after[key]), f"{name}: {key} depends on the global random state"


def test_method_seeds_come_from_seed_method_and_sparsity():
    seeds = {method_seed(s, m, p) for s in (0, 1) for m in ("random", "snip") for p in (0.5, 0.9)}
    assert len(seeds) == 8
    assert method_seed(0, "random", 0.9) == method_seed(0, "random", 0.9)


def test_training_budgets_are_recorded_per_model(method_ctx):
    dense_epochs = method_ctx.dense_schedule.epochs
    assert get_method("magnitude").run(method_ctx, [0.5])[0].train_epochs == dense_epochs + 1  # + fine-tuning
    assert get_method("snip").run(method_ctx, [0.5])[0].train_epochs == method_ctx.sparse.epochs  # from init
    imp = get_method("imp").run(method_ctx, [0.5])[0]
    assert imp.train_epochs == dense_epochs + imp.notes["round"] * method_ctx.rounds.epochs


@pytest.mark.parametrize("name", ["imp", "lrr"])
def test_rewind_schedule_retrains_each_round_from_the_rewind_step(name, tiny_data):
    """open_lth: each round trains steps k..T of the dense schedule; learning-rate rewinding
    replays all T steps."""
    ctx = make_ctx(tiny_data, round_schedule="rewind")
    dense = dataclasses.replace(ctx.dense_schedule, epochs=3)  # 6 steps per epoch of 200 images
    ctx = dataclasses.replace(ctx, dense_schedule=dense, rewind_step=4)
    result = get_method(name).run(ctx, [0.36])[0]  # two rounds of 20 %
    assert result.notes["round"] == 2 and result.notes["round_schedule"] == "rewind"
    per_round = (18 - 4) / 6 if name == "imp" else 3.0
    assert result.train_epochs == pytest.approx(3 + 2 * per_round)


def budget_of(ctx: PruneContext) -> EpochBudget:
    """The EpochBudget a sweep with this context's schedules would plan from."""
    return EpochBudget(
        dense=ctx.dense_schedule.epochs, finetune=ctx.finetune.epochs, rounds=ctx.rounds.epochs,
        sparse=ctx.sparse.epochs, supermask=ctx.supermask.epochs, round_schedule=ctx.settings.round_schedule,
        imp_rate=ctx.settings.imp_rate, steps_per_epoch=len(ctx.data.train_labels) // ctx.dense_schedule.batch_size,
        rewind_step=ctx.rewind_step, prunable_weights=sum(m.weight.numel() for _, m in ctx.layers(ctx.dense)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def distinct_ctx(method_ctx):
    """Every schedule a different length, so that a plan reading the wrong one shows."""
    epochs = {"finetune": 2, "rounds": 3, "sparse": 4, "supermask": 5}
    return dataclasses.replace(
        method_ctx, **{k: dataclasses.replace(getattr(method_ctx, k), epochs=e) for k, e in epochs.items()}
    )


PLANNED = [(name, "restart") for name in sorted(METHODS)] + [("imp", "rewind"), ("lrr", "rewind")]


@pytest.mark.parametrize("name, round_schedule", PLANNED)
def test_a_methods_planned_epochs_are_what_it_trains(name, round_schedule, distinct_ctx, monkeypatch):
    """compute --dry-run's epochs against training counted step by step: each model's recorded
    train_epochs, and every epoch the job trains (imp's rounds once, however many targets)."""
    ctx = distinct_ctx
    if round_schedule == "rewind":
        settings = dataclasses.replace(ctx.settings, round_schedule="rewind")
        ctx = dataclasses.replace(ctx, settings=settings, rewind_step=4)
    trained = []

    def counted(*args, **kwargs):
        result = train(*args, **kwargs)
        trained.append(result.steps / (len(ctx.data.train_labels) // ctx.dense_schedule.batch_size))
        return result

    monkeypatch.setattr("compute.prune.base.train", counted)
    targets = [0.5, 0.8]
    results = get_method(name).run(ctx, targets)
    planned = get_method(name).planned_epochs(budget_of(ctx), targets)
    assert planned.per_model == pytest.approx({r.target_sparsity: r.train_epochs for r in results})
    assert planned.trained == pytest.approx(sum(trained))
    assert sum(trained) > 0


def test_training_can_resume_the_schedule_at_a_step(tiny_data):
    model = small_model()
    schedule = TrainConfig(epochs=2, batch_size=50, lr=0.1, start_step=3)  # 4 steps per epoch
    seen = []

    def observe(step, total):  # the schedule's step (which sets the learning rate) and its length
        seen.append((step, total))

    result = train(
        model, tiny_data, schedule, seed=0, device=torch.device("cpu"), progress=False,
        hooks=TrainHooks(on_backward=observe),
    )  # fmt: skip
    assert seen == [(step, 8) for step in range(3, 8)]
    assert result.steps == 5 and result.epochs == pytest.approx(5 / 4)


def test_magnitude_removes_exactly_the_smallest_weights():
    dense = small_model(3)
    layers = prunable_layers(dense, LayerPolicy())
    magnitudes = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    threshold = magnitudes.sort().values[round(0.8 * magnitudes.numel()) - 1]
    masks = global_masks(magnitude_scores(layers), 0.8)
    for name, module in layers:
        assert (module.weight.detach().abs()[~masks[name]] <= threshold).all()
        assert (module.weight.detach().abs()[masks[name]] >= threshold).all()


def test_allocation_setting_is_honoured_where_the_method_allows(tiny_data):
    ctx = make_ctx(tiny_data, allocation="uniform")
    model = get_method("magnitude").run(ctx, [0.8])[0].model
    for _, module in prunable_layers(model, ctx.policy):
        assert abs((module.weight == 0).float().mean().item() - 0.8) < 0.005
    assert get_method("rigl").allocation(PruneSettings(allocation="global")) == "erk"  # not allowed: own default
    assert get_method("magnitude").allocation(PruneSettings()) == "global"


# --- iterative ---------------------------------------------------------------------------


def test_round_plan_stops_exactly_at_every_target():
    # by hand, 100 weights, 20 % of the remainder per round (rounded), stopping at 50 and 10 kept:
    # 100 80 64 51 | 41 would pass 50: 50 | 40 32 26 21 17 14 11 | 9 would pass 10: 10
    plan, reached = round_plan(100, 0.2, [0.9, 0.5])
    kept = [100, 80, 64, 51, 50, 40, 32, 26, 21, 17, 14, 11, 10]
    assert plan == pytest.approx([1 - k / 100 for k in kept])
    assert reached == {0.5: 4, 0.9: 12}
    plan, reached = round_plan(100_000, 0.2, [0.5, 0.8, 0.9, 0.95])
    for target, index in reached.items():
        assert plan[index] == target  # exact, not the nearest geometric round
    assert plan[:4] == pytest.approx([1 - 0.8**n for n in range(4)], abs=1e-5)  # geometric in between
    assert round_plan(100, 0.2, [0.0, 0.2])[1] == {0.0: 0, 0.2: 1}
    with pytest.raises(ValueError, match="imp_rate"):
        round_plan(100, 1.5, [0.5])


@pytest.mark.parametrize("name", ["imp", "lrr"])
def test_imp_rewinds_to_the_recorded_weights_and_lrr_does_not(name, tiny_data):
    ctx = make_ctx(tiny_data)
    # a recognisable rewind point, and no retraining, so the rewound weights are visible
    rewind = {k: (v + 1.0 if k.endswith(".weight") else v) for k, v in ctx.init_state.items()}
    ctx = dataclasses.replace(ctx, rewind_state=rewind, rounds=dataclasses.replace(ctx.rounds, epochs=0))
    result = get_method(name).run(ctx, [0.2])[0]
    assert result.notes["round"] == 1
    dense_layers = dict(prunable_layers(ctx.dense, ctx.policy))
    expected_masks = global_masks(magnitude_scores(dense_layers.items()), 1 - 0.8)
    for layer, module in prunable_layers(result.model, ctx.policy):
        kept = module.weight_mask
        assert torch.equal(kept, expected_masks[layer])  # round 1 ranks the trained weights
        source = rewind[f"{layer}.weight"] if name == "imp" else dense_layers[layer].weight.detach()
        assert torch.equal(module.weight[kept], source[kept])
        assert (module.weight[~kept] == 0).all()


# --- at initialisation: saliencies by hand --------------------------------------------------


def tiny_net():
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5, -1.0, 0.2], [0.3, 0.8, -0.6], [-0.7, 0.1, 0.4], [0.9, 0.2, 0.1]]))
        net[2].weight.copy_(torch.tensor([[1.0, -0.5, 0.3, 0.7], [-0.2, 0.6, -0.9, 0.4]]))
    return net


X = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.3, 0.8], [2.0, 0.1, 0.3]])
Y = torch.tensor([0, 1, 1])


def hand_gradients(w1: np.ndarray, w2: np.ndarray, x: np.ndarray, y: np.ndarray, temperature: float = 1.0):
    """Mean cross-entropy gradients of the two-layer ReLU net, written out by hand."""
    z1 = x @ w1.T
    a = np.maximum(z1, 0)
    z2 = a @ w2.T / temperature
    p = np.exp(z2 - z2.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz2 = (p - np.eye(2)[y]) / len(y) / temperature
    dw2 = dz2.T @ a
    dz1 = (dz2 @ w2) * (z1 > 0)
    dw1 = dz1.T @ x
    return dw1, dw2


def test_snip_saliency_matches_a_hand_computation():
    net = tiny_net()
    w1, w2 = net[0].weight.detach().numpy(), net[2].weight.detach().numpy()
    dw1, dw2 = hand_gradients(w1, w2, X.numpy(), Y.numpy())
    got = snip_saliency(net, ["0", "2"], X, Y)
    np.testing.assert_allclose(got["0"].numpy(), np.abs(w1 * dw1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["2"].numpy(), np.abs(w2 * dw2), rtol=1e-5, atol=1e-7)


def explicit_grasp(net, batches, temperature):
    """-theta * (H g) of the two-layer net from its explicit Hessian over all 20 weights, with
    g and H summed over the batches (the authors' two half-batches)."""
    shapes = [net[0].weight.shape, net[2].weight.shape]
    theta = torch.cat([net[0].weight.detach().flatten(), net[2].weight.detach().flatten()]).double()

    def loss(flat, x, y):
        w1 = flat[:12].reshape(shapes[0])
        w2 = flat[12:].reshape(shapes[1])
        return nn.functional.cross_entropy(torch.relu(x.double() @ w1.T) @ w2.T / temperature, y)

    hessian = sum(torch.autograd.functional.hessian(lambda t, x=x, y=y: loss(t, x, y), theta) for x, y in batches)
    gradient = sum(torch.autograd.functional.jacobian(lambda t, x=x, y=y: loss(t, x, y), theta) for x, y in batches)
    return theta, hessian, gradient, -theta * (hessian @ gradient)


def test_grasp_saliency_matches_the_explicit_hessian():
    net = tiny_net()
    temperature = 2.0
    theta, hessian, gradient, expected = explicit_grasp(net, [(X, Y)], temperature)
    got = grasp_saliency(net, ["0", "2"], [(X, Y)], temperature)
    np.testing.assert_allclose(
        torch.cat([got["0"].flatten(), got["2"].flatten()]).numpy(), expected.numpy(), rtol=1e-4, atol=1e-9
    )
    # the gradient part agrees with the hand formulas too
    dw1, _ = hand_gradients(*(m.weight.detach().numpy() for m in (net[0], net[2])), X.numpy(), Y.numpy(), temperature)
    np.testing.assert_allclose(gradient[:12].reshape(4, 3).numpy(), dw1, rtol=1e-5, atol=1e-8)


def test_grasp_uses_the_full_hessian_when_a_layer_is_not_pruned():
    # only the second layer is scored (the first is kept dense), on two half-batches: its
    # scores still come from (H g) over both layers, not from its own diagonal block
    net = tiny_net()
    temperature = 2.0
    batches = [(X[:2], Y[:2]), (X[2:], Y[2:])]
    theta, hessian, gradient, expected = explicit_grasp(net, batches, temperature)
    got = grasp_saliency(net, ["2"], batches, temperature)
    assert list(got) == ["2"]
    np.testing.assert_allclose(got["2"].flatten().numpy(), expected[12:].numpy(), rtol=1e-4, atol=1e-9)
    truncated = -theta[12:] * (hessian[12:, 12:] @ gradient[12:])  # H_PP g_P: the old, wrong product
    assert not np.allclose(truncated.numpy(), expected[12:].numpy(), rtol=1e-2, atol=1e-6)


def test_grasp_scores_a_copy_with_a_redrawn_classifier(method_ctx):
    # as the authors' reinit=True: the classifier's own values do not enter the scores
    other = copy.deepcopy(method_ctx)
    other.init_state = {k: (v * 3.0 if k == "classifier.weight" else v) for k, v in method_ctx.init_state.items()}
    masks = [get_method("grasp").run(ctx, [0.7])[0].model for ctx in (method_ctx, other)]
    for (name, a), (_, b) in zip(models.prunable_modules(masks[0]), models.prunable_modules(masks[1]), strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask), name


def test_grasp_scores_a_class_balanced_batch_in_two_halves():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2, 2, 0, 1])
    halves = class_balanced_halves(labels, per_class=2, generator=torch.Generator().manual_seed(3))
    chosen = torch.cat(halves)
    assert [len(h) for h in halves] == [3, 3] and len(set(chosen.tolist())) == 6
    assert labels[chosen].tolist() == [0, 0, 1, 1, 2, 2]  # class by class, as GraSP_fetch_data stacks them
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3)).tolist()
    for c in range(3):  # the first two of each class in the shuffled order
        assert chosen[labels[chosen] == c].tolist() == [i for i in order if labels[i] == c][:2]


def test_snip_scores_batch_norm_in_inference_mode_by_default():
    torch.manual_seed(0)
    conv, norm, head = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Linear(4, 2)
    with torch.no_grad():
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.3, 0.3)
    net = nn.Sequential(conv, norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)

    class Affine(nn.Module):  # batch norm in inference mode, written out
        def forward(self, x):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            return (x - norm.running_mean[:, None, None]) * scale[:, None, None] + norm.bias[:, None, None]

    fixed = nn.Sequential(conv, Affine(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    x, y = torch.rand(8, 3, 6, 6), torch.randint(0, 2, (8,))
    expected = snip_saliency(fixed, ["0", "5"], x, y, mode="train")
    got = snip_saliency(net, ["0", "5"], x, y)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])
    batch_stats = snip_saliency(net, ["0", "5"], x, y, mode="train")
    assert not torch.allclose(batch_stats["0"], expected["0"])
    assert PruneSettings().scoring_mode("snip") == "eval" and PruneSettings().scoring_mode("synflow") == "eval"
    assert PruneSettings().scoring_mode("grasp") == "train"
    assert PruneSettings(score_mode="eval").scoring_mode("grasp") == "eval"


def test_synflow_saliency_matches_the_closed_form():
    net = tiny_net()
    w1, w2 = np.abs(net[0].weight.detach().numpy()), np.abs(net[2].weight.detach().numpy())
    # R = 1' |W2| |W1| 1 (all positive, so the ReLU passes everything):
    # dR/d|W1|_ij = sum_k |W2|_ki and dR/d|W2|_ki = sum_j |W1|_ij
    expected_1 = w1 * w2.sum(axis=0)[:, None]
    expected_2 = w2 * w1.sum(axis=1)[None, :]
    got = synflow_saliency(net, ["0", "2"], (3,))
    np.testing.assert_allclose(got["0"].numpy(), expected_1, rtol=1e-6)
    np.testing.assert_allclose(got["2"].numpy(), expected_2, rtol=1e-6)
    assert torch.equal(net[0].weight, tiny_net()[0].weight)  # the model itself is untouched


# --- dynamic sparse training ---------------------------------------------------------------


def test_drop_fraction_is_cosine_annealed_and_stops():
    settings = PruneSettings(dst_update_every=10, dst_drop_fraction=0.3, dst_end=0.5)
    assert drop_fraction(0, 100, settings) == 0.0  # no update before the first step
    assert drop_fraction(5, 100, settings) == 0.0  # not an update step
    assert drop_fraction(10, 100, settings) == pytest.approx(0.15 * (1 + math.cos(math.pi * 10 / 50)))
    assert drop_fraction(50, 100, settings) == 0.0  # past dst_end


@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_dynamic_updates_keep_each_layer_count_while_the_mask_moves(grow):
    model = small_model()
    layers = prunable_layers(model, LayerPolicy())
    set_masks(model, select_masks(magnitude_scores(layers), 0.9, "erk"))
    counts = {name: int(m.weight_mask.sum()) for name, m in layers}
    start = {name: m.weight_mask.clone() for name, m in layers}
    updater = MaskUpdater(layers, PruneSettings(dst_update_every=1, dst_end=0.9), grow, seed=0)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 6):
        for _, module in layers:
            module.weight.grad = torch.randn(module.weight.shape, generator=gen)
        before = {name: m.weight_mask.clone() for name, m in layers}
        updater(step, 10)
        for name, module in layers:
            assert int(module.weight_mask.sum()) == counts[name]
            grown = module.weight_mask & ~before[name]
            assert (module.weight[grown] == 0).all()
            if grow == "gradient" and grown.any():
                # regrown connections have the largest |gradient| among the connections that were free
                free = ~module.weight_mask | grown
                threshold = module.weight.grad.abs()[grown].min()
                assert (module.weight.grad.abs()[free & ~grown] <= threshold).all()
    assert updater.updates == 5 and updater.moved > 0
    assert any(not torch.equal(start[name], m.weight_mask) for name, m in layers)


# --- structured ----------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["small_cnn", "resnet20"])
def test_l1_filter_smaller_model_gives_the_masked_model_outputs(architecture):
    model = small_model(2, architecture)
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    names = [n for n, _ in prunable_layers(model, LayerPolicy())]
    groups = prunable_groups(model, set(names))
    keep = choose_filters(model, groups, 0.5)
    masked, small = copy.deepcopy(model), copy.deepcopy(model)
    mask_filters(masked, groups, keep)
    shrink(small, groups, keep)
    x = torch.rand(6, 3, 32, 32)
    masked.eval(), small.eval()
    torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=1e-4)
    assert count_parameters(small)[0] < count_parameters(model)[0]
    for g in groups:
        assert small.get_submodule(g.producer).out_channels == len(keep[g.producer])
    # the kept filters are the ones with the largest L1 norms
    g = groups[0]
    norms = model.get_submodule(g.producer).weight.abs().sum(dim=(1, 2, 3))
    assert norms[keep[g.producer]].min() >= norms[~torch.isin(torch.arange(len(norms)), keep[g.producer])].max()


def test_l1_filter_never_removes_a_layers_last_channel_and_matches_the_target():
    model = small_model()
    names = [n for n, _ in prunable_layers(model, LayerPolicy())]
    groups = prunable_groups(model, set(names))
    keep = choose_filters(model, groups, 0.9999)
    assert all(len(idx) == 1 for idx in keep.values())
    fraction = fraction_for(model, groups, names, 0.8)
    small = copy.deepcopy(model)
    shrink(small, groups, choose_filters(model, groups, fraction))
    assert abs(prunable_sparsity(small, model, LayerPolicy()) - 0.8) < 0.02


def test_l1_filter_keeps_the_feature_vector_at_its_dense_width(method_ctx):
    for result in get_method("l1_filter").run(method_ctx, [0.5, 0.9]):
        assert result.model.classifier.weight.shape == method_ctx.dense.classifier.weight.shape
        x = method_ctx.data.test_images[:2].float() / 255
        assert result.model.features(x).shape == method_ctx.dense.features(x).shape
        assert abs(prunable_sparsity(result.model, method_ctx.dense, method_ctx.policy) - result.target_sparsity) < 0.02


def test_l1_filter_records_the_dense_filters_it_kept(method_ctx):
    """The kept_filters note places the smaller model's filters in the dense shapes (dist_init, dist_dense)."""
    (result,) = get_method("l1_filter").run(method_ctx, [0.9])
    kept = result.notes["kept_filters"]
    for producer, indices in kept.items():
        norms = method_ctx.dense.get_submodule(producer).weight.detach().abs().sum(dim=(1, 2, 3))
        largest = sorted(torch.argsort(norms, descending=True)[: len(indices)].tolist())
        assert indices == largest  # the filters of largest L1 norm, in the dense order
        assert result.model.get_submodule(producer).out_channels == len(indices) == result.notes["channels"][producer]
    # small_cnn has one conv that can lose filters (the one feeding the classifier keeps its width):
    # the note says the model is that bottleneck, with the filters it kept of the dense width
    ((producer, indices),) = kept.items()
    width = method_ctx.dense.get_submodule(producer).out_channels
    assert f"only {producer} can lose filters" in result.notes["bottleneck"]
    assert f"keeps {len(indices)} of its {width}" in result.notes["bottleneck"] and len(indices) < width


def test_l1_filter_needs_filter_groups():
    with pytest.raises(ValueError, match="no filter group"):
        prunable_groups(small_model(), set())


# --- supermasks ----------------------------------------------------------------------------


SCORES = [[0.1, -0.9, 0.5], [0.3, 0.05, -0.2]]
WEIGHT = torch.tensor([[0.4, -0.2, 0.6], [-0.8, 0.1, 0.3]])
UPSTREAM = torch.arange(6.0).reshape(2, 3)  # dL/dw_eff of the loss sum(UPSTREAM * w_eff)


def test_topk_straight_through():
    scores = torch.tensor(SCORES, requires_grad=True)
    mask = TopK.apply(scores.abs(), 3)
    assert mask.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    (mask * UPSTREAM).sum().backward()
    torch.testing.assert_close(scores.grad.abs(), UPSTREAM)  # straight through |.|


@pytest.mark.parametrize("binarize", [False, True])
def test_one_score_step_by_hand(binarize):
    """edge-popup: w_eff = w * m; biprop (GetQuantnet_binary): w_eff = sign(w) * alpha * m with
    scores receiving g * |w|. Either way dL/ds = sign(s) * dL/dw_eff * w, and alpha is the
    mean |w| of the kept weights, taken as a constant."""
    scores = torch.tensor(SCORES, requires_grad=True)
    w_eff = effective_weight(WEIGHT, scores, 3, binarize)
    alpha = (0.2 + 0.6 + 0.8) / 3
    expected_w = [[0.0, -alpha, alpha], [-alpha, 0.0, 0.0]] if binarize else [[0.0, -0.2, 0.6], [-0.8, 0.0, 0.0]]
    torch.testing.assert_close(w_eff, torch.tensor(expected_w))
    (UPSTREAM * w_eff).sum().backward()
    # sign(s) * c * w, element by element: [[+0*.4, -1*-.2, +2*.6], [+3*-.8, +4*.1, -5*.3]]
    grad = torch.tensor([[0.0, 0.2, 1.2], [-2.4, 0.4, -1.5]])
    torch.testing.assert_close(scores.grad, grad)
    optimizer = torch.optim.SGD([scores], lr=0.5)
    optimizer.step()
    torch.testing.assert_close(scores.detach(), torch.tensor(SCORES) - 0.5 * grad)
    if binarize:  # alpha divides by the kept count without a gradient through it
        k_scores = torch.tensor(SCORES).abs().requires_grad_(True)
        BinaryTopK.apply(k_scores, WEIGHT, 3).sum().backward()
        torch.testing.assert_close(k_scores.grad, WEIGHT.abs())


def test_mask_drift_counts_kept_weights_outside_the_initial_top_k():
    initial = {"a": torch.tensor([True, True, False, False]), "b": torch.tensor([True, False])}
    final = {"a": torch.tensor([True, False, True, False]), "b": torch.tensor([False, True])}
    assert mask_drift(initial, final) == pytest.approx(2 / 3)  # a's third and b's second are new
    assert mask_drift(initial, initial) == 0.0
    # layers keeping 10 of 40 and 30 of 40: (10 * 0.75 + 30 * 0.25) / 40
    assert unrelated_drift({"a": 10, "b": 30}, {"a": (4, 10), "b": (40,)}) == pytest.approx(0.375)


@pytest.mark.parametrize("name", ["edge_popup", "biprop"])
def test_supermask_weights_are_frozen_random_values_under_the_mask(name, method_ctx):
    result = get_method(name).run(method_ctx, [0.7])[0]
    for _, module in prunable_layers(result.model, method_ctx.policy):
        kept = module.weight[module.weight_mask].abs()
        # signed-constant (edge_popup) and binarised (biprop) weights share one magnitude per layer
        assert torch.allclose(kept, kept[0].expand_as(kept), rtol=1e-5)
        assert abs((~module.weight_mask).float().mean().item() - 0.7) < 0.005


@pytest.mark.parametrize("name", ["edge_popup", "biprop"])
def test_supermask_training_changes_only_which_weights_are_kept(name, method_ctx):
    """As freeze_model_weights in the authors' code: after score training every weight is
    still its random initial value (the dense first conv and classifier included), batch
    norm is non-affine and biases are zero; only the masks moved."""
    untrained_ctx = dataclasses.replace(method_ctx, supermask=dataclasses.replace(method_ctx.supermask, epochs=0))
    untrained = get_method(name).run(untrained_ctx, [0.7])[0].model
    trained = get_method(name).run(method_ctx, [0.7])[0]
    model = trained.model
    masked = {n for n, _ in prunable_layers(model, method_ctx.policy)}
    init = dict(untrained.named_modules())
    for layer, module in models.prunable_modules(model):
        if layer not in masked:  # kept dense by the layer policy: frozen at its random draw
            assert torch.equal(module.weight, init[layer].weight), layer
        else:  # kept weights are the frozen draws (biprop: their signs) wherever both masks keep them
            both = module.weight_mask & init[layer].weight_mask
            assert both.any()
            if name == "edge_popup":
                assert torch.equal(module.weight[both], init[layer].weight[both])
            else:
                assert torch.equal(torch.sign(module.weight[both]), torch.sign(init[layer].weight[both]))
        if module.bias is not None:
            assert (module.bias == 0).all()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert (module.weight == 1).all() and (module.bias == 0).all()
    assert 0.0 < trained.notes["mask_drift"] <= 1.0
    assert trained.train_epochs == pytest.approx(method_ctx.supermask.epochs)


def test_bad_method_and_sparsity_are_refused():
    with pytest.raises(ValueError, match="unknown pruning method 'nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        global_masks({"w": torch.ones(4)}, 1.0)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        select_masks({"w": torch.ones(4)}, -0.1, "uniform")


def test_training_captures_the_state_at_the_rewind_step(tiny_data):
    model = small_model()
    schedule = TrainConfig(epochs=2, batch_size=50)  # 4 steps per epoch on 200 images
    seen = {}

    def observe(step, total):  # after `step` updates, before the next one
        seen[step] = copy.deepcopy(model.state_dict())

    hooks = TrainHooks(capture_step=3, on_backward=observe)
    result = train(model, tiny_data, schedule, seed=0, device=torch.device("cpu"), progress=False, hooks=hooks)
    assert result.steps == 8
    # parameters match; batch-norm running statistics already moved in step 3's forward pass
    for key, _ in model.named_parameters():
        assert torch.equal(result.captured[key], seen[3][key]), key
    assert not torch.equal(result.captured["body.3.weight"], model.state_dict()["body.3.weight"])

    fresh = small_model()
    initial = copy.deepcopy(fresh.state_dict())
    at_init = train(
        fresh, tiny_data, schedule, 0, torch.device("cpu"), progress=False, hooks=TrainHooks(capture_step=0)
    )
    assert torch.equal(at_init.captured["body.3.weight"], initial["body.3.weight"])
    past = train(fresh, tiny_data, schedule, 0, torch.device("cpu"), progress=False, hooks=TrainHooks(capture_step=99))
    assert torch.equal(past.captured["body.3.weight"], fresh.state_dict()["body.3.weight"])  # past the end: final
