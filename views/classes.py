"""Per class: which classes pruning hurts most, on clean images and under the selected corruptions."""

import polars as pl
import streamlit as st

from dashboard import figures, measures, queries, roles, store, ui

view = ui.selection()
snapshot, filters, models, corrupted = view.snapshot, view.filters, view.models, view.corrupted

st.title("Per class")
st.caption(
    "Accuracy on each class's test images, relative to the dense parent: pruning can cost some classes far more "
    f"than the overall accuracy shows (Hooker et al.). Showing {filters.describe()}."
)
left, right = st.columns(2)
ON = ["clean images", "the selected corruptions"]
on = left.radio("On", ON, horizontal=True, key="classes_on")
relative = right.toggle("Relative to the dense model", value=True, key="classes_relative")
clean_ids = queries.clean_condition_ids(snapshot.conditions)
# under corruptions, the conditions of mean corruption accuracy (docs/DESIGN.md): the extras do not count
condition_ids = clean_ids if on == ON[0] else queries.benchmark_condition_ids(corrupted)
if not condition_ids:
    st.info(
        "No condition of the 15 CIFAR-10-C corruptions matches the filters (the extras do not count in a mean over "
        "corruptions): widen the corruption families or severities in the sidebar."
    )
    st.stop()
if on == ON[1]:
    st.caption(f"Pooled over {queries.benchmark_conditions_text(corrupted)}.")

table = store.cached(measures.class_breakdown, snapshot, tuple(view.model_ids), tuple(condition_ids))
names = snapshot.class_names or [str(c) for c in sorted(set(table["label"]))]
label_names = {i: names[i] if i < len(names) else str(i) for i in sorted(set(table["label"]))}
value = "vs_dense" if relative else "accuracy"
dense = set(roles.dense_ids(snapshot.models))
shown = [m for m in view.model_ids if m in set(table["model_id"]) and not (relative and m in dense)]
lookup = {(m, c): v for m, c, v in table.select("model_id", "label", value).iter_rows()}
columns = list(label_names)
st.plotly_chart(
    figures.heatmap(
        [[lookup.get((m, c)) for c in columns] for m in shown], [label_names[c] for c in columns], shown,
        f"Accuracy per class on {on}" + (" relative to the dense model" if relative else ""),
        "change vs dense" if relative else "accuracy", diverging=relative, x_title="class", y_title="model",
    ),
    width="stretch",
)  # fmt: skip

st.subheader("The classes pruning hurts most")
pruned = table.filter(~pl.col("model_id").is_in(list(dense)) & pl.col("vs_dense").is_not_null())
if pruned.is_empty():
    ui.no_pruned_model(snapshot, filters)
else:
    hurt = (
        pruned.group_by("label")
        .agg(
            (100 * pl.col("vs_dense").mean()).alias("mean_vs_dense_pts"),
            (100 * pl.col("vs_dense").min()).alias("worst_vs_dense_pts"),
            pl.col("model_id").sort_by("vs_dense").first().alias("worst_model"),
            pl.col("n").first().alias("images_x_conditions"),
        )
        .with_columns(pl.col("label").replace_strict(label_names, return_dtype=pl.String).alias("class"))
        .sort("mean_vs_dense_pts", "label")
        .select("class", "mean_vs_dense_pts", "worst_vs_dense_pts", "worst_model", "images_x_conditions")
    )
    st.caption(f"Over the {pruned['model_id'].n_unique()} selected pruned models, most hurt first.")
    ui.table(hurt, "classes-hurt", key="classes_hurt")
