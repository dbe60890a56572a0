"""The app in a real browser: Debian's chromium, driven by Playwright, against `streamlit run`.

Screenshots of every page go to $PRUNESCOPE_SCREENSHOTS when set (the README's come from
`PRUNESCOPE_SCREENSHOTS=docs/screenshots pytest tests/test_browser.py`), else to a
temporary folder. Needs /usr/bin/chromium (`apt-get install chromium`; .ci/run installs
it); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
PAGES = {
    "": "Overview",
    "methods": "Method comparison",
    "modelmap": "Model map",
    "layers": "Per-layer sparsity",
    "corruptions": "Corruption breakdown",
    "potential": "Prune potential",
    "classes": "Per class",
    "geometry": "Geometry of the last layer",
    "global_geometry": "Global geometry",
    "embedding": "Embedding",
    "fragile": "Fragile samples",
    "sample": "Sample detail",
}
README_VIEWS = ("", "corruptions", "geometry", "fragile", "sample")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path = REPO / "data", script: Path = REPO / "app.py") -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PRUNESCOPE_DATA": str(data)}
    command = [
        sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true", "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    # the server's log goes to a file: a pipe nobody reads fills up and stalls the server mid-test
    log = tempfile.NamedTemporaryFile(prefix="prunescope-streamlit-", suffix=".log", delete=False)
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit did not start: {Path(log.name).read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install chromium (.ci/run does it)"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


def open_page(browser, url: str, height: int = 1600):
    page = browser.new_page(viewport={"width": 1440, "height": height})
    page.goto(url, wait_until="commit", timeout=90_000)
    page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
    settle(page)
    return page


READY = """() => document.querySelector('[data-testid="stApp"]')
        ?.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-testid="stSkeleton"]')
    && [...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))"""


def settle(page) -> None:
    """Until the script run is over, no element is still a skeleton and the charts are drawn."""
    page.wait_for_selector("h1", timeout=60_000)
    page.wait_for_function(READY, timeout=90_000, polling=250)
    page.wait_for_timeout(1000)


def test_a_link_to_a_page_works_on_a_fresh_server(browser):
    """The first request to a new server is a deep link: app.py (routing, sidebar) must run."""
    proc, url = start_server()
    try:
        page = open_page(browser, f"{url}/fragile")
        assert page.locator("h1").first.inner_text() == "Fragile samples"
        assert page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").count() >= 1
        links = page.locator("[data-testid='stSidebarNavLink']").all_inner_texts()
        assert "Overview" in " ".join(links) and "app" not in [link.strip() for link in links]
        assert page.locator("[data-testid='stException']").count() == 0
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def server():
    proc, url = start_server()
    yield url
    proc.terminate()


def test_every_page_opens_without_an_error_and_is_photographed(browser, server, tmp_path):
    folder = Path(os.environ.get("PRUNESCOPE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    outside = []  # the app works offline: nothing it loads comes from another host
    for path, title in PAGES.items():
        outside.clear()
        page = browser.new_page(viewport={"width": 1440, "height": 2000 if path in README_VIEWS else 1400})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else 0)
        page.goto(f"{server}/{path}", wait_until="commit", timeout=90_000)
        page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
        settle(page)
        assert not outside, (path, outside)
        assert page.locator("h1").first.inner_text() == title, path
        assert page.locator("[data-testid='stException']").count() == 0, path
        alerts = page.locator("[data-testid='stAlert']").all_inner_texts()
        assert not [a for a in alerts if "failed" in a or "cannot" in a], (path, alerts)
        shot = folder / f"{path or 'overview'}.png"
        page.screenshot(path=str(shot))
        if path != "fragile":  # plotly mounts charts as they scroll into view
            page.mouse.move(800, 600)
            for _ in range(40):
                page.mouse.wheel(0, 1500)
            page.wait_for_selector(".js-plotly-plot", timeout=30_000)
        assert shot.stat().st_size > 20_000  # a real rendering, not a blank page
        cut = page.locator("[data-testid='stDownloadButton'] button").evaluate_all(
            "buttons => buttons.filter(b => b.scrollWidth > b.clientWidth + 1).map(b => b.innerText)"
        )
        assert not cut, (path, "labels cut short", cut)
        page.close()


def test_filters_in_the_address_reach_the_widgets_and_back(browser, server):
    page = open_page(browser, f"{server}/methods?methods=dense,imp,snip&severities=5")
    chips = page.locator("[data-testid='stSidebar'] [data-testid='stMultiSelect']").first.locator("[data-tag]")
    assert sorted(chips.evaluate_all("tags => tags.map(t => t.getAttribute('aria-label'))")) == ["dense", "imp", "snip"]
    assert "methods=dense%2Cimp%2Csnip" in page.url or "methods=dense,imp,snip" in page.url
    assert "severities=5" in page.url
    page.wait_for_selector(".js-plotly-plot .legendtext", timeout=30_000)
    legend = page.locator(".js-plotly-plot .legendtext").evaluate_all("nodes => nodes.map(n => n.textContent)")
    assert legend == ["imp", "snip"]  # dense is the dashed reference line, not a method line
    page.close()


def test_selecting_a_fragile_sample_opens_it(browser, server):
    page = open_page(browser, f"{server}/fragile")
    grid = page.locator("[data-testid='stDataFrame']").first
    box = grid.bounding_box()
    # the first data row's selection cell: left edge, below the header
    page.mouse.click(box["x"] + 12, box["y"] + 36 + 18)
    page.wait_for_url("**/sample?**", timeout=30_000)
    settle(page)
    assert page.locator("h1").first.inner_text() == "Sample detail"
    assert "sample=" in page.url
    assert page.locator("[data-testid='stImage']").count() >= 1
    page.close()


def test_a_fragile_tab_computes_on_click_and_goes_into_the_address(browser, server):
    page = open_page(browser, f"{server}/fragile")
    assert page.locator("[data-testid='stDataFrame']").count() == 1  # only the open tab ran
    page.get_by_role("tab", name="Robust").click()
    page.wait_for_url("**fragile_view=Robust**", timeout=30_000)
    settle(page)
    assert page.get_by_text("Right for every selected model").is_visible()
    assert page.locator("[data-testid='stDataFrame']").count() == 1
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()


def test_back_undoes_a_filter_change_and_a_page_switch_one_press_each(browser, server):
    page = open_page(browser, f"{server}/?snapshot=demo")
    slider = page.locator("[data-testid='stSidebar'] [data-testid='stSlider'] input[type='range']").first

    def state() -> tuple[int, str, str, str]:
        return (page.evaluate("history.length"), page.url.split("/", 3)[3], page.locator("h1").first.inner_text(),
                slider.get_attribute("aria-valuetext"))  # fmt: skip

    length, _, _, _ = state()
    slider.focus()
    page.keyboard.press("ArrowRight")  # the lower end of the target sparsity range, 0.00 to 0.01
    page.wait_for_url("**sparsity=0.01-1**", timeout=30_000)
    settle(page)
    assert state()[0] == length + 1, "a filter change is one history entry"
    page.locator("[data-testid='stSidebarNavLink']", has_text="Method comparison").click()
    page.wait_for_url("**/methods?**", timeout=30_000)
    settle(page)
    switched = state()
    assert switched[1:] == ("methods?snapshot=demo&sparsity=0.01-1", "Method comparison", "0.01")
    # one entry for the switch; Streamlit's frontend now and then adds a bare '/methods' before it
    # (a race between its own page push and the new run's first address, about 1 run in 5 here)
    assert switched[0] - length - 1 in (1, 2)
    for _ in range(switched[0] - length - 1):
        page.go_back()
        page.wait_for_timeout(500)
        settle(page)
    assert state()[1:] == ("?snapshot=demo&sparsity=0.01-1", "Overview", "0.01"), "Back: the page before"
    page.go_back()
    page.wait_for_url(lambda u: "sparsity" not in u, timeout=30_000)
    settle(page)
    assert state()[1:] == ("?snapshot=demo", "Overview", "0.00"), "the next Back undoes the filter, in the widget too"
    assert state()[0] == switched[0], "going back pushes nothing"
    page.close()
