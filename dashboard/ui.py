"""Streamlit pieces shared by app.py and the pages: the sidebar and error panels.

Every failure a user can meet becomes a message with the command that fixes it; no
traceback reaches the browser (it goes to the server log).
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import streamlit as st

from compute.snapshot import SnapshotError, rebuild_hint
from dashboard import formats, queries, store
from dashboard.filters import CORRUPTION_FAMILIES, KEYS, Filters, read_query, shown_value

log = logging.getLogger("prunescope")
SNAPSHOT_KEY = "snapshot_name"


def show_fix(message: str, command: str) -> None:
    st.error(message, icon=":material/error:")
    st.markdown("Run this in the project folder, then reload the page:")
    st.code(command, language="bash")


def show_damaged(path: Path, problem: str) -> None:
    """A snapshot that does not open: the file at fault and the commands for this snapshot."""
    st.error(f"Snapshot `{path.name}` is damaged: {problem}.", icon=":material/error:")
    validate, *rebuild = store.fix_commands(path)
    st.markdown("`prunescope validate` lists every problem; run it in the project folder:")
    st.code(validate, language="bash")
    if rebuild:
        st.markdown("Rebuild it, then reload the page:")
        st.code(rebuild[0], language="bash")
    else:
        st.markdown(
            f"To rebuild it, run the command that wrote it (`prunescope compute`, `evaluate` or `merge`) "
            f"again with `--out {store.shown_path(path)} --overwrite`, then reload the page."
        )


def sidebar() -> store.Snapshot | None:
    """The snapshot picker; returns the open snapshot, or None after showing why there is none."""
    root = store.data_root()
    entries = store.list_snapshots(root)
    with st.sidebar:
        st.markdown("## :material/content_cut: prunescope")
        st.caption("What did pruning do to my network?")
        if not entries:
            st.caption(f"Data root: `{store.shown_path()}`")
    if not entries:
        show_fix(f"No snapshot found under `{store.shown_path()}`.", store.build_command())
        return None

    by_name = {entry.name: entry for entry in entries}
    if SNAPSHOT_KEY not in st.session_state:
        wanted = st.query_params.get("snapshot")
        fallback = "demo" if "demo" in by_name else entries[0].name
        st.session_state[SNAPSHOT_KEY] = wanted if wanted in by_name else fallback
        if wanted and wanted not in by_name:  # keep the fallback, but say so
            notice = f"No snapshot named `{shown_value(wanted)}` here; showing `{fallback}`."
            st.session_state["snapshot_notice"] = notice
    elif st.session_state[SNAPSHOT_KEY] not in by_name:
        st.session_state[SNAPSHOT_KEY] = entries[0].name
    elif address_moved() and st.query_params.get("snapshot") in by_name:  # Back or Forward in the browser
        st.session_state[SNAPSHOT_KEY] = st.query_params["snapshot"]
    with st.sidebar:
        name = st.selectbox(
            "Snapshot",
            list(by_name),
            key=SNAPSHOT_KEY,
            format_func=lambda n: n if by_name[n].error is None else f"{n} (damaged)",
            help=f"Snapshot folders under {store.shown_path()} (set PRUNESCOPE_DATA to look elsewhere)",
        )
    if "snapshot_notice" in st.session_state:
        st.info(st.session_state.pop("snapshot_notice"), icon=":material/info:")
    entry = by_name[name]
    if entry.error is None:
        try:
            snapshot = store.open_snapshot(entry.path)
        except SnapshotError as err:
            entry = store.SnapshotEntry(name, entry.path, err.problem)
    if entry.error is not None:
        show_damaged(entry.path, entry.error)
        if st.query_params.get("snapshot") != name:  # a reload shows the same snapshot
            st.query_params["snapshot"] = name
        return None
    with st.sidebar:
        dataset = snapshot.manifest.get("dataset", {})
        st.caption(
            f"{dataset.get('name', '?')} · {len(snapshot.models)} models · "
            f"{len(snapshot.conditions)} conditions · {len(snapshot.samples):,} samples"
        )
        answers_notice(snapshot)
        filters = filter_widgets(snapshot)
    if "address_notice" in st.session_state:
        st.caption(f":material/info: {st.session_state.pop('address_notice')}")
    st.session_state["snapshot"] = snapshot
    st.session_state["filters"] = filters
    write_url(name, filters)
    if filters.select_models(snapshot.models).is_empty():  # e.g. a sparsity range between the targets
        targets = ", ".join(f"{t:.0%}" for t in sorted(set(snapshot.models["target_sparsity"])) if t > 0)
        st.info(
            f"No model matches the filters ({filters.describe()}). Widen the target sparsity range (this snapshot's "
            f"targets: {targets}) or choose other methods in the sidebar.",
            icon=":material/filter_alt_off:",
        )
        return None
    return snapshot


def filter_widgets(snapshot: store.Snapshot) -> Filters:
    """The shared filters, initialised from the page address once per snapshot."""
    methods = sorted(set(snapshot.models["method"]), key=queries.method_rank)
    families = [f for f in CORRUPTION_FAMILIES if f in snapshot.conditions["family"].unique().to_list()]
    severities = sorted(set(snapshot.conditions.filter(pl.col("severity") > 0)["severity"].to_list()))
    # every value of a parameter, so that a repeated one (methods=imp&methods=snip) is named in the notice
    given = {key: st.query_params.get_all(key) for key in st.query_params}
    start, ignored = read_query(given, snapshot.models, snapshot.conditions)
    initial = {
        "f_methods": list(start.methods or methods),
        "f_sparsity": start.sparsity,
        "f_families": list(start.families or families),
        "f_severities": list(start.severities or severities),
        "f_models": list(start.models or []),  # picked on the model map, not a widget of its own
    }
    new_snapshot = st.session_state.get("filters_for") != str(snapshot.path)
    # Back or Forward in the browser brings an older address: the filters follow it
    new_snapshot = new_snapshot or address_moved()
    if new_snapshot and ignored:
        notice = f"Left out of the filters, as this snapshot cannot use them: {'; '.join(ignored)}"
        st.session_state["address_notice"] = notice
    for key, value in initial.items():
        # a new snapshot starts from its address; otherwise only a key Streamlit dropped
        # (widget state can go across a page switch) is restored, from the address
        if new_snapshot or key not in st.session_state:
            st.session_state[key] = value
    st.session_state["filters_for"] = str(snapshot.path)
    st.markdown("**Filters** · shared by every page and kept in the address")
    chosen_methods = st.multiselect("Methods", methods, key="f_methods")
    sparsity = st.slider("Target sparsity", 0.0, 1.0, step=0.01, key="f_sparsity", format="%.2f")
    chosen_families = st.multiselect("Corruption families", families, key="f_families") if families else []
    chosen_severities = st.multiselect("Severities", severities, key="f_severities") if severities else []
    if not chosen_methods:
        st.warning("No method selected: showing all.", icon=":material/filter_alt_off:")
    picked = tuple(st.session_state["f_models"])
    if picked:
        st.caption(f"Only the {len(picked)} models picked on the model map.")
        st.button("Show all models again", key="f_models_clear", on_click=lambda: st.session_state.update(f_models=[]))

    def narrowed(chosen: list, everything: list) -> tuple | None:
        """None (all) unless the widget keeps a proper, non-empty subset."""
        return tuple(chosen) if chosen and set(chosen) != set(everything) else None

    return Filters(
        methods=narrowed(chosen_methods, methods),
        sparsity=(float(sparsity[0]), float(sparsity[1])),
        families=narrowed(chosen_families, families),
        severities=narrowed(chosen_severities, severities),
        models=tuple(st.session_state["f_models"]) or None,
    )


WRITTEN_KEY = "address_written"


def address_moved() -> bool:
    """Whether the address holds other filters than this session last wrote: the browser went Back
    or Forward. A page switch starts its run without the address's parameters, which is no move."""
    written = st.session_state.get(WRITTEN_KEY)
    if written is None or "snapshot" not in st.query_params:
        return False
    return {key: st.query_params[key] for key in ("snapshot", *KEYS) if key in st.query_params} != written


