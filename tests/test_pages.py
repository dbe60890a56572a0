"""Every page of the app on the demo snapshot: what it must show, checked against the
snapshot's files directly, and how widgets change it."""

import itertools
import re

import numpy as np
import polars as pl
import pytest

from compute import schema
from compute.snapshot import scan_metrics
from tests.apphelpers import figure_titled, figures, open_page, run_app, texts, values
from tests.conftest import DEMO
from tests.test_app import hand_mean_corruption_accuracy

PAGES = {
    "views/overview.py": (
        "Overview",
        ["Clean accuracy against mean corruption accuracy"],
    ),
    "views/methods.py": ("Method comparison", ["clean accuracy against sparsity"]),
    "views/corruptions.py": (
        "Corruption breakdown",
        ["Accuracy per corruption"],
    ),
    "views/geometry.py": (
        "Geometry of the last layer",
        ["per model"],
    ),
    "views/fragile.py": ("Fragile samples", []),
    "views/sample.py": ("Sample detail", ["every model's verdict"]),
    "views/embedding.py": ("Embedding", ["Clean features of"]),
    "views/global_geometry.py": ("Global geometry", ["(dense parent):", "(pruned):"]),
    "views/potential.py": ("Prune potential", ["Prune potential within", "Excess error per model"]),
    "views/classes.py": ("Per class", ["Accuracy per class"]),
    "views/modelmap.py": ("Model map", ["Model map (PCA"]),
    "views/layers.py": ("Per-layer sparsity", ["Sparsity per layer at"]),
}


@pytest.fixture(scope="module")
def demo():
    models = pl.read_parquet(DEMO / schema.MODELS)
    conditions = pl.read_parquet(DEMO / schema.CONDITIONS)
    summary = pl.read_parquet(DEMO / schema.SUMMARY)
    metrics = scan_metrics(DEMO).collect()
    return {"models": models, "conditions": conditions, "summary": summary, "metrics": metrics}


def page(monkeypatch, path, query=None):
    """A run of its own, for a test that changes widgets; tests that only read use the shared `demo_page`."""
    return open_page(monkeypatch, DEMO.parent, path, query)


def condition_id(demo, corruption, severity):
    rows = demo["conditions"].filter((pl.col("corruption") == corruption) & (pl.col("severity") == severity))
    return int(rows["condition_id"][0])


def accuracy(demo, model_id, cid):
    row = demo["summary"].filter((pl.col("model_id") == model_id) & (pl.col("condition_id") == cid))
    return float(row["accuracy"][0])


def trace(fig, name):
    return next(t for t in fig["data"] if t.get("name") == name)


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_renders_what_it_must(demo_page, path):
    at = demo_page(path)
    title, figures = PAGES[path]
    assert texts(at, "title") == [title]
    for words in figures:
        figure_titled(at, words)
    for fig in [f for f in map(lambda c: __import__("json").loads(c.proto.spec), at.get("plotly_chart"))]:
        layout = fig["layout"]
        if "xaxis" in layout and fig["data"] and fig["data"][0].get("type") not in ("scatterpolar",):
            assert layout["xaxis"].get("title", {}).get("text") or layout.get("polar"), layout.get("title")
        # plotly's parallel coordinates have no hover; their axes carry the names and values
        hovered = [t for t in fig["data"] if t["type"] != "parcoords"]
        assert all("hovertemplate" in t for t in hovered), layout.get("title")
        assert all(all(d.get("label") for d in t["dimensions"]) for t in fig["data"] if t["type"] == "parcoords")


def test_method_comparison_follows_the_measure_the_axis_and_the_reference(monkeypatch, demo):
    at = page(monkeypatch, "views/methods.py")
    magnitude = demo["models"].filter(pl.col("method") == "magnitude").sort("target_sparsity")
    fig = figure_titled(at, "clean accuracy against")
    plotted = values(trace(fig, "magnitude")["y"])
    np.testing.assert_allclose(plotted, 100 * magnitude["clean_accuracy"].to_numpy(), atol=1e-4)

    at.selectbox(key="methods_measure").set_value("one corruption and severity").run()
    at.selectbox(key="methods_corruption").set_value("contrast").run()
    at.selectbox(key="methods_severity").set_value(3).run()
    cid = condition_id(demo, "contrast", 3)
    fig = figure_titled(at, "accuracy under contrast (severity 3)")
    want = [accuracy(demo, m, cid) for m in magnitude["model_id"]]
    np.testing.assert_allclose(values(trace(fig, "magnitude")["y"]), [100 * w for w in want], atol=1e-4)

    at.toggle(key="methods_relative").set_value(True).run()
    fig = figure_titled(at, "change in accuracy under contrast")
    dense = accuracy(demo, "dense-s0", cid)
    np.testing.assert_allclose(values(trace(fig, "magnitude")["y"]), [100 * (w - dense) for w in want], atol=1e-4)
    assert fig["layout"]["yaxis"]["title"]["text"] == "change vs dense (pts)"  # short: it never reaches the title

    at.selectbox(key="methods_x").set_value("params_nonzero").run()
    fig = figure_titled(at, "nonzero parameters")
    np.testing.assert_allclose(values(trace(fig, "magnitude")["x"]), magnitude["params_nonzero"].to_numpy())
    assert fig["layout"]["xaxis"]["type"] == "log"


def test_corruption_heatmap_severity_curves_and_similarity(monkeypatch, demo):
    at = page(monkeypatch, "views/corruptions.py")
    at.selectbox(key="corruptions_severity").set_value(5).run()
    fig = figure_titled(at, "Accuracy per corruption")
    heat = fig["data"][0]
    z = values(heat["z"])
    for i, model in enumerate(heat["y"][:5]):
        for j, corruption in enumerate(heat["x"]):
            assert z[i, j] == pytest.approx(100 * accuracy(demo, model, condition_id(demo, corruption, 5)), abs=1e-4)

    at.toggle(key="corruptions_relative").set_value(True).run()
    heat = figure_titled(at, "relative to the dense model")["data"][0]
    z = values(heat["z"])
    j = heat["x"].index("fog")
    i = heat["y"].index("imp-0.9-s0")
    cid = condition_id(demo, "fog", 5)
    want = accuracy(demo, "imp-0.9-s0", cid) - accuracy(demo, "dense-s0", cid)
    assert z[i, j] == pytest.approx(100 * want, abs=1e-4)  # percentage points

    at = page(monkeypatch, "views/corruptions.py", query={"corruptions_view": "Severity curves"})
    assert len(figures(at)) == 1, "only the open tab is drawn"
    curves = figure_titled(at, "Accuracy against severity: dense-s0")
    fog = trace(curves, "fog")
    assert list(values(fog["x"])) == [0, 1, 2, 3, 4, 5]
    assert values(fog["y"])[0] == pytest.approx(accuracy(demo, "dense-s0", 0), abs=1e-6)

    at = page(monkeypatch, "views/corruptions.py", query={"corruptions_view": "Redundant corruptions"})
    corr = figure_titled(at, "Corruption correlation")["data"][0]
    matrix = values(corr["z"])
    assert matrix.shape == (19, 19) and np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)
    # the colours span the correlations present, from the lowest (down to a tenth) to 1
    lowest = matrix[~np.eye(19, dtype=bool)].min()
    assert corr["zmax"] == 1.0 and lowest - 0.1 < corr["zmin"] <= lowest and corr["zmin"] > -1.0
    assert ("zmid" in corr) == (corr["zmin"] < 0), "a diverging scale only when a correlation is negative"
    at.radio(key="corruptions_basis").set_value("per-sample correctness").run()
    assert not np.allclose(values(figure_titled(at, "per-sample correctness")["data"][0]["z"]), matrix)

    clean = demo["metrics"].filter(pl.col("condition_id") == 0)
    a = clean.filter(pl.col("model_id") == "dense-s0").sort("sample_id")["pred"].to_numpy()
    b = clean.filter(pl.col("model_id") == "magnitude-0.5-s0").sort("sample_id")["pred"].to_numpy()
    at = page(monkeypatch, "views/corruptions.py", query={"corruptions_view": "Similar models"})
    sim = figure_titled(at, "Prediction agreement")["data"][0]
    z = values(sim["z"])
    i, j = sim["y"].index("dense-s0"), sim["x"].index("magnitude-0.5-s0")
    assert z[i, j] == pytest.approx(float(np.mean(a == b)), abs=1e-9)
    at.radio(key="corruptions_stat").set_value("Cohen's kappa").run()
    from sklearn.metrics import cohen_kappa_score

    sim = figure_titled(at, "Prediction Cohen's kappa")["data"][0]
    i, j = sim["y"].index("dense-s0"), sim["x"].index("magnitude-0.5-s0")
    assert values(sim["z"])[i, j] == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


