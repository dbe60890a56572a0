"""Overview: what the snapshot holds, and how each model's accuracy and robustness compare."""

import polars as pl
import streamlit as st

from dashboard import figures, measures, queries, roles, store, ui

snapshot = ui.current_snapshot()
filters = ui.current_filters()
selected = set(filters.select_models(snapshot.models)["model_id"])
view_filters_message = filters.why_no_pruned(snapshot.models)
conditions = filters.select_conditions(snapshot.conditions)
every_model = queries.models_table(snapshot, conditions)
table = every_model.filter(pl.col("model_id").is_in(selected))
# the references are the dense parents of the models shown, whichever methods the filter selects
dense = every_model.filter(pl.col("model_id").is_in(table["parent_id"].implode()) & pl.col("is_dense"))

st.title("Overview")
averaged = len(queries.benchmark_condition_ids(conditions))
NO_BENCHMARK = "No condition of the 15 CIFAR-10-C corruptions is selected (the extras do not count)"
st.caption(
    "Every model of the snapshot on clean test images and under corruptions. "
    + (
        f"Mean corruption accuracy is the plain mean over {queries.benchmark_conditions_text(conditions)}, as "
        f"the filters select them ({filters.describe()}); relative robustness is a model's mean "
        "corruption accuracy minus that of the dense model it was pruned from, in percentage points."
        if averaged
        else f"{NO_BENCHMARK} ({filters.describe()}), so there is no mean corruption accuracy."
    )
)

best = table.filter(~pl.col("is_dense")).sort("relative_robustness", descending=True, nulls_last=True)
a, b, c, d = st.columns(4)
a.metric("Models", f"{len(table)}", help="dense and pruned models, over all seeds")
b.metric("Dense clean accuracy", f"{dense['clean_accuracy'].mean():.1%}")
dense_mca = dense["mean_corruption_accuracy"].mean()
c.metric("Dense mean corruption accuracy", "—" if dense_mca is None else f"{dense_mca:.1%}")
if not best.is_empty() and best["relative_robustness"][0] is not None:
    d.metric(
        "Best relative robustness",
        f"{100 * best['relative_robustness'][0]:+.1f} pts",
        help=f"{best['model_id'][0]}: mean corruption accuracy minus its dense parent's, in percentage points",
    )
    d.caption(best["model_id"][0])

# one chart at a time: only the open tab is drawn
shown_view, area = ui.open_tab(["Robustness lottery", "Against sparsity", "By corruption family"], "overview_view")
with area:
    if shown_view == "Robustness lottery":
        chart, facts = st.columns([3, 1.2])
        with_parents = pl.concat([table, dense.filter(~pl.col("model_id").is_in(table["model_id"].implode()))])
        chart.plotly_chart(figures.robustness_scatter(with_parents), width="stretch")
        facts.markdown(
            "**Snapshot**\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in queries.snapshot_facts(snapshot).items())
        )
    elif shown_view == "Against sparsity":
        measure = st.radio("Accuracy on", ["clean images", "corrupted images (mean)"], horizontal=True,
                           key="overview_measure")  # fmt: skip
        value = "clean_accuracy" if measure == "clean images" else "mean_corruption_accuracy"
        curves = queries.comparison_curves(table.filter(~pl.col("is_dense")).drop_nulls(value), value, "sparsity")
        dense_value = dense[value].mean() if not dense.is_empty() else None
        y_title = "clean accuracy" if value == "clean_accuracy" else "mean corruption accuracy"
        no_model = NO_BENCHMARK if value == "mean_corruption_accuracy" and not averaged else None
        empty = no_model or view_filters_message
        st.plotly_chart(
            figures.method_lines(curves, dense_value, y_title, queries.X_AXES["sparsity"], x_percent=True, empty=empty),
            width="stretch",
        )
    else:
        relative = st.toggle("Relative to the dense model", key="overview_family_relative",
                             help="accuracy minus the dense parent's, per family")  # fmt: skip
        families = queries.family_accuracy(snapshot.summary, conditions, relative=relative, models=snapshot.models)
        st.plotly_chart(figures.family_heatmap(families, table["model_id"].to_list(), relative), width="stretch")

st.subheader("Models")
ALPHA = 0.05
st.caption(
    "Most robust relative to its dense parent first; click a column's name to sort by it. "
    f"clean p: McNemar's exact test of the model's per-image correctness on clean images against its dense "
    f"parent's; ✱ marks p < {ALPHA:g} (uncorrected for the number of models). With 180 test images a 1-point "
    "difference is 2 images."
)
clean_ids = queries.clean_condition_ids(snapshot.conditions)
pruned_ids = tuple(roles.pruned_ids(table))
tested = store.cached(measures.significance, snapshot, pruned_ids, tuple(clean_ids)) if pruned_ids else None
clean_p = (
    measures.significance_by_model(tested, ALPHA).select("model_id", pl.col("p_value").alias("clean_p"))
    if tested is not None
    else pl.DataFrame(schema={"model_id": pl.String, "clean_p": pl.Float64})
)
models_shown = queries.in_points(
    table.join(clean_p, on="model_id", how="left")
    .with_columns(pl.when(pl.col("clean_p") < ALPHA).then(pl.lit("✱")).otherwise(pl.lit("")).alias("significant"))
    .select(
        "model_id", "method", "target_sparsity", "clean_accuracy", "mean_corruption_accuracy", "relative_robustness",
        "clean_p", "significant", "family", "seed", "sparsity", "params_nonzero", "flops", "train_epochs",
        "dead_relu", "dynamic_dead_relu", "dist_init", "dist_dense",
    ).sort("relative_robustness", "clean_accuracy", descending=True, nulls_last=True)
)  # fmt: skip
ui.table(models_shown, "models", key="overview_models")
