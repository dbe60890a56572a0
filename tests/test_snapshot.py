"""Writing, reading and the all-or-nothing guarantee of snapshot folders."""

import json

import polars as pl
import pytest

from compute import schema, snapshot
from compute.config import InputError
from compute.snapshot import SnapshotError, SnapshotWriter
from compute.validate import check_snapshot
from compute.validate import main as validate
from dashboard import store


def copy_tables(src, writer: SnapshotWriter) -> dict:
    """Re-write every table of `src` through a writer; returns its manifest."""
    for name in schema.TABLE_SCHEMAS:
        writer.write_table(name, pl.read_parquet(src / name))
    metrics = snapshot.scan_metrics(src).collect()
    for (model_id,), rows in metrics.group_by("model_id"):
        writer.write_metrics(model_id, rows.drop("model_id"))
    manifest = json.loads((src / schema.MANIFEST).read_text())
    return {k: v for k, v in manifest.items() if k not in ("schema_version", "complete")}


def test_round_trip_keeps_every_table(tiny_snapshot, tmp_path):
    out = tmp_path / "again"
    with SnapshotWriter(out) as writer:
        manifest = copy_tables(tiny_snapshot, writer)
        writer.finish(manifest)
    assert check_snapshot(out)["rows"] > 0
    original, copy = store.open_snapshot(tiny_snapshot), store.open_snapshot(out)
    for name in ("models", "conditions", "samples", "summary", "classes"):
        assert getattr(copy, name).equals(getattr(original, name)), name
    a = store.scan_metrics(original).sort("model_id", "condition_id", "sample_id").collect()
    b = store.scan_metrics(copy).sort("model_id", "condition_id", "sample_id").collect()
    assert a.equals(b)
    assert json.loads((out / schema.MANIFEST).read_text())["complete"] is True


def test_schema_types_are_the_narrow_ones(tiny_snapshot):
    import pyarrow.parquet as pq

    for name, expected in schema.TABLE_SCHEMAS.items():
        assert pq.read_schema(tiny_snapshot / name).remove_metadata().equals(expected), name
    part = next((tiny_snapshot / schema.METRICS_DIR).glob("model_id=*/*.parquet"))
    assert pq.read_schema(part).remove_metadata().equals(schema.METRICS_SCHEMA)
    assert pq.ParquetFile(part).metadata.row_group(0).column(0).compression == "ZSTD"


def test_crash_midway_leaves_no_snapshot(tiny_snapshot, tmp_path):
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated"):
        with SnapshotWriter(out) as writer:
            copy_tables(tiny_snapshot, writer)
            raise RuntimeError("simulated crash before the manifest")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too
    assert validate(str(out)) == 2


def test_crash_while_writing_the_manifest_keeps_the_old_snapshot(snapshot_copy, tiny_snapshot, monkeypatch):
    before = (snapshot_copy / schema.MANIFEST).read_text()

    def broken(data, path):
        raise OSError("simulated disk full")

    with pytest.raises(OSError, match="simulated"):
        with SnapshotWriter(snapshot_copy, overwrite=True) as writer:
            manifest = copy_tables(tiny_snapshot, writer)
            monkeypatch.setattr(snapshot, "write_json_atomic", broken)
            writer.finish(manifest)
    assert (snapshot_copy / schema.MANIFEST).read_text() == before
    assert validate(str(snapshot_copy)) == 0
    assert [p.name for p in snapshot_copy.parent.iterdir()] == [snapshot_copy.name]


def test_a_killed_writer_leaves_only_a_hidden_folder_that_never_validates(tiny_snapshot, tmp_path):
    out = tmp_path / "killed"
    writer = SnapshotWriter(out)
    copy_tables(tiny_snapshot, writer)  # the process "dies" here: no finish, no cleanup
    assert not out.exists()
    assert writer.tmp.parent.name.startswith(".")  # inside the hidden work folder
    assert validate(str(writer.tmp)) == 2
    writer.slot.release()
    assert store.list_snapshots(tmp_path) == [] or all(e.error for e in store.list_snapshots(tmp_path))


def test_existing_folder_needs_overwrite(tiny_snapshot):
    with pytest.raises(InputError, match="--overwrite"):
        SnapshotWriter(tiny_snapshot)


def test_unknown_schema_version_names_both_versions(snapshot_copy):
    manifest = json.loads((snapshot_copy / schema.MANIFEST).read_text())
    manifest["schema_version"] = 99
    (snapshot_copy / schema.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=rf"99.*version {schema.SCHEMA_VERSION}"):
        snapshot.read_manifest(snapshot_copy)
    assert validate(str(snapshot_copy)) == 2