def test_geometry_distributions_and_shift_match_the_rows(monkeypatch, demo):
    at = page(monkeypatch, "views/geometry.py")
    at.radio(key="geometry_metric").set_value("angle_true").run()
    fig = figure_titled(at, "angle to the true class (degrees) per model")
    clean_box = next(t for t in fig["data"] if t["name"] == "clean")
    xs, ys = clean_box["x"], values(clean_box["y"])
    got = np.sort(ys[np.asarray(xs) == "dense-s0"])
    rows = demo["metrics"].filter((pl.col("model_id") == "dense-s0") & (pl.col("condition_id") == 0))
    np.testing.assert_allclose(got, np.sort(rows["angle_true"].drop_nans().to_numpy()), rtol=1e-6)
    assert got.min() >= 0 and got.max() <= 180

    at = page(monkeypatch, "views/geometry.py", query={"geometry_view": "How pruning moved each sample"})
    assert len(figures(at)) == 1, "only the open tab is drawn"
    shift = figure_titled(at, "each sample's move")
    model = shift["layout"]["title"]["text"].split("to ")[1].split(":")[0]
    pruned = demo["metrics"].filter((pl.col("model_id") == model) & (pl.col("condition_id") == 0)).sort("sample_id")
    dense = rows.sort("sample_id")
    broken = int((dense["correct"] & ~pruned["correct"]).sum())
    assert any(t["name"] == f"broken by pruning ({broken})" for t in shift["data"])


def hand_pruning_fragility(demo) -> pl.DataFrame:
    metrics, models = demo["metrics"], demo["models"]
    dense = metrics.filter(pl.col("model_id") == "dense-s0").select(
        "condition_id", "sample_id", pl.col("correct").alias("dense")
    )
    pruned_ids = models.filter(pl.col("method") != "dense")["model_id"].implode()
    pairs = metrics.filter(pl.col("model_id").is_in(pruned_ids)).join(dense, on=["condition_id", "sample_id"])
    return pairs.group_by("sample_id").agg(
        (pl.col("dense") & ~pl.col("correct")).sum().alias("fragile"), pl.col("dense").sum().alias("chances")
    )


def test_fragile_lists_match_a_hand_count_and_filter_by_class(monkeypatch, demo):
    at = page(monkeypatch, "views/fragile.py")
    hand = {s: (f, c) for s, f, c in hand_pruning_fragility(demo).iter_rows()}
    by_rate = sorted(hand, key=lambda s: (-(hand[s][0] / hand[s][1] if hand[s][1] else 0.0), -hand[s][0], s))
    by_count = sorted(hand, key=lambda s: (-hand[s][0], -(hand[s][0] / hand[s][1] if hand[s][1] else 0.0), s))
    assert by_rate[:30] != by_count[:30]  # the demo tells the two rankings apart
    shown = at.dataframe[0].value
    assert shown["sample_id"].tolist() == by_rate[:30], "ranked by rate unless asked otherwise"
    for sample, count, chances in zip(shown["sample_id"], shown["fragile"], shown["chances"], strict=True):
        assert hand[sample] == (count, chances)
    assert shown["image"].str.startswith("data:image/png;base64,").all()
    at.radio(key="fragile_rank").set_value("count").run()
    assert at.dataframe[0].value["sample_id"].tolist() == by_count[:30]

    at.multiselect(key="fragile_classes").set_value(["3"]).run()
    assert set(at.dataframe[0].value["class_name"]) == {"3"}

    assert len(at.dataframe) == 1  # only the open tab is computed

    at = page(monkeypatch, "views/fragile.py", query={"fragile_view": "Robust"})
    robust = at.dataframe[0].value
    acc = demo["metrics"].group_by("sample_id").agg(pl.col("correct").mean())
    expected_acc = dict(acc.iter_rows())
    for sample, value in zip(robust["sample_id"], robust["accuracy"], strict=True):
        assert value == pytest.approx(expected_acc[sample])
    at = page(monkeypatch, "views/fragile.py", query={"fragile_view": "Pruning identified exemplars"})
    assert "is_pie" in at.dataframe[0].value.columns
    at = page(monkeypatch, "views/fragile.py", query={"fragile_view": "Corruption-fragile"})
    assert {"broken", "lowest_severity", "first_to_break"} <= set(at.dataframe[0].value.columns)


def test_sample_detail_shows_the_stored_images_and_the_verdicts(monkeypatch, demo, demo_page):
    thumbs = pl.read_parquet(DEMO / schema.THUMBNAILS, columns=["sample_id"])
    stored = int(thumbs["sample_id"].unique().sort()[0])
    images = demo_page("views/sample.py", query={"sample": str(stored), "sample_view": "Under each corruption"})
    assert len(images.get("image")) == 1 + 19 * 5  # the clean image and every corrupted one
    at = demo_page("views/sample.py", query={"sample": str(stored)})
    assert len(at.get("image")) == 1 and len(figures(at)) == 1, "only the open tab is drawn"
    clean = demo["metrics"].filter((pl.col("sample_id") == stored) & (pl.col("condition_id") == 0))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Right on clean images"] == f"{int(clean['correct'].sum())} of {len(clean)} models"
    heat, crosses = figure_titled(at, f"Sample {stored}: every model's verdict")["data"]
    samples = pl.read_parquet(DEMO / schema.SAMPLES, columns=["sample_id", "label"])
    true = int(samples.filter(pl.col("sample_id") == stored)["label"][0])
    rows = demo["metrics"].filter(pl.col("sample_id") == stored)
    named = demo["conditions"].select("condition_id", "corruption", "severity").iter_rows()
    label = {cid: "clean" if c == "clean" else f"{c} · {s}" for cid, c, s in named}
    assert len(heat["y"]) == demo["conditions"].height and len(heat["x"]) == demo["models"].height
    z = values(heat["z"])
    for model, cid, p_true, pred in rows.select("model_id", "condition_id", "p_true", "pred").iter_rows():
        i, j = heat["y"].index(label[cid]), heat["x"].index(model)
        assert z[i, j] == pytest.approx(p_true)
        assert heat["customdata"][i][j] == str(pred)  # digits: a class's name is its index
    wrong = rows.filter(pl.col("pred") != true)
    assert 0 < wrong.height < rows.height and len(heat["x"]) * len(heat["y"]) > 900  # marks beyond 900 cells
    marked = set(zip(crosses["x"], crosses["y"], strict=True))
    assert marked == {(m, label[c]) for m, c in wrong.select("model_id", "condition_id").iter_rows()}
    assert "predicted %{customdata}" in heat["hovertemplate"]
    layout = figure_titled(at, f"Sample {stored}: every model's verdict")["layout"]
    assert layout["yaxis"]["tickvals"] == heat["y"], "every condition keeps its label"

    missing = sorted(set(demo["metrics"]["sample_id"].unique()) - set(thumbs["sample_id"]))[0]
    at = page(monkeypatch, "views/sample.py", query={"sample": str(missing), "sample_view": "Under each corruption"})
    assert any("--thumbnail-samples" in t for t in texts(at, "info"))


