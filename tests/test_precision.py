"""`--precision bf16`: autocast in training and evaluation, recorded, and what it changes."""

import dataclasses
import json

import polars as pl
import pytest
import torch

from compute import grow, models, schema
from compute.config import ComputeConfig, InputError
from compute.evaluate import forward_features
from compute.snapshot import scan_metrics
from compute.train import TrainConfig, train
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def trained(tiny_data):
    model = models.build(models.spec_for("small_cnn", tiny_data))
    train(model, tiny_data, TrainConfig(epochs=1, batch_size=32), seed=0, device=torch.device("cpu"), progress=False)
    return model.eval()


def test_fp32_features_are_the_models_own_and_bf16_ones_differ_within_its_precision(trained, tiny_data):
    images = tiny_data.test_images
    cpu = torch.device("cpu")
    with torch.no_grad():
        direct = trained.features(images.float() / 255)
    fp32 = forward_features(trained, images, cpu, 16, "fp32")
    bf16 = forward_features(trained, images, cpu, 16, "bf16")
    assert torch.equal(fp32, direct)  # the default changes nothing, bit for bit
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # autocast did run
    # bfloat16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4 %); a few layers of rounding stay
    # within a few per cent of the feature vector's length
    relative = (bf16 - fp32).norm(dim=1) / fp32.norm(dim=1)
    assert float(relative.max()) < 0.05
    assert float(relative.median()) > 2**-12


def test_bf16_training_autocasts_and_leaves_the_weights_float32(tiny_data):
    seen = []
    model = models.build(models.spec_for("small_cnn", tiny_data))
    model.classifier.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    plan = TrainConfig(epochs=1, batch_size=64, precision="bf16")
    train(model, tiny_data, plan, seed=0, device=torch.device("cpu"), progress=False)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_bf16_run_records_its_precision_and_differs_from_fp32(tiny_snapshot, tmp_path):
    out = tmp_path / "bf16"
    result = run_cli("compute", "--preset", "tiny", "--precision", "bf16", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / schema.MANIFEST).read_text())["config"]["precision"] == "bf16"
    assert json.loads((tiny_snapshot / schema.MANIFEST).read_text())["config"]["precision"] == "fp32"
    key = ["model_id", "condition_id", "sample_id"]
    both = scan_metrics(out).collect().join(scan_metrics(tiny_snapshot).collect(), on=key, suffix="_fp32")
    assert len(both) == 5 * 7 * 60
    assert both.select((pl.col("feat_norm") != pl.col("feat_norm_fp32")).any()).item()


def test_growing_takes_the_precision_a_snapshot_was_computed_with(tiny_snapshot):
    existing = grow.read_existing(tiny_snapshot)
    cfg = ComputeConfig(**{**existing.manifest["config"], "methods": ("dense", "snip")})
    cfg = dataclasses.replace(cfg, **{k: tuple(v) for k, v in cfg.as_dict().items() if isinstance(v, list)})
    with pytest.raises(InputError, match="precision"):
        grow.grown_config(existing, dataclasses.replace(cfg, precision="bf16"))
    # a snapshot written before the flag existed was computed in fp32
    older = dataclasses.replace(existing, manifest={**existing.manifest, "config": {
        k: v for k, v in existing.manifest["config"].items() if k != "precision"}})  # fmt: skip
    assert grow.grown_config(older, cfg).precision == "fp32"
    with pytest.raises(InputError, match="precision"):
        grow.grown_config(older, dataclasses.replace(cfg, precision="bf16"))
