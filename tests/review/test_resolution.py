"""Resolved labels: ties requeued or adjudicated, never dropped; judgments decide; export = training data."""

from __future__ import annotations

import functools
from collections import Counter

import pandas as pd
import pytest

from assay.errors import Forbidden, InvalidInput
from assay.modelling.datasets import read_labelled
from assay.modelling.spec_file import load_spec
from assay.review import campaigns, judgments, labelling, progress, resolution, worksets
from tests.reviewing import TTL, campaign, label_all, users


def _label_all(ws, c, user, choose):
    """Take worksets until none is left, labelling each item ``choose(item_id)``; returns item -> label."""
    given = {}
    while (w := worksets.take_workset(ws.engine, c, user, size=25, ttl_s=TTL)) is not None:
        for item in w.items:
            given[item.item_id] = choose(item.item_id)
            labelling.submit_label(ws.engine, c, user, item.item_id, given[item.item_id], ttl_s=TTL)
    return given


def _split(ws, c, n_tied):
    """ana and ben label every item of ``c``; they disagree on the first ``n_tied`` items (in position order)."""
    ana, ben = users(ws, "ana", "ben")
    order = [i.item_id for i in _all_items(ws, c)]
    tied = set(order[:n_tied])
    _label_all(ws, c, ana, lambda i: "True")
    _label_all(ws, c, ben, lambda i: "False" if i in tied else "True")
    return tied


def _all_items(ws, c):
    frame = resolution.resolved_frame(ws.engine, c)
    return [worksets.get_item(ws.engine, c, i) for i in frame["id"]]


def test_ties_get_another_reviewer_and_none_vanish(ws, source):
    """60 items labelled twice with 22 ties: the ties go to a third reviewer, and all 60 resolve."""
    c = campaign(ws, source, size=60, labels_per_item=2, extra_labels=1)
    tied = _split(ws, c, 22)
    frame = resolution.resolved_frame(ws.engine, c)
    assert len(frame) == 60  # nothing vanishes: every item has a row, resolved or not
    waiting = frame[frame["status"] == "tie"]
    assert set(waiting["id"]) == tied
    assert all("requeued for label 3 of up to 3" in r for r in waiting["reason"])
    assert len(resolution.resolved_labels(ws.engine, c)) == 38
    assert progress.measure(ws.engine, c).labels_needed == 60 * 2 + 22

    (cai,) = users(ws, "cai")
    given = _label_all(ws, c, cai, lambda i: "False")
    assert set(given) == tied  # the third reviewer is handed exactly the tied items
    labels = resolution.resolved_labels(ws.engine, c)
    assert len(labels) == 60
    assert set(labels[labels["label"] == "False"]["id"]) == tied
    assert set(labels.loc[labels["id"].isin(tied), "status"]) == {"majority"}
    p = progress.measure(ws.engine, c)
    assert (p.labels, p.labels_needed, p.complete_items) == (142, 142, 60)


def test_ties_past_the_cap_wait_for_an_admin_who_settles_them(ws, source):
    c = campaign(ws, source, size=30, labels_per_item=2)  # no extra labels: ties go to an admin
    tied = _split(ws, c, 7)
    (cai,) = users(ws, "cai")
    assert worksets.take_workset(ws.engine, c, cai, size=10, ttl_s=TTL) is None  # nothing requeued
    listed = resolution.disputes(ws.engine, c, limit=50)
    assert listed["total"] == 7 and {d["id"] for d in listed["items"]} == tied
    first = listed["items"][0]
    assert "waits for an admin" in first["reason"]
    assert {(x["reviewer"], x["label"]) for x in first["labels"]} == {("ana", "True"), ("ben", "False")}

    (boss,) = users(ws, "boss", role="admin")
    with pytest.raises(Forbidden):
        resolution.adjudicate(ws.engine, c, cai, first["id"], "False")
    with pytest.raises(InvalidInput):
        resolution.adjudicate(ws.engine, c, boss, first["id"], "maybe")
    for item_id in sorted(tied):
        resolution.adjudicate(ws.engine, c, boss, item_id, "False", "the diff removes a reference")
    labels = resolution.resolved_labels(ws.engine, c)
    assert len(labels) == 30
    settled = labels[labels["id"].isin(tied)]
    assert set(settled["status"]) == {"judgment"} and set(settled["label"]) == {"False"}
    assert all(r.startswith("judgment #") and "admin boss" in r for r in settled["reason"])