def cie_lab_distance(first: str, second: str) -> float:
    """CIE76 ΔE between two sRGB hex colours, from the sRGB and CIELAB definitions (D65)."""

    def lab(colour: str) -> np.ndarray:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
        linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
        t = xyz / np.array([0.95047, 1.0, 1.08883])
        f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    return float(np.linalg.norm(lab(first) - lab(second)))


def test_embedding_points_and_colours(monkeypatch, demo):
    at = page(monkeypatch, "views/embedding.py")
    fig = figure_titled(at, "Clean features of dense-s0")
    embedding = pl.read_parquet(DEMO / schema.EMBEDDING).filter(pl.col("model_id") == "dense-s0")
    xs = np.concatenate([values(t["x"]) for t in fig["data"]])
    np.testing.assert_allclose(np.sort(xs), np.sort(embedding["x"].to_numpy()), rtol=1e-6)
    # every class its own colour and shape; the closest two colours still far apart (CIE76 ΔE)
    markers = {t["name"]: (t["marker"]["color"], t["marker"]["symbol"]) for t in fig["data"]}
    assert sorted(markers) == [str(d) for d in range(10)] and len(set(markers.values())) == 10
    assert len({colour for colour, _ in markers.values()}) == 10 and len({s for _, s in markers.values()}) == 10
    closest = min(cie_lab_distance(a[0], b[0]) for a, b in itertools.combinations(markers.values(), 2))
    assert closest > 25, closest
    for a, b in (("4", "9"), ("6", "8")):  # the pairs that looked alike
        assert cie_lab_distance(markers[a][0], markers[b][0]) > 50
    at.radio(key="embedding_colour").set_value("outcome").run()
    fig = figure_titled(at, "Clean features of dense-s0")
    clean = demo["metrics"].filter((pl.col("model_id") == "dense-s0") & (pl.col("condition_id") == 0))
    sizes = {t["name"]: len(values(t["x"])) for t in fig["data"]}
    assert sizes.get("right") == int(clean["correct"].sum())
    assert sizes.get("wrong", 0) == len(clean) - int(clean["correct"].sum())
    # fragility counts (pruned model, condition) pairs where the dense parent is right and the model wrong
    at.radio(key="embedding_colour").set_value("fragile").run()
    marker = figure_titled(at, "Clean features of dense-s0")["data"][0]["marker"]
    assert "condition pairs" in marker["colorbar"]["title"]["text"]
    pruned = demo["models"].filter(pl.col("method") != "dense")["model_id"]
    joined = demo["metrics"].filter(pl.col("model_id").is_in(pruned.implode())).join(
        demo["metrics"].filter(pl.col("model_id") == "dense-s0").select("condition_id", "sample_id", "correct"),
        on=["condition_id", "sample_id"], suffix="_dense",
    )  # fmt: skip
    counts = joined.group_by("sample_id").agg((pl.col("correct_dense") & ~pl.col("correct")).sum().alias("n"))
    assert values(marker["color"]).max() == counts["n"].max()


def test_filters_come_from_the_url_and_go_back_into_it(monkeypatch, demo):
    at = page(monkeypatch, "views/overview.py", query={"methods": "dense,magnitude,imp", "sparsity": "0.8-0.95"})
    table = next(t.value for t in at.dataframe if "model_id" in t.value.columns)
    expected = demo["models"].filter(
        (pl.col("method") == "dense")
        | (pl.col("method").is_in(["magnitude", "imp"]) & pl.col("target_sparsity").is_between(0.8, 0.95))
    )
    assert sorted(table["model_id"]) == sorted(expected["model_id"])

    at.multiselect(key="f_methods").set_value(["dense", "snip"]).run()
    assert at.query_params["methods"] in ("dense,snip", ["dense,snip"])
    table = next(t.value for t in at.dataframe if "model_id" in t.value.columns)
    assert set(table["method"]) == {"dense", "snip"}
    at.multiselect(key="f_families").set_value(["noise"]).run()
    assert at.query_params["families"] in ("noise", ["noise"])
    at = page(monkeypatch, "views/overview.py", query={"families": "noise", "overview_view": "By corruption family"})
    heat = figure_titled(at, "Accuracy by corruption family")["data"][0]
    assert heat["x"] == ["clean", "noise"]


@pytest.mark.parametrize("path", list(PAGES))
@pytest.mark.parametrize(
    "query",
    [{"sparsity": "0.96-1"}, {"families": "extra", "severities": "5"}, {"methods": "dense"}],
    ids=["only-dense-by-sparsity", "one-family-one-severity", "only-dense-by-method"],
)
def test_narrow_filters_give_messages_not_errors(monkeypatch, path, query):
    at = page(monkeypatch, path, query=query)
    assert texts(at, "title") == [PAGES[path][0]]


@pytest.mark.parametrize("view", ["Corruption-fragile", "Pruning identified exemplars", "Robust"])
@pytest.mark.parametrize(
    "query,message",
    [({"methods": "dense"}, "pruned model"), ({"families": "extra", "severities": "5"}, None)],
    ids=["only-dense", "one-family-one-severity"],
)
def test_every_fragile_tab_takes_narrow_filters(monkeypatch, view, query, message):
    at = page(monkeypatch, "views/fragile.py", query={**query, "fragile_view": view})
    infos = texts(at, "info")
    if message and view == "Pruning identified exemplars":
        assert any(message in t for t in infos) and not at.dataframe
    else:
        assert len(at.dataframe) == 1 and len(at.dataframe[0].value) > 0


def test_geometry_says_when_it_shows_a_subset_of_samples(monkeypatch, demo):
    from dashboard import queries, store

    monkeypatch.setattr(queries, "GEOMETRY_POINTS", 2 * 2 * 20)  # two models, two conditions, 20 samples
    store._cached_call.cache_clear()
    try:
        at = page(monkeypatch, "views/geometry.py")
        at.multiselect(key="geometry_models").set_value(["dense-s0", "imp-0.9-s0"]).run()
        notes = [t for t in texts(at, "caption") if "evenly spaced" in t]
        total = demo["metrics"]["sample_id"].n_unique()
        assert notes[0] == f"An evenly spaced 20 of the {total} samples, to keep the view interactive."
        fig = figure_titled(at, "per model")
        clean_box = next(t for t in fig["data"] if t["name"] == "clean")
        assert len(values(clean_box["y"])) == 2 * 20
    finally:
        store._cached_call.cache_clear()


