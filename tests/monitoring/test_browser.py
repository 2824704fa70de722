"""The monitoring admin pages in real headless Chromium (Debian's, driven by Playwright) against
``assay serve``: an admin logs in, sees each model's monitors and opens the report with its plots.
Screenshots go to ``test-output/screenshots/`` for a person to look at."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assay.monitoring import checks
from assay.settings import Settings
from assay.workspace import Workspace
from tests.browser import require_chromium, shot
from tests.conftest import edits_frame
from tests.monitoring.conftest import log_frame
from tests.reviewing import PASSWORD, Server, users

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def server(trained_home: Path, tmp_path: Path) -> Iterator[Server]:
    require_chromium()
    day = 86400.0
    start = (np.floor(time.time() / day) - 4) * day  # four whole days, the last ending today at 00:00
    frame = edits_frame(4 * 1440, seed=30)
    frame.loc[2 * 1440 :, "words_added"] *= 3
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        users(ws, "root", role="admin")
        log_frame(ws, frame, start + np.arange(len(frame)) * 60.0)
        checks.check(ws.engine, ws.log, ws.registry, "damaging")
    finally:
        ws.close()
    srv = Server(trained_home, tmp_path / "server.log", env={"ASSAY_MONITOR_INTERVAL_S": "0"}).start()
    yield srv
    srv.stop()


def test_an_admin_reads_the_monitoring_pages(server: Server, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    problems: list[str] = []  # anything refused or missing, the browser's own favicon request aside
    page.on(
        "response", lambda r: problems.append(r.url) if r.status >= 400 and "favicon" not in r.url else None
    )
    page.goto(server.url + "/review/monitoring")
    assert "/review/login" in page.url  # not logged in: the login page, then back here
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/review/monitoring$"))
    section = page.locator("#model-damaging")
    assert section.locator("h2 .state").inner_text() == "warning"  # two drifting days of three needed
    row = section.locator("tr", has_text="feature:words_added")
    assert row.locator(".state").inner_text() == "warning"
    # The inline styles the page carries are allowed by its policy (the badge is coloured).
    assert row.locator(".state").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 242, 214)"
    shot(page, "monitoring-01-models")

    page.click("#model-damaging h2 a")
    page.wait_for_url(re.compile(r"/review/monitoring/damaging$"))
    assert page.locator("h1").inner_text().startswith("damaging")
    assert page.locator("figure svg").count() >= 3
    assert "features flagged: words_added (2 windows)" in page.inner_text("pre.summary")
    drift_cell = page.locator("tr", has_text="words_added").filter(has_text="DRIFT").first.locator("td.drift")
    assert drift_cell.evaluate("e => getComputedStyle(e).color") == "rgb(179, 38, 30)"
    shot(page, "monitoring-02-report")
    page.click("text=← all monitored models")
    page.wait_for_url(re.compile(r"/review/monitoring$"))
    assert problems == []
