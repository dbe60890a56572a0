"""The shared filters: URL round trip, tolerance of junk, and what they select."""

import polars as pl

from dashboard.filters import Filters, read_query

MODELS = pl.DataFrame(
    {
        "model_id": ["dense-s0", "magnitude-0.5-s0", "magnitude-0.9-s0", "snip-0.9-s0"],
        "method": ["dense", "magnitude", "magnitude", "snip"],
        "target_sparsity": [0.0, 0.5, 0.9, 0.9],
        "parent_id": ["dense-s0"] * 4,
    }
)
CONDITIONS = pl.DataFrame(
    {
        "condition_id": [0, 1, 2, 3, 4],
        "corruption": ["clean", "fog", "fog", "contrast", "saturate"],
        "family": ["clean", "weather", "weather", "digital", "extra"],
        "severity": [0, 1, 5, 1, 1],
    }
)


def test_round_trip_through_the_url():
    f = Filters(methods=("magnitude",), sparsity=(0.5, 0.9), families=("weather",), severities=(5,))
    query = f.to_query()
    assert query == {"methods": "magnitude", "sparsity": "0.5-0.9", "families": "weather", "severities": "5"}
    assert Filters.from_query(query, MODELS, CONDITIONS) == f
    assert Filters().to_query() == {}  # the default view has a clean address


def test_junk_in_the_url_is_dropped_not_an_error():
    query = {"methods": "magnitude,nope", "sparsity": "banana", "families": "weather,space", "severities": "1,9,x"}
    f = Filters.from_query(query, MODELS, CONDITIONS)
    assert f.methods == ("magnitude",) and f.sparsity == (0.0, 1.0)
    assert f.families == ("weather",) and f.severities == (1,)
    assert Filters.from_query({"sparsity": ["0.2-0.4", "0.5-0.9"]}, MODELS, CONDITIONS).sparsity == (0.5, 0.9)
    assert Filters.from_query({"sparsity": "0.9-0.1"}, MODELS, CONDITIONS).sparsity == (0.0, 1.0)


def test_selection_keeps_dense_as_the_reference_and_clean_unless_asked():
    f = Filters(methods=("magnitude", "dense"), sparsity=(0.8, 1.0), families=("weather",), severities=(5,))
    assert f.select_models(MODELS)["model_id"].to_list() == ["dense-s0", "magnitude-0.9-s0"]
    assert f.select_conditions(CONDITIONS)["condition_id"].to_list() == [0, 2]
    assert f.select_conditions(CONDITIONS, clean=False)["condition_id"].to_list() == [2]
    assert Filters().select_models(MODELS).height == 4
    assert "sparsity 80%–100%" in f.describe() and Filters().describe() == "all models and conditions"


def test_numbers_that_only_look_like_numbers_are_dropped():
    # '²'.isdigit() holds but int('²') fails; int() refuses strings of more than 4,300 digits
    for value in ("\u00b2", "1" * 10_000, "\u0661", "5,\u00b2"):
        f = Filters.from_query({"severities": value, "sparsity": "1" * 10_000}, MODELS, CONDITIONS)
        assert f.severities in (None, (5,)) and f.sparsity == (0.0, 1.0)


def test_every_value_left_out_is_reported_once_as_given():
    query = {"methods": "magnitude,nope", "sparsity": "banana", "families": "weather,\u00b2"}
    query["severities"] = "1,9,\u00b2"
    f, ignored = read_query(query, MODELS, CONDITIONS)
    assert f == Filters(methods=("magnitude",), families=("weather",), severities=(1,))
    assert ignored == ["methods=nope", "families=\u00b2", "severities=9", "severities=\u00b2", "sparsity=banana"]
    assert read_query(f.to_query(), MODELS, CONDITIONS) == (f, [])
    long = read_query({"severities": "1" * 10_000}, MODELS, CONDITIONS)[1]
    assert long == ["severities=" + "1" * 20 + "…"]


def test_a_dense_model_is_found_by_its_parent_not_its_id_or_method():
    # as `prunescope evaluate` may write it: no id starts with "dense", the dense method has another label
    models = pl.DataFrame(
        {
            "model_id": ["resnet18-base", "pruned-a", "pruned-b"],
            "method": ["baseline", "custom", "custom"],
            "target_sparsity": [0.0, 0.5, 0.9],
            "parent_id": ["resnet18-base", "resnet18-base", "resnet18-base"],
        }
    )
    chosen = Filters(sparsity=(0.8, 1.0)).select_models(models)["model_id"].to_list()
    assert chosen == ["resnet18-base", "pruned-b"]  # the reference passes any sparsity range


def test_no_pruned_model_names_the_filter_at_fault():
    between = Filters(sparsity=(0.6, 0.7))
    assert between.select_models(MODELS)["model_id"].to_list() == ["dense-s0"]
    text = between.why_no_pruned(MODELS)
    assert "No pruned model's target sparsity lies in 60%–70%" in text and "50%, 90%" in text
    assert "methods" in Filters(methods=("dense",)).why_no_pruned(MODELS)
    assert "model map" in Filters(models=("dense-s0",)).why_no_pruned(MODELS)
    only_dense = MODELS.filter(pl.col("method") == "dense")
    assert "no pruned model" in Filters().why_no_pruned(only_dense)
    # the range is checked against the selected methods' targets only
    assert "targets: 50%" in Filters(methods=("magnitude",), sparsity=(0.6, 0.7)).why_no_pruned(MODELS)
    assert "targets: 90%)" in Filters(methods=("snip",), sparsity=(0.6, 0.7)).why_no_pruned(MODELS)


def test_a_reversed_range_and_a_repeated_parameter_are_named():
    f, ignored = read_query({"sparsity": "0.99-0.5"}, MODELS, CONDITIONS)
    assert f.sparsity == (0.0, 1.0)
    assert ignored == ["sparsity=0.99-0.5 (reversed: write the lower bound first)"]
    f, ignored = read_query({"methods": ["magnitude", "snip"]}, MODELS, CONDITIONS)
    assert f.methods == ("snip",)
    assert ignored == ["methods given 2 times (the last, snip, is used)"]
    f, ignored = read_query({"sparsity": ["0.2-0.4", "0.5-0.9"]}, MODELS, CONDITIONS)
    assert f.sparsity == (0.5, 0.9) and ignored == ["sparsity given 2 times (the last, 0.5-0.9, is used)"]