def test_model_tables_show_each_models_training_budget(demo, demo_page):
    import json

    config = json.loads((DEMO / schema.MANIFEST).read_text())["config"]
    expected = {  # by the definition: every epoch behind a model, dense training included
        "dense": config["epochs"],
        "magnitude": config["epochs"] + config["finetune_epochs"],
        "snip": config["sparse_epochs"] or config["epochs"],
        "edge_popup": config["supermask_epochs"] or config["epochs"],
    }
    for path in ("views/overview.py", "views/methods.py"):
        at = demo_page(path)
        table = next(t.value for t in at.dataframe if "train_epochs" in t.value.columns)
        budgets = dict(zip(table["model_id"], table["train_epochs"], strict=True))
        for model_id, method in demo["models"].select("model_id", "method").iter_rows():
            if method in expected:
                assert budgets[model_id] == expected[method], (path, model_id)
        assert budgets["snip-0.9-s0"] == budgets["dense-s0"]  # equal budgets from initialisation


def test_overview_takes_its_dense_references_from_the_parents_whatever_the_methods(monkeypatch, demo):
    # the README's own example link: dense is not among the selected methods
    query = {"methods": "imp,snip", "sparsity": "0.8-0.95", "families": "noise,blur", "severities": "3,5"}
    at = page(monkeypatch, "views/overview.py", query=query)
    dense = demo["models"].filter(pl.col("model_id") == "dense-s0")["clean_accuracy"][0]
    shown = next(m for m in at.metric if m.label == "Dense clean accuracy").value
    assert shown == f"{dense:.1%}"
    table = next(t.value for t in at.dataframe if "model_id" in t.value.columns)
    assert set(table["method"]) == {"imp", "snip"}


@pytest.mark.parametrize("path", list(PAGES))
def test_unusable_address_values_never_break_a_page(monkeypatch, path):
    query = {"severities": "\u00b2", "sparsity": "9" * 10_000, "methods": "\u00b2", "sample": "\u00b2"}
    page(monkeypatch, path, query=query)
    page(monkeypatch, path, query={"sample": "7" * 10_000})


def test_an_unknown_snapshot_name_falls_back_to_demo_and_says_so(monkeypatch):
    at = page(monkeypatch, "views/overview.py", query={"snapshot": "nonexistent"})
    assert any("No snapshot named `nonexistent`" in t and "showing `demo`" in t for t in texts(at, "info"))


@pytest.mark.parametrize("methods", ["dense", "dense,magnitude"])
def test_no_corruption_correlation_of_accuracy_profiles_below_three_models(monkeypatch, methods):
    query = {"methods": methods, "sparsity": "0.9-0.9", "corruptions_view": "Redundant corruptions"}
    at = page(monkeypatch, "views/corruptions.py", query=query)
    assert any("needs at least 3 models" in t for t in texts(at, "info"))
    titles = [f["layout"].get("title", {}).get("text", "") for f in figures(at)]
    assert not any("Corruption correlation" in t for t in titles)


def test_overview_follows_the_family_and_severity_filters(monkeypatch, demo):
    at = page(monkeypatch, "views/overview.py", query={"families": "weather", "severities": "3,5"})
    chosen = demo["conditions"].filter(
        pl.col("corruption").is_in(list(schema.BENCHMARK_CORRUPTIONS))
        & (pl.col("family") == "weather")
        & pl.col("severity").is_in([3, 5])
    )["condition_id"]
    rows = demo["summary"].filter((pl.col("model_id") == "dense-s0") & pl.col("condition_id").is_in(chosen.implode()))
    expected = rows["accuracy"].cast(pl.Float64).mean()
    shown = next(m for m in at.metric if m.label == "Dense mean corruption accuracy").value
    assert shown == f"{expected:.1%}" and len(chosen) == 6  # snow, frost, fog at severities 3 and 5
    table = next(t.value for t in at.dataframe if "mean_corruption_accuracy" in t.value.columns)
    assert table.set_index("model_id")["mean_corruption_accuracy"]["dense-s0"] == pytest.approx(expected)
    assert any("the 6 conditions" in c for c in texts(at, "caption"))
    # only extras selected: no benchmark condition to average, and no crash
    at = page(monkeypatch, "views/overview.py", query={"families": "extra"})
    assert next(m for m in at.metric if m.label == "Dense mean corruption accuracy").value == "—"


@pytest.mark.parametrize("path", list(PAGES))
@pytest.mark.parametrize(
    "query",
    [
        {"methods": "imp,snip"},  # dense unselected
        {"methods": "magnitude", "sparsity": "0.9-0.9"},  # one model
        {"methods": "x\u00b2", "sparsity": "a-b", "families": "\u00b2", "severities": "-1", "snapshot": "\u00b2",
         "sample": "-3", "fragile_view": "\u00b2", "overview_view": "\u00b2", "corruptions_view": "x",
         "geometry_view": "-1", "sample_view": "\u00b2"},  # fmt: skip
    ],
    ids=["dense-unselected", "one-model", "nonsense-everywhere"],
)
def test_every_page_opens_without_dense_with_one_model_and_with_nonsense(monkeypatch, path, query):
    page(monkeypatch, path, query=query)


#: the pages whose sections are tabs that only run when open, and their tabs
TABS = {
    "views/overview.py": ("overview_view", ["Against sparsity", "By corruption family"]),
    "views/corruptions.py": ("corruptions_view", ["Severity curves", "Redundant corruptions", "Similar models"]),
    "views/geometry.py": ("geometry_view", ["Angle and length", "How pruning moved each sample", "Class directions"]),
    "views/sample.py": ("sample_view", ["Under each corruption", "Where the models look", "Across severities"]),
    "views/fragile.py": ("fragile_view", ["Corruption-fragile", "Pruning identified exemplars", "Robust"]),
}


@pytest.mark.parametrize("path,key,tab", [(p, k, t) for p, (k, tabs) in TABS.items() for t in tabs])
@pytest.mark.parametrize(
    "query", [{"methods": "imp,snip"}, {"methods": "magnitude", "sparsity": "0.9-0.9"}], ids=["no-dense", "one-model"]
)
def test_every_tab_opens_without_dense_and_with_one_model(monkeypatch, path, key, tab, query):
    at = page(monkeypatch, path, query={**query, key: tab})
    assert not [c for c in texts(at, "caption") if f"{key}=" in c], "the tab was found"


def test_values_the_address_cannot_use_are_named_in_a_notice(monkeypatch):
    at = page(monkeypatch, "views/overview.py", query={"methods": "imp,nope", "severities": "3,\u00b2"})
    assert any("methods=nope; severities=\u00b2" in c for c in texts(at, "caption"))
    assert at.multiselect(key="f_methods").value == ["imp"] and at.multiselect(key="f_severities").value == [3]
    at = page(monkeypatch, "views/sample.py", query={"sample": "\u00b2"})
    assert any("No sample `\u00b2`" in c for c in texts(at, "caption"))


def test_a_single_severity_keeps_its_images_beside_their_labels(monkeypatch, demo):
    stored = int(pl.read_parquet(DEMO / schema.THUMBNAILS, columns=["sample_id"])["sample_id"].min())
    at = page(monkeypatch, "views/sample.py",
              query={"sample": str(stored), "severities": "5", "sample_view": "Under each corruption"})  # fmt: skip
    rows = [at.columns[i : i + 6] for i, c in enumerate(at.columns) if c.weight == pytest.approx(2 / 7)]
    assert len(rows) == 19  # one row per corruption: a label column and five equal image columns
    for row in rows:
        kinds = [[type(e).__name__ for e in c.children.values()] for c in row]
        assert kinds == [["Markdown"], ["Image"], [], [], [], []], "the image sits next to its label"


