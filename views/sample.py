"""Sample detail: one image under every corruption, and every model's verdict on it."""

import polars as pl
import streamlit as st

from compute import schema
from dashboard import figures, queries, roles, store, ui

view = ui.selection()
snapshot, conditions = view.snapshot, view.conditions
# the selected models and their dense parents, which stay as the reference whatever the filters leave out
with_parents = set(roles.with_parents(snapshot.models, view.model_ids))
model_order = [m for m in queries.models_table(snapshot)["model_id"] if m in with_parents]
dense_everywhere = set(roles.dense_ids(snapshot.models))
dense_ids = [m for m in model_order if m in dense_everywhere]
condition_ids = conditions["condition_id"].implode()

st.title("Sample detail")
samples = snapshot.samples.sort("sample_id")
ids = samples["sample_id"].to_list()
known = set(ids)
queue = [s for s in st.session_state.get("sample_queue", []) if s in known]
# read once per snapshot version, not on every rerun of the page
with_images = set(store.cached(store.thumbnail_samples, snapshot))
with_maps = set(store.cached(store.occlusion_samples, snapshot))
wanted = ui.requested_sample(ids)
names = dict(zip(samples["sample_id"], samples["class_name"], strict=True))
queued = set(queue)
options = queue + [s for s in ids if s not in queued] if queue else ids


def sample_text(s: int) -> str:
    kept = " · corrupted images" if s in with_images else ""
    return f"{s} · class {names[s]}{kept}" + (" · occlusion maps" if s in with_maps else "")


sample_id = st.selectbox(
    "Sample", options, index=options.index(wanted), key=f"sample_pick_{wanted}", format_func=sample_text,
    help=f"Selected points from the embedding page come first. {len(with_images)} samples keep their corrupted "
    f"images and {len(with_maps)} of them their occlusion maps; the picker marks which.",
)  # fmt: skip
ui.remember_sample(sample_id)

left, right = st.columns([1, 4])
left.image(store.thumbnails(snapshot, [sample_id])[sample_id], caption=f"clean · class {names[sample_id]}", width=128)
every_condition = store.cached(queries.sample_outcomes, snapshot, sample_id, tuple(model_order))
# every number below follows the sidebar: the selected models (with their dense parents) and conditions
outcomes = every_condition.filter(pl.col("condition_id").is_in(condition_ids))
clean = outcomes.filter(pl.col("corruption") == schema.CLEAN)
benchmark = outcomes.filter(pl.col("condition_id").is_in(queries.benchmark_condition_ids(conditions)))
with right:
    a, b, c = st.columns(3)
    a.metric("Right on clean images", f"{int(clean['correct'].sum())} of {len(clean)} models")
    b.metric(
        "Right under corruptions", f"{benchmark['correct'].mean():.0%}" if len(benchmark) else "–",
        help="the share of (model, condition) pairs right, over the models shown and "
        + queries.benchmark_conditions_text(conditions),
    )  # fmt: skip
    dense_rows = clean.filter(pl.col("model_id").is_in(dense_ids))
    c.metric("Dense parent's p(true class)", f"{dense_rows['p_true'].mean():.2f}" if len(dense_rows) else "–")
    st.caption(
        f"Over the {len(model_order)} models shown (the selected ones and their dense parents); under corruptions: "
        f"{queries.benchmark_conditions_text(conditions)}."
    )


def verdicts() -> None:
    """Every model's p(true class) on every selected condition."""
    st.caption(
        "Colour: probability of the true class. A cross marks a wrong prediction; hover over a cell for the "
        "predicted class."
    )
    st.plotly_chart(
        figures.outcome_grid(outcomes, model_order, snapshot.class_names, f"Sample {sample_id}: every model's verdict"),
        width="stretch",
    )
    ui.download_buttons(outcomes.drop("family"), f"sample-{sample_id}", key="sample_download")


