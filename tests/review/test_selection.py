"""Choosing a campaign's items: random samples, flagged, uncertain, listed, from the feature table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from assay.errors import InvalidInput
from assay.review.campaigns import CampaignOptions, create_campaign
from assay.serving.features import FeatureTable
from assay.store import tables
from tests.reviewing import campaign, campaign_rows, scorer_for


def test_random_campaign_stores_scored_items_with_explanations(ws, source):
    c = campaign(ws, source, size=40, labels_per_item=2, link_template="https://example.org/?diff={id}")
    assert (c.item_count, c.model, c.model_version, c.classes) == (40, "damaging", 1, ["False", "True"])
    assert c.label_choices == ["False", "True", "unsure"]
    assert c.link("12 3") == "https://example.org/?diff=12%203"
    with ws.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.campaign_items).order_by(tables.campaign_items.c.position)).all()
    assert len({r.item_id for r in rows}) == 40
    first = rows[0]
    assert set(first.probabilities) == {"False", "True"}
    assert abs(sum(first.probabilities.values()) - 1) < 1e-9
    assert first.prediction in ("False", "True")
    assert first.features["user_is_anon"] in (True, False)  # typed, though the CSV holds strings
    assert first.explanation["contributions"] and "value" in first.explanation["contributions"][0]
    # The stored probability is the one the scoring API gives for the same item.
    score = scorer_for(ws).score(["damaging@1"], [{"id": first.item_id, "features": first.features}])
    assert score["scores"][first.item_id]["damaging@1"]["probability"]["true"] == pytest.approx(
        first.probabilities["True"]
    )


def test_same_seed_same_sample(ws, source):
    a = campaign(ws, source, name="a", size=30, seed=3)
    b = campaign(ws, source, name="b", size=30, seed=3)
    ids = [[i.item_id for i in campaign_rows(ws, c)] for c in (a, b)]
    assert ids[0] == ids[1]


def test_flagged_campaign_takes_items_at_the_operating_point(ws, source):
    loaded = ws.registry.load(ws.registry.resolve("damaging"))
    threshold = loaded.operating_points["likelybad"]["threshold"]
    by_name = campaign(ws, source, name="flag-op", selection="flagged", threshold="likelybad", size=None)
    by_query = campaign(
        ws,
        source,
        name="flag-q",
        selection="flagged",
        threshold="maximum recall @ precision >= 0.6",
        size=None,
    )
    assert by_name.selection["threshold"] == pytest.approx(threshold)
    assert by_query.selection["threshold"] == pytest.approx(threshold)
    items = campaign_rows(ws, by_name)
    assert items and all(i.probabilities["True"] >= threshold for i in items)
    everything = scorer_for(ws).score_frame("damaging", pd.read_csv(source), id_column="rev_id")
    assert len(items) == int((everything["probability_True"] >= threshold).sum())
    capped = campaign(ws, source, name="flag-cap", selection="flagged", threshold="likelybad", size=5)
    assert capped.item_count == 5
    with pytest.raises(InvalidInput, match="threshold"):
        campaign(
            ws, source, name="flag-bad", selection="flagged", threshold="maximum recall @ precision >= 1.5"
        )


def test_uncertain_campaign_starts_with_the_least_sure(ws, source):
    c = campaign(ws, source, selection="uncertain", size=25)
    margins = [abs(i.probabilities["True"] - 0.5) for i in campaign_rows(ws, c)]
    assert margins == sorted(margins)
    everything = scorer_for(ws).score_frame("damaging", pd.read_csv(source), id_column="rev_id")
    assert max(margins) <= np.sort(np.abs(everything["probability_True"] - 0.5))[24] + 1e-12


def test_list_campaign_keeps_the_order_and_refuses_unknown_ids(ws, source):
    c = campaign(ws, source, selection="list", ids=["100005", "100002", "100005", "100009"])
    assert [i.item_id for i in campaign_rows(ws, c)] == ["100005", "100002", "100009"]
    with pytest.raises(InvalidInput, match="not in the source"):
        campaign(ws, source, name="c2", selection="list", ids=["nope"])


def test_campaign_from_the_feature_table(ws, source):
    frame = pd.read_csv(source)
    FeatureTable(ws.engine).load_frame(
        "damaging", frame, ws.registry.load(ws.registry.resolve("damaging")).schema, id_column="rev_id"
    )
    opts = CampaignOptions(name="from-table", model="damaging", size=10)
    c = create_campaign(ws, scorer_for(ws), opts, created_by="admin")
    assert c.item_count == 10 and c.selection["source"] == "feature table"
