"""The durable state of a compute run, in its work folder: what a killed run leaves for the next.

Besides what every command keeps there (compute.output), `prunescope compute` keeps

    run.json                  the configuration it computes; a run of another one is never mixed in
    conditions/<id>.npy       the test images under each corrupted condition, uint8, made once
    dense/s<seed>/            each seed's dense model at initialisation, at the rewind step and
                              trained (init.pt, rewind.pt, model.pt) and dense.json
    models/<model_id>/        checkpoint.pt, layers.parquet and model.json once trained;
                              metrics.parquet, classes.parquet, embedding.parquet and (with
                              --occlusion-samples) occlusion.parquet once evaluated, then the
                              marker evaluated.json, which holds the model's dead_relu

Every file is written atomically and the marker of a step last, so a step either finished
or is redone. Running the same command again resumes: it skips what is finished and redoes
at most the model that was in progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from compute import schema
from compute.config import ComputeConfig, InputError
from compute.output import OutputSlot, Target, write_atomic, write_bytes_atomic, write_json_atomic
from compute.snapshot import conform, metrics_table, write_metrics_atomic, write_parquet_atomic

#: configuration fields that only shape what the snapshot keeps, not what is computed
NOT_COMPUTED = ("checkpoints", "thumbnail_samples", "device")

#: a model's tables, once evaluated, and the snapshot table each becomes part of
EVALUATED_TABLES = {"classes": schema.CLASSES, "embedding": schema.EMBEDDING, "occlusion": schema.OCCLUSION}


def run_identity(cfg: ComputeConfig, extra: dict) -> dict:
    values = {k: v for k, v in cfg.as_dict().items() if k not in NOT_COMPUTED}
    return {"schema_version": schema.SCHEMA_VERSION, "config": json.loads(json.dumps(values)), **extra}


class DenseModels:
    """Each seed's dense model at initialisation, at the rewind step and trained, in `root`/dense/s<seed>/:
    a run's own (its work folder) or the one `compute --jobs` trains once for all its workers."""

    root: Path

    def dense_dir(self, seed: int) -> Path:
        return self.root / "dense" / f"s{seed}"

    def dense_done(self, seed: int) -> bool:
        return (self.dense_dir(seed) / "dense.json").is_file()

    def save_dense(self, seed: int, states: dict[str, dict], record: dict) -> None:
        folder = self.dense_dir(seed)
        folder.mkdir(parents=True, exist_ok=True)
        for name, state in states.items():
            write_bytes_atomic(folder / f"{name}.pt", state_bytes(state))
        write_json_atomic(record, folder / "dense.json")

    def load_dense(self, seed: int) -> tuple[dict[str, dict], dict]:
        folder = self.dense_dir(seed)
        states = {name: load_state(folder / f"{name}.pt") for name in ("init", "rewind", "model")}
        return states, json.loads((folder / "dense.json").read_text())


class SharedDense(DenseModels):
    """The dense models the workers of `compute --jobs` share, in the jobs folder: the first worker
    that needs a seed's trains it while the others wait on its lock, then prune it too."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def claimed(self, seed: int) -> contextlib.AbstractContextManager[None]:
        """Hold the seed's lock, waiting while another worker holds it."""
        return held(self.root / "dense" / f"s{seed}.lock")


class SharedConditions:
    """The corrupted test sets the workers of `compute --jobs` share, in `root`/conditions/: each is
    made once, by the first worker that reaches it while the others wait on its lock, and
    hard-linked into every worker's work folder (one copy on disk; a resumed worker needs nothing
    outside its folder). Worker K of N starts (K - 1)/N of the way through them, so the workers make
    different ones side by side."""

    def __init__(self, root: Path, worker: int, workers: int):
        self.folder = Path(root) / "conditions"
        self.worker, self.workers = worker, workers

    def in_turn(self, items: list) -> list:
        start = (self.worker - 1) * len(items) // self.workers
        return items[start:] + items[:start]

    def path(self, condition_id: int) -> Path:
        return self.folder / f"{condition_id}.npy"

    def claimed(self, condition_id: int) -> contextlib.AbstractContextManager[None]:
        """Hold the condition's lock, waiting while another worker holds it."""
        return held(self.folder / f"{condition_id}.lock")


