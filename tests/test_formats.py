"""Every table's cells: one unit and precision per kind of value, checked on hand-picked values."""

import math

import pytest

from dashboard import formats


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.8093, "percent", "80.9 %"),
        (0.814, "percent", "81.4 %"),  # one decimal beside one decimal, never 81.4 beside 80.93
        (1.0, "percent", "100.0 %"),
        (-0.0004, "percent", "0.0 %"),
        (-0.04, "pts", "0.0 pts"),  # a change that rounds to nothing never reads -0.0
        (0.04, "pts", "0.0 pts"),
        (2.25, "pts", "+2.2 pts"),  # Python rounds half to even: 2.25 is stored as 2.2499999...
        (-3.16, "pts", "-3.2 pts"),
        (-0.0333, "share_change", "-3.3 pts"),
        (12345678, "count", "12,345,678"),
        (0.0312, "p", "0.031"),
        (0.00004, "p", "< 0.001"),
        (83.26, "degrees", "83.3°"),
        (-0.001, "degrees", "0.0°"),
        (3.14159, "number", "3.14"),
        (-0.004, "number", "0.00"),
        (1234.5, "number", "1,234.50"),
        (math.inf, "number", "∞"),
        (None, "number", "—"),
        (math.nan, "percent", "—"),
        (None, "text", "—"),
        (True, "text", "yes"),
        ("conv1", "text", "conv1"),
    ],
)
def test_a_value_as_the_tables_show_it(value, kind, text):
    assert formats.shown(value, kind) == text


def test_every_column_has_a_label_and_a_kind():
    assert formats.column("worst_model").label == "most hurt by"  # no raw header
    assert formats.column("some_new_pts", "Float64").kind == "pts"
    assert formats.column("rows", "Int64").kind == "count"
    assert formats.column("ratio", "Float32") == formats.Column("ratio", "number")
    kinds = {"percent", "pts", "share_change", "count", "p", "degrees", "number", "text"}
    assert {c.kind for c in formats.COLUMNS.values()} <= kinds
    assert all(c.label != name for name, c in formats.COLUMNS.items() if "_" in name)
