"""prunescope dashboard: routing and the shared sidebar; pages in views/, logic in dashboard/.

The page folder is not called pages/: Streamlit treats a pages/ folder beside the entry
script as a legacy multipage app on a fresh server's first run, which skips this file
(and its sidebar) when that first request is a link to a page.
"""

from pathlib import Path

import streamlit as st

from dashboard import ui

# a local file: a material icon as the page icon is fetched from Google's servers on every page load
ICON = Path(__file__).parent / "assets" / "icon.png"
st.set_page_config(page_title="prunescope", page_icon=str(ICON), layout="wide")

PAGES = {
    "Models": [
        st.Page("views/overview.py", title="Overview", icon=":material/insights:", default=True),
        st.Page("views/methods.py", title="Method comparison", icon=":material/stacked_line_chart:"),
        st.Page("views/modelmap.py", title="Model map", icon=":material/hub:"),
        st.Page("views/layers.py", title="Per-layer sparsity", icon=":material/layers:"),
    ],
    "Robustness": [
        st.Page("views/corruptions.py", title="Corruption breakdown", icon=":material/grid_on:"),
        st.Page("views/potential.py", title="Prune potential", icon=":material/trending_down:"),
        st.Page("views/classes.py", title="Per class", icon=":material/category:"),
    ],
    "Inside the network": [
        st.Page("views/geometry.py", title="Geometry", icon=":material/explore:"),
        st.Page("views/global_geometry.py", title="Global geometry", icon=":material/line_axis:"),
        st.Page("views/embedding.py", title="Embedding", icon=":material/scatter_plot:"),
    ],
    "Samples": [
        st.Page("views/fragile.py", title="Fragile samples", icon=":material/broken_image:"),
        st.Page("views/sample.py", title="Sample detail", icon=":material/image_search:"),
    ],
}

page = st.navigation(PAGES)
if ui.sidebar() is not None:
    ui.run_page(page)
