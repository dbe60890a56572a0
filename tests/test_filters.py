"""The shared filters: URL round trip, tolerance of junk, and what they select."""

import polars as pl

from dashboard.filters import Filters, read_query

MODELS = pl.DataFrame(
    {
        "model_id": ["dense-s0", "magnitude-0.5-s0", "magnitude-0.9-s0", "snip-0.9-s0"],
        "method": ["dense", "magnitude", "magnitude", "snip"],
        "target_sparsity": [0.0, 0.5, 0.9, 0.9],
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
