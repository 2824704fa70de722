"""Judgments: endorsements, disputes, the preferred judgment and the campaign's rule."""

from __future__ import annotations

import pytest

from assay.errors import Conflict, Forbidden, InvalidInput
from assay.review import judgments
from tests.reviewing import campaign, users


def test_judgments_endorse_dispute_and_preferred(ws, source):
    admin, ana, ben = users(ws, "root", role="admin") + users(ws, "ana", "ben")
    classes = ["False", "True"]
    j1 = judgments.record_judgment(
        ws.engine, model="damaging", item_id="1", label="False", classes=classes, author=ana
    )
    j2 = judgments.record_judgment(
        ws.engine, model="damaging", item_id="1", label="True", classes=classes, token_name="product"
    )
    assert j2.author == "token:product"
    judgments.endorse(ws.engine, j1.id, ben, "endorse", "agree")
    judgments.endorse(ws.engine, j1.id, ben, "dispute")  # a second call changes the stance
    got = judgments.get_judgment(ws.engine, j1.id)
    assert (got.endorse_count, got.dispute_count) == (0, 1)
    with pytest.raises(Conflict, match="your own"):
        judgments.endorse(ws.engine, j1.id, ana, "endorse")
    with pytest.raises(Forbidden):
        judgments.mark_preferred(ws.engine, j1.id, ana)
    judgments.mark_preferred(ws.engine, j1.id, admin)
    judgments.mark_preferred(ws.engine, j2.id, admin)
    found = judgments.judgments_for(ws.engine, "damaging", "1")
    assert [(j.id, j.preferred) for j in found] == [(j2.id, True), (j1.id, False)]
    with pytest.raises(InvalidInput, match="label must be"):
        judgments.record_judgment(
            ws.engine, model="damaging", item_id="1", label="x", classes=classes, author=ana
        )


def test_campaign_rule_prefers_the_most_endorsed_unless_an_admin_chose(ws, source):
    c = campaign(ws, source, size=3, judgment_rule="most_endorsed")
    admin, ana, ben, cai = users(ws, "root", role="admin") + users(ws, "ana", "ben", "cai")
    kw = {"model": "damaging", "item_id": "9", "classes": ["False", "True"], "campaign_id": c.id}
    j1 = judgments.record_judgment(ws.engine, label="False", author=ana, **kw)
    j2 = judgments.record_judgment(ws.engine, label="True", author=ben, **kw)
    judgments.endorse(ws.engine, j2.id, cai, "endorse")
    assert judgments.get_judgment(ws.engine, j2.id).preferred_by == judgments.RULE_MARK
    judgments.endorse(ws.engine, j1.id, cai, "endorse")
    judgments.endorse(ws.engine, j1.id, admin, "endorse")
    assert judgments.get_judgment(ws.engine, j1.id).preferred
    assert not judgments.get_judgment(ws.engine, j2.id).preferred
    judgments.mark_preferred(ws.engine, j2.id, admin)
    judgments.endorse(ws.engine, j1.id, ben, "endorse")  # the rule does not override the admin
    assert judgments.get_judgment(ws.engine, j2.id).preferred_by == "root"
