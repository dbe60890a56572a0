"""Sample-level queries against small hand-built tables with known answers."""

import numpy as np
import polars as pl
import pytest

from dashboard import queries


def test_agreement_and_kappa_by_hand():
    a = [0, 0, 1, 1, 2, 2, 0, 1]
    b = [0, 1, 1, 1, 2, 0, 0, 2]
    agreement, kappa = queries.agreement_and_kappa(np.array([a, b, a]).T, n_classes=3)
    observed = np.mean(np.array(a) == np.array(b))  # 5 / 8
    pa = np.bincount(a, minlength=3) / 8
    pb = np.bincount(b, minlength=3) / 8
    expected = float(pa @ pb)
    assert agreement[0, 1] == pytest.approx(observed) and agreement[1, 0] == pytest.approx(observed)
    assert kappa[0, 1] == pytest.approx((observed - expected) / (1 - expected))
    assert agreement[0, 2] == 1.0 and kappa[0, 2] == pytest.approx(1.0)
    assert np.allclose(np.diag(agreement), 1.0)
    # the same single class everywhere: chance agreement is 1, kappa defined as 1
    _, k = queries.agreement_and_kappa(np.zeros((5, 2), dtype=int), n_classes=3)
    assert k[0, 1] == 1.0


def test_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    preds = rng.integers(0, 5, size=(200, 4))
    preds[:, 1] = np.where(rng.random(200) < 0.7, preds[:, 0], preds[:, 1])  # correlated pair
    _, kappa = queries.agreement_and_kappa(preds, n_classes=5)
    for i in range(4):
        for j in range(4):
            if i != j:
                assert kappa[i, j] == pytest.approx(cohen_kappa_score(preds[:, i], preds[:, j]))


@pytest.mark.parametrize("n", [2, 5, 12, 19])
def test_cluster_order_matches_scipy_average_linkage(n):
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    rng = np.random.default_rng(n)
    points = rng.normal(size=(n, 3))
    distance = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    expected = leaves_list(linkage(squareform(distance, checks=False), method="average")).tolist()
    assert queries.cluster_order(distance) == expected


def test_cluster_order_puts_similar_items_together():
    # two tight groups {0, 2} and {1, 3}
    distance = np.array([[0, 9, 1, 9], [9, 0, 9, 1], [1, 9, 0, 9], [9, 1, 9, 0]], dtype=float)
    order = queries.cluster_order(distance)
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1
    assert queries.cluster_order(np.zeros((1, 1))) == [0]


def test_correlation_distance_handles_constant_rows():
    d = queries.correlation_distance(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [5.0, 5.0, 5.0]]))
    assert d[0, 1] == pytest.approx(0.0) and d[0, 2] == pytest.approx(1.0) and d[2, 2] == 0.0


def preds_frame(table: dict[str, list[int]]) -> pl.DataFrame:
    """model -> predictions for samples 0..n-1 (clean condition)."""
    return pl.DataFrame(
        [{"model_id": m, "sample_id": i, "pred": p} for m, row in table.items() for i, p in enumerate(row)]
    )


def test_pie_modal_logic_with_ties():
    table = {
        "dense-s0": [1, 1, 1, 1],
        "dense-s1": [1, 2, 3, 1],
        "dense-s2": [1, 2, 7, 1],
        "p1": [2, 2, 3, 4],
        "p2": [2, 2, 1, 4],
        "p3": [1, 3, 3, 5],
    }
    pies = queries.pruning_identified_exemplars(
        preds_frame(table), ["dense-s0", "dense-s1", "dense-s2"], ["p1", "p2", "p3"]
    )
    rows = {r["sample_id"]: r for r in pies.iter_rows(named=True)}
    # sample 0: dense mode {1}, pruned mode {2} -> PIE
    assert rows[0]["dense_modal"] == [1] and rows[0]["pruned_modal"] == [2] and rows[0]["is_pie"]
    # sample 1: dense {2} (two of three), pruned {2} -> not a PIE
    assert rows[1]["dense_modal"] == [2] and not rows[1]["is_pie"]
    # sample 2: dense three-way tie {1, 3, 7}, pruned {3} -> the sets share 3: not a PIE
    assert rows[2]["dense_modal"] == [1, 3, 7] and rows[2]["pruned_modal"] == [3] and not rows[2]["is_pie"]
    # sample 3: dense {1}, pruned tie {4} (two votes) vs {5} -> {4}: PIE
    assert rows[3]["pruned_modal"] == [4] and rows[3]["is_pie"]
    assert rows[0]["pruned_share"] == pytest.approx(1 / 3)  # p3 gives the dense answer
    assert rows[2]["pruned_share"] == pytest.approx(1.0)  # every pruned model gives 1, 3 or 7


