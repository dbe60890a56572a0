"""Wall time per pruning method and clean accuracy against sparsity, on a compute preset.

Run: python bench/methods.py [--preset demo] [any `prunescope compute` flag]
Baseline: the dense model's training, in the same process; each method's wall time is
also printed as a multiple of it.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time

import torch

from compute import data, models
from compute.config import add_config_flags, apply_overrides
from compute.masks import LayerPolicy
from compute.plan import prune_settings, resolve_config, resolve_device, schedules
from compute.presets import get_preset
from compute.prune import PruneContext, get_method
from compute.sweep import prunable_sparsity
from compute.train import TrainHooks, accuracy, steps_per_epoch, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="named configuration the flags change (default: demo)")
    add_config_flags(parser, defaults=get_preset("demo"), label="demo preset")
    args = vars(parser.parse_args())
    cfg = resolve_config(apply_overrides(get_preset(args.pop("preset")), args))
    device = resolve_device(cfg.device)
    dataset = data.load(data.spec_of(cfg))
    mean, std = dataset.channel_stats()
    plans = schedules(cfg)
    torch.manual_seed(0)
    dense = models.build(models.ModelSpec(cfg.architecture, dataset.num_classes, tuple(mean), tuple(std)))
    init_state = copy.deepcopy(dense.state_dict())
    rewind_step = round(cfg.rewind_epochs * steps_per_epoch(len(dataset.train_labels), cfg.batch_size))
    start = time.perf_counter()
    hooks = TrainHooks(capture_step=rewind_step)
    result = train(dense, dataset, plans["dense"], seed=0, device=device, progress=False, hooks=hooks)
    baseline = time.perf_counter() - start
    policy = LayerPolicy(cfg.prune_first_layer, cfg.prune_last_layer)
    ctx = PruneContext(
        dense=dense, init_state=init_state, rewind_state=result.captured, data=dataset,
        dense_schedule=plans["dense"], rewind_step=rewind_step, finetune=plans["finetune"], rounds=plans["rounds"],
        sparse=plans["sparse"], supermask=plans["supermask"], settings=prune_settings(cfg), policy=policy, seed=0,
        device=device, progress=False,
    )  # fmt: skip

    def clean(model) -> float:
        return accuracy(model, dataset.test_images, dataset.test_labels, device, cfg.eval_batch_size)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, device {device}")
    print(f"preset: {cfg.dataset} / {cfg.architecture}, {len(dataset.train_labels)} training images")
    print(f"baseline: dense training ({cfg.epochs} epochs) {baseline:.1f} s, clean accuracy {clean(dense):.3f}\n")
    header = "".join(f"{s:>8.2f}" for s in cfg.sparsities)
    print(f"{'method':<16}{'wall s':>8}{'x dense':>9}  clean accuracy at target sparsity {header}")
    total = 0.0
    for name in cfg.methods[1:]:
        start = time.perf_counter()
        pruned = get_method(name).run(ctx, list(cfg.sparsities))
        wall = time.perf_counter() - start
        total += wall
        cells = "".join(f"{clean(p.model):>8.3f}" for p in pruned)
        measured = ", ".join(f"{prunable_sparsity(p.model, dense, policy):.3f}" for p in pruned)
        epochs = ", ".join(f"{p.train_epochs:g}" for p in pruned)
        extra = f"; training epochs {epochs}"
        if "mask_drift" in pruned[0].notes:
            drift = ", ".join(f"{p.notes['mask_drift']:.3f}/{p.notes['mask_drift_if_unrelated']:.3f}" for p in pruned)
            extra += f"; mask drift/unrelated {drift}"
        print(f"{name:<16}{wall:>8.1f}{wall / baseline:>9.1f}  {' ' * 35}{cells}   (measured {measured}{extra})")
    print(f"\nall methods: {total:.1f} s ({total / baseline:.1f} x the dense training)")


if __name__ == "__main__":
    main()