def test_raising_the_tie_cap_requeues_the_ties_waiting_at_the_old_one(ws, source):
    c = campaign(ws, source, size=20, labels_per_item=2)
    tied = _split(ws, c, 4)
    c = campaigns.edit_campaign(ws.engine, c, campaigns.CampaignEdit(extra_labels=2))
    (cai,) = users(ws, "cai")
    assert set(_label_all(ws, c, cai, lambda i: "True")) == tied
    assert len(resolution.resolved_labels(ws.engine, c)) == 20
    with pytest.raises(InvalidInput, match="extra labels"):
        campaigns.edit_campaign(
            ws.engine, c, campaigns.CampaignEdit(extra_labels=campaigns.MAX_EXTRA_LABELS + 1)
        )


def test_an_admins_preferred_judgment_decides_the_label(ws, source):
    """Two reviewers agree on True; the admin's preferred judgment says False, and False is what trains."""
    c = campaign(ws, source, size=10, labels_per_item=2)
    _split(ws, c, 0)
    item = resolution.resolved_labels(ws.engine, c)["id"].iloc[0]
    (boss,) = users(ws, "boss", role="admin")
    made = judgments.record_judgment(
        ws.engine, model="damaging", item_id=item, label="False", classes=c.classes, author=boss
    )
    row = resolution.resolved_item(ws.engine, c, item)
    assert (row["label"], row["status"]) == ("True", "unanimous")  # not preferred yet: the votes decide
    judgments.mark_preferred(ws.engine, made.id, boss)
    row = resolution.resolved_item(ws.engine, c, item)
    assert (row["label"], row["status"], row["judgment"]) == ("False", "judgment", made.id)
    labels = resolution.resolved_labels(ws.engine, c).set_index("id")
    assert labels.loc[item, "label"] == "False" and labels.loc[item, "source"] == f"judgment #{made.id}"


def test_unsure_gives_the_slot_to_someone_else(ws, source):
    """120 labels wanted; two "unsure" used to stall the campaign at 118/120."""
    c = campaign(ws, source, size=60, labels_per_item=2)
    ana, ben, cai = users(ws, "ana", "ben", "cai")
    order = [i.item_id for i in _all_items(ws, c)]
    unsure = set(order[:2])
    _label_all(ws, c, ana, lambda i: "unsure" if i in unsure else "True")
    _label_all(ws, c, ben, lambda i: "True")
    p = progress.measure(ws.engine, c)
    assert (p.labels, p.labels_needed) == (118, 120)
    assert set(_label_all(ws, c, cai, lambda i: "True")) == unsure  # the items went to someone else
    p = progress.measure(ws.engine, c)
    assert (p.labels, p.labels_needed, p.complete_items, p.fraction) == (120, 120, 60, 1.0)
    frame = resolution.resolved_labels(ws.engine, c).set_index("id")
    assert len(frame) == 60
    assert frame.loc[sorted(unsure)[0], "n_unsure"] == 1 and frame.loc[sorted(unsure)[0], "n_labels"] == 2
    raw = resolution.raw_labels(ws.engine, c)
    assert (raw["label"] == "unsure").sum() == 2  # who was unsure stays on record


