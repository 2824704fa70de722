"""The review pages in real headless Chromium (Debian's, driven by Playwright) against ``assay serve``.

Two reviewers log in, take worksets, label with the keyboard, skip, watch the
progress bar; an admin then sees the agreement. Screenshots are written to
``test-output/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from assay.settings import Settings
from assay.store import tables
from assay.workspace import Workspace
from tests.browser import require_chromium, shot
from tests.reviewing import PASSWORD, Server, campaign, items_file, users

pytestmark = pytest.mark.browser


@pytest.fixture
def server(trained_home: Path, tmp_path: Path) -> Iterator[Server]:
    require_chromium()
    ws = Workspace.open(Settings.load(home=trained_home, environ={}))
    try:
        users(ws, "root", role="admin")
        users(ws, "ana", "ben")
        source = items_file(tmp_path / "items", n=200)
        # Made first, so that c1 (newer) heads the list the reviewers click in.
        campaign(ws, source, name="blind", size=4, blind=True)
        campaign(
            ws,
            source,
            size=30,
            labels_per_item=2,
            description="Is this edit damaging?",
            guidelines="Vandalism, spam and blanking are damaging.\n\nGood-faith mistakes are not.",
            class_descriptions={"True": "The edit harms the article", "False": "A good-faith edit"},
            extra_labels=1,
            link_template="https://en.wikipedia.org/wiki/?diff={id}",
            auto_rules=["user_is_bot_or_sysop == true -> False"],
        )
        engine = ws.engine
    finally:
        ws.close()
    srv = Server(trained_home, tmp_path / "server.log", env={"ASSAY_WORKSET_SIZE": "6"}).start()
    srv.engine = engine  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _log_in(browser, url: str, username: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(url + "/review/")
    assert "/review/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/review/?$"))
    return page


def _counts(page, selector: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    done, total = re.fullmatch(r"(\d+) of (\d+)", page.inner_text(selector)).groups()
    return int(done), int(total)


def _label_workset(page, keys: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Press one key per item (labels or 's' to skip); returns the item ids in the order seen.

    After every key the page names the item saved or skipped, the workset's count
    and bar are one further, and the campaign's label count is one further for a
    label (a skip adds no label).
    """
    seen = []
    for key in keys:
        item = page.inner_text("#item-id")
        seen.append(item)
        (finished, total), (labels, needed) = (
            _counts(page, "#workset-progress"),
            _counts(page, "#campaign-progress"),
        )
        page.keyboard.press(key)
        page.wait_for_selector("#saved, #skipped")
        assert page.inner_text("#saved, #skipped").find(item) >= 0
        assert _counts(page, "#workset-progress") == (finished + 1, total)
        assert page.get_attribute("#workset-bar", "value") == str(finished + 1)
        # A skip or an "unsure" adds no label: the item goes to someone else.
        counted = key not in ("s", "u")
        now_labels, now_needed = _counts(page, "#campaign-progress")
        # A label that ties the item's votes asks for one more label (the campaign allows one extra).
        assert now_labels == labels + counted and now_needed in (needed, needed + counted)
        assert page.get_attribute("#campaign-bar", "value") == str(labels + counted)
    return seen


def test_two_reviewers_and_an_admin_in_chromium(server, browser):
    ana = _log_in(browser, server.url, "ana")
    shot(ana, "01-campaigns")
    ana.click('a.button.primary:has-text("Review")')
    ana.click("#take-workset")
    ana.wait_for_selector("#item-id")
    assert "The model says" in ana.content() and "Why (for" in ana.content()
    assert ana.inner_text("#workset-progress") == "0 of 6"
    shot(ana, "02-item")

    # 1 = "False", 2 = "True", u = unsure, s = skip; the comment box takes typing without labelling.
    ana.keyboard.press("c")
    ana.keyboard.type("2 spaces, no label")
    ana.keyboard.press("Escape")
    assert ana.inner_text("#workset-progress") == "0 of 6"
    seen_by_ana = _label_workset(ana, ["1", "2", "u", "s", "1", "2"])
    assert "Workset done" in ana.content()
    assert ana.inner_text("#workset-progress") == "6 of 6" and _counts(ana, "#campaign-progress")[0] == 4
    shot(ana, "03-workset-done")
    skipped = seen_by_ana[3]

    with server.engine.connect() as conn:  # type: ignore[attr-defined]
        stored = dict(
            conn.execute(
                sa.select(tables.campaign_items.c.item_id, tables.labels.c.label).join(
                    tables.campaign_items, tables.campaign_items.c.id == tables.labels.c.campaign_item_id
                )
            ).all()
        )
    expected = dict(zip(seen_by_ana, ["False", "True", "unsure", None, "False", "True"], strict=True))
    assert stored == {k: v for k, v in expected.items() if v is not None}
    with server.engine.connect() as conn:  # type: ignore[attr-defined]
        comments = (
            conn.execute(sa.select(tables.labels.c.comment).where(tables.labels.c.comment != ""))
            .scalars()
            .all()
        )
    assert comments == ["2 spaces, no label"]  # typed into the comment box, not taken as shortcuts

    ben = _log_in(browser, server.url, "ben")
    ben.click('a.button.primary:has-text("Review")')
    ben.click("#take-workset")
    ben.wait_for_selector("#item-id")
    seen_by_ben = _label_workset(ben, ["1", "1", "2", "1", "1", "2"])
    # Ben gets ana's labelled items first (they need a second label), and her unsure and skip too.
    assert set(seen_by_ana) - {skipped} <= set(seen_by_ben)
    assert skipped in seen_by_ben
    ben.click("#take-workset")
    ben.wait_for_selector("#item-id")
    shot(ben, "04-second-reviewer")

    admin = _log_in(browser, server.url, "root")
    admin.click('a.button:has-text("Manage")')
    admin.wait_for_selector("#alpha")
    assert re.fullmatch(r"-?\d\.\d{3}", admin.inner_text("#alpha"))
    assert "ana / ben" in admin.content()
    assert admin.inner_text("#label-count").startswith("10 of ")  # ana 4 (one unsure, one skip), ben 6
    shot(admin, "05-admin")

    # A reviewer is turned away from the admin page.
    ana.goto(server.url + "/review/campaigns/c1")
    assert "Not allowed" in ana.content()
    ana.goto(server.url + f"/review/judgments?model=damaging&item={seen_by_ana[0]}&campaign=c1")
    ana.fill("textarea[name=rationale]", "A good-faith copy edit, not damage.")
    ana.click("text=Record judgment")
    ana.wait_for_selector("article.judgment")
    shot(ana, "06-judgments")