def under_corruptions() -> None:
    """The image as the models saw it under each corruption and severity."""
    pictures = store.sample_thumbnails(snapshot, sample_id)
    if pictures.is_empty():
        st.info(
            "This snapshot keeps corrupted images for other samples only "
            f"({len(with_images)} of {len(ids)}). Rebuild with `--thumbnail-samples N` to keep more."
        )
    else:
        shown = pictures.join(snapshot.conditions, on="condition_id").sort("condition_id")
        shown = shown.filter(pl.col("condition_id").is_in(conditions["condition_id"].implode()))
        # as many equal columns as the snapshot has severities, filled from the left: a narrow selection
        # keeps its images beside their label instead of spreading them over the page
        columns = len(set(snapshot.conditions.filter(pl.col("severity") > 0)["severity"].to_list()))
        for corruption in [c for c in schema.CORRUPTION_FAMILIES if c in set(shown["corruption"])]:
            row = shown.filter(pl.col("corruption") == corruption).sort("severity")
            cells = st.columns([2] + [1] * columns)
            cells[0].markdown(f"**{corruption}**  \n{schema.CORRUPTION_FAMILIES[corruption]}")
            for cell, (severity, png) in zip(cells[1:], row.select("severity", "thumbnail").iter_rows(), strict=False):
                cell.image(png, caption=f"severity {severity}", width=64)


def where_models_look() -> None:
    """Occlusion maps: where hiding a patch moves the feature vector."""
    settings = snapshot.manifest.get("occlusion") or {}
    occluded = store.occlusion(snapshot, sample_id, model_order) if store.has_occlusion(snapshot) else None
    if occluded is None:
        st.info(
            "This snapshot has no occlusion maps. Compute with `--occlusion-samples N` to record them for the first "
            "N samples whose corrupted images it keeps."
        )
    elif occluded.is_empty():
        st.info(
            f"The snapshot records occlusion maps for {len(with_maps)} other samples only (marked "
            "'occlusion maps' in the sample picker)."
        )
    else:
        st.caption(
            f"A {settings.get('patch', '?')} px grey square is slid over the image (stride "
            f"{settings.get('stride', '?')} px); each cell is how much blanking it out changes the model's feature "
            "vector: red, the angle to the true class grows (the patch held evidence for the class) or the feature "
            "gets longer; blue, the opposite."
        )
        mapped = set(occluded["model_id"])
        pruned_ids = [m for m in model_order if m not in dense_everywhere and m in mapped]
        names = conditions.join(
            occluded.select("condition_id").unique(), on="condition_id"
        ).sort("condition_id")  # the conditions the maps were recorded for, as the filters select them
        corrupted_names = names.filter(pl.col("corruption") != schema.CLEAN)
        a, b, c = st.columns(3)
        pruned_pick = a.selectbox("Pruned model", pruned_ids or dense_ids, key="occlusion_model")
        corrupted_pick = b.selectbox(
            "Under", corrupted_names["condition_id"].to_list(), key="occlusion_condition",
            format_func=lambda cid: queries.condition_label(*corrupted_names.filter(pl.col("condition_id") == cid)
                                                            .select("corruption", "severity").row(0)),
        )  # fmt: skip
        value = c.radio("Change of", ["d_angle_true", "d_feat_norm"], horizontal=True, key="occlusion_value",
                        format_func={"d_angle_true": "angle to the true class", "d_feat_norm": "feature length"}.get)
        clean_id = queries.clean_condition_ids(snapshot.conditions)[0]
        images = dict(store.sample_thumbnails(snapshot, sample_id).iter_rows())
        images[clean_id] = store.thumbnails(snapshot, [sample_id])[sample_id]
        shown = [clean_id] + ([corrupted_pick] if corrupted_pick is not None else [])
        panels = queries.occlusion_panels(occluded, snapshot.conditions, images, shown,
                                          [roles.parent_of(snapshot.models, pruned_pick), pruned_pick])
        st.plotly_chart(
            figures.occlusion_maps(panels, value, int(settings.get("patch", 8)), f"Sample {sample_id}: occlusion"),
            width="stretch",
        )


def across_severities() -> None:
    """One model's metric on this sample against severity."""
    left, right = st.columns(2)
    model = left.selectbox("Model", model_order, key="sample_model")
    metric = right.selectbox(
        "Metric", ["p_true", "geom_margin", "feat_norm", "angle_true", "loss"], key="sample_metric",
        format_func=lambda m: figures.METRIC_TITLES[m],
    )  # fmt: skip
    curves = queries.severity_curve_rows(outcomes.filter(pl.col("model_id") == model), metric)
    st.caption(
        f"On the clean images (severity 0) and the selected corruptions and severities ({view.filters.describe()})."
    )
    st.plotly_chart(
        figures.severity_lines(curves, model, metric, figures.METRIC_TITLES[metric], f"Sample {sample_id}: {model}"),
        width="stretch",
    )


# one section at a time: only the open tab is computed and drawn
ui.show_open_tab(
    {
        "Every model on every condition": verdicts,
        "Under each corruption": under_corruptions,
        "Where the models look": where_models_look,
        "Across severities": across_severities,
    },
    key="sample_view",
)