def test_writer_refuses_a_table_missing_a_column(tmp_path):
    with SnapshotWriter(tmp_path / "s") as writer:
        with pytest.raises(ValueError, match="missing column"):
            writer.write_table(schema.CONDITIONS, pl.DataFrame({"condition_id": [0]}))


def test_model_ids_are_folder_safe():
    assert schema.model_id_for("magnitude", 0.9, 2) == "magnitude-0.9-s2"
    assert schema.model_id_for("dense", 0.0, 0) == "dense-s0"
    with pytest.raises(ValueError, match="letters, digits"):
        schema.check_model_id("../evil")


def test_summary_matches_a_hand_computation():
    rows = pl.DataFrame(
        {
            "model_id": ["m"] * 4,
            "condition_id": [0] * 4,
            "correct": [True, True, False, True],
            **{name: [1.0, 2.0, 3.0, 4.0] for name in schema.FLOAT_METRICS},
        }
    ).with_columns(pl.lit(float("nan")).alias("angle_pred"))
    summary = snapshot.summarize(rows)
    assert summary["n"][0] == 4 and summary["accuracy"][0] == 0.75
    assert summary["loss_mean"][0] == 2.5
    assert summary["loss_q50"][0] == 2.5  # linear interpolation between 2 and 3
    assert summary["loss_q10"][0] == pytest.approx(1.3)
    assert summary["angle_pred_mean"][0] is None  # NaN angles are left out


@pytest.mark.parametrize("bits", [23, 16, 12, 8])
def test_round_mantissa_keeps_sign_and_bounds_the_relative_error(bits):
    import numpy as np

    from compute.snapshot import round_mantissa

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, 2000), [0.0, -0.0, 1.0, 180.0, np.nan, np.inf, -np.inf]]
    ).astype(np.float32)
    out = round_mantissa(values, bits)
    finite = np.isfinite(values)
    assert out.dtype == np.float32
    assert np.array_equal(np.signbit(out[finite]), np.signbit(values[finite]))
    assert np.all((out[finite] == 0) == (values[finite] == 0))
    rel = np.abs(out[finite] - values[finite]) / np.maximum(np.abs(values[finite]), 1e-38)
    assert rel.max() <= 2.0 ** -(bits + 1) * 1.0001
    assert np.isnan(out[-3]) and out[-2] == np.inf and out[-1] == -np.inf
    if bits < 23:
        assert np.all(out[finite].view(np.uint32) & ((1 << (23 - bits)) - 1) == 0)  # low bits cleared
    else:
        assert np.array_equal(out, values, equal_nan=True)


def test_a_version_2_snapshot_still_reads(snapshot_copy):
    from tests.test_validate import as_version_2

    as_version_2(snapshot_copy)
    manifest = snapshot.read_manifest(snapshot_copy)
    assert manifest["schema_version"] == 2 and 2 in schema.READABLE_VERSIONS
    assert check_snapshot(snapshot_copy)["schema_version"] == 2
    assert store.open_snapshot(snapshot_copy).models.height == 5  # the app's reader too
    for version in (1, 6, "3", None):
        with pytest.raises(schema.SchemaVersionError, match="reads version 5 \\(and the earlier 2, 3, 4\\)"):
            schema.check_schema_version(version)


def test_version_2_lacks_exactly_the_layers_the_diagnostics_the_class_angles_and_the_answers():
    old, new = schema.table_schemas(2), schema.table_schemas(schema.SCHEMA_VERSION)
    assert set(new) - set(old) == {schema.LAYERS, schema.ANSWERS}
    assert set(new[schema.MODELS].names) - set(old[schema.MODELS].names) == set(schema.MODEL_DIAGNOSTICS)
    assert set(new[schema.EMBEDDING].names) - set(old[schema.EMBEDDING].names) == {"angles"}
    assert all(old[name].equals(new[name]) for name in old if name not in (schema.MODELS, schema.EMBEDDING))


def test_version_3_lacks_exactly_the_class_angles_the_dynamic_dead_relu_rate_and_the_answers():
    old, new = schema.table_schemas(3), schema.table_schemas(schema.SCHEMA_VERSION)
    assert set(new) - set(old) == {schema.ANSWERS}
    assert set(new[schema.EMBEDDING].names) - set(old[schema.EMBEDDING].names) == {"angles"}
    assert set(new[schema.MODELS].names) - set(old[schema.MODELS].names) == {"dynamic_dead_relu"}
    assert all(old[name].equals(new[name]) for name in old if name not in (schema.EMBEDDING, schema.MODELS))


def test_version_4_lacks_exactly_the_answers():
    old, new = schema.table_schemas(4), schema.table_schemas(schema.SCHEMA_VERSION)
    assert set(new) - set(old) == {schema.ANSWERS}
    assert all(old[name].equals(new[name]) for name in old)
