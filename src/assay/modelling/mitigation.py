"""Fairness mitigation as a recorded choice: reweighing before training, or per-group thresholds after.

A spec asks for one with ``[fairness] mitigation``; training then publishes the
mitigated model and records, in the card, the same statistics for the model it
would have published without mitigation, so the trade-off (accuracy given up,
disparity removed) is read side by side, at the decision and at every named
operating point.

* ``reweighing`` (Kamiran & Calders, 2012): each training row of group g and
  class y weighs P(g) P(y) / P(g, y), so that group and label are independent in
  the weighted data; the winning candidate is refitted with those weights. It
  applies to any number of classes; a multiclass trade-off reports, for each
  disparity, the worst class (each class's one-vs-rest decision of the argmax).
* ``thresholds`` (binary only): one threshold per group (``group_thresholds``),
  for the decision and for each named operating point. The version records them
  and the scorer applies them: the ``prediction`` a product gets is the decision
  at the item's group's threshold. A multiclass decision is an argmax over
  classes, not a threshold, so there is no per-group threshold that keeps it
  one decision; such a spec is refused before any fit.
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
from assay.modelling.group_thresholds import GroupThresholds, fit_group_thresholds, thresholds_at
from assay.modelling.preparation import Prepared
from assay.modelling.progress import Progress
from assay.modelling.selection import CandidateResult
from assay.modelling.spec import ModelSpec
from assay.registry.contracts import CONSTRAINT_STAT

DEFAULT_DECISION = 0.5
# What each side of a trade-off reports beside accuracy (Fairlearn's summaries the constraints use).
_SIDE_STATS = (
    *CONSTRAINT_STAT.values(),
    "demographic_parity_ratio",
    "equalized_odds_ratio",
)


def reweighing_weights(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kamiran & Calders' weights P(g) P(y) / P(g, y): group and label independent once weighted."""
    _, g = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    _, c = np.unique(y, return_inverse=True)
    joint = np.zeros((g.max() + 1, c.max() + 1))
    np.add.at(joint, (g, c), 1.0)
    joint /= len(y)
    expected = joint.sum(axis=1)[:, None] * joint.sum(axis=0)[None, :]
    return np.asarray((expected / joint)[g, c], dtype=float)


def flag_side(
    is_class: np.ndarray, flagged: np.ndarray, score: np.ndarray, groups: np.ndarray, options: FairnessOptions
) -> dict[str, Any]:
    """Accuracy, selection rate and disparities of one flag-or-not decision on the same rows."""
    block = group_fairness(is_class, flagged, score, groups, options)
    return {
        "accuracy": float(np.mean(flagged == is_class)),
        "selection_rate": float(np.mean(flagged)),
        **{k: block[k] for k in _SIDE_STATS},
    }


def argmax_side(
    y: np.ndarray, proba: np.ndarray, groups: np.ndarray, options: FairnessOptions
) -> dict[str, Any]:
    """A multiclass decision's accuracy and, for each disparity, its worst class (one-vs-rest)."""
    decided = proba.argmax(axis=1)
    blocks = [flag_side(y == c, decided == c, proba[:, c], groups, options) for c in range(proba.shape[1])]
    side: dict[str, Any] = {"accuracy": float(np.mean(decided == y))}
    for k in _SIDE_STATS:
        values = [b[k] for b in blocks if b[k] is not None]
        worst = min if k.endswith("_ratio") else max  # a ratio is worse the smaller it is
        side[k] = worst(values) if values else None
    return side


def compare(before: dict[str, Any], after: dict[str, Any], constraint: str) -> dict[str, Any]:
    """Two sides of a trade-off and what moved: accuracy lost, and the constraint's disparity removed."""
    out: dict[str, Any] = {
        "before": before,
        "after": after,
        "accuracy_lost": before["accuracy"] - after["accuracy"],
    }
    stat = CONSTRAINT_STAT[constraint]
    if before[stat] is not None and after[stat] is not None:
        out["disparity_removed"] = before[stat] - after[stat]
    return out