def test_overview_puts_the_dense_star_on_top_fits_its_axes_and_ranks_the_table(demo, demo_page):
    at = demo_page("views/overview.py")
    scatter = figure_titled(at, "Clean accuracy against mean corruption accuracy")
    assert scatter["data"][-1]["name"] == "dense", "drawn last, so no marker hides it"
    models = demo["models"]
    mca = hand_mean_corruption_accuracy(DEMO)
    x_range, y_range = scatter["layout"]["xaxis"]["range"], scatter["layout"]["yaxis"]["range"]
    assert x_range[0] <= models["clean_accuracy"].min() and models["clean_accuracy"].max() <= x_range[1] <= 1.01
    assert y_range[0] <= min(mca.values()) and max(mca.values()) <= y_range[1]
    assert y_range[0] > min(mca.values()) - 0.1, "the axis starts near the data, not at a round number far below"
    table = next(t for t in (element.value for element in at.dataframe) if "model_id" in t.columns)
    assert list(table.columns[:6]) == [
        "model_id", "method", "target_sparsity", "clean_accuracy", "mean_corruption_accuracy",
        "relative_robustness_pts",
    ]  # fmt: skip
    parents = dict(models.select("model_id", "parent_id").iter_rows())
    want = {m: 100 * (mca[m] - mca[parents[m]]) for m in mca}
    assert table["relative_robustness_pts"].tolist() == sorted(table["relative_robustness_pts"], reverse=True)
    for model, shown in zip(table["model_id"], table["relative_robustness_pts"], strict=True):
        assert shown == pytest.approx(want[model], abs=1e-4)


def test_a_dense_only_view_keeps_its_axes_near_the_data(monkeypatch, demo):
    at = page(monkeypatch, "views/overview.py", query={"methods": "dense"})
    scatter = figure_titled(at, "Clean accuracy against mean corruption accuracy")
    for axis in ("xaxis", "yaxis"):
        low, high = scatter["layout"][axis]["range"]
        assert high <= 1.01 and high - low < 0.1, (axis, low, high)


def hand_telling_condition(demo, model_ids) -> int:
    rows = demo["summary"].filter(pl.col("model_id").is_in(list(model_ids)) & (pl.col("condition_id") != 0))
    spread = {c: float(np.std(g["accuracy"].to_numpy())) for (c,), g in rows.group_by("condition_id")}
    return min(spread, key=lambda c: (-spread[c], c))


def test_single_condition_views_open_where_the_models_differ_most(monkeypatch, demo, demo_page):
    at = page(monkeypatch, "views/methods.py")
    at.selectbox(key="methods_measure").set_value("one corruption and severity").run()
    want = demo["conditions"].filter(pl.col("condition_id") == hand_telling_condition(demo, demo["models"]["model_id"]))
    assert (at.selectbox(key="methods_corruption").value, at.selectbox(key="methods_severity").value) == (
        want["corruption"][0], want["severity"][0]
    )
    assert want["severity"][0] > 1 or want["corruption"][0] != "gaussian_noise"  # not the mildest condition
    at = demo_page("views/geometry.py")
    chosen = at.multiselect(key="geometry_models").value
    assert at.selectbox(key="geometry_condition").value == hand_telling_condition(demo, chosen)


def test_angle_length_plots_span_the_angles_the_data_has(demo, demo_page):
    at = demo_page("views/geometry.py", query={"geometry_view": "Angle and length"})
    fig = figure_titled(at, "Length against angle to the true class")
    angles = np.concatenate([values(t["theta"]) for t in fig["data"] if len(t.get("theta", []))])
    for polar in ("polar", "polar2"):
        low, high = fig["layout"][polar]["sector"]
        assert low <= angles.min() and angles.max() <= high and high - low >= 30
        assert low > angles.min() - 10 and high < angles.max() + 10  # out to whole tens, no further
    assert (low, high) != (0, 180)


def mean_accuracy(demo, model_id, corruption) -> float:
    ids = demo["conditions"].filter(pl.col("corruption") == corruption)["condition_id"]
    rows = demo["summary"].filter((pl.col("model_id") == model_id) & pl.col("condition_id").is_in(ids.implode()))
    return float(rows["accuracy"].cast(pl.Float64).mean())


def test_prune_potential_and_excess_error_match_their_definitions(monkeypatch, demo):
    at = page(monkeypatch, "views/potential.py")
    heat = figure_titled(at, "Prune potential within 1 pts")["data"][0]
    z = values(heat["z"])
    models = demo["models"]
    for method in ("magnitude", "snip", "edge_popup"):
        for corruption in ("clean", "fog", "contrast"):
            dense = mean_accuracy(demo, "dense-s0", corruption)
            grid = models.filter(pl.col("method") == method).select("model_id", "target_sparsity").iter_rows()
            passing = [s for m, s in grid if mean_accuracy(demo, m, corruption) >= dense - 0.01 - 1e-9]
            want = max(passing, default=0.0)
            got = z[heat["y"].index(method), heat["x"].index(corruption)]
            if dense < 0.1 + 0.1:  # the dense parent within 10 pts of chance (10 classes): marked, not coloured
                assert np.isnan(got), (method, corruption)
            else:
                assert got == pytest.approx(100 * want), (method, corruption)
    at.slider(key="potential_delta").set_value(10.0).run()
    assert "within 10 pts" in figure_titled(at, "Prune potential within")["layout"]["title"]["text"]
    excess = figure_titled(at, "Excess error per model")["data"][0]
    for model in ("imp-0.9-s0", "biprop-0.5-s0"):
        for corruption in ("fog", "gaussian_noise"):
            change = mean_accuracy(demo, model, "clean") - mean_accuracy(demo, model, corruption)
            dense_change = mean_accuracy(demo, "dense-s0", "clean") - mean_accuracy(demo, "dense-s0", corruption)
            got = values(excess["z"])[excess["y"].index(model), excess["x"].index(corruption)]
            assert got == pytest.approx(100 * (change - dense_change), abs=1e-4)


def test_per_class_accuracy_relative_to_dense_matches_a_hand_count(demo, demo_page):
    at = demo_page("views/classes.py")
    heat = figure_titled(at, "Accuracy per class on clean images relative to the dense model")["data"][0]
    labels = pl.read_parquet(DEMO / schema.SAMPLES, columns=["sample_id", "label"])
    clean = demo["metrics"].filter(pl.col("condition_id") == 0).join(labels, on="sample_id")

    def per_class(model):
        rows = clean.filter(pl.col("model_id") == model)
        return {c: float(g["correct"].mean()) for (c,), g in rows.group_by("label")}

    dense = per_class("dense-s0")
    for model in ("snip-0.95-s0", "l1_filter-0.9-s0"):
        mine = per_class(model)
        for c in (3, 8):
            got = values(heat["z"])[heat["y"].index(model), heat["x"].index(str(c))]
            assert got == pytest.approx(100 * (mine[c] - dense[c]), abs=1e-4)
    assert "dense-s0" not in heat["y"]
    table = next(t for t in (e.value for e in at.dataframe) if "mean_vs_dense_pts" in t.columns)
    assert table["mean_vs_dense_pts"].tolist() == sorted(table["mean_vs_dense_pts"])  # most hurt first


