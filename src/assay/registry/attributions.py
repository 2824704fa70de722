"""Per-feature contributions of models that have no exact attributions of their own.

* ``linear_contributions``: a preprocessing + logistic-regression pipeline's terms (coef x
  transformed value), summed back onto each source feature (``pipeline_sources`` traces them);
* ``occlusion_contributions``: the approximation for models without exact attributions (a
  tree ensemble that could not be compiled, averaged shard models).

Compiled models (``assay.registry.compiled``) and LightGBM explain themselves exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from assay.errors import InvalidInput

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Occlusion turns probabilities into log-odds; clipping keeps hard 0/1 votes of a random
# forest finite (logit(1e-6) ~ -13.8) instead of producing inf - inf = nan.
_PROBA_CLIP = 1e-6
# Occlusion scores n * (d + 1) rows; chunk the rows so one call holds at most this many cells.
_OCCLUSION_MAX_CELLS = 4_000_000


def as_matrix(X: np.ndarray, n_features: int) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise InvalidInput(f"expected a 2-D array with {n_features} feature columns, got shape {X.shape}")
    return X


def pipeline_sources(pipeline: Pipeline) -> np.ndarray:
    """Source feature index of every column the pipeline's preprocessing feeds to the
    LogisticRegression; raises ValueError for steps whose columns cannot be traced."""
    n_features = int(pipeline.n_features_in_)
    sources = np.arange(n_features)
    for _, step in pipeline.steps[:-1]:
        sources = _output_sources(step, sources)
    width = pipeline[-1].coef_.shape[1]
    if len(sources) != width:
        raise ValueError(f"traced {len(sources)} transformed columns, the model has {width}")
    return sources


def _output_sources(transformer: Any, inputs: np.ndarray) -> np.ndarray:
    """For a fitted transformer whose input columns come from source features ``inputs``,
    the source feature of each output column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

    if transformer is None or transformer == "passthrough":
        return inputs
    if isinstance(transformer, Pipeline):
        for _, step in transformer.steps:
            inputs = _output_sources(step, inputs)
        return inputs
    if isinstance(transformer, ColumnTransformer):
        width = max((s.stop for s in transformer.output_indices_.values()), default=0)
        out = np.full(width, -1)
        for name, part, columns in transformer.transformers_:
            piece = transformer.output_indices_[name]
            if part == "drop" or piece.stop == piece.start:
                continue
            try:
                selected = inputs[np.arange(len(inputs))[columns]]
            except (IndexError, TypeError) as exc:
                raise ValueError(f"column selection {columns!r} of {name!r} is not positional") from exc
            part_sources = _output_sources(part, selected)
            if len(part_sources) != piece.stop - piece.start:
                raise ValueError(f"cannot trace the columns of transformer {name!r}")
            out[piece] = part_sources
        return out
    if isinstance(transformer, OneHotEncoder):
        if transformer.min_frequency is not None or transformer.max_categories is not None:
            raise ValueError("OneHotEncoder with infrequent categories is not supported")
        dropped = transformer.drop_idx_
        counts = [
            len(cats) - (dropped is not None and dropped[i] is not None)
            for i, cats in enumerate(transformer.categories_)
        ]
        return np.repeat(inputs, counts)
    if isinstance(transformer, SimpleImputer):
        statistics = np.asarray(transformer.statistics_, dtype=np.float64)
        # Features with no observed value at fit are dropped unless keep_empty_features.
        kept = inputs if transformer.keep_empty_features else inputs[~np.isnan(statistics)]
        if transformer.add_indicator:
            kept = np.concatenate((kept, inputs[transformer.indicator_.features_]))
        return kept
    if isinstance(transformer, StandardScaler | MinMaxScaler | RobustScaler | MaxAbsScaler):
        return inputs
    raise ValueError(f"cannot trace columns through {type(transformer).__name__}")


def linear_contributions(
    pipeline: Pipeline, sources: np.ndarray, X: np.ndarray, n_classes: int
) -> np.ndarray:
    """Exact contributions of a preprocessing + LogisticRegression pipeline, in decision_function
    space: coef x transformed value, summed over the columns that came from each source feature
    (one-hot columns and missing indicators included); bias = intercept.

    Binary: class 1 holds the log-odds terms and class 0 their negation, so both classes sum
    to their own log-odds, as for LightGBM.
    """
    import scipy.sparse

    Z = pipeline[:-1].transform(X)
    if scipy.sparse.issparse(Z):
        Z = Z.toarray()
    model = pipeline[-1]
    n_features = int(pipeline.n_features_in_)
    # (transformed column -> source feature) as a 0/1 matrix so that the regrouping is one matmul.
    to_source = np.zeros((len(sources), n_features))
    to_source[np.arange(len(sources)), sources] = 1.0
    terms = Z[:, None, :] * model.coef_[None, :, :]  # (n, rows of coef_, transformed columns)
    per_feature = terms @ to_source
    bias = np.broadcast_to(model.intercept_, (X.shape[0], model.coef_.shape[0]))[:, :, None]
    scores = np.concatenate((per_feature, bias), axis=2)
    if n_classes == 2:
        return np.concatenate((-scores, scores), axis=1)
    return scores


def _logit(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, _PROBA_CLIP, 1.0 - _PROBA_CLIP)
    return np.log(p) - np.log1p(-p)


def occlusion_contributions(
    predict_proba: Callable[[np.ndarray], np.ndarray], n_classes: int, X: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """Approximate contributions for models without exact attributions (scikit-learn's tree
    ensembles, averaged shard models).

    Per class k the score is the one-vs-rest log-odds logit(p_k) (the usual log-odds for
    binary, with class 0 = -class 1). Feature j's contribution is score(x) minus the score
    of x with feature j set to its reference value; bias = score of the reference row.
    Interactions make the sum differ from score(x) - bias; it is exact only for a row that
    equals the reference.
    """
    n, d = X.shape
    base = _logit(predict_proba(reference[None, :]))[0]
    out = np.empty((n, n_classes, d + 1))
    out[:, :, d] = base
    step = max(1, _OCCLUSION_MAX_CELLS // ((d + 1) * d))
    for start in range(0, n, step):
        rows = X[start : start + step]
        m = rows.shape[0]
        # Block 0 is the rows as given, block j+1 the rows with feature j replaced.
        stacked = np.repeat(rows[None, :, :], d + 1, axis=0)
        stacked[np.arange(1, d + 1), :, np.arange(d)] = reference[:, None]
        scores = _logit(predict_proba(stacked.reshape(-1, d))).reshape(d + 1, m, -1)
        out[start : start + m, :, :d] = (scores[0][None] - scores[1:]).transpose(1, 2, 0)
    return out
