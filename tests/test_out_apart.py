"""A command never writes or deletes inside its own inputs, nor inside another snapshot: every --out
that is, holds or lies inside an input or a snapshot is refused with one line before any work, and
the inputs stay byte for byte as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from compute import schema
from tests.conftest import assert_refused as refused
from tests.conftest import run_cli, run_cli_here


def tree(path: Path) -> dict[str, str]:
    """Every file below `path` (hidden ones too) and its SHA-256."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture
def with_checkpoints(snapshot_copy) -> Path:
    """A snapshot holding the user's model weights, as `--checkpoints` leaves them."""
    folder = snapshot_copy / schema.CHECKPOINTS_DIR
    folder.mkdir()
    (folder / "dense-s0.pt").write_bytes(b"the user's weights")
    return snapshot_copy


def test_evaluate_never_replaces_its_own_models_source(with_checkpoints):
    before = tree(with_checkpoints.parent)
    result = run_cli_here("evaluate", "--models", str(with_checkpoints), "--out", str(with_checkpoints), "--overwrite")
    refused(result, "--models", "an input of this command")
    assert tree(with_checkpoints.parent) == before  # the checkpoints, and everything beside them, untouched


@pytest.mark.parametrize("inner", ["metrics/model_id=new", "sub", "checkpoints/x"])
def test_an_out_inside_a_snapshot_is_refused_before_any_work(with_checkpoints, tmp_path, inner):
    before = tree(with_checkpoints.parent)
    out = with_checkpoints / inner
    for command in (
        ["compute", "--preset", "tiny", "--out", str(out)],
        ["evaluate", "--models", str(with_checkpoints), "--out", str(out)],
        ["synth", "--models", "3", "--samples", "10", "--out", str(out)],
    ):
        refused(run_cli_here(*command), "lies inside", "snapshot")
    assert tree(with_checkpoints.parent) == before  # no work folder left inside it
    assert run_cli("validate", str(with_checkpoints)).returncode == 0


def test_add_to_and_the_data_stay_apart_from_out(snapshot_copy, tmp_path):
    before = tree(snapshot_copy)
    refused(run_cli_here("compute", "--preset", "tiny", "--methods", "random", "--add-to", str(snapshot_copy),
                         "--out", str(snapshot_copy), "--overwrite"), "--add-to")  # fmt: skip
    refused(run_cli_here("evaluate", "--models", str(snapshot_copy), "--add-to", str(snapshot_copy),
                         "--out", str(snapshot_copy), "--overwrite"), "an input of this command")  # fmt: skip
    assert tree(snapshot_copy) == before
    # an --out inside the data, and an --out that would hold it (an empty folder is a valid --out)
    train = tmp_path / "holder" / "train"
    train.mkdir(parents=True)
    refused(run_cli_here("compute", "--preset", "tiny", "--dataset", "imagefolder", "--data-root", str(train),
                         "--out", str(train / "snap")), "lies inside --data-root")  # fmt: skip
    data = tmp_path / "empty" / "images.npz"
    data.parent.mkdir()
    data.write_bytes(b"never read: refused first")
    refused(run_cli_here("compute", "--preset", "tiny", "--dataset", "npz", "--data-root", str(data),
                         "--out", str(data.parent), "--overwrite"), "holds --data-root")  # fmt: skip
    assert not any(train.iterdir()) and data.read_bytes() == b"never read: refused first"