def hand_mcnemar(demo, model, condition) -> float:
    from scipy import stats

    rows = demo["metrics"].filter(pl.col("condition_id") == condition)
    mine = dict(rows.filter(pl.col("model_id") == model).select("sample_id", "correct").iter_rows())
    dense = dict(rows.filter(pl.col("model_id") == "dense-s0").select("sample_id", "correct").iter_rows())
    b = sum(dense[s] and not mine[s] for s in mine)
    c = sum(mine[s] and not dense[s] for s in mine)
    return 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue


def test_models_tables_mark_differences_mcnemar_finds_significant(monkeypatch, demo, demo_page):
    at = demo_page("views/overview.py")
    table = next(t for t in (e.value for e in at.dataframe) if "clean_p" in t.columns).set_index("model_id")
    for model in ("edge_popup-0.95-s0", "biprop-0.95-s0", "magnitude-0.5-s0"):
        want = hand_mcnemar(demo, model, 0)
        assert table.loc[model, "clean_p"] == pytest.approx(want, rel=1e-9)
        assert (table.loc[model, "significant"] == "✱") == (want < 0.05)
    assert (table["significant"] == "✱").any() and (table["significant"] == "").any()

    at = page(monkeypatch, "views/methods.py")
    at.selectbox(key="methods_measure").set_value("one corruption and severity").run()
    at.selectbox(key="methods_corruption").set_value("fog").run()
    at.selectbox(key="methods_severity").set_value(3).run()
    table = next(t for t in (e.value for e in at.dataframe) if "p_value" in t.columns).set_index("model_id")
    fog3 = condition_id(demo, "fog", 3)
    for model in ("imp-0.9-s0", "edge_popup-0.5-s0"):
        assert table.loc[model, "p_value"] == pytest.approx(hand_mcnemar(demo, model, fog3), rel=1e-9)
    at.selectbox(key="methods_measure").set_value("mean corruption accuracy").run()
    table = next(t for t in (e.value for e in at.dataframe) if "significant_conditions" in t.columns)
    row = table.set_index("model_id").loc["edge_popup-0.95-s0"]
    # the conditions of mean corruption accuracy: the 15 CIFAR-10-C corruptions, not the 4 extras
    corrupted = demo["conditions"].filter(pl.col("corruption").is_in(schema.BENCHMARK_CORRUPTIONS))
    corrupted = corrupted["condition_id"].to_list()
    assert row["tested_conditions"] == len(corrupted) == 75
    assert row["significant_conditions"] == sum(hand_mcnemar(demo, "edge_popup-0.95-s0", c) < 0.05 for c in corrupted)


@pytest.mark.parametrize("path", ["views/overview.py", "views/corruptions.py", "views/embedding.py", "views/sample.py"])
def test_filters_that_select_no_model_say_so(monkeypatch, path):
    at = run_app(monkeypatch, DEMO.parent, {"methods": "imp", "sparsity": "0.6-0.7"})
    if path != "views/overview.py":
        at.switch_page(path).run()
    assert not at.exception and not at.error, texts(at, "error")
    assert any("No model matches the filters" in i and "80%" in i for i in texts(at, "info"))


def test_only_the_extras_selected_says_there_is_no_mean_corruption_accuracy(monkeypatch):
    at = page(monkeypatch, "views/overview.py", query={"families": "extra"})
    assert any("No condition of the 15 CIFAR-10-C corruptions is selected" in c for c in texts(at, "caption"))
    scatter = figures(at)[0]
    assert "the extras do not count" in scatter["layout"]["annotations"][0]["text"]
    at = page(monkeypatch, "views/overview.py", query={"families": "extra", "overview_view": "Against sparsity"})
    at.radio(key="overview_measure").set_value("corrupted images (mean)").run()
    lines = figures(at)[0]
    assert "No condition of the 15 CIFAR-10-C corruptions" in lines["layout"]["annotations"][0]["text"]


def test_a_pruned_embedding_is_rotated_onto_its_dense_parents_axes(monkeypatch, demo):
    at = page(monkeypatch, "views/embedding.py")
    assert any("Choose a pruned model" in i for i in texts(at, "info"))  # dense-s0 has no parent to align to
    at.selectbox(key="embedding_model").set_value("snip-0.9-s0").run()
    at.toggle(key="embedding_moves").set_value(True).run()
    fig = figure_titled(at, "Aligned with the dense parent")
    table = pl.read_parquet(DEMO / schema.EMBEDDING)
    dense = table.filter(pl.col("model_id") == "dense-s0").sort("sample_id")
    mine = table.filter(pl.col("model_id") == "snip-0.9-s0").sort("sample_id")
    a = mine.select("x", "y").to_numpy().astype(float)
    b = dense.select("x", "y").to_numpy().astype(float)
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))  # Procrustes by its SVD solution
    want = (a - a.mean(0)) @ (u @ vt) + b.mean(0)
    left = [t for t in fig["data"] if t.get("xaxis", "x") == "x" and t["mode"] == "markers"]
    right = [t for t in fig["data"] if t.get("xaxis") == "x2" and t["mode"] == "markers"]
    got = {}
    for trace in right:
        for (sample, _), x, y in zip(trace["customdata"], values(trace["x"]), values(trace["y"]), strict=True):
            got[int(sample)] = (x, y)
    np.testing.assert_allclose([got[s] for s in mine["sample_id"]], want, atol=1e-4)
    shown_left = np.concatenate([values(t["x"]) for t in left])
    np.testing.assert_allclose(np.sort(shown_left), np.sort(b[:, 0]), atol=1e-5)
    assert np.linalg.norm(want - b) < np.linalg.norm(a - b)  # the rotation brings the two closer
    assert any(t["mode"] == "lines" and t.get("xaxis") == "x2" for t in fig["data"])  # the moves


def prim_tree(distances: np.ndarray) -> set[tuple[int, int]]:
    """Prim's algorithm, written out: the edges of the minimum spanning tree."""
    inside, edges = {0}, set()
    while len(inside) < len(distances):
        outside = [j for j in range(len(distances)) if j not in inside]
        i, j = min(((i, j) for i in inside for j in outside), key=lambda e: distances[e])
        edges.add((min(i, j), max(i, j)))
        inside.add(j)
    return edges


def test_the_model_map_places_models_by_their_standardised_geometry(demo, demo_page):
    at = demo_page("views/modelmap.py")
    fig = figure_titled(at, "Model map (PCA")
    wide = (
        demo["metrics"].select("model_id", "condition_id", "sample_id", "angle_true", "feat_norm", "geom_margin")
        .sort("model_id", "condition_id", "sample_id")
    )  # fmt: skip
    ids = sorted(demo["models"]["model_id"])
    matrix = np.stack([
        wide.filter(pl.col("model_id") == m).select("angle_true", "feat_norm", "geom_margin").to_numpy().ravel()
        for m in ids
    ]).astype(float)  # fmt: skip
    std = matrix.std(axis=0)
    z = np.where(std > 0, (matrix - matrix.mean(axis=0)) / np.where(std > 0, std, 1), 0.0)
    z = np.nan_to_num(z)
    centred = z - z.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    want = {m: u[k, :2] * s[:2] for k, m in enumerate(ids)}
    shown = {}
    for trace in fig["data"][1:]:
        for (model, *_), x, y in zip(trace["customdata"], values(trace["x"]), values(trace["y"]), strict=True):
            shown[model] = np.array([x, y])
    assert set(shown) == set(ids)
    signs = np.sign([shown[ids[0]][k] * want[ids[0]][k] for k in range(2)])  # PCA fixes axes up to their sign
    for m in ids:
        np.testing.assert_allclose(shown[m], signs * want[m], rtol=1e-4, atol=1e-3)
    # row by row: the same differences and sums as z[:, None] - z[None], without a models² x features array
    distances = np.stack([np.linalg.norm(z[k] - z, axis=-1) for k in range(len(z))])
    tree = fig["data"][0]["x"]
    assert len(tree) == 3 * (len(ids) - 1)  # one segment (two ends and a gap) per edge of the tree
    where = {round(float(shown[m][0]), 6): ids.index(m) for m in ids}
    ends = [where[round(float(x), 6)] for x in tree if x is not None]
    edges = {(min(a, b), max(a, b)) for a, b in zip(ends[::2], ends[1::2], strict=True)}
    assert edges == prim_tree(distances)