@contextlib.contextmanager
def held(lock: Path) -> Iterator[None]:
    """Hold the file lock `lock`; a killed holder's lock is released with its process."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    def fill(tmp: Path) -> None:
        with tmp.open("wb") as file:  # a file object: np.save would append .npy to a name
            np.save(file, array)

    write_atomic(path, fill)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes `source`'s contents: a hard link where the file system allows, else a copy; atomic."""

    def fill(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    write_atomic(target, fill)


class WorkFolder(OutputSlot, DenseModels):
    ENTRIES = (*OutputSlot.ENTRIES, "run.json", "conditions", "dense", "models")

    def __init__(self, target: Target, cfg: ComputeConfig, extra: dict | None = None):
        super().__init__(target)
        self.cfg = cfg
        self.extra = extra or {}  # more of what makes the run this run (evaluate: the models' source)

    def open_run(self, overwrite: bool) -> tuple[int, str | None]:
        """Lock the folder and check that it holds this configuration's run (or nothing yet).
        Returns the number of models already evaluated and what `recover` did."""
        recovered = self.open(overwrite)
        try:
            wanted = run_identity(self.cfg, self.extra)
            path = self.root / "run.json"
            if path.exists():
                try:
                    found = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    found = {}
                if found != wanted:
                    old, new = {**found.get("config", {}), **found}, {**wanted["config"], **wanted}
                    differing = sorted(k for k in old.keys() | new.keys() if k != "config" and old.get(k) != new.get(k))
                    what = ", ".join(differing) + " differ" if differing else "written by another version"
                    raise InputError(
                        f"{self.root} holds an interrupted run of another configuration ({what}); finish it with "
                        f"its own command, or remove it with: rm -r '{self.root}'"
                    )
            else:
                write_json_atomic(wanted, path)
        except BaseException:
            self.release()
            raise
        done = sum(1 for _ in (self.root / "models").glob("*/evaluated.json"))
        return done, recovered

    def holds_trained_models(self) -> bool:
        return any((self.root / "dense").glob("*/dense.json")) or any((self.root / "models").glob("*/evaluated.json"))

    # -- corrupted test images

    def condition_path(self, condition_id: int) -> Path:
        folder = self.root / "conditions"
        folder.mkdir(exist_ok=True)
        return folder / f"{condition_id}.npy"

    def save_condition(self, condition_id: int, images: np.ndarray) -> None:
        save_npy_atomic(self.condition_path(condition_id), images)

    def link_condition(self, condition_id: int, source: Path) -> None:
        link_or_copy(source, self.condition_path(condition_id))

    # -- pruned (and dense) models of the snapshot

    def model_dir(self, model_id: str) -> Path:
        return self.root / "models" / schema.check_model_id(model_id)

    def trained(self, model_id: str) -> bool:
        return (self.model_dir(model_id) / "model.json").is_file()

    def evaluated(self, model_id: str) -> bool:
        return (self.model_dir(model_id) / "evaluated.json").is_file()

    def save_trained(self, record: dict, model: nn.Module | None, layers: pl.DataFrame) -> None:
        """The model's record and its rows of layers.parquet, and its checkpoint unless
        `model` is None (a given model is read again from its source)."""
        model_id = record["model_id"]
        folder = self.model_dir(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        if model is not None:
            write_bytes_atomic(folder / "checkpoint.pt", state_bytes(model.state_dict()))
        write_parquet_atomic(conform(layers, schema.LAYERS_SCHEMA, f"layers of {model_id}"), folder / "layers.parquet")
        write_json_atomic(record, folder / "model.json")

    def has_checkpoint(self, model_id: str) -> bool:
        return (self.model_dir(model_id) / "checkpoint.pt").is_file()

    def link_checkpoint(self, model_id: str, source: Path) -> None:
        """A checkpoint written elsewhere (a snapshot grown), linked or copied in."""
        link_or_copy(source, self.model_dir(model_id) / "checkpoint.pt")

    def record(self, model_id: str) -> dict:
        return json.loads((self.model_dir(model_id) / "model.json").read_text())

    def checkpoint(self, model_id: str) -> dict[str, torch.Tensor]:
        return load_state(self.model_dir(model_id) / "checkpoint.pt")

    def save_evaluated(self, model_id: str, tables: dict[str, pl.DataFrame], relu: dict[str, float | None]) -> None:
        """The model's evaluated tables (metrics, classes, embedding and, when asked for,
        occlusion), then the marker, which keeps its ReLU diagnostics."""
        folder = self.model_dir(model_id)
        write_metrics_atomic(metrics_table(model_id, tables["metrics"]), folder / "metrics.parquet")
        for name, table_name in EVALUATED_TABLES.items():
            if name in tables:
                target = schema.TABLE_SCHEMAS.get(table_name) or schema.OPTIONAL_SCHEMAS[table_name]
                write_parquet_atomic(conform(tables[name], target, f"{name} of {model_id}"), folder / f"{name}.parquet")
        write_json_atomic({"model_id": model_id, **relu}, folder / "evaluated.json")

    def relu_diagnostics(self, model_id: str) -> dict[str, float | None]:
        marker = json.loads((self.model_dir(model_id) / "evaluated.json").read_text())
        return {name: marker.get(name) for name in schema.RELU_DIAGNOSTICS}

    def table(self, model_id: str, name: str) -> Path:
        return self.model_dir(model_id) / f"{name}.parquet"


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    return buffer.getvalue()


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)
