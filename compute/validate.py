"""`prunescope validate PATH`: check a snapshot against the schema and its invariants.

Torch-free and lazy: per-sample rows are scanned with polars, never loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from compute import schema
from compute.snapshot import SnapshotError, metric_tolerance, read_manifest, scan_metrics, summarize

#: float32 storage of float64 computations
ABS_TOL = 1e-5
REL_TOL = 1e-4


@dataclass
class Violation(Exception):
    file: str
    column: str
    message: str
    rows: str = ""

    def __str__(self) -> str:
        where = f" ({self.rows})" if self.rows else ""
        return f"{self.file}: column {self.column}: {self.message}{where}"


def _rows(frame: pl.DataFrame, total: int | None = None, limit: int = 5) -> str:
    """A short description of offending rows: count and the first few keys."""
    total = len(frame) if total is None else total
    keys = [c for c in ("model_id", "condition_id", "sample_id", "class") if c in frame.columns]
    shown = "; ".join(", ".join(f"{k}={row[k]}" for k in keys) for row in frame.head(limit).iter_rows(named=True))
    return f"{total} row(s), e.g. {shown}" if shown else f"{total} row(s)"


def _logical(dtype: pa.DataType) -> pa.DataType:
    """Large and small string/binary/list types hold the same values."""
    if pa.types.is_large_string(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype):
        return pa.binary()
    if pa.types.is_large_list(dtype):
        return pa.list_(_logical(dtype.value_type))
    if pa.types.is_list(dtype):
        return pa.list_(_logical(dtype.value_type))
    return dtype


def check_file_schema(path: Path, name: str, expected) -> None:
    try:
        found = pq.read_schema(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a violation
        raise Violation(name, "*", f"unreadable Parquet file ({err})") from err
    for field in expected:
        if field.name not in found.names:
            raise Violation(name, field.name, "is missing")
        if _logical(found.field(field.name).type) != _logical(field.type):
            raise Violation(name, field.name, f"has type {found.field(field.name).type}, expected {field.type}")


def _unique(frame: pl.DataFrame, keys: list[str], name: str) -> None:
    duplicated = frame.filter(pl.struct(keys).is_duplicated())
    if len(duplicated):
        raise Violation(name, ",".join(keys), "is not unique", _rows(duplicated))


def _close(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """|a - b| within tolerance; NaN equals NaN; null never matches."""
    both_nan = a.is_nan() & b.is_nan()
    return both_nan | ((a - b).abs() <= ABS_TOL + REL_TOL * b.abs())


def metric_partitions(path: Path) -> list[Path]:
    """The model_id=<id> folders of metrics/, each holding Parquet files only; anything else
    there (a stray or nested file, a symbolic link that may point anywhere or loop) is a
    violation, found before any scan would follow it."""
    root = path / schema.METRICS_DIR
    if root.is_symlink() or not root.is_dir():
        raise Violation(schema.METRICS_DIR, "*", "is missing or a symbolic link; a snapshot holds its own files")
    partitions = sorted(root.iterdir())
    if not partitions:
        raise Violation(schema.METRICS_DIR, "*", "holds no model_id=<id> partition")
    for folder in partitions:
        where = f"{schema.METRICS_DIR}/{folder.name}"
        if folder.is_symlink():
            raise Violation(where, "*", "is a symbolic link; a snapshot holds its own files")
        if not folder.is_dir() or not folder.name.startswith("model_id="):
            raise Violation(where, "*", "is not a model_id=<id> folder; remove it")
        entries = sorted(folder.iterdir())
        if not entries:
            raise Violation(where, "*", "holds no Parquet file")
        for entry in entries:
            if entry.is_symlink() or not entry.is_file() or entry.suffix != ".parquet":
                raise Violation(f"{where}/{entry.name}", "*", "is not a Parquet file of the partition; remove it")
    return partitions


def check_snapshot(path: str | Path) -> dict:
    """Raise SnapshotError if `path` is not a readable snapshot, Violation on the first
    broken invariant; return counts when all hold."""
    path = Path(path)
    manifest = read_manifest(path)
    version = manifest["schema_version"]
    for name, expected in schema.table_schemas(version).items():
        if (path / name).is_symlink():
            raise Violation(name, "*", "is a symbolic link; a snapshot holds its own files")
        if not (path / name).is_file():
            raise Violation(name, "*", "file is missing")
        check_file_schema(path / name, name, expected)
    if (path / schema.OCCLUSION).exists():
        check_file_schema(path / schema.OCCLUSION, schema.OCCLUSION, schema.OCCLUSION_SCHEMA)
    partitions = metric_partitions(path)
    for folder in partitions:
        for file in sorted(folder.iterdir()):
            check_file_schema(file, str(file.relative_to(path)), schema.metrics_schema(version))

    models = pl.read_parquet(path / schema.MODELS)
    conditions = pl.read_parquet(path / schema.CONDITIONS)
    samples = pl.read_parquet(path / schema.SAMPLES, columns=["sample_id", "label"])
    _unique(models, ["model_id"], schema.MODELS)
    _unique(conditions, ["condition_id"], schema.CONDITIONS)
    _unique(conditions, ["corruption", "severity"], schema.CONDITIONS)
    _unique(samples, ["sample_id"], schema.SAMPLES)

    # models
    bad = models.filter(~pl.col("family").is_in(schema.MODEL_FAMILIES))
    if len(bad):
        raise Violation(schema.MODELS, "family", f"not one of {', '.join(schema.MODEL_FAMILIES)}", _rows(bad))
    bad = models.filter((pl.col("sparsity") < 0) | (pl.col("sparsity") > 1) | pl.col("sparsity").is_nan())
    if len(bad):
        raise Violation(schema.MODELS, "sparsity", "outside [0, 1]", _rows(bad))
    bad = models.filter((pl.col("params_nonzero") > pl.col("params_total")) | (pl.col("params_nonzero") < 0))
    if len(bad):
        raise Violation(schema.MODELS, "params_nonzero", "is negative or above params_total", _rows(bad))
    bad = models.filter(pl.col("train_epochs") < 0)
    if len(bad):
        raise Violation(schema.MODELS, "train_epochs", "is negative", _rows(bad))
    # a shard (compute --shard K/N) may hold models whose dense parent another shard trained; its
    # manifest records those parents (their weights' SHA-256), and merge brings them together
    elsewhere = list(manifest.get("parents", {})) if shard_count(manifest) > 1 else []
    known = pl.col("parent_id").is_in(models["model_id"].implode()) | pl.col("parent_id").is_in(elsewhere)
    bad = models.filter(~known)
    if len(bad):
        raise Violation(schema.MODELS, "parent_id", "names no model of this snapshot", _rows(bad))
    # a pruned model's parent is a dense model, one that is its own parent: no cycle, no chain
    dense = pl.concat([models.filter(pl.col("parent_id") == pl.col("model_id"))["model_id"], pl.Series(elsewhere,
                      dtype=pl.String)]).implode()  # fmt: skip
    bad = models.filter((pl.col("parent_id") != pl.col("model_id")) & ~pl.col("parent_id").is_in(dense))
    if len(bad):
        raise Violation(schema.MODELS, "parent_id", "names a model that is not dense (not its own parent)", _rows(bad))
    target = pl.col("target_sparsity")
    bad = models.filter(~target.is_between(0.0, 1.0) | target.is_nan())
    if len(bad):
        raise Violation(schema.MODELS, "target_sparsity", "outside [0, 1]", _rows(bad))
    partition_ids = {folder.name.split("=", 1)[1] for folder in partitions}
    if partition_ids != set(models["model_id"]):
        extra = sorted(partition_ids - set(models["model_id"]))
        missing = sorted(set(models["model_id"]) - partition_ids)
        raise Violation(
            schema.METRICS_DIR, "model_id", f"partitions do not match models.parquet (missing {missing}, extra {extra})"
        )

    # conditions
    clean = conditions.filter(pl.col("corruption") == schema.CLEAN)
    if len(clean) != 1 or clean["severity"][0] != 0 or clean["family"][0] != "clean":
        raise Violation(
            schema.CONDITIONS, "corruption", "needs exactly one 'clean' row with severity 0 and family clean"
        )
    corrupted = conditions.filter(pl.col("corruption") != schema.CLEAN)
    expected_family = pl.col("corruption").replace_strict(schema.CORRUPTION_FAMILIES, default=None)
    bad = corrupted.filter(expected_family.is_null() | (pl.col("family") != expected_family))
    if len(bad):
        raise Violation(schema.CONDITIONS, "family", "unknown corruption or wrong family", _rows(bad))
    bad = corrupted.filter(~pl.col("severity").is_between(1, 5))
    if len(bad):
        raise Violation(schema.CONDITIONS, "severity", "outside 1-5", _rows(bad))
    clean_id = int(clean["condition_id"][0])

    # per-sample rows, lazily; float metrics may be stored rounded (manifest storage.metric_bits)
    tolerance = metric_tolerance(manifest)
    metrics = scan_metrics(path)
    ranks = samples.sort("sample_id").with_row_index("rank").select("sample_id", "rank")
    labelled = metrics.join(samples.lazy(), on="sample_id", how="left").join(ranks.lazy(), on="sample_id", how="left")
    blocks = schema.sample_blocks(len(samples))
    checks: list[tuple[str, str, pl.Expr]] = [
        ("sample_id", "names no sample of samples.parquet", pl.col("label").is_null()),
        *(
            [("block", f"is not the sample's rank modulo {blocks}", pl.col("block") != pl.col("rank") % blocks)]
            if version >= 5
            else []
        ),
        (
            "condition_id",
            "names no condition of conditions.parquet",
            ~pl.col("condition_id").is_in(conditions["condition_id"].implode()),
        ),
        ("correct", "disagrees with pred == label", pl.col("correct") != (pl.col("pred") == pl.col("label"))),
        # ties (margin exactly 0) may go either way: argmax picks the first maximum
        (
            "logit_margin",
            "is positive on a wrong prediction or negative on a right one",
            (pl.col("correct") & (pl.col("logit_margin") < 0)) | (~pl.col("correct") & (pl.col("logit_margin") > 0)),
        ),
        ("logit_margin", "is NaN or infinite", ~pl.col("logit_margin").is_finite()),
        ("geom_margin", "is NaN or infinite", ~pl.col("geom_margin").is_finite()),
        ("loss", "is NaN", pl.col("loss").is_nan()),
        *[
            (angle, "is NaN where the feature vector is not zero", pl.col(angle).is_nan() & (pl.col("feat_norm") != 0))
            for angle in ("angle_true", "angle_pred")
        ],
        (
            "geom_margin",
            "has a sign that disagrees with logit_margin",
            pl.col("geom_margin").sign() != pl.col("logit_margin").sign(),
        ),
        (
            "angle_true",
            "outside [0, 180] and not NaN",
            ~(pl.col("angle_true").is_between(0, 180) | pl.col("angle_true").is_nan()),
        ),
        (
            "angle_pred",
            "outside [0, 180] and not NaN",
            ~(pl.col("angle_pred").is_between(0, 180) | pl.col("angle_pred").is_nan()),
        ),
        # polars orders NaN above every number, so NaN >= 0 holds: test finiteness too
        ("feat_norm", "is negative, NaN or infinite", ~(pl.col("feat_norm").is_finite() & (pl.col("feat_norm") >= 0))),
        ("p_true", "outside [0, 1]", ~pl.col("p_true").is_between(0, 1)),
        (
            "confidence",
            "is below p_true or above 1",
            ~((pl.col("confidence") >= pl.col("p_true") - tolerance) & (pl.col("confidence") <= 1)),
        ),
        (
            "loss",
            "is not -log(p_true)",
            ~((-pl.col("loss").cast(pl.Float64)).exp() - pl.col("p_true")).abs().le(tolerance),
        ),
        (
            "confidence",
            "differs from p_true on a right prediction",
            pl.col("correct") & ~_close(pl.col("confidence"), pl.col("p_true")),
        ),
    ]
    keep = ["model_id", "condition_id", "sample_id"]
    flags = labelled.select(*keep, *[expr.fill_null(True).alias(f"bad{i}") for i, (_, _, expr) in enumerate(checks)])
    counts = flags.select([pl.col(f"bad{i}").sum() for i in range(len(checks))]).collect().row(0)
    for i, (column, message, _) in enumerate(checks):
        if counts[i]:
            offending = flags.filter(pl.col(f"bad{i}")).select(keep).head(5).collect()
            file = schema.metrics_partition(offending["model_id"][0])
            raise Violation(file, column, message, _rows(offending, total=counts[i]))

    # completeness: every model x condition x sample exactly once
    n_models, n_conditions, n_samples = len(models), len(conditions), len(samples)
    grid = (
        metrics.group_by("model_id", "condition_id")
        .agg(pl.len().alias("n"), pl.col("sample_id").n_unique().alias("unique"))
        .collect()
    )
    bad = grid.filter((pl.col("n") != n_samples) | (pl.col("unique") != n_samples))
    if len(bad) or len(grid) != n_models * n_conditions:
        raise Violation(
            schema.METRICS_DIR,
            "sample_id",
            f"every model x condition must hold each of the {n_samples} samples once "
            f"({len(grid)} of {n_models * n_conditions} model x condition groups present)",
            _rows(bad) if len(bad) else "",
        )

    # clean_accuracy equals the mean of `correct` on the clean condition
    accuracy = (
        metrics.filter(pl.col("condition_id") == clean_id)
        .group_by("model_id")
        .agg(pl.col("correct").mean().alias("measured"))
        .collect()
    )
    joined = models.join(accuracy, on="model_id", how="left")
    bad = joined.filter(~_close(pl.col("clean_accuracy").cast(pl.Float64), pl.col("measured")).fill_null(False))
    if len(bad):
        raise Violation(
            schema.MODELS, "clean_accuracy", "differs from the mean of `correct` on the clean condition", _rows(bad)
        )

    # summary consistent with metrics
    summary = pl.read_parquet(path / schema.SUMMARY)
    expected = summarize(metrics)
    if len(summary) != len(expected):
        raise Violation(
            schema.SUMMARY, "*", f"has {len(summary)} rows, metrics give {len(expected)} model x condition groups"
        )
    joined = expected.join(summary, on=["model_id", "condition_id"], how="left", suffix="_stored")
    for column in [c for c in expected.columns if c not in ("model_id", "condition_id")]:
        stored = pl.col(f"{column}_stored").cast(pl.Float64)
        bad = joined.filter(
            ~(
                _close(stored, pl.col(column).cast(pl.Float64)) | (stored.is_null() & pl.col(column).is_null())
            ).fill_null(False)
        )
        if len(bad):
            raise Violation(schema.SUMMARY, column, "disagrees with metrics/", _rows(bad))

    # classes and embedding cover every model
    classes = pl.read_parquet(path / schema.CLASSES)
    n_classes = len(manifest.get("dataset", {}).get("classes", [])) or classes["class"].n_unique()
    per_model = classes.group_by("model_id").agg(pl.len().alias("n"))
    bad = per_model.filter(pl.col("n") != n_classes)
    if len(bad) or set(per_model["model_id"]) != set(models["model_id"]):
        raise Violation(schema.CLASSES, "class", f"every model needs {n_classes} class rows", _rows(bad))
    bad = classes.filter(pl.col("angle_to").list.len() != n_classes)
    if len(bad):
        raise Violation(schema.CLASSES, "angle_to", f"must list {n_classes} angles", _rows(bad))
    embedding = pl.read_parquet(path / schema.EMBEDDING)
    per_model = embedding.group_by("model_id").agg(pl.col("sample_id").n_unique().alias("n"), pl.len().alias("rows"))
    bad = per_model.filter((pl.col("n") != n_samples) | (pl.col("rows") != n_samples))
    if len(bad) or set(per_model["model_id"]) != set(models["model_id"]):
        raise Violation(schema.EMBEDDING, "sample_id", "every model needs one point per sample", _rows(bad))

    if version >= 5:
        check_answers(path, models["model_id"].to_list(), conditions, samples, n_classes)
    if version >= 4:
        clean_angles = metrics.filter(pl.col("condition_id") == clean_id).select("model_id", "sample_id", "angle_true")
        check_class_angles(embedding, clean_angles.collect(), samples, n_classes)
    if version >= 3:
        check_diagnostics(models)
        check_layers(pl.read_parquet(path / schema.LAYERS), models)
    if (path / schema.OCCLUSION).exists():
        check_occlusion(pl.read_parquet(path / schema.OCCLUSION), manifest, models, conditions, samples)

    absent = sorted(set(models["parent_id"]) - set(models["model_id"]))
    return {
        "shard": manifest.get("shard") if absent else None,
        "absent_parents": absent,
        "models": n_models,
        "conditions": n_conditions,
        "samples": n_samples,
        "rows": n_models * n_conditions * n_samples,
        "schema_version": version,
    }


#: per-sample rows of metrics/ that validate compares with answers.parquet; beyond it, an evenly spaced subset of models
ANSWER_CHECK_ROWS = 20_000_000


def check_answers(path: Path, model_ids: list[str], conditions: pl.DataFrame, samples: pl.DataFrame, n_classes: int):
    """One row per model x condition; `correct` holds one bit per sample (zero padding) and
    `pred` every sample's prediction on exactly the clean conditions; both agree with
    metrics/ (for a large snapshot, on an evenly spaced subset of its models, listed in the
    line of a disagreement)."""
    table = pl.read_parquet(path / schema.ANSWERS)
    n = samples.height
    keys = table.select("model_id", "condition_id")
    expected = pl.DataFrame({"model_id": model_ids}).join(conditions.select("condition_id"), how="cross")
    if (
        keys.height != expected.height
        or keys.is_duplicated().any()
        or len(expected.join(keys, on=keys.columns, how="anti"))
    ):
        raise Violation(schema.ANSWERS, "*", f"needs one row per model x condition ({expected.height})")
    width = (n + 7) // 8
    bad = table.filter(pl.col("correct").bin.size() != width)
    if len(bad):
        raise Violation(
            schema.ANSWERS, "correct", f"must hold {width} bytes, one bit per sample", _rows(bad.select(keys.columns))
        )
    clean = conditions.filter(pl.col("corruption") == schema.CLEAN)["condition_id"].to_list()
    on_clean = pl.col("condition_id").is_in(clean)
    bad = table.filter(on_clean.ne(pl.col("pred").is_not_null()) | (on_clean & (pl.col("pred").list.len() != n)))
    if len(bad):
        raise Violation(
            schema.ANSWERS,
            "pred",
            f"lists the {n} predictions on clean conditions only",
            _rows(bad.select(keys.columns)),
        )
    per_model = n * conditions.height
    checked = model_ids if len(model_ids) * per_model <= ANSWER_CHECK_ROWS else [
        model_ids[i] for i in np.linspace(0, len(model_ids) - 1, max(1, ANSWER_CHECK_ROWS // per_model)).astype(int)
    ]  # fmt: skip
    order = np.sort(samples["sample_id"].to_numpy())
    for model_id in dict.fromkeys(checked):
        rows = (
            pl.read_parquet(path / schema.metrics_partition(model_id) / "*.parquet",
                            columns=["condition_id", "sample_id", "correct", "pred"])
            .sort("condition_id", "sample_id")
        )  # fmt: skip
        mine = table.filter(pl.col("model_id") == model_id).sort("condition_id")
        bits = np.frombuffer(b"".join(mine["correct"].to_list()), np.uint8).reshape(mine.height, width)
        unpacked = np.unpackbits(bits, axis=1)
        if unpacked[:, n:].any():
            raise Violation(schema.ANSWERS, "correct", "has bits set beyond the last sample", f"model_id={model_id}")
        if not np.array_equal(
            rows["sample_id"].to_numpy().reshape(mine.height, n), np.broadcast_to(order, (mine.height, n))
        ):
            raise Violation(schema.ANSWERS, "*", "cannot be checked: metrics/ lacks samples", f"model_id={model_id}")
        if not np.array_equal(unpacked[:, :n].astype(bool), rows["correct"].to_numpy().reshape(mine.height, n)):
            raise Violation(schema.ANSWERS, "correct", "disagrees with metrics/", f"model_id={model_id}")
        stored = mine.filter(pl.col("pred").is_not_null())
        want = rows.filter(pl.col("condition_id").is_in(stored["condition_id"].to_list()))["pred"].to_numpy()
        got = stored["pred"].explode().to_numpy()
        if not np.array_equal(got, want) or (len(got) and not 0 <= got.min() <= got.max() < n_classes):
            raise Violation(schema.ANSWERS, "pred", "disagrees with metrics/", f"model_id={model_id}")


def check_class_angles(embedding: pl.DataFrame, clean: pl.DataFrame, samples: pl.DataFrame, n_classes: int) -> None:
    """Every row lists one angle per class, each within [0, 180] degrees or NaN (a zero
    vector has no direction), and the angle to the sample's own class is its clean angle_true."""
    bad = embedding.filter(pl.col("angles").list.len() != n_classes)
    if len(bad):
        raise Violation(schema.EMBEDDING, "angles", f"must list {n_classes} angles", _rows(bad.drop("angles")))
    # NaN compares above 180 in polars; a NaN angle is allowed, so test the range on the rest
    bad = embedding.filter(
        pl.col("angles").list.eval(pl.element().is_not_nan() & ~pl.element().is_between(0, 180)).list.any()
    )
    if len(bad):
        raise Violation(schema.EMBEDDING, "angles", "outside [0, 180] degrees", _rows(bad.drop("angles")))
    own = (
        embedding.join(samples.select("sample_id", "label"), on="sample_id")
        .select("model_id", "sample_id", pl.col("angles").list.get(pl.col("label").cast(pl.Int64)).alias("own"))
        .join(clean, on=["model_id", "sample_id"])
    )
    bad = own.filter(~_close(pl.col("own"), pl.col("angle_true")).fill_null(False))
    if len(bad):
        raise Violation(
            schema.EMBEDDING, "angles", "the angle to the true class differs from the clean angle_true", _rows(bad)
        )