def check_mitigation(spec: ModelSpec, positive: str | None) -> None:
    """Refuse, before any fit, a mitigation the task cannot have."""
    method = spec.fairness.mitigation
    if method == "thresholds" and positive is None:
        raise SpecError(
            f"{spec.source}: fairness.mitigation: per-group thresholds need a binary model: a multiclass "
            "decision is the likeliest class, not a threshold, so per-group thresholds would no longer make "
            'it one decision; use mitigation = "reweighing", which applies to any number of classes',
            field="fairness.mitigation",
        )
    if method != "none" and spec.training.unlearning is not None:
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
    say: Progress,
) -> tuple[Any, Assessment]:
    """The spec's mitigation applied to the refitted winner: the model to publish and what it scores.

    ``reassess`` evaluates a model on the held-out data as training does; the returned
    assessment carries ``mitigation``: the method, its settings and the trade-off at the
    decision and at each answered operating point.
    """
    f = spec.fairness
    check_mitigation(spec, data.positive)
    attribute = f.attribute or spec.features.sensitive[0]
    record: dict[str, Any] = {"method": f.mitigation, "attribute": attribute, "constraint": f.constraint}
    if f.mitigation == "reweighing":
        say(f"mitigation: refitting {winner.candidate} with reweighing by {attribute}")
        weights = reweighing_weights(data.train_sensitive[attribute], data.y)
        candidate = CANDIDATES[winner.candidate]
        model = candidate.estimator(winner.params, data.schema, spec.seed)
        estimator = candidate.fit_weighted(model, data.X, data.y, data.schema, weights)
        after = reassess(estimator)
        record.update(_reweighed(spec, data, attribute, before, after))
    else:
        say(f"mitigation: fitting per-group thresholds on out-of-fold scores ({f.constraint} by {attribute})")
        after = replace(before)
        record.update(_thresholded(spec, data, winner, attribute, before))
    say(
        f"mitigation: accuracy {record['before']['accuracy']:.4f} -> {record['after']['accuracy']:.4f}, "
        f"{CONSTRAINT_STAT[f.constraint]} {_show(record['before'], f.constraint)} -> "
        f"{_show(record['after'], f.constraint)}"
    )
    after.mitigation = record
    return estimator, after


def _options(spec: ModelSpec) -> FairnessOptions:
    """The spec's group comparison without intervals (a trade-off records point values only)."""
    f = spec.fairness
    return FairnessOptions(f.min_group_size, 0, f.confidence, spec.seed)


def _reweighed(
    spec: ModelSpec, data: Prepared, attribute: str, before: Assessment, after: Assessment
) -> dict[str, Any]:
    """Reweighing's trade-off: the unmitigated and reweighed models, each at its own thresholds."""
    options, groups, constraint = _options(spec), before.sensitive[attribute], spec.fairness.constraint
    classes = list(data.classes)
    y = np.array([classes.index(c) for c in np.asarray(data.y_test).astype(str)])
    if data.positive is not None:
        pos = classes.index(data.positive)
        plain = flag_side(
            y == pos, before.proba[:, pos] >= DEFAULT_DECISION, before.proba[:, pos], groups, options
        )
        reweighed = flag_side(
            y == pos, after.proba[:, pos] >= DEFAULT_DECISION, after.proba[:, pos], groups, options
        )
    else:
        plain, reweighed = (argmax_side(y, a.proba, groups, options) for a in (before, after))
    out = compare(plain, reweighed, constraint)
    points = {}
    for name, point in before.operating_points.items():
        mine = after.operating_points.get(name) or {}
        if point["answer"] is None or mine.get("answer") is None:
            continue  # no threshold satisfies the point on one side: nothing to set side by side
        c = classes.index(point["class"])
        t_before, t_after = point["answer"]["threshold"], mine["answer"]["threshold"]
        plain = flag_side(y == c, before.proba[:, c] >= t_before, before.proba[:, c], groups, options)
        reweighed = flag_side(y == c, after.proba[:, c] >= t_after, after.proba[:, c], groups, options)
        points[name] = {
            "threshold_before": t_before,
            "threshold_after": t_after,
            **compare(plain, reweighed, constraint),
        }
    out["operating_points"] = points
    return out


def _thresholded(
    spec: ModelSpec, data: Prepared, winner: CandidateResult, attribute: str, before: Assessment
) -> dict[str, Any]:
    """Per-group thresholds for the decision and each answered operating point, with their trade-offs.

    The thresholds are fitted on out-of-fold scores of the training rows and judged on the
    held-out rows, never fitted on the rows they are judged on.
    """
    options, constraint = _options(spec), spec.fairness.constraint
    pos = data.classes.index(data.positive)  # type: ignore[arg-type]  # binary: check_mitigation
    oof = out_of_fold_scores(spec, data, winner)[:, pos]
    y_train, train_groups = data.y == pos, data.train_sensitive[attribute]
    is_pos = np.asarray(data.y_test).astype(str) == data.positive
    score, groups = before.proba[:, pos], before.sensitive[attribute]

    def tradeoff(threshold: float, fitted: GroupThresholds) -> dict[str, Any]:
        plain = flag_side(is_pos, score >= threshold, score, groups, options)
        return compare(
            plain, flag_side(is_pos, fitted.apply(score, groups), score, groups, options), constraint
        )

    decision = fit_group_thresholds(y_train, oof, train_groups, constraint)
    out = {
        "thresholds": decision.thresholds,
        "fallback_threshold": decision.fallback,
        **tradeoff(DEFAULT_DECISION, decision),
    }
    points = {}
    for name, point in before.operating_points.items():
        if point["answer"] is None:
            continue
        t = float(point["answer"]["threshold"])
        at = thresholds_at(y_train, oof, train_groups, constraint, t)
        points[name] = {
            "threshold_before": t,
            "thresholds": at.thresholds,
            "fallback_threshold": at.fallback,
            **tradeoff(t, at),
        }
    out["operating_points"] = points
    return out


def _show(side: dict[str, Any], constraint: str) -> str:
    value = side[CONSTRAINT_STAT[constraint]]
    return "undefined" if value is None else f"{value:.4f}"


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
