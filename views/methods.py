"""Method comparison: accuracy against sparsity (or size) per method, on clean or corrupted images."""

import polars as pl
import streamlit as st

from compute import schema
from dashboard import figures, measures, queries, store, ui

view = ui.selection()
snapshot, filters, models, corrupted = view.snapshot, view.filters, view.models, view.corrupted

st.title("Method comparison")
st.caption(f"Each line is one method, the mean over seeds with min–max whiskers. Showing {filters.describe()}.")

MEASURES = ["clean images", "mean over the selected corruptions", "one corruption and severity"]
left, middle, right = st.columns([2, 2, 2])
measure = left.selectbox("Accuracy on", MEASURES, key="methods_measure")
x_axis = middle.selectbox(
    "x axis", list(queries.X_AXES), key="methods_x", format_func=lambda x: queries.X_AXES[x].split(" (")[0]
)
relative = right.toggle("Relative to the dense model", key="methods_relative")

clean_ids = queries.clean_condition_ids(snapshot.conditions)
if measure == MEASURES[0]:
    condition_ids, label = clean_ids, "clean accuracy"
elif measure == MEASURES[1]:
    condition_ids, label = corrupted["condition_id"].to_list(), "mean corruption accuracy"
else:
    names = [c for c in schema.CORRUPTION_FAMILIES if c in set(corrupted["corruption"])]
    # open on the condition where the selected models differ most, not the mildest one
    telling = corrupted.filter(
        pl.col("condition_id") == queries.telling_condition(snapshot.summary, models["model_id"].to_list(), corrupted)
    )
    pick, level = st.columns(2)
    corruption = pick.selectbox(
        "Corruption", names, key="methods_corruption",
        index=names.index(telling["corruption"][0]) if names and not telling.is_empty() else 0,
    )  # fmt: skip
    severities = sorted(corrupted.filter(pl.col("corruption") == corruption)["severity"].to_list())
    usual = telling["severity"][0] if not telling.is_empty() and telling["corruption"][0] == corruption else None
    severity = level.selectbox(
        "Severity", severities, key="methods_severity", index=severities.index(usual) if usual in severities else 0
    )
    condition_ids = corrupted.filter((pl.col("corruption") == corruption) & (pl.col("severity") == severity))[
        "condition_id"
    ].to_list()
    label = f"accuracy under {corruption} (severity {severity})"

if not condition_ids:
    st.info("No condition matches the filters: widen the corruption families or severities in the sidebar.")
    st.stop()

table = queries.comparison_table(models, snapshot.summary, condition_ids)
value = "vs_dense" if relative else "accuracy"
y_title = f"change in {label}" if relative else label
curves = queries.comparison_curves(table, value, x_axis)
dense = table.filter(pl.col("method") == "dense")
reference = 0.0 if relative else (float(dense["accuracy"].mean()) if not dense.is_empty() else None)
figure = figures.method_lines(
    curves, reference, y_title, queries.X_AXES[x_axis], x_percent=x_axis == "sparsity", relative=relative
)
st.plotly_chart(figure, width="stretch")

st.subheader("Per model")
alpha = st.select_slider("Significance level α", [0.01, 0.05, 0.1], value=0.05, key="methods_alpha")
pruned_ids = tuple(table.filter(pl.col("method") != "dense")["model_id"].to_list())
pairs = store.cached(measures.significance, snapshot, pruned_ids, tuple(condition_ids)) if pruned_ids else None
tested = (
    measures.significance_by_model(pairs, alpha)
    if pairs is not None
    else pl.DataFrame(schema={"model_id": pl.String, "p_value": pl.Float64, "significant_conditions": pl.Int64,
                              "tested_conditions": pl.Int64})
)  # fmt: skip
single = len(condition_ids) == 1
st.caption(
    "McNemar's exact test of each model's per-image correctness against its dense parent's, "
    + (f"on this condition; ✱ marks p < {alpha:g}" if single else
       f"on each of the {len(condition_ids)} conditions; the count says in how many p < {alpha:g}")
    + " (uncorrected for the number of models and conditions). With several seeds the chart's whiskers show "
    "the spread over seeds."
)  # fmt: skip
marked = table.join(tested, on="model_id", how="left").with_columns(
    pl.when(pl.col("p_value") < alpha).then(pl.lit("✱")).otherwise(pl.lit("")).alias("significant")
)
significance_columns = ["p_value", "significant"] if single else ["significant_conditions", "tested_conditions"]
shown = queries.in_points(
    queries.in_method_order(
        marked.select(
            "model_id", "method", "target_sparsity", "accuracy", "vs_dense", *significance_columns, "seed", "sparsity",
            "params_nonzero", "flops", "train_epochs",
        )  # fmt: skip
    )
)
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_config={
        **ui.MODEL_COLUMNS,
        "accuracy": st.column_config.NumberColumn(label, format="percent"),
        "significant_conditions": st.column_config.NumberColumn(f"conditions with p < {alpha:g}"),
        "tested_conditions": st.column_config.NumberColumn("conditions tested"),
    },
)
ui.download_buttons(shown, "method-comparison", key="methods_download")