def check_diagnostics(models: pl.DataFrame) -> None:
    """The ReLU rates fractions, the distances finite and >= 0, each null where unknown; a
    unit never active is inactive for every image, so dynamic_dead_relu >= dead_relu; a dense
    model is at distance 0 from itself."""
    for column in (c for c in schema.RELU_DIAGNOSTICS if c in models.columns):  # version 3 has one
        bad = models.filter(~pl.col(column).is_between(0, 1))  # NaN is above 1 for polars
        if len(bad):
            raise Violation(schema.MODELS, column, "outside [0, 1]", _rows(bad))
    if "dynamic_dead_relu" in models.columns:
        bad = models.filter(pl.col("dynamic_dead_relu") < pl.col("dead_relu") - 1e-6)
        if len(bad):
            raise Violation(schema.MODELS, "dynamic_dead_relu", "is below dead_relu", _rows(bad))
    for column in ("dist_init", "dist_dense"):
        bad = models.filter(~(pl.col(column).is_finite() & (pl.col(column) >= 0)))
        if len(bad):
            raise Violation(schema.MODELS, column, "is negative, NaN or infinite", _rows(bad))
    bad = models.filter((pl.col("parent_id") == pl.col("model_id")) & (pl.col("dist_dense") != 0).fill_null(True))
    if len(bad):
        raise Violation(schema.MODELS, "dist_dense", "is not 0 for a dense model (its own parent)", _rows(bad))