def answers_of(rows: pl.DataFrame, clean=(0,)):
    """Answers of hand-written per-sample rows, packed as the writers pack metrics/."""
    import pyarrow as pa

    from compute.answers import in_memory, model_answers

    if "pred" not in rows.columns:
        rows = rows.with_columns(pl.lit(0, dtype=pl.Int16).alias("pred"))
    ids = rows["model_id"].unique(maintain_order=True).to_list()
    samples = np.sort(rows["sample_id"].unique().to_numpy())
    table = pa.concat_tables(model_answers(m, rows.filter(pl.col("model_id") == m), samples, clean) for m in ids)
    return in_memory(table, ids, samples)


def test_pruning_fragility_counts_parent_right_pruned_wrong():
    models = pl.DataFrame(
        {
            "model_id": ["dense-s0", "a", "b"],
            "parent_id": ["dense-s0", "dense-s0", "dense-s0"],
            "method": ["dense", "magnitude", "snip"],
        }
    )
    rows = []
    correct = {  # (condition, sample) -> correctness of dense, a, b
        (0, 0): (True, False, False),
        (0, 1): (True, True, False),
        (1, 0): (False, False, True),
        (1, 1): (True, True, True),
    }
    for (c, s), flags in correct.items():
        for model, flag in zip(["dense-s0", "a", "b"], flags, strict=True):
            rows.append({"model_id": model, "condition_id": c, "sample_id": s, "correct": flag})
    answers = answers_of(pl.DataFrame(rows))
    table = queries.pruning_fragility(answers, models, ["dense-s0", "a", "b"], [0, 1])
    out = {r["sample_id"]: r for r in table.iter_rows(named=True)}
    assert out[0]["fragile"] == 2 and out[0]["chances"] == 2 and out[0]["pairs"] == 4
    assert out[1]["fragile"] == 1 and out[1]["chances"] == 4
    assert out[0]["fragile_rate"] == 1.0 and out[1]["fragile_rate"] == 0.25
    assert table["sample_id"].to_list() == [0, 1]  # ranked
    only_a = {r["sample_id"]: r for r in queries.pruning_fragility(answers, models, ["a"], [1]).iter_rows(named=True)}
    assert (only_a[0]["fragile"], only_a[0]["chances"], only_a[1]["fragile"], only_a[1]["pairs"]) == (0, 0, 0, 1)
    assert queries.pruning_fragility(answers, models, ["dense-s0"], [0, 1]).is_empty()  # no pruned model


def test_breaking_severity_is_the_lowest_failing_severity_given_clean_right():
    conditions = pl.DataFrame(
        {
            "condition_id": [0, 1, 2, 3, 4],
            "corruption": ["clean", "fog", "fog", "fog", "contrast"],
            "severity": [0, 1, 3, 5, 2],
        }
    )
    rows = []
    outcome = {  # sample -> correctness on conditions 0..4
        0: [True, True, False, False, True],  # fog breaks at 3, contrast never
        1: [True, False, True, False, False],  # fog breaks at 1 (not monotone), contrast at 2
        2: [False, False, False, False, False],  # wrong on clean: never counted
    }
    for sample, flags in outcome.items():
        for condition, flag in enumerate(flags):
            rows.append({"model_id": "m", "condition_id": condition, "sample_id": sample, "correct": flag})
    answers = answers_of(pl.DataFrame(rows))
    table = queries.corruption_fragility(answers, conditions, ["m"], [1, 2, 3, 4])
    summary = {r["sample_id"]: r for r in table.iter_rows(named=True)}
    assert summary[1]["broken"] == 2 and summary[1]["lowest_severity"] == 1 and summary[1]["mean_severity"] == 1.5
    assert summary[0]["broken"] == 1 and summary[0]["broken_rate"] == 0.5 and summary[0]["mean_severity"] == 3.0
    assert summary[0]["lowest_severity"] == 3 and summary[0]["pairs"] == 2
    assert summary[0]["first_to_break"] == "fog" and summary[1]["first_to_break"] == "fog"
    assert 2 not in summary
    # only the chosen severities count: without fog 1, sample 1 breaks under fog at 5 and contrast at 2
    table = queries.corruption_fragility(answers, conditions, ["m"], [2, 3, 4])
    summary = {r["sample_id"]: r for r in table.iter_rows(named=True)}
    assert summary[1]["lowest_severity"] == 2 and summary[1]["mean_severity"] == 3.5
    assert summary[1]["first_to_break"] == "contrast"
    unbroken = queries.corruption_fragility(answers, conditions, ["m"], [4])
    row = unbroken.filter(pl.col("sample_id") == 0).row(0, named=True)
    assert row["broken"] == 0 and row["lowest_severity"] is None and row["mean_severity"] is None
    assert row["first_to_break"] is None


