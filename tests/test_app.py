"""The Streamlit app under AppTest: pages render on real snapshots and show what they must."""

import json
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from compute import schema
from tests.apphelpers import figure_titled, run_app, texts, values
from tests.conftest import DEMO


def hand_mean_corruption_accuracy(path) -> dict[str, float]:
    summary = pl.read_parquet(path / schema.SUMMARY)
    conditions = pl.read_parquet(path / schema.CONDITIONS)
    benchmark = conditions.filter(pl.col("family").is_in(["noise", "blur", "weather", "digital"]))
    rows = summary.join(benchmark, on="condition_id")
    return {m: float(np.mean(g["accuracy"].to_numpy())) for (m,), g in rows.group_by("model_id")}


def test_overview_renders_the_demo_snapshot(demo_page):
    at = demo_page("views/overview.py")  # the app as opened, shared with the tests that only read it
    assert not at.exception
    assert not at.error
    assert texts(at, "title") == ["Overview"]
    models = pl.read_parquet(DEMO / schema.MODELS)
    tables = [element.value for element in at.dataframe]
    shown = next(t for t in tables if "model_id" in t.columns)
    assert sorted(shown["model_id"]) == sorted(models["model_id"])
    mca = hand_mean_corruption_accuracy(DEMO)
    for row in shown.itertuples():
        assert row.mean_corruption_accuracy == pytest.approx(mca[row.model_id], abs=1e-6)
    dense = models.filter(pl.col("method") == "dense")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dense clean accuracy"] == f"{dense['clean_accuracy'][0]:.1%}"
    scatter = figure_titled(at, "Clean accuracy against mean corruption accuracy")
    assert "mean corruption accuracy" in scatter["layout"]["yaxis"]["title"]["text"]
    assert {t["name"] for t in scatter["data"]} == set(models["method"])


def test_switching_the_measure_changes_the_plotted_curves(monkeypatch):
    at = run_app(monkeypatch, DEMO.parent, {"overview_view": "Against sparsity"})
    models = pl.read_parquet(DEMO / schema.MODELS)
    clean_fig = figure_titled(at, "clean accuracy against sparsity")
    magnitude = models.filter(pl.col("method") == "magnitude").sort("target_sparsity")
    trace = next(t for t in clean_fig["data"] if t["name"] == "magnitude")
    np.testing.assert_allclose(values(trace["y"]), 100 * magnitude["clean_accuracy"].to_numpy(), atol=1e-4)
    assert clean_fig["layout"]["yaxis"]["title"]["text"].endswith("(%)")

    at.radio(key="overview_measure").set_value("corrupted images (mean)").run()
    assert not at.exception
    corrupted_fig = figure_titled(at, "mean corruption accuracy against sparsity")
    assert "mean corruption accuracy" in corrupted_fig["layout"]["title"]["text"]
    mca = hand_mean_corruption_accuracy(DEMO)
    trace = next(t for t in corrupted_fig["data"] if t["name"] == "magnitude")
    np.testing.assert_allclose(values(trace["y"]), [100 * mca[m] for m in magnitude["model_id"]], atol=1e-4)


def hand_family_accuracy(path) -> dict[tuple[str, str], float]:
    summary = pl.read_parquet(path / schema.SUMMARY).join(pl.read_parquet(path / schema.CONDITIONS), on="condition_id")
    return {(m, f): float(np.mean(g["accuracy"].to_numpy())) for (m, f), g in summary.group_by("model_id", "family")}


def test_family_heatmap_shows_accuracy_per_family_and_relative_to_dense(monkeypatch):
    at = run_app(monkeypatch, DEMO.parent, {"overview_view": "By corruption family"})
    expected = hand_family_accuracy(DEMO)
    fig = figure_titled(at, "Accuracy by corruption family")
    heat = fig["data"][0]
    z = values(heat["z"])
    families, models = heat["x"], heat["y"]
    assert families[0] == "clean" and set(families) <= {"clean", "noise", "blur", "weather", "digital", "extra"}
    for i, model in enumerate(models):
        for j, family in enumerate(families):
            assert z[i, j] == pytest.approx(100 * expected[(model, family)], abs=1e-4)  # in %

    at.toggle(key="overview_family_relative").set_value(True).run()
    assert not at.exception
    fig = figure_titled(at, "relative to the dense model")
    heat = fig["data"][0]
    z = values(heat["z"])
    parents = dict(pl.read_parquet(DEMO / schema.MODELS).select("model_id", "parent_id").iter_rows())
    for i, model in enumerate(heat["y"]):
        for j, family in enumerate(heat["x"]):
            want = expected[(model, family)] - expected[(parents[model], family)]
            assert z[i, j] == pytest.approx(100 * want, abs=1e-4)  # in percentage points
    assert heat["colorbar"]["ticksuffix"] == " pts" and "pts" in heat["hovertemplate"]


def test_no_snapshot_shows_the_command_that_builds_one(monkeypatch, tmp_path):
    at = run_app(monkeypatch, tmp_path)
    assert not at.exception
    assert any("No snapshot found" in e for e in texts(at, "error"))
    assert any("prunescope compute --preset demo" in c for c in texts(at, "code"))