def check_layers(layers: pl.DataFrame, models: pl.DataFrame) -> None:
    """One row per model x layer for every model, counts that add up: nonzero <= params,
    sparsity = 1 - nonzero/params, the layers' flops summing to the model's, and the
    model's sparsity equal to its prunable layers' against its parent's."""
    name = schema.LAYERS
    _unique(layers, ["model_id", "layer"], name)
    bad = layers.filter(~pl.col("kind").is_in(schema.LAYER_KINDS))
    if len(bad):
        raise Violation(name, "kind", f"not one of {', '.join(schema.LAYER_KINDS)}", _rows(bad))
    missing = sorted(set(models["model_id"]) - set(layers["model_id"]))
    extra = sorted(set(layers["model_id"]) - set(models["model_id"]))
    if missing or extra:
        which = f"missing {missing[:5]}, extra {extra[:5]}"
        raise Violation(name, "model_id", "must hold the layers of every model and no other", which)
    bad = layers.filter((pl.col("nonzero") < 0) | (pl.col("nonzero") > pl.col("params")) | (pl.col("flops") < 0))
    if len(bad):
        raise Violation(name, "nonzero", "is negative or above params, or flops is negative", _rows(bad))
    measured = 1 - pl.col("nonzero").cast(pl.Float64) / pl.col("params")
    bad = layers.filter(~_close(pl.col("sparsity").cast(pl.Float64), measured).fill_null(False))
    if len(bad):
        raise Violation(name, "sparsity", "differs from 1 - nonzero / params", _rows(bad))
    per_model = layers.group_by("model_id").agg(
        pl.col("flops").sum().alias("layer_flops"),
        pl.col("nonzero").filter(pl.col("prunable")).sum().alias("prunable_nonzero"),
        pl.col("params").filter(pl.col("prunable")).sum().alias("prunable_params"),
    )
    joined = models.join(per_model, on="model_id")
    bad = joined.filter(pl.col("flops") != pl.col("layer_flops"))
    if len(bad):
        raise Violation(schema.MODELS, "flops", "differs from the sum of its layers' flops", _rows(bad))
    parents = per_model.select("model_id", pl.col("prunable_params").alias("parent_params"))
    joined = joined.join(parents, left_on="parent_id", right_on="model_id", suffix="_parent")
    expected = 1 - pl.col("prunable_nonzero").cast(pl.Float64) / pl.col("parent_params")
    bad = joined.filter(~_close(pl.col("sparsity").cast(pl.Float64), expected).fill_null(False))
    if len(bad):
        raise Violation(
            schema.MODELS, "sparsity", "differs from 1 - its prunable layers' nonzero / its parent's prunable params",
            _rows(bad),
        )  # fmt: skip


