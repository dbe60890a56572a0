"""Shared fixtures: a tiny snapshot built once per session by the real command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`prunescope ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "compute", *args], capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=600
    )


@pytest.fixture(scope="session")
def tiny_snapshot(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snapshots") / "tiny"
    result = run_cli("compute", "--preset", "tiny", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


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
