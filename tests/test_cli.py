"""The command line end to end, as a user runs it."""

import json

import polars as pl
import pytest

from compute import schema
from tests.conftest import run_cli


def test_compute_writes_a_valid_snapshot_and_says_so(tiny_snapshot):
    manifest = json.loads((tiny_snapshot / schema.MANIFEST).read_text())
    assert manifest["complete"] is True and manifest["schema_version"] == schema.SCHEMA_VERSION
    assert manifest["config"]["sparsities"] == [0.5, 0.9]
    assert set(manifest["timings"]) >= {"train_and_prune", "evaluate", "total"}
    result = run_cli("validate", str(tiny_snapshot))
    assert result.returncode == 0, result.stdout
    models = pl.read_parquet(tiny_snapshot / schema.MODELS)
    assert sorted(models["method"].unique()) == ["dense", "magnitude", "random"]
    pruned = models.filter(pl.col("method") != "dense")
    # measured sparsity of the prunable layers matches the target (exact for one-shot global selection)
    assert (pruned["sparsity"] - pruned["target_sparsity"]).abs().max() < 0.005
    dense = models.filter(pl.col("method") == "dense")
    assert (pruned["params_nonzero"] < dense["params_nonzero"][0]).all()
    assert (pruned["flops"] < dense["flops"][0]).all()
    assert (pruned["params_total"] == dense["params_total"][0]).all()


def test_summary_line_reports_the_work(tmp_path):
    out = tmp_path / "s"
    result = run_cli(
        "compute",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "--methods",
        "dense,magnitude",
        "--sparsities",
        "0.8",
        "--corruptions",
        "contrast",
        "--severities",
        "2",
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("prunescope compute: wrote") and "2 models x 2 conditions x 60 samples" in line
    assert " s on cpu" in line


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--sparsities", "0.5,1.5"], ["--sparsities", "1.5", "[0, 1)"]),
        (["--methods", "dense,nope"], ["--methods", "nope", "magnitude"]),
        (["--corruptions", "rain"], ["--corruptions", "rain", "contrast"]),
        (["--severities", "6"], ["--severities", "6", "1,2,3,4,5"]),
        (["--preset", "huge"], ["--preset", "huge", "demo"]),
        (["--device", "tpu"], ["--device", "tpu", "cpu"]),
        (["--epochs", "zero"], ["--epochs", "zero"]),
        (["--dataset", "cifar10"], ["--data-root"]),
        (["--allocation", "best"], ["--allocation", "best", "erk"]),
        (["--imp-rate", "1.5"], ["--imp-rate", "1.5", "between 0 and 1"]),
        (["--supermask-init", "zeros"], ["--supermask-init", "zeros", "signed_constant"]),
        (["--lr", "inf"], ["--lr", "inf", "finite"]),
        (["--finetune-lr", "nan"], ["--finetune-lr", "nan", "finite"]),
        (["--epochs", "-3"], ["--epochs", "-3", "at least 1"]),
        (["--batch-size", "-1"], ["--batch-size", "-1", "at least 1"]),
        (["--weight-decay", "-0.1"], ["--weight-decay", "0 or more"]),
        (["--sparsities", "0.5,0.5"], ["--sparsities", "0.5", "twice"]),
        (["--severities", "1,1"], ["--severities", "1", "twice"]),
        (["--corruptions", "fog,fog"], ["--corruptions", "fog", "twice"]),
        (["--sparsities", "0.90001,0.9"], ["--sparsities", "0.90001", "0.9", "same models"]),
        (["--rewind-epochs", "99"], ["--rewind-epochs", "99", "below --epochs"]),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, flags, names):
    out = tmp_path / "never"
    result = run_cli("compute", "--preset", "tiny", "--out", str(out), *flags)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for name in names:
        assert name in message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_snapshot_is_not_replaced_without_overwrite(tiny_snapshot):
    before = (tiny_snapshot / schema.MANIFEST).read_text()
    result = run_cli("compute", "--preset", "tiny", "--out", str(tiny_snapshot))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (tiny_snapshot / schema.MANIFEST).read_text() == before


def test_flags_override_the_preset():
    from compute.config import apply_overrides
    from compute.presets import get_preset

    cfg = apply_overrides(get_preset("demo"), {"sparsities": "0.3,0.6", "seeds": "2", "augment": False})
    assert cfg.sparsities == (0.3, 0.6) and cfg.seeds == 2 and cfg.augment is False
    assert cfg.epochs == get_preset("demo").epochs