def _damage(target, damage: str) -> str:
    """Damage a snapshot copy the way a crash or a careless copy does; returns the file at fault."""
    if damage == "no manifest":
        (target / schema.MANIFEST).unlink()
        return "broken"
    if damage == "schema version":
        manifest = json.loads((target / schema.MANIFEST).read_text())
        manifest["schema_version"] = 99
        (target / schema.MANIFEST).write_text(json.dumps(manifest))
        return f"broken/{schema.MANIFEST}"
    if damage == "truncated metrics":
        part = sorted((target / schema.METRICS_DIR).rglob("*.parquet"))[-1]
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
        return f"broken/{part.relative_to(target).as_posix()}"
    (target / schema.MODELS).write_bytes(b"not parquet at all")
    return f"broken/{schema.MODELS}"


@pytest.mark.parametrize("damage", ["no manifest", "schema version", "truncated metrics", "models"])
def test_damaged_snapshot_names_the_file_and_the_commands_for_that_snapshot(
    monkeypatch, tmp_path, tiny_snapshot, damage
):
    shutil.copytree(tiny_snapshot, tmp_path / "demo")
    target = tmp_path / "broken"
    shutil.copytree(tiny_snapshot, target)
    at_fault = _damage(target, damage)
    at = run_app(monkeypatch, tmp_path)  # opens demo; the user then picks the damaged one
    at = at.selectbox(key="snapshot_name").select("broken").run()
    assert not at.exception
    errors = " ".join(texts(at, "error"))
    assert "`broken` is damaged" in errors and at_fault in errors
    commands = texts(at, "code")
    assert commands[0] == "prunescope validate $PRUNESCOPE_DATA/broken"
    assert not any("demo" in c for c in commands), "a command for another snapshot would leave this one broken"
    shown = " ".join(texts(at, "error") + texts(at, "markdown") + commands + texts(at, "caption"))
    assert str(tmp_path) not in shown, "no server path on the page"
    assert "\ufffd" not in shown and shown.isprintable()
    picker = at.selectbox(key="snapshot_name")
    assert picker.value == "broken" and picker.format_func("broken") == "broken (damaged)"
    assert at.query_params["snapshot"] == "broken", "a reload shows the same snapshot and the same message"


def test_the_demo_snapshot_damaged_gets_its_own_rebuild_command(monkeypatch, tmp_path, tiny_snapshot):
    shutil.copytree(tiny_snapshot, tmp_path / "demo")
    (tmp_path / "demo" / schema.SUMMARY).unlink()
    at = run_app(monkeypatch, tmp_path)
    assert "demo/summary.parquet is missing" in " ".join(texts(at, "error"))
    assert texts(at, "code") == [
        "prunescope validate $PRUNESCOPE_DATA/demo",
        "prunescope compute --preset demo --out $PRUNESCOPE_DATA/demo --overwrite",
    ]


def test_snapshot_is_chosen_from_the_url(monkeypatch, tmp_path, tiny_snapshot):
    shutil.copytree(tiny_snapshot, tmp_path / "tiny")
    shutil.copytree(DEMO, tmp_path / "demo")
    at = run_app(monkeypatch, tmp_path, query={"snapshot": "tiny"})
    assert not at.exception
    assert at.selectbox(key="snapshot_name").value == "tiny"
    assert at.query_params["snapshot"] == ["tiny"] or at.query_params["snapshot"] == "tiny"
    shown = next(t.value for t in at.dataframe if "model_id" in t.value.columns)
    assert len(shown) == len(pl.read_parquet(tiny_snapshot / schema.MODELS))
    at.selectbox(key="snapshot_name").set_value("demo").run()
    shown = next(t.value for t in at.dataframe if "model_id" in t.value.columns)
    assert len(shown) == len(pl.read_parquet(DEMO / schema.MODELS))


def test_no_legacy_pages_folder_beside_app_py():
    """A pages/ folder makes Streamlit skip app.py on a fresh server's deep link (and in AppTest reruns)."""
    from tests.conftest import REPO

    assert not (REPO / "pages").exists()


def test_a_failing_view_does_not_blame_a_sound_snapshot(monkeypatch, tmp_path, tiny_snapshot):
    from dashboard import queries

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the data")

    shutil.copytree(tiny_snapshot, tmp_path / "tiny")
    monkeypatch.setattr(queries, "models_table", broken)
    at = run_app(monkeypatch, tmp_path)
    assert not at.exception
    errors = " ".join(texts(at, "error"))
    assert "bug in prunescope" in errors and "damaged" not in errors


def test_a_damaged_page_behind_a_sound_footer_is_named_when_a_view_fails(monkeypatch, tmp_path):
    shutil.copytree(DEMO, tmp_path / "demo")
    part = tmp_path / "demo" / schema.METRICS_DIR / "model_id=biprop-0.5-s0" / "part-0.parquet"
    chunk = pq.read_metadata(part).row_group(0).column(1)  # sample_id, which every per-sample view reads
    assert chunk.path_in_schema == "sample_id"
    data = bytearray(part.read_bytes())
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size  # the footer stays
    part.write_bytes(bytes(data))
    at = run_app(monkeypatch, tmp_path)
    at.switch_page("views/sample.py").run()
    assert not at.exception
    errors = " ".join(texts(at, "error"))
    assert "demo/metrics/model_id=biprop-0.5-s0/part-0.parquet" in errors and "bug" not in errors
