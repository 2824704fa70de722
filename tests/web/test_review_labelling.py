"""The reviewer's pages beyond labelling: undo, "my labels", one's own numbers, the workset's expiry."""

from __future__ import annotations

import re

import pytest

from tests.web.test_review import _client, _csrf, _login

pytestmark = pytest.mark.anyio


async def _label_first(c, csrf, label="True"):  # type: ignore[no-untyped-def]
    await c.post("/review/campaigns/c1/workset", data={"csrf_token": csrf})
    page = await c.get("/review/campaigns/c1/work")
    item = re.search(r'id="item-id">([^<]+)<', page.text).group(1)
    r = await c.post("/review/campaigns/c1/label", data={"csrf_token": csrf, "item_id": item, "label": label})
    assert r.status_code == 303
    return item


async def test_undo_my_labels_and_my_numbers(app):
    async with _client(app) as c:
        csrf = await _login(c, "ana")
        item = await _label_first(c, csrf)
        page = await c.get(f"/review/campaigns/c1/work?saved={item}")
        assert 'id="undo"' in page.text and "Reserved for you until" in page.text and 'id="help"' in page.text
        assert re.search(r"You: <strong>1</strong> label", page.text)
        mine = await c.get("/review/campaigns/c1/mine")
        assert mine.status_code == 200 and item in mine.text
        r = await c.post("/review/campaigns/c1/undo", data={"csrf_token": _csrf(page.text)})
        assert r.status_code == 303 and f"undone={item}" in r.headers["location"]
        page = await c.get(r.headers["location"])
        assert f'id="item-id">{item}<' in page.text  # the item is back, to label again
        assert item not in (await c.get("/review/campaigns/c1/mine")).text
        r = await c.post("/review/campaigns/c1/undo", data={"csrf_token": _csrf(page.text)})
        assert r.status_code == 409 and "no label to undo" in r.text
        assert (await c.post("/review/campaigns/c1/undo", data={})).status_code == 403  # CSRF
        assert (await c.get("/review/campaigns/c1/mine?offset=abc")).status_code == 422
        assert (await c.get("/review/campaigns/c1/mine?offset=99999999999")).status_code == 422
        assert (await c.get("/review/campaigns/nope/mine")).status_code == 404
    async with _client(app) as c:
        csrf = await _login(c, "ben")
        # ben is no reviewer of only-ana: neither its labels page nor an undo there.
        assert (await c.get("/review/campaigns/only-ana/mine")).status_code == 403
        assert (await c.post("/review/campaigns/only-ana/undo", data={"csrf_token": csrf})).status_code == 403
    async with _client(app) as c:
        r = await c.get("/review/campaigns/c1/mine")
        assert r.status_code == 303 and "/review/login" in r.headers["location"]


async def test_judgments_page_shows_the_items_context(app):
    async with _client(app) as c:
        csrf = await _login(c, "ana")
        item = await _label_first(c, csrf)
        page = await c.get(f"/review/judgments?model=damaging&item={item}")
        assert page.status_code == 200 and 'id="item-context"' in page.text
        assert "in campaign c1" in page.text and "Features" in page.text
        assert 'id="item-resolution"' not in page.text  # the resolution is for admins
    async with _client(app) as c:
        await _login(c, "root")
        page = await c.get(f"/review/judgments?model=damaging&item={item}")
        assert 'id="item-resolution"' in page.text and "1 of 2 labels so far" in page.text
