"""answers.parquet: every writer's table equals a direct reading of its metrics/, validate
rejects one that does not, and a snapshot without it (schema version 4) still opens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from compute import schema
from tests.conftest import run_cli


def assert_answers_are_the_metrics(path):
    """Each row's bits, unpacked by hand from the documented order (sample i in bit 7 - i % 8
    of byte i // 8), are the model's `correct` on that condition over the sample ids in
    ascending order; `pred` lists its clean predictions and is null elsewhere."""
    table = pq.read_table(path / schema.ANSWERS).to_pylist()
    samples = np.sort(pq.read_table(path / schema.SAMPLES, columns=["sample_id"])["sample_id"].to_numpy())
    conditions = pq.read_table(path / schema.CONDITIONS).to_pandas()
    clean = set(conditions.loc[conditions["corruption"] == "clean", "condition_id"])
    models = pq.read_table(path / schema.MODELS, columns=["model_id"])["model_id"].to_pylist()
    assert sorted((r["model_id"], r["condition_id"]) for r in table) == sorted(
        (m, c) for m in models for c in conditions["condition_id"]
    )
    metrics = {
        m: pq.read_table(path / schema.METRICS_DIR / f"model_id={m}")
        .to_pandas()
        .sort_values(["condition_id", "sample_id"])
        for m in models
    }
    for row in table:
        rows = metrics[row["model_id"]]
        rows = rows[rows["condition_id"] == row["condition_id"]]
        assert rows["sample_id"].tolist() == samples.tolist()
        data = row["correct"]
        assert len(data) == (len(samples) + 7) // 8
        bits = [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(8 * len(data))]
        assert bits[: len(samples)] == rows["correct"].astype(int).tolist()
        assert not any(bits[len(samples) :])  # zero padding
        if row["condition_id"] in clean:
            assert row["pred"] == rows["pred"].tolist()
        else:
            assert row["pred"] is None


def test_compute_writes_the_answers_of_its_metrics(tiny_snapshot):
    assert_answers_are_the_metrics(tiny_snapshot)


def test_synth_writes_the_answers_of_its_metrics(tmp_path):
    out = tmp_path / "synth"
    assert run_cli("synth", "--models", "6", "--samples", "37", "--out", str(out), "--quiet").returncode == 0
    assert_answers_are_the_metrics(out)  # 37 samples: a padded last byte


def test_the_committed_demo_carries_its_answers():
    from tests.conftest import DEMO

    assert_answers_are_the_metrics(DEMO)


def flip_first_bit(frame: pl.DataFrame) -> pl.DataFrame:
    first = frame["correct"][0]
    flipped = bytes([first[0] ^ 0x80]) + first[1:]
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(flipped)).otherwise(pl.col("correct")).alias("correct")
    )


@pytest.mark.parametrize(
    "damage,column",
    [
        (flip_first_bit, "correct"),
        (lambda f: f.with_columns(pl.col("correct").bin.slice(0, 1)), "correct"),  # too short
        (lambda f: f.with_columns(pl.col("pred").fill_null(pl.col("pred").drop_nulls().first())), "pred"),
        (lambda f: f.filter(pl.int_range(pl.len()) != 3), "*"),  # a model x condition missing
        (lambda f: f.with_columns(pl.col("pred").list.eval(pl.element() + 1)), "pred"),
    ],
    ids=["a flipped bit", "short bits", "pred on corrupted rows", "a row missing", "other predictions"],
)
def test_validate_rejects_answers_that_are_not_the_metrics(snapshot_copy, damage, column):
    from tests.test_validate import rewrite_table

    rewrite_table(snapshot_copy, schema.ANSWERS, damage)
    result = run_cli("validate", str(snapshot_copy))
    assert result.returncode == 1 and f"{schema.ANSWERS}: column {column}" in result.stdout, result.stdout
    (snapshot_copy / schema.ANSWERS).unlink()
    result = run_cli("validate", str(snapshot_copy))
    assert result.returncode == 1 and f"{schema.ANSWERS}: column *: file is missing" in result.stdout


def as_version_4(path):
    """A snapshot as schema version 4 wrote it: no answers.parquet."""
    (path / schema.ANSWERS).unlink()
    manifest = json.loads((path / schema.MANIFEST).read_text())
    manifest["schema_version"] = 4
    (path / schema.MANIFEST).write_text(json.dumps(manifest))
    return path


def test_a_version_4_snapshot_validates_and_its_answers_come_from_metrics(snapshot_copy, tiny_snapshot):
    from dashboard import store

    result = run_cli("validate", str(as_version_4(snapshot_copy)))
    assert result.returncode == 0 and "of schema version 4, which predates answers.parquet" in result.stdout
    old, new = store.open_snapshot(snapshot_copy), store.open_snapshot(tiny_snapshot)
    assert not store.has_answers(old) and store.has_answers(new)
    computed, written = store.answers(old), store.answers(new)
    assert computed.model_ids == written.model_ids and computed.condition_ids == written.condition_ids
    np.testing.assert_array_equal(computed.bits, written.bits)
    np.testing.assert_array_equal(computed.pred, written.pred)


def test_add_to_a_version_4_snapshot_writes_its_answers(snapshot_copy, tmp_path):
    grown = tmp_path / "grown"
    result = run_cli(
        "compute", "--preset", "tiny", "--methods", "random", "--sparsities", "0.7",
        "--add-to", str(as_version_4(snapshot_copy)), "--out", str(grown), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((grown / schema.MANIFEST).read_text())["schema_version"] == schema.SCHEMA_VERSION
    assert_answers_are_the_metrics(grown)


@pytest.mark.parametrize("view", ["Pruning-fragile", "Corruption-fragile", "Pruning identified exemplars", "Robust"])
def test_the_app_opens_a_version_4_snapshot_with_the_same_tables_and_says_why_it_is_slower(monkeypatch, tmp_path, view):
    import shutil

    from tests.apphelpers import open_page, texts
    from tests.conftest import DEMO

    old = as_version_4(Path(shutil.copytree(DEMO, tmp_path / "demo")))
    shown = {}
    for root in (DEMO.parent, old.parent):
        at = open_page(monkeypatch, root, "views/fragile.py", {"fragile_view": view})
        notes = [t for t in texts(at, "caption") if "predates answers.parquet" in t]
        assert len(notes) == (root == old.parent), notes
        shown[root] = at.dataframe[0].value.drop(columns="image")
    assert shown[DEMO.parent].equals(shown[old.parent])
    if notes:
        assert "prunescope compute --preset demo --out" in notes[0]  # the command that writes them
