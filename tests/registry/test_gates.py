"""assay.registry.gates on summaries of real evaluations: every gate kind passing and failing, and refusals
that name the gate, the statistic and the numbers compared."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from assay.modelling.evaluation import evaluate
from assay.registry.contracts import VersionRecord
from assay.registry.gates import check_gates, summarize
from tests.conftest import EDITQUALITY_FEATURES, edits_frame


def _summary(features: list[str], *, sensitive: bool = True) -> dict[str, Any]:
    """The summary training would record for a logistic regression on ``features`` of synthetic edits."""
    frame = edits_frame(1500, seed=3)
    train, test = frame.iloc[:1000], frame.iloc[1000:]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        train[features].astype(float), train["reverted"]
    )
    proba = model.predict_proba(test[features].astype(float))  # columns: False, True
    evaluation = evaluate(
        np.where(test["reverted"], "True", "False"),
        proba,
        ["False", "True"],
        positive="True",
        sensitive={"user_is_anon": test["user_is_anon"].to_numpy()} if sensitive else None,
        # Few edits are reverted: at 0.5 nothing would be flagged and every group's rates would be 0.
        decision_thresholds={"True": 0.2},
    )
    return summarize(evaluation, "True")


@pytest.fixture(scope="module")
def strong() -> dict[str, Any]:
    return _summary(EDITQUALITY_FEATURES)


@pytest.fixture(scope="module")
def weak() -> dict[str, Any]:
    """A model on a feature that carries no signal: worse on every statistic the gates use."""
    return _summary(["non_stopword_prop_delta_sum"])


def _version(version: int, summary: dict[str, Any], **gates: dict[str, float]) -> VersionRecord:
    return VersionRecord(
        model="damaging",
        version=version,
        created_at=datetime.now(UTC),
        candidate="logistic_regression",
        spec={"gates": gates},
        spec_hash="",
        data_fingerprint="",
        summary=summary,
        lineage={},
        manifest={},
        directory=Path("unused"),
    )


def test_the_two_models_differ_as_the_tests_assume(strong: dict[str, Any], weak: dict[str, Any]) -> None:
    assert strong["roc_auc"] > weak["roc_auc"] + 0.1
    assert strong["brier"] < weak["brier"]
    assert strong["fairness"]["equalized_odds_difference"] > 0.05


def test_minimum_passes_and_fails(strong: dict[str, Any]) -> None:
    auc = strong["roc_auc"]
    [passed] = check_gates(_version(1, strong, minimum={"roc_auc": auc - 0.01}), None)
    assert passed["passed"] and (passed["gate"], passed["stat"], passed["value"]) == (
        "minimum",
        "roc_auc",
        auc,
    )
    limit = auc + 0.01
    [failed] = check_gates(_version(1, strong, minimum={"roc_auc": limit}), None)
    assert not failed["passed"] and failed["limit"] == limit
    assert failed["message"] == f"minimum gate: roc_auc {auc:.4f} must be >= {limit:g}"


def test_brier_is_a_ceiling(strong: dict[str, Any]) -> None:
    brier = strong["brier"]
    [passed] = check_gates(_version(1, strong, minimum={"brier": brier + 0.001}), None)
    assert passed["passed"]
    [failed] = check_gates(_version(1, strong, minimum={"brier": brier - 0.001}), None)
    assert not failed["passed"]
    assert failed["message"] == f"minimum gate: brier {brier:.4f} must be <= {brier - 0.001:g}"


@pytest.mark.parametrize("stat", ["equalized_odds_difference", "demographic_parity_difference"])
def test_fairness_is_a_ceiling(strong: dict[str, Any], stat: str) -> None:
    value = strong["fairness"][stat]
    [passed] = check_gates(_version(1, strong, fairness={stat: value + 0.01}), None)
    assert passed["passed"] and passed["gate"] == "fairness" and passed["value"] == value
    [failed] = check_gates(_version(1, strong, fairness={stat: value - 0.01}), None)
    assert not failed["passed"]
    assert failed["message"] == f"fairness gate: {stat} {value:.4f} must be <= {value - 0.01:g}"


def test_fairness_gate_fails_when_no_group_was_evaluated() -> None:
    unmeasured = _summary(EDITQUALITY_FEATURES, sensitive=False)
    [failed] = check_gates(_version(1, unmeasured, fairness={"equalized_odds_difference": 1.0}), None)
    assert not failed["passed"] and failed["value"] is None
    assert failed["message"] == "fairness gate: equalized_odds_difference undefined must be <= 1"


def _compared(holder: dict[str, Any], challenger: dict[str, Any], **rows: dict[str, Any]) -> dict[str, Any]:
    """A paired comparison as ``modelling.comparison`` reports it, here of two summaries taken to be
    measured on the same 500 rows; ``rows`` adds interval facts per statistic."""
    stats = {
        s: {"a": holder[s], "b": challenger[s], **rows.get(s, {})} for s in ("roc_auc", "pr_auc", "brier")
    }
    return {"a": "damaging@1", "b": "damaging@2", "n": 500, "source": "the same rows", "stats": stats}


def test_max_regression_compares_with_the_alias_holder_on_the_same_rows(
    strong: dict[str, Any], weak: dict[str, Any]
) -> None:
    holder = _version(1, strong)
    drop = strong["roc_auc"] - weak["roc_auc"]
    compared = _compared(strong, weak)
    [failed] = check_gates(_version(2, weak, max_regression={"roc_auc": 0.01}), holder, compared)
    assert (
        not failed["passed"]
        and failed["baseline"] == strong["roc_auc"]
        and failed["value"] == weak["roc_auc"]
    )
    assert failed["message"] == (
        f"max_regression gate: roc_auc {weak['roc_auc']:.4f} vs {strong['roc_auc']:.4f} in damaging@1 "
        f"on 500 rows of the same rows: a regression of {drop:.4f} (at most 0.01 allowed)"
    )
    [passed] = check_gates(_version(2, weak, max_regression={"roc_auc": drop + 0.01}), holder, compared)
    assert passed["passed"]
    # An improvement passes even a gate that allows no regression at all.
    [improved] = check_gates(
        _version(2, strong, max_regression={"roc_auc": 0.0}), _version(1, weak), _compared(weak, strong)
    )
    assert improved["passed"]


def test_the_stored_summaries_are_not_what_a_regression_is_measured_on(
    strong: dict[str, Any], weak: dict[str, Any]
) -> None:
    """The challenger's summary says it is better, but on the same rows it is worse: the rows win."""
    [failed] = check_gates(
        _version(2, strong, max_regression={"roc_auc": 0.01}), _version(1, weak), _compared(strong, weak)
    )
    assert not failed["passed"] and failed["value"] == weak["roc_auc"]
    # Without a comparison on the same rows, no regression gate can pass.
    [unmeasured] = check_gates(_version(2, strong, max_regression={"roc_auc": 1.0}), _version(1, weak))
    assert (
        not unmeasured["passed"] and "no comparison with damaging@1 on the same rows" in unmeasured["message"]
    )


