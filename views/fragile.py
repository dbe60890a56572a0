"""Fragile samples: the images pruning or corruption breaks first, and the ones nothing breaks."""

import polars as pl
import streamlit as st

from dashboard import queries, roles, store, ui

snapshot = ui.current_snapshot()
filters = ui.current_filters()
models = filters.select_models(snapshot.models)
pruned = roles.pruned_ids(models)
selected = models["model_id"].to_list()
conditions = filters.select_conditions(snapshot.conditions)
condition_ids = tuple(conditions["condition_id"].to_list())
corrupted_ids = tuple(conditions.filter(pl.col("corruption") != "clean")["condition_id"].to_list())

st.title("Fragile samples")
st.caption(f"Counted over {filters.describe()}. Select a row to open the sample.")
left, right = st.columns([4, 1])
classes = left.multiselect("Classes", snapshot.class_names, key="fragile_classes", placeholder="all classes")
top = right.number_input("Rows", min_value=5, max_value=500, value=30, step=5, key="fragile_rows")


def rank_by() -> str:
    """The ranking of the tabs that count breaks (the others have one order of their own)."""
    return st.radio(
        "Rank by", list(queries.RANKINGS), format_func=queries.RANKINGS.get, key="fragile_rank", horizontal=True,
        help="A rate puts a sample that breaks in 1 of its 2 chances above one that breaks in 40 of 100; "
        "the other figure breaks ties.",
    )  # fmt: skip


def show(table: pl.DataFrame, columns: list[str], key: str, special: dict) -> None:
    """A ranked table with thumbnails; selecting a row opens the sample detail page. `special`: the
    columns drawn by a config of their own (bars, check boxes)."""
    if classes:
        table = table.filter(pl.col("class_name").is_in(classes))
    table = table.head(int(top))
    pictures = store.thumbnails(snapshot, table["sample_id"].to_list())
    shown = table.with_columns(
        pl.col("sample_id").map_elements(lambda s: ui.image_uri(pictures.get(s)), return_dtype=pl.String).alias("image")
    ).select("image", "sample_id", "class_name", *columns)
    event = ui.table(
        shown, key, key=key, on_select="rerun", selection_mode="single-row", download=False,
        special={"image": st.column_config.ImageColumn("image", width="small"), **special},
    )  # fmt: skip
    ui.download_buttons(shown.drop("image"), key, key=f"{key}_download")
    if event.selection.rows:
        ui.open_sample(int(shown["sample_id"][event.selection.rows[0]]), clear=key)


def pruning_fragile() -> None:
    st.caption("The dense model is right and the pruned model wrong, on the same image and condition.")
    if not pruned:
        ui.no_pruned_model(snapshot, filters)
        return
    order = rank_by()
    table = store.cached(queries.pruning_fragile_samples, snapshot, tuple(pruned), condition_ids)
    show(queries.ranked(table, "fragile", "fragile_rate", order), ["fragile", "chances", "fragile_rate"],
         "pruning_fragile", {
        "fragile_rate": st.column_config.ProgressColumn("rate", format="percent", min_value=0.0, max_value=1.0),
    })  # fmt: skip


def corruption_fragile() -> None:
    st.caption(
        "Right on the clean image, wrong under a corruption; the breaking severity is the lowest that fails. "
        "It breaks first under the corruption that breaks it for the most models at that severity; among equals, "
        "the first in the benchmark's order."
    )
    if not corrupted_ids:
        st.info("No corrupted condition matches the filters.")
        return
    order = rank_by()
    table = store.cached(queries.corruption_fragile_samples, snapshot, tuple(selected), corrupted_ids)
    show(queries.ranked(table, "broken", "broken_rate", order),
         ["broken", "broken_rate", "lowest_severity", "mean_severity", "first_to_break"], "corruption_fragile", {
        "broken_rate": st.column_config.ProgressColumn("rate", format="percent", min_value=0.0, max_value=1.0),
        "first_to_break": st.column_config.TextColumn(
            "breaks first under",
            help="at the lowest severity that breaks the sample, the corruption that breaks it for the most "
            "models; among equals, the first in the benchmark's order",
        ),
    })  # fmt: skip


def identified_exemplars() -> None:
    dense_count = len(roles.dense_ids(snapshot.models))
    population = (
        f"This snapshot has {dense_count} dense model; for a population, compute with --seeds 3."
        if dense_count < 2
        else ""
    )
    st.caption(
        "Hooker et al.: the most common prediction of the pruned models differs from that of the dense models "
        "(clean images; a tie counts as agreement when it includes the dense answer). " + population
    )
    if not pruned:
        ui.no_pruned_model(snapshot, filters)
        return
    table = store.cached(queries.exemplars, snapshot, tuple(pruned)).with_columns(
        pl.col("dense_modal").list.eval(pl.element().cast(pl.String)).list.join("/"),
        pl.col("pruned_modal").list.eval(pl.element().cast(pl.String)).list.join("/"),
    )
    show(table, ["is_pie", "dense_modal", "pruned_modal", "pruned_share"], "exemplars", {
        "is_pie": st.column_config.CheckboxColumn("PIE"),
        "dense_modal": st.column_config.TextColumn("dense says"),
        "pruned_modal": st.column_config.TextColumn("pruned say"),
        "pruned_share": st.column_config.ProgressColumn(
            "pruned agreeing with dense", format="percent", min_value=0.0, max_value=1.0
        ),
    })  # fmt: skip


def robust() -> None:
    st.caption("Right for every selected model under every selected condition, or nearly so.")
    table = store.cached(queries.robust_samples, snapshot, tuple(selected), condition_ids)
    show(table, ["accuracy", "pairs"], "robust", {
        "accuracy": st.column_config.ProgressColumn("accuracy", format="percent", min_value=0.0, max_value=1.0),
    })  # fmt: skip


# Only the open tab runs (each one scans per-sample rows); the URL keeps which one is open.
ui.show_open_tab(
    {
        "Pruning-fragile": pruning_fragile,
        "Corruption-fragile": corruption_fragile,
        "Pruning identified exemplars": identified_exemplars,
        "Robust": robust,
    },
    key="fragile_view",
)
