"""Time and peak memory of every app page on a large synthetic snapshot against the demo.

docs/DESIGN.md: the app opens any page of a snapshot with tens of millions of per-sample rows
without loading them whole. This renders each page (AppTest, first visit, no cache) on
the demo snapshot (the baseline) and on a synthetic one built by `prunescope synth`, each
in a fresh interpreter, and prints seconds per page, the peak resident memory, and what
loading every per-sample row would take.

Run: python bench/app_scale.py [--models 104 --samples 2000] [--snapshot PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# (label, page, URL query, radio settings): every page, every fragile tab, and the options
# that scan per-sample rows instead of summary.parquet.
VIEWS = [
    ("overview", "views/overview.py", {}, {}),
    ("methods", "views/methods.py", {}, {}),
    ("model map", "views/modelmap.py", {}, {}),
    ("per-layer sparsity", "views/layers.py", {}, {}),
    ("corruptions", "views/corruptions.py", {}, {}),
    ("prune potential", "views/potential.py", {}, {}),
    ("per class", "views/classes.py", {}, {}),
    ("corruptions, per-sample", "views/corruptions.py", {},
     {"corruptions_basis": "per-sample correctness", "corruptions_on": "the selected corrupted conditions"}),
    ("geometry", "views/geometry.py", {}, {}),
    ("global geometry: per sample", "views/global_geometry.py", {}, {}),
    ("global geometry: per model", "views/global_geometry.py", {}, {"global_per": "model"}),
    ("embedding", "views/embedding.py", {}, {}),
    ("fragile: pruning", "views/fragile.py", {"fragile_view": "Pruning-fragile"}, {}),
    ("fragile: corruption", "views/fragile.py", {"fragile_view": "Corruption-fragile"}, {}),
    ("fragile: exemplars", "views/fragile.py", {"fragile_view": "Pruning identified exemplars"}, {}),
    ("fragile: robust", "views/fragile.py", {"fragile_view": "Robust"}, {}),
    ("sample", "views/sample.py", {}, {}),
]  # fmt: skip

RENDER = r"""
import json, os, resource, sys, time
from pathlib import Path
from streamlit.testing.v1 import AppTest
start_all = time.perf_counter()
snapshot = Path(sys.argv[1])
os.environ["PRUNESCOPE_DATA"] = str(snapshot.parent)
out = {}
at = AppTest.from_file(sys.argv[2], default_timeout=900)
at.query_params["snapshot"] = snapshot.name
at.run()  # opens the snapshot (the overview is timed again below, with its figures cached)
out["open"] = time.perf_counter() - start_all
for label, page, query, radios in json.loads(sys.argv[3]):
    start = time.perf_counter()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page).run()
    for key, value in radios.items():
        at.radio(key=key).set_value(value).run()
    errors = [str(e.value)[:200] for e in at.exception] + [e.value[:200] for e in at.error]
    tables = [list(t.value.columns)[:3] for t in at.dataframe]
    out[label] = {"seconds": time.perf_counter() - start, "errors": errors, "tables": tables}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def render(snapshot: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", RENDER, str(snapshot), str(REPO / "app.py"), json.dumps(VIEWS)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def rows_of(snapshot: Path) -> int:
    return json.loads((snapshot / "manifest.json").read_text())["counts"]["metric_rows"]


def bytes_per_row(snapshot: Path) -> float:
    """In-memory bytes of one per-sample row, measured on one model's metrics file."""
    import polars as pl

    one = pl.read_parquet(next((snapshot / "metrics").rglob("*.parquet")))
    return one.estimated_size() / one.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=104)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--snapshot", type=Path, help="an existing large snapshot (else one is synthesised)")
    args = parser.parse_args()
    big = args.snapshot or Path("/tmp/prunescope-scale") / f"synth-{args.models}x{args.samples}"
    if not (big / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "compute", "synth", "--models", str(args.models), "--samples", str(args.samples),
             "--out", str(big), "--overwrite", "--quiet"],
            check=True, cwd=REPO,
        )  # fmt: skip
    demo = REPO / "data" / "demo"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    results = {}
    for name, path in (("demo", demo), ("large", big)):
        results[name] = render(path)
        on_disk = sum(f.stat().st_size for f in (path / "metrics").rglob("*.parquet"))
        rows = rows_of(path)
        print(f"\n{name}: {path} - {rows:,} per-sample rows, {on_disk / 1e6:,.0f} MB of metrics on disk")
        print(f"  loading every row would take about {rows * bytes_per_row(path) / 1e6:,.0f} MB in memory")
        print(f"  {'open the snapshot (first run)':<32} {results[name]['open']:7.2f} s")
        for label, *_ in VIEWS:
            r = results[name][label]
            note = f"  ERRORS: {r['errors']}" if r["errors"] else ""
            print(f"  {label:<32} {r['seconds']:7.2f} s{note}")
        print(f"  peak resident memory of the whole session: {results[name]['peak_rss_mb']:,.0f} MB")
    ratio_rows = rows_of(big) / rows_of(demo)
    slowest = max((label for label, *_ in VIEWS), key=lambda v: results["large"][v]["seconds"])
    print(
        f"\nlarge / demo: {ratio_rows:.1f}x the rows; slowest page {slowest} "
        f"{results['large'][slowest]['seconds'] / max(results['demo'][slowest]['seconds'], 1e-9):.1f}x slower; "
        f"peak memory {results['large']['peak_rss_mb'] / results['demo']['peak_rss_mb']:.1f}x"
    )


if __name__ == "__main__":
    main()