def test_a_blind_campaign_shows_no_prediction_in_chromium(server, browser):
    ana = _log_in(browser, server.url, "ana")
    ana.goto(server.url + "/review/campaigns/blind/work")
    ana.click("#take-workset")
    ana.wait_for_selector("#item-id")
    assert "Blind campaign" in ana.content() and "The model says" not in ana.content()
    ana.click("text=Judgments on this item")
    ana.fill("textarea[name=rationale]", "Reads like vandalism.")
    ana.click("text=Record judgment")
    ana.wait_for_selector("article.judgment")
    judged = ana.url
    text = ana.inner_text("main")
    assert "Reads like vandalism." in text and "predicted" not in text and "model said" not in text
    shot(ana, "07-blind-judgment")
    admin = _log_in(browser, server.url, "root")
    admin.goto(judged)
    assert "model said" in admin.inner_text("main")  # admins may see it


VIEWPORTS = {"1280": {"width": 1280, "height": 900}, "390": {"width": 390, "height": 844}}


def _page(browser, url: str, username: str, width: str, scheme: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=VIEWPORTS[width], color_scheme=scheme)
    page = context.new_page()
    page.goto(url + "/review/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/review/?$"))
    return page


def _fits(page) -> None:  # type: ignore[no-untyped-def]
    """Nothing is wider than the window: the page never scrolls sideways."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{page.url}: {widths[0]} px of content in a {widths[1]} px window"


def _dark(page) -> bool:  # type: ignore[no-untyped-def]
    rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
    return sum(int(v) for v in re.findall(r"\d+", rgb)[:3]) < 150


def test_review_pages_fit_the_screen_and_follow_the_dark_setting(server, browser):
    """At 1280 and 390 px, light and dark: nothing scrolls sideways, and the pages work by keyboard."""
    for round_, (width, scheme) in enumerate((("1280", "light"), ("390", "light"), ("390", "dark"))):
        item = _reviewer_round(server, browser, width, scheme, labels_so_far=round_)
        _admin_round(server, browser, width, scheme, item)


def _reviewer_round(server, browser, width: str, scheme: str, labels_so_far: int) -> str:  # type: ignore[no-untyped-def]
    ana = _page(browser, server.url, "ana", width, scheme)
    assert _dark(ana) == (scheme == "dark")
    _fits(ana)
    ana.goto(server.url + "/review/campaigns/c1/work")
    if not ana.is_visible("#item-id"):
        ana.click("#take-workset")
    ana.wait_for_selector("#item-id")
    assert ana.is_visible("#workset-expiry") and "min left" in ana.inner_text("#workset-expiry")
    ana.keyboard.press("g")  # the guidelines open
    assert "Vandalism, spam and blanking" in ana.inner_text("#guidelines")
    assert "The edit harms the article" in ana.inner_text("#label-form")
    _fits(ana)
    shot(ana, f"10-item-{width}-{scheme}")
    # The keyboard help: ? opens it, Esc closes it.
    ana.keyboard.press("?")
    assert ana.is_visible("#help") and "Undo your last label" in ana.inner_text("#help")
    shot(ana, f"11-help-{width}-{scheme}")
    ana.keyboard.press("Escape")
    assert not ana.is_visible("#help")
    # Label, then undo it with Z: the same item comes back.
    item = ana.inner_text("#item-id")
    ana.keyboard.press("2")
    ana.wait_for_selector("#saved")
    assert ana.is_visible("#undo")
    ana.keyboard.press("z")
    ana.wait_for_selector("#undone")
    assert ana.inner_text("#item-id") == item
    ana.keyboard.press("2")
    ana.wait_for_selector("#saved")
    assert f"{labels_so_far + 1}</strong> label" in ana.inner_html("#my-stats")
    ana.click("#my-labels-link")
    ana.wait_for_selector("#my-labels")
    assert item in ana.inner_text("#my-labels")
    _fits(ana)
    shot(ana, f"12-my-labels-{width}-{scheme}")
    ana.context.close()
    return item


def _admin_round(server, browser, width: str, scheme: str, item: str) -> None:  # type: ignore[no-untyped-def]
    admin = _page(browser, server.url, "root", width, scheme)
    for path, name in (
        ("/review/campaigns/c1", "13-campaign"),
        ("/review/campaigns/c1/adjudicate", "14-adjudicate"),
        ("/review/users", "15-users"),
        (f"/review/judgments?model=damaging&item={item}", "16-judgment-context"),
    ):
        admin.goto(server.url + path)
        assert admin.title() and "Error" not in admin.title()
        _fits(admin)
        shot(admin, f"{name}-{width}-{scheme}")
    assert admin.is_visible("#item-context")
    admin.context.close()
