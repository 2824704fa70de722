"""Compiled models: the fast, library-light form a version is served by.

``assay train`` stores beside every scikit-learn model (kept as the reference, ``model.skops``)
a compiled form that computes the same probabilities (checked on the held-out rows before the
version is written, the largest difference recorded in ``model.json`` and the lineage):

* tree ensembles (HistGradientBoosting, random forest) as a LightGBM text model
  (``model.compiled.lgb.txt``), served by LightGBM's predictor and explained by its exact TreeSHAP;
  a forest's output is the average of its trees' raw scores (``output: "average"``);
* the logistic-regression pipeline (imputation, scaling, one-hot encoding, coefficients) as
  one JSON file of per-feature terms (``model.compiled.linear.json``), evaluated by ``LinearPredictor``
  in plain Python for one row and numpy for many, its contributions the same exact terms.

Both are data: the LightGBM text passes ``assay.registry.lightgbm_text``'s strict reader and the
JSON this module's checks before anything uses them; neither runs code or needs scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from assay.errors import ArtifactError, InvalidInput
from assay.registry.attributions import as_matrix
from assay.registry.files import parse_header

COMPILED_TREES = "model.compiled.lgb.txt"
COMPILED_LINEAR = "model.compiled.linear.json"
LINEAR_FORMAT = "assay-linear"
LINEAR_FORMAT_VERSION = 1
COMPILED_FILES = {"lightgbm-text": COMPILED_TREES, "linear-json": COMPILED_LINEAR}
OUTPUTS = ("probability", "average")
# Category codes index a dense table: a schema's codes count its categories.
MAX_CODE = 1_000_000
# Above this, the compiled form is not the same model: the version is served by its reference.
AGREEMENT_TOLERANCE = 1e-6


def check_compiled_meta(value: Any) -> dict[str, Any] | None:
    """model.json's ``compiled`` entry, checked: None, or its format, file, output and agreement."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"format", "file", "output", "max_abs_diff"}:
        raise ArtifactError("model.json has an invalid compiled entry")
    if COMPILED_FILES.get(value["format"]) != value["file"] or value["output"] not in OUTPUTS:
        raise ArtifactError(
            f"model.json names an unknown compiled form {value['format']!r}/{value['file']!r}"
        )
    diff = value["max_abs_diff"]
    if type(diff) not in (int, float) or not 0 <= diff <= AGREEMENT_TOLERANCE:
        raise ArtifactError(f"model.json's compiled form disagrees with its model ({diff!r})")
    return value


class Overflow(InvalidInput):
    """A feature value too far outside the training data for a linear model's float64 arithmetic
    (row and column of the matrix; the scorer names the feature)."""

    def __init__(self, row: int, column: int, value: float) -> None:
        super().__init__(
            f"row {row}: {value:g} is too far outside the training data for this model to score", field=None
        )
        self.row, self.column, self.value = row, column, value