def test_correlation_of_single_value_profiles_is_no_information():
    d = queries.correlation_distance(np.array([[0.5], [0.7], [0.9]]))
    assert np.array_equal(d, 1.0 - np.eye(3))


def test_corruption_fragile_samples_match_an_array_count_in_any_batch_size(monkeypatch):
    from compute import schema
    from dashboard import store
    from tests.conftest import DEMO

    snapshot = store.open_snapshot(DEMO)
    model_ids = tuple(snapshot.models["model_id"].to_list()[:7])
    conditions = snapshot.conditions.sort("condition_id")
    corrupted = tuple(conditions.filter(pl.col("corruption") != schema.CLEAN)["condition_id"].to_list())
    rows = (
        store.scan_metrics(snapshot, model_ids, columns=["correct"])
        .collect()
        .sort(pl.col("model_id").replace_strict({m: i for i, m in enumerate(model_ids)}), "condition_id", "sample_id")
    )
    correct = rows["correct"].to_numpy().reshape(len(model_ids), conditions.height, -1)  # model, condition, sample
    names = conditions["corruption"].to_numpy()
    severity = conditions["severity"].to_numpy()
    corruptions = [c for c in dict.fromkeys(names) if c != schema.CLEAN]
    clean_right = correct[:, 0, :]
    broken = np.zeros(correct.shape[2], int)
    lowest = np.full(correct.shape[2], 99)
    for name in corruptions:
        wrong = ~correct[:, names == name, :]  # model, severity 1..5, sample
        breaks = clean_right & wrong.any(axis=1)
        broken += breaks.sum(axis=0)
        first = severity[names == name][wrong.argmax(axis=1)]
        lowest = np.minimum(lowest, np.where(breaks, first, 99).min(axis=0))

    sample_ids = rows["sample_id"][: correct.shape[2]].to_list()
    expected = {s: (int(broken[i]), int(lowest[i])) for i, s in enumerate(sample_ids) if clean_right[:, i].any()}
    for batch_rows in (10**9, 1):  # everything at once; one model at a time
        monkeypatch.setattr(queries, "BATCH_CELLS", batch_rows)
        table = queries.corruption_fragile_samples(snapshot, model_ids, corrupted)
        got = {
            s: (b, low if low is not None else 99)
            for s, b, low in table.select("sample_id", "broken", "lowest_severity").iter_rows()
        }
        assert got == expected
        assert table["broken"].to_list() == sorted(table["broken"].to_list(), reverse=True)


def demo_grid(model_ids, column):
    """One metric of the demo as an array [model, condition, sample], read independently."""
    from compute import schema
    from compute.snapshot import scan_metrics
    from tests.conftest import DEMO

    rows = scan_metrics(DEMO).filter(pl.col("model_id").is_in(list(model_ids))).collect()
    order = {m: i for i, m in enumerate(model_ids)}
    rows = rows.sort(pl.col("model_id").replace_strict(order), "condition_id", "sample_id")
    conditions = pl.read_parquet(DEMO / schema.CONDITIONS).sort("condition_id")
    grid = rows[column].to_numpy().reshape(len(model_ids), conditions.height, -1)
    return grid, conditions, rows["sample_id"][: grid.shape[2]].to_list()


