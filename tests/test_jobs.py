"""`compute --jobs N`: workers side by side on one device make the single run's snapshot, also
after a kill -9 of a worker or of the parent."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from compute import data, schema
from compute.config import ComputeConfig
from compute.corrupted import ConditionImages
from compute.jobs import chosen_thumbnails
from compute.output import check_target
from compute.plan import resolve_config
from compute.presets import get_preset
from compute.sweep import Sweep
from compute.workdir import SharedConditions, SharedDense, WorkFolder
from tests.conftest import DEMO, KILLED_SWEEP, REPO, SWEEP, assert_refused, assert_same_sweep, run_cli, run_cli_here

HOLD_THE_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def workers_of(pid: int) -> list[int]:
    """The worker processes `pid` spawned (Linux /proc), not multiprocessing's resource tracker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"resource_tracker" not in command:
            found.append(int(stat.parent.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "compute", *KILLED_SWEEP, "--jobs", "2", "--out", str(out)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_evaluated_models(folder: Path, timeout: float = 120) -> None:
    """Until some worker has evaluated a model: the kill lands mid-sweep."""
    deadline = time.monotonic() + timeout
    while not any(folder.glob(".part-*.work/models/*/evaluated.json")):
        assert time.monotonic() < deadline, "no worker evaluated a model"
        time.sleep(0.05)


def assert_dense_models_shared(root: Path) -> None:
    """Every dense model in the unfinished workers' work folders is the shared one, its record (training
    seconds included) byte for byte: a worker that trained its own would have taken other seconds."""
    records = list(root.glob(".part-*.work/dense/s*/dense.json"))
    assert records
    for record in records:
        assert record.read_bytes() == (root / "dense" / record.parent.name / "dense.json").read_bytes()


def assert_conditions_shared(root: Path) -> None:
    """Every corrupted test set in the unfinished workers' work folders is the one file the workers
    share (a hard link: the same inode), so none made its own and the disk holds one copy; a worker
    stopped before it linked them all holds fewer, the one that evaluated a model all six."""
    shared = {path.name: path.stat().st_ino for path in (root / "conditions").glob("*.npy")}
    assert len(shared) == 6  # the tiny preset's corrupted conditions
    linked = [
        {path.name: path.stat().st_ino for path in (folder / "conditions").glob("*.npy")}
        for folder in root.glob(".part-*.work")
    ]
    assert all(links.items() <= shared.items() for links in linked)
    assert any(links == shared for links in linked)


def test_workers_start_on_different_conditions_and_go_round():
    conditions = list(range(6))
    turns = [SharedConditions(Path("jobs"), k, 3).in_turn(conditions) for k in (1, 2, 3)]
    assert turns == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 0, 1], [4, 5, 0, 1, 2, 3]]
    fewer = [SharedConditions(Path("jobs"), k, 4).in_turn([7, 8]) for k in (1, 2, 3, 4)]  # than workers
    assert fewer == [[7, 8], [7, 8], [8, 7], [8, 7]]


