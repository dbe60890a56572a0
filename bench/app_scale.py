"""Time and peak memory of every app page on large synthetic snapshots against the demo.

docs/DESIGN.md: the app opens any page of a snapshot with tens of millions of per-sample rows
without loading them whole. This renders each page (AppTest, first visit, no cache) on the
demo snapshot (the baseline) and on synthetic ones built by `prunescope synth` (one per
`--models`/`--samples` pair), each in a fresh interpreter, and prints seconds per page, the
peak resident memory, and the disk per per-sample row. With `--without-answers` it renders a
twin of each large snapshot as schema version 4 wrote it (no answers.parquet: the app
computes it from metrics/ on first use), for comparison.

Run: python bench/app_scale.py --models 66 --samples 10000 [--models 198 --samples 10000] [--without-answers]
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

import polars as pl

REPO = Path(__file__).resolve().parent.parent
# (label, page, URL query, radio settings): every page, and every tab or option that reads
# per-sample rows (metrics/ or answers.parquet) instead of summary.parquet.
VIEWS = [
    ("overview", "views/overview.py", {}, {}),
    ("methods", "views/methods.py", {}, {}),
    ("model map", "views/modelmap.py", {}, {}),
    ("per-layer sparsity", "views/layers.py", {}, {}),
    ("corruptions", "views/corruptions.py", {}, {}),
    ("prune potential", "views/potential.py", {}, {}),
    ("per class", "views/classes.py", {}, {}),
    ("corruptions: redundant, per-sample", "views/corruptions.py", {"corruptions_view": "Redundant corruptions"},
     {"corruptions_basis": "per-sample correctness"}),
    ("corruptions: similar models", "views/corruptions.py", {"corruptions_view": "Similar models"},
     {"corruptions_on": "the selected corrupted conditions"}),
    ("geometry", "views/geometry.py", {}, {}),
    ("geometry: angle and length", "views/geometry.py", {"geometry_view": "Angle and length"}, {}),
    ("geometry: moves", "views/geometry.py", {"geometry_view": "How pruning moved each sample"}, {}),
    ("global geometry: per sample", "views/global_geometry.py", {}, {}),
    ("global geometry: per model", "views/global_geometry.py", {}, {"global_per": "model"}),
    ("embedding", "views/embedding.py", {}, {}),
    ("fragile: pruning", "views/fragile.py", {"fragile_view": "Pruning-fragile"}, {}),
    ("fragile: corruption", "views/fragile.py", {"fragile_view": "Corruption-fragile"}, {}),
    ("fragile: exemplars", "views/fragile.py", {"fragile_view": "Pruning identified exemplars"}, {}),
    ("fragile: robust", "views/fragile.py", {"fragile_view": "Robust"}, {}),
    ("sample", "views/sample.py", {}, {}),
    ("sample: across severities", "views/sample.py", {"sample_view": "Across severities"}, {}),
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


def synthesised(models: int, samples: int) -> Path:
    """`prunescope synth --models M --samples S` under /tmp, made once; prints how long it took."""
    path = Path("/tmp/prunescope-scale") / f"synth-{models}x{samples}"
    if not (path / "manifest.json").exists():
        done = subprocess.run(
            [sys.executable, "-m", "compute", "synth", "--models", str(models), "--samples", str(samples),
             "--out", str(path), "--overwrite", "--quiet"],
            check=True, cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        print(done.stdout.strip())
    return path


def without_answers(path: Path) -> Path:
    """A twin of `path` as schema version 4 wrote it: every file linked, but no answers.parquet."""
    twin = path.with_name(path.name + "-v4")
    if not (twin / "manifest.json").exists():
        for source in path.rglob("*"):
            target = twin / source.relative_to(path)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif source.name not in ("answers.parquet", "manifest.json"):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
        manifest = json.loads((path / "manifest.json").read_text())
        (twin / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 4}))
    return twin


def disk(path: Path) -> tuple[int, int]:
    """Bytes of metrics/ and of the whole snapshot on disk."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files if "metrics" in f.parts), sum(f.stat().st_size for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, action="append", help="models of a synthetic snapshot (repeatable)")
    parser.add_argument("--samples", type=int, action="append", help="its samples (one per --models)")
    parser.add_argument("--snapshot", type=Path, action="append", help="an existing large snapshot (repeatable)")
    parser.add_argument("--without-answers", action="store_true", help="also each large snapshot without them")
    args = parser.parse_args()
    models, samples = args.models or ([] if args.snapshot else [104]), args.samples or ([] if args.snapshot else [2000])
    if len(models) != len(samples):
        parser.error("give one --samples per --models")
    from compute.machine import cpu_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    snapshots = {"demo": REPO / "data" / "demo"}
    for path in [*(args.snapshot or []), *(synthesised(m, s) for m, s in zip(models, samples, strict=True))]:
        snapshots[f"{rows_of(path) / 1e6:.0f} M rows"] = path
        if args.without_answers:
            snapshots[f"{rows_of(path) / 1e6:.0f} M rows, no answers.parquet"] = without_answers(path)
    results = {}
    for name, path in snapshots.items():
        results[name] = render(path)
        metrics_bytes, total = disk(path)
        rows = rows_of(path)
        print(f"\n{name}: {path} - {rows:,} per-sample rows")
        print(f"  on disk: {total / 1e6:,.0f} MB, of which metrics/ {metrics_bytes / 1e6:,.0f} MB "
              f"({metrics_bytes / rows:.1f} bytes per row)")  # fmt: skip
        print(f"  loading every row would take about {rows * bytes_per_row(path) / 1e6:,.0f} MB in memory")
        if (path / "answers.parquet").exists():
            tick = time.perf_counter()  # what merge does with it: read the rows, write them again
            pl.read_parquet(path / "answers.parquet").write_parquet(Path(tempfile.mkdtemp()) / "answers.parquet")
            print(f"  answers.parquet: {(path / 'answers.parquet').stat().st_size / 1e6:,.1f} MB, "
                  f"read and written again in {time.perf_counter() - tick:.2f} s")  # fmt: skip
        print(f"  {'open the snapshot (first run)':<32} {results[name]['open']:7.2f} s")
        for label, *_ in VIEWS:
            r = results[name][label]
            note = f"  ERRORS: {r['errors']}" if r["errors"] else ""
            print(f"  {label:<32} {r['seconds']:7.2f} s{note}")
        print(f"  peak resident memory of the whole session: {results[name]['peak_rss_mb']:,.0f} MB")
    print(f"\n| view | {' | '.join(results)} |\n|---{'|---' * len(results)}|")
    for label in ["open", *(v[0] for v in VIEWS)]:
        cells = [results[n]["open"] if label == "open" else results[n][label]["seconds"] for n in results]
        print(f"| {label} | {' | '.join(f'{c:.2f} s' for c in cells)} |")
    peaks = [f"{results[n]['peak_rss_mb']:,.0f} MB" for n in results]
    print(f"| peak resident memory | {' | '.join(peaks)} |")
    for name in list(results)[1:]:
        slowest = max((v[0] for v in VIEWS), key=lambda v: results[name][v]["seconds"])
        seconds, baseline = results[name][slowest]["seconds"], results["demo"][slowest]["seconds"]
        print(f"{name}: slowest view {slowest} {seconds:.2f} s ({seconds / max(baseline, 1e-9):.1f}x the demo's)")


if __name__ == "__main__":
    main()
