"""What a sweep will cost, before it runs (`prunescope compute --dry-run`).

The plan (plan.py) lists the models; here each (seed, method) job's training is counted
in epochs from the method's own schedule (Method.planned_epochs: the rounds of imp and lrr
included), the per-sample rows and the snapshot's size follow from the data and the
conditions, and the wall time is estimated from a short calibration on the chosen device:
a few optimizer steps of the architecture at the sweep's batch size and precision, one
evaluation batch, and a few images of each corruption. Nothing is written.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from compute import corrupt, data, models, schema
from compute.config import ComputeConfig, shard_jobs
from compute.evaluate import condition_metrics, forward_features
from compute.machine import cpu_model
from compute.masks import LayerPolicy, prunable_layers
from compute.occlusion import patch_corners
from compute.plan import planned_models, schedules
from compute.prune import get_method
from compute.prune.base import EpochBudget, PlannedEpochs
from compute.train import steps_per_epoch, train

#: (training images, test images, classes) of the data sets whose files the plan may do without
PUBLISHED_SIZES = {"cifar10": (50_000, 10_000, 10), "cifar100": (50_000, 10_000, 100)}

#: metrics/ bytes per per-sample row on disk: about 1 byte per kept mantissa bit (8 float
#: columns) plus 5.5 for the ids, exponents and flags; measured on synthetic, high-entropy
#: metrics (bench/RESULTS.md), so an upper estimate: the demo's real ones at 12 bits take 14.7
BASE_BYTES_PER_ROW = 5.5


@dataclass(frozen=True)
class DataSize:
    n_train: int
    n_test: int
    image_shape: tuple[int, int, int]
    num_classes: int
    source: str  # how the sizes were found


def data_size(cfg: ComputeConfig) -> DataSize:
    """The data set's sizes: read from its files, or, for CIFAR without them, its published sizes."""
    try:
        dataset = data.load(data.spec_of(cfg))
    except data.DataError:
        if cfg.dataset not in PUBLISHED_SIZES:
            raise
        train_n, test_n, classes = PUBLISHED_SIZES[cfg.dataset]
        n_train = min(cfg.n_train, train_n) if cfg.n_train else train_n
        n_test = min(cfg.n_test, test_n) if cfg.n_test else test_n
        return DataSize(n_train, n_test, (3, 32, 32), classes, f"the published sizes of {cfg.dataset} (no files read)")
    return DataSize(
        len(dataset.train_labels), len(dataset.test_labels), dataset.image_shape, dataset.num_classes,
        f"{cfg.dataset} as loaded",
    )  # fmt: skip


def model_spec(cfg: ComputeConfig, size: DataSize) -> models.ModelSpec:
    """The architecture at the data's size (the normalisation does not change the cost)."""
    return models.ModelSpec(cfg.architecture, size.num_classes, (0.5,) * 3, (0.25,) * 3, size.image_shape[1:])


def epoch_budget(cfg: ComputeConfig, size: DataSize) -> EpochBudget:
    plans = schedules(cfg)
    per_epoch = steps_per_epoch(size.n_train, cfg.batch_size)
    model = models.build(model_spec(cfg, size))
    layers = prunable_layers(model, LayerPolicy(cfg.prune_first_layer, cfg.prune_last_layer))
    return EpochBudget(
        dense=plans["dense"].epochs, finetune=plans["finetune"].epochs, rounds=plans["rounds"].epochs,
        sparse=plans["sparse"].epochs, supermask=plans["supermask"].epochs, round_schedule=cfg.round_schedule,
        imp_rate=cfg.imp_rate, steps_per_epoch=per_epoch, rewind_step=round(cfg.rewind_epochs * per_epoch),
        prunable_weights=sum(module.weight.numel() for _, module in layers),
    )  # fmt: skip


@dataclass(frozen=True)
class JobCost:
    seed: int
    method: str
    planned: PlannedEpochs


