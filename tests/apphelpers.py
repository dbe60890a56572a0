"""Helpers for AppTest: run the app on a data root, read plotted values back."""

from __future__ import annotations

import base64
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO


def run_app(monkeypatch, data_root, query: dict | None = None) -> AppTest:
    monkeypatch.setenv("PRUNESCOPE_DATA", str(data_root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def open_page(monkeypatch, data_root, path: str, query: dict | None = None) -> AppTest:
    """The app opened at `path` (a file under views/), with no exception and no error on the page."""
    at = run_app(monkeypatch, data_root, query)
    if path != "views/overview.py":
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at, "error")
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(array) -> np.ndarray:
    """A plotly array, plain or base64-encoded ({'dtype', 'bdata'})."""
    if isinstance(array, dict) and "bdata" in array:
        flat = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        if "shape" in array:
            return flat.reshape([int(n) for n in str(array["shape"]).split(",")])
        return flat
    return np.asarray(
        [[np.nan if v is None else v for v in row] for row in array] if array and isinstance(array[0], list) else array,
        dtype=float,
    )


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(element.value) for element in getattr(at, kind)]


def figure_titled(at: AppTest, words: str) -> dict:
    """The one plotly figure whose title contains `words`."""
    found = [f for f in figures(at) if words in f["layout"].get("title", {}).get("text", "")]
    assert len(found) == 1, [f["layout"].get("title", {}).get("text") for f in figures(at)]
    return found[0]


def shown_table(element) -> list[dict[str, str]]:
    """A st.dataframe element's cells as the browser shows them (the Styler's display values)."""
    import io

    import pyarrow as pa

    raw = element.proto.arrow_data.styler.display_values
    return pa.ipc.open_stream(io.BytesIO(raw)).read_all().to_pylist() if raw else []


def column_labels(element) -> dict[str, str]:
    """Each column's label as the table's header shows it."""
    configs = json.loads(element.proto.columns or "{}")
    return {name: config.get("label", name) for name, config in configs.items() if name != "_index"}
