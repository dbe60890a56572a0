"""One answer everywhere: what every page prints for a model's clean accuracy, mean corruption
accuracy and change against its dense parent equals one independent computation from the
per-sample Parquet files (pyarrow and numpy, none of the app's code), on the demo, on a copy of
it whose dense model is renamed, and on a snapshot of `prunescope evaluate` whose models are named
freely. Roles come from models.parquet's parent_id only."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from compute import schema
from tests.apphelpers import figure_titled, run_app, texts, values
from tests.conftest import DEMO, run_cli

RENAMED = {"dense-s0": "reference-s0"}  # no id of the copy contains "dense"

MODELS_FILE = '''
import copy
import torch
from torch import nn
from torch.nn.utils import prune


def models():
    torch.manual_seed(0)
    base = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10)
    ).eval()
    out = [{"model_id": "base", "model": base, "method": "baseline"}]  # its own parent: the dense model
    for amount in (0.5, 0.8):
        child = copy.deepcopy(base)
        layers = [(m, "weight") for m in child.modules() if isinstance(m, nn.Conv2d)]
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
        out.append({"model_id": f"base-l1-{amount}", "model": child, "method": "torch_l1",
                    "family": "unstructured", "target_sparsity": amount, "parent_id": "base"})
    return out
'''


def rename_models(path: Path, names: dict[str, str]) -> None:
    """Rename models in every table, the metrics partitions and the manifest of a snapshot copy."""
    for table_path in path.glob("*.parquet"):
        table = pq.read_table(table_path)
        changed = False
        for column in ("model_id", "parent_id"):
            if column in table.column_names:
                renamed = [names.get(v, v) for v in table[column].to_pylist()]
                table = table.set_column(table.column_names.index(column), column, [renamed])
                changed = True
        if changed:
            pq.write_table(table, table_path)
    for old, new in names.items():
        (path / schema.METRICS_DIR / f"model_id={old}").rename(path / schema.METRICS_DIR / f"model_id={new}")
    manifest = json.loads((path / schema.MANIFEST).read_text())
    manifest["parents"] = {names.get(k, k): v for k, v in manifest.get("parents", {}).items()}
    (path / schema.MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> Path:
    """A data root with the demo, its renamed-dense copy and an evaluate snapshot."""
    root = tmp_path_factory.mktemp("consistency")
    shutil.copytree(DEMO, root / "demo")
    shutil.copytree(DEMO, root / "renamed")
    rename_models(root / "renamed", RENAMED)
    models_file = root / "freely_named.py"
    models_file.write_text(textwrap.dedent(MODELS_FILE))
    result = run_cli(
        "evaluate", "--models", str(models_file), "--dataset", "digits", "--n-test", "120",
        "--corruptions", "gaussian_noise,defocus_blur,fog,contrast,saturate", "--severities", "1,3,5",
        "--out", str(root / "evaluated"), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("renamed", "evaluated"):
        check = run_cli("validate", str(root / name))
        assert check.returncode == 0, check.stdout + check.stderr
    return root


def independent(path: Path) -> dict:
    """Per model: clean accuracy, mean corruption accuracy over the 15 CIFAR-10-C corruptions'
    conditions, both minus the dense parent's; per class counts. From the raw files only."""
    models = pq.read_table(path / schema.MODELS).to_pydict()
    conditions = pq.read_table(path / schema.CONDITIONS).to_pydict()
    samples = pq.read_table(path / schema.SAMPLES).to_pydict()
    clean = [c for c, k in zip(conditions["condition_id"], conditions["corruption"], strict=True) if k == "clean"]
    benchmark = {
        c for c, k in zip(conditions["condition_id"], conditions["corruption"], strict=True)
        if k in schema.BENCHMARK_CORRUPTIONS
    }  # fmt: skip
    label = dict(zip(samples["sample_id"], samples["label"], strict=True))
    out = {}
    for model in models["model_id"]:
        rows = pq.read_table(path / schema.METRICS_DIR / f"model_id={model}").to_pydict()
        cond, correct = np.asarray(rows["condition_id"]), np.asarray(rows["correct"], dtype=float)
        per_condition = {int(c): correct[cond == c].mean() for c in np.unique(cond)}
        clean_rows = cond == clean[0]
        by_class = {}
        for sample, right in zip(np.asarray(rows["sample_id"])[clean_rows], correct[clean_rows], strict=True):
            by_class.setdefault(label[int(sample)], []).append(right)
        out[model] = {
            "clean": per_condition[clean[0]],
            "mca": np.mean([a for c, a in per_condition.items() if c in benchmark]),
            "per_condition": per_condition,
            "sample_right": {
                (int(c), int(s)): bool(r)
                for c, s, r in zip(rows["condition_id"], rows["sample_id"], rows["correct"], strict=True)
            },
        }
    parent = dict(zip(models["model_id"], models["parent_id"], strict=True))
    for model, facts in out.items():
        facts["parent"] = parent[model] or model
        facts["clean_vs"] = facts["clean"] - out[facts["parent"]]["clean"]
        facts["mca_vs"] = facts["mca"] - out[facts["parent"]]["mca"]
        facts["target"] = dict(zip(models["model_id"], models["target_sparsity"], strict=True))[model]
        facts["method"] = dict(zip(models["model_id"], models["method"], strict=True))[model]
    counts = {c: list(samples["label"]).count(c) for c in set(samples["label"])}
    return {"models": out, "benchmark": benchmark, "clean": clean[0], "class_counts": counts}


