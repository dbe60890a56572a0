"""`prunescope validate` passes a good snapshot and catches each planted violation."""

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from compute import schema
from compute.snapshot import conform
from compute.validate import main as validate
from tests.conftest import synthesised


def rewrite_metrics(path, change):
    """Apply `change` to the first model's per-sample rows, in place."""
    part = sorted((path / schema.METRICS_DIR).glob("model_id=*/*.parquet"))[0]
    frame = pl.read_parquet(part, hive_partitioning=False)
    frame = change(frame)
    frame.write_parquet(part)
    return part.parent.name


def rewrite_table(path, name, change, keep_schema=True):
    frame = change(pl.read_parquet(path / name))
    if keep_schema:
        pq.write_table(conform(frame, schema.TABLE_SCHEMAS[name], name), path / name)
    else:
        frame.write_parquet(path / name)


def first_row(column, value):
    return lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(value).otherwise(pl.col(column)).cast(f.schema[column]).alias(column)
    )


def test_the_computed_snapshot_is_valid(tiny_snapshot, capsys):
    assert validate(str(tiny_snapshot)) == 0
    assert "valid snapshot" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("column", "change"),
    [
        (
            "correct",
            lambda f: f.with_columns(
                pl.when(pl.int_range(pl.len()) == 3)
                .then(~pl.col("correct"))
                .otherwise(pl.col("correct"))
                .alias("correct")
            ),
        ),
        (
            "logit_margin",
            lambda f: f.with_columns(
                pl.when(pl.int_range(pl.len()) < 5)
                .then(-pl.col("logit_margin"))
                .otherwise(pl.col("logit_margin"))
                .alias("logit_margin")
            ),
        ),
        (
            "geom_margin",
            lambda f: f.with_columns(
                pl.when(pl.int_range(pl.len()) == 7)
                .then(-pl.col("geom_margin"))
                .otherwise(pl.col("geom_margin"))
                .alias("geom_margin")
            ),
        ),
        ("angle_true", first_row("angle_true", 200.0)),
        ("angle_pred", first_row("angle_pred", -1.0)),
        ("loss", first_row("loss", 123.0)),
        ("p_true", first_row("p_true", 1.5)),
        ("sample_id", lambda f: f.slice(1)),
        ("sample_id", first_row("sample_id", 999_999)),
    ],
)
def test_planted_metric_violation_is_caught(snapshot_copy, capsys, column, change):
    partition = rewrite_metrics(snapshot_copy, change)
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    assert f"column {column}" in line
    assert "row" in line
    if column not in ("sample_id",):
        assert partition in line  # names the file


def test_planted_clean_accuracy_violation_is_caught(snapshot_copy, capsys):
    rewrite_table(snapshot_copy, schema.MODELS, lambda f: f.with_columns(pl.col("clean_accuracy") - 0.01))
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out
    assert "models.parquet" in line and "clean_accuracy" in line


def test_planted_negative_training_budget_is_caught(snapshot_copy, capsys):
    rewrite_table(snapshot_copy, schema.MODELS, first_row("train_epochs", -1))
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out
    assert "models.parquet" in line and "train_epochs" in line


def test_planted_summary_violation_is_caught(snapshot_copy, capsys):
    rewrite_table(snapshot_copy, schema.SUMMARY, first_row("geom_margin_mean", 42.0))
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out
    assert "summary.parquet" in line and "geom_margin_mean" in line


def test_wrong_column_type_is_caught(snapshot_copy, capsys):
    rewrite_table(
        snapshot_copy, schema.CONDITIONS, lambda f: f.with_columns(pl.col("severity").cast(pl.Int64)), keep_schema=False
    )
    assert validate(str(snapshot_copy)) == 1
    assert "conditions.parquet: column severity: has type int64" in capsys.readouterr().out


def test_missing_table_is_caught(snapshot_copy, capsys):
    (snapshot_copy / schema.EMBEDDING).unlink()
    assert validate(str(snapshot_copy)) == 1
    assert "embedding.parquet" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["no manifest", "incomplete", "not json", "not a folder"])
def test_unreadable_snapshot_exits_2(snapshot_copy, capsys, damage):
    manifest = snapshot_copy / schema.MANIFEST
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "incomplete":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))
    elif damage == "not json":
        manifest.write_text("{broken")
    target = snapshot_copy / schema.MODELS if damage == "not a folder" else snapshot_copy
    assert validate(str(target)) == 2
    assert "prunescope compute" in capsys.readouterr().out  # names the fix


# --- hardened checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("feat_norm", float("nan"), "feat_norm: is negative, NaN or infinite"),
        ("feat_norm", float("inf"), "feat_norm: is negative, NaN or infinite"),
        ("angle_true", float("nan"), "angle_true: is NaN where the feature vector is not zero"),
        ("geom_margin", float("inf"), "geom_margin: is NaN or infinite"),
        ("loss", float("nan"), "loss: is NaN"),
    ],
)
def test_non_finite_metrics_the_definitions_forbid_are_caught_in_the_metrics_file(
    snapshot_copy, capsys, column, value, message
):
    partition = rewrite_metrics(snapshot_copy, first_row(column, value))
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out
    assert message in line and partition in line and "summary" not in line


