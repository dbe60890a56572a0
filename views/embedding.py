"""Embedding: each model's clean feature vectors in 2-D; select points to open them."""

import polars as pl
import streamlit as st

from dashboard import figures, queries, roles, store, ui

view = ui.selection()
snapshot, models, model_order, conditions = view.snapshot, view.models, view.model_ids, view.conditions

st.title("Embedding")
st.caption(
    "The first two principal components of each model's penultimate features on clean images. Drag a box or "
    "lasso around points to open them in sample detail."
)
left, right = st.columns([2, 3])
model = left.selectbox("Model", model_order, key="embedding_model")
colour = right.radio(
    "Colour by", ["class_name", "outcome", "fragile"], horizontal=True, key="embedding_colour",
    format_func={"class_name": "class", "outcome": "right or wrong", "fragile": "pruning fragility"}.get,
)  # fmt: skip

points = queries.with_samples(snapshot, store.embedding(snapshot, model))
outcomes = store.cached(queries.clean_outcomes, snapshot, model)
points = points.join(outcomes.select("sample_id", "correct"), on="sample_id", how="left").with_columns(
    pl.when(pl.col("correct")).then(pl.lit("right")).otherwise(pl.lit("wrong")).alias("outcome")
)
pruned = tuple(roles.pruned_ids(models))
if colour == "fragile":
    if pruned:
        fragile = store.cached(
            queries.pruning_fragile_samples, snapshot, pruned, tuple(conditions["condition_id"].to_list())
        )
        points = points.join(fragile.select("sample_id", "fragile"), on="sample_id", how="left").with_columns(
            pl.col("fragile").fill_null(0)
        )
    else:
        points = points.with_columns(pl.lit(0).alias("fragile"))

event = st.plotly_chart(
    figures.embedding_scatter(points, colour, f"Clean features of {model}"),
    width="stretch",
    on_select="rerun",
    selection_mode=("points", "box", "lasso"),
    key="embedding_chart",
)
chosen = [int(p["customdata"][0]) for p in event.selection.get("points", []) if p.get("customdata")]
if chosen:
    ui.open_sample(chosen[0], queue=chosen, clear="embedding_chart")
ui.download_buttons(points.drop("thumbnail", strict=False), f"embedding-{model}", key="embedding_download")

# --- aligned with the dense parent ---------------------------------------------------------------------
st.subheader("Beside its dense parent, on the same axes")
parent_id = models.filter(pl.col("model_id") == model)["parent_id"].drop_nulls()
parent_id = parent_id[0] if len(parent_id) else None
if parent_id is None or parent_id == model:
    st.info("Choose a pruned model above to see it beside its dense parent.")
else:
    st.caption(
        "Each model's PCA has its own axes, so two embeddings cannot be compared as they come. Here the pruned "
        f"model's points are rotated (or reflected) onto those of {parent_id} by orthogonal Procrustes, after "
        "centring both; distances within each embedding are unchanged."
    )
    moves = st.toggle("Draw each sample's move", key="embedding_moves")
    parent_outcomes = store.cached(queries.clean_outcomes, snapshot, parent_id).select(
        "sample_id", pl.when(pl.col("correct")).then(pl.lit("right")).otherwise(pl.lit("wrong")).alias("outcome")
    )
    per_sample = [c for c in ("sample_id", "label", "class_name", "fragile") if c in points.columns]
    parent_points = (
        points.select(per_sample)
        .join(store.embedding(snapshot, parent_id), on="sample_id")
        .join(parent_outcomes, on="sample_id", how="left")
    )
    rotated = queries.aligned_to(points.select("sample_id", "x", "y"), parent_points)
    aligned = points.drop("x", "y").join(rotated, on="sample_id")
    st.plotly_chart(
        figures.aligned_embeddings(parent_points, aligned, colour, (parent_id, f"{model}, aligned"), moves),
        width="stretch",
    )