def open_at(monkeypatch, root: Path, name: str, path: str, query: dict | None = None):
    at = run_app(monkeypatch, root, {"snapshot": name, **(query or {})})
    if path != "views/overview.py":
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at, "error")
    return at


def frame(at, index: int = 0):
    import polars as pl

    return pl.from_pandas(at.dataframe[index].value)


SNAPSHOTS = ["demo", "renamed", "evaluated"]


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_overview_and_method_comparison_print_the_one_definition(snapshots, monkeypatch, name):
    truth = independent(snapshots / name)
    models = truth["models"]

    at = open_at(monkeypatch, snapshots, name, "views/overview.py")
    table = frame(at)
    assert set(table["model_id"]) == set(models)
    for row in table.iter_rows(named=True):
        want = models[row["model_id"]]
        assert row["clean_accuracy"] == pytest.approx(want["clean"], abs=1e-6)
        assert row["mean_corruption_accuracy"] == pytest.approx(want["mca"], abs=1e-6)
        assert row["relative_robustness_pts"] == pytest.approx(100 * want["mca_vs"], abs=1e-4)
    dense = [m for m, f in models.items() if f["parent"] == m]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Dense clean accuracy"] == f"{np.mean([models[m]['clean'] for m in dense]):.1%}"
    assert shown["Dense mean corruption accuracy"] == f"{np.mean([models[m]['mca'] for m in dense]):.1%}"
    scatter = figure_titled(at, "Clean accuracy against mean corruption accuracy")
    for trace in scatter["data"]:
        for (model, *_), x, y in zip(trace["customdata"], values(trace["x"]), values(trace["y"]), strict=True):
            assert (x, y) == pytest.approx((models[model]["clean"], models[model]["mca"]), abs=1e-6)
        # the dense model is drawn as the dense reference whatever its id or method label
        assert (trace["marker"]["symbol"] == "star") == all(models[c[0]]["parent"] == c[0] for c in trace["customdata"])

    at = open_at(monkeypatch, snapshots, name, "views/methods.py")
    for measure, key, vs in (("clean images", "clean", "clean_vs"), ("mean corruption accuracy", "mca", "mca_vs")):
        at.selectbox(key="methods_measure").set_value(measure).run()
        assert not at.exception and not at.error
        for row in frame(at).iter_rows(named=True):
            want = models[row["model_id"]]
            assert row["accuracy"] == pytest.approx(want[key], abs=1e-6), (measure, row["model_id"])
            assert row["vs_dense_pts"] == pytest.approx(100 * want[vs], abs=1e-4), (measure, row["model_id"])
    assert any("the 15 CIFAR-10-C corruptions" in t or "CIFAR-10-C corruptions" in t for t in texts(at, "caption"))


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_per_class_prune_potential_and_sample_detail_agree(snapshots, monkeypatch, name):
    truth = independent(snapshots / name)
    models, counts = truth["models"], truth["class_counts"]

    # per class, weighted by the classes' sizes, gives back the clean and the mean corruption accuracy
    at = open_at(monkeypatch, snapshots, name, "views/classes.py")
    at.toggle(key="classes_relative").set_value(False).run()
    for on, key in (("clean images", "clean"), ("the selected corruptions", "mca")):
        at.radio(key="classes_on").set_value(on).run()
        heat = figure_titled(at, "Accuracy per class")["data"][0]
        z = values(heat["z"]) / 100
        names = heat["x"]
        class_names = pq.read_table(snapshots / name / schema.SAMPLES).to_pydict()
        label_of = dict(zip(class_names["class_name"], class_names["label"], strict=True))
        weights = np.asarray([counts[label_of[n]] for n in names], dtype=float)
        for i, model in enumerate(heat["y"]):
            assert (z[i] * weights).sum() / weights.sum() == pytest.approx(models[model][key], abs=1e-6), (on, model)

    # prune potential on clean images: the sparsest target within δ = 1 pt of the dense parent
    at = open_at(monkeypatch, snapshots, name, "views/potential.py")
    heat = figure_titled(at, "Prune potential within 1 pts")["data"][0]
    z = values(heat["z"])
    column = heat["x"].index("clean")
    n_classes = len(counts)
    for i, method in enumerate(heat["y"]):
        mine = [m for m, f in models.items() if f["method"] == method and f["parent"] != m]
        parents = {models[m]["parent"] for m in mine}
        within = [m for m in mine if models[m]["clean"] >= models[models[m]["parent"]]["clean"] - 0.01]
        passing = [models[m]["target"] for m in within]
        if all(models[p]["clean"] < 1 / n_classes + 0.10 for p in parents):
            assert np.isnan(z[i, column]), method  # near chance: marked, not coloured
        else:
            assert z[i, column] == pytest.approx(100 * max(passing, default=0.0), abs=1e-4), method

    # sample detail: how many models are right on the clean image and the share under corruptions
    sample = sorted(pq.read_table(snapshots / name / schema.SAMPLES)["sample_id"].to_pylist())[3]
    at = open_at(monkeypatch, snapshots, name, "views/sample.py", {"sample": str(sample)})
    shown = {m.label: m.value for m in at.metric}
    right = sum(f["sample_right"][(truth["clean"], sample)] for f in models.values())
    assert shown["Right on clean images"] == f"{right} of {len(models)} models"
    pairs = [f["sample_right"][(c, sample)] for f in models.values() for c in truth["benchmark"]]
    assert shown["Right under corruptions"] == f"{np.mean(pairs):.0%}"
    dense = [m for m, f in models.items() if f["parent"] == m]
    assert shown["Dense parent's p(true class)"] != "–" and dense


