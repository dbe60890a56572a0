"""`prunescope merge`: combine the shards of one sweep (`compute --shard K/N`) into one snapshot.

Torch-free: per-sample files and checkpoints are copied as they are; the small tables are
concatenated. The parts must be shards 1..N of the same configuration, on the same
conditions and samples, pruned from identical dense models.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from compute import schema
from compute.config import InputError
from compute.output import check_apart, check_target
from compute.snapshot import SUMMARY_ORDER, SnapshotWriter, read_manifest
from compute.validate import Violation, check_file_schema, metric_partitions

PER_MODEL_TABLES = (schema.MODELS, schema.SUMMARY, schema.CLASSES, schema.EMBEDDING, schema.LAYERS, schema.ANSWERS)
#: the rest hold each model's rows together, in the sweep's model order, as a run writes them
ORDER = {schema.SUMMARY: SUMMARY_ORDER}
SHARED_TABLES = (schema.CONDITIONS, schema.SAMPLES)


def shard_name(manifest: dict) -> str:
    return f"{manifest['shard']['index']}/{manifest['shard']['count']}"


def check_parts(paths: list[Path]) -> list[tuple[Path, dict]]:
    """(path, manifest) of each part, in shard order, or InputError naming what does not fit."""
    manifests = [read_manifest(path) for path in paths]
    for path, manifest in zip(paths, manifests, strict=True):
        if "shard" not in manifest:
            raise InputError(f"{path} is not a shard; merge parts written by prunescope compute --shard K/N")
        if "config" not in manifest:
            raise InputError(f"{path}/{schema.MANIFEST} has no config; merge parts written by prunescope compute")
        if manifest["schema_version"] != schema.SCHEMA_VERSION:
            raise InputError(
                f"{path} is a shard of schema version {manifest['schema_version']}, not {schema.SCHEMA_VERSION}; "
                "recompute it with this prunescope, then merge"
            )
        try:  # every per-sample file readable and of the schema, before anything is written
            for folder in metric_partitions(path):
                for file in sorted(folder.iterdir()):
                    check_file_schema(file, str(file.relative_to(path)), schema.METRICS_SCHEMA)
        except Violation as err:
            raise InputError(f"{path} is damaged ({err}); recompute that shard, then merge again") from None
    count = manifests[0]["shard"]["count"]
    indices = sorted(m["shard"]["index"] for m in manifests)
    if any(m["shard"]["count"] != count for m in manifests) or indices != list(range(1, count + 1)):
        given = ", ".join(shard_name(m) for m in manifests)
        raise InputError(f"the parts are shards {given}; give each of the shards 1/{count} to {count}/{count} once")
    first = manifests[0]["config"]
    for path, manifest in zip(paths[1:], manifests[1:], strict=True):
        other = manifest["config"]
        differing = sorted(k for k in first.keys() | other.keys() if k != "shard" and first.get(k) != other.get(k))
        if differing:
            raise InputError(
                f"{path} was computed with another configuration ({', '.join(differing)} differ); "
                "run every shard with the same preset and flags"
            )
    parents: dict[str, str] = {}
    for path, manifest in zip(paths, manifests, strict=True):
        for dense_id, digest in manifest.get("parents", {}).items():
            if parents.setdefault(dense_id, digest) != digest:
                raise InputError(
                    f"{path} pruned a different {dense_id} than another shard (its weights differ); "
                    "rerun the shards on the same kind of device with the same software"
                )
    return sorted(zip(paths, manifests, strict=True), key=lambda part: part[1]["shard"]["index"])


def read_table(path: Path, name: str) -> pl.DataFrame:
    try:
        return pl.read_parquet(path / name)
    except Exception as err:  # noqa: BLE001 - any unreadable table makes the part unusable
        raise InputError(f"{path / name} cannot be read ({type(err).__name__}); recompute that shard") from err


def merged_manifest(parts: list[tuple[Path, dict]], out: Path, models: pl.DataFrame, started: float) -> dict:
    manifests = [manifest for _, manifest in parts]
    first = manifests[0]
    timings: dict[str, float] = {}
    for manifest in manifests:
        for key, value in manifest.get("timings", {}).items():
            timings[key] = round(timings.get(key, 0.0) + value, 3)
    devices = sorted({m.get("device", "?") for m in manifests})
    conditions, samples = first["counts"]["conditions"], first["counts"]["samples"]
    keep = {k: v for k, v in first.items() if k not in ("schema_version", "complete", "shard")}
    return keep | {
        "name": out.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": ", ".join(devices),
        "config": first["config"] | {"shard": "1/1"},
        "seeds": sorted({seed for m in manifests for seed in m.get("seeds", [])}),
        "parents": {k: v for m in manifests for k, v in m.get("parents", {}).items()},
        "model_notes": {k: v for m in manifests for k, v in m.get("model_notes", {}).items()},
        "counts": {
            "models": models.height,
            "conditions": conditions,
            "samples": samples,
            "metric_rows": models.height * conditions * samples,
        },
        "timings": timings | {"merge": round(time.perf_counter() - started, 3)},
        "merged_from": [
            {
                "part": path.name,
                "shard": shard_name(m),
                "device": m.get("device"),
                "created": m.get("created"),
                "models": m["counts"]["models"],
            }
            for path, m in parts
        ],
    }


def in_model_order(table: pl.DataFrame, rank: dict[str, int], name: str) -> pl.DataFrame:
    """The parts' rows of a per-model table in the order the single run writes them."""
    if name in ORDER:
        return table.sort(*ORDER[name])
    return table.sort(pl.col("model_id").replace_strict(rank), maintain_order=True)  # a model's rows as they were


