"""What `--precision bf16` changes in the per-sample metrics, against fp32, on the CPU.

Two measures on the tiny preset (every method): (1) evaluation only: the fp32 run's own
weights evaluated again under bf16 (`prunescope evaluate --models SNAP --precision bf16`),
so the difference is the forward pass's rounding alone; (2) the whole run under bf16,
training included, whose models then differ as two seeds' would. Prints the largest and the
median change of feat_norm (relative) and of angle_true (degrees), and the share of rows
whose correctness flips, with the seconds each run took.

Run: python bench/precision.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from compute.machine import cpu_model
from compute.snapshot import scan_metrics

TINY = ["--preset", "tiny", "--methods", "all", "--quiet"]
# evaluate's data flags: the tiny preset's test split and conditions
DATA = ["--dataset", "digits", "--n-test", "60", "--corruptions", "gaussian_noise,defocus_blur,contrast",
        "--severities", "1,3", "--quiet"]  # fmt: skip


def prunescope(*args: str) -> float:
    tick = time.perf_counter()
    subprocess.run([sys.executable, "-m", "compute", *args], check=True)
    return time.perf_counter() - tick


def compare(reference: Path, other: Path) -> dict[str, float]:
    key = ["model_id", "condition_id", "sample_id"]
    both = scan_metrics(other).collect().join(scan_metrics(reference).collect(), on=key, suffix="_fp32")
    relative = ((pl.col("feat_norm") - pl.col("feat_norm_fp32")).abs() / pl.col("feat_norm_fp32"))
    angle = (pl.col("angle_true") - pl.col("angle_true_fp32")).abs()
    row = both.select(
        relative.max().alias("norm_max"), relative.median().alias("norm_median"), angle.max().alias("angle_max"),
        angle.median().alias("angle_median"), (pl.col("correct") != pl.col("correct_fp32")).mean().alias("flips"),
        pl.len().alias("rows"),
    )  # fmt: skip
    return row.row(0, named=True)


def main() -> None:
    print(f"machine: {cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, again, bf16 = Path(tmp) / "fp32", Path(tmp) / "eval-bf16", Path(tmp) / "bf16"
        seconds = {
            "fp32 run": prunescope("compute", *TINY, "--checkpoints", "--out", str(fp32)),
            "bf16 evaluation of its weights": prunescope(
                "evaluate", "--models", str(fp32), *DATA, "--precision", "bf16", "--out", str(again)
            ),
            "bf16 run": prunescope("compute", *TINY, "--precision", "bf16", "--out", str(bf16)),
        }
        for label, path in (("bf16 evaluation of the fp32 weights", again), ("bf16 run, training included", bf16)):
            c = compare(fp32, path)
            print(
                f"{label}: {c['rows']:,} rows; |d feat_norm| / feat_norm max {c['norm_max']:.2e}, median "
                f"{c['norm_median']:.2e}; |d angle_true| max {c['angle_max']:.3f} deg, median {c['angle_median']:.4f} "
                f"deg; correctness flips on {c['flips']:.2%} of rows"
            )
    for label, value in seconds.items():
        print(f"  {label}: {value:.1f} s")


if __name__ == "__main__":
    main()
