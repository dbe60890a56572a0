"""Prune potential, excess error, McNemar's test and per-class accuracy against hand-worked cases
and scipy's binomial test."""

import polars as pl
import pytest
from scipy import stats

from dashboard import measures

MODELS = pl.DataFrame(
    {
        "model_id": ["dense-s0", "m-0.5-s0", "m-0.8-s0", "m-0.9-s0"],
        "method": ["dense", "m", "m", "m"],
        "seed": [0, 0, 0, 0],
        "target_sparsity": [0.0, 0.5, 0.8, 0.9],
        "parent_id": [None, "dense-s0", "dense-s0", "dense-s0"],
    }
)


def accuracy(rows: dict[str, dict[str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"model_id": m, "corruption": k, "accuracy": a} for m, by in rows.items() for k, a in by.items()]
    )


def test_prune_potential_is_the_sparsest_passing_model_even_past_a_failing_one():
    rows = measures.with_parent_accuracy(
        accuracy({
            "dense-s0": {"clean": 0.90, "fog": 0.60},
            "m-0.5-s0": {"clean": 0.89, "fog": 0.61},
            "m-0.8-s0": {"clean": 0.80, "fog": 0.50},
            "m-0.9-s0": {"clean": 0.885, "fog": 0.40},
        }),
        MODELS, key="corruption",
    )  # fmt: skip
    potential = lambda delta: dict(  # noqa: E731
        measures.prune_potential(rows, delta, key="corruption").select("corruption", "prune_potential").iter_rows()
    )
    # clean: 0.5 and 0.9 pass within 2 points, 0.8 fails: torchprune counts the sparsest that passes
    assert potential(0.02) == {"clean": 0.9, "fog": 0.5}
    # within half a point nothing passes on clean images (0.89 < 0.895), fog still at 0.5 (0.61 >= 0.595)
    assert potential(0.005) == {"clean": 0.0, "fog": 0.5}
    # within 15 points: fog passes at 0.8 (0.50 >= 0.45) but not at 0.9 (0.40)
    assert potential(0.15) == {"clean": 0.9, "fog": 0.8}


def test_excess_error_is_the_models_change_in_error_minus_the_dense_parents():
    table = measures.excess_error(
        accuracy({
            "dense-s0": {"clean": 0.90, "fog": 0.60},
            "m-0.5-s0": {"clean": 0.85, "fog": 0.45},
            "m-0.8-s0": {"clean": 0.80, "fog": 0.55},
            "m-0.9-s0": {"clean": 0.70, "fog": 0.40},
        }),
        MODELS,
    )  # fmt: skip
    got = dict(table.select("model_id", "excess_error").iter_rows())
    # dense loses 0.30 to fog; m-0.5 loses 0.40 (+0.10), m-0.8 loses 0.25 (-0.05), m-0.9 loses 0.30 (0)
    assert got == pytest.approx({"m-0.5-s0": 0.10, "m-0.8-s0": -0.05, "m-0.9-s0": 0.0})
    assert set(table["corruption"]) == {"fog"}


@pytest.mark.parametrize("b, c", [(0, 0), (1, 0), (5, 1), (3, 3), (12, 4), (0, 9), (40, 25)])
def test_mcnemar_p_equals_scipys_exact_binomial_test(b, c):
    p = measures.mcnemar_p(pl.Series([b]), pl.Series([c]))[0]
    want = 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert p == pytest.approx(want, rel=1e-12)


def test_discordant_pairs_count_per_model_and_condition():
    correct = {
        # sample:        0      1      2      3
        "dense-s0": [True, True, False, True],
        "m-0.5-s0": [True, False, True, False],
        "m-0.8-s0": [True, True, False, True],
    }
    metrics = pl.DataFrame(
        [
            {"model_id": m, "condition_id": 0, "sample_id": s, "correct": v}
            for m, values in correct.items()
            for s, v in enumerate(values)
        ]
    )
    from tests.test_queries import answers_of

    table = measures.discordant_pairs(answers_of(metrics), MODELS, list(correct), [0])
    rows = {r["model_id"]: r for r in table.iter_rows(named=True)}
    assert set(rows) == {"m-0.5-s0", "m-0.8-s0"}
    assert (rows["m-0.5-s0"]["only_dense_right"], rows["m-0.5-s0"]["only_pruned_right"]) == (2, 1)
    assert rows["m-0.5-s0"]["p_value"] == pytest.approx(1.0)  # 2 * P(X <= 1 | n=3) = 2 * 0.5 = 1
    same = rows["m-0.8-s0"]
    assert (same["only_dense_right"], same["only_pruned_right"], same["p_value"]) == (0, 0, 1.0)