def test_checkpoints_reload_into_models_that_reproduce_the_snapshot(tmp_path):
    """End to end: --checkpoints, then load_model, then the same clean predictions."""
    import torch

    from compute import models
    from compute.checkpoints import load_model
    from compute.data import DataSpec, load
    from compute.snapshot import scan_metrics

    out = tmp_path / "ckpt"
    result = run_cli(
        "compute", "--preset", "tiny", "--out", str(out), "--quiet", "--checkpoints",
        "--methods", "magnitude,l1_filter", "--sparsities", "0.7", "--corruptions", "contrast", "--severities", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert run_cli("validate", str(out)).returncode == 0
    data = load(DataSpec("digits", n_test=60, n_train=300))
    rows = scan_metrics(out).filter(pl.col("condition_id") == 0).sort("sample_id").collect()
    for model_id in ("dense-s0", "magnitude-0.7-s0", "l1_filter-0.7-s0"):
        model = load_model(out, model_id)
        with torch.no_grad():
            pred = model(data.test_images.float() / 255).argmax(1)
        order = torch.argsort(data.test_index)
        expected = rows.filter(pl.col("model_id") == model_id)["pred"].to_list()
        assert pred[order].tolist() == expected, model_id
    pruned = load_model(out, "magnitude-0.7-s0")
    fresh = models.build(models.ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3))
    fresh.load_state_dict(pruned.state_dict())  # an unstructured checkpoint fits an unpruned model as it is
    small = load_model(out, "l1_filter-0.7-s0")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in fresh.parameters())


def test_reduced_metric_precision_is_recorded_and_still_validates(tmp_path):
    out = tmp_path / "coarse"
    result = run_cli(
        "compute", "--preset", "tiny", "--out", str(out), "--quiet", "--metric-bits", "10",
        "--methods", "dense", "--corruptions", "contrast", "--severities", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / schema.MANIFEST).read_text())["storage"]["metric_bits"] == 10
    assert run_cli("validate", str(out)).returncode == 0
    import numpy as np

    losses = pl.read_parquet(next((out / schema.METRICS_DIR).glob("*/*.parquet")))["loss"].to_numpy()
    assert np.all(losses.view(np.uint32) & ((1 << 13) - 1) == 0)  # 10 mantissa bits kept


def test_synth_writes_a_valid_snapshot_of_the_requested_size(tmp_path):
    out = tmp_path / "synth"
    result = run_cli("synth", "--models", "5", "--samples", "40", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "5 models x 96 conditions x 40 samples = 19,200 synthetic rows" in result.stdout
    assert run_cli("validate", str(out)).returncode == 0
    models = pl.read_parquet(out / schema.MODELS)
    assert models["method"].to_list()[:2] == ["dense", "random"] and models.height == 5
    assert json.loads((out / schema.MANIFEST).read_text())["synthetic"] is True
    bad = run_cli("synth", "--models", "0", "--samples", "40", "--out", str(tmp_path / "never"))
    assert bad.returncode == 2 and "at least 1 model" in bad.stderr


@pytest.mark.parametrize("where", ["a file", "under a file", "the current folder", "the folder above"])
def test_an_unusable_out_gets_one_line_before_any_work(tmp_path, where):
    (tmp_path / "file").write_text("keep")
    (tmp_path / "sub").mkdir()
    out = {
        "a file": tmp_path / "file",
        "under a file": tmp_path / "file" / "snap",
        "the current folder": ".",
        "the folder above": "..",
    }[where]
    for flags in ([], ["--overwrite"]):
        result = run_cli("compute", "--preset", "tiny", "--out", str(out), *flags, "--quiet", cwd=tmp_path / "sub")
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "--out" in message and "Traceback" not in message
    assert (tmp_path / "file").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "sub"]


def test_an_unwritable_location_never_ends_in_a_traceback():
    # /proc takes no new folders, not even from root (whom permission bits would not stop)
    for args in (("synth", "--models", "3", "--samples", "10"), ("compute", "--preset", "tiny")):
        result = run_cli(*args, "--out", "/proc/prunescope-snapshot", "--quiet")
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message and "/proc" in message