def write_url(snapshot_name: str, filters: Filters) -> None:
    """Keep the address in step: snapshot, filters, and whatever page parameters it has.

    Every change of the query string is a browser history entry, so the changes go in one update:
    a filter change is one Back press, and a page switch, which starts the new page's run without
    the address's parameters, writes back the same query string (no entry of its own)."""
    wanted = {"snapshot": snapshot_name, **filters.to_query()}
    for key in KEYS:  # a filter back at "all" (one key at a time: the sidebar changes one widget per run)
        if key not in wanted and key in st.query_params:
            del st.query_params[key]
    changed = {key: value for key, value in wanted.items() if st.query_params.get(key) != value}
    if changed:
        st.query_params.update(changed)
    st.session_state[WRITTEN_KEY] = wanted


def current_filters() -> Filters:
    return st.session_state.get("filters", Filters())


def follow_default(key: str, default, options: list, basis) -> None:
    """Call before a widget (with `key`, and no index or default of its own) whose default depends
    on other choices, `basis`: the widget takes `default` when it is new, when its value is no
    longer an option, or when `basis` changed and the user has not picked a value of their own
    since the last default. A user's pick stays; a default never goes stale."""
    memo = f"_default_of_{key}"
    last = st.session_state.get(memo)  # (basis, default) of the last run
    missing = key not in st.session_state
    current = None if missing else st.session_state[key]
    picked = last is not None and not missing and current != last[1]
    if missing or current not in options or (last is not None and last[0] != basis and not picked):
        st.session_state[key] = default
    st.session_state[memo] = (basis, default)