def test_prediction_matrix_is_the_pivot_and_thins_samples_evenly():
    from dashboard import store
    from tests.conftest import DEMO

    snapshot = store.open_snapshot(DEMO)
    model_ids = ["magnitude-0.9-s0", "dense-s0", "snip-0.5-s0"]
    preds, conditions, samples = demo_grid(model_ids, "pred")
    chosen = [5, 1, 3]
    full = queries.prediction_matrix(snapshot, model_ids, chosen)
    expected = preds[:, sorted(chosen), :].transpose(1, 2, 0).reshape(-1, len(model_ids))  # condition, sample
    np.testing.assert_array_equal(full, expected)

    thin = queries.prediction_matrix(snapshot, model_ids, chosen, max_cells=3 * 3 * 10)
    keep = np.linspace(0, len(samples) - 1, 10).astype(int)
    np.testing.assert_array_equal(thin, preds[:, sorted(chosen)][:, :, keep].transpose(1, 2, 0).reshape(-1, 3))


def test_corruption_correlation_is_pearson_of_severity_averaged_correctness_in_any_batch_size(monkeypatch):
    from compute import schema
    from dashboard import store
    from tests.conftest import DEMO

    snapshot = store.open_snapshot(DEMO)
    model_ids = snapshot.models["model_id"].to_list()[3:9]
    correct, conditions, _ = demo_grid(model_ids, "correct")
    chosen = conditions.filter(pl.col("severity").is_in([2, 5]) | (pl.col("corruption") == schema.CLEAN))
    names = [c for c in schema.CORRUPTION_FAMILIES if c != schema.CLEAN]
    matrix = np.stack(
        [
            correct[:, chosen.filter(pl.col("corruption") == name)["condition_id"].to_numpy(), :].mean(axis=1).ravel()
            for name in names
        ]
    )  # corruption x (model, sample)
    expected = np.corrcoef(matrix)
    for batch_cells in (10**9, 1):  # every model at once; one at a time
        monkeypatch.setattr(queries, "BATCH_CELLS", batch_cells)
        got_names, corr = queries.corruption_correlation(store.answers(snapshot), chosen, model_ids)
        assert got_names == names
        np.testing.assert_allclose(corr, expected, atol=1e-9)


def test_corruption_correlation_of_a_corruption_without_variance_is_zero():
    conditions = pl.DataFrame({"condition_id": [0, 1, 2, 3], "corruption": ["clean", "fog", "contrast", "snow"],
                               "severity": [0, 1, 1, 1]})  # fmt: skip
    outcome = {0: [True, True, True, True], 1: [True, False, False, True], 2: [True, True, False, True]}
    rows = pl.DataFrame([{"model_id": "m", "condition_id": c, "sample_id": s, "correct": flag}
                         for s, flags in outcome.items() for c, flag in enumerate(flags)])  # fmt: skip
    names, corr = queries.corruption_correlation(answers_of(rows), conditions, ["m"])
    assert names == ["snow", "fog", "contrast"]  # the benchmark's order
    fog, contrast = np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
    assert corr[1, 2] == pytest.approx(np.corrcoef(fog, contrast)[0, 1]) and corr[1, 2] == pytest.approx(0.5)
    assert corr[0, 1] == 0.0 and corr[0, 2] == 0.0 and corr[0, 0] == 1.0  # snow never fails: no variance


def test_metric_rows_thin_samples_before_reading():
    from dashboard import store
    from tests.conftest import DEMO

    snapshot = store.open_snapshot(DEMO)
    rows = queries.metric_rows(snapshot, ["dense-s0", "imp-0.9-s0"], [0, 7], ["feat_norm"], max_rows=2 * 2 * 25)
    samples = snapshot.samples["sample_id"].sort().to_list()
    assert rows.height == 100 and rows["sample_id"].n_unique() == 25
    assert set(rows["sample_id"]) == set(queries.evenly_spaced(samples, 25))
    assert {samples[0], samples[-1]} <= set(rows["sample_id"])
    everything = queries.metric_rows(snapshot, ["dense-s0"], [0], ["feat_norm"], max_rows=10**6)
    assert everything.height == len(samples)


def test_positions_of_strings_and_sorted_integers():
    assert queries.positions(pl.Series(["b", "a", "c", "b"]), ["c", "b", "a"]).tolist() == [1, 2, 0, 1]
    got = queries.positions(pl.Series([30, 10, 20], dtype=pl.Int16), [10, 20, 30])
    assert got.tolist() == [2, 0, 1] and got.dtype == np.int64
    many = [f"m{i}" for i in range(300)]  # past 256 names the codes must not wrap around
    assert queries.positions(pl.Series(["m299", "m0"]), many).tolist() == [299, 0]


