"""Explanations: turning a predictor's per-feature contributions into the ranked list a
product page or a reviewer sees.

The numbers come from ``Predictor.contributions`` (see ``assay.registry.artifacts``); this module
only picks the class, names the features and orders them by how much they moved the score.
A request's ``explain`` is a top-N count (``check_explain``); ``explain_scores`` adds each
score's explanation of the class it predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from assay.errors import InvalidInput
from assay.registry.artifacts import Predictor
from assay.serving.served import ServedModel

MAX_EXPLAIN = 50


def explain(
    predictor: Predictor,
    X: np.ndarray,
    feature_names: list[str],
    class_index: int,
    *,
    top: int = 5,
) -> list[dict[str, Any]]:
    """One explanation per row of ``X`` for the score of class ``class_index`` (the positive
    class for binary models).

    Each is ``{"method", "base", "contributions": [{"feature", "contribution"}, ...]}``: base is
    the bias term (the score before any feature is considered), contributions are in the
    model's raw-score space (log-odds), largest magnitude first, ties in feature order,
    cut to ``top`` entries (``top <= 0`` keeps all).
    """
    if len(feature_names) != predictor.n_features:
        raise ValueError(f"got {len(feature_names)} feature names for a model with {predictor.n_features}")
    if not 0 <= class_index < predictor.n_classes:
        raise InvalidInput(
            f"class index {class_index} is out of range for a model with {predictor.n_classes} classes",
            field="class_index",
        )
    scores = predictor.contributions(X)[:, class_index, :]
    keep = predictor.n_features if top <= 0 else min(top, predictor.n_features)
    explanations = []
    for row in scores:
        per_feature = row[:-1]
        # Stable sort on -|c| keeps equal contributions in feature order, so output is deterministic.
        order = np.argsort(-np.abs(per_feature), kind="stable")[:keep]
        explanations.append(
            {
                "method": predictor.explanation_method,
                "base": float(row[-1]),
                "contributions": [
                    {"feature": feature_names[j], "contribution": float(per_feature[j])} for j in order
                ],
            }
        )
    return explanations


def check_explain(explain: Any) -> int:
    """``explain`` as a top-N count: true means 5, false/0 means none."""
    if explain is True:
        return 5
    if explain is False or explain is None:
        return 0
    if isinstance(explain, int) and 0 <= explain <= MAX_EXPLAIN:
        return explain
    raise InvalidInput(f"explain must be true, false or a count from 0 to {MAX_EXPLAIN}", field="explain")


def explain_scores(served: ServedModel, X: np.ndarray, scores: list[dict[str, Any]], top: int) -> None:
    """Explain each row's predicted class (the positive class for binary models)."""
    loaded = served.loaded
    if served.positive_index is not None:
        groups = {served.positive_index: list(range(len(scores)))}
    else:
        groups = {}
        for k, score in enumerate(scores):
            groups.setdefault(loaded.classes.index(score["prediction"]), []).append(k)
    for class_index, rows in groups.items():
        explained = explain(loaded.predictor, X[rows], served.names, class_index, top=top)
        for k, explanation in zip(rows, explained, strict=True):
            values = scores[k].get("features") or loaded.schema.decode_row(X[k])
            for entry in explanation["contributions"]:
                entry["value"] = values[entry["feature"]]
            scores[k]["explanation"] = {"class": loaded.classes[class_index], **explanation}
