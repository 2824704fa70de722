"""Labelling: unsure gives its slot back, changing one's mind, undo, one's own labels and numbers."""

from __future__ import annotations

import pytest

from assay.errors import Conflict, InvalidInput
from assay.review import labelling, progress, resolution, worksets
from tests.reviewing import TTL, campaign, users


def test_changing_a_label_to_and_from_unsure_moves_the_slot(ws, source):
    c = campaign(ws, source, size=3, labels_per_item=1)
    ana, ben = users(ws, "ana", "ben")
    w = worksets.take_workset(ws.engine, c, ana, size=3, ttl_s=TTL)
    first = w.items[0].item_id
    assert labelling.submit_label(ws.engine, c, ana, first, "True", ttl_s=TTL) == "saved"
    assert labelling.submit_label(ws.engine, c, ana, first, "unsure", ttl_s=TTL) == "updated"
    # The slot is free again: ben gets the item, and ana's unsure cannot take it back once he labels it.
    got = worksets.take_workset(ws.engine, c, ben, size=3, ttl_s=TTL)
    assert [i.item_id for i in got.items] == [first]
    labelling.submit_label(ws.engine, c, ben, first, "False", ttl_s=TTL)
    with pytest.raises(Conflict, match="has all the labels it wants"):
        labelling.submit_label(ws.engine, c, ana, first, "True", ttl_s=TTL)
    row = resolution.resolved_item(ws.engine, c, first)
    assert (row["label"], row["n_labels"], row["n_unsure"]) == ("False", 1, 1)


def test_undo_gives_the_item_back_to_label_again(ws, source):
    c = campaign(ws, source, size=4, labels_per_item=1)
    (ana,) = users(ws, "ana")
    with pytest.raises(Conflict, match="no label to undo"):
        labelling.undo_last(ws.engine, c, ana, ttl_s=TTL)
    w = worksets.take_workset(ws.engine, c, ana, size=4, ttl_s=TTL)
    a, b = w.items[0].item_id, w.items[1].item_id
    labelling.submit_label(ws.engine, c, ana, a, "True", ttl_s=TTL)
    labelling.submit_label(ws.engine, c, ana, b, "unsure", ttl_s=TTL)
    assert labelling.undo_last(ws.engine, c, ana, ttl_s=TTL) == b  # the most recent first
    assert labelling.undo_last(ws.engine, c, ana, ttl_s=TTL) == a
    w = worksets.get_workset(ws.engine, c, ana)
    assert w.next_item.item_id == a and w.finished == 0
    assert resolution.raw_labels(ws.engine, c).empty
    p = progress.measure(ws.engine, c)
    assert p.labels == 0
    # Labelled again, each exactly once.
    labelling.submit_label(ws.engine, c, ana, a, "False", ttl_s=TTL)
    labelling.submit_label(ws.engine, c, ana, b, "False", ttl_s=TTL)
    assert progress.measure(ws.engine, c).labels == 2


def test_undo_of_an_unsure_others_filled_meanwhile_is_refused(ws, source):
    c = campaign(ws, source, size=1, labels_per_item=1)
    ana, ben = users(ws, "ana", "ben")
    (item,) = worksets.take_workset(ws.engine, c, ana, size=1, ttl_s=TTL).items
    labelling.submit_label(ws.engine, c, ana, item.item_id, "unsure", ttl_s=TTL)
    worksets.take_workset(ws.engine, c, ben, size=1, ttl_s=TTL)
    labelling.submit_label(ws.engine, c, ben, item.item_id, "True", ttl_s=TTL)
    with pytest.raises(Conflict, match="your 'unsure' stays"):
        labelling.undo_last(ws.engine, c, ana, ttl_s=TTL)
    assert resolution.raw_labels(ws.engine, c)["label"].tolist() == ["unsure", "True"]


def test_my_labels_and_my_agreement(ws, source):
    c = campaign(ws, source, size=4, labels_per_item=2)
    ana, ben = users(ws, "ana", "ben")
    ids = [i.item_id for i in worksets.take_workset(ws.engine, c, ana, size=4, ttl_s=TTL).items]
    worksets.take_workset(ws.engine, c, ben, size=4, ttl_s=TTL)
    for k, item_id in enumerate(ids):
        labelling.submit_label(ws.engine, c, ana, item_id, "True", f"note {k}", ttl_s=TTL)
        labelling.submit_label(ws.engine, c, ben, item_id, "True" if k < 3 else "False", ttl_s=TTL)
    mine = labelling.my_labels(ws.engine, c, ana)
    assert [m.item_id for m in mine] == ids[::-1]  # newest first
    assert mine[0].others == {"False": 1} and mine[0].comment == "note 3"
    stats = progress.reviewer_stats(ws.engine, c, ana.id)
    assert (stats.labels, stats.unsure, stats.compared, stats.agreed) == (4, 0, 4, 3)
    assert stats.agreement == pytest.approx(0.75)
    assert labelling.my_labels(ws.engine, c, ana, limit=1, offset=1)[0].item_id == ids[2]


def test_labels_are_idempotent_and_can_be_changed(ws, source):
    c = campaign(ws, source, size=10)
    (ana,) = users(ws, "ana")
    item = worksets.take_workset(ws.engine, c, ana, size=2, ttl_s=TTL).items[0].item_id
    assert labelling.submit_label(ws.engine, c, ana, item, "True", "looks bad", ttl_s=TTL) == "saved"
    assert labelling.submit_label(ws.engine, c, ana, item, "True", "looks bad", ttl_s=TTL) == "updated"
    assert labelling.submit_label(ws.engine, c, ana, item, "unsure", ttl_s=TTL) == "updated"
    raw = resolution.raw_labels(ws.engine, c)
    assert raw[["id", "label"]].values.tolist() == [[item, "unsure"]]
    with pytest.raises(InvalidInput, match="label must be"):
        labelling.submit_label(ws.engine, c, ana, item, "maybe", ttl_s=TTL)


def test_cannot_label_what_you_do_not_hold(ws, source):
    c = campaign(ws, source, size=10)
    ana, ben = users(ws, "ana", "ben")
    item = worksets.take_workset(ws.engine, c, ana, size=1, ttl_s=TTL).items[0].item_id
    with pytest.raises(Conflict, match="not in your workset"):
        labelling.submit_label(ws.engine, c, ben, item, "True", ttl_s=TTL)
