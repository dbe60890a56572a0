"""Time `prunescope compute --preset demo` against the docs/DESIGN.md budgets.

Budgets: rebuilt on 2 CPU cores in at most 180 s (aim for 120 s); committed copy under 20 MB.
Prints the wall time of the whole command, the phases the manifest records, and the
ratios to the budgets. Run: python bench/demo_compute.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compute.machine import cpu_model

BUDGET_SECONDS = 180.0
BUDGET_BYTES = 20e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    walls, manifest, size = [], {}, 0
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "demo"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "compute", "compute", "--preset", "demo", "--out", str(out), "--quiet"],
                check=True,
            )
            walls.append(time.perf_counter() - start)
            manifest = json.loads((out / "manifest.json").read_text())
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    wall = statistics.median(walls)
    counts = manifest["counts"]
    torch_version = manifest["packages"]["torch"]
    print(f"machine: {cpu_model()}, {manifest['device']}, torch {torch_version}")
    print(
        f"demo: {counts['models']} models x {counts['conditions']} conditions x {counts['samples']} samples "
        f"= {counts['metric_rows']:,} rows"
    )
    ratio = wall / BUDGET_SECONDS
    print(f"wall time (median of {len(walls)}): {wall:.1f} s -> {ratio:.2f} of the {BUDGET_SECONDS:.0f} s budget")
    for phase, seconds in manifest["timings"].items():
        print(f"  {phase:<16} {seconds:7.1f} s")
    print(f"snapshot size: {size / 1e6:.2f} MB -> {size / BUDGET_BYTES:.2f} of the 20 MB budget")


if __name__ == "__main__":
    main()
