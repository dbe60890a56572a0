"""Writing and opening snapshot folders (torch-free).

A snapshot is built in the hidden work folder beside its destination (compute.output).
Every file is written under a temporary name, fsynced and renamed into place; the
manifest, which says `complete: true`, is written last; then the folder is renamed to its
destination. A crash at any point leaves the old or the new snapshot reachable, never half
a snapshot at the destination.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from compute import schema
from compute.output import OutputSlot, check_target, write_atomic, write_bytes_atomic, write_json_atomic


class SnapshotError(Exception):
    """A path is not a readable snapshot; the message names the problem and the fix.

    `problem` names the file at fault by its place in the snapshot (never a server path),
    so the app can show it beside commands of its own; str() adds the fix for the CLI.
    """

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem if fix is None else f"{problem}; {fix}")
        self.problem = problem


def write_parquet_atomic(table: pa.Table, path: Path, row_groups: list[int] | None = None) -> None:
    """zstd Parquet, written under a temporary name, fsynced and renamed into place.

    Float columns use the BYTE_STREAM_SPLIT encoding (lossless; zstd then compresses the
    exponent bytes apart from the mantissa bytes, about 40 % smaller per-sample metrics)
    and skip dictionary encoding, which only helps the integer and string columns.
    """
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    others = [f.name for f in table.schema if f.name not in floats]
    options = {"use_byte_stream_split": floats or False, "use_dictionary": others or False, **schema.PARQUET_OPTIONS}

    def fill(tmp: Path) -> None:
        if row_groups is None:
            pq.write_table(table, tmp, **options)
            return
        with pq.ParquetWriter(tmp, table.schema, **options) as out:
            start = 0
            for rows in row_groups:  # one row group each (`rows` stays below the writer's default size)
                out.write_table(table.slice(start, rows), row_group_size=max(rows, 1))
                start += rows

    write_atomic(path, fill)


def conform(table: pa.Table | pl.DataFrame, target: pa.Schema, what: str) -> pa.Table:
    """Select and cast the columns of `target`, in its order; a missing column is an error."""
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    missing = [name for name in target.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
    return table.select(target.names).cast(target)


def metrics_table(model_id: str, table: pa.Table | pl.DataFrame) -> pa.Table:
    """A model's per-sample rows (every sample on each of its conditions) in the snapshot's
    schema: each sample's `block` set, sorted by block, condition and sample, as
    `write_metrics_atomic` lays them into row groups (docs/DESIGN.md, metrics/)."""
    frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    ids = np.sort(frame["sample_id"].unique().to_numpy())
    rank = np.searchsorted(ids, frame["sample_id"].to_numpy())
    frame = frame.with_columns(pl.Series("block", rank % schema.sample_blocks(len(ids)), dtype=pl.Int16))
    return conform(frame.sort("block", "condition_id", "sample_id"), schema.METRICS_SCHEMA, f"metrics of {model_id}")


def metrics_row_groups(table: pa.Table) -> list[int]:
    """Row counts of the row groups of a `metrics_table`: one block x CONDITIONS_PER_GROUP
    conditions each, consecutive ones joined until a group holds MIN_ROW_GROUP_ROWS and a short
    tail joined to the last (small row groups compress worse and save nothing on a small snapshot)."""
    block = table.column("block").to_numpy().astype(np.int64)
    group = table.column("condition_id").to_numpy().astype(np.int64) // schema.CONDITIONS_PER_GROUP
    starts = np.flatnonzero(np.diff(block * 100_000 + group, prepend=-1))
    sizes, current = [], 0
    for rows in np.diff(np.append(starts, len(block))).tolist():
        current += rows
        if current >= schema.MIN_ROW_GROUP_ROWS:
            sizes.append(current)
            current = 0
    if current and sizes and current < schema.MIN_ROW_GROUP_ROWS:  # a short tail joins the last group
        sizes[-1] += current
    elif current:
        sizes.append(current)
    return sizes


def write_metrics_atomic(table: pa.Table, path: Path) -> None:
    """A `metrics_table` written as write_parquet_atomic writes any table, in its row groups."""
    write_parquet_atomic(table, path, metrics_row_groups(table))


class SnapshotWriter:
    """Builds a snapshot in the locked work folder beside `out` and places it on `finish`.

    `out` is checked first (see compute.output): a command never replaces anything but a
    snapshot (with `overwrite`) or an empty folder. Use as a context manager: leaving the
    block by an exception removes the half-written snapshot and leaves `out` untouched.
    With a `slot` (compute's resumable work folder) the work folder outlives a failure.
    """

    def __init__(self, out: str | Path, overwrite: bool = False, slot: OutputSlot | None = None):
        self.slot = slot or OutputSlot(check_target(out, overwrite))
        self.owns_slot = slot is None
        if self.owns_slot:
            self.slot.open(overwrite)
        self.final = self.slot.target.path
        self.tmp = self.slot.fresh_staging()
        self.finished = False

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.finished:
            self.abort()

    def abort(self) -> None:
        self.slot.restore()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.owns_slot:
            self.slot.remove()

    def write_table(self, name: str, table: pa.Table | pl.DataFrame) -> None:
        target = schema.TABLE_SCHEMAS.get(name) or schema.OPTIONAL_SCHEMAS[name]
        write_parquet_atomic(conform(table, target, name), self.tmp / name)

    def write_metrics(self, model_id: str, table: pa.Table | pl.DataFrame, part: int = 0) -> None:
        folder = self.tmp / schema.metrics_partition(schema.check_model_id(model_id))
        folder.mkdir(parents=True, exist_ok=True)
        write_metrics_atomic(metrics_table(model_id, table), folder / f"part-{part}.parquet")

    def write_file(self, relative: str, data: bytes) -> None:
        """Any other file of the snapshot (model checkpoints), written atomically."""
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)

    def copy_file(self, relative: str, source: Path) -> None:
        """A file written elsewhere (a shard, the work folder), linked or copied as it is."""
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, path)  # instant, and the source stays for a resumed run
        except OSError:
            write_atomic(path, lambda tmp: shutil.copyfile(source, tmp))

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest last, then move the snapshot to its destination."""
        manifest = {"schema_version": schema.SCHEMA_VERSION, **manifest, "complete": True}
        write_json_atomic(manifest, self.tmp / schema.MANIFEST)
        path = self.slot.place()
        self.finished = True
        self.slot.remove()
        return path


# --- reading ---------------------------------------------------------------------

DEMO_COMMAND = "prunescope compute --preset demo --out data/demo --overwrite"

#: manifest fields the readers rely on, and the JSON type each must have
MANIFEST_FIELDS = {
    "dataset": dict, "storage": dict, "counts": dict, "config": dict, "shard": dict, "parents": dict,
    "model_notes": dict, "methods": dict,
}  # fmt: skip


def rebuild_hint(path: str | Path) -> str:
    """How to rebuild the snapshot at `path`: the demo's own command, or the one that wrote it."""
    path = Path(path)
    if path.name == "demo":
        return f"prunescope compute --preset demo --out {path} --overwrite"
    return f"run the prunescope compute (or merge) command that wrote it again with --out {path} --overwrite"


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a complete snapshot of a known schema version, else SnapshotError."""
    path = Path(path)
    fix = f"rebuild it: {rebuild_hint(path)}"
    if not path.is_dir():
        raise SnapshotError(f"{path} is not a folder", f"build a snapshot there ({rebuild_hint(path)})")
    where = f"{path.name}/{schema.MANIFEST}"
    manifest_path = path / schema.MANIFEST
    if not manifest_path.is_file():
        raise SnapshotError(f"{path.name} has no {schema.MANIFEST}, so it is not a complete snapshot", fix)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SnapshotError(f"{where} is not readable JSON ({type(err).__name__})", fix) from err
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        raise SnapshotError(f"{where} does not mark the snapshot complete", fix)
    try:
        schema.check_schema_version(manifest.get("schema_version"))
    except schema.SchemaVersionError as err:
        raise SnapshotError(f"{where}: {err}", fix) from err
    for name, kind in MANIFEST_FIELDS.items():
        if name in manifest and not isinstance(manifest[name], kind):
            found = type(manifest[name]).__name__
            raise SnapshotError(f"{where}: field {name!r} must be a JSON object, not {found}", fix)
    bits = manifest.get("storage", {}).get("metric_bits", 23)
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 23:
        raise SnapshotError(f"{where}: storage.metric_bits must be a whole number 1-23, not {bits!r:.40}", fix)
    shard = manifest.get("shard")
    if shard is not None and not all(isinstance(shard.get(k), int) for k in ("index", "count")):
        raise SnapshotError(f"{where}: shard must hold whole numbers index and count", fix)
    return manifest


def scan_metrics(path: str | Path) -> pl.LazyFrame:
    """All per-sample rows of a snapshot, lazily, with `model_id` from the partition folder."""
    return pl.scan_parquet(
        Path(path) / schema.METRICS_DIR / "**" / "*.parquet",
        hive_partitioning=True,
        hive_schema={"model_id": pl.String},
    )


def sample_errors(path: str | Path) -> pl.DataFrame:
    """Per sample of the snapshot (or snapshot being written) at `path`: `errors`, how many of
    its models' answers under all conditions are wrong."""
    return scan_metrics(path).group_by("sample_id").agg((~pl.col("correct")).sum().alias("errors")).collect()


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to `bits` mantissa bits (23 = unchanged), to nearest.

    The low mantissa bytes become zero, so BYTE_STREAM_SPLIT + zstd stores them almost
    for free. Sign, zero and non-finite values are kept; so are the signs of the margins,
    which the validator relies on.
    """
    values = np.asarray(values, dtype=np.float32)
    if bits >= 23:
        return values
    drop = 23 - bits
    raw = values.view(np.uint32).astype(np.uint64)
    rounded = ((raw + (1 << (drop - 1))) >> drop) << drop
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(values), out, values)


def metric_tolerance(manifest: dict) -> float:
    """Absolute tolerance of the invariants linking float metrics, given their precision."""
    bits = int(manifest.get("storage", {}).get("metric_bits", 23))
    return 1e-5 + 4.0 * 2.0 ** -(bits + 1)


# --- the one definition of summary.parquet ---------------------------------------

#: the rows' order, whoever writes the table (a run, merge, --add-to)
SUMMARY_ORDER = ("model_id", "condition_id")


def summarize(metrics: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Per model x condition: n, accuracy, and mean and quantiles of every float metric.

    NaN values (angles of a zero feature vector) are left out of means and quantiles.
    `metrics` must carry a `model_id` column.
    """
    aggregations = [pl.len().alias("n"), pl.col("correct").mean().alias("accuracy")]
    for name in schema.FLOAT_METRICS:
        value = pl.col(name).cast(pl.Float64).fill_nan(None)
        aggregations.append(value.mean().alias(f"{name}_mean"))
        for q in schema.SUMMARY_QUANTILES:
            aggregations.append(value.quantile(q, interpolation="linear").alias(schema.quantile_column(name, q)))
    return (
        metrics.lazy().group_by(*SUMMARY_ORDER).agg(aggregations).sort(*SUMMARY_ORDER).collect()
    )
