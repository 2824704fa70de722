"""Mitigation: reweighing's weights, per-group thresholds against Fairlearn's ThresholdOptimizer,
and training that publishes a mitigated version with its trade-off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin

from assay.errors import SpecError
from assay.modelling.fairness import FairnessOptions, group_fairness
from assay.modelling.mitigation import (
    CONSTRAINT_STAT,
    apply_group_thresholds,
    fit_group_thresholds,
    reweighing_weights,
)
from assay.modelling.spec_file import load_spec
from assay.modelling.training import train
from assay.workspace import Workspace
from tests.conftest import write_binary_spec, write_multiclass_spec


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
    thresholds = fit_group_thresholds(y[train], score[train], groups[train], constraint)
    ours = apply_group_thresholds(score[test], groups[test], thresholds)
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


def _spec_with_mitigation(folder: Path, mitigation: str) -> Path:
    spec = write_binary_spec(folder, n_train=1000, n_test=600)
    text = spec.read_text().replace("fairness = {{ equalized_odds_difference = 0.99 }}", "")
    spec.write_text(
        text
        + f'\n[fairness]\nmitigation = "{mitigation}"\nconstraint = "demographic_parity"\nbootstrap = 50\n'
    )
    return spec


@pytest.mark.parametrize("mitigation", ["thresholds", "reweighing"])
def test_a_mitigated_version_records_its_trade_off(
    workspace: Workspace, tmp_path: Path, mitigation: str
) -> None:
    result = train(load_spec(_spec_with_mitigation(tmp_path / "data", mitigation)), workspace.registry)
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
    if mitigation == "thresholds":
        assert set(record["thresholds"]) == {"True", "False"}
        for group, t in record["thresholds"].items():
            assert loaded.operating_points[f"user_is_anon={group}"]["threshold"] == t
    else:
        assert not any("=" in name for name in loaded.operating_points)


def test_a_multiclass_model_cannot_be_mitigated(workspace: Workspace, tmp_path: Path) -> None:
    spec = write_multiclass_spec(tmp_path / "data")
    kinds = 'kinds = { topic = "categorical" }'
    text = spec.read_text().replace(kinds, f'{kinds}\nsensitive = ["topic"]')
    spec.write_text(text + '\n[fairness]\nmitigation = "reweighing"\n')
    with pytest.raises(SpecError, match="only a binary model"):
        train(load_spec(spec), workspace.registry)
    assert workspace.registry.models() == []
