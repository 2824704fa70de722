"""Fairness mitigation as a recorded choice: reweighing before training, or per-group thresholds after.

A spec asks for one with ``[fairness] mitigation``; training then publishes the
mitigated model and records, in the card, the same statistics for the model it
would have published without mitigation, so the trade-off (accuracy given up,
disparity removed) is read side by side.

* ``reweighing`` (Kamiran & Calders, 2012): each training row of group g and
  class y weighs P(g) P(y) / P(g, y), so that group and label are independent in
  the weighted data; the winning candidate is refitted with those weights.
* ``thresholds``: one threshold per group of the attribute, chosen on
  out-of-fold scores of the training data (never on the held-out rows it is
  judged on) so that the groups' rates agree: selection rates
  (``demographic_parity``), TPRs (``true_positive_rate_parity``) or TPRs and FPRs
  (``equalized_odds``). Fairlearn's ``ThresholdOptimizer`` reaches parity with
  randomised decisions; these thresholds are deterministic (the same item always
  gets the same decision), so they come close to parity rather than onto it,
  and the tests hold them to ThresholdOptimizer's result. Each group's threshold
  becomes an operating point ``<attribute>=<group>``, so every scoring response
  carries the decision for each group and a product applies its item's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from assay.errors import SpecError
from assay.modelling.assessment import Assessment
from assay.modelling.candidates import CANDIDATES
from assay.modelling.fairness import FairnessOptions, group_fairness
from assay.modelling.preparation import Prepared
from assay.modelling.selection import CandidateResult
from assay.modelling.spec import ModelSpec

# How many reference points the threshold search tries, and how much worse than the most
# equal choice (in the constraint's disparity) a more accurate one may be.
REFERENCE_POINTS = 100
DISPARITY_SLACK = 0.01
# The disparity each constraint equalises, as the fairness block names it.
CONSTRAINT_STAT = {
    "demographic_parity": "demographic_parity_difference",
    "true_positive_rate_parity": "true_positive_rate_difference",
    "equalized_odds": "equalized_odds_difference",
}


def reweighing_weights(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kamiran & Calders' weights P(g) P(y) / P(g, y): group and label independent once weighted."""
    _, g = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    _, c = np.unique(y, return_inverse=True)
    joint = np.zeros((g.max() + 1, c.max() + 1))
    np.add.at(joint, (g, c), 1.0)
    joint /= len(y)
    expected = joint.sum(axis=1)[:, None] * joint.sum(axis=0)[None, :]
    return np.asarray((expected / joint)[g, c], dtype=float)