def test_a_nan_angle_of_a_zero_feature_vector_is_allowed(snapshot_copy, capsys):
    def zero_features(frame):  # the angle of a zero vector is undefined
        for column, value in (("feat_norm", 0.0), ("angle_true", float("nan")), ("angle_pred", float("nan"))):
            frame = first_row(column, value)(frame)
        return frame

    rewrite_metrics(snapshot_copy, zero_features)
    validate(str(snapshot_copy))  # the summary now disagrees; the angles themselves are fine
    assert "column angle" not in capsys.readouterr().out


def test_duplicated_conditions_are_caught(snapshot_copy, capsys):
    def duplicate(frame):
        last = frame.tail(1)
        return pl.concat([frame.head(len(frame) - 1), last, last.with_columns(pl.col("condition_id") + 100)])

    rewrite_table(snapshot_copy, schema.CONDITIONS, duplicate)
    assert validate(str(snapshot_copy)) == 1
    assert "conditions.parquet: column corruption,severity: is not unique" in capsys.readouterr().out


@pytest.mark.parametrize("stray", ["file in metrics", "nested folder", "text file", "link outside", "link loop"])
def test_stray_entries_and_links_in_metrics_are_caught_without_a_traceback(snapshot_copy, tmp_path, capsys, stray):
    metrics = snapshot_copy / schema.METRICS_DIR
    partition = sorted(metrics.iterdir())[0]
    if stray == "file in metrics":
        (metrics / "notes.txt").write_text("x")
    elif stray == "nested folder":
        (partition / "old").mkdir()
    elif stray == "text file":
        (partition / "readme.txt").write_text("x")
    elif stray == "link outside":
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (metrics / "model_id=ghost").symlink_to(outside)
    else:
        (partition / "loop").symlink_to(partition)
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "metrics/" in line and "Traceback" not in line


@pytest.mark.parametrize(
    "field,value",
    [("storage", "zstd"), ("dataset", ["digits"]), ("storage", {"metric_bits": "abc"}), ("shard", "1/2")],
)
def test_malformed_manifest_fields_give_one_line_and_exit_2(snapshot_copy, capsys, field, value):
    manifest = snapshot_copy / schema.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), field: value}))
    assert validate(str(snapshot_copy)) == 2
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and field in line and str(snapshot_copy) in line


def test_the_rebuild_hint_names_the_snapshot_at_hand(snapshot_copy, capsys):
    (snapshot_copy / schema.MANIFEST).unlink()
    assert validate(str(snapshot_copy)) == 2
    line = capsys.readouterr().out
    assert f"--out {snapshot_copy} --overwrite" in line and "data/demo" not in line


# --- schema version 3: layers, diagnostics, occlusion -----------------------------------------


@pytest.mark.parametrize(
    "name,change,message",
    [
        (schema.LAYERS, first_row("flops", 1), "models.parquet: column flops: differs from the sum of its layers'"),
        (schema.LAYERS, lambda f: f.with_columns(pl.col("nonzero") + pl.col("params")), "column nonzero"),
        (schema.LAYERS, first_row("sparsity", 0.5), "layers.parquet: column sparsity: differs from 1 - nonzero"),
        (schema.LAYERS, lambda f: f.filter(pl.col("model_id") != f["model_id"][0]), "column model_id: must hold"),
        (schema.LAYERS, lambda f: pl.concat([f, f.head(1)]), "column model_id,layer: is not unique"),
        (schema.LAYERS, first_row("kind", pl.lit("attention")), "column kind: not one of conv, linear"),
        (schema.LAYERS, first_row("prunable", True), "models.parquet: column sparsity: differs from 1 - its prunable"),
        (schema.MODELS, first_row("dead_relu", 1.5), "column dead_relu: outside [0, 1]"),
        (schema.MODELS, first_row("dynamic_dead_relu", -0.1), "column dynamic_dead_relu: outside [0, 1]"),
        (
            schema.MODELS,
            lambda f: first_row("dynamic_dead_relu", 0.4)(first_row("dead_relu", 0.5)(f)),
            "column dynamic_dead_relu: is below dead_relu",
        ),
        (schema.MODELS, first_row("dist_init", -1.0), "column dist_init: is negative"),
        (schema.MODELS, first_row("dist_dense", 0.25), "column dist_dense: is not 0 for a dense model"),
    ],
    ids=[
        "flops",
        "nonzero",
        "sparsity",
        "missing model",
        "twice",
        "kind",
        "prunable",
        "dead",
        "dynamic",
        "dynamic below dead",
        "init",
        "dense",
    ],  # fmt: skip
)
def test_planted_layer_and_diagnostic_violations_are_caught(snapshot_copy, capsys, name, change, message):
    rewrite_table(snapshot_copy, name, change)
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and message in line


