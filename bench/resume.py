"""Memory against the number of models, and the work a kill costs, of `prunescope compute`.

Run: python bench/resume.py [--samples 360]

1. Peak resident memory of a sweep of N models and of 4N models (the same data, conditions
   and schedules; more sparsities). The compute step streams one model at a time, so the
   goal is 4N within 1.2x of N. Baseline: the N-model run, in the same process.
2. The same 4N sweep killed (SIGKILL) when half of its models are evaluated, then run again:
   the time lost against the uninterrupted run, and how many models the second run trains
   again. Goal: at most the one model that was in progress.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = (
    "compute", "--preset", "tiny", "--n-test", "360", "--n-train", "0", "--corruptions", "all",
    "--severities", "1,2,3,4,5", "--methods", "random,magnitude,layer_magnitude", "--epochs", "2", "--quiet",
)  # fmt: skip
SPARSITIES = {"N": "0.5", "4N": "0.3,0.4,0.5,0.6,0.7"}  # 1 + 3 x 1 = 4 models and 1 + 3 x 5 = 16


def command(size: str, out: Path, samples: int) -> list[str]:
    args = [a if a != "360" else str(samples) for a in BASE]
    return [sys.executable, "-m", "compute", *args, "--sparsities", SPARSITIES[size], "--out", str(out)]


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident memory (MB) and stdout of one command."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stdout = process.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {process.stderr.read()}")
    return wall, usage.ru_maxrss / 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=360, help="test images (default 360)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        peaks, walls = {}, {}
        for size in ("N", "4N"):
            walls[size], peaks[size], line = run_measured(command(size, root / size, args.samples))
            print(f"{size:>2}: {line.strip()}; peak RSS {peaks[size]:.0f} MB")
        print(f"memory 4N / N: {peaks['4N'] / peaks['N']:.2f} (goal <= 1.2)")

        out = root / "killed"
        work = root / ".killed.work" / "models"
        process = subprocess.Popen(command("4N", out, args.samples), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        start = time.perf_counter()
        total = 16
        while len(list(work.glob("*/evaluated.json"))) < total // 2:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        before = time.perf_counter() - start
        evaluated = len(list(work.glob("*/evaluated.json")))
        trained = len(list(work.glob("*/model.json")))
        rerun, _, line = run_measured(command("4N", out, args.samples))
        resumed = int(re.search(r"(\d+) of them from an interrupted run", line).group(1))
        lost = before + rerun - walls["4N"]
        per_model = walls["4N"] / total
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import compute.pipeline"], check=True)
        startup = time.perf_counter() - start
        print(
            f"killed after {before:.1f} s with {evaluated} of {total} models evaluated ({trained} trained); "
            f"the rerun took {rerun:.1f} s and reused {resumed}"
        )
        print(
            f"time lost to the kill: {lost:.1f} s = {lost / per_model:.1f} x the mean per-model time "
            f"({per_model:.2f} s), of which {startup:.1f} s is the interpreter and imports starting again; "
            f"the rest is the model in progress, data and condition images read back; the rerun "
            f"trained the {total - trained} models not yet checkpointed, evaluated {trained - evaluated} "
            f"checkpointed ones and kept {resumed} evaluated ones"
        )

if __name__ == "__main__":
    main()
