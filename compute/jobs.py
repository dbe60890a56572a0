"""`compute --jobs N`: the sweep's (seed, method) jobs in N worker processes on one device.

The workers are the shards of `--shard K/N`, run side by side: worker K computes shard K/N
into `.<out>.jobs/part-K` beside --out, resumable as any run (its work folder lies beside
its part), and when every part is in place they are merged into --out (merge.py) and the
folder goes. The merged snapshot equals the single run's, as merged shards do. A seed's
dense model is trained once, by the first worker that needs it, into `.<out>.jobs/dense/`,
while the others wait for it (a file lock) and prune it: a shard alone trains its own. Each
corrupted test set is made once too, into `.<out>.jobs/conditions/`, and hard-linked into the
workers' work folders (for cifar10, 95 sets of 30 MB: one copy on disk, not one per worker).

A worker dies with the parent (Linux: PR_SET_PDEATHSIG), so after a kill -9 of the parent
or of one worker the same command finds the finished parts and the work folders of the
others, and continues.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from compute import data, merge, schema
from compute.assemble import corrupted_thumbnails, thumbnail_subset
from compute.config import ComputeConfig, InputError, StoppedShort, shard_jobs
from compute.corrupted import SampleImages
from compute.output import check_target
from compute.plan import resolve_device
from compute.snapshot import sample_errors

JOBS_SUFFIX = ".jobs"
#: what a worker writes when it stops on an error: the one line the parent reports
ERROR_FILE = "error.txt"
#: GPU memory kept free of workers under --jobs auto: the CUDA context of each, and headroom
CONTEXT_BYTES = 600 * 1024**2
MAX_AUTO_JOBS = 16
#: set in each worker unless the user set it: N workers' OpenMP threads outnumber the cores, and
#: threads that spin while they wait take the cores from the others' work (a tiny cifar10 sweep
#: with --jobs 2 on 2 cores: 108 s spinning, 35 s sleeping, 32 s in one process); the results
#: do not change, as the number of threads does not
WORKER_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


def parse_jobs(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        jobs = int(text)
    except ValueError:
        raise InputError(f"--jobs: {text!r} is not a whole number or auto") from None
    if jobs < 1:
        raise InputError(f"--jobs: {jobs} is not allowed; give 1 or more, or auto")
    return jobs


def auto_jobs(cfg: ComputeConfig, device: torch.device, footprint_bytes: int | None) -> int:
    """--jobs auto: 1 on a CPU (torch's threads already use every core); on a GPU, as many
    workers as its free memory holds at the measured footprint of one training step."""
    if device.type != "cuda" or not footprint_bytes:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(0.9 * free // (footprint_bytes + CONTEXT_BYTES))
    return max(1, min(fits, MAX_AUTO_JOBS, len(shard_jobs(cfg))))


def jobs_folder(out: Path) -> Path:
    return out.parent / f".{out.name}{JOBS_SUFFIX}"


def worker_config(cfg: ComputeConfig, index: int, count: int) -> ComputeConfig:
    return dataclasses.replace(cfg, shard=f"{index}/{count}")


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (elsewhere: nothing). Runs in the
    worker between fork and exec; the request survives the exec."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6").prctl(pr_set_pdeathsig, signal.SIGTERM)


def work(config: dict, part: str, root: str) -> int:
    """One worker (`python -m compute.jobs CONFIG PART ROOT`): its shard into `part`, sharing the
    dense models and corrupted test sets with the other workers in ROOT; on failure, the one line to report beside it.

    Each worker keeps torch's default number of CPU threads: the CPU kernels' sums run in an
    order that depends on it, and the parts must equal the single run's bit for bit. On a CPU,
    N workers therefore share its cores N ways (--jobs auto gives 1 there), their OpenMP threads
    sleeping while they wait (`WORKER_ENVIRONMENT`)."""
    if os.getppid() == 1:  # the parent died before the worker started
        return 130
    from compute.pipeline import run

    cfg = ComputeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    try:
        run(cfg, part, overwrite=False, progress=False, jobs_root=Path(root))
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - the parent reports the worker's line
        line = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
        Path(f"{part}.{ERROR_FILE}").write_text(line.splitlines()[0] if line else type(err).__name__)
        return 1
    return 0


def run_jobs(cfg: ComputeConfig, out: str | Path, overwrite: bool, jobs: int, progress: bool) -> str:
    """The resolved sweep `cfg` in `jobs` workers, merged into `out`; returns the summary line."""
    started = time.perf_counter()
    if cfg.shard != "1/1":
        raise InputError("--jobs runs the whole sweep's jobs side by side; drop --shard, or --jobs")
    target = check_target(out, overwrite)
    count = min(jobs, len(shard_jobs(cfg)))
    root = jobs_folder(target.path)
    root.mkdir(exist_ok=True)
    lock = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another prunescope compute --jobs works in {root}; wait for it to finish") from None
        check_identity(root, cfg, count)
        parts = [root / f"part-{k}" for k in range(1, count + 1)]
        workers = {}
        for k, part in enumerate(parts, 1):
            if (part / "manifest.json").is_file():
                continue  # finished before an interruption
            Path(f"{part}.{ERROR_FILE}").unlink(missing_ok=True)
            config = json.dumps(worker_config(cfg, k, count).as_dict())
            workers[k] = subprocess.Popen(
                [sys.executable, "-m", "compute.jobs", config, str(part), str(root)],
                preexec_fn=die_with_parent, env={**WORKER_ENVIRONMENT, **os.environ},
            )  # fmt: skip
        failed = {}
        for k, process in workers.items():
            if process.wait() != 0:
                failed[k] = process.returncode
            elif progress:
                print(f"prunescope compute: worker {k}/{count} finished its part", flush=True)
        if failed:
            raise StoppedShort(failure_line(root, failed, count))
        thumbnails = chosen_thumbnails(cfg) if cfg.thumbnail_samples else None
        line = merge.run([str(p) for p in parts], out, overwrite, jobs=count, thumbnails=thumbnails)
        remove_jobs_folder(root, parts)  # under the lock: a command started meanwhile is refused, not emptied
    finally:
        os.close(lock)
    return f"{line} (--jobs {count}, {time.perf_counter() - started:.1f} s in all)"


def chosen_thumbnails(cfg: ComputeConfig) -> Callable[[Path], pl.DataFrame]:
    """The merged snapshot's thumbnails, chosen as the single run chooses them, from every
    model's errors (a worker chose from its own models' only), their images made again."""

    def make(snapshot: Path) -> pl.DataFrame:
        dataset = data.load(data.spec_of(cfg))
        chosen = thumbnail_subset(sample_errors(snapshot), dataset, cfg.thumbnail_samples, cfg.split_seed)
        conditions = schema.build_conditions(cfg.corruptions, cfg.severities)
        return corrupted_thumbnails(SampleImages(dataset, chosen, conditions, cfg, resolve_device(cfg.device)), chosen)

    return make


def check_identity(root: Path, cfg: ComputeConfig, count: int) -> None:
    """The jobs folder holds this command's parts, or none yet."""
    wanted = {"config": json.loads(json.dumps(cfg.as_dict())), "jobs": count}
    path = root / "jobs.json"
    if path.is_file():
        if json.loads(path.read_text()) != wanted:
            raise InputError(
                f"{root} holds the parts of an interrupted --jobs run of other flags or another --jobs; run that "
                f"command again to finish it, or remove it with: rm -r '{root}'"
            )
    else:
        path.write_text(json.dumps(wanted, indent=2))


def failure_line(root: Path, failed: dict[int, int], count: int) -> str:
    k, code = next(iter(failed.items()))
    error = root / f"part-{k}.{ERROR_FILE}"
    if error.is_file():
        why = error.read_text().strip()
    elif code < 0:
        why = f"it was killed ({signal.Signals(-code).name})"
    else:
        why = f"it exited with status {code}"
    others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return (
        f"worker {k}/{count}{others} stopped: {why}; the finished parts are kept in {root}: run the same command "
        "to continue"
    )


def remove_jobs_folder(root: Path, parts: list[Path]) -> None:
    """The parts once merged, the dense models and corrupted test sets the workers shared, and the
    folder: only what this command made there."""
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    shutil.rmtree(root / "dense", ignore_errors=True)
    shutil.rmtree(root / "conditions", ignore_errors=True)
    for name in ("jobs.json", "LOCK"):
        (root / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # anything else left there is not ours to delete


if __name__ == "__main__":
    sys.exit(work(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))