def check_occlusion(
    occlusion: pl.DataFrame, manifest: dict, models: pl.DataFrame, conditions: pl.DataFrame, samples: pl.DataFrame
) -> None:
    """Rows only of the snapshot's models, conditions and samples, once each; every patch
    inside the image and on the stride's grid; angle changes within [-180, 180]."""
    name = schema.OCCLUSION
    settings = manifest.get("occlusion")
    if not isinstance(settings, dict) or not all(isinstance(settings.get(k), int) for k in ("patch", "stride")):
        raise Violation(name, "*", f"{schema.MANIFEST} records no occlusion settings (whole numbers patch, stride)")
    patch, stride = settings["patch"], settings["stride"]
    _, height, width = manifest.get("dataset", {}).get("image_shape", [3, 32, 32])
    for column, known in (("model_id", models), ("condition_id", conditions), ("sample_id", samples)):
        bad = occlusion.filter(~pl.col(column).is_in(known[column].implode()))
        if len(bad):
            raise Violation(name, column, f"names no {column.removesuffix('_id')} of the snapshot", _rows(bad))
    _unique(occlusion, ["model_id", "condition_id", "sample_id", "row", "col"], name)
    for column, side in (("row", height), ("col", width)):
        bad = occlusion.filter((pl.col(column) < 0) | (pl.col(column) + patch > side) | (pl.col(column) % stride != 0))
        if len(bad):
            raise Violation(name, column, f"puts the {patch} px patch outside the image or off its {stride} px grid",
                            _rows(bad))  # fmt: skip
    bad = occlusion.filter(~(pl.col("d_angle_true").is_between(-180, 180) | pl.col("d_angle_true").is_nan()))
    if len(bad):
        raise Violation(name, "d_angle_true", "outside [-180, 180] and not NaN", _rows(bad))
    bad = occlusion.filter(pl.col("d_feat_norm").is_infinite())
    if len(bad):
        raise Violation(name, "d_feat_norm", "is infinite", _rows(bad))


