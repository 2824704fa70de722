"""Worksets: claims no reviewer sees twice, the live workset, expiry giving items back."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from assay.errors import Conflict
from assay.review import labelling, progress, resolution, worksets
from assay.store import db, tables
from tests.reviewing import TTL, campaign, users


def test_no_reviewer_sees_an_item_twice_and_no_item_is_over_labelled(ws, source):
    c = campaign(ws, source, size=30, labels_per_item=2)
    people = users(ws, "ana", "ben", "cai")
    seen: dict[str, list[str]] = {}
    # Round-robin worksets so the three interleave.
    active = list(people)
    while active:
        for user in list(active):
            w = worksets.take_workset(ws.engine, c, user, size=4, ttl_s=TTL)
            if w is None:
                active.remove(user)
                continue
            for item in w.items:
                labelling.submit_label(ws.engine, c, user, item.item_id, "True", ttl_s=TTL)
                seen.setdefault(item.item_id, []).append(user.username)
    assert len(seen) == 30
    assert all(len(who) == 2 and len(set(who)) == 2 for who in seen.values())
    p = progress.measure(ws.engine, c)
    assert (p.labels, p.labels_needed, p.complete_items, p.fraction) == (60, 60, 30, 1.0)


def test_asking_again_returns_the_live_workset(ws, source):
    c = campaign(ws, source, size=30)
    (ana,) = users(ws, "ana")
    first = worksets.take_workset(ws.engine, c, ana, size=5, ttl_s=TTL)
    again = worksets.take_workset(ws.engine, c, ana, size=5, ttl_s=TTL)
    assert first.id == again.id and [i.item_id for i in first.items] == [i.item_id for i in again.items]
    assert first.next_item.item_id == first.items[0].item_id and first.finished == 0


def test_skip_gives_the_slot_to_someone_else_never_back(ws, source):
    c = campaign(ws, source, selection="list", ids=["100001", "100002"])
    ana, ben = users(ws, "ana", "ben")
    w = worksets.take_workset(ws.engine, c, ana, size=5, ttl_s=TTL)
    assert [i.item_id for i in w.items] == ["100001", "100002"]
    assert worksets.take_workset(ws.engine, c, ben, size=5, ttl_s=TTL) is None  # both slots held by ana
    labelling.skip_item(ws.engine, c, ana, "100001")
    labelling.skip_item(ws.engine, c, ana, "100001")  # a repeated skip is harmless
    with pytest.raises(Conflict):
        labelling.submit_label(ws.engine, c, ana, "100001", "True", ttl_s=TTL)
    labelling.submit_label(ws.engine, c, ana, "100002", "True", ttl_s=TTL)
    assert worksets.take_workset(ws.engine, c, ana, size=5, ttl_s=TTL) is None
    got = worksets.take_workset(ws.engine, c, ben, size=5, ttl_s=TTL)
    assert [i.item_id for i in got.items] == ["100001"]
    counts = {r["username"]: (r["labels"], r["skipped"]) for r in progress.measure(ws.engine, c).reviewers}
    assert counts == {"ana": (1, 1)}


def test_expired_worksets_go_back_to_the_pool(ws, source):
    c = campaign(ws, source, selection="list", ids=["100001", "100002", "100003"])
    ana, ben = users(ws, "ana", "ben")
    w = worksets.take_workset(ws.engine, c, ana, size=3, ttl_s=TTL)
    labelling.submit_label(ws.engine, c, ana, "100001", "True", ttl_s=TTL)
    assert worksets.take_workset(ws.engine, c, ben, size=3, ttl_s=TTL) is None
    with ws.engine.begin() as conn:  # ana walked away an hour ago
        conn.execute(
            sa.update(tables.worksets)
            .where(tables.worksets.c.id == w.id)
            .values(expires_at=db.now() - timedelta(seconds=1))
        )
    got = worksets.take_workset(ws.engine, c, ben, size=3, ttl_s=TTL)
    assert sorted(i.item_id for i in got.items) == ["100002", "100003"]
    with pytest.raises(Conflict):  # her stale page cannot label an item that is now ben's
        labelling.submit_label(ws.engine, c, ana, "100002", "True", ttl_s=TTL)
    assert resolution.resolved_labels(ws.engine, c, complete_only=False)["id"].tolist() == ["100001"]
    # Ben walks away too: the items go back to the pool, but never to ana, who had them first.
    with ws.engine.begin() as conn:
        conn.execute(
            sa.update(tables.worksets)
            .where(tables.worksets.c.id == got.id)
            .values(expires_at=db.now() - timedelta(seconds=1))
        )
    assert worksets.take_workset(ws.engine, c, ana, size=3, ttl_s=TTL) is None
    assert worksets.take_workset(ws.engine, c, ben, size=3, ttl_s=TTL) is None
    (cai,) = users(ws, "cai")
    third = worksets.take_workset(ws.engine, c, cai, size=3, ttl_s=TTL)
    assert sorted(i.item_id for i in third.items) == ["100002", "100003"]
    # What ana and ben hold now is only what they finished; nothing expired is theirs to label.
    assert [(i.item_id, i.state) for i in worksets.get_workset(ws.engine, c, ana).items] == [
        ("100001", "done")
    ]
    assert worksets.get_workset(ws.engine, c, ben).items == []
    with pytest.raises(Conflict, match="not in your workset"):
        labelling.skip_item(ws.engine, c, ben, "100002")
    with ws.engine.connect() as conn:
        claims = conn.execute(
            sa.select(tables.campaign_items.c.item_id, tables.campaign_items.c.claimed).order_by(
                tables.campaign_items.c.position
            )
        ).all()
    assert [tuple(r) for r in claims] == [("100001", 1), ("100002", 1), ("100003", 1)]
