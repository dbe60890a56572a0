"""Per-layer sparsity: what each method's allocation actually did, layer by layer."""

import polars as pl
import streamlit as st

from dashboard import figures, queries, roles, store, ui

view = ui.selection()
snapshot, filters, models = view.snapshot, view.filters, view.models

st.title("Per-layer sparsity")
st.caption(
    "The share of each dense layer's weights a model removed (a structurally pruned layer counts the filters it "
    "dropped). Global criteria (magnitude, SNIP, GraSP, SynFlow, IMP) choose per-layer sparsities themselves, "
    "layer-wise ones prune every layer alike, and layers the sweep does not prune stay dense. "
    f"Showing {filters.describe()}."
)
table = store.layers(snapshot)
if table is None:
    st.info(
        "This snapshot predates the per-layer table (schema version 2). Recompute it with this version's "
        "`prunescope compute` (or `prunescope evaluate` for your own models) to see its layers."
    )
    st.stop()
pruned = roles.pruned(models)
targets = sorted(set(pruned["target_sparsity"].to_list()))
if not targets:
    ui.no_pruned_model(snapshot, filters)
    st.stop()
left, right = st.columns(2)
target = left.selectbox(
    "Target sparsity", targets, index=len(targets) - 1, key="layers_target", format_func="{:.0%}".format
)
seeds = sorted(set(pruned.filter(pl.col("target_sparsity") == target)["seed"].to_list()))
seed = right.selectbox("Seed", seeds, key="layers_seed")
chosen = pruned.filter((pl.col("target_sparsity") == target) & (pl.col("seed") == seed))
order = [m for m in view.model_ids if m in set(chosen["model_id"])]
rows = queries.in_method_order(
    queries.removed_per_layer(table, snapshot.models).filter(pl.col("model_id").is_in(order))
    .join(chosen.select("model_id", "method", "target_sparsity", "seed"), on="model_id")
)  # fmt: skip
dense_id = chosen["parent_id"].drop_nulls()
layer_order = table.filter(pl.col("model_id") == (dense_id[0] if len(dense_id) else order[0]))["layer"].to_list()
layer_order += [name for name in rows["layer"].unique(maintain_order=True) if name not in set(layer_order)]
st.plotly_chart(
    figures.layer_profile(rows, layer_order, f"Sparsity per layer at {target:.0%} target sparsity (seed {seed})"),
    width="stretch",
)
st.subheader("Every layer of the selected models")
shown = queries.in_method_order(
    table.join(models.select("model_id", "method", "target_sparsity", "seed"), on="model_id")
    .select("model_id", "method", "target_sparsity", "seed", "layer", "kind", "prunable", "params", "nonzero",
            "sparsity", "flops")
)  # fmt: skip
ui.table(shown, "layers", key="layers_table", labels={"sparsity": "layer sparsity"})
