"""Seconds from navigation to idle for every app page in a real browser, cold and warm.

Idle: Streamlit's script run is over, no element is a skeleton, every chart is drawn, and the
page has not changed for QUIET_MS; the time reported is that of the last change. Cold: the
first visit to the page on a freshly started server, from a browser with an empty cache.
Warm: the same page again in a new tab of the same browser profile, as a user who comes back
(a new session; the server's caches filled, the app's scripts in the browser's cache).

Two baselines run in the same process, each on its own server: Streamlit with no snapshot
(the app's sidebar and an error: the framework's own start-up) and a one-file Streamlit app
with a title and one three-point plotly chart (the floor of any page that draws a chart:
Streamlit loads plotly.js the first time a page draws a chart). Goal: every page at most 2 s
warm on 2 cores, or within 1.2 times the one-chart app where that floor itself is near 2 s.

Needs chromium (/usr/bin/chromium) and playwright, as the browser test does.
Run: python bench/app_pages.py [--data data] [--repeats 3] [--pages overview,methods,...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from compute.machine import cpu_model  # noqa: E402 - after the path insert
from tests.test_browser import ARGS, CHROMIUM, READY, start_server  # noqa: E402 - the browser test's server

PAGES = {
    "overview": "",
    "methods": "methods",
    "modelmap": "modelmap",
    "layers": "layers",
    "corruptions": "corruptions",
    "potential": "potential",
    "classes": "classes",
    "geometry": "geometry",
    "global geometry": "global_geometry",
    "embedding": "embedding",
    "fragile": "fragile",
    "sample": "sample",
}
GOAL_WARM_S = 2.0
GOAL_FLOOR_RATIO = 1.2
QUIET_MS = 1500
ONE_CHART = """import plotly.graph_objects as go
import streamlit as st

st.title("One chart")
st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 3, 2])))
"""
#: every DOM change stamps the time since navigation
WATCH = """new MutationObserver(() => { window.__changed = performance.now(); })
    .observe(document, {subtree: true, childList: true, attributes: true});"""
SETTLED = f"""() => document.querySelector('h1, [data-testid="stAlert"]') && ({READY})()
    && performance.now() - (window.__changed || 0) > {QUIET_MS}"""


def idle_after(profile, url: str) -> float:
    """Seconds from navigation to the page's last change before it went quiet, in a new tab."""
    page = profile.new_page()
    page.goto(url)
    page.wait_for_function(SETTLED, timeout=120_000, polling=100)
    seconds = page.evaluate("window.__changed") / 1000
    page.close()
    return seconds


def visits(browser, path: str, repeats: int, **server) -> tuple[float, float]:
    """(cold, median warm) seconds for one page on a server started for it alone."""
    proc, url = start_server(**server)
    profile = browser.new_context(viewport={"width": 1400, "height": 1000})
    profile.add_init_script(WATCH)
    try:
        cold = idle_after(profile, f"{url}/{path}")
        warm = statistics.median(idle_after(profile, f"{url}/{path}") for _ in range(repeats))
    finally:
        profile.close()
        proc.kill()
        proc.wait()
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / "data"), help="data root holding the demo (default data/)")
    parser.add_argument("--repeats", type=int, default=3, help="warm visits per page; the median is kept")
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names (default: all)")
    args = parser.parse_args()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as scratch:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        empty = Path(scratch) / "empty"
        empty.mkdir()
        one_chart = Path(scratch) / "one_chart.py"
        one_chart.write_text(ONE_CHART)
        framework = visits(browser, "", args.repeats, data=empty)
        floor = visits(browser, "", args.repeats, data=empty, script=one_chart)
        print(f"machine: {cpu_model()}, {platform.machine()}, chromium headless "
              "(software rendering)")  # fmt: skip
        print(f"baseline, no snapshot: cold {framework[0]:.2f} s, warm {framework[1]:.2f} s")
        print(f"baseline, one-chart app: cold {floor[0]:.2f} s, warm {floor[1]:.2f} s")
        goal = f"warm ≤ {GOAL_WARM_S:g} s or ≤ {GOAL_FLOOR_RATIO:g}× the one-chart app"
        print(f"| page | cold s | warm s | warm / one-chart app | {goal} |")
        print("|---|---|---|---|---|")
        slowest = 0.0
        for name, path in ((n, PAGES[n]) for n in args.pages.split(",")):
            cold, warm = visits(browser, path, args.repeats, data=Path(args.data))
            slowest = max(slowest, warm)
            ok = "yes" if warm <= max(GOAL_WARM_S, GOAL_FLOOR_RATIO * floor[1]) else "no"
            print(f"| {name} | {cold:.2f} | {warm:.2f} | {warm / floor[1]:.2f} | {ok} |", flush=True)
        browser.close()
    print(f"slowest warm page {slowest:.2f} s against the {GOAL_WARM_S:g} s goal")


if __name__ == "__main__":
    main()
