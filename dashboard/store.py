"""Reading snapshots for the app: discovery, small tables cached, per-sample rows lazy.

Streamlit-free and torch-free so it is unit-tested directly. Small tables (models,
conditions, samples without thumbnails, summary, classes) are read once per snapshot
version; `metrics/` is only ever scanned lazily with filters and column selection pushed
down to the Parquet reader.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from compute import schema
from compute.answers import Answers, from_metrics, in_memory
from compute.snapshot import SnapshotError, read_manifest, rebuild_hint
from compute.snapshot import scan_metrics as _scan_all_metrics

APP_ROOT = Path(__file__).resolve().parent.parent
ENV_DATA = "PRUNESCOPE_DATA"


def data_root() -> Path:
    """`$PRUNESCOPE_DATA`, else the `data/` folder beside app.py."""
    value = os.environ.get(ENV_DATA)
    return Path(value).expanduser() if value else APP_ROOT / "data"


def shown_path(path: Path | None = None) -> str:
    """`path` as the page may show it: under the data root, never the server's absolute path.

    `data/<name>` is relative to the project folder (where the page's commands run);
    `$PRUNESCOPE_DATA/<name>` when the data root was set by the environment.
    """
    root = data_root()
    base = f"${ENV_DATA}" if os.environ.get(ENV_DATA) else "data"
    if path is None:
        return base
    try:
        inside = Path(path).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return Path(path).name
    return base if inside == Path(".") else f"{base}/{inside.as_posix()}"


def build_command() -> str:
    """The command that builds the demo snapshot where the app looks for it."""
    return f"prunescope compute --preset demo --out {shown_path(data_root() / 'demo')} --overwrite"


def fix_commands(path: Path) -> list[str]:
    """What to run about a damaged snapshot: validate lists every problem; the demo has its own
    rebuild command (any other snapshot is rebuilt by the command that wrote it)."""
    where = shown_path(path)
    commands = [f"prunescope validate {where}"]
    if Path(path).name == "demo":
        commands.append(f"prunescope compute --preset demo --out {where} --overwrite")
    return commands


#: tables every snapshot has (schema version 2 on); the rest are checked when present
REQUIRED_TABLES = (schema.MODELS, schema.CONDITIONS, schema.SAMPLES, schema.SUMMARY, schema.CLASSES, schema.EMBEDDING)
LATER_TABLES = (schema.LAYERS, schema.THUMBNAILS, schema.OCCLUSION)


def _parquet_files(path: Path) -> list[Path]:
    present = [path / name for name in (*REQUIRED_TABLES, *LATER_TABLES) if (path / name).exists()]
    metrics = path / schema.METRICS_DIR
    partitions = []
    if metrics.is_dir() and _inside(metrics, path):
        # every rerun lists these: a real folder in metrics/ is inside, only a link needs resolving
        partitions = sorted(p for p in metrics.iterdir() if not p.is_symlink() or _inside(p, path))
    return present + [f for partition in partitions for f in sorted(partition.glob("*.parquet"))]


def find_damage(path: Path, deep: bool = False) -> str | None:
    """The first problem with the snapshot's files (a table missing, a Parquet file that does not
    open), naming the file by its place in the snapshot; None when every file opens.

    Reads only the Parquet footers, and remembers the answer until a file changes; `deep` also
    reads every file whole (after a view failed: a damaged page behind a sound footer)."""
    path = Path(path)
    try:
        stats = [(f, f.stat()) for f in _parquet_files(path)]
        signature = tuple((str(f.relative_to(path)), stat.st_size, stat.st_mtime_ns) for f, stat in stats)
    except OSError as err:
        return f"{path.name}: a file cannot be read ({type(err).__name__})"
    return _damage(str(path), signature, deep)


@functools.lru_cache(maxsize=64)
def _damage(path_text: str, signature: tuple, deep: bool) -> str | None:
    path = Path(path_text)
    present = {name for name, _, _ in signature}
    for name in REQUIRED_TABLES:
        if name not in present:
            return f"{path.name}/{name} is missing"
    if not (path / schema.METRICS_DIR).is_dir() or not any(name.startswith(schema.METRICS_DIR) for name in present):
        return f"{path.name}/{schema.METRICS_DIR}/ is missing"
    for name, _, _ in signature:
        try:
            pq.read_table(path / name) if deep else pq.read_metadata(path / name)
        except Exception:  # noqa: BLE001 - whatever the reader says, this file does not open
            return f"{path.name}/{name} is not a readable Parquet file (cut short or overwritten)"
    return None


@dataclass(frozen=True)
class SnapshotEntry:
    name: str
    path: Path
    error: str | None  # what is wrong with it, naming the file; None when the snapshot opens


def _looks_like_snapshot(path: Path) -> bool:
    return (path / schema.MANIFEST).exists() or (path / schema.METRICS_DIR).is_dir() or any(path.glob("*.parquet"))


def _inside(path: Path, root: Path) -> bool:
    """A folder, or a link to one, that lies within `root`: the app serves nothing beyond it."""
    return path.resolve().is_relative_to(root.resolve())


def list_snapshots(root: Path | None = None) -> list[SnapshotEntry]:
    """Snapshot folders directly under `root` (or `root` itself), damaged ones marked with what is wrong."""
    root = Path(root or data_root())
    if not root.is_dir():
        return []
    candidates = [root] if _looks_like_snapshot(root) else []
    candidates += sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and _inside(p, root) and _looks_like_snapshot(p)
    )
    entries = []
    for path in candidates:
        try:
            read_manifest(path)
            entries.append(SnapshotEntry(path.name, path, find_damage(path)))
        except SnapshotError as err:
            entries.append(SnapshotEntry(path.name, path, err.problem))
    return entries


@dataclass(frozen=True)
class Snapshot:
    """The small tables of one snapshot, read whole; per-sample rows stay on disk."""

    path: Path
    manifest: dict
    models: pl.DataFrame
    conditions: pl.DataFrame
    samples: pl.DataFrame  # sample_id, label, class_name (thumbnails are read on demand)
    summary: pl.DataFrame
    classes: pl.DataFrame

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("dataset", {}).get("classes", []))


def _read(path: Path, name: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
    try:
        return pl.read_parquet(path / name, columns=list(columns) if columns else None)
    except FileNotFoundError as err:
        raise SnapshotError(f"{path.name}/{name} is missing", f"rebuild it: {rebuild_hint(path)}") from err
    except Exception as err:  # noqa: BLE001 - any unreadable file means a damaged snapshot
        raise SnapshotError(
            f"{path.name}/{name} cannot be read ({type(err).__name__})", f"rebuild it: {rebuild_hint(path)}"
        ) from err


def with_diagnostics(models: pl.DataFrame) -> pl.DataFrame:
    """models.parquet with the diagnostics columns, null where the snapshot predates them (version 2)."""
    missing = [c for c in schema.MODEL_DIAGNOSTICS if c not in models.columns]
    return models.with_columns(pl.lit(None, dtype=pl.Float32).alias(c) for c in missing)


@functools.lru_cache(maxsize=16)
def _open_cached(path_text: str, _version: int) -> Snapshot:
    path = Path(path_text)
    manifest = read_manifest(path)
    metrics = path / schema.METRICS_DIR
    for partition in sorted(metrics.iterdir()) if metrics.is_dir() else []:
        if partition.is_symlink() and not _inside(partition, path):
            raise SnapshotError(
                f"{path.name}/{schema.METRICS_DIR}/{partition.name} links outside the snapshot, which the app does "
                "not follow",
                f"`prunescope validate {path.name}` lists what to fix",
            )
    return Snapshot(
        path=path,
        manifest=manifest,
        models=with_diagnostics(_read(path, schema.MODELS)),
        conditions=_read(path, schema.CONDITIONS),
        samples=_read(path, schema.SAMPLES, ["sample_id", "label", "class_name"]),
        summary=_read(path, schema.SUMMARY),
        classes=_read(path, schema.CLASSES),
    )


def open_snapshot(path: str | Path) -> Snapshot:
    """The snapshot at `path`; SnapshotError (with the fixing command) if it cannot open.

    Cached per path and manifest modification time, so a rebuilt snapshot is re-read.
    """
    path = Path(path).resolve()
    try:
        version = (path / schema.MANIFEST).stat().st_mtime_ns
    except OSError:
        version = 0
    snapshot = _open_cached(str(path), version)
    if snapshot.models.is_empty():
        raise SnapshotError(f"{path.name} holds no models", f"rebuild it: {rebuild_hint(path)}")
    return snapshot


def sample_blocks(snapshot: Snapshot) -> int | None:
    """How many blocks metrics/ deals the samples into (schema.sample_blocks); None for a
    snapshot that predates them (schema version 4 and earlier)."""
    if snapshot.manifest.get("schema_version", 0) < 5:
        return None
    return schema.sample_blocks(snapshot.samples.height)


def block_of(snapshot: Snapshot, sample_ids: Sequence[int]) -> list[int]:
    """The metrics/ block of each sample: its rank among the sample ids modulo sample_blocks."""
    ordered = snapshot.samples["sample_id"].sort().to_numpy()
    return (np.searchsorted(ordered, np.asarray(sample_ids, dtype=np.int64)) % (sample_blocks(snapshot) or 1)).tolist()


def scan_metrics(
    snapshot: Snapshot,
    model_ids: Sequence[str] | None = None,
    condition_ids: Sequence[int] | None = None,
    columns: Sequence[str] | None = None,
    sample_ids: Sequence[int] | None = None,
) -> pl.LazyFrame:
    """Per-sample rows, lazily, filtered and projected before anything is read; the rows of
    `sample_ids` only are read from the row groups of their blocks."""
    frame = _scan_all_metrics(snapshot.path)
    if model_ids is not None:
        frame = frame.filter(pl.col("model_id").is_in(list(model_ids)))
    if condition_ids is not None:
        frame = frame.filter(pl.col("condition_id").is_in([int(c) for c in condition_ids]))
    if sample_ids is not None:
        if sample_blocks(snapshot) is not None:  # lets the reader skip the other blocks' row groups
            frame = frame.filter(pl.col("block").is_in(sorted(set(block_of(snapshot, sample_ids)))))
        frame = frame.filter(pl.col("sample_id").is_in([int(s) for s in sample_ids]))
    if columns is None:
        return frame.select(pl.exclude("block"))  # how the rows are laid out, not what they say
    keys = ("model_id", "condition_id", "sample_id")
    return frame.select(*keys, *[c for c in columns if c not in keys])


def thumbnails(snapshot: Snapshot, sample_ids: Sequence[int]) -> dict[int, bytes]:
    """PNG bytes of the clean images of the given samples."""
    frame = (
        pl.scan_parquet(snapshot.path / schema.SAMPLES)
        .filter(pl.col("sample_id").is_in([int(s) for s in sample_ids]))
        .select("sample_id", "thumbnail")
        .collect()
    )
    return dict(frame.iter_rows())


def version(snapshot: Snapshot) -> int:
    """Changes when the snapshot is rebuilt (the manifest is written last)."""
    try:
        return (snapshot.path / schema.MANIFEST).stat().st_mtime_ns
    except OSError:
        return 0


def cached(fn, snapshot: Snapshot, *args):
    """fn(snapshot, *args), remembered per snapshot version and arguments (which must be
    hashable: pass tuples, not lists). For per-sample aggregations that every rerun of a
    page would otherwise repeat. Treat the result as read-only."""
    return _cached_call(fn, str(snapshot.path), version(snapshot), args)


@functools.lru_cache(maxsize=64)
def _cached_call(fn, path_text: str, _version: int, args: tuple):
    return fn(open_snapshot(path_text), *args)


def has_answers(snapshot: Snapshot) -> bool:
    """Whether the snapshot carries answers.parquet (schema version 5); an older one's are
    computed from metrics/ on first use (`answers`)."""
    return (snapshot.path / schema.ANSWERS).is_file()


def answers(snapshot: Snapshot) -> Answers:
    """Every model's correctness on every condition (packed bits) and its clean predictions,
    once per snapshot version: read from answers.parquet, or computed from metrics/ for a
    snapshot that predates it."""
    return _answers_cached(str(snapshot.path), version(snapshot))


@functools.lru_cache(maxsize=4)
def _answers_cached(path_text: str, _version: int) -> Answers:
    snapshot = open_snapshot(path_text)
    model_ids = snapshot.models["model_id"].to_list()
    sample_ids = snapshot.samples["sample_id"].sort().to_numpy()
    path = snapshot.path
    table = _read(path, schema.ANSWERS) if has_answers(snapshot) else from_metrics(path, model_ids)
    return in_memory(table, model_ids, sample_ids)


def embedding(snapshot: Snapshot, model_id: str) -> pl.DataFrame:
    """The 2-D projection of one model's clean features: sample_id, x, y."""
    return (
        pl.scan_parquet(snapshot.path / schema.EMBEDDING)
        .filter(pl.col("model_id") == model_id)
        .select("sample_id", "x", "y")
        .collect()
    )


