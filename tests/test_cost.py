"""`compute --dry-run`: the plan of every preset, its epochs against a run's, and nothing written."""

import os

import polars as pl
import pytest

from compute import schema
from compute.config import apply_overrides
from compute.cost import BASE_BYTES_PER_ROW, data_size, epoch_budget, plan_lines, planned_train_epochs, sweep_cost
from compute.plan import resolve_config
from compute.presets import PRESETS, get_preset
from compute.sweep import whole_epochs
from tests.conftest import SWEEP, run_cli, run_cli_here


def sweep_config(args: tuple[str, ...]):
    """The resolved configuration of a `compute` command line (flags as the CLI passes them)."""
    flags = dict(zip(args[3::2], args[4::2], strict=False))
    given = {k.removeprefix("--").replace("-", "_"): v for k, v in flags.items() if k.startswith("--")}
    return resolve_config(apply_overrides(get_preset(args[2]), given))


def test_the_plan_gives_the_epochs_each_model_of_a_run_records(whole_sweep):
    cfg = sweep_config(SWEEP[:-1])  # without --quiet
    planned = planned_train_epochs(cfg, epoch_budget(cfg, data_size(cfg)))
    recorded = pl.read_parquet(whole_sweep / schema.MODELS).select("model_id", "train_epochs").rows()
    assert {model_id: whole_epochs(epochs) for model_id, epochs in planned.items()} == dict(recorded)
    assert len(recorded) == 27 and len({e for _, e in recorded}) > 3  # every family's budget, not one number


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_dry_run_of_every_preset_plans_and_writes_nothing(preset, tmp_path):
    out = tmp_path / "snapshot"
    result = run_cli_here("compute", "--preset", preset, "--out", str(out), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == []  # no snapshot, no work folder, nothing beside them
    cfg = resolve_config(get_preset(preset))
    size = data_size(cfg)
    planned = planned_train_epochs(cfg, epoch_budget(cfg, size))
    conditions = 1 + len(cfg.corruptions) * len(cfg.severities)
    rows = len(planned) * conditions * size.n_test
    text = result.stdout
    assert f"{len(planned)} models, {conditions} conditions, {rows:,} per-sample rows" in text
    assert "estimate on " in text and "calibrated in " in text and "nothing trained or written" in text
    for method in cfg.methods:
        assert f"\nprunescope compute: {method} s0" in text


def test_the_cifar10_plan_counts_the_rounds_of_imp_and_lrr(tmp_path):
    """ResNet-20 at 0.98 under open_lth's rewinding: rounds of 20 % that stop at each target, worked
    by hand on the density: 0.8, 0.64, 0.512, 0.5 | 0.4, 0.32, 0.256, 0.2048, 0.2 | 0.16, 0.128,
    0.1024, 0.1 | 0.08, 0.064, 0.0512, 0.05 | 0.04, 0.032, 0.0256, 0.02048, 0.02: 22 rounds, each
    the dense schedule's 160 epochs from the rewind step at 2 epochs (imp) or all of them (lrr)."""
    cfg = resolve_config(get_preset("cifar10"))
    budget = epoch_budget(cfg, data_size(cfg))
    assert budget.steps_per_epoch == 50_000 // 128 and budget.rewind_step == 2 * 390
    planned = planned_train_epochs(cfg, budget)
    assert planned["imp-0.98-s0"] == pytest.approx(160 + 22 * (160 * 390 - 780) / 390)
    assert planned["lrr-0.98-s0"] == 160 + 22 * 160
    assert planned["snip-0.98-s0"] == 160 and planned["magnitude-0.98-s0"] == 160 + 40


def test_a_dry_run_refuses_what_the_run_would(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = run_cli_here("compute", "--preset", "tiny", "--out", str(tmp_path / "mine"), "--dry-run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    result = run_cli_here("compute", "--preset", "tiny", "--dry-run", "--epochs", "0")
    assert result.returncode == 2 and "--epochs" in result.stderr
    result = run_cli_here("compute", "--preset", "tiny")
    assert result.returncode == 2 and "--out" in result.stderr


@pytest.mark.parametrize("bits", [23, 12])
def test_the_planned_bytes_a_row_bound_what_the_writer_takes(bits, tmp_path):
    """The size estimate against metrics/ as written: synthetic metrics, whose mantissas are as
    random as real ones, at the default and at the demo's bits."""
    out = tmp_path / "synth"
    assert run_cli("synth", "--models", "3", "--samples", "4000", "--metric-bits", str(bits), "--out", str(out),
                   "--quiet").returncode == 0  # fmt: skip
    written = sum(f.stat().st_size for f in (out / schema.METRICS_DIR).rglob("*.parquet"))
    per_row = written / (3 * 96 * 4000)
    assert 0.8 * (BASE_BYTES_PER_ROW + bits) <= per_row <= BASE_BYTES_PER_ROW + bits


def test_the_gpu_bench_says_no_gpu_and_exits_0_without_one():
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # as on a machine without a GPU
    result = subprocess.run([sys.executable, "bench/gpu_sweep.py"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith("no GPU"), result.stdout + result.stderr


def test_the_estimate_counts_every_occluded_forward():
    """The demo's occlusion worked by hand: 8 px patches every 4 px on 32x32 images are 7 x 7 = 49
    positions; 6 samples on the clean condition and the 19 corruptions at severity 3, for each of
    the 53 models; none without --occlusion-samples."""
    from compute.cost import sweep_cost

    cfg = resolve_config(get_preset("demo"))
    assert sweep_cost(cfg, None).occluded_images(cfg) == 53 * 20 * 6 * 49
    plain = resolve_config(apply_overrides(get_preset("demo"), {"occlusion_samples": "0"}))
    assert sweep_cost(plain, None).occluded_images(plain) == 0


@pytest.mark.parametrize("seeds, side_by_side", [(1, 1), (3, 2)])
def test_the_plan_of_jobs_trains_each_dense_model_once(seeds, side_by_side):
    cfg = resolve_config(apply_overrides(get_preset("tiny"), {"seeds": str(seeds)}))
    cost = sweep_cost(cfg, None)
    alone, shared = plan_lines(cfg, cost, "tiny", workers=1), plan_lines(cfg, cost, "tiny", workers=2)
    assert [line for line in shared if line not in alone] == [
        "--jobs 2: 2 workers share the device; each seed's dense model is trained once, by the first worker that "
        f"reaches it (they start at different seeds: up to {side_by_side} side by side), while the others that prune "
        "it wait for it; each corrupted test set is made once, by the first that reaches it"
    ]
