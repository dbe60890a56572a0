"""dashboard/store, queries and figures without Streamlit, on hand-built and real tables."""

import io
import json
import shutil

import polars as pl
import pytest

from compute import schema
from dashboard import figures, queries, store


def hand_snapshot(models: pl.DataFrame, summary: pl.DataFrame, conditions: pl.DataFrame) -> store.Snapshot:
    return store.Snapshot(
        path=None,
        manifest={},
        models=models,
        conditions=conditions,
        samples=pl.DataFrame({"sample_id": [0]}),
        summary=summary,
        classes=pl.DataFrame(),
    )


CONDITIONS = pl.DataFrame(
    {
        "condition_id": [0, 1, 2, 3],
        "corruption": ["clean", "gaussian_noise", "contrast", "saturate"],
        "family": ["clean", "noise", "digital", "extra"],
        "severity": [0, 1, 1, 1],
    }
)


def test_relative_robustness_against_a_hand_computation():
    models = pl.DataFrame(
        {
            "model_id": ["dense-s0", "magnitude-0.9-s0", "dense-s1", "magnitude-0.9-s1"],
            "method": ["dense", "magnitude", "dense", "magnitude"],
            "family": ["dense", "unstructured"] * 2,
            "target_sparsity": [0.0, 0.9] * 2,
            "sparsity": [0.0, 0.9] * 2,
            "seed": [0, 0, 1, 1],
            "parent_id": ["dense-s0", "dense-s0", "dense-s1", "dense-s1"],
            "clean_accuracy": [0.9, 0.85, 0.92, 0.9],
        }
    )
    # accuracies per condition (clean, gaussian_noise, contrast, saturate); saturate is an
    # extra and must not count towards mean corruption accuracy
    acc = {
        "dense-s0": [0.9, 0.6, 0.4, 0.0],
        "magnitude-0.9-s0": [0.85, 0.7, 0.5, 1.0],
        "dense-s1": [0.92, 0.5, 0.5, 0.0],
        "magnitude-0.9-s1": [0.9, 0.4, 0.4, 1.0],
    }
    summary = pl.DataFrame(
        [{"model_id": m, "condition_id": c, "accuracy": a} for m, row in acc.items() for c, a in enumerate(row)]
    )
    table = queries.models_table(hand_snapshot(models, summary, CONDITIONS))
    got = dict(zip(table["model_id"], table["mean_corruption_accuracy"], strict=True))
    assert got == pytest.approx({"dense-s0": 0.5, "magnitude-0.9-s0": 0.6, "dense-s1": 0.5, "magnitude-0.9-s1": 0.4})
    rel = dict(zip(table["model_id"], table["relative_robustness"], strict=True))
    assert rel["magnitude-0.9-s0"] == pytest.approx(0.1) and rel["magnitude-0.9-s1"] == pytest.approx(-0.1)
    assert rel["dense-s0"] == 0.0
    assert table["method"].to_list()[:2] == ["dense", "dense"]  # DESIGN order: dense first

    curves = queries.comparison_curves(table, "relative_robustness", "sparsity").filter(pl.col("method") == "magnitude")
    assert curves["mean"][0] == pytest.approx(0.0) and curves["x"][0] == pytest.approx(0.9)
    assert curves["min"][0] == pytest.approx(-0.1) and curves["seeds"][0] == 2