def job_costs(cfg: ComputeConfig, budget: EpochBudget) -> list[JobCost]:
    """Each (seed, method) job of this shard and its training; a shard trains the dense model
    of every seed it prunes, so a seed's dense training counts once per shard that needs it."""
    out = []
    jobs = shard_jobs(cfg)
    for seed in sorted({seed for seed, _ in jobs}):
        dense = PlannedEpochs({0.0: float(budget.dense)}, float(budget.dense))
        out.append(JobCost(seed, "dense", dense))
        for job_seed, method in jobs:
            if job_seed == seed and method != "dense":
                out.append(JobCost(seed, method, get_method(method).planned_epochs(budget, list(cfg.sparsities))))
    return out


def planned_train_epochs(cfg: ComputeConfig, budget: EpochBudget) -> dict[str, float]:
    """model_id -> the train_epochs models.parquet will record for it."""
    out = {}
    for job in job_costs(cfg, budget):
        for sparsity, epochs in job.planned.per_model.items():
            out[schema.model_id_for(job.method, sparsity, job.seed)] = epochs
    recorded = {p.model_id for p in planned_models(cfg)}
    return {model_id: epochs for model_id, epochs in out.items() if model_id in recorded}


#: on a CPU, the calibration first times batches of at most this many images and scales them to
#: the run's batch sizes (CPU time grows about linearly with the batch): a ResNet-18 step of 128
#: takes seconds there, and the dry run should not
CPU_CALIBRATION_BATCH = 32
#: a scaled CPU step or evaluation batch quicker than this is timed again at the run's own batch:
#: for a small model the fixed cost of each step does not shrink with the batch, and scaling a
#: batch of 32 overstated the demo's step by half
QUICK_SECONDS = 0.25
#: images of each corruption the calibration times: a run corrupts a chunk of many images a call
#: (128 or more on a CPU, the evaluation batch on a GPU), and 8 images overstated a cifar10 run's
#: corruptions threefold (said 31 s, took 11.6 s on 2,000 images; 64 say 10 s)
CORRUPTION_CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class Calibration:
    device: str
    train_step: float  # seconds per optimizer step at the sweep's batch size
    eval_image: float  # seconds per evaluated image (forward and metrics) at the run's evaluation batch
    corrupt_image: dict[str, float]  # seconds per image of each corruption (its highest severity)
    seconds: float  # what the calibration itself took
    measured_batch: tuple[int, int]  # the training and evaluation batches timed (then scaled)
    footprint: int | None  # peak GPU bytes of one training step (None on a CPU): what --jobs auto divides by


def condition_batch(cfg: ComputeConfig, size: DataSize) -> int:
    """The evaluation batch a condition's images go through: --eval-batch-size, or all its images."""
    return max(1, min(cfg.eval_batch_size, size.n_test))


