"""Growing a snapshot: new models added to an existing one (`--add-to SNAPSHOT`).

The existing snapshot's models are laid into the run's work folder as evaluated models,
so the run computes only what is new and assembles one snapshot of all of them, equal to
computing them all in one run. The existing snapshot must have the run's data, test
samples, conditions and metric precision; for `compute`, its configuration but for the
methods and sparsities, and the same dense models (their weights' fingerprints).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from compute import schema
from compute.config import ComputeConfig, InputError
from compute.snapshot import read_manifest, scan_metrics
from compute.workdir import EVALUATED_TABLES, WorkFolder

#: configuration fields a grown compute sweep may change: what it adds, and what only
#: shapes what the snapshot keeps
#: settings added after some snapshots were written, with the value those snapshots were computed with
ADDED_LATER = {"precision": "fp32"}
MAY_DIFFER = ("methods", "sparsities", "shard", "checkpoints", "thumbnail_samples", "device")


#: the oldest schema version a snapshot may have to be grown: every later table comes from its metrics/
GROWABLE_FROM = 4


@dataclasses.dataclass
class Existing:
    path: Path
    manifest: dict
    models: pl.DataFrame

    @property
    def ids(self) -> list[str]:
        return self.models["model_id"].to_list()


def read_existing(path: str | Path) -> Existing:
    path = Path(path).expanduser()
    manifest = read_manifest(path)
    if "shard" in manifest and manifest["shard"].get("count", 1) != 1:
        raise InputError(f"--add-to: {path} is one shard of a sweep; merge the shards first, then add to the merge")
    if manifest["schema_version"] < GROWABLE_FROM:  # version 4 lacks only answers.parquet, made from metrics/
        raise InputError(
            f"--add-to: {path} is a snapshot of schema version {manifest['schema_version']}, without tables of "
            f"version {GROWABLE_FROM} that need the models' weights; "
            "recompute it with the command that wrote it, then add to it"
        )
    return Existing(path, manifest, pl.read_parquet(path / schema.MODELS))


def grown_config(existing: Existing, cfg: ComputeConfig) -> ComputeConfig:
    """The configuration of the whole grown sweep: the existing one with the methods and
    sparsities of both (each in the order a single run would have them)."""
    if existing.manifest.get("architecture") == "given":
        raise InputError(
            f"--add-to: {existing.path} was written by prunescope evaluate, not compute; add models to it with "
            "prunescope evaluate --add-to"
        )
    old = existing.manifest.get("config", {})
    new = cfg.as_dict()
    differing = sorted(
        k for k in new if k not in MAY_DIFFER and _same(old.get(k, ADDED_LATER.get(k))) != _same(new[k])
    )
    if differing:
        raise InputError(
            f"--add-to: {existing.path} was computed with other {', '.join(differing)}; grow it with the flags "
            "it was computed with, changing only --methods and --sparsities"
        )
    methods = list(old["methods"]) + [m for m in cfg.methods if m not in old["methods"]]
    sparsities = sorted(set(old["sparsities"]) | set(cfg.sparsities))
    return dataclasses.replace(cfg, methods=tuple(methods), sparsities=tuple(sparsities))


def _same(value):
    return list(value) if isinstance(value, (list, tuple)) else value


#: earlier wordings of the manifest's `corruptions.parameters` for the same generated parameters
#: (snapshots written before the design notes moved into docs/, the committed demo among them)
EARLIER_PARAMETERS = {"CIFAR-10-C (CORRUPTIONS.md)": "CIFAR-10-C (docs/CORRUPTIONS.md)"}


def corruption_record(record):
    """The manifest's `corruptions` record in today's wording, to compare with a run's."""
    if isinstance(record, dict) and record.get("parameters") in EARLIER_PARAMETERS:
        return {**record, "parameters": EARLIER_PARAMETERS[record["parameters"]]}
    return record


#: the configuration of the occlusion table: a grown snapshot's new models are occluded as its old ones
OCCLUSION_FIELDS = ("occlusion_samples", "occlusion_severity", "occlusion_patch", "occlusion_stride")


def with_occlusion_of(existing: Existing, cfg: ComputeConfig) -> ComputeConfig:
    """`evaluate --add-to`: the existing snapshot's occlusion settings, and at least its
    thumbnails (the occluded samples are among them), so that its occlusion table covers
    the given models too."""
    old = existing.manifest.get("config", {})
    if not old.get("occlusion_samples"):
        return cfg
    thumbnails = max(cfg.thumbnail_samples, old.get("thumbnail_samples", 0))
    return dataclasses.replace(cfg, thumbnail_samples=thumbnails, **{k: old[k] for k in OCCLUSION_FIELDS})