def test_null_diagnostics_are_allowed(snapshot_copy):
    rewrite_table(snapshot_copy, schema.MODELS, lambda f: f.with_columns(pl.lit(None).alias("dist_init")))
    assert validate(str(snapshot_copy)) == 0


def as_version_2(path):
    """A snapshot as schema version 2 wrote it: no layers or occlusion table, no diagnostics, no class angles."""
    (path / schema.LAYERS).unlink()
    (path / schema.ANSWERS).unlink()
    (path / schema.OCCLUSION).unlink(missing_ok=True)
    models = pl.read_parquet(path / schema.MODELS).drop(schema.MODEL_DIAGNOSTICS)
    pq.write_table(conform(models, schema.table_schemas(2)[schema.MODELS], "models"), path / schema.MODELS)
    embedding = pl.read_parquet(path / schema.EMBEDDING).drop("angles")
    pq.write_table(conform(embedding, schema.table_schemas(2)[schema.EMBEDDING], "embedding"), path / schema.EMBEDDING)
    manifest = json.loads((path / schema.MANIFEST).read_text())
    manifest["schema_version"] = 2
    manifest.pop("occlusion", None)
    (path / schema.MANIFEST).write_text(json.dumps(manifest))
    return path


def test_a_version_2_snapshot_is_valid_and_said_to_predate_the_new_tables(snapshot_copy, capsys):
    assert validate(str(as_version_2(snapshot_copy))) == 0
    line = capsys.readouterr().out
    assert "is a valid snapshot (of schema version 2, which predates layers.parquet" in line
    assert "5 models x 7 conditions x 60 samples" in line
    (snapshot_copy / schema.CLASSES).unlink()  # what version 2 had is still required
    assert validate(str(snapshot_copy)) == 1


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synth snapshot: the one with an occlusion table among the fixtures."""
    return synthesised(tmp_path_factory, "synth", 3, 20)


def test_the_synthetic_tables_are_valid(synthetic):
    assert validate(str(synthetic)) == 0
    occlusion = pl.read_parquet(synthetic / schema.OCCLUSION)
    assert occlusion.height == 3 * 20 * 10 * 49  # models x (clean + 19 at severity 3) x samples x positions
    thumbnails = pl.read_parquet(synthetic / schema.THUMBNAILS)
    assert set(occlusion["sample_id"]) == set(thumbnails["sample_id"])  # the occluded samples' images are kept


@pytest.mark.parametrize(
    "change,message",
    [
        (first_row("row", 7), "column row: puts the 2 px patch outside the image"),
        (first_row("col", -1), "column col: puts the 2 px patch outside the image"),
        (first_row("sample_id", 999), "column sample_id: names no sample of the snapshot"),
        (first_row("model_id", pl.lit("ghost")), "column model_id: names no model of the snapshot"),
        (first_row("d_angle_true", 200.0), "column d_angle_true: outside [-180, 180]"),
        (lambda f: pl.concat([f, f.head(1)]), "is not unique"),
    ],
)
def test_planted_occlusion_violations_are_caught(synthetic, tmp_path, capsys, change, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    frame = change(pl.read_parquet(copy / schema.OCCLUSION))
    pq.write_table(conform(frame, schema.OCCLUSION_SCHEMA, "occlusion"), copy / schema.OCCLUSION)
    assert validate(str(copy)) == 1
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "occlusion.parquet" in line and message in line


def parent_of(model: str, parent: str):
    return lambda f: f.with_columns(
        pl.when(pl.col("model_id") == model).then(pl.lit(parent)).otherwise(pl.col("parent_id")).alias("parent_id")
    )


@pytest.mark.parametrize(
    "change,column,message",
    [
        (first_row("target_sparsity", 1.7), "target_sparsity", "outside [0, 1]"),
        (first_row("target_sparsity", float("nan")), "target_sparsity", "outside [0, 1]"),
        (parent_of("dense-s0", "magnitude-0.5-s0"), "parent_id", "not dense"),  # a cycle
        (parent_of("random-0.5-s0", "magnitude-0.5-s0"), "parent_id", "not dense"),  # a chain
    ],
)
def test_planted_parent_graph_and_target_violations_are_caught(snapshot_copy, capsys, change, column, message):
    models = pl.read_parquet(snapshot_copy / schema.MODELS)
    assert {"dense-s0", "magnitude-0.5-s0", "random-0.5-s0"} <= set(models["model_id"])
    rewrite_table(snapshot_copy, schema.MODELS, change)
    assert validate(str(snapshot_copy)) == 1
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "models.parquet" in line and column in line and message in line, line