def calibrate(cfg: ComputeConfig, size: DataSize, device: torch.device, corruptions: bool = True) -> Calibration:
    """Time optimizer steps (after warm-up steps), an evaluation batch and (unless `corruptions` is
    False: --jobs auto needs only the footprint) a few images of each corruption, on random images
    of the data's shape."""
    started = time.perf_counter()
    cuda = device.type == "cuda"
    model = models.build(model_spec(cfg, size))
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, *size.image_shape), dtype=torch.uint8, generator=generator)

    def fake(n_train: int, n_test: int) -> data.Dataset:
        return data.Dataset(
            "calibration", tuple(map(str, range(size.num_classes))), images(n_train),
            torch.randint(0, size.num_classes, (n_train,), generator=generator), images(n_test),
            torch.randint(0, size.num_classes, (n_test,), generator=generator), torch.arange(n_test), True,
        )  # fmt: skip

    def step_seconds(batch: int, warm_steps: int, steps: int) -> float:
        """Seconds per optimizer step at `batch`, after `warm_steps` untimed ones."""
        plan = dataclasses.replace(schedules(cfg)["dense"], epochs=1, batch_size=batch)
        train(model, fake(warm_steps * batch, 1), plan, seed=0, device=device, progress=False)
        sync(device)
        timed = train(model, fake(steps * batch, 1), plan, seed=0, device=device, progress=False)
        sync(device)
        return timed.seconds / max(1, timed.steps)

    def eval_seconds(batch: int) -> float:
        """Seconds to evaluate one batch of `batch` images (features and metrics), after one untimed."""
        test = fake(1, batch)
        labels = test.test_labels.to(device)
        forward_features(model, test.test_images, device, batch, cfg.precision)
        sync(device)
        tick = time.perf_counter()
        condition_metrics(model, forward_features(model, test.test_images, device, batch, cfg.precision), labels)
        sync(device)
        return time.perf_counter() - tick

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    train_batch = cfg.batch_size if cuda else min(cfg.batch_size, CPU_CALIBRATION_BATCH)
    train_step = step_seconds(train_batch, *((5, 20) if cuda else (1, 2))) * cfg.batch_size / train_batch
    footprint = torch.cuda.max_memory_allocated(device) if cuda else None
    if train_batch < cfg.batch_size and train_step < QUICK_SECONDS:
        train_batch = cfg.batch_size
        train_step = step_seconds(train_batch, 5, 10)

    run_batch = condition_batch(cfg, size)
    eval_batch = run_batch if cuda else min(run_batch, CPU_CALIBRATION_BATCH)
    eval_image = eval_seconds(eval_batch) / eval_batch
    if eval_batch < run_batch and eval_image * run_batch < QUICK_SECONDS:
        eval_batch = run_batch
        eval_image = eval_seconds(eval_batch) / eval_batch

    corrupt_image = {}
    if corruptions and not cfg.cifar10c:
        sample = images(CORRUPTION_CALIBRATION_IMAGES).to(device)
        for name in cfg.corruptions:
            # once untimed: a corruption's first call builds its kernels and textures (and imports)
            corrupt.corrupt_uint8(sample[:2], name, max(cfg.severities), torch.arange(2))
            sync(device)
            tick = time.perf_counter()
            corrupt.corrupt_uint8(sample, name, max(cfg.severities), torch.arange(len(sample)))
            sync(device)
            corrupt_image[name] = (time.perf_counter() - tick) / len(sample)
    name = torch.cuda.get_device_name(device) if cuda else cpu_model()
    return Calibration(
        name, train_step, eval_image, corrupt_image, time.perf_counter() - started, (train_batch, eval_batch),
        footprint,
    )  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class SweepCost:
    size: DataSize
    budget: EpochBudget
    jobs: list[JobCost]
    models: int
    conditions: int
    calibration: Calibration | None

    @property
    def rows(self) -> int:
        return self.models * self.conditions * self.size.n_test

    @property
    def trained_epochs(self) -> float:
        return sum(job.planned.trained for job in self.jobs)

    @property
    def train_steps(self) -> int:
        return math.ceil(self.trained_epochs * self.budget.steps_per_epoch)

    def metrics_bytes(self, metric_bits: int) -> float:
        return self.rows * (BASE_BYTES_PER_ROW + metric_bits)

    def seconds(self, cfg: ComputeConfig) -> dict[str, float]:
        """Estimated wall time per stage on the calibrated device (one job at a time)."""
        c = self.calibration
        if c is None:
            return {}
        per_image = sum(c.corrupt_image.values()) * len(cfg.severities)
        return {
            "train": self.train_steps * c.train_step,
            "evaluate": (self.models * self.conditions * self.size.n_test + self.occluded_images(cfg)) * c.eval_image,
            "corrupt": per_image * self.size.n_test,
        }

    def occluded_images(self, cfg: ComputeConfig) -> int:
        """Forwards of --occlusion-samples: every patch position of each sample, per model, on the
        clean condition and each corruption at --occlusion-severity."""
        if not cfg.occlusion_samples:
            return 0
        _, height, width = self.size.image_shape
        positions = len(patch_corners(height, width, cfg.occlusion_patch, cfg.occlusion_stride))
        conditions = 1 + (len(cfg.corruptions) if cfg.occlusion_severity in cfg.severities else 0)
        return self.models * conditions * min(cfg.occlusion_samples, self.size.n_test) * positions


