"""What held-out data says of a trained model: statistics, operating points and fairness at each.

Training calls ``assess_held_out`` once the winner is refitted (``publication.assess``
gathers what it says, with feature importance, into an ``Assessment``). It evaluates the model on
the held-out rows (``evaluation.evaluate``, with the spec's fairness options),
answers each named operating point for the class the point names, and measures
fairness at every operating point as well as at the decision threshold, for each
sensitive attribute and each intersection of attributes the spec asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from assay.errors import SpecError
from assay.modelling import evaluation
from assay.modelling.fairness import FairnessOptions, group_fairness, intersect
from assay.modelling.progress import Progress
from assay.modelling.queries import answer_threshold_query
from assay.modelling.spec import ModelSpec
from assay.modelling.statistics import groups_as_strings


@dataclass
class Assessment:
    """What held-out data says of the refitted winner."""

    proba: np.ndarray
    evaluation: dict[str, Any]
    importance: list[dict[str, Any]]
    operating_points: dict[str, dict[str, Any]]
    # operating point -> attribute -> fairness of flagging its class at its threshold
    fairness_at: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)  # held-out groups by attribute
    mitigation: dict[str, Any] | None = None  # what mitigation did, beside the unmitigated model


def full_proba(estimator: Any, X: np.ndarray, k: int) -> np.ndarray:
    """Probabilities with a column for every class, even one missing from a fold's training part."""
    proba = estimator.predict_proba(X)
    if proba.shape[1] == k:
        return proba
    full = np.zeros((len(X), k))
    full[:, estimator.classes_] = proba
    return full


def operating_point_classes(spec: ModelSpec, classes: list[str], positive: str | None) -> dict[str, str]:
    """The class each operating point flags; a spec that leaves it unclear is refused.

    A binary task's points flag the positive class (naming it is allowed); a multiclass
    task's points must name theirs, since no class is "the" one.
    """
    out = {}
    for name, point in spec.operating_points.items():
        key = f"operating_points.{name}"
        if positive is not None and point.cls not in (None, positive):
            raise SpecError(
                f"{spec.source}: {key}: a binary model's operating points flag the positive class "
                f"{positive!r}, not {point.cls!r}",
                field=key,
            )
        if positive is None and point.cls not in classes:
            problem = "names no class" if point.cls is None else f"names {point.cls!r}, not a class"
            raise SpecError(
                f"{spec.source}: {key}: {problem}; a multiclass model's operating point needs "
                f'{{ query = "...", class = "..." }} with one of {", ".join(classes)}',
                field=key,
            )
        out[name] = point.cls or positive or ""
    return out


def fairness_options(spec: ModelSpec) -> FairnessOptions:
    f = spec.fairness
    return FairnessOptions(f.min_group_size, f.bootstrap, f.confidence, spec.seed)


def sensitive_groups(spec: ModelSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each sensitive column's groups, then each intersection the spec asks for (``sex & race``)."""
    groups = {a: groups_as_strings(frame[a].to_numpy()) for a in spec.features.sensitive}
    for columns in spec.fairness.intersections:
        name, joined = intersect({c: groups[c] for c in columns})
        groups[name] = joined
    return groups


def assess_held_out(
    spec: ModelSpec,
    classes: list[str],
    positive: str | None,
    proba: np.ndarray,
    y_test: np.ndarray,
    test_frame: pd.DataFrame,
    say: Progress,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The evaluation, the answered operating points, fairness at each of them, and the groups."""
    sensitive = sensitive_groups(spec, test_frame)
    say("evaluating on held-out data")
    options = fairness_options(spec)
    ev = evaluation.evaluate(
        y_test, proba, classes, positive=positive, sensitive=sensitive or None, fairness_options=options
    )
    points: dict[str, dict[str, Any]] = {}
    fairness_at: dict[str, dict[str, Any]] = {}
    y = np.asarray(y_test).astype(str)
    for name, cls in operating_point_classes(spec, classes, positive).items():
        query = spec.operating_points[name].query
        answer = answer_threshold_query(ev["thresholds"][cls], query)
        points[name] = {"query": query, "class": cls, "answer": answer}
        if answer is None or not sensitive:
            continue
        score = proba[:, classes.index(cls)]
        flagged = score >= answer["threshold"]
        fairness_at[name] = {
            attribute: group_fairness(y == cls, flagged, score, groups, options)
            for attribute, groups in sensitive.items()
        }
    _warn_small_groups(ev, say)
    return ev, points, fairness_at, sensitive


def _warn_small_groups(ev: dict[str, Any], say: Progress) -> None:
    for attribute, by_class in ev["fairness"].items():
        block = next(iter(by_class.values()))
        if block["excluded_groups"]:
            shown = ", ".join(f"{g} (n={block['groups'][g]['count']})" for g in block["excluded_groups"][:5])
            say(
                f"warning: {attribute}: {len(block['excluded_groups'])} group(s) smaller than "
                f"fairness.min_group_size={block['min_group_size']} are listed but not compared: {shown}"
            )
