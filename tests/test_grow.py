"""Growing a snapshot (`--add-to`): the new models are computed, the old ones kept, and the
result equals computing all of them in one run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from compute import schema
from compute.snapshot import scan_metrics
from tests.conftest import assert_refused, run_cli, run_cli_here

TINY = ("compute", "--preset", "tiny", "--thumbnail-samples", "4", "--occlusion-samples", "2", "--quiet")


def assert_same_tables(got, want):
    timing = ["train_seconds", "prune_seconds"]
    names = [schema.MODELS, schema.SUMMARY, schema.CLASSES, schema.EMBEDDING, schema.CONDITIONS, schema.SAMPLES]
    names += [schema.LAYERS, schema.ANSWERS] + ([schema.OCCLUSION] if (want / schema.OCCLUSION).exists() else [])
    for name in names:
        a, b = pl.read_parquet(got / name), pl.read_parquet(want / name)
        a, b = a.drop([c for c in timing if c in a.columns]), b.drop([c for c in timing if c in b.columns])
        assert a.equals(b), name  # the same models in the same (sweep) order
    rows = ["model_id", "condition_id", "sample_id"]
    assert scan_metrics(got).collect().sort(rows).equals(scan_metrics(want).collect().sort(rows))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    out = tmp_path_factory.mktemp("grow") / "first"
    result = run_cli(*TINY, "--methods", "dense,random,imp", "--sparsities", "0.5,0.9", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_new_methods_and_sparsities_equal_one_run(first, tmp_path):
    grown = tmp_path / "grown"
    added = ("--methods", "magnitude,imp", "--sparsities", "0.95")
    result = run_cli(*TINY, *added, "--add-to", str(first), "--out", str(grown))
    assert result.returncode == 0, result.stderr
    assert "10 models, 5 kept from the snapshot grown" in result.stdout
    whole = tmp_path / "whole"
    all_of_it = ("--methods", "dense,random,imp,magnitude", "--sparsities", "0.5,0.9,0.95")
    result = run_cli(*TINY, *all_of_it, "--out", str(whole))
    assert result.returncode == 0, result.stderr
    assert_same_tables(grown, whole)
    assert run_cli("validate", str(grown)).returncode == 0


def test_an_id_the_snapshot_holds_needs_replace(first, tmp_path):
    out = tmp_path / "again"
    added = ("--methods", "random", "--sparsities", "0.9", "--add-to", str(first))
    result = run_cli_here(*TINY, *added, "--out", str(out))
    assert result.returncode == 2 and "already holds random-0.9-s0" in result.stderr and "--replace" in result.stderr
    assert not out.exists()
    result = run_cli(*TINY, *added, "--replace", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert_same_tables(out, first)  # recomputed deterministically: the same models


def test_a_lower_new_sparsity_would_change_the_iterative_models_above_it(first, tmp_path):
    out = tmp_path / "lower"
    added = ("--methods", "random", "--sparsities", "0.7", "--add-to", str(first))
    result = run_cli_here(*TINY, *added, "--out", str(out))
    assert result.returncode == 2 and "imp-0.9-s0" in result.stderr and "--replace" in result.stderr
    result = run_cli(*TINY, *added, "--replace", "--out", str(out))
    assert result.returncode == 0, result.stderr
    whole = tmp_path / "whole"
    all_of_it = ("--methods", "dense,random,imp", "--sparsities", "0.5,0.7,0.9")
    assert run_cli(*TINY, *all_of_it, "--out", str(whole)).returncode == 0
    assert_same_tables(out, whole)


@pytest.mark.parametrize(
    "flags,message",
    [(["--epochs", "3"], "other epochs"), (["--severities", "3"], "other severities"), (["--n-test", "50"], "n_test")],
)
def test_a_snapshot_of_another_configuration_is_not_grown(first, tmp_path, flags, message):
    out = tmp_path / "other"
    result = run_cli_here(*TINY, "--methods", "magnitude", *flags, "--add-to", str(first), "--out", str(out))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_evaluate_adds_given_models_to_a_snapshot(tmp_path):
    from tests.test_data import write_cifar10

    write_cifar10(tmp_path / "data")
    for name, width in (("a", 16), ("b", 24)):
        (tmp_path / f"{name}.py").write_text(
            "import torch\nfrom torch import nn\n"
            "def models():\n"
            f"    torch.manual_seed({width})\n"
            f"    net = nn.Sequential(nn.Conv2d(3, {width}, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
            f" nn.Linear({width}, 10))\n"
            f"    return [{{'model_id': 'net-{name}', 'model': net}}]\n"
        )
    (tmp_path / "both.py").write_text(
        "import a, b\ndef models():\n    return a.models() + b.models()\n"
    )
    data = ("--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--corruptions", "fog", "--quiet")
    assert run_cli("evaluate", "--models", str(tmp_path / "a.py"), *data, "--out", str(tmp_path / "sa")).returncode == 0
    grown = run_cli(
        "evaluate", "--models", str(tmp_path / "b.py"), *data, "--add-to", str(tmp_path / "sa"), "--out",
        str(tmp_path / "sab"),
    )  # fmt: skip
    assert grown.returncode == 0, grown.stderr
    whole = run_cli("evaluate", "--models", str(tmp_path / "both.py"), *data, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    assert_same_tables(tmp_path / "sab", tmp_path / "whole")

    # the manifest records what evaluate used, none of compute's training settings
    from compute.config import EVALUATE_FIELDS
    from compute.grow import OCCLUSION_FIELDS

    config = json.loads((tmp_path / "sa" / schema.MANIFEST).read_text())["config"]
    assert set(config) == set(EVALUATE_FIELDS) | set(OCCLUSION_FIELDS)
    assert config["corruptions"] == ["fog"] and config["dataset"] == "cifar10"
    # compute cannot grow what it did not write, and says so in one line
    grow_it = ("compute", "--preset", "tiny", "--add-to", str(tmp_path / "sa"), "--out", str(tmp_path / "c"))
    refused = run_cli_here(*grow_it)
    assert refused.returncode == 2 and "was written by prunescope evaluate, not compute" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_evaluate_grows_a_compute_snapshot_keeping_its_account_and_checkpoints(tmp_path):
    import json

    base = tmp_path / "base"
    assert run_cli(*TINY, "--methods", "dense,magnitude", "--checkpoints", "--out", str(base)).returncode == 0
    (tmp_path / "extra.py").write_text(
        "import torch\nfrom torch import nn\ndef models():\n    torch.manual_seed(1)\n"
        "    return [{'model_id': 'extra', 'model': nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))}]\n"
    )
    data = ("--dataset", "digits", "--n-test", "60", "--corruptions", "gaussian_noise,defocus_blur,contrast",
            "--severities", "1,3", "--quiet")  # fmt: skip
    other_seed = run_cli("evaluate", "--models", str(tmp_path / "extra.py"), *data, "--corruption-seed", "5",
                         "--add-to", str(base), "--out", str(tmp_path / "x"))  # fmt: skip
    assert other_seed.returncode == 2 and "corrupted images otherwise" in other_seed.stderr
    grown = tmp_path / "grown"
    extra = ("evaluate", "--models", str(tmp_path / "extra.py"), *data)
    result = run_cli(*extra, "--add-to", str(base), "--out", str(grown))
    assert result.returncode == 0, result.stderr
    before, after = (json.loads((p / schema.MANIFEST).read_text()) for p in (base, grown))
    assert after["architecture"] == before["architecture"] and after["parents"] == before["parents"]
    assert set(after["methods"]) == {"dense", "magnitude"} and after["config"] == before["config"]
    kept = sorted(p.name for p in (base / schema.CHECKPOINTS_DIR).iterdir())
    assert sorted(p.name for p in (grown / schema.CHECKPOINTS_DIR).iterdir()) == kept  # 'extra' has none
    assert run_cli("validate", str(grown)).returncode == 0
    # the given model is occluded as the kept ones were: the same samples, conditions and positions
    occlusion = pl.read_parquet(grown / schema.OCCLUSION)
    keys = ["condition_id", "sample_id", "row", "col"]
    extra, dense = (occlusion.filter(pl.col("model_id") == m).select(keys) for m in ("extra", "dense-s0"))
    assert extra.height == 2 * 4 * 49 and extra.equals(dense)  # clean and 3 corruptions at severity 3
    assert occlusion.filter(pl.col("model_id") != "extra").equals(pl.read_parquet(base / schema.OCCLUSION))
    models = pl.read_parquet(grown / schema.MODELS).filter(pl.col("model_id") == "extra")
    assert models["dist_init"][0] is None and models["dist_dense"][0] == 0.0  # a dense given model, no known init


def test_a_version_2_snapshot_is_not_grown(first, tmp_path):
    import shutil

    from tests.test_validate import as_version_2

    old = as_version_2(Path(shutil.copytree(first, tmp_path / "old")))
    out = tmp_path / "grown"
    result = run_cli_here(*TINY, "--methods", "magnitude", "--add-to", str(old), "--out", str(out))
    assert result.returncode == 2 and "is a snapshot of schema version 2" in result.stderr, result.stderr
    assert "recompute it" in result.stderr and not out.exists()


def test_evaluate_adds_a_child_of_a_dense_model_the_snapshot_holds(tmp_path):
    """A new model may name a dense parent that the snapshot it is added to holds: its
    sparsity and distance are measured against the parent's weights from the snapshot's
    checkpoints; without checkpoints, or naming a pruned model, one line says what to do."""
    import torch

    from compute.checkpoints import load_model

    base = tmp_path / "base"
    assert run_cli(*TINY, "--methods", "dense,magnitude", "--sparsities", "0.5", "--checkpoints",
                   "--out", str(base)).returncode == 0  # fmt: skip
    (tmp_path / "child.py").write_text(
        "import sys, torch\nfrom torch import nn\nfrom compute.checkpoints import load_model\n"
        "def models():\n"
        f"    net = load_model({str(base)!r}, 'dense-s0')\n"
        "    with torch.no_grad():\n"
        "        for m in net.modules():\n"
        "            if isinstance(m, (nn.Conv2d, nn.Linear)):\n"
        "                m.weight[m.weight.abs() < m.weight.abs().quantile(0.7)] = 0\n"
        "    return [{'model_id': 'mine-70', 'model': net, 'parent_id': 'dense-s0', 'method': 'mine',\n"
        "             'family': 'unstructured', 'target_sparsity': 0.7}]\n"
    )
    data = ("--dataset", "digits", "--n-test", "60", "--corruptions", "gaussian_noise,defocus_blur,contrast",
            "--severities", "1,3", "--quiet")  # fmt: skip
    grown = tmp_path / "grown"
    child = ("evaluate", "--models", str(tmp_path / "child.py"), *data)
    result = run_cli(*child, "--add-to", str(base), "--out", str(grown))
    assert result.returncode == 0, result.stderr

    # independently: the child's nonzero weights over the parent's, both over the layers the sweep
    # prunes (its siblings' sparsity is measured so), and the distance over every conv and linear layer
    parent = load_model(base, "dense-s0")
    layers = [n for n, m in parent.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    weights = {n: parent.get_submodule(n).weight.detach().double() for n in layers}
    cut = {n: torch.where(w.abs() < w.abs().quantile(0.7), 0.0, w) for n, w in weights.items()}
    table = pl.read_parquet(base / schema.LAYERS).filter((pl.col("model_id") == "dense-s0") & pl.col("prunable"))
    pruned = table["layer"].to_list()
    assert 0 < len(pruned) < len(layers)  # the tiny preset keeps its first and last layer dense
    total = sum(weights[n].numel() for n in pruned)
    nonzero = sum(int((cut[n] != 0).sum()) for n in pruned)
    distance = float(sum((cut[n] - weights[n]).square().sum() for n in layers).sqrt())
    row = pl.read_parquet(grown / schema.MODELS).filter(pl.col("model_id") == "mine-70").row(0, named=True)
    assert row["parent_id"] == "dense-s0" and row["target_sparsity"] == pytest.approx(0.7)
    assert row["sparsity"] == pytest.approx(1 - nonzero / total, abs=1e-7)  # stored as float32
    assert row["dist_dense"] == pytest.approx(distance, rel=1e-6)
    kept = pl.read_parquet(base / schema.MODELS)["model_id"].to_list()
    assert pl.read_parquet(grown / schema.MODELS)["model_id"].to_list() == [*kept, "mine-70"]

    # a snapshot without the parent's weights, and a pruned model named as parent: one line each
    import shutil

    bare = Path(shutil.copytree(base, tmp_path / "bare"))
    shutil.rmtree(bare / schema.CHECKPOINTS_DIR)  # as written without --checkpoints
    refused = run_cli_here(*child, "--add-to", str(bare), "--out", str(tmp_path / "x"))
    assert_refused(refused, "dense-s0", "not its weights", "--checkpoints", "--replace")
    (tmp_path / "child.py").write_text((tmp_path / "child.py").read_text().replace(
        "'parent_id': 'dense-s0'", "'parent_id': 'magnitude-0.5-s0'"))  # fmt: skip
    refused = run_cli_here(*child, "--add-to", str(base), "--out", str(tmp_path / "y"))
    assert_refused(refused, "magnitude-0.5-s0", "not a dense model")
