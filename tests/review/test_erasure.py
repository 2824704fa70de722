"""Forgetting items removes every trace review keeps of them, and nothing else."""

from __future__ import annotations

import sqlalchemy as sa

from assay.review import erasure, judgments, labelling, resolution, worksets
from assay.store import tables
from tests.reviewing import campaign, items_file, users


def test_forget_items_removes_labels_judgments_and_comments(trained_workspace, tmp_path):
    ws = trained_workspace
    c = campaign(ws, items_file(tmp_path / "items"), size=5, labels_per_item=1)
    ana, boss = users(ws, "ana", "boss")
    items = [i.item_id for i in worksets.take_workset(ws.engine, c, ana, size=5, ttl_s=600).items]
    for item_id in items:
        labelling.submit_label(ws.engine, c, ana, item_id, "True", "a comment", ttl_s=600)
    gone, kept = items[0], items[1]
    j = judgments.record_judgment(
        ws.engine,
        model="damaging",
        item_id=gone,
        label="False",
        classes=c.classes,
        author=ana,
        rationale="why",
    )
    judgments.endorse(ws.engine, j.id, boss, "endorse", "agreed")

    counts = erasure.forget_items(ws.engine, [gone], model="damaging")
    assert counts == {"campaign_items": 1, "labels": 1, "assignments": 1, "judgments": 1, "endorsements": 1}
    with ws.engine.connect() as conn:
        for table, column in ((tables.campaign_items, "item_id"), (tables.judgments, "item_id")):
            assert conn.execute(sa.select(sa.func.count()).where(table.c[column] == gone)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.endorsements)).scalar_one() == 0
    frame = resolution.resolved_labels(ws.engine, "c1")
    assert gone not in set(frame["id"]) and kept in set(frame["id"]) and len(frame) == 4
    assert erasure.forget_items(ws.engine, [gone])["campaign_items"] == 0  # a second time: nothing left