def test_figures_mark_dense_and_keep_method_colours():
    table = pl.DataFrame(
        {
            "model_id": ["dense-s0", "random-0.5-s0", "magnitude-0.5-s0"],
            "method": ["dense", "random", "magnitude"],
            "target_sparsity": [0.0, 0.5, 0.5],
            "sparsity": [0.0, 0.5, 0.5],
            "clean_accuracy": [0.9, 0.8, 0.88],
            "mean_corruption_accuracy": [0.6, 0.5, 0.65],
            "relative_robustness": [0.0, -0.1, 0.05],
            "seed": [0, 0, 0],
            "is_dense": [True, False, False],
        }
    )
    fig = figures.robustness_scatter(table)
    by_name = {t.name: t for t in fig.data}
    assert by_name["dense"].marker.symbol == "star"
    # the role, not the label: an evaluate snapshot's dense model may be method "baseline"
    relabelled = figures.robustness_scatter(table.with_columns(pl.col("method").replace({"dense": "baseline"})))
    baseline = next(t for t in relabelled.data if t.name == "baseline")
    assert baseline.marker.symbol == "star" and baseline.marker.size == figures.DENSE_SIZE
    assert {round(s.y0, 6) for s in relabelled.layout.shapes if s.y0 == s.y1} == {0.6}
    assert by_name["magnitude"].marker.color == figures.METHOD_COLORS["magnitude"]
    lines = [s for s in fig.layout.shapes]
    assert {round(s.y0, 6) for s in lines if s.y0 == s.y1} == {0.6}  # dense robustness line
    assert {round(s.x0, 6) for s in lines if s.x0 == s.x1} == {0.9}  # dense clean line
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text

    curves = queries.comparison_curves(table.filter(~pl.col("is_dense")), "clean_accuracy", "sparsity")
    fig = figures.method_lines(curves, 0.9, "clean accuracy", queries.X_AXES["sparsity"], x_percent=True)
    assert [t.name for t in fig.data] == ["random", "magnitude"]
    assert fig.data[1].line.color == figures.METHOD_COLORS["magnitude"]
    assert "%" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text
    assert "magnitude" in fig.data[1].hovertemplate
    assert figures.method_color("brand_new") == figures.method_color("brand_new")


def test_store_lists_valid_and_damaged_snapshots(tiny_snapshot, tmp_path):
    shutil.copytree(tiny_snapshot, tmp_path / "good")
    shutil.copytree(tiny_snapshot, tmp_path / "bad")
    (tmp_path / "bad" / schema.MANIFEST).unlink()
    (tmp_path / "notes").mkdir()  # not a snapshot at all
    (tmp_path / ".good.tmp-1234").mkdir()  # a writer's temporary folder
    entries = {e.name: e for e in store.list_snapshots(tmp_path)}
    assert set(entries) == {"good", "bad"}
    assert entries["good"].error is None
    assert entries["bad"].error == f"bad has no {schema.MANIFEST}, so it is not a complete snapshot"


def test_store_rereads_a_rebuilt_snapshot(snapshot_copy):
    first = store.open_snapshot(snapshot_copy)
    assert store.open_snapshot(snapshot_copy) is first  # cached
    manifest_path = snapshot_copy / schema.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "renamed"
    manifest_path.write_text(json.dumps(manifest))
    assert store.open_snapshot(snapshot_copy).name == "renamed"


def test_scan_metrics_filters_and_projects(tiny_snapshot):
    snap = store.open_snapshot(tiny_snapshot)
    model = snap.models["model_id"][1]
    plan = store.scan_metrics(snap, model_ids=[model], condition_ids=[0, 2], columns=["correct"])
    explained = plan.explain()
    assert explained.count("part-0.parquet") == 1  # hive partition pruning: one model's file
    assert "PROJECT 4/" in explained and "SELECTION" in explained  # pushed into the scan
    rows = plan.collect()
    assert rows.columns == ["model_id", "condition_id", "sample_id", "correct"]
    assert set(rows["model_id"]) == {model} and set(rows["condition_id"]) == {0, 2}
    assert len(rows) == 2 * len(snap.samples)


def test_thumbnails_are_png_images_of_the_test_set(tiny_snapshot):
    from PIL import Image

    snap = store.open_snapshot(tiny_snapshot)
    ids = snap.samples["sample_id"].head(3).to_list()
    pictures = store.thumbnails(snap, ids)
    assert sorted(pictures) == sorted(ids)
    for data in pictures.values():
        assert Image.open(io.BytesIO(data)).size == (32, 32)


