"""Auto-label rules: items they settle skip review; rules are parsed and checked."""

from __future__ import annotations

from assay.review import resolution
from tests.reviewing import campaign, campaign_rows, label_all, users


def test_auto_label_rules_settle_items_without_review(ws, source):
    c = campaign(ws, source, size=100, auto_rules=["user_is_bot_or_sysop == true -> False"])
    items = campaign_rows(ws, c)
    bots = [i for i in items if i.features["user_is_bot_or_sysop"]]
    assert bots and all(i.auto_label == "False" and not i.available for i in bots)
    assert all(i.auto_label is None and i.available for i in items if not i.features["user_is_bot_or_sysop"])
    (ana,) = users(ws, "ana")
    given = label_all(ws, c, ana)
    assert not set(given) & {i.item_id for i in bots}
    frame = resolution.resolved_labels(ws.engine, c)
    auto = frame[frame["status"] == "auto"]
    assert set(auto["id"]) == {i.item_id for i in bots}
    assert set(auto["source"]) == {"auto: user_is_bot_or_sysop == true -> False"}
