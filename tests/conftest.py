"""Shared fixtures: a tiny snapshot built once per session by the real command line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"


WRITERS = ("compute", "evaluate", "merge", "synth")


def check_what_it_wrote(args: tuple[str, ...], result: subprocess.CompletedProcess, cwd: Path | None) -> None:
    """Every snapshot a command of the tests writes passes validate: the check runs after each
    successful compute, evaluate, merge and synth, on its --out (a dry run writes nothing there)."""
    if result.returncode != 0 or not args or args[0] not in WRITERS or "--out" not in args or "--dry-run" in args:
        return
    from compute.validate import check_snapshot

    out = Path(args[args.index("--out") + 1])
    check_snapshot(out if out.is_absolute() else (cwd or REPO) / out)  # raises on the first violation


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`prunescope ARGS` in a subprocess, as a user runs it; what it writes is validated."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "compute", *args], capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=600
    )
    check_what_it_wrote(args, result, cwd)
    return result


def run_cli_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`prunescope ARGS` through the same main() in this process, for input the command refuses
    and for dry runs, which write nothing: a fresh interpreter would spend 2-3 s importing torch.
    An exception that main() lets out fails the test, as a traceback would."""
    from compute.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or REPO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    finally:
        os.chdir(here)
    result = subprocess.CompletedProcess(["prunescope", *args], code, out.getvalue(), err.getvalue())
    check_what_it_wrote(args, result, cwd)
    return result


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """A command refused its input as the project promises: exit 2 and one line, no traceback,
    holding every one of `words`. Returns the line."""
    line = result.stderr.strip()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert all(w in line for w in words), line
    return line


def relu_rates_by_hooks(module, images) -> tuple[float, float]:
    """(dead_relu, dynamic_dead_relu) of `module` on `images`, recomputed with plain torch: one
    forward keeping the output of every application of every nn.ReLU; the share of units at
    zero for every image, and the share of (unit, image) outputs at zero."""
    import torch
    from torch import nn

    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o.clone()))
             for m in module.modules() if isinstance(m, nn.ReLU)]  # fmt: skip
    with torch.no_grad():
        module.eval()(images)
    for hook in hooks:
        hook.remove()
    dead = sum(int((o <= 0).all(dim=0).sum()) for o in outputs) / sum(o[0].numel() for o in outputs)
    at_zero = sum(int((o <= 0).sum()) for o in outputs) / sum(o.numel() for o in outputs)
    return dead, at_zero


@pytest.fixture(scope="session")
def tiny_snapshot(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snapshots") / "tiny"
    result = run_cli("compute", "--preset", "tiny", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def synthesised(tmp_path_factory, name: str, models: int, samples: int) -> Path:
    """A `prunescope synth` snapshot of `models` x 96 conditions x `samples`, for a module's fixture."""
    out = tmp_path_factory.mktemp(name) / name
    result = run_cli("synth", "--models", str(models), "--samples", str(samples), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


# every method, so that any random draw a method takes from shared state shows up as a difference;
# occlusion, whose samples every shard or worker must choose alike; thumbnails of a fifth of the
# samples, which --jobs must choose from every worker's models (each worker's own choice differs)
SWEEP = (
    "compute", "--preset", "tiny", "--methods", "all", "--thumbnail-samples", "12", "--occlusion-samples", "2",
    "--quiet",
)  # fmt: skip


#: fewer methods, for the runs a test kills midway and continues (a third of SWEEP's time); two
#: seeds, so --jobs workers share two dense models and start at different ones, and six jobs, so
#: the kill lands with work left for both workers
KILLED_SWEEP = (
    "compute", "--preset", "tiny", "--seeds", "2", "--methods", "dense,random,snip", "--thumbnail-samples", "12",
    "--occlusion-samples", "2", "--quiet",
)  # fmt: skip


def one_run(folder: Path, sweep: tuple[str, ...]) -> Path:
    """`sweep` in one uninterrupted run, written to `folder`/all."""
    result = run_cli(*sweep, "--out", str(folder / "all"))
    assert result.returncode == 0, result.stderr
    return folder / "all"


@pytest.fixture(scope="session")
def whole_killed_sweep(tmp_path_factory):
    """KILLED_SWEEP in one run, uninterrupted."""
    return one_run(tmp_path_factory.mktemp("whole-killed"), KILLED_SWEEP)


@pytest.fixture(scope="session")
def whole_sweep(tmp_path_factory):
    """SWEEP in one run: what its shards, its workers and its plan are held to."""
    return one_run(tmp_path_factory.mktemp("whole"), SWEEP)


def assert_same_sweep(out: Path, whole: Path, thumbnails: bool) -> None:
    """`out` (merged shards, or the parts of --jobs workers) holds what the single run `whole` wrote:
    every table equal row for row, in the same order, but the timings; the same dense parents.
    `thumbnails`: the thumbnails too (--jobs chooses them from every model, as the single run;
    merged shards keep each shard's own choice)."""
    import polars as pl

    from compute import schema

    timing = ["train_seconds", "prune_seconds"]
    merged_models = pl.read_parquet(out / schema.MODELS)
    whole_models = pl.read_parquet(whole / schema.MODELS)
    assert merged_models["model_id"].to_list() == whole_models["model_id"].to_list()  # the sweep's order
    assert merged_models.drop(timing).equals(whole_models.drop(timing))
    names = [schema.SUMMARY, schema.CLASSES, schema.EMBEDDING, schema.LAYERS, schema.OCCLUSION, schema.ANSWERS]
    for name in names + ([schema.THUMBNAILS] if thumbnails else []):
        assert pl.read_parquet(out / name).equals(pl.read_parquet(whole / name)), name
    for model_id in whole_models["model_id"]:
        partition = schema.metrics_partition(model_id)
        assert pl.read_parquet(out / partition).equals(pl.read_parquet(whole / partition)), model_id

    manifest = json.loads((out / schema.MANIFEST).read_text())
    whole_manifest = json.loads((whole / schema.MANIFEST).read_text())
    assert manifest["parents"] == whole_manifest["parents"]  # every part trained the same dense model
    assert manifest["counts"] == whole_manifest["counts"] and "shard" not in manifest
    assert manifest["config"] == whole_manifest["config"]
    assert manifest["model_notes"] == whole_manifest["model_notes"]  # e.g. supermask drift, imp rounds
    assert manifest["occlusion"] == whole_manifest["occlusion"] and manifest["occlusion"]["samples"] == 2


@pytest.fixture
def snapshot_copy(tiny_snapshot, tmp_path) -> Path:
    """A private copy of the tiny snapshot that a test may damage."""
    target = tmp_path / "copy"
    shutil.copytree(tiny_snapshot, target)
    return target


@pytest.fixture(scope="session")
def tiny_data():
    """A small slice of the digits data set, as the compute step loads it."""
    from compute.data import DataSpec, load

    return load(DataSpec("digits", n_test=50, n_train=200))


@pytest.fixture(scope="session")
def demo_page():
    """`demo_page(path, query)`: the app on the demo snapshot, opened at `path` with `query` and checked
    for exceptions and errors, run once per session and shared by the tests that only read what it shows.
    A test that sets a widget or clicks a button opens its own (tests.test_pages.page): a shared run is
    never changed."""
    from tests.apphelpers import open_page

    runs = {}

    def get(path: str, query: dict | None = None):
        key = (path, tuple(sorted((query or {}).items())))
        if key not in runs:
            with pytest.MonkeyPatch.context() as monkeypatch:
                runs[key] = open_page(monkeypatch, DEMO.parent, path, query)
        return runs[key]

    return get
