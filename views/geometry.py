"""Geometry of the last layer: feature lengths, angles and margins, and how pruning moves them."""

import polars as pl
import streamlit as st

from compute import schema
from dashboard import figures, queries, roles, store, ui

view = ui.selection()
snapshot, model_order, conditions = view.snapshot, view.model_ids, view.conditions
labels = dict(zip(conditions["condition_id"], conditions.select(
    pl.when(pl.col("corruption") == schema.CLEAN).then(pl.lit("clean"))
    .otherwise(pl.col("corruption") + " s" + pl.col("severity").cast(pl.String))
).to_series(), strict=True))  # fmt: skip
clean_id = queries.clean_condition_ids(snapshot.conditions)[0]
# roles from models.parquet: an evaluate snapshot names its models freely
dense_everywhere = set(roles.dense_ids(snapshot.models))
dense_ids = [m for m in model_order if m in dense_everywhere]
pruned_ids = [m for m in model_order if m not in dense_everywhere]
targets = dict(snapshot.models.select("model_id", "target_sparsity").iter_rows())

st.title("Geometry of the last layer")
st.caption(
    "A model is features → linear: its logit for class c is ‖w_c‖‖f‖cos θ_c + b_c, so a sample's loss depends on "
    "its feature length ‖f‖ and its angles θ_c to the class directions. The margin is the distance from f to the "
    "nearest decision boundary of its true class."
)


def distributions() -> None:
    """Feature length, angle, margin or p(true) per model, clean against a corruption."""
    left, middle = st.columns([3, 2])
    # the first dense model and up to four pruned ones at the sparsity nearest 0.9
    nearest = min((targets[m] for m in pruned_ids), key=lambda t: abs(t - 0.9), default=None)
    default = dense_ids[:1] + [m for m in pruned_ids if targets[m] == nearest][:4]
    chosen = left.multiselect("Models", model_order, default=default or model_order[:4], key="geometry_models")
    corrupted_labels = [k for k in labels if k != clean_id] or [clean_id]
    telling = queries.telling_condition(snapshot.summary, chosen, conditions)
    # follows the chosen models until the user picks a condition
    ui.follow_default(
        "geometry_condition", telling if telling in corrupted_labels else corrupted_labels[0], corrupted_labels,
        tuple(chosen),
    )
    condition = middle.selectbox(
        "Against", corrupted_labels, key="geometry_condition", format_func=lambda c: labels.get(c, "clean"),
        help="Opens on the condition where the chosen models differ most, and follows the models until you pick one",
    )  # fmt: skip
    metric = st.radio(
        "Metric", ["feat_norm", "angle_true", "geom_margin", "p_true"], horizontal=True, key="geometry_metric",
        format_func=lambda m: figures.METRIC_TITLES[m],
    )  # fmt: skip
    if chosen:
        shown_conditions = {clean_id: "clean", condition: labels.get(condition, "clean")}
        rows = store.cached(queries.metric_sample, snapshot, tuple(chosen), tuple(shown_conditions), (metric,))
        st.plotly_chart(figures.distributions(rows, metric, chosen, shown_conditions), width="stretch")
        ui.subset_note(rows, snapshot)


def angle_and_length() -> None:
    """Angle-length plots of two models side by side."""
    a, b, c, d = st.columns(4)
    first = a.selectbox("Model", model_order, index=0, key="geometry_polar_a")
    second = b.selectbox(
        "Compared with", model_order, index=min(len(model_order) - 1, len(model_order) // 2), key="geometry_polar_b"
    )
    class_name = c.selectbox("Class", ["all", *snapshot.class_names], key="geometry_polar_class")
    polar_condition = d.selectbox("Condition", list(labels), key="geometry_polar_condition", format_func=labels.get)
    points = store.cached(
        queries.metric_sample, snapshot, tuple(dict.fromkeys([first, second])), (polar_condition,),
        ("feat_norm", "angle_true", "correct"),
    )  # fmt: skip
    shown = points if class_name == "all" else points.filter(pl.col("class_name") == class_name)
    title = f"Length against angle to the true class ({labels[polar_condition]}, class {class_name})"
    st.plotly_chart(figures.polar_pair(shown, list(dict.fromkeys([first, second])), title), width="stretch")
    ui.subset_note(points, snapshot)


def moves() -> None:
    """Each sample's move from the dense parent to a pruned model."""
    if pruned_ids:
        left, right = st.columns(2)
        moved = left.selectbox("Pruned model", pruned_ids, key="geometry_shift_model")
        shift_condition = right.selectbox(
            "Condition", list(labels), key="geometry_shift_condition", format_func=labels.get
        )
        shift = store.cached(queries.dense_shift, snapshot, moved, shift_condition)
        st.plotly_chart(figures.shift_scatter(shift, moved), width="stretch")
        ui.download_buttons(shift, f"shift-{moved}", key="geometry_shift_download")
    else:
        ui.no_pruned_model(snapshot, view.filters)


def class_directions() -> None:
    """The class directions: each class's weight norm and the angles between them."""
    picked = st.multiselect("Models", model_order, default=dense_ids[:1] + pruned_ids[:1], key="geometry_class_models")
    if picked:
        st.plotly_chart(figures.class_norms(snapshot.classes, snapshot.models, picked), width="stretch")
        model = st.selectbox("Angles between class directions of", picked, key="geometry_angles_model")
        rows = snapshot.classes.filter(pl.col("model_id") == model).sort("class")
        names = rows["class_name"].to_list()
        st.plotly_chart(
            figures.heatmap(
                rows["angle_to"].to_list(), names, names, f"Angle between class directions: {model}", "degrees",
                zrange=(0.0, 180.0), percent=False, x_title="class", y_title="class", hover="%{z:.1f}°",
            ),
            width="stretch",
        )  # fmt: skip


# one section at a time: only the open tab is computed and drawn
ui.show_open_tab(
    {
        "Distributions": distributions,
        "Angle and length": angle_and_length,
        "How pruning moved each sample": moves,
        "Class directions": class_directions,
    },
    key="geometry_view",
)