def has_class_angles(snapshot: Snapshot) -> bool:
    """Whether embedding.parquet lists each sample's angle to every class (schema version 4 on)."""
    return "angles" in pl.scan_parquet(snapshot.path / schema.EMBEDDING).collect_schema()


def class_angles(snapshot: Snapshot, model_ids: Sequence[str], sample_ids: Sequence[int]) -> pl.DataFrame:
    """model_id, sample_id and the clean angles to every class direction (a list, by class)."""
    return (
        pl.scan_parquet(snapshot.path / schema.EMBEDDING)
        .filter(pl.col("model_id").is_in(list(model_ids)) & pl.col("sample_id").is_in([int(s) for s in sample_ids]))
        .select("model_id", "sample_id", "angles")
        .collect()
    )


def has_thumbnails(snapshot: Snapshot) -> bool:
    return (snapshot.path / schema.THUMBNAILS).is_file()


def sample_thumbnails(snapshot: Snapshot, sample_id: int) -> pl.DataFrame:
    """condition_id -> PNG of one sample under every stored corrupted condition."""
    if not has_thumbnails(snapshot):
        return pl.DataFrame(schema={"condition_id": pl.Int16, "thumbnail": pl.Binary})
    return (
        pl.scan_parquet(snapshot.path / schema.THUMBNAILS)
        .filter(pl.col("sample_id") == int(sample_id))
        .select("condition_id", "thumbnail")
        .collect()
    )


