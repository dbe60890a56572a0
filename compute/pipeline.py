"""The compute step, stage by stage:

    plan       check the configuration, list the models this shard makes      (plan.py)
    corrupt    the test set under every condition, once, in the work folder    (corrupted.py)
    sweep      train the dense model, prune it with each method, checkpoint    (sweep.py)
    evaluate   each model on every condition as soon as it is trained          (evaluate.py)
    assemble   the snapshot from the work folder's files, then place it        (assemble.py)

Every stage leaves durable files in the work folder beside --out (workdir.py), so running
the same command after a crash continues where it stopped; the folder goes once the
snapshot is in place.
"""

from __future__ import annotations

import ctypes
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from tqdm.auto import tqdm

from compute import cifar10c, data, grow, models, schema
from compute.assemble import RunFacts, assemble, corruption_source
from compute.config import EVALUATE_FIELDS, ComputeConfig, InputError, parse_shard, shard_jobs
from compute.corrupted import ConditionImages
from compute.evaluate import evaluate_model
from compute.occlusion import plan_occlusion
from compute.output import check_apart, check_target, finish_interrupted_placement, stale_work_folders
from compute.plan import PlannedModel, method_table, planned_models, resolve_config, resolve_device
from compute.snapshot import SnapshotWriter
from compute.sweep import Sweep
from compute.workdir import SharedConditions, SharedDense, WorkFolder


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the work folder keeps everything finished so far."""

    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} models; run the same command to continue")


@dataclass
class RunSummary:
    path: Path
    models: int
    conditions: int
    samples: int
    rows: int
    bytes: int
    seconds: float
    device: str
    resumed: int
    recovered: str | None = None
    kept: int = 0  # models of a snapshot grown, kept as they were

    def notes(self) -> list[str]:
        """Work folders of other, interrupted runs beside the snapshot, and how to be rid of them."""
        return [
            f"{folder} holds an interrupted run; run its command again to finish it, or remove it with: "
            f"rm -r '{folder}'"
            for folder in stale_work_folders(self.path.parent)
        ]

    def line(self) -> str:
        resumed = f", {self.resumed} of them from an interrupted run" if self.resumed else ""
        resumed += f", {self.kept} kept from the snapshot grown" if self.kept else ""
        recovered = f"{self.recovered}; then " if self.recovered else ""
        return recovered + (
            f"wrote {self.path}: {self.models} models{resumed} x {self.conditions} conditions x {self.samples} samples "
            f"= {self.rows:,} rows ({self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s on {self.device}"
        )


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def keep_large_blocks_in_the_heap() -> None:
    """glibc hands every freed block above 128 KiB back to the system (munmap) and maps it
    again on the next allocation, so each few-MB tensor of a forward pass costs system calls
    and page faults: on the CPU evaluation ran 2.4x slower (bench/RESULTS.md). A higher
    threshold keeps such blocks for reuse, as PyTorch's CPU tuning guide suggests for
    glibc. Results are unchanged; elsewhere than glibc this does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 * 1024 * 1024)
    mallopt(m_trim_threshold, 256 * 1024 * 1024)


def run(
    cfg: ComputeConfig, out: str | Path, overwrite: bool = False, progress: bool = True,
    add_to: str | None = None, replace: bool = False, jobs_root: Path | None = None,
) -> RunSummary:  # fmt: skip
    """Run the whole compute step (or what an interrupted run left) and place the snapshot
    at `out`; with `add_to`, only the models that snapshot lacks, and a snapshot of all; with
    `jobs_root` (a `--jobs` worker: shard K/N), each seed's dense model and each corrupted test
    set is shared with the other workers there: made by the first that needs it, used by the rest."""
    cfg = resolve_config(cfg)
    check_output(out, overwrite, cfg, [("--add-to", add_to)])
    existing, keep = None, []
    if add_to:
        finish_interrupted_placement(add_to)
        existing = grow.read_existing(add_to)
        requested = [p.model_id for p in planned_models(cfg) if p.method != "dense"]
        keep = grow.check_new_ids(existing, requested, replace)
        cfg = grow.grown_config(existing, cfg)
        changed = grow.changed_by_new_stops(existing, cfg)
        if changed and not replace:
            raise InputError(
                f"--add-to: a new sparsity below those of {', '.join(changed[:3])} adds a stop to their rounds and "
                "changes them; pass --replace to compute them again"
            )
        keep = [i for i in keep if i not in changed]
        outside = grow.outside_the_grid(existing, [p.model_id for p in planned_models(cfg)])
        if outside:
            raise InputError(
                f"--add-to: {existing.path} holds models no compute sweep makes ({', '.join(outside[:3])}); "
                "add to it with prunescope evaluate"
            )
    known = existing.manifest.get("parents", {}) if existing else {}

    def compute_sweep(dataset: data.Dataset, work: WorkFolder, device: torch.device) -> Sweep:
        shared = SharedDense(jobs_root) if jobs_root is not None else None
        return Sweep(cfg, dataset, work, device, progress, known, shared)

    def described(sweep: Sweep) -> dict:
        shard_index, shard_count = parse_shard(cfg.shard)
        return {
            "architecture": cfg.architecture,
            "shard": {"index": shard_index, "count": shard_count, "jobs": [list(job) for job in shard_jobs(cfg)]},
            "schedule": sweep.schedule,
            "methods": method_table(cfg),
        }

    identity, growth = {"add_to": str(add_to or ""), "replace": replace}, (existing, keep)
    planned = planned_models(cfg)
    shared = SharedConditions(jobs_root, *parse_shard(cfg.shard)) if jobs_root is not None else None
    return drive(
        cfg, out, overwrite, progress, planned, compute_sweep, described, identity, growth, trains=True,
        shared_conditions=shared,
    )  # fmt: skip