def test_family_accuracy_averages_each_family_and_subtracts_the_parent():
    conditions = pl.DataFrame(
        {
            "condition_id": [0, 1, 2, 3, 4],
            "corruption": ["clean", "gaussian_noise", "gaussian_noise", "contrast", "saturate"],
            "family": ["clean", "noise", "noise", "digital", "extra"],
            "severity": [0, 1, 2, 1, 1],
        }
    )
    acc = {"dense-s0": [0.9, 0.8, 0.6, 0.5, 0.7], "magnitude-0.9-s0": [0.85, 0.9, 0.8, 0.2, 0.7]}
    summary = pl.DataFrame(
        [{"model_id": m, "condition_id": c, "accuracy": a} for m, row in acc.items() for c, a in enumerate(row)]
    )
    got = {(m, f): a for m, f, a in queries.family_accuracy(summary, conditions).iter_rows()}
    assert got[("dense-s0", "noise")] == pytest.approx(0.7) and got[("magnitude-0.9-s0", "noise")] == pytest.approx(
        0.85
    )
    assert got[("dense-s0", "clean")] == pytest.approx(0.9) and got[("magnitude-0.9-s0", "extra")] == pytest.approx(0.7)
    models = pl.DataFrame({"model_id": list(acc), "parent_id": ["dense-s0", "dense-s0"]})
    rel = {(m, f): a for m, f, a in queries.family_accuracy(summary, conditions, True, models).iter_rows()}
    assert rel[("magnitude-0.9-s0", "noise")] == pytest.approx(0.15)
    assert rel[("magnitude-0.9-s0", "digital")] == pytest.approx(-0.3)
    assert rel[("dense-s0", "noise")] == pytest.approx(0.0)
    order = queries.family_accuracy(summary, conditions).filter(pl.col("model_id") == "dense-s0")["family"].to_list()
    assert order == ["clean", "noise", "digital", "extra"]  # DESIGN order


def test_store_follows_no_link_out_of_the_data_root_or_the_snapshot(tiny_snapshot, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    shutil.copytree(tiny_snapshot, outside / "elsewhere")
    (root / "linked").symlink_to(outside / "elsewhere")  # a snapshot folder that lies outside the root
    shutil.copytree(tiny_snapshot, root / "inner")
    (root / "alias").symlink_to(root / "inner")  # a link within the root is fine
    assert {e.name for e in store.list_snapshots(root)} == {"inner", "alias"}

    partition = sorted((root / "inner" / schema.METRICS_DIR).iterdir())[0]
    shutil.move(partition, outside / partition.name)
    partition.symlink_to(outside / partition.name)
    with pytest.raises(store.SnapshotError, match="links outside the snapshot"):
        store.open_snapshot(root / "inner")


def test_scatters_use_webgl_only_for_many_points():
    assert figures.points_trace(figures.WEBGL_POINTS, x=[0], y=[0]).type == "scatter"
    assert figures.points_trace(figures.WEBGL_POINTS + 1, x=[0], y=[0]).type == "scattergl"
    assert figures.points_trace(10, polar=True, r=[1], theta=[0]).type == "scatterpolar"
    assert figures.points_trace(10**6, polar=True, r=[1], theta=[0]).type == "scatterpolargl"


def test_occlusion_panels_keep_square_pixels_and_the_aligned_legend_clears_the_colour_bar():
    rows = pl.DataFrame({"row": [0, 0, 4, 4], "col": [0, 4, 0, 4], "d_angle_true": [1.0, -2.0, 0.5, 0.0]})
    panels = [(f"m{k}", None, rows) for k in range(4)]
    layout = figures.occlusion_maps(panels, "d_angle_true", 8, "t").layout
    for k, name in enumerate(["yaxis", "yaxis2", "yaxis3", "yaxis4"]):
        assert layout[name].scaleanchor == ("x" if k == 0 else f"x{k + 1}")  # each panel to its own x axis
    points = pl.DataFrame(
        {"sample_id": [0, 1], "label": [0, 1], "class_name": ["a", "b"], "x": [0.0, 1.0], "y": [1.0, 0.0],
         "fragile": [0, 3]}
    )  # fmt: skip
    fig = figures.aligned_embeddings(points, points, "fragile", ("dense", "pruned"), moves=True)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y > 1