def address_notice(value: str) -> None:
    """The small notice for a page parameter of the address the page cannot use, as the sidebar
    gives for the filters."""
    st.caption(f":material/info: Left out of the address, as this page cannot use it: {value}")


def answers_notice(snapshot: store.Snapshot) -> None:
    """Said in the sidebar of a snapshot that predates answers.parquet: the per-sample answers
    the views count (McNemar, per class, fragile samples, …) are computed from metrics/ once per
    session, which a rebuild makes unnecessary."""
    if not store.has_answers(snapshot):
        st.caption(
            f":material/info: {snapshot.name} predates answers.parquet (schema version "
            f"{snapshot.manifest.get('schema_version')}), so the per-sample answers the views count are computed "
            f"from metrics/ once per session, which is slow on a large snapshot. To write them: "
            f"{rebuild_hint(snapshot.path)}."
        )


def open_tab(names: list[str], key: str):
    """Tabs of which only the open one is computed and drawn (a browser without a GPU spends most of
    a page's time drawing charts), kept in the address as `key`. Returns the open tab's name and its
    container; an address value that names no tab gets the small notice."""
    asked = st.query_params.get_all(key)
    if len(asked) > 1 or (asked and asked[-1] not in names):
        repeated = f" (given {len(asked)} times)" if len(asked) > 1 else ""
        address_notice(f"{key}={shown_value(asked[-1])}{repeated}")
    tabs = st.tabs(names, key=key, bind="query-params")
    opened = next((i for i, tab in enumerate(tabs) if tab.open), 0)
    return names[opened], tabs[opened]


def show_open_tab(sections: dict, key: str) -> None:
    """A page's sections as tabs (name -> a function that draws it); only the open one runs."""
    opened, area = open_tab(list(sections), key)
    with area:
        sections[opened]()


def no_pruned_model(snapshot: store.Snapshot, filters: Filters) -> None:
    """The message of a view that needs a pruned model when the filters select none: which filter."""
    st.info(filters.why_no_pruned(snapshot.models), icon=":material/filter_alt_off:")


@dataclass(frozen=True)
class Selection:
    """What the sidebar filters select, as every page starts with it."""

    snapshot: store.Snapshot
    filters: Filters
    models: pl.DataFrame  # the selected rows of models.parquet
    model_ids: list[str]  # the same, in display order (method, sparsity, seed)
    conditions: pl.DataFrame  # the selected conditions, clean included
    corrupted: pl.DataFrame  # the selected corrupted conditions


def selection() -> Selection:
    snapshot, filters = current_snapshot(), current_filters()
    models = filters.select_models(snapshot.models)
    chosen = set(models["model_id"])
    order = [m for m in queries.models_table(snapshot)["model_id"] if m in chosen]
    conditions = filters.select_conditions(snapshot.conditions)
    corrupted = filters.select_conditions(snapshot.conditions, clean=False)
    return Selection(snapshot, filters, models, order, conditions, corrupted)


def table(
    frame: pl.DataFrame,
    name: str,
    key: str,
    *,
    labels: dict[str, str] | None = None,
    kinds: dict[str, str] | None = None,
    row_kinds: list[str | dict[str, str]] | None = None,
    special: dict | None = None,
    download: bool = True,
    **options,
):
    """Every table of the app: each column labelled, in its unit and precision (dashboard/formats.py),
    a missing value as "—", with CSV and Parquet downloads of the raw values. `labels` and `kinds`
    override the catalogue per column; `row_kinds` gives one kind per row instead, or per row a kind
    per column (a table whose rows are different quantities); `special` holds column configs that draw
    a column themselves (images, progress bars, check boxes). Returns st.dataframe's value (the
    selection, with on_select)."""
    special = special or {}
    labels, kinds = labels or {}, kinds or {}
    shown_frame = frame.to_pandas()
    styler = shown_frame.style
    config = dict(special)
    for name_, dtype in frame.schema.items():
        if name_ in special:
            continue
        entry = formats.column(name_, str(dtype))
        config[name_] = st.column_config.Column(labels.get(name_, entry.label), help=entry.help)
        if row_kinds is None or entry.kind == "text":
            kind = kinds.get(name_, entry.kind)
            styler = styler.format(lambda v, kind=kind: formats.shown(v, kind), subset=[name_], na_rep=formats.MISSING)
    if row_kinds is not None:
        numeric = [c for c, t in frame.schema.items() if c not in special and formats.column(c, str(t)).kind != "text"]
        for row, kind in enumerate(row_kinds):
            by_column = kind if isinstance(kind, dict) else dict.fromkeys(numeric, kind)
            for name_, one in by_column.items():
                styler = styler.format(
                    lambda v, one=one: formats.shown(v, one), subset=(shown_frame.index[[row]], [name_]),
                    na_rep=formats.MISSING,
                )  # fmt: skip
    event = st.dataframe(
        styler, hide_index=True, width="stretch", column_config=config, key=key, placeholder=formats.MISSING, **options
    )
    if download:
        download_buttons(frame, name, key=f"{key}_download")
    return event