def dry_run(cfg: ComputeConfig, out: str | None, overwrite: bool, preset: str, jobs: str = "1") -> list[str]:
    """`compute --dry-run`: the checks a run makes before any work, then the sweep's plan and its
    calibrated cost (compute/cost.py); nothing is written."""
    from compute.cost import plan_lines, sweep_cost
    from compute.jobs import auto_jobs, parse_jobs

    cfg = resolve_config(cfg)
    wanted = parse_jobs(jobs)
    if out is not None:
        check_output(out, overwrite, cfg, [])
    device = resolve_device(cfg.device)
    cost = sweep_cost(cfg, device)
    workers = auto_jobs(cfg, device, cost.calibration.footprint) if wanted == "auto" else wanted
    return plan_lines(cfg, cost, preset, min(workers, len(shard_jobs(cfg))))


def run_in_workers(cfg: ComputeConfig, out: str | Path, overwrite: bool, jobs: str, progress: bool) -> str:
    """`compute --jobs N|auto`: the sweep in worker processes on one device (compute/jobs.py)."""
    from compute.cost import calibrate, data_size
    from compute.jobs import auto_jobs, parse_jobs, run_jobs

    cfg = resolve_config(cfg)
    wanted = parse_jobs(jobs)
    check_output(out, overwrite, cfg, [])
    device = resolve_device(cfg.device)
    if wanted == "auto":
        cuda = device.type == "cuda"
        footprint = calibrate(cfg, data_size(cfg), device, corruptions=False).footprint if cuda else None
        wanted = auto_jobs(cfg, device, footprint)
    if min(wanted, len(shard_jobs(cfg))) == 1:  # one worker is the plain run
        summary = run(cfg, out, overwrite, progress)
        return "\n".join([summary.line(), *(f"note: {note}" for note in summary.notes())])
    return run_jobs(cfg, out, overwrite, wanted, progress)


def run_given(
    cfg: ComputeConfig, source: str, out: str | Path, overwrite: bool = False, progress: bool = True,
    add_to: str | None = None, replace: bool = False,
) -> RunSummary:  # fmt: skip
    """`prunescope evaluate`: the snapshot of the models a source gives, on the configured
    data; with `add_to`, that snapshot's models and the given ones together."""
    from compute.given import GivenSweep, load_given

    cfg = resolve_config(cfg)
    models_path = source if Path(source).expanduser().exists() else source.rpartition(":")[0]
    check_output(out, overwrite, cfg, [("--models", models_path or None), ("--add-to", add_to)])
    existing, keep = None, []
    if add_to:
        finish_interrupted_placement(add_to)
        existing = grow.read_existing(add_to)
    given, parents, where = load_given(source, existing)
    planned = [PlannedModel(m.model_id, m.method, m.target_sparsity or 0.0, m.seed) for m in given]
    if existing is not None:
        keep = grow.check_new_ids(existing, [m.model_id for m in given], replace)
        cfg = grow.with_occlusion_of(existing, cfg)  # the given models are occluded as the kept ones were
        kept = existing.models.filter(pl.col("model_id").is_in(keep))
        planned = [PlannedModel(*row) for row in kept.select("model_id", "method", "target_sparsity", "seed").rows()]
        planned += [PlannedModel(m.model_id, m.method, m.target_sparsity or 0.0, m.seed) for m in given]

    def given_sweep(dataset: data.Dataset, work: WorkFolder, device: torch.device) -> GivenSweep:
        return GivenSweep(given, dataset, work, device, parents)

    def described(sweep: GivenSweep) -> dict:
        # what evaluate used (the data, the conditions, how it evaluated), not compute's training settings
        used = {k: v for k, v in cfg.as_dict().items() if k in (*EVALUATE_FIELDS, *grow.OCCLUSION_FIELDS)}
        return {"architecture": "given", "source": where, "methods": sweep.method_table(), "config": used}

    identity = {
        "source": where, "models": sorted(m.model_id for m in given), "add_to": str(add_to or ""), "replace": replace
    }
    growth = (existing, keep)
    return drive(cfg, out, overwrite, progress, planned, given_sweep, described, identity, growth, trains=False)


