"""Global geometry (the paper's parallel coordinates): the class angles the compute step
records, the queries behind the page and the page itself, checked against arccos by hand,
the per-sample metrics and the snapshot's files read directly."""

import json
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from compute import schema
from compute.evaluate import clean_geometry
from compute.snapshot import conform
from compute.validate import main as validate
from dashboard import figures, measures, queries
from tests.apphelpers import figures as plotted
from tests.apphelpers import run_app, texts, values
from tests.conftest import DEMO


def test_class_angles_are_the_arccos_of_the_normalised_dot_product():
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [-2.0, 0.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    rows = clean_geometry("m", np.arange(4, dtype=np.int32), features, weight, metric_bits=23)
    assert rows.schema["angles"] == pl.List(pl.Float32)
    angles = np.array(rows["angles"].to_list(), dtype=float)
    expected = [[0, 90], [45, 45], [np.nan, np.nan], [180, 90]]  # worked by hand; a zero vector has no direction
    np.testing.assert_allclose(angles, expected, atol=1e-5)
    assert rows["model_id"].to_list() == ["m"] * 4 and rows["sample_id"].to_list() == [0, 1, 2, 3]


def test_every_demo_angle_to_the_true_class_is_its_clean_angle_true():
    embedding = pl.read_parquet(DEMO / schema.EMBEDDING)
    labels = dict(pl.read_parquet(DEMO / schema.SAMPLES, columns=["sample_id", "label"]).iter_rows())
    n_classes = len(json.loads((DEMO / schema.MANIFEST).read_text())["dataset"]["classes"])
    for model_id in ("dense-s0", "magnitude-0.9-s0"):
        clean = pq.read_table(DEMO / schema.metrics_partition(model_id), filters=[("condition_id", "==", 0)])
        angle_true = dict(zip(clean["sample_id"].to_pylist(), clean["angle_true"].to_pylist(), strict=True))
        rows = embedding.filter(pl.col("model_id") == model_id)
        assert rows.height == len(labels)
        for sample_id, angles in rows.select("sample_id", "angles").iter_rows():
            assert len(angles) == n_classes
            assert angles[labels[sample_id]] == pytest.approx(angle_true[sample_id], abs=1e-4)


def test_validate_catches_wrong_class_angles(snapshot_copy, capsys):
    path = snapshot_copy / schema.EMBEDDING
    original = pl.read_parquet(path)

    def planted(change):
        pq.write_table(conform(change(original), schema.EMBEDDING_SCHEMA, "embedding"), path)
        assert validate(str(snapshot_copy)) == 1
        return capsys.readouterr().out.strip()

    first = pl.int_range(pl.len()) == 0
    short = pl.when(first).then(pl.col("angles").list.head(2)).otherwise(pl.col("angles"))
    assert "embedding.parquet: column angles: must list" in planted(lambda f: f.with_columns(short))
    shifted = pl.when(first).then(pl.col("angles").list.eval(pl.element() + 200)).otherwise(pl.col("angles"))
    assert "column angles: outside [0, 180] degrees" in planted(lambda f: f.with_columns(shifted))
    swapped = pl.when(first).then(pl.col("angles").list.reverse()).otherwise(pl.col("angles"))
    assert "differs from the clean angle_true" in planted(lambda f: f.with_columns(swapped))


def as_version_3(path):
    """A snapshot as schema version 3 wrote it: no class angles, no dynamic dead-ReLU rate."""
    for name, column in ((schema.EMBEDDING, "angles"), (schema.MODELS, "dynamic_dead_relu")):
        table = pl.read_parquet(path / name).drop(column)
        pq.write_table(conform(table, schema.table_schemas(3)[name], name), path / name)
    manifest = json.loads((path / schema.MANIFEST).read_text())
    manifest["schema_version"] = 3
    (path / schema.MANIFEST).write_text(json.dumps(manifest))
    return path


def test_a_version_3_snapshot_is_valid_and_said_to_predate_the_class_angles(snapshot_copy, capsys):
    assert validate(str(as_version_3(snapshot_copy))) == 0
    assert "of schema version 3, which predates the class angles of embedding.parquet and" in capsys.readouterr().out


# --- queries and figure ----------------------------------------------------------------------------


def test_means_leave_nan_out_and_the_change_is_pruned_minus_dense():
    rows = pl.DataFrame(
        {
            "model_id": ["d", "d", "p", "p"],
            "sample_id": [0, 1, 0, 1],
            "angle_0": [10.0, 30.0, 20.0, float("nan")],
            "angle_1": [80.0, 100.0, 90.0, 120.0],
            "feat_norm": [2.0, 4.0, 1.0, 0.0],
            "geom_margin": [0.5, -0.5, 0.25, -1.0],
            "p_true": [0.9, 0.3, 0.6, 0.1],
            "correct": [True, False, True, False],
        }
    )
    models = pl.DataFrame({"model_id": ["p", "d"], "method": ["magnitude", "dense"], "sparsity": [0.9, 0.0]})
    means = queries.global_geometry_means(rows, models)
    assert means["model_id"].to_list() == ["d", "p"]  # by sparsity
    p = means.row(1, named=True)
    assert p["angle_0"] == 20.0 and p["angle_1"] == 105.0 and p["feat_norm"] == 0.5 and p["accuracy"] == 0.5
    change = queries.global_geometry_change(means, "d", "p", ["zero", "one"])
    assert change["axis"].to_list() == [
        "angle to zero", "angle to one", "feature length", "geometric margin", "p(true)", "accuracy",
    ]  # fmt: skip
    assert change["change"].to_list() == pytest.approx([0.0, 15.0, -2.5, -0.375, -0.25, 0.0])
    kept, dropped = queries.with_direction(rows)
    assert dropped == 1 and kept.filter(pl.col("model_id") == "p")["sample_id"].to_list() == [0]


def test_both_models_share_each_axis_range():
    a = pl.DataFrame({"v": [1.0, float("nan"), 3.0]})
    b = pl.DataFrame({"v": [-2.0, float("inf"), 2.0]})
    assert figures.axis_ranges([a, b], ["v"]) == {"v": [-2.0, 3.0]}  # a width of 5: steps of 0.1
    c = pl.DataFrame({"v": [61.37, 110.26]})  # a width of 48.89: steps of 1
    assert figures.axis_ranges([c], ["v"]) == {"v": [61.0, 111.0]}
    assert figures.axis_ranges([pl.DataFrame({"v": [float("nan")]})], ["v"]) == {"v": [0.0, 1.0]}


# --- the page ----------------------------------------------------------------------------------------


def open_page(monkeypatch, data_root=DEMO.parent, **widgets):
    at = run_app(monkeypatch, data_root)
    at.switch_page("views/global_geometry.py").run()
    for key, value in widgets.items():
        at = (at.radio if key == "global_per" else at.selectbox)(key=key).set_value(value).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at, "error")
    return at