def thumbnail_samples(snapshot: Snapshot) -> list[int]:
    """Samples whose corrupted images the snapshot keeps."""
    if not has_thumbnails(snapshot):
        return []
    return (
        pl.scan_parquet(snapshot.path / schema.THUMBNAILS)
        .select("sample_id")
        .unique()
        .collect()["sample_id"]
        .sort()
        .to_list()
    )


def layers(snapshot: Snapshot) -> pl.DataFrame | None:
    """The per-layer table, or None for a snapshot that predates it."""
    path = snapshot.path / schema.LAYERS
    return pl.read_parquet(path) if path.is_file() else None


def has_occlusion(snapshot: Snapshot) -> bool:
    return (snapshot.path / schema.OCCLUSION).is_file()


def occlusion(snapshot: Snapshot, sample_id: int, model_ids: Sequence[str]) -> pl.DataFrame:
    """The occlusion rows of one sample for the given models (empty without the table)."""
    if not has_occlusion(snapshot):
        return pl.DataFrame(schema={name: pl.Int64 for name in ("row", "col")})
    return (
        pl.scan_parquet(snapshot.path / schema.OCCLUSION)
        .filter((pl.col("sample_id") == int(sample_id)) & pl.col("model_id").is_in(list(model_ids)))
        .collect()
    )


def occlusion_samples(snapshot: Snapshot) -> list[int]:
    """Samples the snapshot records occlusion maps for."""
    if not has_occlusion(snapshot):
        return []
    return (
        pl.scan_parquet(snapshot.path / schema.OCCLUSION).select("sample_id").unique().collect()["sample_id"].sort()
    ).to_list()
