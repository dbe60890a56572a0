"""A compute run that is killed continues where it stopped, and no command destroys data it
did not write: kills at every stage, Ctrl-C and SIGTERM, --overwrite, a folder that appears
during the run, two runs on one --out, merge into a part, a crash between placement renames."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from compute import output, schema
from compute.snapshot import scan_metrics
from tests.conftest import REPO, run_cli, run_cli_here

# every method, thumbnails, occlusion and checkpoints: each part of the snapshot has to survive a resume
SWEEP = (
    "compute", "--preset", "tiny", "--methods", "all", "--thumbnail-samples", "12", "--occlusion-samples", "3",
    "--checkpoints", "--quiet",
)  # fmt: skip


def work_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.work"


def start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "compute", *SWEEP, "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(process: subprocess.Popen, condition, timeout: float = 120.0) -> bool:
    """Poll until `condition()` holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.002)
    raise TimeoutError("the condition never held")


def dense_done(out: Path) -> bool:
    return (work_folder(out) / "dense" / "s0" / "dense.json").is_file()


def killed_after_the_dense_model(out: Path) -> None:
    """A run on `out` killed (SIGKILL) once its dense model is trained."""
    process = start(out)
    assert wait_for(process, lambda: dense_done(out))
    process.send_signal(signal.SIGKILL)
    process.wait()


def assert_same_snapshot(got: Path, want: Path) -> None:
    """Every table equal, wall-clock timing columns aside; the manifests agree but for times."""
    timing = ["train_seconds", "prune_seconds"]
    for name in (*schema.TABLE_SCHEMAS, schema.THUMBNAILS, schema.OCCLUSION):
        a, b = pl.read_parquet(got / name), pl.read_parquet(want / name)
        a, b = a.drop([c for c in timing if c in a.columns]), b.drop([c for c in timing if c in b.columns])
        key = [c for c in ("model_id", "condition_id", "class", "sample_id", "layer", "row", "col") if c in a.columns]
        assert a.sort(key).equals(b.sort(key)), name
    rows = ["model_id", "condition_id", "sample_id"]
    assert scan_metrics(got).collect().sort(rows).equals(scan_metrics(want).collect().sort(rows))
    checkpoints = sorted(p.name for p in (want / schema.CHECKPOINTS_DIR).iterdir())
    assert sorted(p.name for p in (got / schema.CHECKPOINTS_DIR).iterdir()) == checkpoints
    for name in checkpoints:
        assert (got / schema.CHECKPOINTS_DIR / name).read_bytes() == (want / schema.CHECKPOINTS_DIR / name).read_bytes()
    a, b = (json.loads((p / schema.MANIFEST).read_text()) for p in (got, want))
    for key in ("config", "parents", "model_notes", "counts", "schedule", "methods"):
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> SimpleNamespace:
    """The SWEEP run to its end on a fresh --out while a second run on the same --out is tried (and must be
    refused). Run once: test_two_runs_on_one_out_do_not_clobber_each_other checks the second run's refusal,
    and the first run, the same command line that was never killed, is the uninterrupted snapshot the
    resumed runs must equal (so the whole sweep is computed once for both, not twice)."""
    out = tmp_path_factory.mktemp("whole") / "run"
    first = start(out)
    started = wait_for(first, lambda: (work_folder(out) / "run.json").is_file())
    second = run_cli(*SWEEP, "--out", str(out)) if started else None
    _, first_stderr = first.communicate(timeout=300)
    return SimpleNamespace(out=out, started=started, second=second, first=first, first_stderr=first_stderr)


@pytest.fixture(scope="module")
def uninterrupted(two_runs) -> Path:
    out = two_runs.out
    assert two_runs.first.returncode == 0, two_runs.first_stderr
    assert not work_folder(out).exists()  # a finished run leaves no work folder
    return out


def trained_not_evaluated(work: Path) -> bool:
    models = work / "models"
    return models.is_dir() and any(
        (m / "model.json").is_file() and not (m / "evaluated.json").is_file() for m in models.iterdir()
    )