def test_two_workers_write_the_single_runs_snapshot(whole_sweep, tmp_path):
    out = tmp_path / "all"
    result = run_cli(*SWEEP, "--jobs", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "merged the parts of 2 workers" in result.stdout and "27 models x 7 conditions" in result.stdout
    assert_same_sweep(out, whole_sweep, thumbnails=True)
    assert json.loads((out / schema.MANIFEST).read_text())["jobs"] == 2
    assert os.listdir(tmp_path) == ["all"]  # the parts and their folder are gone


def test_thumbnails_chosen_and_made_again_after_the_run_are_the_demo_runs_own():
    """--jobs remakes the chosen samples' images alone: under each of the 19 corruptions at every
    severity they are the pixels the demo run made for its whole test set (PNGs byte for byte)."""
    config = json.loads((DEMO / schema.MANIFEST).read_text())["config"]
    cfg = ComputeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    assert len(cfg.corruptions) == 19 and cfg.thumbnail_samples
    remade = chosen_thumbnails(cfg)(DEMO)
    assert remade.equals(pl.read_parquet(DEMO / schema.THUMBNAILS))


def test_a_worker_killed_mid_sweep_and_the_same_command_continues(whole_killed_sweep, tmp_path):
    out = tmp_path / "all"
    parent = start(out)
    wait_for_evaluated_models(tmp_path / ".all.jobs")
    worker = workers_of(parent.pid)[0]
    os.kill(worker, signal.SIGKILL)
    _, stderr = parent.communicate(timeout=300)
    assert parent.returncode == 1 and stderr.count("\n") == 1, stderr
    assert "was killed" in stderr and "run the same command to continue" in stderr
    assert not out.exists()
    assert_dense_models_shared(tmp_path / ".all.jobs")
    assert_conditions_shared(tmp_path / ".all.jobs")
    result = run_cli(*KILLED_SWEEP, "--jobs", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert_same_sweep(out, whole_killed_sweep, thumbnails=True)
    assert os.listdir(tmp_path) == ["all"]


def test_the_parent_killed_takes_its_workers_and_the_same_command_continues(whole_killed_sweep, tmp_path):
    out = tmp_path / "all"
    parent = start(out)
    wait_for_evaluated_models(tmp_path / ".all.jobs")
    workers = workers_of(parent.pid)
    # their OpenMP threads sleep while they wait, or two workers' threads spin on each other's cores
    for worker in workers:
        assert environment_of(worker)["OMP_WAIT_POLICY"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(alive(w) for w in workers):  # each worker stops as an interrupted run, its work kept
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.1)
    assert len(list((tmp_path / ".all.jobs").glob(".part-*.work"))) == 2
    assert_dense_models_shared(tmp_path / ".all.jobs")
    assert_conditions_shared(tmp_path / ".all.jobs")
    result = run_cli(*KILLED_SWEEP, "--jobs", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert_same_sweep(out, whole_killed_sweep, thumbnails=True)


def test_a_worker_waits_for_the_dense_model_another_trains_and_goes_on_when_that_one_is_killed(tmp_path):
    shared = SharedDense(tmp_path)
    (tmp_path / "dense").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path / "dense" / "s0.lock")], stdout=subprocess.PIPE, text=True
    )
    entered = threading.Event()

    def wait_for_the_lock():
        with shared.claimed(0):
            entered.set()

    try:
        assert holder.stdout.readline() == "held\n"
        threading.Thread(target=wait_for_the_lock, daemon=True).start()
        assert not entered.wait(0.5)  # the holder is training it
        os.kill(holder.pid, signal.SIGKILL)
        assert entered.wait(10)  # killed, its lock went with it
    finally:
        holder.kill()
        holder.wait()


def work_folder(out: Path, cfg: ComputeConfig) -> WorkFolder:
    work = WorkFolder(check_target(out, False), cfg)
    work.acquire()
    return work


