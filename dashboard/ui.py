"""Streamlit pieces shared by app.py and the pages: the sidebar and error panels.

Every failure a user can meet becomes a message with the command that fixes it; no
traceback reaches the browser (it goes to the server log).
"""

from __future__ import annotations

import logging

import streamlit as st

from compute.snapshot import SnapshotError
from dashboard import store

log = logging.getLogger("prunescope")
SNAPSHOT_KEY = "snapshot_name"


def show_fix(message: str, command: str) -> None:
    st.error(message, icon=":material/error:")
    st.markdown("Run this in the project folder, then reload the page:")
    st.code(command, language="bash")


def sidebar() -> store.Snapshot | None:
    """The snapshot picker; returns the open snapshot, or None after showing why there is none."""
    root = store.data_root()
    entries = store.list_snapshots(root)
    with st.sidebar:
        st.markdown("## :material/content_cut: prunescope")
        st.caption("What did pruning do to my network?")
        if not entries:
            st.caption(f"Data root: `{root}`")
    if not entries:
        show_fix(f"No snapshot found under `{root}`.", store.build_command(root))
        return None

    by_name = {entry.name: entry for entry in entries}
    if SNAPSHOT_KEY not in st.session_state:
        wanted = st.query_params.get("snapshot")
        st.session_state[SNAPSHOT_KEY] = (
            wanted if wanted in by_name else ("demo" if "demo" in by_name else entries[0].name)
        )
    elif st.session_state[SNAPSHOT_KEY] not in by_name:
        st.session_state[SNAPSHOT_KEY] = entries[0].name
    with st.sidebar:
        name = st.selectbox(
            "Snapshot",
            list(by_name),
            key=SNAPSHOT_KEY,
            format_func=lambda n: n if by_name[n].error is None else f"{n} (damaged)",
            help=f"Snapshot folders under {root} (set PRUNESCOPE_DATA to look elsewhere)",
        )
    st.query_params["snapshot"] = name
    entry = by_name[name]
    if entry.error:
        show_fix(f"Snapshot `{name}` cannot be opened: {entry.error}", store.build_command(root))
        return None
    try:
        snapshot = store.open_snapshot(entry.path)
    except SnapshotError as err:
        show_fix(f"Snapshot `{name}` cannot be opened: {err}", store.build_command(root))
        return None
    with st.sidebar:
        dataset = snapshot.manifest.get("dataset", {})
        st.caption(
            f"{dataset.get('name', '?')} · {len(snapshot.models)} models · "
            f"{len(snapshot.conditions)} conditions · {len(snapshot.samples):,} samples"
        )
    st.session_state["snapshot"] = snapshot
    return snapshot


def current_snapshot() -> store.Snapshot:
    """The snapshot the sidebar opened (pages run only after it did)."""
    return st.session_state["snapshot"]


def run_page(page) -> None:
    """Run a page; an unexpected error becomes a short message, the traceback goes to the log."""
    try:
        page.run()
    except SnapshotError as err:
        show_fix(f"The snapshot cannot be read: {err}", store.build_command())
    except Exception as err:  # noqa: BLE001 - the app never shows a traceback
        log.exception("page %s failed", getattr(page, "title", page))
        st.error(
            f"This view failed: {type(err).__name__}: {err}. The snapshot may be damaged; "
            f"`prunescope validate <snapshot>` tells what is wrong.",
            icon=":material/error:",
        )
