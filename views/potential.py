"""Prune potential and excess error: how far each method prunes before it loses accuracy, on
clean images and under each corruption (Liebenwein et al., "Lost in Pruning")."""

import polars as pl
import streamlit as st

from compute import schema
from dashboard import figures, measures, queries, roles, ui

view = ui.selection()
snapshot, filters, models, corrupted = view.snapshot, view.filters, view.models, view.corrupted

st.title("Prune potential")
st.caption(
    "Prune potential: the largest target sparsity at which a method's model is within δ of its dense parent's "
    "accuracy (torchprune's definition: a sparser model that passes counts even if a less sparse one fails; 0 when "
    "none passes), the mean over seeds. A corruption's accuracy is the mean over the selected severities. "
    f"Showing {filters.describe()}."
)
pruned = roles.pruned(models)
if pruned.is_empty():
    ui.no_pruned_model(snapshot, filters)
    st.stop()

left, right = st.columns(2)
delta = left.slider("δ, percentage points below the dense model", 0.0, 10.0, 1.0, 0.5, key="potential_delta")
severities = sorted(set(corrupted["severity"].to_list()))
level = right.selectbox(
    "Severity", ["mean over the selected severities", *severities], key="potential_severity",
    format_func=lambda s: s if isinstance(s, str) else f"severity {s}",
)  # fmt: skip
chosen = corrupted if isinstance(level, str) else corrupted.filter(pl.col("severity") == level)
conditions = pl.concat([snapshot.conditions.filter(pl.col("corruption") == schema.CLEAN), chosen])
with_parents = roles.with_parents(snapshot.models, models["model_id"])
selected_and_parents = snapshot.models.filter(pl.col("model_id").is_in(with_parents))
accuracy = measures.corruption_accuracy(snapshot.summary.filter(pl.col("model_id").is_in(with_parents)), conditions)
rows = measures.with_parent_accuracy(accuracy, selected_and_parents, "corruption")
n_classes = len(snapshot.class_names)
potential = (
    measures.prune_potential(rows, delta / 100, key="corruption", n_classes=n_classes)
    .group_by("method", "corruption")
    .agg(pl.col("prune_potential").mean(), pl.col("prune_potential").min().alias("lowest_seed"),
         pl.col("prune_potential").max().alias("highest_seed"), pl.col("informative").all())
)  # fmt: skip
methods = sorted(set(pruned["method"]), key=queries.method_rank)
columns = [schema.CLEAN] + [c for c in schema.CORRUPTION_FAMILIES if c in set(chosen["corruption"])]
lookup = {(m, c): (v, ok) for m, c, v, ok in potential.select(
    "method", "corruption", "prune_potential", "informative").iter_rows()}  # fmt: skip
top = float(pruned["target_sparsity"].max())
NEAR_CHANCE = (
    f"accuracy within {measures.CHANCE_MARGIN:.0%} of chance ({1 / max(n_classes, 1):.0%} for {n_classes} classes)"
)
st.plotly_chart(
    figures.heatmap(
        [[lookup.get((m, c), (None, True))[0] for c in columns] for m in methods], columns, methods,
        f"Prune potential within {delta:g} pts of dense", "prune potential", zrange=(0.0, top),
        x_title="condition", y_title="method",
        masked=[[not lookup.get((m, c), (None, True))[1] for c in columns] for m in methods],
        masked_text=f"not informative: the dense parent is near chance ({NEAR_CHANCE})",
    ),
    width="stretch",
)  # fmt: skip
st.caption(
    f"Grey cells marked ≈ chance: the dense parent's {NEAR_CHANCE} under that corruption, so every model passes "
    "without telling anything about pruning."
)
st.caption(
    "Methods are compared on the same grid of target sparsities; their training budgets differ (see the models "
    "table's training epochs): a higher potential bought with more epochs is not a fair win."
)
ui.download_buttons(potential.sort("method", "corruption"), "prune-potential", key="potential_download")

st.subheader("Excess error")
st.caption(
    "How much more a corruption hurts the pruned model than its dense parent: the model's change in error from "
    "clean images to the corruption minus the dense parent's change, in percentage points. Positive: pruning made "
    "the model more brittle to that corruption."
)
excess = measures.excess_error(accuracy, selected_and_parents, n_classes=n_classes)
with_excess = set(excess["model_id"])
order = [m for m in view.model_ids if m in with_excess]
values = {(m, c): (v, ok) for m, c, v, ok in excess.select(
    "model_id", "corruption", "excess_error", "informative").iter_rows()}  # fmt: skip
st.plotly_chart(
    figures.heatmap(
        [[values.get((m, c), (None, True))[0] for c in columns[1:]] for m in order], columns[1:], order,
        "Excess error per model and corruption", "excess error", diverging=True, x_title="corruption",
        y_title="model", higher_is_better=False,
        masked=[[not values.get((m, c), (None, True))[1] for c in columns[1:]] for m in order],
        masked_text=f"not informative: the model and its dense parent are both near chance ({NEAR_CHANCE})",
    ),
    width="stretch",
)  # fmt: skip
st.caption(
    "Red: pruning made the corruption hurt more (positive excess error), blue: less, as red is worse than dense on "
    f"every page. Grey cells marked ≈ chance: the model and its dense parent both have {NEAR_CHANCE} there."
)
ui.download_buttons(excess.sort("model_id", "corruption"), "excess-error", key="excess_download")
