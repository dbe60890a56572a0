"""Global geometry: parallel coordinates of one class's clean feature geometry, dense against pruned."""

import polars as pl
import streamlit as st

from dashboard import figures, measures, queries, roles, store, ui

view = ui.selection()
snapshot, models, model_order = view.snapshot, view.models, view.model_ids
class_names = snapshot.class_names or [str(c) for c in sorted(snapshot.classes["class"].unique())]

st.title("Global geometry")
st.caption(
    "The paper's parallel coordinates on clean images: each line runs through a feature vector's angle to every "
    "class direction, its length ‖f‖, its geometric margin and the probability of its true class. Drag along an "
    "axis to brush it (the lines outside turn grey); drag on several axes to combine; click an axis outside its "
    "brush to clear it."
)
if not store.has_class_angles(snapshot):
    st.info(
        "This snapshot predates the angles to every class direction (schema version 3 or earlier). Recompute it "
        "with this version's `prunescope compute` (or `prunescope evaluate` for your own models) to see this page."
    )
    st.stop()

left, middle, right = st.columns([3, 2, 2])
per = right.radio(
    "One line per", ["sample", "model"], horizontal=True, key="global_per",
    help="Per model: the mean over the class's samples of each axis",
)  # fmt: skip
parents = dict(snapshot.models.select("model_id", "parent_id").iter_rows())
pruned_everywhere = set(roles.pruned_ids(snapshot.models))
pruned = [m for m in model_order if m in pruned_everywhere]
model = left.selectbox("Pruned model", pruned, key="global_model") if per == "sample" and pruned else None
hurt = None
if model is not None:
    clean = tuple(queries.clean_condition_ids(snapshot.conditions))
    hurt = measures.most_hurt_class(store.cached(measures.class_breakdown, snapshot, (model,), clean), model)
if model is not None:  # the class follows the pruned model (the one it hurts most) until the user picks a class
    ui.follow_default("global_class", hurt or 0, list(range(len(class_names))), model)
label = middle.selectbox(
    "Class", range(len(class_names)), key="global_class", format_func=lambda c: class_names[c],
    help="Its samples are the lines; its direction is the axis marked (true). Opens on the class the pruned model "
    "hurts most on clean images, and follows the model until you pick a class.",
)  # fmt: skip

if per == "sample":
    if model is None:
        ui.no_pruned_model(snapshot, view.filters)
        st.stop()
    st.caption("Its dense parent above, the pruned model below; both share every axis.")
    pair = (parents[model], model)
    rows = store.cached(queries.global_geometry, snapshot, pair, label)
    drawn, dropped = queries.with_direction(rows)
    parts = [drawn.filter(pl.col("model_id") == m) for m in pair]
    axes = [c for c in rows.columns if c.startswith("angle_")] + list(queries.GLOBAL_AXES)
    ranges = figures.axis_ranges(parts, axes)
    # two figures: plotly draws the lines of only one parcoords trace per figure
    for model_id, part in zip(pair, parts, strict=True):
        kind = "dense parent" if model_id == pair[0] else "pruned"
        title = f"{model_id} ({kind}): {part.height} samples of class {class_names[label]}"
        st.plotly_chart(
            figures.parallel_geometry(part, class_names, label, "correct", title, ranges),
            width="stretch", key=f"global_{kind}",
        )  # fmt: skip
    ui.subset_note(rows, snapshot, of_class=label)
    if dropped:
        st.caption(f"{dropped} rows with a zero feature vector (no angle to any class) are left out.")
    st.subheader("Means over the class, and the change")
    means = queries.global_geometry_means(rows, snapshot.models)
    change = queries.global_geometry_change(means, *pair, class_names)
    # rows are different quantities: angles in degrees, accuracy in % (its change in points), the rest plain
    kinds = [
        "degrees" if axis.startswith("angle to")
        else {pair[0]: "percent", pair[1]: "percent", "change": "share_change"} if axis == "accuracy"
        else "number"
        for axis in change["axis"]
    ]  # fmt: skip
    ui.table(change, f"global-geometry-change-{class_names[label]}", key="global_change", row_kinds=kinds,
             labels={pair[0]: f"{pair[0]} (dense parent)", pair[1]: f"{pair[1]} (pruned)"})  # fmt: skip
else:
    rows = store.cached(queries.global_geometry, snapshot, tuple(model_order), label)
    means = queries.global_geometry_means(rows, models)
    drawn, dropped = queries.with_direction(means)
    axes = [c for c in means.columns if c.startswith("angle_")] + list(queries.GLOBAL_AXES)
    title = f"{drawn.height} models: mean over {rows['sample_id'].n_unique()} samples of class {class_names[label]}"
    st.plotly_chart(
        figures.parallel_geometry(drawn, class_names, label, "sparsity", title, figures.axis_ranges([drawn], axes)),
        width="stretch", key="global_models",
    )  # fmt: skip
    ui.subset_note(rows, snapshot, of_class=label)
    if dropped:
        st.caption(f"{dropped} models whose mean has no direction (every feature vector zero) are left out.")
    angles = {queries.angle_column(c): f"angle to {name}" for c, name in enumerate(class_names)}
    ui.table(means, f"global-geometry-{class_names[label]}", key="global_means", labels=angles,
             kinds=dict.fromkeys(angles, "degrees"))  # fmt: skip