def test_models_picked_on_the_map_narrow_every_page(monkeypatch, demo):
    picked = "imp-0.9-s0,snip-0.9-s0,dense-s0"
    at = page(monkeypatch, "views/overview.py", query={"models": picked})
    table = next(t for t in (e.value for e in at.dataframe) if "model_id" in t.columns)
    assert sorted(table["model_id"]) == sorted(picked.split(","))
    assert any("picked on the model map" in c for c in texts(at, "caption"))
    at.button(key="f_models_clear").click().run()
    table = next(t for t in (e.value for e in at.dataframe) if "model_id" in t.columns)
    assert len(table) == demo["models"].height and "models" not in at.query_params


def test_per_layer_profiles_are_the_share_of_each_dense_layer_removed(demo, demo_page):
    at = demo_page("views/layers.py")
    fig = figure_titled(at, "Sparsity per layer at 95% target sparsity")
    layers = pl.read_parquet(DEMO / schema.LAYERS)
    dense = dict(layers.filter(pl.col("model_id") == "dense-s0").select("layer", "params").iter_rows())
    lines = {t["name"]: t for t in fig["data"]}
    assert set(lines) == set(demo["models"].filter(pl.col("target_sparsity") == 0.95)["model_id"])
    for model in ("l1_filter-0.95-s0", "snip-0.95-s0", "random-0.95-s0"):
        kept = dict(layers.filter(pl.col("model_id") == model).select("layer", "nonzero").iter_rows())
        line = lines[model]
        assert line["x"] == list(dense)  # network order
        np.testing.assert_allclose(values(line["y"]), [100 * (1 - kept[k] / dense[k]) for k in line["x"]], atol=1e-4)
    assert max(values(lines["l1_filter-0.95-s0"]["y"])) > 50  # dropped filters count as removed


def test_occlusion_maps_show_the_recorded_changes_over_the_image(demo, demo_page):
    occlusion = pl.read_parquet(DEMO / schema.OCCLUSION)
    sample = int(occlusion["sample_id"].min())
    at = demo_page("views/sample.py", query={"sample": str(sample), "sample_view": "Where the models look"})
    pruned = at.selectbox(key="occlusion_model").value  # the first pruned model in display order
    fig = figure_titled(at, f"Sample {sample}: occlusion")
    heats = [t for t in fig["data"] if t["type"] == "heatmap"]
    # dense and pruned, clean and corrupted
    assert len(heats) == 4 and sum(t["type"] == "image" for t in fig["data"]) == 4
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles[:2] == ["dense-s0 · clean", f"{pruned} · clean"] and pruned != "dense-s0"
    patch = 8
    for heat, model in zip(heats[:2], ("dense-s0", pruned), strict=True):
        rows = occlusion.filter((pl.col("sample_id") == sample) & (pl.col("model_id") == model)
                                & (pl.col("condition_id") == 0))  # fmt: skip
        z = values(heat["z"])
        for top, left, change in rows.select("row", "col", "d_angle_true").iter_rows():
            centre_y, centre_x = top + patch / 2 - 0.5, left + patch / 2 - 0.5
            i, j = list(values(heat["y"])).index(centre_y), list(values(heat["x"])).index(centre_x)
            assert z[i, j] == pytest.approx(change, abs=1e-5)


def test_model_diagnostics_reach_the_models_table(demo, demo_page):
    at = demo_page("views/overview.py")
    table = next(t for t in (e.value for e in at.dataframe) if "dead_relu" in t.columns).set_index("model_id")
    diagnostics = demo["models"].select("model_id", "dead_relu", "dist_init", "dist_dense")
    for model, dead, init, dense in diagnostics.iter_rows():
        assert table.loc[model, "dead_relu"] == pytest.approx(dead)
        assert table.loc[model, "dist_init"] == pytest.approx(init)
        assert table.loc[model, "dist_dense"] == pytest.approx(dense)
    assert table.loc["dense-s0", "dist_dense"] == 0.0