def test_first_to_break_is_the_corruption_breaking_most_models_at_the_lowest_severity():
    conditions = pl.DataFrame(
        {"condition_id": [0, 1, 2, 3], "corruption": ["clean", "fog", "contrast", "fog"], "severity": [0, 1, 1, 2]}
    )
    outcome = {  # (model, sample) -> correctness on conditions 0..3
        ("m1", 0): [True, False, False, False],  # sample 0 at severity 1: fog breaks m1, contrast breaks m1 and m2
        ("m2", 0): [True, True, False, False],
        ("m1", 1): [True, False, True, True],  # sample 1: a tie at severity 1, one model each
        ("m2", 1): [True, True, False, True],
        ("m1", 2): [True, True, True, False],  # sample 2: only fog at severity 2
        ("m2", 2): [True, True, True, True],
    }
    rows = [
        {"model_id": model, "condition_id": c, "sample_id": sample, "correct": flag}
        for (model, sample), flags in outcome.items()
        for c, flag in enumerate(flags)
    ]
    answers = answers_of(pl.DataFrame(rows))
    whole = queries.corruption_fragility(answers, conditions, ["m1", "m2"], [1, 2, 3])
    first = dict(whole.select("sample_id", "first_to_break").iter_rows())
    # contrast breaks two models at severity 1, fog one: contrast, though fog comes first in the benchmark
    assert first[0] == "contrast"
    assert first[1] == "fog"  # a tie: the benchmark's order decides
    assert first[2] == "fog"
    # model by model, as the app goes through a large snapshot in batches, gives the same
    import dashboard.queries

    original, dashboard.queries.BATCH_CELLS = dashboard.queries.BATCH_CELLS, 1
    try:
        assert queries.corruption_fragility(answers, conditions, ["m1", "m2"], [1, 2, 3]).equals(whole)
    finally:
        dashboard.queries.BATCH_CELLS = original


def test_occlusion_panels_are_condition_major_with_each_model_once():
    conditions = pl.DataFrame(
        {"condition_id": [0, 4], "corruption": ["clean", "fog"], "severity": [0, 3]},
        schema={"condition_id": pl.Int16, "corruption": pl.String, "severity": pl.Int8},
    )
    occluded = pl.DataFrame(
        {"model_id": ["d", "d", "p", "p", "p"], "condition_id": [0, 4, 0, 4, 4], "d_angle_true": [1.0, 2, 3, 4, 5]}
    )
    panels = queries.occlusion_panels(occluded, conditions, {0: b"clean-png"}, [0, 4], ["d", "p", "d"])
    assert [title for title, _, _ in panels] == ["d · clean", "p · clean", "d · fog · 3", "p · fog · 3"]
    assert [image for _, image, _ in panels] == [b"clean-png", b"clean-png", None, None]
    assert [rows["d_angle_true"].to_list() for _, _, rows in panels] == [[1.0], [3.0], [2.0], [4.0, 5.0]]


def test_severity_curves_start_every_corruption_at_the_clean_value():
    rows = pl.DataFrame(
        {
            "model_id": ["m"] * 5,
            "corruption": ["clean", "fog", "fog", "snow", "snow"],
            "severity": [0, 2, 1, 1, 2],
            "p_true": [0.9, 0.5, 0.7, 0.6, 0.2],
        },
        schema_overrides={"severity": pl.Int8},
    )
    curves = queries.severity_curve_rows(rows, "p_true")
    assert curves.select("corruption", "severity", "p_true").rows() == [
        ("fog", 0, 0.9), ("fog", 1, 0.7), ("fog", 2, 0.5), ("snow", 0, 0.9), ("snow", 1, 0.6), ("snow", 2, 0.2),
    ]  # fmt: skip


def test_positions_index_each_value_in_the_ordered_list():
    """Hand-worked: ids and names to their places, in any order of the list."""
    assert queries.positions(pl.Series([7, 3, 7, 10], dtype=pl.Int32), [3, 7, 10]).tolist() == [1, 0, 1, 2]
    assert queries.positions(pl.Series([7, 3, 7, 10], dtype=pl.Int16), [10, 3, 7]).tolist() == [2, 1, 2, 0]
    assert queries.positions(pl.Series([0, 5]), [0, 5]).tolist() == [0, 1]
    assert queries.positions(pl.Series(["b", "a"]), ["b", "c", "a"]).tolist() == [0, 2]
