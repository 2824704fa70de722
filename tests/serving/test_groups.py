"""Per-group decisions: a version mitigated with per-group thresholds decides every score at the
item's group's threshold, whether the group is a feature or declared beside the features, and
says which threshold that was; one rule for requests, files and OIP tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from assay.errors import InvalidInput
from assay.registry.schema import Feature, FeatureSchema
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.groups import MISSING_GROUP, GroupDecision
from assay.serving.scoring import Scorer
from assay.workspace import Workspace
from tests.servers import edit_items
from tests.serving.test_scoring import ListSink

SIDE = {
    "accuracy": 0.8,
    "selection_rate": 0.3,
    "demographic_parity_difference": 0.1,
    "true_positive_rate_difference": 0.1,
    "equalized_odds_difference": 0.1,
    "demographic_parity_ratio": 0.5,
    "equalized_odds_ratio": 0.5,
}


def mitigation(thresholds: dict[str, float], fallback: float = 0.5) -> dict[str, Any]:
    trade = {"before": SIDE, "after": SIDE, "accuracy_lost": 0.0}
    point = {"threshold_before": 0.7, "thresholds": {g: t + 0.1 for g, t in thresholds.items()}}
    return {
        "method": "thresholds",
        "attribute": "group",
        "constraint": "demographic_parity",
        **trade,
        "thresholds": thresholds,
        "fallback_threshold": fallback,
        "operating_points": {"strict": {**point, "fallback_threshold": 0.7, **trade}},
    }


def test_a_declared_group_is_checked_and_missing_values_fall_back() -> None:
    schema = FeatureSchema([Feature("x", "numeric")])
    decision = GroupDecision.of(mitigation({"a": 0.3, "b": 0.6}), schema)  # type: ignore[arg-type]
    assert decision is not None and decision.feature is None
    X = np.zeros((4, 1))
    groups = decision.resolve(X, [{"group": "a"}, {"group": "b"}, None, {"other": 1}])
    assert groups == ["a", "b", None, None]
    assert decision.limits(groups).tolist() == [0.3, 0.6, 0.5, 0.5]
    assert decision.limits(groups, "strict").tolist() == pytest.approx([0.4, 0.7, 0.7, 0.7])
    [error] = decision.resolve(X[:1], [{"group": "A"}])
    assert isinstance(error, InvalidInput) and error.code == "unknown_group"
    assert error.field == "context.group" and "'A'" in error.message and "'a'" in error.message
    [bad] = decision.resolve(X[:1], [{"group": ["a"]}])
    assert isinstance(bad, InvalidInput) and bad.field == "context.group"
    # null is the (missing) group when training had one, else the fallback.
    assert decision.resolve(X[:1], [{"group": None}]) == [None]
    with_missing = GroupDecision.of(mitigation({"a": 0.3, MISSING_GROUP: 0.2}), schema)  # type: ignore[arg-type]
    assert with_missing is not None and with_missing.resolve(X[:1], [{"group": None}]) == [MISSING_GROUP]


@pytest.mark.parametrize(
    ("feature", "values", "groups"),
    [
        (Feature("group", "boolean"), [1.0, 0.0, np.nan], ["True", "False", None]),
        (Feature("group", "categorical", ["F", "M"]), [0.0, 1.0, np.nan], ["F", "M", None]),
        (Feature("group", "numeric"), [1.0, 2.0, 3.0], ["1", "2", None]),  # 3 is no group: the fallback
    ],
)
def test_a_feature_names_the_group_as_training_grouped_it(
    feature: Feature, values: list[float], groups: list[str | None]
) -> None:
    named = [g for g in groups if g is not None]
    decision = GroupDecision.of(mitigation(dict.fromkeys(named, 0.4)), FeatureSchema([feature]))  # type: ignore[arg-type]
    assert decision is not None and decision.feature == 0
    X = np.array(values)[:, None]
    assert decision.resolve(X, [None] * 3) == groups
    # A declared value that agrees is fine; one that disagrees is refused, not silently ignored.
    [conflict] = decision.resolve(X[:1], [{"group": named[1]}])
    assert isinstance(conflict, InvalidInput) and conflict.code == "context_conflict"


def _scorer(ws: Workspace) -> Scorer:
    return Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(1000))


def _record(ws: Workspace, name: str) -> dict[str, Any]:
    return ws.registry.load(ws.registry.resolve(name)).card["mitigation"]  # type: ignore[return-value]


def test_the_prediction_is_decided_at_the_feature_groups_threshold(mitigated_workspace: Workspace) -> None:
    scorer = _scorer(mitigated_workspace)
    record = _record(mitigated_workspace, "fair")
    items = edit_items(300, seed=11)
    scores = scorer.score(["fair"], items)["scores"]
    disagree = 0
    for item in items:
        score = scores[item["id"]]["fair"]
        group = str(item["features"]["user_is_anon"])
        p, t = score["probability"]["true"], record["thresholds"][group]
        assert score["decision"] == {"attribute": "user_is_anon", "group": group, "threshold": t}
        assert score["prediction"] is (p >= t)
        disagree += (p >= 0.5) != (p >= t)
        for name, point in record["operating_points"].items():
            assert score["operating_points"][name] is (p >= point["thresholds"][group])
    assert disagree > 0  # the group thresholds changed some decisions the plain one would take


def test_a_declared_group_decides_the_item_and_is_not_cached(mitigated_workspace: Workspace) -> None:
    ws = mitigated_workspace
    scorer = _scorer(ws)
    record = _record(ws, "fairctx")
    t_anon, t_named, fallback = (
        record["thresholds"]["True"],
        record["thresholds"]["False"],
        record["fallback_threshold"],
    )
    served = scorer.model("fairctx")
    assert "user_is_anon" not in served.names
    item = edit_items(1, seed=5)[0]
    features = {k: v for k, v in item["features"].items() if k != "user_is_anon"}
    FeatureTable(ws.engine).load_records(
        "fairctx", [{"id": "e1", "features": features}], served.loaded.schema
    )

    def score(**extra: Any) -> dict[str, Any]:
        return scorer.score(["fairctx"], [{"id": "e1", **extra}])["scores"]["e1"]["fairctx"]

    plain = score()  # cached now, decided at the fallback
    assert plain["decision"] == {"attribute": "user_is_anon", "group": None, "threshold": fallback}
    anon = score(context={"user_is_anon": True})
    assert anon["decision"]["threshold"] == t_anon and anon["decision"]["group"] == "True"
    assert anon["prediction"] is (anon["probability"]["true"] >= t_anon)
    named = score(context={"user_is_anon": "False", "campaign": "ignored"})
    assert named["decision"]["threshold"] == t_named
    assert score()["decision"]["group"] is None  # the cached plain score was not overwritten
    unknown = score(context={"user_is_anon": "maybe"})
    assert unknown["error"]["code"] == "unknown_group" and unknown["error"]["field"] == "context.user_is_anon"
    assert "'maybe'" in unknown["error"]["message"]
    assert score(context="True")["error"]["field"] == "context"
    with pytest.raises(InvalidInput, match="unknown field 'groups'"):
        scorer.score(["fairctx"], [{"id": "e1", "groups": {}}])


def test_a_file_declares_the_group_in_its_column(mitigated_workspace: Workspace) -> None:
    scorer = _scorer(mitigated_workspace)
    record = _record(mitigated_workspace, "fairctx")
    frame = pd.DataFrame([{"id": item["id"], **item["features"]} for item in edit_items(50, seed=8)])
    frame.attrs["source"] = "edits.csv"
    out = scorer.score_frame("fairctx", frame, id_column="id", keys="api")
    expected = [record["thresholds"][str(v)] for v in frame["user_is_anon"]]
    assert (
        out["threshold"].tolist() == expected
        and out["group"].tolist() == frame["user_is_anon"].astype(str).tolist()
    )
    assert (out["prediction"] == (out["probability_true"] >= out["threshold"])).all()
    # Each row of a request and of a file gets the same decision.
    items = [
        {
            "id": r["id"],
            "features": {k: r[k] for k in scorer.model("fairctx").names},
            "context": {"user_is_anon": r["user_is_anon"]},
        }
        for r in frame.to_dict("records")
    ]
    api = scorer.score(["fairctx"], items)["scores"]
    assert [api[i]["fairctx"]["prediction"] for i in out["id"]] == out["prediction"].tolist()
    no_column = scorer.score_frame("fairctx", frame.drop(columns="user_is_anon"), id_column="id")
    assert set(no_column["threshold"]) == {record["fallback_threshold"]} and no_column["group"].isna().all()
    frame["user_is_anon"] = frame["user_is_anon"].astype(object)
    frame.loc[7, "user_is_anon"] = "maybe"
    logged = ListSink()
    scorer.prediction_log = logged
    with pytest.raises(
        InvalidInput, match=r"edits.csv: row 7: 'user_is_anon' has no group 'maybe'"
    ) as refused:
        scorer.score_frame("fairctx", frame, id_column="id")
    assert refused.value.code == "unknown_group" and logged.batches == []  # a refused file logs nothing