def test_a_version_2_snapshot_opens_and_says_what_to_run(monkeypatch, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(DEMO, old)
    (old / schema.LAYERS).unlink()
    (old / schema.OCCLUSION).unlink()
    pl.read_parquet(old / schema.MODELS).drop(list(schema.MODEL_DIAGNOSTICS)).write_parquet(old / schema.MODELS)
    manifest = json.loads((old / schema.MANIFEST).read_text())
    manifest["schema_version"] = 2
    manifest.pop("occlusion", None)
    (old / schema.MANIFEST).write_text(json.dumps(manifest))
    at = run_app(monkeypatch, tmp_path)
    assert not at.exception and not at.error, texts(at, "error")
    at.switch_page("views/layers.py").run()
    assert any("predates the per-layer table" in i for i in texts(at, "info"))
    sample = int(pl.read_parquet(old / schema.THUMBNAILS, columns=["sample_id"])["sample_id"].min())
    at = run_app(monkeypatch, tmp_path, {"sample": str(sample), "sample_view": "Where the models look"})
    at.switch_page("views/sample.py").run()
    assert not at.exception and any("--occlusion-samples" in i for i in texts(at, "info"))


def test_one_diverging_colour_convention_and_near_chance_cells(demo, demo_page):
    potential = demo_page("views/potential.py")
    classes = demo_page("views/classes.py")
    excess = figure_titled(potential, "Excess error per model")
    vs_dense = figure_titled(classes, "relative to the dense model")["data"][0]
    # worse than dense is red on every page: the top of excess error's scale, the bottom of a change's
    assert excess["data"][0]["colorscale"][-1][1] == vs_dense["colorscale"][0][1] == "rgb(103,0,31)"
    for colour_bar in (excess["data"][0]["colorbar"], vs_dense["colorbar"]):
        assert "blue: better than dense" in colour_bar["title"]["text"]
    # a cell where the model and its dense parent are both within 10 pts of chance is grey, not coloured
    z, grey = values(excess["data"][0]["z"]), values(excess["data"][1]["z"])
    rows, columns = excess["data"][0]["y"], excess["data"][0]["x"]
    marked = 0
    for i, model in enumerate(rows):
        for j, corruption in enumerate(columns):
            near = mean_accuracy(demo, model, corruption) < 0.2 and mean_accuracy(demo, "dense-s0", corruption) < 0.2
            assert np.isnan(z[i, j]) == near and (grey[i, j] == 1.0) == near, (model, corruption)
            marked += near
    assert marked > 0 and "≈ chance" in excess["data"][1]["text"][rows.index("biprop-0.95-s0")]


NO_PRUNED_PAGES = ["views/potential.py", "views/layers.py", "views/classes.py", "views/geometry.py",
                   "views/global_geometry.py", "views/fragile.py"]  # fmt: skip


@pytest.mark.parametrize("path", NO_PRUNED_PAGES)
def test_a_range_between_the_targets_is_named_not_blamed_on_the_selection(monkeypatch, path):
    tab = {"geometry_view": "How pruning moved each sample"} if path == "views/geometry.py" else {}
    at = page(monkeypatch, path, query={"sparsity": "0.6-0.7", **tab})
    infos = texts(at, "info")
    assert any("No pruned model's target sparsity lies in 60%–70%" in i and "50%, 80%, 90%, 95%" in i for i in infos)
    assert not any("Select at least one pruned model" in i for i in infos)


def test_only_dense_selected_gets_messages_not_degenerate_charts(monkeypatch):
    at = page(monkeypatch, "views/corruptions.py", query={"methods": "dense", "corruptions_view": "Similar models"})
    assert any("needs at least 2 models; 1 selected" in i for i in texts(at, "info"))
    assert not [f for f in figures(at) if "Prediction" in f["layout"].get("title", {}).get("text", "")]
    at = page(monkeypatch, "views/potential.py", query={"methods": "dense"})
    assert any("methods selected in the sidebar have no pruned model" in i for i in texts(at, "info"))
    at = page(monkeypatch, "views/overview.py", query={"methods": "dense"})
    scatter = figure_titled(at, "Clean accuracy against mean corruption accuracy")
    # one model: the axes span a few points, so their ticks show tenths instead of repeating whole percents
    for axis in ("xaxis", "yaxis"):
        lo, hi = scatter["layout"][axis]["range"]
        assert hi - lo < 0.1 and scatter["layout"][axis]["tickformat"] == ".1%"


def test_a_reversed_range_a_repeated_parameter_and_an_unknown_tab_get_a_notice(monkeypatch):
    at = page(monkeypatch, "views/overview.py", query={"sparsity": "0.99-0.5", "methods": ["imp", "snip"]})
    notice = next(c for c in texts(at, "caption") if "Left out of the filters" in c)
    assert "sparsity=0.99-0.5 (reversed" in notice and "methods given 2 times" in notice
    assert at.multiselect(key="f_methods").value == ["snip"] and at.slider(key="f_sparsity").value == (0.0, 1.0)
    at = page(monkeypatch, "views/fragile.py", query={"fragile_view": "nonsense"})
    assert any("fragile_view=nonsense" in c for c in texts(at, "caption"))


@pytest.mark.parametrize(("tab", "ranks"), [("Pruning-fragile", True), ("Pruning identified exemplars", False),
                                            ("Robust", False)])  # fmt: skip
def test_rank_by_shows_only_on_the_tabs_it_orders(monkeypatch, tab, ranks):
    at = page(monkeypatch, "views/fragile.py", query={"fragile_view": tab})
    assert ("fragile_rank" in [r.key for r in at.radio]) == ranks


def test_the_sample_picker_marks_which_samples_keep_images_and_maps(demo_page):
    at = demo_page("views/sample.py")
    with_images = set(pl.read_parquet(DEMO / schema.THUMBNAILS, columns=["sample_id"])["sample_id"])
    with_maps = set(pl.read_parquet(DEMO / schema.OCCLUSION, columns=["sample_id"])["sample_id"])
    assert 0 < len(with_maps) < len(with_images)
    for option in at.selectbox[0].options:
        sample = int(option.split(" · ")[0])
        assert ("· corrupted images" in option) == (sample in with_images), option
        assert ("· occlusion maps" in option) == (sample in with_maps), option


@pytest.mark.parametrize("path", list(PAGES))
def test_every_table_labels_its_columns_and_shows_one_precision_per_unit(demo_page, path):
    from tests.apphelpers import column_labels, shown_table

    at = demo_page(path)
    for element in at.dataframe:
        labels = column_labels(element)
        assert element.proto.placeholder == "—", "a missing number reads —, not None"
        data = element.value
        assert set(data.columns) <= set(labels), "every column has a label"
        assert all(label != name for name, label in labels.items() if "_" in name), labels  # no raw header
        for row in shown_table(element):
            for name, text in row.items():
                if name not in labels or text is None:
                    continue
                assert text not in ("None", "nan", "NaN") and not re.match(r"^-0(\.0+)?(?![\d.])", text), (name, text)
                if text.endswith(" %"):
                    assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d %", text), (name, text)
                if text.endswith(" pts"):
                    assert re.fullmatch(r"([+-]\d[\d,]*|0)\.\d pts", text), (name, text)


def test_sample_detail_follows_the_filters_and_keeps_the_dense_parent(monkeypatch, demo):
    sample = int(demo["metrics"]["sample_id"].min())
    query = {"sample": str(sample), "methods": "imp", "families": "noise,extra", "severities": "1,3"}
    at = page(monkeypatch, "views/sample.py", query=query)
    shown = ["dense-s0", *demo["models"].filter(pl.col("method") == "imp")["model_id"].to_list()]
    noise = demo["conditions"].filter((pl.col("family") == "noise") & pl.col("severity").is_in([1, 3]))
    rows = demo["metrics"].filter(pl.col("sample_id") == sample)
    pairs = rows.filter(pl.col("model_id").is_in(shown) & pl.col("condition_id").is_in(noise["condition_id"].implode()))
    assert pairs.height == len(shown) * 6  # 3 noise corruptions x 2 severities; the extras do not count
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Right under corruptions"] == f"{pairs['correct'].mean():.0%}"
    dense_p = rows.filter((pl.col("model_id") == "dense-s0") & (pl.col("condition_id") == 0))["p_true"][0]
    assert metrics["Dense parent's p(true class)"] == f"{dense_p:.2f}", "the parent stays without its method"
    heat = figure_titled(at, "every model's verdict")["data"][0]
    assert heat["x"][0] == "dense-s0" and set(heat["x"]) == set(shown)
    extras = demo["conditions"].filter((pl.col("family") == "extra") & pl.col("severity").is_in([1, 3]))
    assert len(heat["y"]) == 1 + noise.height + extras.height  # clean, and only the selected conditions

    at = page(monkeypatch, "views/sample.py", query={**query, "sample_view": "Across severities"})
    lines = figures(at)[0]["data"]
    assert {int(x) for trace in lines for x in values(trace["x"])} == {0, 1, 3}
    assert {trace["name"] for trace in lines} == {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                                                   "gaussian_blur", "spatter", "saturate"}  # fmt: skip


def test_class_directions_show_each_models_weight_norms_by_role(demo_page):
    at = demo_page("views/geometry.py", query={"geometry_view": "Class directions"})
    norms = figure_titled(at, "Class directions")
    classes = pl.read_parquet(DEMO / schema.CLASSES)
    for bar in norms["data"]:
        want = classes.filter(pl.col("model_id") == bar["name"]).sort("class")["weight_norm"].to_numpy()
        np.testing.assert_allclose(values(bar["y"]), want, rtol=1e-6)
        assert (bar["marker"]["pattern"]["shape"] == "") == (bar["name"] == "dense-s0")  # dense: plain bars
    angles = figure_titled(at, "Angle between class directions")["data"][0]
    assert values(angles["z"]).shape == (10, 10)