def hand_rows(model_id, label):
    """The class's samples under one model on clean images, from the files: angles and metrics."""
    samples = pl.read_parquet(DEMO / schema.SAMPLES, columns=["sample_id", "label"])
    ids = samples.filter(pl.col("label") == label)["sample_id"].sort().to_list()
    embedding = pq.read_table(DEMO / schema.EMBEDDING, filters=[("model_id", "==", model_id)]).to_pydict()
    angles = dict(zip(embedding["sample_id"], embedding["angles"], strict=True))
    clean = pq.read_table(DEMO / schema.metrics_partition(model_id), filters=[("condition_id", "==", 0)]).to_pydict()
    metrics = {s: i for i, s in enumerate(clean["sample_id"])}
    return (
        ids,
        [
            [*angles[s], clean["feat_norm"][metrics[s]], clean["geom_margin"][metrics[s]], clean["p_true"][metrics[s]]]
            for s in ids
        ],
        [clean["correct"][metrics[s]] for s in ids],
    )


def test_the_page_draws_one_line_per_sample_of_the_class_for_dense_and_pruned(monkeypatch):
    label, pruned = 3, "magnitude-0.9-s0"
    at = open_page(monkeypatch, global_class=label, global_model=pruned)
    charts = plotted(at)
    assert len(charts) == 2
    names = json.loads((DEMO / schema.MANIFEST).read_text())["dataset"]["classes"]
    for chart, model_id in zip(charts, ("dense-s0", pruned), strict=True):
        trace = chart["data"][0]
        assert trace["type"] == "parcoords" and chart["layout"]["title"]["text"].startswith(model_id)
        labels = [d["label"] for d in trace["dimensions"]]
        assert labels == [f"∠ {n}" + (" (true)" if c == label else "") for c, n in enumerate(names)] + [
            "‖f‖", "margin", "p(true)",
        ]  # fmt: skip
        ids, expected, correct = hand_rows(model_id, label)
        on_top = sorted(range(len(ids)), key=lambda i: not correct[i])  # by sample, the wrong ones last
        expected, correct = [expected[i] for i in on_top], [correct[i] for i in on_top]
        drawn = np.array([values(d["values"]) for d in trace["dimensions"]]).T
        np.testing.assert_allclose(drawn, np.array(expected, dtype=float), rtol=1e-6)
        assert values(trace["line"]["color"]).tolist() == [int(c) for c in correct]
    ranges = [[d["range"] for d in chart["data"][0]["dimensions"]] for chart in charts]
    assert ranges[0] == ranges[1]  # shared axes
    for axis, (low, high) in enumerate(ranges[0]):  # around both models' values, at most a fifth wider
        both = [row[axis] for m in ("dense-s0", pruned) for row in hand_rows(m, label)[1]]
        assert low <= min(both) and high >= max(both) and high - low <= 1.2 * (max(both) - min(both)) + 1e-9
    table = next(e.value for e in at.dataframe)
    accuracy = table[table["axis"] == "accuracy"].iloc[0]
    hand = [np.mean(hand_rows(m, label)[2]) for m in ("dense-s0", pruned)]
    assert (accuracy["dense-s0"], accuracy[pruned], accuracy["change"]) == pytest.approx((*hand, hand[1] - hand[0]))


