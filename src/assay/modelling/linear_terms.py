"""The logistic-regression pipeline as per-feature linear terms (``assay.registry.compiled``'s form).

The pipeline ``Candidate.estimator`` builds for logistic regression is
``ColumnTransformer[numeric: SimpleImputer(median, add_indicator) -> StandardScaler,
categorical: OneHotEncoder(handle_unknown="ignore")] -> LogisticRegression``. Every transformed
column comes from one source feature, so the decision function is a sum of one term per feature;
``linear_model`` reads those terms off the fitted steps. A pipeline of any other shape raises
``NotLinear`` (its version is then served by the pipeline itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NotLinear(Exception):
    """The pipeline is not the shape ``linear_model`` reads."""


def linear_model(pipeline: Any) -> dict[str, Any]:
    """{"n_classes", "intercept", "features": [term per source feature]} of a fitted pipeline."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression

    steps = dict(pipeline.steps)
    columns, model = steps.get("columns"), steps.get("model")
    if (
        len(steps) != 2
        or not isinstance(columns, ColumnTransformer)
        or not isinstance(model, LogisticRegression)
    ):
        raise NotLinear("not the columns -> logistic regression pipeline")
    n_classes = len(model.classes_)
    coef = np.asarray(model.coef_, dtype=np.float64)  # (rows, transformed columns)
    if coef.shape[0] != (1 if n_classes == 2 else n_classes):
        raise NotLinear("one-vs-rest coefficients")
    n = int(pipeline.n_features_in_)
    features: list[dict[str, Any] | None] = [None] * n
    for name, part, selected in columns.transformers_:
        piece = columns.output_indices_[name]
        if part == "drop" or piece.stop == piece.start:
            continue
        picked = [int(j) for j in np.arange(n)[selected]]
        block = coef[:, piece]
        if name == "numeric":
            terms = _numeric_terms(part, block)
        elif name == "categorical":
            terms = _categorical_terms(part, block)
        else:
            raise NotLinear(f"unknown column group {name!r}")
        for j, term in zip(picked, terms, strict=True):
            features[j] = term
    if any(f is None for f in features):
        raise NotLinear("a feature no column group uses")
    return {"n_classes": n_classes, "intercept": [float(v) for v in model.intercept_], "features": features}


def _numeric_terms(part: Any, coef: np.ndarray) -> list[dict[str, Any]]:
    """Terms of Pipeline[SimpleImputer(median, add_indicator=True), StandardScaler] columns."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(part, Pipeline) or len(part.steps) != 2:
        raise NotLinear("numeric columns are not imputed then scaled")
    impute, scale = part[0], part[1]
    if not isinstance(impute, SimpleImputer) or not isinstance(scale, StandardScaler):
        raise NotLinear("numeric columns are not imputed then scaled")
    fill = np.asarray(impute.statistics_, dtype=np.float64)
    if np.isnan(fill).any() or impute.keep_empty_features:
        raise NotLinear("a numeric column with no value at all")
    k = len(fill)
    mean = scale.mean_ if scale.with_mean else np.zeros(coef.shape[1])
    std = scale.scale_ if scale.with_std else np.ones(coef.shape[1])
    indicated = list(impute.indicator_.features_) if impute.add_indicator else []
    if coef.shape[1] != k + len(indicated):
        raise NotLinear("numeric columns do not add up")
    terms = []
    for i in range(k):
        term: dict[str, Any] = {
            "kind": "numeric",
            "fill": float(fill[i]),
            "mean": float(mean[i]),
            "scale": float(std[i]),
            "coef": [float(c) for c in coef[:, i]],
            "indicator": None,
        }
        if i in indicated:
            c = k + indicated.index(i)
            term["indicator"] = {
                "mean": float(mean[c]),
                "scale": float(std[c]),
                "coef": [float(v) for v in coef[:, c]],
            }
        terms.append(term)
    return terms


def _categorical_terms(part: Any, coef: np.ndarray) -> list[dict[str, Any]]:
    """Terms of OneHotEncoder(handle_unknown="ignore") columns: one coefficient row per category."""
    from sklearn.preprocessing import OneHotEncoder

    if (
        not isinstance(part, OneHotEncoder)
        or part.drop_idx_ is not None
        or part.handle_unknown != "ignore"
        or part.min_frequency is not None
        or part.max_categories is not None
    ):
        raise NotLinear("categorical columns are not plainly one-hot encoded")
    terms, at = [], 0
    for categories in part.categories_:
        values = [float(v) for v in categories]
        block = coef[:, at : at + len(values)]
        at += len(values)
        codes = [v for v in values if not np.isnan(v)]
        if any(v != int(v) or v < 0 for v in codes):
            raise NotLinear("categories that are not codes")
        missing = [float(c) for c in block[:, values.index(values[-1])]] if np.isnan(values[-1]) else None
        terms.append(
            {
                "kind": "categorical",
                "codes": codes,
                "coef": [[float(c) for c in block[:, i]] for i in range(len(codes))],
                "missing": missing,
            }
        )
    if at != coef.shape[1]:
        raise NotLinear("categorical columns do not add up")
    return terms