def test_export_and_the_training_source_give_the_same_rows(ws, source, trained_home, tmp_path):
    c = campaign(ws, source, size=40, labels_per_item=2, extra_labels=1)
    _split(ws, c, 9)
    (boss,) = users(ws, "boss", role="admin")
    first_tie = resolution.disputes(ws.engine, c)["items"][0]["id"]
    resolution.adjudicate(ws.engine, c, boss, first_tie, "False")
    out = tmp_path / "labels.csv"
    n = resolution.export_labels(ws.engine, c, out)
    exported = pd.read_csv(out, dtype={"id": str})
    source_rows = resolution.resolved_labels(ws.engine, "c1")
    assert n == len(source_rows) == len(exported) == 40 - 9 + 1
    assert exported["id"].tolist() == source_rows["id"].tolist()
    assert exported["label"].astype(str).tolist() == source_rows["label"].tolist()
    assert exported["reason"].tolist() == source_rows["reason"].tolist()
    assert {"votes", "reviewers", "source", "judgment", "reason"} <= set(exported.columns)

    spec = load_spec(trained_home.parent / "data" / "damaging.toml")
    spec.data.campaign, spec.data.id, spec.data.train = "c1", "rev_id", [str(source)]
    spec.data.header, spec.data.columns = True, []
    data = read_labelled(spec, [str(source)], functools.partial(resolution.resolved_labels, ws.engine)("c1"))
    trained = dict(zip(data.ids.astype(str), data.labels.astype(str), strict=True))
    assert trained == dict(zip(exported["id"], exported["label"].astype(str), strict=True))


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ({"True": 3}, ("True", "unanimous")),
        ({"True": 2, "False": 1}, ("True", "majority")),
        ({"True": 1, "False": 1}, (None, "tie")),
        # "unsure" is no vote: it neither weakens a majority nor makes one
        ({"True": 2, "unsure": 1}, ("True", "unanimous")),
        ({"True": 1, "unsure": 1}, ("True", "unanimous")),
        ({"unsure": 2}, (None, "unlabelled")),
        ({}, (None, "unlabelled")),
        ({"True": 2, "False": 2, "unsure": 1}, (None, "tie")),
    ],
)
def test_resolution_rule(votes, expected):
    assert resolution.resolve(Counter(votes)) == expected


def test_export_with_provenance_csv_and_parquet(ws, source, tmp_path):
    c = campaign(ws, source, size=12, labels_per_item=2)
    ana, ben = users(ws, "ana", "ben")
    label_all(ws, c, ana, lambda item: "True")
    label_all(ws, c, ben, lambda item: "True" if int(item.item_id) % 2 else "False")
    n = resolution.export_labels(ws.engine, c, tmp_path / "out.csv")
    frame = pd.read_csv(tmp_path / "out.csv", dtype={"id": str, "label": str})
    assert n == len(frame) > 0
    assert set(frame["status"]) == {"unanimous"} and set(frame["label"]) == {"True"}
    assert {
        "id",
        "label",
        "reviewers",
        "model",
        "model_version",
        "model_prediction",
        "first_labelled_at",
    } <= set(frame.columns)
    assert set(frame["reviewers"].str.split(";").sum()) == {ana.pseudonym, ben.pseudonym}
    assert "ana" not in frame.to_csv()  # pseudonyms, never usernames
    everything = resolution.export_labels(ws.engine, c, tmp_path / "all.parquet", everything=True)
    assert everything == 12
    full = pd.read_parquet(tmp_path / "all.parquet")
    assert set(full["status"]) <= {"unanimous", "tie"}
    raw = resolution.export_labels(ws.engine, c, tmp_path / "raw.parquet", raw=True)
    assert raw == 24 and set(pd.read_parquet(tmp_path / "raw.parquet")["reviewer"]) == {
        ana.pseudonym,
        ben.pseudonym,
    }
    with pytest.raises(InvalidInput, match=r"csv or \.parquet"):
        resolution.export_labels(ws.engine, c, tmp_path / "out.xlsx")


def test_resolved_labels_as_a_label_source(ws, source):
    c = campaign(ws, source, size=8)
    (ana,) = users(ws, "ana")
    given = label_all(ws, c, ana)
    frame = resolution.resolved_labels(ws.engine, "c1")
    assert dict(zip(frame["id"], frame["label"], strict=True)) == given
    assert list(frame.columns[:2]) == ["id", "label"]