def sweep_cost(cfg: ComputeConfig, device: torch.device | None) -> SweepCost:
    """The cost of a resolved configuration's sweep (this shard's part of it); calibrated on
    `device` unless it is None."""
    size = data_size(cfg)
    budget = epoch_budget(cfg, size)
    conditions = len(schema.build_conditions(cfg.corruptions, cfg.severities))
    calibration = calibrate(cfg, size, device) if device is not None else None
    return SweepCost(size, budget, job_costs(cfg, budget), len(planned_models(cfg)), conditions, calibration)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_lines(cfg: ComputeConfig, cost: SweepCost, preset: str, workers: int = 1) -> list[str]:
    """The dry run's report: what the sweep makes, trains, writes, and how long it should take."""
    size, budget = cost.size, cost.budget
    shard = "" if cfg.shard == "1/1" else f", shard {cfg.shard}"
    lines = [
        f"plan of the {preset} preset with the flags given{shard}: {cfg.architecture} on {cfg.dataset} "
        f"({size.n_train:,} training, {size.n_test:,} test images; {size.source})",
        f"{cost.models} models, {cost.conditions} conditions, {cost.rows:,} per-sample rows; "
        f"{budget.steps_per_epoch} steps of {cfg.batch_size} images per epoch",
        f"{'job':<22} {'models':>6} {'train_epochs per model':>26} {'epochs it trains':>17}",
    ]
    for job in cost.jobs:
        per_model = sorted(set(job.planned.per_model.values()))
        shown = f"{per_model[0]:g}" if len(per_model) == 1 else f"{per_model[0]:g}-{per_model[-1]:g}"
        label = f"{job.method} s{job.seed}" if job.method != "dense" else f"dense s{job.seed} (training)"
        lines.append(f"{label:<22} {len(job.planned.per_model):>6} {shown:>26} {job.planned.trained:>17,.1f}")
    lines.append(f"in all {cost.trained_epochs:,.1f} epochs of training, {cost.train_steps:,} optimizer steps")
    if workers > 1:
        side_by_side = min(workers, cfg.seeds)
        lines.append(
            f"--jobs {workers}: {workers} workers share the device; each seed's dense model is trained once, by the "
            f"first worker that reaches it (they start at different seeds: up to {side_by_side} side by side), while "
            "the others that prune it wait for it; each corrupted test set is made once, by the first that reaches it"
        )
    metrics = cost.metrics_bytes(cfg.metric_bits)
    lines.append(
        f"snapshot: about {metrics / 1e9:,.2f} GB of per-sample metrics at --metric-bits {cfg.metric_bits} "
        f"(at most {BASE_BYTES_PER_ROW + cfg.metric_bits:.1f} bytes a row), plus its small tables"
    )
    c = cost.calibration
    if c is not None:
        seconds = cost.seconds(cfg)
        run_batch = condition_batch(cfg, size)
        occluded = cost.occluded_images(cfg)
        occluded = f"; {occluded:,} occluded images included" if occluded else ""
        corrupt_note = "read from the released files" if cfg.cifar10c else duration(seconds["corrupt"])
        lines.append(
            f"estimate on {c.device} ({cfg.precision}): training {duration(seconds['train'])} "
            f"({c.train_step * 1e3:.1f} ms a step), evaluation {duration(seconds['evaluate'])} "
            f"({c.eval_image * run_batch * 1e3:.1f} ms a batch of {run_batch}{occluded}), "
            f"corruptions {corrupt_note}; "
            f"in all about {duration(sum(seconds.values()))}, one job at a time"
            + (" (workers side by side finish sooner by what the device has spare)" if workers > 1 else "")
        )
        scaled = (
            f", timed at batches of {c.measured_batch[0]} and {c.measured_batch[1]} and scaled"
            if c.measured_batch != (cfg.batch_size, run_batch) else ""
        )  # fmt: skip
        lines.append(
            f"calibrated in {c.seconds:.1f} s on random images{scaled}: {cfg.architecture}'s plain training step "
            "(supermask and dynamic-sparse steps cost more), one evaluation batch, "
            f"{CORRUPTION_CALIBRATION_IMAGES} images of each corruption"
        )
    lines.append("dry run: nothing trained or written")
    return lines