def test_a_worker_waits_for_a_corrupted_set_another_makes_and_makes_it_when_that_one_is_killed(tmp_path, monkeypatch):
    cfg = resolve_config(get_preset("tiny"))
    dataset = data.load(data.spec_of(cfg))
    conditions = schema.build_conditions(cfg.corruptions, cfg.severities)
    corrupted = [c.condition_id for c in conditions if c.corruption != schema.CLEAN]
    cpu = torch.device("cpu")
    alone = work_folder(tmp_path / "alone", cfg)
    ConditionImages(dataset, conditions, alone).prepare(cfg, cpu, False)

    shared = SharedConditions(tmp_path / "jobs", 1, 2)  # worker 1 starts at the first set
    shared.folder.mkdir(parents=True)
    (shared.folder / f".{corrupted[0]}.npy.tmp-killed").write_bytes(b"half")  # a killed maker's leftover
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(shared.folder / f"{corrupted[0]}.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    worker = work_folder(tmp_path / "worker", cfg)
    finished, failed = threading.Event(), []

    def prepare():
        try:
            ConditionImages(dataset, conditions, worker).prepare(cfg, cpu, False, shared)
        except Exception as err:  # noqa: BLE001 - reported by the test's thread
            failed.append(err)
        finished.set()

    try:
        assert holder.stdout.readline() == "held\n"
        threading.Thread(target=prepare, daemon=True).start()
        assert not finished.wait(1.0)  # another worker is making the first set
        assert not list(shared.folder.glob("*.npy"))
        os.kill(holder.pid, signal.SIGKILL)
        assert finished.wait(60) and not failed, failed  # killed, its lock went with it: this one makes them
    finally:
        holder.kill()
        holder.wait()
    for condition_id in corrupted:
        linked, made = worker.condition_path(condition_id), shared.path(condition_id)
        assert linked.stat().st_ino == made.stat().st_ino
        assert linked.read_bytes() == alone.condition_path(condition_id).read_bytes()

    # a second worker only links them (here a copy: a file system without hard links)
    monkeypatch.setattr(ConditionImages, "make", lambda *args: pytest.fail("a shared set was made again"))
    monkeypatch.setattr(os, "link", lambda *args: (_ for _ in ()).throw(OSError("no hard links here")))
    second = work_folder(tmp_path / "second", cfg)
    ConditionImages(dataset, conditions, second).prepare(cfg, cpu, False, SharedConditions(tmp_path / "jobs", 2, 2))
    for condition_id in corrupted:
        copied = second.condition_path(condition_id)
        assert copied.stat().st_ino != shared.path(condition_id).stat().st_ino
        assert copied.read_bytes() == alone.condition_path(condition_id).read_bytes()


def test_the_first_worker_trains_a_seeds_dense_model_and_the_others_load_it(tmp_path, monkeypatch):
    cfg = resolve_config(get_preset("tiny"))
    dataset = data.load(data.spec_of(cfg))
    shared = SharedDense(tmp_path / "jobs")
    (tmp_path / "jobs" / "dense" / "s0").mkdir(parents=True)
    (tmp_path / "jobs" / "dense" / "s0" / "init.pt").write_bytes(b"half")  # a killed worker's, without its record

    def worker(name: str, shared: SharedDense | None = shared) -> Sweep:
        # the dense models are all of a work folder that dense_states touches
        return Sweep(cfg, dataset, SharedDense(tmp_path / name), torch.device("cpu"), False, shared=shared)

    first, trained = worker("first").dense_states(0)
    assert json.loads((tmp_path / "jobs" / "dense" / "s0" / "dense.json").read_text()) == trained
    second = worker("second")
    monkeypatch.setattr(second, "train_dense", lambda seed: pytest.fail("the second worker trained it again"))
    states, loaded = second.dense_states(0)
    assert loaded == trained
    for name in ("init", "rewind", "model"):
        assert states[name].keys() == first[name].keys()
        assert all(torch.equal(states[name][k], first[name][k].cpu()) for k in first[name])
    for name in ("first", "second"):
        assert json.loads((tmp_path / name / "dense" / "s0" / "dense.json").read_text()) == trained
    _, alone = worker("alone", shared=None).dense_states(0)
    assert alone["sha256"] == trained["sha256"]  # the model a run without --jobs trains


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--jobs", "0"], ["--jobs", "1 or more"]),
        (["--jobs", "two"], ["--jobs", "whole number"]),
        (["--jobs", "2", "--shard", "1/2"], ["--jobs", "--shard"]),
        (["--jobs", "2", "--add-to", "somewhere"], ["--jobs", "--add-to"]),
    ],
)
def test_bad_jobs_flags_stop_before_any_work(flags, words, tmp_path):
    result = run_cli_here("compute", "--preset", "tiny", "--out", str(tmp_path / "out"), *flags)
    assert_refused(result, *words)
    assert os.listdir(tmp_path) == []