def _rates_by_threshold(y: np.ndarray, score: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Selection rate, TPR, FPR and accuracy of flagging ``score >= t`` for each t, in one pass."""
    order = np.sort(score)
    flagged = len(score) - np.searchsorted(order, thresholds, side="left")
    positives_sorted = np.sort(score[y])
    tp = len(positives_sorted) - np.searchsorted(positives_sorted, thresholds, side="left")
    fp = flagged - tp
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return {
        "selection_rate": flagged / len(score),
        "tpr": tp / n_pos if n_pos else np.zeros(len(thresholds)),
        "fpr": fp / n_neg if n_neg else np.zeros(len(thresholds)),
        "correct": tp + (n_neg - fp),
    }


def _matched(target: dict[str, float], rates: dict[str, np.ndarray], constraint: str) -> int:
    """The index of the group threshold whose rates are nearest the target (ties: more correct)."""
    if constraint == "demographic_parity":
        distance = np.abs(rates["selection_rate"] - target["selection_rate"])
    elif constraint == "true_positive_rate_parity":
        distance = np.abs(rates["tpr"] - target["tpr"])
    else:
        distance = np.maximum(np.abs(rates["tpr"] - target["tpr"]), np.abs(rates["fpr"] - target["fpr"]))
    best = np.flatnonzero(distance <= distance.min() + 1e-12)
    return int(best[np.argmax(rates["correct"][best])])


def fit_group_thresholds(
    y: np.ndarray, score: np.ndarray, groups: np.ndarray, constraint: str
) -> dict[str, float]:
    """Per-group thresholds that bring the groups' rates together, as accurately as that allows.

    For each reference threshold the groups are matched to the rates the whole data has there;
    of the reference points whose disparity is within ``DISPARITY_SLACK`` of the smallest, the
    one with the most correct decisions wins.
    """
    y, score, groups = np.asarray(y, bool), np.asarray(score, float), np.asarray(groups, dtype=str)
    names = np.unique(groups)
    grid = np.unique(np.r_[np.quantile(score, np.linspace(0, 1, REFERENCE_POINTS)), 1.0 + 1e-9])
    candidates = {g: np.unique(np.r_[score[groups == g], 1.0 + 1e-9]) for g in names}
    per_group = {g: _rates_by_threshold(y[groups == g], score[groups == g], candidates[g]) for g in names}
    overall = _rates_by_threshold(y, score, grid)
    choices = []
    for r in range(len(grid)):
        target = {k: float(overall[k][r]) for k in ("selection_rate", "tpr", "fpr")}
        chosen = {g: _matched(target, per_group[g], constraint) for g in names}
        thresholds = {str(g): float(candidates[g][i]) for g, i in chosen.items()}
        correct = sum(float(per_group[g]["correct"][i]) for g, i in chosen.items())
        flagged = score >= np.array([thresholds[g] for g in groups])
        block = group_fairness(y, flagged, score, groups, FairnessOptions())
        choices.append((block[CONSTRAINT_STAT[constraint]] or 0.0, correct, thresholds))
    fairest = min(c[0] for c in choices)
    eligible = [c for c in choices if c[0] <= fairest + DISPARITY_SLACK]
    return max(eligible, key=lambda c: c[1])[2]


def apply_group_thresholds(score: np.ndarray, groups: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Flag each item at its group's threshold; a group not seen in training keeps the median threshold."""
    fallback = float(np.median(list(thresholds.values())))
    return np.asarray(score) >= np.array([thresholds.get(str(g), fallback) for g in groups])


def tradeoff(
    y: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    constraint: str,
    options: FairnessOptions,
) -> dict[str, Any]:
    """Accuracy and disparities of the decisions ``before`` and ``after`` mitigation, on the same rows."""
    y = np.asarray(y, bool)
    out: dict[str, Any] = {}
    for name, decided in (("before", before), ("after", after)):
        block = group_fairness(y, decided, score, groups, options)
        out[name] = {
            "accuracy": float(np.mean(decided == y)),
            "selection_rate": float(np.mean(decided)),
            **{k: block[k] for k in CONSTRAINT_STAT.values()},
            "demographic_parity_ratio": block["demographic_parity_ratio"],
            "equalized_odds_ratio": block["equalized_odds_ratio"],
        }
    stat = CONSTRAINT_STAT[constraint]
    out["accuracy_lost"] = out["before"]["accuracy"] - out["after"]["accuracy"]
    if out["before"][stat] is not None and out["after"][stat] is not None:
        out["disparity_removed"] = out["before"][stat] - out["after"][stat]
    return out


def check_mitigation(spec: ModelSpec, positive: str | None) -> None:
    """Refuse, before any fit, a mitigation the task cannot have (it needs one flagged class)."""
    if spec.fairness.mitigation != "none" and positive is None:
        raise SpecError(
            f"{spec.source}: fairness.mitigation: only a binary model's decisions can be mitigated",
            field="fairness.mitigation",
        )
    if spec.fairness.mitigation != "none" and spec.training.unlearning is not None:
        # Mitigation refits or re-thresholds one model; a sharded model is many, retrained one by one.
        raise SpecError(
            f"{spec.source}: fairness.mitigation: not available with training.unlearning (sharded models)",
            field="fairness.mitigation",
        )


def mitigate(
    spec: ModelSpec,
    data: Prepared,
    winner: CandidateResult,
    estimator: Any,
    before: Assessment,
    reassess: Callable[[Any], Assessment],
    say: Callable[[str], None],
) -> tuple[Any, Assessment]:
    """The spec's mitigation applied to the refitted winner: the model to publish and what it scores.

    ``reassess`` evaluates a model on the held-out data as training does; the returned
    assessment carries ``mitigation``: the method, its settings and the trade-off.
    """
    f = spec.fairness
    if data.positive is None:
        raise SpecError(
            f"{spec.source}: fairness.mitigation: only binary models can be mitigated",
            field="fairness.mitigation",
        )
    attribute = f.attribute or spec.features.sensitive[0]
    pos = data.classes.index(data.positive)
    y_train, y_test = data.y == pos, np.asarray(data.y_test).astype(str) == data.positive
    groups_test = before.sensitive[attribute]
    threshold = DEFAULT_DECISION
    record: dict[str, Any] = {"method": f.mitigation, "attribute": attribute, "constraint": f.constraint}
    if f.mitigation == "reweighing":
        say(f"mitigation: refitting {winner.candidate} with reweighing by {attribute}")
        weights = reweighing_weights(data.train_sensitive[attribute], data.y)
        candidate = CANDIDATES[winner.candidate]
        model = candidate.estimator(winner.params, data.schema, spec.seed)
        estimator = candidate.fit_weighted(model, data.X, data.y, data.schema, weights)
        after = reassess(estimator)
        decided = after.proba[:, pos] >= threshold
        score = after.proba[:, pos]
    else:
        say(f"mitigation: fitting per-group thresholds on out-of-fold scores ({f.constraint} by {attribute})")
        oof = out_of_fold_scores(spec, data, winner)[:, pos]
        thresholds = fit_group_thresholds(y_train, oof, data.train_sensitive[attribute], f.constraint)
        score = before.proba[:, pos]
        decided = apply_group_thresholds(score, groups_test, thresholds)
        record["thresholds"] = thresholds
        after = replace(before)
        after.operating_points = {**before.operating_points, **_group_points(attribute, thresholds, before)}
    options = FairnessOptions(f.min_group_size, f.bootstrap, f.confidence, spec.seed)
    record.update(
        tradeoff(
            y_test, score, groups_test, before.proba[:, pos] >= threshold, decided, f.constraint, options
        )
    )
    say(
        f"mitigation: accuracy {record['before']['accuracy']:.4f} -> {record['after']['accuracy']:.4f}, "
        f"{CONSTRAINT_STAT[f.constraint]} {_show(record['before'])} -> {_show(record['after'])}"
    )
    after.mitigation = record
    return estimator, after


DEFAULT_DECISION = 0.5


def _show(side: dict[str, Any]) -> str:
    values = [v for k, v in side.items() if k.endswith("_difference") and v is not None]
    return f"{max(values):.4f}" if values else "undefined"


def out_of_fold_scores(spec: ModelSpec, data: Prepared, winner: CandidateResult) -> np.ndarray:
    """Probabilities for every training row from a model that did not see it (the candidates' folds)."""
    candidate = CANDIDATES[winner.candidate]
    splitter = StratifiedKFold(n_splits=spec.training.folds, shuffle=True, random_state=spec.seed)
    proba = np.zeros((len(data.y), len(data.classes)))
    for tr, va in splitter.split(data.X, data.y):
        model = candidate.fit(
            candidate.estimator(winner.params, data.schema, spec.seed), data.X[tr], data.y[tr], data.schema
        )
        proba[va] = model.predict_proba(data.X[va])
    return proba


def _group_points(
    attribute: str, thresholds: dict[str, float], before: Assessment
) -> dict[str, dict[str, Any]]:
    """One operating point per group at its threshold, answered from the held-out threshold table."""
    table = before.evaluation["thresholds"][before.evaluation["positive"]]
    points = {}
    for group, t in thresholds.items():
        index = int(np.searchsorted(np.asarray(table["threshold"], float), t, side="left"))
        answer = None
        if index < len(table["threshold"]):
            answer = {k: column[index] for k, column in table.items()}
            answer["threshold"] = t  # served as fitted; on held-out data it flags what the table row does
        points[f"{attribute}={group}"] = {
            "query": f"per-group threshold for {attribute} = {group} (fairness mitigation)",
            "class": before.evaluation["positive"],
            "answer": answer,
        }
    return points
