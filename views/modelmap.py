"""Model map: models placed by how alike their last-layer geometry is, sample by sample."""

import polars as pl
import streamlit as st

from dashboard import figures, modelmap, queries, store, ui

view = ui.selection()
snapshot, filters, conditions = view.snapshot, view.filters, view.conditions

st.title("Model map")
st.caption(
    "Each model is the vector of its per-sample geometry (angle to the true class, feature length, geometric "
    "margin) on the clean images and the selected corrupted conditions, each entry standardised over the models. "
    "Models close on the map move their samples alike; the grey lines are the minimum spanning tree of their "
    f"distances. Showing {filters.describe()}. Select models (box or lasso) to narrow every page to them."
)
if len(view.model_ids) < 2:
    st.info("The map needs at least two models: widen the filters in the sidebar.")
    st.stop()
how = st.radio("Projection", modelmap.projections(), horizontal=True, key="modelmap_projection",
               help="UMAP appears when the umap-learn package is installed")  # fmt: skip
ids, placed, edges, used = store.cached(
    modelmap.placed_models, snapshot, tuple(view.model_ids), tuple(conditions["condition_id"].to_list()), how
)
points = (
    pl.DataFrame({"model_id": ids, "x": placed[:, 0], "y": placed[:, 1]})
    .join(queries.models_table(snapshot, conditions), on="model_id")
    .select("model_id", "method", "is_dense", "target_sparsity", "x", "y", "clean_accuracy", "relative_robustness")
)
event = st.plotly_chart(
    figures.model_map(points, edges, f"Model map ({how}, {len(ids)} models)"),
    width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"), key="modelmap_chart",
)  # fmt: skip
if used < snapshot.samples.height:
    st.caption(f"An evenly spaced {used:,} of the {snapshot.samples.height:,} samples, to keep the map quick.")
picked = [p["customdata"][0] for p in event.selection.get("points", []) if p.get("customdata")]
if picked:
    st.button(
        f"Narrow every page to these {len(picked)} models", key="modelmap_pick", type="primary",
        on_click=lambda: st.session_state.update(f_models=list(dict.fromkeys(picked))),
    )  # fmt: skip
ui.download_buttons(points, "model-map", key="modelmap_download")