def check_output(out, overwrite: bool, cfg: ComputeConfig, inputs: list[tuple[str, str | None]]) -> None:
    """Before any work: `out` may hold the snapshot (compute.output.check_target) and lies apart from
    every input, the data's included (a replaced --out would take them with it)."""
    data_inputs = [("--data-root", cfg.data_root), ("--test-root", cfg.test_root), ("--cifar10c", cfg.cifar10c)]
    check_apart(out, inputs + data_inputs)
    check_target(out, overwrite)


def drive(
    cfg, out, overwrite, progress, planned, make_sweep, describe, identity, growth, trains,
    shared_conditions: SharedConditions | None = None,
) -> RunSummary:  # fmt: skip
    """The stages every command that writes models' snapshots shares: check the output,
    load the data, make the corrupted test sets (or link those `shared_conditions` holds), evaluate
    each model the sweep yields as it comes, assemble and place the snapshot; resumable throughout."""
    started = time.perf_counter()
    keep_large_blocks_in_the_heap()
    device = resolve_device(cfg.device)
    target = check_target(out, overwrite)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    dataset = data.load(data.spec_of(cfg))
    if cfg.cifar10c:  # before hours of training, not after
        cifar10c.check_folder(
            cfg.cifar10c, list(cfg.corruptions), dataset.test_index.numpy(), dataset.test_labels.numpy()
        )
    timings["data"] = time.perf_counter() - tick
    occlusion = plan_occlusion(cfg, dataset)
    if trains and len(dataset.train_labels) == 0:
        raise InputError(f"the {cfg.dataset} data set has no training images; give them with --data-root")
    if trains:
        models.check_fits(models.spec_for(cfg.architecture, dataset))
    existing, keep = growth
    conditions = schema.build_conditions(cfg.corruptions, cfg.severities)
    if existing is not None:
        grow.check_same_data(existing, dataset, conditions, cfg.metric_bits, corruption_source(cfg, dataset))
    work = WorkFolder(target, cfg, identity)
    resumed, recovered = work.open_run(overwrite)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    evaluated = resumed
    try:
        kept = grow.seed_work(existing, work, keep) if existing is not None else 0
        evaluated += kept
        images = ConditionImages(dataset, conditions, work)
        timings["corrupt"] = images.prepare(cfg, device, progress, shared_conditions)

        sweep = make_sweep(dataset, work, device)
        sample_ids = dataset.test_index.numpy().astype("int32")
        timings["evaluate"] = 0.0
        tick = time.perf_counter()
        bar = tqdm(total=len(planned), initial=evaluated, desc="models", unit="model", disable=not progress)
        for trained in sweep.models():
            model_id = trained.record["model_id"]
            bar.set_postfix(model=model_id)
            eval_tick = time.perf_counter()
            evaluation = evaluate_model(
                trained.model, model_id, images, dataset.test_labels, sample_ids, dataset.class_names,
                cfg.metric_bits, cfg.eval_batch_size, device, occlusion, cfg.precision,
            )  # fmt: skip
            work.save_evaluated(model_id, evaluation.tables, evaluation.relu)
            timings["evaluate"] += time.perf_counter() - eval_tick
            evaluated += 1
            bar.update()
        bar.close()
        timings["train_and_prune"] = time.perf_counter() - tick - timings["evaluate"]

        described = describe(sweep)
        parents = sweep.fingerprints
        checkpoints = cfg.checkpoints
        if existing is not None:
            if not trains:  # evaluate adds to another command's account of the models
                described = grow.merged_description(existing, described)
            described["grown_from"] = {"snapshot": str(existing.path), "models_kept": len(keep)}
            parents = {**existing.manifest.get("parents", {}), **parents}
            checkpoints = checkpoints or (existing.path / schema.CHECKPOINTS_DIR).is_dir()
        facts = RunFacts(cfg, dataset, device, described, parents, timings, resumed, checkpoints, occlusion)
        with SnapshotWriter(out, overwrite, slot=work) as writer:
            rows = assemble(writer, work, planned, images, facts, started)
    except KeyboardInterrupt:
        raise Interrupted(evaluated, len(planned)) from None
    except Exception:
        if not work.holds_trained_models():  # nothing worth resuming: leave no trace
            work.remove()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        work.release()
    path = work.target.path
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return RunSummary(
        path, len(planned), len(images.conditions), len(sample_ids), rows, size, time.perf_counter() - started,
        str(device), resumed, recovered, len(keep),
    )  # fmt: skip