def download_buttons(table: pl.DataFrame, name: str, key: str) -> None:
    """The table as CSV and as Parquet, side by side, each button as wide as its label."""
    row = st.container(horizontal=True)
    flat = table.select([c for c in table.columns if table.schema[c] != pl.Binary])
    row.download_button(
        "Download CSV", flat.write_csv(), f"{name}.csv", "text/csv", key=f"{key}_csv", icon=":material/download:"
    )
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    row.download_button(
        "Download Parquet", buffer.getvalue(), f"{name}.parquet", "application/octet-stream",
        key=f"{key}_parquet", icon=":material/download:",
    )  # fmt: skip


def subset_note(rows: pl.DataFrame, snapshot: store.Snapshot, of_class: int | None = None) -> None:
    """Say so when a per-sample view shows an evenly spaced subset of the samples (of one class)."""
    samples = snapshot.samples if of_class is None else snapshot.samples.filter(pl.col("label") == of_class)
    shown, total = rows["sample_id"].n_unique(), samples.height
    if 0 < shown < total:
        of = "" if of_class is None else " of the class"
        st.caption(f"An evenly spaced {shown:,} of the {total:,} samples{of}, to keep the view interactive.")


def image_uri(png: bytes | None) -> str | None:
    """A data: URL, as st.column_config.ImageColumn shows it."""
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def current_snapshot() -> store.Snapshot:
    """The snapshot the sidebar opened (pages run only after it did)."""
    return st.session_state["snapshot"]


def run_page(page) -> None:
    """Run a page; an unexpected error becomes a short message, the traceback goes to the log."""
    try:
        page.run()
    except SnapshotError as err:
        show_damaged(current_snapshot().path, err.problem)
    except Exception as err:  # noqa: BLE001 - the app never shows a traceback
        log.exception("page %s failed", getattr(page, "title", page))
        path = current_snapshot().path
        problem = store.find_damage(path, deep=True)
        if problem is not None:  # a file went bad after the snapshot was opened
            show_damaged(path, problem)
            return
        st.error(
            f"This view failed ({type(err).__name__}). The snapshot's files all open, so this is a bug in "
            "prunescope, not a problem with the snapshot; the server log has the details.",
            icon=":material/error:",
        )


SAMPLE_PAGE = "views/sample.py"


def open_sample(sample_id: int, queue: list[int] | None = None, clear: str | None = None) -> None:
    """Go to the sample detail page for `sample_id` (a list of selected samples comes first
    in its picker). `clear` names the widget whose selection led here, so coming back does
    not jump straight again."""
    st.session_state["sample_queue"] = list(queue or [sample_id])
    if clear and clear in st.session_state:
        del st.session_state[clear]
    # switch_page clears the address unless told what to keep: the snapshot and filters
    params = {**st.query_params.to_dict(), "sample": str(sample_id)}
    st.switch_page(SAMPLE_PAGE, query_params=params)


def requested_sample(ids: list[int]) -> int:
    """The sample the address asks for, else the last one shown, else the first."""
    value = str(st.query_params.get("sample", ""))
    if value in {str(i) for i in ids}:  # compared as text: '²' or 10,000 digits never reach int()
        return int(value)
    if value:
        st.caption(f":material/info: No sample `{shown_value(value)}` in this snapshot; showing another.")
    last = st.session_state.get("last_sample")
    return last if last in set(ids) else ids[0]


def remember_sample(sample_id: int) -> None:
    st.session_state["last_sample"] = sample_id
    if st.query_params.get("sample") != str(sample_id):
        st.query_params["sample"] = str(sample_id)