STAGES = {
    # in training: the dense model is done, a method's model is being trained
    "training": lambda work: (work / "dense" / "s0" / "dense.json").is_file(),
    # in evaluation: a model is checkpointed but its tables are not written yet
    "evaluation": trained_not_evaluated,
    # in assembly: the snapshot is being written in the work folder
    "assembly": lambda work: (work / "snapshot" / schema.SUMMARY).is_file(),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_in_any_stage_resumes_to_the_same_snapshot(stage, uninterrupted, tmp_path):
    out = tmp_path / "run"
    work = work_folder(out)
    for _ in range(10):  # the kill must land inside the stage; a run too quick for the poll is retried
        process = start(out)
        reached = wait_for(process, lambda: STAGES[stage](work))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if reached and not out.exists():
            break
        shutil.rmtree(out, ignore_errors=True)  # finished before the poll saw the stage
    else:
        pytest.fail(f"never killed the run in {stage}")
    assert work.is_dir() and not out.exists()
    result = run_cli(*SWEEP, "--out", str(out))
    assert result.returncode == 0, result.stderr
    if stage == "assembly":  # every model was evaluated before the kill: none is redone
        assert "27 models, 27 of them from an interrupted run" in result.stdout
    assert not work.exists()
    assert_same_snapshot(out, uninterrupted)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_say_how_far_the_run_got_and_keep_the_work(sig, tmp_path):
    out = tmp_path / "run"
    process = start(out)
    assert wait_for(process, lambda: dense_done(out))
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    line = stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in stderr
    assert "interrupted after" in line and "of 27 models; run the same command to continue" in line
    assert work_folder(out).is_dir() and not out.exists()


def test_a_work_folder_of_another_configuration_is_never_mixed_in(tmp_path):
    out = tmp_path / "run"
    killed_after_the_dense_model(out)
    result = run_cli("compute", "--preset", "tiny", "--epochs", "3", "--out", str(out), "--quiet")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "another configuration" in line and "epochs" in line
    assert f"rm -r '{work_folder(out)}'" in line
    assert (work_folder(out) / "dense" / "s0" / "dense.json").is_file()  # left for its own command


def test_two_runs_on_one_out_do_not_clobber_each_other(two_runs):
    out, first, second = two_runs.out, two_runs.first, two_runs.second
    assert two_runs.started  # the first run had begun writing when the second started
    assert second.returncode == 2 and "another prunescope command is writing to" in second.stderr
    assert first.returncode == 0
    assert run_cli("validate", str(out)).returncode == 0


# --- outputs that never destroy data ---------------------------------------------------


def folder_with_user_files(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("keep")
    return path


@pytest.mark.parametrize("command", ["compute", "merge", "synth"])
def test_overwrite_replaces_only_a_snapshot_or_an_empty_folder(command, tiny_snapshot, tmp_path):
    out = folder_with_user_files(tmp_path / "u")
    args = {
        "compute": ("compute", "--preset", "tiny", "--quiet"),
        "merge": ("merge", str(tiny_snapshot), str(tiny_snapshot)),
        "synth": ("synth", "--models", "3", "--samples", "10", "--quiet"),
    }[command]
    result = run_cli_here(*args, "--out", str(out), "--overwrite")
    assert result.returncode == 2, result.stderr
    assert "not a snapshot" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "keep" and (out / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u"]


def test_overwrite_replaces_an_empty_folder_and_a_snapshot(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    synth = ("synth", "--samples", "10", "--quiet", "--out", str(out), "--overwrite")
    assert run_cli(*synth, "--models", "3").returncode == 0
    assert run_cli(*synth, "--models", "4").returncode == 0
    assert json.loads((out / schema.MANIFEST).read_text())["counts"]["models"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


@pytest.mark.parametrize("empty_at_start", [False, True])
def test_a_folder_that_appears_during_the_run_is_never_replaced(empty_at_start, tmp_path):
    out = tmp_path / "run"
    if empty_at_start:  # an empty folder may be replaced; one that filled up meanwhile may not
        out.mkdir()
    process = start(out)
    assert wait_for(process, lambda: dense_done(out))
    folder_with_user_files(out)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2, stderr
    assert "changed while this command worked" in stderr and len(stderr.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "keep" and not (out / schema.MANIFEST).exists()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.finished-")]
    assert len(kept) == 1 and run_cli("validate", str(kept[0])).returncode == 0
    # nothing is left to resume: the work folder goes, and the line says so
    assert not (tmp_path / ".run.work").exists() and "work folder .run.work is removed" in stderr


def test_merge_refuses_an_out_that_is_or_is_inside_a_part(tiny_snapshot, tmp_path):
    for out in (tiny_snapshot, tiny_snapshot / "inner"):
        result = run_cli_here("merge", str(tiny_snapshot), str(tmp_path), "--out", str(out), "--overwrite")
        assert result.returncode == 2 and "the part" in result.stderr and "an input of this command" in result.stderr
    assert run_cli("validate", str(tiny_snapshot)).returncode == 0


def fail_the_rename_into_place(monkeypatch, out: Path) -> None:
    real_replace = os.replace

    def replace(src, dst):
        if Path(src) == work_folder(out) / "snapshot" and Path(dst) == out:
            raise OSError("simulated failure")
        real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)


def test_an_error_between_the_placement_renames_puts_the_old_snapshot_back(monkeypatch, tmp_path):
    from compute import synth

    out = tmp_path / "s"
    synth.run(synth.SynthSpec(3, 10, 10, 0), out, overwrite=False, progress=False)
    old = (out / schema.MANIFEST).read_text()
    fail_the_rename_into_place(monkeypatch, out)
    with pytest.raises(OSError, match="simulated"):
        synth.run(synth.SynthSpec(4, 10, 10, 1), out, overwrite=True, progress=False)
    assert (out / schema.MANIFEST).read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_a_crash_between_the_placement_renames_is_recovered(monkeypatch, tmp_path):
    from compute import snapshot, synth

    out = tmp_path / "s"
    synth.run(synth.SynthSpec(3, 10, 10, 0), out, overwrite=False, progress=False)
    old = json.loads((out / schema.MANIFEST).read_text())
    fail_the_rename_into_place(monkeypatch, out)
    monkeypatch.setattr(snapshot.SnapshotWriter, "abort", lambda self: None)  # the process dies: no cleanup
    with pytest.raises(OSError, match="simulated"):
        synth.run(synth.SynthSpec(4, 10, 10, 1), out, overwrite=True, progress=False)
    monkeypatch.undo()
    work = work_folder(out)
    (work / "LOCK").unlink()  # as the dead process's lock would be released (it is still held here)
    # neither snapshot is at --out, both are reachable in the work folder
    assert not out.exists()
    assert json.loads((work / "replaced" / schema.MANIFEST).read_text()) == old
    assert json.loads((work / "snapshot" / schema.MANIFEST).read_text())["counts"]["models"] == 4
    # the next command on that --out finishes the placement first
    result = run_cli("synth", "--models", "3", "--samples", "10", "--quiet", "--out", str(out))
    assert result.returncode == 2 and "already holds a snapshot" in result.stderr
    assert json.loads((out / schema.MANIFEST).read_text())["counts"]["models"] == 4
    assert not work.exists()


def test_a_finished_run_reports_interrupted_runs_beside_it(tmp_path):
    killed = tmp_path / "a"
    killed_after_the_dense_model(killed)
    result = run_cli("compute", "--preset", "tiny", "--quiet", "--out", str(tmp_path / "b"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("prunescope compute: wrote")
    assert lines[1] == (
        f"prunescope compute: note: {work_folder(killed)} holds an interrupted run; run its command again to "
        f"finish it, or remove it with: rm -r '{work_folder(killed)}'"
    )


def test_another_command_never_takes_an_interrupted_runs_work_folder(tmp_path):
    # synth, like merge, writes through the same work folder: it must leave compute's alone
    out = tmp_path / "run"
    killed_after_the_dense_model(out)
    result = run_cli("synth", "--models", "3", "--samples", "10", "--quiet", "--out", str(out))
    assert result.returncode == 2 and "interrupted prunescope compute run" in result.stderr, result.stderr
    assert dense_done(out) and not out.exists()
