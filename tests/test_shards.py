"""`compute --shard K/N` and `merge`: shards of one sweep combine into the snapshot one run writes."""

import json
import shutil

import polars as pl
import pytest

from compute import schema
from compute.config import ComputeConfig, ConfigError, shard_jobs
from tests.conftest import SWEEP, assert_same_sweep, run_cli, run_cli_here


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    for k in (1, 2):
        result = run_cli(*SWEEP, "--shard", f"{k}/2", "--out", str(root / f"part{k}"))
        assert result.returncode == 0, result.stderr
    return root


def test_shard_jobs_split_the_sweep_round_robin():
    cfg = ComputeConfig(methods=("dense", "random", "magnitude"), seeds=2)
    parts = [shard_jobs(ComputeConfig(**{**cfg.as_dict(), "shard": f"{k}/3"})) for k in (1, 2, 3)]
    assert parts[0] == [(0, "dense"), (1, "dense")]
    assert parts[1] == [(0, "random"), (1, "random")]
    assert sorted(job for part in parts for job in part) == sorted(
        (seed, method) for seed in (0, 1) for method in cfg.methods
    )
    with pytest.raises(ConfigError, match="this sweep has 6 jobs"):
        shard_jobs(ComputeConfig(**{**cfg.as_dict(), "shard": "7/7"}))


def test_merged_shards_equal_one_run(shards, whole_sweep, tmp_path):
    out = tmp_path / "merged"
    result = run_cli("merge", str(shards / "part2"), str(shards / "part1"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "merged 2 shards" in result.stdout and "27 models x 7 conditions x 60 samples" in result.stdout
    assert run_cli("validate", str(out)).returncode == 0

    assert_same_sweep(out, whole_sweep, thumbnails=False)
    manifest = json.loads((out / schema.MANIFEST).read_text())
    assert [m["shard"] for m in manifest["merged_from"]] == ["1/2", "2/2"]


def edited_copy(source, target, change):
    shutil.copytree(source, target)
    manifest = json.loads((target / schema.MANIFEST).read_text())
    change(manifest)
    (target / schema.MANIFEST).write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m["config"].update(epochs=99), "another configuration (epochs differ)"),
        (lambda m: m["parents"].update({"dense-s0": "0" * 64}), "pruned a different dense-s0"),
        (lambda m: m["shard"].update(index=1), "the parts are shards 1/2, 1/2"),
        (lambda m: m.update(schema_version=2), f"is a shard of schema version 2, not {schema.SCHEMA_VERSION}"),
    ],
    ids=["config", "dense-weights", "same-shard-twice", "version-2"],
)
def test_merge_refuses_parts_that_do_not_fit_and_writes_nothing(shards, tmp_path, change, message):
    bad = edited_copy(shards / "part2", tmp_path / "bad", change)
    out = tmp_path / "merged"
    result = run_cli_here("merge", str(shards / "part1"), str(bad), "--out", str(out))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


def test_merge_refuses_a_plain_snapshot_and_a_single_part(shards, tiny_snapshot, tmp_path):
    lone = run_cli_here("merge", str(shards / "part1"), "--out", str(tmp_path / "m"))
    assert lone.returncode == 2 and "two or more shard folders" in lone.stderr
    plain = run_cli_here("merge", str(shards / "part1"), str(tiny_snapshot), "--out", str(tmp_path / "m"))
    assert plain.returncode == 2 and "shards 1/2, 1/1" in plain.stderr


@pytest.mark.parametrize(
    "value,message",
    [("x", "is not K/N"), ("3/2", "K must be between 1 and N"), ("6/6", "this sweep has 3 jobs")],
)
def test_bad_shard_flags_stop_before_any_work(tmp_path, value, message):
    result = run_cli_here("compute", "--preset", "tiny", "--shard", value, "--out", str(tmp_path / "s"), "--quiet")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "s").exists()


def test_shard_auto_takes_k_of_n_from_a_slurm_job_array(monkeypatch):
    from compute.config import parse_shard
    from compute.plan import resolve_config

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "8")  # sbatch --array=5-8: the third of four tasks
    assert parse_shard("auto") == (3, 4)
    cfg = resolve_config(ComputeConfig(methods=("dense", "random", "magnitude", "snip"), shard="auto"))
    assert cfg.shard == "3/4"  # the manifest records the concrete part
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")
    with pytest.raises(ConfigError, match="step 1"):
        parse_shard("auto")


def test_shard_auto_outside_slurm_says_what_it_needs(tmp_path, monkeypatch):
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"):
        monkeypatch.delenv(name, raising=False)
    result = run_cli_here("compute", "--preset", "tiny", "--shard", "auto", "--out", str(tmp_path / "s"), "--quiet")
    assert result.returncode == 2 and "sbatch --array" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


@pytest.mark.parametrize("damage", ["truncated metrics", "no config", "string shard"])
def test_merge_checks_every_part_before_writing(shards, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(shards / "part2", bad)
    manifest = json.loads((bad / schema.MANIFEST).read_text())
    if damage == "truncated metrics":
        part = sorted((bad / schema.METRICS_DIR).glob("*/*.parquet"))[0]
        part.write_bytes(part.read_bytes()[:200])
    elif damage == "no config":
        del manifest["config"]
    else:
        manifest["shard"] = "2/2"
    (bad / schema.MANIFEST).write_text(json.dumps(manifest))
    out = tmp_path / "merged"
    result = run_cli_here("merge", str(shards / "part1"), str(bad), "--out", str(out))
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line and str(bad) in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_every_shard_validates_and_says_what_it_lacks(shards):
    for k in (1, 2):
        result = run_cli_here("validate", str(shards / f"part{k}"))
        assert result.returncode == 0, result.stdout
        models = pl.read_parquet(shards / f"part{k}" / schema.MODELS)
        absent = sorted(set(models["parent_id"]) - set(models["model_id"]))
        # the part without the dense model names it, and where it is; the part with it is plain
        assert ("another shard" in result.stdout) == bool(absent), result.stdout
        assert all(parent in result.stdout for parent in absent)
    lines = [run_cli_here("validate", str(shards / f"part{k}")).stdout for k in (1, 2)]
    assert any("another shard" in line for line in lines), "the tiny sweep deals the dense job to one shard only"
