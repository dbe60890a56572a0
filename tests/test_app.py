"""The Streamlit app under AppTest: pages render on real snapshots and show what they must."""

import shutil

import numpy as np
import polars as pl
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


def test_overview_renders_the_demo_snapshot(monkeypatch):
    at = run_app(monkeypatch, DEMO.parent)
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
    at = run_app(monkeypatch, DEMO.parent)
    models = pl.read_parquet(DEMO / schema.MODELS)
    clean_fig = figure_titled(at, "clean accuracy against sparsity")
    magnitude = models.filter(pl.col("method") == "magnitude").sort("target_sparsity")
    trace = next(t for t in clean_fig["data"] if t["name"] == "magnitude")
    np.testing.assert_allclose(values(trace["y"]), magnitude["clean_accuracy"].to_numpy(), atol=1e-6)

    at.radio(key="overview_measure").set_value("corrupted images (mean)").run()
    assert not at.exception
    corrupted_fig = figure_titled(at, "mean corruption accuracy against sparsity")
    assert "mean corruption accuracy" in corrupted_fig["layout"]["title"]["text"]
    mca = hand_mean_corruption_accuracy(DEMO)
    trace = next(t for t in corrupted_fig["data"] if t["name"] == "magnitude")
    np.testing.assert_allclose(values(trace["y"]), [mca[m] for m in magnitude["model_id"]], atol=1e-6)


def hand_family_accuracy(path) -> dict[tuple[str, str], float]:
    summary = pl.read_parquet(path / schema.SUMMARY).join(pl.read_parquet(path / schema.CONDITIONS), on="condition_id")
    return {(m, f): float(np.mean(g["accuracy"].to_numpy())) for (m, f), g in summary.group_by("model_id", "family")}


def test_family_heatmap_shows_accuracy_per_family_and_relative_to_dense(monkeypatch):
    at = run_app(monkeypatch, DEMO.parent)
    expected = hand_family_accuracy(DEMO)
    fig = figure_titled(at, "Accuracy by corruption family")
    heat = fig["data"][0]
    z = values(heat["z"])
    families, models = heat["x"], heat["y"]
    assert families[0] == "clean" and set(families) <= {"clean", "noise", "blur", "weather", "digital", "extra"}
    for i, model in enumerate(models):
        for j, family in enumerate(families):
            assert z[i, j] == pytest.approx(expected[(model, family)], abs=1e-6)

    at.toggle(key="overview_family_relative").set_value(True).run()
    assert not at.exception
    fig = figure_titled(at, "relative to the dense model")
    heat = fig["data"][0]
    z = values(heat["z"])
    parents = dict(pl.read_parquet(DEMO / schema.MODELS).select("model_id", "parent_id").iter_rows())
    for i, model in enumerate(heat["y"]):
        for j, family in enumerate(heat["x"]):
            want = expected[(model, family)] - expected[(parents[model], family)]
            assert z[i, j] == pytest.approx(want, abs=1e-6)


def test_no_snapshot_shows_the_command_that_builds_one(monkeypatch, tmp_path):
    at = run_app(monkeypatch, tmp_path)
    assert not at.exception
    assert any("No snapshot found" in e for e in texts(at, "error"))
    assert any("prunescope compute --preset demo" in c for c in texts(at, "code"))


@pytest.mark.parametrize("damage", ["manifest", "models", "summary"])
def test_damaged_snapshot_shows_a_message_not_a_traceback(monkeypatch, tmp_path, tiny_snapshot, damage):
    target = tmp_path / "broken"
    shutil.copytree(tiny_snapshot, target)
    if damage == "manifest":
        (target / schema.MANIFEST).unlink()
    else:
        (target / f"{damage}.parquet").write_bytes(b"not parquet at all")
    at = run_app(monkeypatch, tmp_path)
    assert not at.exception
    errors = " ".join(texts(at, "error"))
    assert "broken" in errors and ("damaged" in errors or "complete" in errors)
    assert any("prunescope compute" in c for c in texts(at, "code"))


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
