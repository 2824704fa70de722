"""assay.modelling.fairness against Fairlearn's MetricFrame, and its intervals against the truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import brier_score_loss, precision_score

from assay.modelling.evaluation import evaluate
from assay.modelling.fairness import FairnessOptions, group_fairness, intersect

TOL = 1e-9


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def fl(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def scored(n: int = 600, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores and four groups of unequal size, the smallest without positives in one case."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1])
    y = rng.random(n) < np.where(groups == "a", 0.45, 0.3)
    score = np.clip(0.35 * y + 0.65 * rng.random(n) + 0.1 * (groups == "b"), 0, 1)
    return y, score, groups


def cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    y, score, groups = scored()
    return [
        (y, score, groups),
        (np.where(groups == "d", False, y), score, groups),  # group d has no positives: TPR 0 to Fairlearn
        (y, score * 0.4, groups),  # nobody flagged at 0.5: every ratio is 0/0
        (y, score, np.full(len(y), "only")),
    ]


def check_against_fairlearn(block: dict, y: np.ndarray, pred: np.ndarray, score: np.ndarray, groups) -> None:
    """Every per-group number and every summary equals Fairlearn's (and sklearn's Brier) to 1e-9."""
    frame = MetricFrame(
        metrics={
            "sel": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "fnr": false_negative_rate,
            "precision": lambda t, p: precision_score(t, p, zero_division=np.nan),
        },
        y_true=y,
        y_pred=pred,
        sensitive_features=groups,
    )
    brier = MetricFrame(metrics=brier_score_loss, y_true=y, y_pred=score, sensitive_features=groups)
    assert len(block["groups"]) == len(frame.by_group)
    for key, expected in frame.by_group.iterrows():
        name = " & ".join(map(str, key)) if isinstance(key, tuple) else str(key)
        stats = block["groups"][name]
        in_group = np.all(np.c_[groups] == np.array(key if isinstance(key, tuple) else [key]), axis=1)
        assert stats["count"] == int(in_group.sum())
        has_pos, has_neg = (y & in_group).any(), (~y & in_group).any()
        assert close(stats["selection_rate"], expected["sel"])
        assert close(stats["tpr"], expected["tpr"] if has_pos else None)
        assert close(stats["fnr"], expected["fnr"] if has_pos else None)
        assert close(stats["fpr"], expected["fpr"] if has_neg else None)
        assert close(stats["precision"], fl(expected["precision"]))
        assert close(stats["brier"], float(brier.by_group.loc[key]))
    kwargs = {"sensitive_features": groups}
    summaries = block if not block["excluded_groups"] else block["all_groups"]
    assert close(summaries["demographic_parity_difference"], demographic_parity_difference(y, pred, **kwargs))
    assert close(summaries["demographic_parity_ratio"], fl(demographic_parity_ratio(y, pred, **kwargs)))
    assert close(summaries["equalized_odds_difference"], equalized_odds_difference(y, pred, **kwargs))
    assert close(summaries["equalized_odds_ratio"], fl(equalized_odds_ratio(y, pred, **kwargs)))
    if not block["excluded_groups"]:
        tpr, fpr = frame.by_group["tpr"].fillna(0), frame.by_group["fpr"].fillna(0)
        assert close(block["true_positive_rate_difference"], float(tpr.max() - tpr.min()))
        assert close(block["false_positive_rate_difference"], float(fpr.max() - fpr.min()))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.71])
def test_every_number_equals_fairlearn_at_every_threshold(case: int, threshold: float) -> None:
    y, score, groups = cases()[case]
    pred = score >= threshold
    block = group_fairness(y, pred, score, groups, FairnessOptions(bootstrap=50))
    check_against_fairlearn(block, y, pred, score, groups)
    json.dumps(block, allow_nan=False)


def test_per_group_calibration_is_the_groups_reliability_curve() -> None:
    y, score, groups = scored()
    block = group_fairness(y, score >= 0.5, score, groups, FairnessOptions())
    for group, stats in block["groups"].items():
        rows = groups == group
        whole = evaluate(
            np.where(y[rows], "yes", "no"), np.c_[1 - score[rows], score[rows]], ["no", "yes"], positive="yes"
        )
        assert stats["calibration"] == whole["calibration"]["curve"]["yes"]
        assert close(stats["brier"], whole["calibration"]["brier"])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_small_groups_are_listed_but_not_compared() -> None:
    y, score, groups = scored(n=400)
    pred = score >= 0.5
    size = int(np.sum(groups == "d")) + 1  # d is the smallest group
    block = group_fairness(y, pred, score, groups, FairnessOptions(min_group_size=size))
    assert block["excluded_groups"] == ["d"] and block["groups"]["d"]["compared"] is False
    assert block["groups"]["d"]["count"] == size - 1
    kept = groups != "d"
    # The summaries are Fairlearn's over the compared groups; all_groups over every group.
    compared = group_fairness(y[kept], pred[kept], score[kept], groups[kept], FairnessOptions())
    for stat in ("demographic_parity_difference", "equalized_odds_difference", "equalized_odds_ratio"):
        assert block[stat] == compared[stat]
    check_against_fairlearn(block, y, pred, score, groups)
    nobody = group_fairness(y, pred, score, groups, FairnessOptions(min_group_size=10_000))
    assert nobody["demographic_parity_difference"] is None and nobody["intervals"] == {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_intersections_equal_fairlearn_with_two_sensitive_columns() -> None:
    y, score, groups = scored(n=2000)
    other = np.random.default_rng(9).choice(["x", "y"], len(y))
    name, joined = intersect({"g": groups, "h": other})
    assert name == "g & h" and joined[0] == f"{groups[0]} & {other[0]}"
    pred = score >= 0.5
    block = group_fairness(y, pred, score, joined, FairnessOptions())
    check_against_fairlearn(block, y, pred, score, pd.DataFrame({"g": groups, "h": other}))


def test_intervals_are_seeded() -> None:
    y, score, groups = scored()
    options = FairnessOptions(bootstrap=200, seed=4)
    first = group_fairness(y, score >= 0.5, score, groups, options)
    assert first["intervals"] == group_fairness(y, score >= 0.5, score, groups, options)["intervals"]
    assert set(first["intervals"]) >= {"demographic_parity_difference", "equalized_odds_ratio"}
    for low, high in filter(None, first["intervals"].values()):
        assert 0.0 <= low <= high <= 1.0


@pytest.mark.parametrize(
    ("rates", "sizes"),
    [
        ((0.3, 0.3), (500, 500)),  # no disparity: a max-minus-min bootstrap never covers 0
        ((0.3, 0.36), (400, 400)),
        ((0.3, 0.4, 0.5), (300, 300, 100)),
        ((0.2, 0.5), (1000, 60)),
    ],
)
def test_intervals_cover_the_true_disparity_in_repeated_draws(rates: tuple, sizes: tuple) -> None:
    """95% intervals from 200 independent samples of known populations cover the truth about 95% of the time."""
    rng = np.random.default_rng(11)
    truth = max(rates) - min(rates)
    covered = 0
    draws = 200
    for i in range(draws):
        groups = np.repeat([f"g{j}" for j in range(len(sizes))], sizes)
        pred = rng.random(len(groups)) < np.repeat(rates, sizes)
        y = rng.random(len(groups)) < 0.5
        block = group_fairness(y, pred, pred.astype(float), groups, FairnessOptions(bootstrap=300, seed=i))
        low, high = block["intervals"]["demographic_parity_difference"]
        covered += low <= truth <= high
    assert covered / draws >= 0.89, covered / draws


def test_evaluate_gives_one_block_per_class_of_a_multiclass_task() -> None:
    rng = np.random.default_rng(2)
    classes = ["x", "y", "z"]
    truth = rng.integers(0, 3, 500)
    logits = rng.normal(size=(500, 3)) + 1.5 * np.eye(3)[truth]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    groups = rng.choice(["p", "q"], 500)
    labels = np.array(classes)[truth]
    result = evaluate(labels, proba, classes, positive=None, sensitive={"g": groups})
    assert set(result["fairness"]["g"]) == set(classes)
    decided = proba.argmax(axis=1)
    for i, c in enumerate(classes):
        check_against_fairlearn(result["fairness"]["g"][c], truth == i, decided == i, proba[:, i], groups)


def test_missing_groups_are_one_group() -> None:
    y = np.array([True, False, True, False])
    pred = np.array([True, True, False, False])
    groups = np.array([None, float("nan"), "x", 1], dtype=object)
    result = group_fairness(y, pred, pred.astype(float), groups, FairnessOptions())
    assert result["groups"]["(missing)"]["count"] == 2
    assert set(result["groups"]) == {"(missing)", "x", "1"}
    assert result["groups"]["x"]["precision"] is None  # nothing flagged in group x