def test_class_accuracy_pools_the_conditions_of_each_class():
    samples = pl.DataFrame({"sample_id": [0, 1, 2], "label": [0, 0, 1]})
    metrics = pl.DataFrame(
        {
            "model_id": ["a"] * 6,
            "condition_id": [0, 0, 0, 1, 1, 1],
            "sample_id": [0, 1, 2, 0, 1, 2],
            "correct": [True, False, True, True, True, False],
        }
    )
    from tests.test_queries import answers_of

    table = measures.class_accuracy(answers_of(metrics), samples, ["a"], [0, 1])
    assert dict(table.select("label", "accuracy").iter_rows()) == {0: 0.75, 1: 0.5}
    assert dict(table.select("label", "n").iter_rows()) == {0: 4, 1: 2}


def test_significance_by_model_counts_conditions_below_alpha():
    pairs = pl.DataFrame(
        {
            "model_id": ["a", "a", "a", "b"],
            "condition_id": [0, 1, 2, 0],
            "p_value": [0.01, 0.2, 0.049, 0.03],
        }
    )
    got = {r["model_id"]: r for r in measures.significance_by_model(pairs, 0.05).iter_rows(named=True)}
    assert (got["a"]["significant_conditions"], got["a"]["tested_conditions"], got["a"]["p_value"]) == (2, 3, None)
    assert (got["b"]["significant_conditions"], got["b"]["tested_conditions"], got["b"]["p_value"]) == (1, 1, 0.03)


def test_near_chance_cells_are_not_informative():
    # 10 classes: chance 10 %, "near chance" below 20 %
    acc = accuracy({
        "dense-s0": {"clean": 0.90, "contrast": 0.194, "frost": 0.30, "fog": 0.12},
        "m-0.5-s0": {"clean": 0.89, "contrast": 0.156, "frost": 0.25, "fog": 0.45},
        "m-0.8-s0": {"clean": 0.80, "contrast": 0.10, "frost": 0.19, "fog": 0.11},
        "m-0.9-s0": {"clean": 0.70, "contrast": 0.30, "frost": 0.05, "fog": 0.10},
    })  # fmt: skip
    excess = measures.excess_error(acc, MODELS, n_classes=10)
    informative = {(m, k): ok for m, k, ok in excess.select("model_id", "corruption", "informative").iter_rows()}
    # both below 20 %: not informative; one of the two above it: informative
    assert informative[("m-0.5-s0", "contrast")] is False and informative[("m-0.9-s0", "contrast")] is True
    assert informative[("m-0.8-s0", "frost")] is True  # the parent is at 30 %
    assert informative[("m-0.8-s0", "fog")] is False and informative[("m-0.5-s0", "fog")] is True
    # the value itself is kept (for the download), worked by hand: change of error minus the parent's
    got = dict(excess.filter(pl.col("corruption") == "contrast").select("model_id", "excess_error").iter_rows())
    assert got["m-0.5-s0"] == pytest.approx((0.89 - 0.156) - (0.90 - 0.194))
    # without a class count nothing is masked
    assert measures.excess_error(acc, MODELS)["informative"].all()

    rows = measures.with_parent_accuracy(acc, MODELS, key="corruption")
    potential = measures.prune_potential(rows, 0.01, key="corruption", n_classes=10)
    by = {k: (p, ok) for k, p, ok in potential.select("corruption", "prune_potential", "informative").iter_rows()}
    # the dense parent at 12 % on fog: models "pass" there (0.8 at 11 %), which says nothing
    assert by["fog"] == (pytest.approx(0.8), False)
    assert by["contrast"] == (pytest.approx(0.9), False)  # parent at 19.4 %, below 10 % + 10 pts
    assert by["frost"] == (pytest.approx(0.0), True)  # parent at 30 %: none within a point of it