class LinearPredictor:
    """A compiled logistic regression: per-feature terms, summed and passed through the link.

    Term of a numeric feature: ``coef * ((x - mean) / scale)`` with ``x`` its fill value when
    missing, plus its missing indicator's own scaled term; of a categorical feature: the
    coefficient of its category (zero for a category the model never saw, as one-hot encoding
    with ``handle_unknown="ignore"`` does). Binary models have one row of terms (class 1's
    log-odds); multiclass one per class, through softmax.
    """

    kind = "compiled-linear"
    explanation_method = "exact"

    def __init__(self, model: dict[str, Any]) -> None:
        self.n_classes = int(model["n_classes"])
        self.n_features = len(model["features"])
        self.rows = 1 if self.n_classes == 2 else self.n_classes
        self.intercept = np.asarray(model["intercept"], dtype=np.float64)
        self._bias = self.intercept.tolist()
        self.features = model["features"]
        self._plan = [_term_plan(f) for f in self.features]
        # Categorical terms as dense tables over codes 0..max, then "unknown" (zeros), then "missing".
        self._dense = {
            j: _dense_table(f, self.rows) for j, f in enumerate(self.features) if f["kind"] != "numeric"
        }

    # --- one row, plain Python (numpy's per-call cost dwarfs a few multiplications) -------------

    def _row_terms(self, row: list[float]) -> list[list[float]]:
        return [plan(x) for plan, x in zip(self._plan, row, strict=True)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        if len(X) == 1:
            terms = self._row_terms(X[0].tolist())
            scores = [b + sum(t[r] for t in terms) for r, b in enumerate(self._bias)]
            if not all(map(math.isfinite, scores)):
                return self._checked_link(X)  # names the value that overflowed
            if self.rows == 1:
                p = 1.0 / (1.0 + math.exp(-scores[0])) if scores[0] > -700 else 0.0
                return np.array([[1.0 - p, p]])
            top = max(scores)
            exps = [math.exp(v - top) for v in scores]
            total = sum(exps)
            return np.array([[e / total for e in exps]])
        return self._checked_link(X)

    def _checked_link(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of many rows; a value so large that its term overflows float64 is refused:
        its score would be a bare infinity, or NaN where two of them meet."""
        with np.errstate(over="ignore", invalid="ignore"):
            terms = self._terms(X)
            finite = np.isfinite(terms).all(axis=1)
            if not finite.all():
                k, j = (int(i) for i in np.argwhere(~finite)[0])
                raise Overflow(k, j, float(X[k, j]))
            return _link(terms.sum(axis=2) + self.intercept)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, self.n_features)
        terms = self._terms(X)  # (n, rows, features)
        bias = np.broadcast_to(self.intercept, (len(X), self.rows))[:, :, None]
        scores = np.concatenate((terms, bias), axis=2)
        return np.concatenate((-scores, scores), axis=1) if self.n_classes == 2 else scores

    def _terms(self, X: np.ndarray) -> np.ndarray:
        """(n, rows, features): every feature's term of every row."""
        out = np.empty((len(X), self.rows, self.n_features))
        for j, f in enumerate(self.features):
            x = X[:, j]
            missing = np.isnan(x)
            if f["kind"] == "numeric":
                v = np.where(missing, f["fill"], x)
                term = ((v - f["mean"]) / f["scale"])[:, None] * np.asarray(f["coef"])[None, :]
                ind = f["indicator"]
                if ind is not None:
                    z = (missing.astype(np.float64) - ind["mean"]) / ind["scale"]
                    term = term + z[:, None] * np.asarray(ind["coef"])[None, :]
                out[:, :, j] = term
            else:
                out[:, :, j] = self._dense[j][_dense_index(x, missing, len(self._dense[j]) - 3)]
        return out


def _dense_table(f: dict[str, Any], rows: int) -> np.ndarray:
    top = int(max(f["codes"], default=-1))
    table = np.zeros((top + 3, rows))
    for code, terms in zip(f["codes"], f["coef"], strict=True):
        table[int(code)] = terms
    if f["missing"] is not None:
        table[top + 2] = f["missing"]
    return table


def _dense_index(x: np.ndarray, missing: np.ndarray, top: int) -> np.ndarray:
    """Row of ``_dense_table`` for every value: its code, ``top + 1`` if unknown, ``top + 2`` if missing."""
    safe = np.where(missing, -1.0, x)
    known = (safe >= 0) & (safe <= top) & (safe == np.floor(safe))
    index = np.where(known, safe, top + 1).astype(np.intp)
    index[missing] = top + 2
    return index


def _term_plan(f: dict[str, Any]) -> Any:
    """The plain-Python term function of one feature (the single-row path)."""
    if f["kind"] == "numeric":
        fill, mean, scale, coef, ind = f["fill"], f["mean"], f["scale"], f["coef"], f["indicator"]

        def numeric(x: float) -> list[float]:
            missing = x != x  # NaN
            z = ((fill if missing else x) - mean) / scale
            if ind is None:
                return [c * z for c in coef]
            zi = ((1.0 if missing else 0.0) - ind["mean"]) / ind["scale"]
            return [c * z + ci * zi for c, ci in zip(coef, ind["coef"], strict=True)]

        return numeric
    rows = len(f["missing"]) if f["missing"] is not None else len(f["coef"][0]) if f["coef"] else 0
    table = {c: list(t) for c, t in zip(f["codes"], f["coef"], strict=True)}
    zero = [0.0] * rows
    missing_terms = f["missing"] if f["missing"] is not None else zero

    def categorical(x: float) -> list[float]:
        if x != x:
            return missing_terms
        return table.get(x, zero)

    return categorical


def _link(scores: np.ndarray) -> np.ndarray:
    """Probabilities of (n, rows) decision scores: the logistic for one row, softmax for several."""
    if scores.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        out = np.empty((len(p), 2))
        out[:, 1] = p
        np.subtract(1.0, p, out=out[:, 0])
        return out
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# --- the linear file ---------------------------------------------------------------------


def linear_bytes(model: dict[str, Any]) -> bytes:
    """The compiled linear model as the file stores it."""
    return orjson.dumps({"format": LINEAR_FORMAT, "format_version": LINEAR_FORMAT_VERSION, **model})


def read_linear(data: bytes, n_classes: int, n_features: int) -> dict[str, Any]:
    """The compiled linear model in ``data``, refused unless every part has its shape and is finite."""
    model = parse_header(data, COMPILED_LINEAR, LINEAR_FORMAT, LINEAR_FORMAT_VERSION)
    rows = 1 if n_classes == 2 else n_classes
    features = model.get("features")
    if model.get("n_classes") != n_classes or not isinstance(features, list) or len(features) != n_features:
        raise ArtifactError(f"{COMPILED_LINEAR} does not match model.json's classes and features")
    _numbers(model.get("intercept"), rows, "intercept")
    for j, f in enumerate(features):
        where = f"features[{j}]"
        if not isinstance(f, dict) or f.get("kind") not in ("numeric", "categorical"):
            raise ArtifactError(f"{COMPILED_LINEAR}: {where} is not a numeric or categorical term")
        if f["kind"] == "numeric":
            if set(f) != {"kind", "fill", "mean", "scale", "coef", "indicator"}:
                raise ArtifactError(f"{COMPILED_LINEAR}: {where} has unexpected keys")
            _numbers([f["fill"], f["mean"], f["scale"]], 3, where)
            _numbers(f["coef"], rows, f"{where}.coef")
            ind = f["indicator"]
            if ind is not None:
                if not isinstance(ind, dict) or set(ind) != {"mean", "scale", "coef"}:
                    raise ArtifactError(f"{COMPILED_LINEAR}: {where}.indicator has unexpected keys")
                _numbers([ind["mean"], ind["scale"]], 2, f"{where}.indicator")
                _numbers(ind["coef"], rows, f"{where}.indicator.coef")
            if f["scale"] == 0 or (ind is not None and ind["scale"] == 0):
                raise ArtifactError(f"{COMPILED_LINEAR}: {where} has a zero scale")
        else:
            if set(f) != {"kind", "codes", "coef", "missing"}:
                raise ArtifactError(f"{COMPILED_LINEAR}: {where} has unexpected keys")
            codes = _numbers(f["codes"], None, f"{where}.codes")
            if codes != sorted(set(codes)) or not all(c == int(c) and 0 <= c <= MAX_CODE for c in codes):
                raise ArtifactError(
                    f"{COMPILED_LINEAR}: {where}.codes must be distinct category codes, sorted"
                )
            if not isinstance(f["coef"], list) or len(f["coef"]) != len(codes):
                raise ArtifactError(f"{COMPILED_LINEAR}: {where}.coef needs one row per code")
            for row in f["coef"]:
                _numbers(row, rows, f"{where}.coef")
            if f["missing"] is not None:
                _numbers(f["missing"], rows, f"{where}.missing")
    return model


def _numbers(value: Any, length: int | None, where: str) -> list[float]:
    if (
        not isinstance(value, list)
        or (length is not None and len(value) != length)
        or not all(type(v) in (int, float) and math.isfinite(v) for v in value)
    ):
        raise ArtifactError(f"{COMPILED_LINEAR}: {where} must be {length or 'a list of'} finite numbers")
    return [float(v) for v in value]
