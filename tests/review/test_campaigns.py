"""Campaign records: their options are checked, names are unique, who may label, blind campaigns."""

from __future__ import annotations

import pytest

from assay.errors import Conflict, DataError, Forbidden, InvalidInput
from assay.review import campaigns, resolution, worksets
from assay.review.autorules import parse_rule
from tests.reviewing import TTL, campaign, label_all, users


def test_rules_and_options_are_checked(ws, source):
    names, classes = ["words_added", "user_is_anon"], ["False", "True"]
    rule = parse_rule("words_added > 100 → True", names, classes)
    assert rule.matches({"words_added": 101}) and not rule.matches({"words_added": 100})
    assert not rule.matches({"words_added": None})
    assert parse_rule("user_is_anon == TRUE -> 'False'", names, classes).label == "False"
    for bad, match in [
        ("words_added >> 1 -> True", "form"),
        ("nope == 1 -> True", "no feature"),
        ("words_added == 1 -> maybe", "label must be"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            parse_rule(bad, names, classes)
    with pytest.raises(InvalidInput, match="link template"):
        campaign(ws, source, link_template="javascript:alert({id})")
    with pytest.raises(InvalidInput, match="labels per item"):
        campaign(ws, source, labels_per_item=0)
    with pytest.raises(InvalidInput, match="no user"):
        campaign(ws, source, reviewers=["ghost"])
    with pytest.raises(DataError, match="no id column"):
        campaign(ws, source, id_column="nope")
    campaign(ws, source, size=3)
    with pytest.raises(Conflict, match="already exists"):
        campaign(ws, source, size=3)


def test_who_may_label_and_closed_campaigns(ws, source):
    ana, ben = users(ws, "ana", "ben")
    c = campaign(ws, source, size=5, reviewers=["ana"])
    assert worksets.take_workset(ws.engine, c, ana, size=2, ttl_s=TTL)
    with pytest.raises(Forbidden):
        worksets.take_workset(ws.engine, c, ben, size=2, ttl_s=TTL)
    campaigns.set_status(ws.engine, c, "closed")
    closed = campaigns.get_campaign(ws.engine, c.name)
    with pytest.raises(Conflict, match="closed"):
        worksets.take_workset(ws.engine, closed, ana, size=2, ttl_s=TTL)


def test_blind_campaign_records_that_no_score_was_shown(ws, source):
    c = campaign(ws, source, size=3, blind=True)
    (ana,) = users(ws, "ana")
    label_all(ws, c, ana, lambda item: "True")
    raw = resolution.raw_labels(ws.engine, c)
    assert raw["shown_prediction"].isna().all() and raw["shown_probability"].isna().all()
    assert not resolution.resolved_labels(ws.engine, c)["score_shown"].any()
