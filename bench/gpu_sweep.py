"""GPU throughput of prunescope's training and evaluation, and what it means for the cifar10 preset.

    python bench/gpu_sweep.py [--json out.json] [--skip-pipeline] [--job-seconds 6]

On a CUDA device it measures, with the project's own model constructors (`compute.models.build`),
optimizer (`compute.train.make_optimizer`), augmentation (`compute.train.augment_batch`) and masked
optimizer step (`compute.masks.masked_step`), on random uint8 32x32x3 images already on the GPU:

- training images/s at batch 128 and evaluation images/s (`features` + classifier in inference mode)
  at batch 1024, for resnet20 and resnet18, fp32 and bf16 autocast, NCHW and channels_last; each
  training figure three ways: the sweep's step as `compute.train.train` takes it ("sweep"), the same
  without augmentation ("no-aug": `augment_batch` draws its offsets on the CPU and copies them to the
  GPU with blocking copies), and a plain `optimizer.step()` without masks or augmentation ("bare");
  then two of the combinations again with `torch.backends.cudnn.benchmark = True` (compute leaves it
  False);
- "jobs": aggregate training images/s of N = 1, 2, 4, 8 spawned processes, each training its own
  resnet20 with the sweep's step on the same GPU for a fixed time: how much of the GPU one model
  leaves idle;
- the real pipeline on CUDA: `compute --preset cifar10 --dry-run` (its calibrated estimate), then
  the tiny preset in fp32, in bf16 and with `--jobs 2`, each validated;
- the cifar10 preset's training epochs per method, as `--dry-run` plans them (`compute.cost`),
  and the training time they take at the measured rates.

Without a CUDA device it prints "no GPU" and exits 0. First version of issue 21 item 4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `compute` imports without an install (spawned workers too)

from compute.machine import cpu_model  # noqa: E402 - after the path insert

NO_GPU = "no GPU: bench/gpu_sweep.py needs a CUDA device"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
N_TRAIN = 50_000  # CIFAR-10 training images
N_TEST = 10_000  # CIFAR-10 test images
TRAIN_BATCH = 128
EVAL_BATCH = 1024
ARCHITECTURES = ("resnet20", "resnet18")
VARIANTS = ("sweep", "no-aug", "bare")
ALL_COMBOS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))  # (precision, channels_last)
BENCHMARK_COMBOS = (("fp32", False), ("bf16", True))
SMOKE_SIZES = {"n_images": 64, "batch": 8, "eval_batch": 16}  # --cpu-smoke: tiny, to check the code paths


# --- one model -----------------------------------------------------------------------------


class Bench:
    """A model, its optimizer and GPU-resident random data, stepped as the sweep steps."""

    def __init__(
        self, arch: str, precision: str, channels_last: bool, device, n_images: int = N_TRAIN, seed: int = 0,
        batch: int = TRAIN_BATCH, eval_batch: int = EVAL_BATCH,
    ):  # fmt: skip
        import torch

        from compute import models
        from compute.train import TrainConfig, make_optimizer, steps_per_epoch

        self.torch, self.device = torch, device
        self.precision, self.channels_last = precision, channels_last
        torch.manual_seed(seed)
        self.model = models.build(models.ModelSpec(arch, 10, CIFAR_MEAN, CIFAR_STD)).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.batch, self.eval_batch = batch, eval_batch
        self.cfg = TrainConfig(epochs=160, batch_size=batch)
        self.optimizer = make_optimizer(self.model, self.cfg)
        gen = torch.Generator(device=device).manual_seed(seed)
        self.images = torch.randint(0, 256, (n_images, 3, 32, 32), generator=gen, device=device, dtype=torch.uint8)
        self.labels = torch.randint(0, 10, (n_images,), generator=gen, device=device)
        self.generator = torch.Generator().manual_seed(seed)  # CPU, as compute.train.train's
        self.per_epoch = steps_per_epoch(n_images, batch)
        self.total_steps = self.cfg.epochs * self.per_epoch
        self.warmup = round(self.cfg.warmup_epochs * self.per_epoch)
        self.step_index = 0
        self.order = None

    def autocast(self):
        kind = self.device.type
        return self.torch.autocast(device_type=kind, dtype=self.torch.bfloat16, enabled=self.precision == "bf16")

    def layout(self, x):
        return x.contiguous(memory_format=self.torch.channels_last) if self.channels_last else x

    def train_step(self, variant: str = "sweep") -> None:
        """One optimizer step; "sweep" is the body of compute.train.train's loop."""
        import torch.nn.functional as F

        from compute.masks import masked_step
        from compute.train import augment_batch, lr_at, to_float

        b = self.step_index % self.per_epoch
        if b == 0 or self.order is None:
            self.order = self.torch.randperm(len(self.labels), generator=self.generator).to(self.device)
        idx = self.order[b * self.batch : (b + 1) * self.batch]
        x = to_float(self.images[idx])
        if variant == "sweep":
            x = augment_batch(x, True, self.generator)
        x = self.layout(x)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step_index % self.total_steps, self.total_steps, self.warmup, self.cfg.lr)
        with self.autocast():
            loss = F.cross_entropy(self.model(x), self.labels[idx])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if variant == "bare":
            self.optimizer.step()
        else:
            masked_step(self.model, self.optimizer)
        self.step_index += 1

    def eval_batch_step(self, start: int) -> None:
        from compute.train import to_float

        x = self.layout(to_float(self.images[start : start + self.eval_batch]))
        with self.torch.inference_mode(), self.autocast():
            self.model.forward_features(x)


def sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(torch, device, fn, steps: int, warmup: int, repeats: int, per_step: int) -> float:
    """Median images/s over `repeats` timed runs of `steps` calls, after `warmup` calls."""
    for i in range(warmup):
        fn(i)
    sync(torch, device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(steps):
            fn(i)
        sync(torch, device)
        rates.append(steps * per_step / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def measure(torch, device, arch: str, precision: str, channels_last: bool, smoke: bool) -> dict:
    """Training (each variant) and evaluation images/s of one model, freshly built."""
    train_steps = {"resnet20": 100, "resnet18": 40}[arch] if not smoke else 1
    eval_steps = {"resnet20": 30, "resnet18": 12}[arch] if not smoke else 1
    warmup = 10 if not smoke else 1
    bench = Bench(arch, precision, channels_last, device, **(SMOKE_SIZES if smoke else {}))
    row = {"arch": arch, "precision": precision, "channels_last": channels_last}
    for variant in VARIANTS:
        bench.model.train()
        row[f"train_{variant}"] = rate(
            torch, device, lambda i, v=variant: bench.train_step(v), train_steps, warmup, 3, bench.batch
        )
    bench.model.eval()
    starts = range(0, len(bench.labels) - bench.eval_batch + 1, bench.eval_batch)
    row["eval"] = rate(
        torch, device, lambda i: bench.eval_batch_step(starts[i % len(starts)]), eval_steps, min(3, warmup), 3,
        bench.eval_batch,
    )  # fmt: skip
    row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return row


def single_model(torch, device, smoke: bool, combos=ALL_COMBOS) -> list[dict]:
    rows = []
    for arch in ARCHITECTURES:
        for precision, channels_last in combos:
            row = measure(torch, device, arch, precision, channels_last, smoke)
            rows.append(row)
            layout = "channels_last" if channels_last else "NCHW"
            trains = " ".join(f"{v} {row[f'train_{v}']:8.0f}" for v in VARIANTS)
            print(f"  {arch:8s} {precision} {layout:13s} train {trains}  eval {row['eval']:8.0f} img/s", flush=True)
            if device.type == "cuda":  # the model and its data are gone: free their memory
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    return rows


# --- N concurrent processes --------------------------------------------------------------------


def job_worker(rank: int, device_name: str, precision: str, channels_last: bool, commands, results) -> None:
    """A spawned process: build a resnet20, warm up, then train for a fixed time whenever told."""
    import torch

    torch.set_num_threads(1)
    try:
        device = torch.device(device_name)
        sizes = {} if device.type == "cuda" else SMOKE_SIZES
        bench = Bench("resnet20", precision, channels_last, device, seed=rank, **sizes)
        for _ in range(20 if device.type == "cuda" else 1):
            bench.train_step()
        sync(torch, device)
        results.put(("ready", rank, None))
        while True:
            command = commands.get()
            if command is None:
                return
            start_at, seconds = command
            while time.time() < start_at:
                time.sleep(0.001)
            start, steps = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                bench.train_step()
                steps += 1
            sync(torch, device)
            elapsed = time.perf_counter() - start
            results.put(("done", rank, (steps * bench.batch, elapsed)))
    except Exception as err:  # reported, not raised: the parent waits on the queue
        results.put(("error", rank, f"{type(err).__name__}: {err}"))


def concurrent_jobs(device, counts: list[int], seconds: float, precision: str, channels_last: bool) -> list[dict]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    commands = [ctx.Queue() for _ in range(max(counts))]
    workers = [
        ctx.Process(target=job_worker, args=(r, str(device), precision, channels_last, commands[r], results))
        for r in range(max(counts))
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    rows = []
    try:
        for _ in workers:
            kind, rank, payload = results.get(timeout=120)
            if kind == "error":
                raise RuntimeError(f"worker {rank}: {payload}")
        print(f"  {len(workers)} workers ready in {time.perf_counter() - start:.1f} s", flush=True)
        for n in counts:
            start_at = time.time() + 0.5
            for r in range(n):
                commands[r].put((start_at, seconds))
            done = []
            for _ in range(n):
                kind, rank, payload = results.get(timeout=seconds + 60)
                if kind == "error":
                    raise RuntimeError(f"worker {rank}: {payload}")
                done.append(payload)
            per_worker = [images / elapsed for images, elapsed in done]
            rows.append({"jobs": n, "total": sum(per_worker), "per_worker": per_worker})
    finally:
        for c in commands:
            c.put(None)
        for w in workers:
            w.join(timeout=20)
            if w.is_alive():
                w.kill()
    base = rows[0]["total"]
    for row in rows:
        row["ratio"] = row["total"] / base
        print(
            f"  jobs {row['jobs']}: {row['total']:8.0f} img/s total, x{row['ratio']:.2f} of one job, "
            f"{min(row['per_worker']):.0f}-{max(row['per_worker']):.0f} img/s per job",
            flush=True,
        )
    return rows


# --- the real pipeline on CUDA ---------------------------------------------------------------


def pipeline_check(device, timeout: float) -> dict:
    out = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = str(Path(tmp) / "tiny")
        tiny = [sys.executable, "-m", "compute", "compute", "--preset", "tiny", "--device", device.type, "--quiet"]
        commands = {
            "dry-run cifar10": [sys.executable, "-m", "compute", "compute", "--preset", "cifar10", "--dry-run",
                                "--device", device.type],
            "compute": [*tiny, "--out", snapshot],
            "validate": [sys.executable, "-m", "compute", "validate", snapshot],
            "compute bf16": [*tiny, "--precision", "bf16", "--out", snapshot + "-bf16"],
            "validate bf16": [sys.executable, "-m", "compute", "validate", snapshot + "-bf16"],
            "compute --jobs 2": [*tiny, "--methods", "all", "--jobs", "2", "--out", snapshot + "-jobs"],
            "validate --jobs 2": [sys.executable, "-m", "compute", "validate", snapshot + "-jobs"],
        }  # fmt: skip
        for name, command in commands.items():
            start = time.perf_counter()
            try:
                done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
                code, text = done.returncode, (done.stdout + done.stderr).strip()
            except subprocess.TimeoutExpired:
                code, text = "timeout", f"killed after {timeout:.0f} s"
            out[name] = {"exit": code, "seconds": time.perf_counter() - start, "tail": text[-600:]}
            print(f"  {name}: exit {code} in {out[name]['seconds']:.1f} s", flush=True)
            print("    " + "\n    ".join(text.splitlines()[-4:]), flush=True)
            if code != 0:
                break
    return out


# --- the cifar10 preset's training, counted ---------------------------------------------------


def cifar10_plan() -> dict:
    """The cifar10 preset's training, as `compute --dry-run` plans it (compute/cost.py: each
    method's own planned epochs on the 50,000 CIFAR-10 training images)."""
    from compute.cost import data_size, epoch_budget, job_costs
    from compute.plan import planned_models, resolve_config
    from compute.presets import get_preset

    cfg = resolve_config(get_preset("cifar10"))
    size = data_size(cfg)  # the published sizes where the files are absent
    budget = epoch_budget(cfg, size)
    methods = {}
    for job in job_costs(cfg, budget):
        entry = methods.setdefault(job.method, {"epochs": 0.0, "how": f"{len(job.planned.per_model)} model(s)"})
        entry["epochs"] += job.planned.trained
    per_epoch = budget.steps_per_epoch
    for entry in methods.values():
        entry["steps"] = round(entry["epochs"] * per_epoch)
    steps = sum(m["steps"] for m in methods.values())
    conditions = 1 + len(cfg.corruptions) * len(cfg.severities)
    n_models = len(planned_models(cfg))
    return {
        "architecture": cfg.architecture,
        "seeds": cfg.seeds,
        "steps_per_epoch": per_epoch,
        "prunable_weights": budget.prunable_weights,
        "methods": methods,
        "train_steps": steps,
        "train_epochs": steps / per_epoch,
        "train_images": steps * cfg.batch_size,
        "models": n_models,
        "conditions": conditions,
        "eval_images": n_models * conditions * size.n_test,
        "notes": [],
    }


def hours(images: float, per_second: float) -> float:
    return images / per_second / 3600


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--skip-pipeline", action="store_true", help="skip the tiny-preset run on CUDA")
    parser.add_argument("--skip-jobs", action="store_true", help="skip the N-process measurement")
    parser.add_argument("--jobs", default="1,2,4,8", help="process counts to measure (default 1,2,4,8)")
    parser.add_argument("--job-seconds", type=float, default=6.0, help="timed seconds per process count")
    parser.add_argument(
        "--cpu-smoke", action="store_true",
        help="run every code path on the CPU with one timed step each: a check of this script, not a measurement",
    )  # fmt: skip
    parser.add_argument("--pipeline-timeout", type=float, default=150.0, help="seconds per pipeline command")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print(f"{NO_GPU} (torch is not installed)")
        return 0
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(NO_GPU)
        return 0

    began = time.perf_counter()
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    cuda = device.type == "cuda"
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name(device) if cuda else "none (--cpu-smoke)",
        "gpu_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else 0.0,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        # the project sets none of these: its runs use torch's defaults (TF32 convolutions)
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_precision": torch.get_float32_matmul_precision(),
    }
    for key in ("torch", "cuda", "gpu", "cpu", "python", "cudnn_allow_tf32", "cudnn_benchmark", "matmul_precision"):
        print(f"{key}: {info[key]}")
    result: dict = {"info": info}

    plan = cifar10_plan()
    result["cifar10_plan"] = plan

    sizes = SMOKE_SIZES if args.cpu_smoke else {"batch": TRAIN_BATCH, "eval_batch": EVAL_BATCH}
    print(f"\nsingle model (train batch {sizes['batch']}, eval batch {sizes['eval_batch']}; images/s, median of 3)")
    result["single"] = single_model(torch, device, args.cpu_smoke)
    if cuda:
        print("\nthe same with torch.backends.cudnn.benchmark = True (compute leaves it False)", flush=True)
        torch.backends.cudnn.benchmark = True
        result["single_cudnn_benchmark"] = single_model(torch, device, args.cpu_smoke, combos=BENCHMARK_COMBOS)
        torch.backends.cudnn.benchmark = False

    if not args.skip_jobs:
        counts = [int(n) for n in args.jobs.split(",")]
        print(f"\njobs: resnet20 fp32 NCHW, the sweep's step, {args.job_seconds:g} s per count", flush=True)
        try:
            result["jobs"] = concurrent_jobs(device, counts, args.job_seconds, "fp32", False)
        except Exception as err:
            result["jobs_error"] = f"{type(err).__name__}: {err}"
            print(f"  jobs failed: {result['jobs_error']}", flush=True)

    if not args.skip_pipeline:
        print(f"\npipeline: tiny preset on {device.type}, then validate", flush=True)
        result["pipeline"] = pipeline_check(device, args.pipeline_timeout)

    # --- the table and the estimate
    print("\n| arch | precision | layout | train sweep | train no-aug | train bare | eval | peak MiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in result["single"]:
        print(
            f"| {r['arch']} | {r['precision']} | {'channels_last' if r['channels_last'] else 'NCHW'} | "
            f"{r['train_sweep']:,.0f} | {r['train_no-aug']:,.0f} | {r['train_bare']:,.0f} | {r['eval']:,.0f} | "
            f"{r['peak_mem_mib']:,.0f} |"
        )
    if result.get("jobs"):
        print("\n| jobs | total train img/s | x one job | per job img/s |")
        print("|---:|---:|---:|---|")
        for r in result["jobs"]:
            per = f"{min(r['per_worker']):,.0f}-{max(r['per_worker']):,.0f}"
            print(f"| {r['jobs']} | {r['total']:,.0f} | {r['ratio']:.2f} | {per} |")

    single = {(r["arch"], r["precision"], r["channels_last"]): r for r in result["single"]}
    arch = plan["architecture"]
    base = single[(arch, "fp32", False)]
    best_single = max((r for r in result["single"] if r["arch"] == arch), key=lambda r: r["train_sweep"])
    print(
        f"\ncifar10 preset ({arch}, {plan['seeds']} seed(s), {plan['steps_per_epoch']} steps of {TRAIN_BATCH} "
        f"per epoch): {plan['train_epochs']:,.0f} training epochs, {plan['train_images'] / 1e6:,.0f} M images"
    )
    for name, m in plan["methods"].items():
        print(f"  {name:16s} {m['epochs']:8,.0f} epochs  ({m['how']})")
    for note in plan["notes"]:
        print(f"  note: {note}")
    estimates = {
        "fp32 NCHW, one job": base["train_sweep"],
        f"{best_single['precision']} {'channels_last' if best_single['channels_last'] else 'NCHW'}, one job": (
            best_single["train_sweep"]
        ),
    }
    if result.get("jobs"):
        best_jobs = max(result["jobs"], key=lambda r: r["total"])
        estimates[f"fp32 NCHW, {best_jobs['jobs']} jobs"] = best_jobs["total"]
    result["estimates_hours"] = {}
    print("  training time at the measured rates (every step costed as the sweep's dense resnet20 step):")
    for label, per_second in estimates.items():
        h = hours(plan["train_images"], per_second)
        result["estimates_hours"][label] = h
        print(f"    {label:28s} {per_second:9,.0f} img/s -> {h:6.1f} h")
    eval_h = hours(plan["eval_images"], base["eval"])
    result["eval_forward_hours_fp32"] = eval_h
    print(
        f"  evaluation forwards: {plan['models']} models x {plan['conditions']} conditions x {N_TEST:,} images = "
        f"{plan['eval_images'] / 1e6:,.0f} M images -> {eval_h * 60:.1f} min at fp32 (forwards only)"
    )
    result["seconds"] = time.perf_counter() - began
    print(f"\nbench/gpu_sweep.py took {result['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
