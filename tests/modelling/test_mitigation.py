"""Mitigation: reweighing's weights, per-group thresholds against Fairlearn's ThresholdOptimizer,
and training that publishes a mitigated version with its trade-off."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin

from assay.errors import ArtifactError, SpecError
from assay.modelling.datasets import read_table
from assay.modelling.fairness import FairnessOptions, group_fairness
from assay.modelling.group_thresholds import (
    fit_group_thresholds,
    rates_by_threshold,
    thresholds_at,
)
from assay.modelling.mitigation import reweighing_weights
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.registry.contracts import CONSTRAINT_STAT
from assay.registry.records import check_card
from assay.serving.cache import MemoryCache
from assay.serving.features import FeatureTable
from assay.serving.scoring import Scorer
from assay.workspace import Workspace
from tests.conftest import EDITQUALITY_COLUMNS, write_mitigated_spec, write_multiclass_spec
from tests.modelling.test_fairness import check_against_fairlearn


class Scores(ClassifierMixin, BaseEstimator):
    """A fitted 'model' whose probability is the score column it is given."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Scores:
        self.classes_ = np.array([False, True])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=float)[:, 0]
        return np.c_[1 - s, s]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=float)[:, 0] >= 0.5


def biased(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores that run higher for group b at the same truth, and a base rate that differs by group."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    y = rng.random(n) < np.select([groups == "a", groups == "b"], [0.3, 0.45], 0.35)
    logit = (
        1.6 * (2 * y - 1)
        + np.select([groups == "a", groups == "b"], [-0.6, 0.8], 0.0)
        + rng.normal(0, 1.2, n)
    )
    return y, 1 / (1 + np.exp(-logit)), groups


def test_reweighing_makes_group_and_label_independent() -> None:
    y, _, groups = biased(5000, 1)
    w = reweighing_weights(groups, y)
    total = w.sum()
    for g in np.unique(groups):
        for label in (False, True):
            joint = w[(groups == g) & (y == label)].sum() / total
            assert joint == pytest.approx(np.mean(groups == g) * np.mean(y == label), rel=1e-9)
    assert total == pytest.approx(len(y), rel=1e-9)  # weights keep the data's size


@pytest.mark.parametrize("constraint", list(CONSTRAINT_STAT))
def test_group_thresholds_come_close_to_threshold_optimizer(constraint: str) -> None:
    """Fitted on one half, judged on the other: parity within reach of Fairlearn's randomised
    optimum at about its accuracy, and far less disparity than one threshold for everyone."""
    y, score, groups = biased(8000, 2)
    train, test = np.arange(len(y)) < 4000, np.arange(len(y)) >= 4000
    fitted = fit_group_thresholds(y[train], score[train], groups[train], constraint)
    ours = fitted.apply(score[test], groups[test])
    optimizer = ThresholdOptimizer(
        estimator=Scores().fit(None, None),
        constraints=constraint,
        prefit=True,
        predict_method="predict_proba",
    )
    optimizer.fit(score[train, None], y[train], sensitive_features=groups[train])
    theirs = optimizer.predict(score[test, None], sensitive_features=groups[test], random_state=0).astype(
        bool
    )
    plain = score[test] >= 0.5
    stat = CONSTRAINT_STAT[constraint]

    def disparity(pred: np.ndarray) -> float:
        return group_fairness(y[test], pred, score[test], groups[test], FairnessOptions())[stat]

    def accuracy(pred: np.ndarray) -> float:
        return float(np.mean(pred == y[test]))

    assert disparity(ours) <= disparity(theirs) + 0.04, (disparity(ours), disparity(theirs))
    assert disparity(ours) < disparity(plain) / 2, (disparity(ours), disparity(plain))
    assert accuracy(ours) >= accuracy(theirs) - 0.03, (accuracy(ours), accuracy(theirs))
    if constraint == "demographic_parity":  # and our block's numbers are Fairlearn's
        assert disparity(ours) == pytest.approx(
            demographic_parity_difference(y[test], ours, sensitive_features=groups[test]), abs=1e-12
        )
    if constraint == "equalized_odds":
        assert disparity(ours) == pytest.approx(
            equalized_odds_difference(y[test], ours, sensitive_features=groups[test]), abs=1e-12
        )


@pytest.mark.parametrize("constraint", list(CONSTRAINT_STAT))
def test_thresholds_at_a_point_give_each_group_the_populations_rates_there(constraint: str) -> None:
    y, score, groups = biased(6000, 4)
    reference = 0.7
    at = thresholds_at(y, score, groups, constraint, reference)
    assert at.fallback == reference and set(at.thresholds) == {"a", "b", "c"}
    overall = rates_by_threshold(y, score, np.array([reference]))
    rate = {"demographic_parity": "selection_rate", "true_positive_rate_parity": "tpr"}.get(constraint, "tpr")
    for g, t in at.thresholds.items():
        mine = rates_by_threshold(y[groups == g], score[groups == g], np.array([t]))
        assert abs(mine[rate][0] - overall[rate][0]) < 0.02, (g, mine[rate], overall[rate])
    # An item of no fitted group is decided at the reference, as the population is.
    assert at.apply(np.array([0.69, 0.71]), np.array(["zz", "zz"])).tolist() == [False, True]


@pytest.mark.parametrize("mitigation", ["thresholds", "reweighing"])
def test_a_mitigated_version_records_its_trade_off(
    workspace: Workspace, tmp_path: Path, mitigation: str
) -> None:
    spec = write_mitigated_spec(tmp_path / "data", mitigation)
    result = train(load_spec(spec), workspace.registry)
    loaded = workspace.registry.load(result.record)
    record = loaded.card["mitigation"]
    assert record["method"] == mitigation and record["attribute"] == "user_is_anon"
    before, after = record["before"], record["after"]
    # Anonymous edits are flagged far more often; mitigation removes most of that gap on held-out data.
    assert after["demographic_parity_difference"] < before["demographic_parity_difference"] / 2
    assert record["disparity_removed"] == pytest.approx(
        before["demographic_parity_difference"] - after["demographic_parity_difference"]
    )
    assert record["accuracy_lost"] == pytest.approx(before["accuracy"] - after["accuracy"])
    # The trade-off at every named operating point, each side at its own threshold.
    assert set(record["operating_points"]) == {
        n for n, p in loaded.card["operating_points"].items() if p["answer"]
    }
    for name, at in record["operating_points"].items():
        # The card's points are the published model's: the plain one's thresholds, or the reweighed one's.
        published = at["threshold_before" if mitigation == "thresholds" else "threshold_after"]
        assert published == loaded.card["operating_points"][name]["answer"]["threshold"]
        assert at["accuracy_lost"] == pytest.approx(at["before"]["accuracy"] - at["after"]["accuracy"])
        assert at["after"]["demographic_parity_difference"] <= at["before"]["demographic_parity_difference"]
        if mitigation == "thresholds":
            assert (
                set(at["thresholds"]) == {"True", "False"}
                and at["fallback_threshold"] == at["threshold_before"]
            )
        else:
            assert "thresholds" not in at and 0 <= at["threshold_after"] <= 1
    if mitigation == "thresholds":
        assert set(record["thresholds"]) == {"True", "False"} and 0 < record["fallback_threshold"] < 1
    # Group decisions are the scorer's now, not one operating point per group.
    assert not any("=" in name for name in loaded.operating_points)


def test_the_card_contract_refuses_a_malformed_mitigation_block(mitigated_template: Path) -> None:
    card = json.loads(next((mitigated_template / "home").rglob("card.json")).read_text())
    check_card(card)
    crafts = {
        "mitigation.method": {"method": "magic"},
        "mitigation.attribute": {"attribute": "not_sensitive"},
        "mitigation.fallback_threshold": {"fallback_threshold": 2.0},
        "mitigation.thresholds.True": {"thresholds": {"True": "high", "False": 0.4}},
        "mitigation.before.accuracy": {"before": {**card["mitigation"]["before"], "accuracy": -1}},
        "mitigation.operating_points.nope": {"operating_points": {"nope": {}}},
        "mitigation has unknown key 'unexpected'": {"unexpected": 1},
    }
    for field, change in crafts.items():
        with pytest.raises(ArtifactError, match=re.escape(field)):
            check_card({**card, "mitigation": {**card["mitigation"], **change}})
    no_fallback = {k: v for k, v in card["mitigation"].items() if k != "fallback_threshold"}
    with pytest.raises(ArtifactError, match="come together"):
        check_card({**card, "mitigation": no_fallback})
    reweighed = {**card["mitigation"], "method": "reweighing"}
    with pytest.raises(ArtifactError, match="belongs to per-group thresholds"):
        check_card({**card, "mitigation": reweighed})


def _multiclass_spec(folder: Path, mitigation: str) -> Path:
    spec = write_multiclass_spec(folder)
    kinds = 'kinds = { topic = "categorical" }'
    text = spec.read_text().replace(kinds, f'{kinds}\nsensitive = ["topic"]')
    spec.write_text(text + f'\n[fairness]\nmitigation = "{mitigation}"\nbootstrap = 20\n')
    return spec


def test_per_group_thresholds_are_refused_for_a_multiclass_model(
    workspace: Workspace, tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match=r"per-group thresholds need a binary model.*reweighing") as refused:
        train(load_spec(_multiclass_spec(tmp_path / "data", "thresholds")), workspace.registry)
    assert refused.value.field == "fairness.mitigation"
    assert workspace.registry.models() == []


def test_a_multiclass_model_is_reweighed(workspace: Workspace, tmp_path: Path) -> None:
    result = train(load_spec(_multiclass_spec(tmp_path / "data", "reweighing")), workspace.registry)
    card = workspace.registry.load(result.record).card
    record = card["mitigation"]
    assert record["method"] == "reweighing" and record["attribute"] == "topic"
    # Accuracy is the argmax's, as the evaluation reports it; no selection rate for a class choice.
    assert record["after"]["accuracy"] == pytest.approx(card["evaluation"]["accuracy"])
    assert "selection_rate" not in record["after"]
    # Each disparity is the worst class's one-vs-rest one.
    worst = max(
        block["demographic_parity_difference"]
        for block in card["evaluation"]["fairness"]["topic"].values()
        if block["demographic_parity_difference"] is not None
    )
    assert record["after"]["demographic_parity_difference"] == pytest.approx(worst)


def test_served_decisions_have_the_disparities_the_card_claims(mitigated_workspace: Workspace) -> None:
    """On the held-out rows, the decisions the scorer serves (each row at its group's threshold, the
    group a feature of ``fair`` and a declared column for ``fairctx``) have exactly the accuracy and
    disparities the card records, and the fairness at every operating point is Fairlearn's."""
    ws = mitigated_workspace
    frame = read_table(
        ws.settings.home.parent / "data" / "edits.test.tsv", header=False, columns=EDITQUALITY_COLUMNS
    )
    frame.attrs["source"] = "edits.test.tsv"
    y = frame["reverted"].astype(str).to_numpy() == "True"
    groups = frame["user_is_anon"].astype(str).to_numpy()
    scorer = Scorer(ws.registry, FeatureTable(ws.engine), MemoryCache(0))
    for name in ("fair", "fairctx"):
        served = scorer.model(name)
        card, m = served.loaded.card, served.loaded.card["mitigation"]
        out = scorer.score_frame(name, frame, id_column="rev_id", keys="api")
        p, decided = out["probability_true"].to_numpy(), out["prediction"].to_numpy(dtype=bool)
        for side, pred in (("before", p >= 0.5), ("after", decided)):
            assert m[side]["accuracy"] == pytest.approx(float(np.mean(pred == y)), abs=1e-12)
            fl_dp = demographic_parity_difference(y, pred, sensitive_features=groups)
            fl_eo = equalized_odds_difference(y, pred, sensitive_features=groups)
            assert m[side]["demographic_parity_difference"] == pytest.approx(fl_dp, abs=1e-9)
            assert m[side]["equalized_odds_difference"] == pytest.approx(fl_eo, abs=1e-9)
        assert m["after"]["demographic_parity_difference"] < m["before"]["demographic_parity_difference"] / 2
        assert served.groups is not None
        for point, at in m["operating_points"].items():
            flagged = p >= served.groups.limits(list(groups), point)
            fl_dp = demographic_parity_difference(y, flagged, sensitive_features=groups)
            assert at["after"]["demographic_parity_difference"] == pytest.approx(fl_dp, abs=1e-9)
            # A point's threshold is one held-out item's score as training computed it; the served
            # (compiled) arithmetic may put that item's score 1 ulp below, so the row at the point's
            # threshold is taken as training took it: flagged.
            t = card["operating_points"][point]["answer"]["threshold"] - 1e-12
            plain = demographic_parity_difference(y, p >= t, sensitive_features=groups)
            assert at["before"]["demographic_parity_difference"] == pytest.approx(plain, abs=1e-9)
            block = card["fairness_at_operating_points"][point]["user_is_anon"]
            check_against_fairlearn(block, y, p >= t, p, groups)
