"""Corruption breakdown: per-corruption accuracy, severity curves, redundancy, model similarity."""

import numpy as np
import polars as pl
import streamlit as st

from compute import schema
from dashboard import figures, queries, store, ui

view = ui.selection()
snapshot, filters, models, model_order, corrupted = (
    view.snapshot,
    view.filters,
    view.models,
    view.model_ids,
    view.corrupted,
)

st.title("Corruption breakdown")
st.caption(f"Showing {filters.describe()}.")
if corrupted.is_empty():
    st.info("No corrupted condition matches the filters: widen the corruption families or severities in the sidebar.")
    st.stop()


def per_corruption() -> None:
    """Accuracy per model and corruption, one severity or their mean."""
    left, right = st.columns([3, 2])
    severities = sorted(set(corrupted["severity"].to_list()))
    level = left.selectbox(
        "Severity",
        ["mean over the selected severities", *severities],
        key="corruptions_severity",
        format_func=lambda s: s if isinstance(s, str) else f"severity {s}",
    )
    relative = right.toggle("Relative to the dense model", key="corruptions_relative")
    chosen = corrupted if isinstance(level, str) else corrupted.filter(pl.col("severity") == level)
    matrix = queries.corruption_matrix(snapshot.summary, chosen, models, relative)
    corruption_order = [c for c in schema.CORRUPTION_FAMILIES if c in set(matrix["corruption"])]
    lookup = {(m, c): a for m, c, a in matrix.iter_rows()}
    z = [[lookup.get((m, c)) for c in corruption_order] for m in model_order]
    st.plotly_chart(
        figures.heatmap(
            z, corruption_order, model_order,
            "Accuracy per corruption" + (" relative to the dense model" if relative else ""),
            "change vs dense (points)" if relative else "accuracy (%)",
            diverging=relative, x_title="corruption", y_title="model",
        ),
        width="stretch",
    )  # fmt: skip
    ui.download_buttons(
        matrix.rename({"accuracy": "vs_dense"}).pipe(queries.in_points) if relative else matrix,
        "corruption-matrix-vs-dense" if relative else "corruption-matrix",
        key="corruptions_download",
    )


def severity_curves() -> None:
    """One model's accuracy against severity, per corruption."""
    model = st.selectbox("Model", model_order, key="corruptions_model")
    curves = queries.severity_curves(snapshot.summary, view.conditions, [model])
    st.plotly_chart(figures.severity_lines(curves, model), width="stretch")


def redundant_corruptions() -> None:
    """Which corruptions test the same thing: their correlation, clustered."""
    st.caption(
        "Correlation between corruptions, ordered by average-linkage clustering: blocks of high correlation "
        "are corruptions that rank the models alike (accuracy profiles) or trip up the same samples (per-sample)."
    )
    basis = st.radio(
        "Correlate",
        ["accuracy profiles over the models", "per-sample correctness"],
        horizontal=True,
        key="corruptions_basis",
    )
    if basis == "accuracy profiles over the models" and len(model_order) < 3:
        # a correlation over one or two values is undefined or always +-1: show nothing rather than a false 0
        st.info(
            f"Correlating accuracy profiles needs at least 3 models; {len(model_order)} selected. Select more "
            "models in the sidebar, or correlate per-sample correctness."
        )
    else:
        names, corr, order = store.cached(
            queries.corruption_similarity,
            snapshot,
            tuple(model_order),
            tuple(corrupted["condition_id"].to_list()),
            basis == "per-sample correctness",
        )
        ordered = [names[i] for i in order]
        matrix = np.asarray(corr)[np.ix_(order, order)]
        low = queries.colour_floor(matrix)
        st.caption(f"Colours span the correlations present, {low:+.1f} to +1; a diverging scale only below 0.")
        st.plotly_chart(
            figures.heatmap(
                matrix, ordered, ordered, f"Corruption correlation ({basis})", "correlation", diverging=low < 0,
                zrange=(low, 1.0), percent=False, x_title="corruption", y_title="corruption", hover="%{z:.2f}",
            ),
            width="stretch",
        )  # fmt: skip


def similar_models() -> None:
    """Which models predict alike: agreement or kappa, clustered."""
    left, right = st.columns(2)
    on = left.radio("On", ["clean images", "the selected corrupted conditions"], horizontal=True, key="corruptions_on")
    statistic = right.radio("Statistic", ["agreement", "Cohen's kappa"], horizontal=True, key="corruptions_stat")
    clean_ids = queries.clean_condition_ids(snapshot.conditions)
    condition_ids = clean_ids if on == "clean images" else corrupted["condition_id"].to_list()
    if len(model_order) < 2:  # a 1 x 1 matrix of a model with itself says nothing
        st.info(
            f"Comparing predictions needs at least 2 models; {len(model_order)} selected. Select more in the sidebar."
        )
        return
    agreement, kappa, order, rows = store.cached(
        queries.model_similarity, snapshot, tuple(model_order), tuple(condition_ids)
    )
    values = agreement if statistic == "agreement" else kappa
    ordered = [model_order[i] for i in order]
    thinned = " (an evenly spaced subset of the samples)" if rows < len(condition_ids) * snapshot.samples.height else ""
    st.caption(
        f"Pairwise over {rows:,} predictions (condition x sample) per model{thinned}; kappa discounts the agreement "
        "two models reach by chance from their own class frequencies. Ordered by clustering on disagreement."
    )
    st.plotly_chart(
        figures.heatmap(
            np.asarray(values)[np.ix_(order, order)], ordered, ordered, f"Prediction {statistic} between models",
            statistic, zrange=(float(np.nanmin(values)), 1.0), percent=False, x_title="model", y_title="model",
            hover="%{z:.3f}",
        ),
        width="stretch",
    )  # fmt: skip


# one section at a time: only the open tab is computed and drawn
ui.show_open_tab(
    {
        "Per corruption": per_corruption,
        "Severity curves": severity_curves,
        "Redundant corruptions": redundant_corruptions,
        "Similar models": similar_models,
    },
    key="corruptions_view",
)