def test_brier_regression_is_a_rise(strong: dict[str, Any], weak: dict[str, Any]) -> None:
    rise = weak["brier"] - strong["brier"]
    [failed] = check_gates(
        _version(2, weak, max_regression={"brier": 0.0}), _version(1, strong), _compared(strong, weak)
    )
    assert not failed["passed"]
    assert f"a regression of {rise:.4f} (at most 0 allowed)" in failed["message"]
    [passed] = check_gates(
        _version(2, strong, max_regression={"brier": 0.0}), _version(1, weak), _compared(weak, strong)
    )
    assert passed["passed"]


def test_without_regression_gates_a_significantly_worse_challenger_is_refused(
    strong: dict[str, Any], weak: dict[str, Any]
) -> None:
    def interval(low: float, high: float) -> dict[str, Any]:
        return {
            "difference": (low + high) / 2,
            "ci": [low, high],
            "confidence": 0.95,
            "significant": low > 0 or high < 0,
        }

    worse = _compared(strong, weak, roc_auc=interval(-0.3, -0.2), pr_auc=interval(-0.02, 0.01))
    results = check_gates(_version(2, weak), _version(1, strong), worse)
    assert [(r["gate"], r["stat"], r["passed"]) for r in results] == [
        ("blessing", "roc_auc", False),
        ("blessing", "pr_auc", True),
    ]
    assert "significantly worse" in results[0]["message"] and "-0.3000 to -0.2000" in results[0]["message"]
    # Noise is not a regression: an interval that straddles zero passes.
    same = _compared(strong, weak, roc_auc=interval(-0.02, 0.01), pr_auc=interval(-0.02, 0.01))
    assert all(r["passed"] for r in check_gates(_version(2, weak), _version(1, strong), same))
    # Declared regression limits replace the default.
    declared = check_gates(_version(2, weak, max_regression={"pr_auc": 1.0}), _version(1, strong), worse)
    assert [r["gate"] for r in declared] == ["max_regression"]


def test_max_regression_needs_another_version_holding_the_alias(strong: dict[str, Any]) -> None:
    record = _version(2, strong, max_regression={"roc_auc": -1.0})  # would fail against anyone
    assert check_gates(record, None) == []
    assert check_gates(record, record) == []  # re-pointing an alias at the version it holds
