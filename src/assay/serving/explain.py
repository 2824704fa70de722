"""Explanations: turning a predictor's per-feature contributions into the ranked list a
product page or a reviewer sees.

The numbers come from ``Predictor.contributions`` (see ``assay.registry.artifacts``); this module
only picks the class, names the features and orders them by how much they moved the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from assay.errors import InvalidInput
from assay.registry.artifacts import Predictor


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