@pytest.mark.parametrize("name", ["renamed", "evaluated"])
def test_every_page_opens_and_finds_the_dense_model_by_its_role(snapshots, monkeypatch, name):
    truth = independent(snapshots / name)
    dense = {m for m, f in truth["models"].items() if f["parent"] == m}
    for path in ("views/geometry.py", "views/global_geometry.py", "views/embedding.py", "views/fragile.py",
                 "views/corruptions.py", "views/layers.py", "views/modelmap.py"):  # fmt: skip
        at = open_at(monkeypatch, snapshots, name, path)
        if path == "views/geometry.py":
            # the distributions open on a dense model against pruned ones, never a model against itself
            chosen = at.multiselect(key="geometry_models").value
            assert set(chosen) & dense and set(chosen) - dense
            at = open_at(monkeypatch, snapshots, name, path, {"geometry_view": "How pruning moved each sample"})
            moved = at.selectbox(key="geometry_shift_model").value
            assert moved not in dense
            title = figure_titled(at, "each sample's move")["layout"]["title"]["text"]
            assert re.search(r"From the dense model to", title)
        if path == "views/global_geometry.py":
            titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
            (dense_title,) = [t for t in titles if "(dense parent)" in t]
            assert any(dense_title.startswith(f"{m} (dense parent)") for m in dense)  # its parent, not itself
