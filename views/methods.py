"""Method comparison: accuracy against sparsity (or size) per method, on clean or corrupted images."""

import polars as pl
import streamlit as st

from compute import schema
from dashboard import figures, measures, queries, roles, store, ui

view = ui.selection()
snapshot, filters, models, corrupted = view.snapshot, view.filters, view.models, view.corrupted

st.title("Method comparison")
st.caption(f"Each line is one method, the mean over seeds with min–max whiskers. Showing {filters.describe()}.")

MEASURES = ["clean images", "mean corruption accuracy", "one corruption and severity"]
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
    # the one definition (docs/DESIGN.md): the selected conditions of the 15 CIFAR-10-C corruptions
    condition_ids, label = queries.benchmark_condition_ids(corrupted), "mean corruption accuracy"
    st.caption(f"Mean corruption accuracy: the plain mean over {queries.benchmark_conditions_text(corrupted)}.")
else:
    names = [c for c in schema.CORRUPTION_FAMILIES if c in set(corrupted["corruption"])]
    # open on the condition where the selected models differ most, not the mildest one
    telling = corrupted.filter(
        pl.col("condition_id") == queries.telling_condition(snapshot.summary, models["model_id"].to_list(), corrupted)
    )
    pick, level = st.columns(2)
    shown_ids = tuple(models["model_id"])
    telling_corruption = telling["corruption"][0] if not telling.is_empty() else (names[0] if names else None)
    ui.follow_default("methods_corruption", telling_corruption, names, shown_ids)
    corruption = pick.selectbox("Corruption", names, key="methods_corruption")
    severities = sorted(corrupted.filter(pl.col("corruption") == corruption)["severity"].to_list())
    usual = telling["severity"][0] if not telling.is_empty() and telling["corruption"][0] == corruption else None
    ui.follow_default(
        "methods_severity", usual if usual in severities else next(iter(severities), None), severities,
        (shown_ids, corruption),
    )
    severity = level.selectbox("Severity", severities, key="methods_severity")
    condition_ids = corrupted.filter((pl.col("corruption") == corruption) & (pl.col("severity") == severity))[
        "condition_id"
    ].to_list()
    label = f"accuracy under {corruption} (severity {severity})"

if not condition_ids:
    st.info(
        "No condition of the 15 CIFAR-10-C corruptions matches the filters (the extras do not count in a mean "
        "over corruptions): widen the corruption families or severities in the sidebar."
        if measure == MEASURES[1]
        else "No condition matches the filters: widen the corruption families or severities in the sidebar."
    )
    st.stop()

table = queries.comparison_table(models, snapshot.summary, condition_ids)
value = "vs_dense" if relative else "accuracy"
y_title = f"change in {label}" if relative else label
curves = queries.comparison_curves(roles.pruned(table), value, x_axis)
# the reference is the dense parents of the models shown, even when the method filter leaves them out
parents = snapshot.models.filter(pl.col("model_id").is_in(roles.with_parents(snapshot.models, models["model_id"])))
dense = queries.comparison_table(roles.dense(parents), snapshot.summary, condition_ids)
reference = 0.0 if relative else (float(dense["accuracy"].mean()) if not dense.is_empty() else None)
figure = figures.method_lines(
    curves, reference, y_title, queries.X_AXES[x_axis], x_percent=x_axis == "sparsity", relative=relative
)
st.plotly_chart(figure, width="stretch")

st.subheader("Per model")
alpha = st.select_slider("Significance level α", [0.01, 0.05, 0.1], value=0.05, key="methods_alpha")
pruned_ids = tuple(roles.pruned_ids(table))
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
ui.table(
    shown, "method-comparison", key="methods_table",
    labels={"accuracy": label, "significant_conditions": f"conditions with p < {alpha:g}"},
)  # fmt: skip