def check_new_ids(existing: Existing, requested: list[str], replace: bool) -> list[str]:
    """The existing models to keep: all but those the run recomputes. A requested id the
    snapshot already holds stops the run unless `replace`."""
    clash = [i for i in requested if i in existing.ids]
    if clash and not replace:
        raise InputError(
            f"--add-to: {existing.path} already holds {', '.join(clash[:3])}{' and more' if len(clash) > 3 else ''}; "
            "pass --replace to compute them again, or ask for other models"
        )
    return [i for i in existing.ids if i not in clash]


def check_same_data(
    existing: Existing, dataset, conditions: list[schema.Condition], metric_bits: int, corruptions: dict
) -> None:
    """The existing snapshot was evaluated on exactly the run's test samples and conditions,
    its corrupted images made the same way (`corruptions`: the manifest's record of that)."""
    path = existing.path
    samples = pl.read_parquet(path / schema.SAMPLES, columns=["sample_id", "label"])
    mine = pl.DataFrame({"sample_id": dataset.test_index.numpy(), "label": dataset.test_labels.numpy()})
    if not samples.cast({"sample_id": pl.Int64, "label": pl.Int64}).equals(mine.cast(pl.Int64)):
        raise InputError(
            f"--add-to: {path} was evaluated on other test samples ({len(samples)} against {len(mine)}); "
            "use its --dataset, --data-root, --n-test and --split-seed"
        )
    stored = pl.read_parquet(path / schema.CONDITIONS).select("corruption", "severity").rows()
    if stored != [(c.corruption, c.severity) for c in conditions]:
        raise InputError(f"--add-to: {path} has other conditions; use its --corruptions and --severities")
    if corruption_record(existing.manifest.get("corruptions")) != corruptions:
        raise InputError(
            f"--add-to: {path} made its corrupted images otherwise ({existing.manifest.get('corruptions')}); "
            "use its --corruption-seed and --cifar10c"
        )
    bits = existing.manifest.get("storage", {}).get("metric_bits", 23)
    if bits != metric_bits:
        raise InputError(f"--add-to: {path} keeps {bits} mantissa bits of each metric; pass --metric-bits {bits}")


def seed_work(existing: Existing, work: WorkFolder, keep: list[str]) -> int:
    """Lay the kept models of the existing snapshot into the work folder as evaluated ones."""
    notes = existing.manifest.get("model_notes", {})
    per_model = {
        name: pl.read_parquet(existing.path / table)
        for name, table in EVALUATED_TABLES.items()
        if (existing.path / table).is_file()  # occlusion.parquet only if asked for
    }
    layers = pl.read_parquet(existing.path / schema.LAYERS)
    checkpoints = existing.path / schema.CHECKPOINTS_DIR
    seeded = 0
    for row in existing.models.filter(pl.col("model_id").is_in(keep)).iter_rows(named=True):
        model_id = row["model_id"]
        if work.evaluated(model_id):
            continue
        # clean_accuracy and the ReLU diagnostics come with the evaluation
        record = {k: v for k, v in row.items() if k not in ("clean_accuracy", *schema.RELU_DIAGNOSTICS)}
        record["notes"] = notes.get(model_id, {})
        checkpoint = checkpoints / f"{model_id}.pt"
        work.save_trained(record, None, layers.filter(pl.col("model_id") == model_id))
        if checkpoint.is_file():
            work.link_checkpoint(model_id, checkpoint)
        metrics = scan_metrics(existing.path).filter(pl.col("model_id") == model_id).drop("model_id").collect()
        tables = {name: table.filter(pl.col("model_id") == model_id) for name, table in per_model.items()}
        work.save_evaluated(model_id, {"metrics": metrics, **tables}, {k: row[k] for k in schema.RELU_DIAGNOSTICS})
        seeded += 1
    return seeded


#: methods whose models build on each other: each requested sparsity is a stop of one
#: sequence of rounds, so a new sparsity below an old one changes the models above it
SEQUENTIAL = ("imp", "lrr")


def changed_by_new_stops(existing: Existing, cfg: ComputeConfig) -> list[str]:
    """Existing imp / lrr models that a new, lower sparsity would change."""
    old = set(existing.manifest.get("config", {}).get("sparsities", []))
    added = [s for s in cfg.sparsities if s not in old]
    if not added:
        return []
    lowest = min(added)
    rows = existing.models.filter(pl.col("method").is_in(SEQUENTIAL) & (pl.col("target_sparsity") > lowest))
    return rows["model_id"].to_list()


def outside_the_grid(existing: Existing, planned_ids: list[str]) -> list[str]:
    """Models of the snapshot that a compute sweep would not make (added by evaluate)."""
    return [i for i in existing.ids if i not in set(planned_ids)]


def merged_description(existing: Existing, described: dict) -> dict:
    """What the manifest of a grown snapshot says: the existing one's account of its models
    (architecture, schedule, methods, configuration), with the new methods added."""
    manifest = existing.manifest
    kept = {k: manifest[k] for k in ("architecture", "schedule", "shard", "config") if k in manifest}
    methods = {**described.get("methods", {}), **manifest.get("methods", {})}
    return {**described, **kept, "methods": methods}