#: what each schema version added, for the line about an older snapshot
LATER_TABLES = {
    3: "layers.parquet, occlusion.parquet and the model diagnostics",
    4: "the class angles of embedding.parquet and the dynamic dead-ReLU rate",
    5: "answers.parquet, which the app then computes from metrics/ on opening",
}


def main(path: str) -> int:
    try:
        counts = check_snapshot(path)
    except SnapshotError as err:
        print(f"prunescope validate: {err}")
        return 2
    except OSError as err:  # a folder that cannot be listed or read at all
        print(f"prunescope validate: {path} cannot be read ({err.strerror or err}); check the path and its permissions")
        return 2
    except Violation as err:
        print(f"prunescope validate: {path}/{err}")
        return 1
    lacks = [what for version, what in LATER_TABLES.items() if counts["schema_version"] < version]
    older = f" (of schema version {counts['schema_version']}, which predates {'; '.join(lacks)})" if lacks else ""
    shard = counts["shard"]
    part = (
        f" (shard {shard['index']}/{shard['count']}: the dense parents {', '.join(counts['absent_parents'])} are in "
        "another shard; merge the shards before opening them in the app)"
        if shard
        else ""
    )
    print(
        f"prunescope validate: {path} is a valid snapshot{older}{part}: {counts['models']} models x "
        f"{counts['conditions']} conditions x {counts['samples']} samples = {counts['rows']:,} rows"
    )
    return 0


def shard_count(manifest: dict) -> int:
    shard = manifest.get("shard") or {}
    return int(shard.get("count", 1)) if isinstance(shard, dict) else 1