def run(
    parts: list[str | Path],
    out: str | Path,
    overwrite: bool = False,
    jobs: int | None = None,
    thumbnails: Callable[[Path], pl.DataFrame] | None = None,
) -> str:
    """Merge the shard snapshots `parts` into `out`; returns the summary line. `jobs`: the parts are
    those of `compute --jobs` workers, as the manifest then records. `thumbnails`: makes the
    thumbnails table from the merged snapshot being written (its per-sample files are in place);
    without it, the parts' thumbnails are kept, each part's own choice."""
    started = time.perf_counter()
    paths = [Path(p) for p in parts]
    if len(paths) < 2:
        raise InputError(f"merge needs two or more shard folders (got {len(paths)})")
    check_apart(out, [("the part", path) for path in paths])
    check_target(out, overwrite)  # before reading the parts
    parts_checked = check_parts(paths)
    paths = [path for path, _ in parts_checked]
    shared = {name: read_table(paths[0], name) for name in SHARED_TABLES}
    for name, reference in shared.items():
        for path in paths[1:]:
            if not read_table(path, name).equals(reference):
                raise InputError(f"{path / name} differs from {paths[0] / name}; the shards must share it")
    tables = {name: [read_table(path, name) for path in paths] for name in PER_MODEL_TABLES}
    ids = [i for table in tables[schema.MODELS] for i in table["model_id"].to_list()]
    if len(ids) != len(set(ids)):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"models {', '.join(twice[:5])} appear in more than one part; give each shard once")
    method_rank = {m: i for i, m in enumerate(parts_checked[0][1]["config"]["methods"])}
    models = (
        pl.concat(tables[schema.MODELS])
        .sort(pl.col("seed"), pl.col("method").replace_strict(method_rank, default=len(method_rank)), "target_sparsity")
    )  # fmt: skip
    with SnapshotWriter(out, overwrite=overwrite) as writer:
        for path in paths:
            for source in sorted((path / schema.METRICS_DIR).rglob("*.parquet")):
                writer.copy_file(source.relative_to(path).as_posix(), source)
            for source in sorted((path / schema.CHECKPOINTS_DIR).glob("*.pt")):
                writer.copy_file(source.relative_to(path).as_posix(), source)
        writer.write_table(schema.MODELS, models)
        rank = {model_id: i for i, model_id in enumerate(models["model_id"])}
        for name in PER_MODEL_TABLES[1:]:
            writer.write_table(name, in_model_order(pl.concat(tables[name]), rank, name))
        if (paths[0] / schema.OCCLUSION).exists():  # the same samples in every shard (the same configuration)
            occlusion = pl.concat([read_table(p, schema.OCCLUSION) for p in paths])
            writer.write_table(schema.OCCLUSION, in_model_order(occlusion, rank, schema.OCCLUSION))
        for name, table in shared.items():
            writer.write_table(name, table)
        if thumbnails is not None:
            writer.write_table(schema.THUMBNAILS, thumbnails(writer.tmp))
        else:  # each shard chose from its own models' errors; keep every choice
            kept = [read_table(p, schema.THUMBNAILS) for p in paths if (p / schema.THUMBNAILS).exists()]
            if kept:
                writer.write_table(
                    schema.THUMBNAILS, pl.concat(kept).unique(["sample_id", "condition_id"], maintain_order=True)
                )
        manifest = merged_manifest(parts_checked, Path(out), models, started)
        path = writer.finish(manifest | ({"jobs": jobs} if jobs else {}))
    counts = read_manifest(path)["counts"]
    what = f"the parts of {jobs} workers" if jobs else f"{len(paths)} shards"
    return (
        f"merged {what} into {path}: {counts['models']} models x {counts['conditions']} conditions "
        f"x {counts['samples']} samples = {counts['metric_rows']:,} rows in {time.perf_counter() - started:.1f} s"
    )
