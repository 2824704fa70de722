"""The admin's review pages: editing a campaign, adjudication, label downloads, accounts."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from assay.review import campaigns, labelling, resolution, worksets
from assay.review.accounts import user_by_name
from tests.reviewing import PASSWORD
from tests.web.test_review import _client, _csrf, _login, _store

pytestmark = pytest.mark.anyio


def _tie(app, name="c1"):  # type: ignore[no-untyped-def]
    """ana and ben disagree on the first item of ``name``; returns its id."""
    engine = _store(app)
    c = campaigns.get_campaign(engine, name)
    ana, ben = user_by_name(engine, "ana"), user_by_name(engine, "ben")
    item = worksets.take_workset(engine, c, ana, size=1, ttl_s=600).items[0].item_id
    worksets.take_workset(engine, c, ben, size=1, ttl_s=600)
    labelling.submit_label(engine, c, ana, item, "True", "it adds spam", ttl_s=600)
    labelling.submit_label(engine, c, ben, item, "False", "a fair edit", ttl_s=600)
    return item


async def test_admin_settles_a_tie_on_the_adjudication_page(app):
    item = _tie(app)
    async with _client(app) as c:
        csrf = await _login(c, "root")
        page = await c.get("/review/campaigns/c1/adjudicate")
        assert page.status_code == 200
        assert "it adds spam" in page.text and "a fair edit" in page.text  # both labels and comments
        assert "waits for an admin" in page.text and "How an item" in page.text
        r = await c.post(
            "/review/campaigns/c1/adjudicate",
            data={"csrf_token": csrf, "item_id": item, "label": "True", "rationale": "links to a spam site"},
        )
        assert r.status_code == 303 and f"settled={item}" in r.headers["location"]
        row = resolution.resolved_item(_store(app), campaigns.get_campaign(_store(app), "c1"), item)
        assert (row["label"], row["status"]) == ("True", "judgment")
        # Bad input is a 4xx naming the problem; nothing is recorded.
        for data, status in (
            ({"item_id": item, "label": "maybe"}, 422),
            ({"item_id": "no-such-item", "label": "True"}, 404),
            ({"item_id": item, "label": "True", "rationale": "x" * 4001}, 422),
        ):
            r = await c.post("/review/campaigns/c1/adjudicate", data={"csrf_token": csrf, **data})
            assert r.status_code == status, (data, r.text[:200])
        r = await c.post("/review/campaigns/c1/adjudicate", data={"item_id": item, "label": "False"})
        assert r.status_code == 403  # no CSRF token
        assert (await c.get("/review/campaigns/c1/adjudicate?offset=-1")).status_code == 422
    async with _client(app) as c:
        csrf = await _login(c, "ana")
        assert (await c.get("/review/campaigns/c1/adjudicate")).status_code == 403
        r = await c.post(
            "/review/campaigns/c1/adjudicate", data={"csrf_token": csrf, "item_id": item, "label": "False"}
        )
        assert r.status_code == 403


async def test_admin_edits_guidelines_descriptions_and_the_tie_cap(app):
    item = _tie(app)
    async with _client(app) as c:
        csrf = await _login(c, "root")
        form = {
            "csrf_token": csrf,
            "description": "Is this edit damaging?",
            "guidelines": "Vandalism is damaging.\n\nA test edit is not.",
            "describe:True": "The edit harms the article",
            "describe:False": "A good-faith edit",
            "extra_labels": "2",
            "reviewers": "",
        }
        r = await c.post("/review/campaigns/c1/edit", data=form)
        assert r.status_code == 303
        c1 = campaigns.get_campaign(_store(app), "c1")
        assert c1.extra_labels == 2 and c1.class_descriptions["True"] == "The edit harms the article"
        assert c1.guidelines.startswith("Vandalism")
        # The raised cap requeued the tie: it wants a third label now.
        row = resolution.resolved_item(_store(app), c1, item)
        assert "requeued for label 3 of up to 4" in row["reason"]
        work = await c.get("/review/campaigns/c1/work")
        assert "Vandalism is damaging." in work.text and "A good-faith edit" in work.text
        for bad, field in (
            ({"extra_labels": "11"}, "extra labels"),
            ({"extra_labels": "two"}, "extra labels must be a whole number"),
            ({"guidelines": "x" * 20_001}, "guidelines"),
            ({"describe:True": "x" * 501}, "class description"),
            ({"reviewers": "nobody"}, "no user named"),
        ):
            r = await c.post("/review/campaigns/c1/edit", data={**form, **bad})
            assert r.status_code == 422 and field in r.text, bad
        assert (
            await c.post("/review/campaigns/c1/edit", data={**form, "csrf_token": "forged"})
        ).status_code == 403
        assert (await c.post("/review/campaigns/nope/edit", data=form)).status_code == 404
        r = await c.post("/review/campaigns/c1/status", data={"csrf_token": csrf, "status": "closed"})
        assert r.status_code == 303 and not campaigns.get_campaign(_store(app), "c1").is_open
    async with _client(app) as c:
        csrf = await _login(c, "ana")
        assert (
            await c.post("/review/campaigns/c1/edit", data={**form, "csrf_token": csrf})
        ).status_code == 403


async def test_admin_downloads_the_labels_training_reads(app):
    _tie(app)
    engine = _store(app)
    c1 = campaigns.get_campaign(engine, "c1")
    async with _client(app) as c:
        await _login(c, "root")
        r = await c.get("/review/campaigns/c1/labels.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        got = pd.read_csv(io.StringIO(r.text), dtype={"id": str})
        assert got["id"].tolist() == resolution.resolved_labels(engine, c1)["id"].tolist()
        every = pd.read_csv(io.StringIO((await c.get("/review/campaigns/c1/labels.csv?kind=all")).text))
        assert len(every) == c1.item_count and "reason" in every.columns
        raw = pd.read_csv(io.StringIO((await c.get("/review/campaigns/c1/labels.csv?kind=raw")).text))
        assert sorted(raw["comment"]) == ["a fair edit", "it adds spam"]
        r = await c.get("/review/campaigns/c1/labels.csv?kind=secret")
        assert r.status_code == 422 and "kind must be one of" in r.text
    async with _client(app) as c:
        await _login(c, "ana")
        assert (await c.get("/review/campaigns/c1/labels.csv")).status_code == 403


async def test_admin_disables_a_user_and_resets_a_password(app):
    async with _client(app) as ana:
        await _login(ana, "ana")
        async with _client(app) as c:
            csrf = await _login(c, "root")
            r = await c.post("/review/users/ana/disabled", data={"csrf_token": csrf, "enable": "0"})
            assert r.status_code == 303 and "disabled" in r.headers["location"]
            assert user_by_name(_store(app), "ana").disabled
            assert (await ana.get("/review/")).status_code == 303  # her session ended
            r = await c.post("/review/users/root/disabled", data={"csrf_token": csrf, "enable": "0"})
            assert r.status_code == 409 and "your own account" in r.text
            r = await c.post("/review/users/ana/disabled", data={"csrf_token": csrf, "enable": "1"})
            assert r.status_code == 303 and not user_by_name(_store(app), "ana").disabled
            assert (
                await c.post("/review/users/nobody/disabled", data={"csrf_token": csrf})
            ).status_code == 404
            r = await c.post("/review/users/ben/password", data={"csrf_token": csrf, "password": "short"})
            assert r.status_code == 422 and "password" in r.text.lower()
            new = "violet-harbor-kettle-73"
            r = await c.post("/review/users/ben/password", data={"csrf_token": csrf, "password": new})
            assert r.status_code == 303
            r = await c.post("/review/users/ben/password", data={"password": new})
            assert r.status_code == 403  # no CSRF token
        async with _client(app) as ben:
            page = await ben.get("/review/login")
            data = {"username": "ben", "csrf_token": _csrf(page.text), "next": "/review/"}
            assert (await ben.post("/review/login", data={**data, "password": PASSWORD})).status_code == 401
            assert (await ben.post("/review/login", data={**data, "password": new})).status_code == 303
        csrf = _csrf((await ana.get("/review/login")).text)
        r = await ana.post("/review/users/ben/disabled", data={"csrf_token": csrf, "enable": "0"})
        assert r.status_code in (303, 401, 403) and not user_by_name(_store(app), "ben").disabled