def test_one_line_per_model_is_the_mean_over_the_class(monkeypatch):
    label = 7
    at = open_page(monkeypatch, global_class=label, global_per="model")
    (chart,) = plotted(at)
    trace = chart["data"][0]
    models = pl.read_parquet(DEMO / schema.MODELS).sort("sparsity", "model_id")
    assert len(values(trace["line"]["color"])) == models.height
    np.testing.assert_allclose(values(trace["line"]["color"]), models["sparsity"].to_numpy(), rtol=1e-6)
    for row, model_id in enumerate(models["model_id"]):
        _, expected, _ = hand_rows(model_id, label)
        means = np.nanmean(np.array(expected, dtype=float), axis=0)
        drawn = [values(d["values"])[row] for d in trace["dimensions"]]
        np.testing.assert_allclose(drawn, means, rtol=1e-5)


def test_a_version_3_snapshot_says_what_to_run(monkeypatch, tmp_path):
    old = as_version_3(shutil.copytree(DEMO, tmp_path / "demo"))
    at = open_page(monkeypatch, data_root=old.parent)
    assert not plotted(at)
    assert any("predates the angles to every class direction" in i for i in texts(at, "info"))


def test_most_hurt_class_is_the_largest_drop_against_the_parent_lowest_label_on_ties():
    breakdown = pl.DataFrame(
        {
            "model_id": ["p", "p", "p", "p", "q"],
            "label": [0, 1, 2, 3, 0],
            "vs_dense": [-0.1, -0.3, -0.3, None, -0.9],
        }
    )
    assert measures.most_hurt_class(breakdown, "p") == 1
    assert measures.most_hurt_class(breakdown, "missing") is None


def most_hurt_by_hand(pruned: str) -> int:
    """The class whose clean accuracy `pruned` lowers most against dense-s0, from metrics/ (lowest label on ties)."""
    labels = dict(pl.read_parquet(DEMO / schema.SAMPLES, columns=["sample_id", "label"]).iter_rows())
    accuracy = {}
    for model_id in ("dense-s0", pruned):
        clean = pq.read_table(DEMO / schema.metrics_partition(model_id), filters=[("condition_id", "==", 0)])
        per_class = {}
        for sample_id, correct in zip(clean["sample_id"].to_pylist(), clean["correct"].to_pylist(), strict=True):
            per_class.setdefault(labels[sample_id], []).append(correct)
        accuracy[model_id] = {c: np.mean(v) for c, v in per_class.items()}
    drops = {c: accuracy[pruned][c] - accuracy["dense-s0"][c] for c in accuracy[pruned]}
    return min(sorted(drops), key=lambda c: drops[c])  # the lowest label among equal drops


def test_the_page_opens_on_the_class_the_pruned_model_hurts_most(monkeypatch):
    at = open_page(monkeypatch)
    pruned = at.selectbox(key="global_model").value
    expected = most_hurt_by_hand(pruned)
    assert at.selectbox(key="global_class").value == expected
    names = json.loads((DEMO / schema.MANIFEST).read_text())["dataset"]["classes"]
    assert all(f"of class {names[expected]}" in c["layout"]["title"]["text"] for c in plotted(at))

    # switching model re-selects the class it hurts most, until the user picks a class
    options = at.selectbox(key="global_model").options
    other = next(m for m in options if most_hurt_by_hand(m) != expected)
    at.selectbox(key="global_model").set_value(other).run()
    assert at.selectbox(key="global_class").value == most_hurt_by_hand(other) != expected
    picked = next(c for c in range(len(names)) if c not in (expected, most_hurt_by_hand(other)))
    at.selectbox(key="global_class").set_value(picked).run()
    at.selectbox(key="global_model").set_value(pruned).run()
    assert at.selectbox(key="global_class").value == picked, "a class the user picked stays"
    assert not at.exception and not at.error
