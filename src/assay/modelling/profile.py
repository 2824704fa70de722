"""Reference profiles: what a version's training data and held-out scores looked like.

Training writes one ``profile.json`` into every version, so a drift check compares a window of
the prediction log with the profile and never rereads the training data. It lives with training,
which builds it; monitoring reads it (imports point from monitoring to modelling, never back). This module owns that
record: building it (``build_profile``), checking it when it is read back (``check_profile``) and
the typed view the drift and performance code use (``Profile``, ``ColumnProfile``).

A column's distribution is kept as its distinct values and their counts, which reproduces every
statistic of the raw column exactly (two-sample tests, Wasserstein distance, histograms on any
bins), as long as there are at most ``MAX_EXACT_VALUES`` of them. A column with more is kept as
``SKETCH_POINTS`` runs of sorted values (each its mean and size): statistics are then close approximations (the
benchmark compares the decisions with Evidently's on the raw data).

Besides the columns: the model's outputs on held-out data (each class's probability and the
prediction), a PCA fitted on the training rows for the multivariate check (NannyML's data
reconstruction error), an isotonic calibration map of the held-out scores (binary models), used
by confidence-based performance estimation, and the held-out size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.isotonic import IsotonicRegression

from assay.errors import ArtifactError, SpecError
from assay.registry.files import json_bytes
from assay.registry.schema import FeatureSchema

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

PROFILE_JSON = "profile.json"
FORMAT = 1
MAX_EXACT_VALUES = 5000
SKETCH_POINTS = 5000
# NannyML's default: keep the principal components that explain 65% of the variance.
PCA_VARIANCE = 0.65
PCA_MAX_ROWS = 200_000
KINDS = ("numeric", "categorical")  # drift treats booleans as two-valued categoricals, as Evidently does


@dataclass(frozen=True)
class ColumnProfile:
    """One column's reference distribution (missing values excluded, counted apart)."""

    name: str
    kind: str  # numeric | categorical
    values: np.ndarray  # distinct values ascending (categorical: codes), or quantile points
    counts: np.ndarray  # each value's count (a sketch: n / SKETCH_POINTS each)
    exact: bool
    n: int  # non-missing rows
    missing: int
    n_unique: int
    mean: float | None
    std: float | None  # population standard deviation (numpy's default), as Evidently normalises by
    min: float | None
    max: float | None
    labels: list[str] | None  # categorical: the name of each code

    @property
    def samples(self) -> np.ndarray:
        """The reference column itself (exact profiles), or the sketch's points."""
        if self.exact:
            return np.repeat(self.values, self.counts.astype(np.int64))
        return self.values

    def label(self, value: float) -> str:
        if self.labels is not None and float(value).is_integer() and 0 <= int(value) < len(self.labels):
            return self.labels[int(value)]
        return f"{value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "values": self.values.tolist(),
            "counts": self.counts.tolist(),
            "exact": self.exact,
            "n": self.n,
            "missing": self.missing,
            "n_unique": self.n_unique,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "labels": self.labels,
        }


@dataclass(frozen=True)
class Multivariate:
    """A PCA of the standardised training rows; a row's error is its distance to its reconstruction."""

    fill: np.ndarray  # per-column value for a missing one (the column's mean)
    frequency: list[dict[int, float] | None]  # categorical columns: code -> share (NannyML's count encoding)
    center: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (k, d)
    error_mean: float
    error_std: float

    def errors(self, X: np.ndarray) -> np.ndarray:
        """Each row's reconstruction error (Euclidean, in standardised units)."""
        Z = _encode_for_pca(X, self.frequency, self.fill)
        Z -= self.center
        Z /= self.scale
        # The components are orthonormal: |z - recon|^2 = |z|^2 - |projection|^2, one product.
        T = Z @ self.components.T
        squared = np.einsum("ij,ij->i", Z, Z) - np.einsum("ij,ij->i", T, T)
        return np.sqrt(np.maximum(squared, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fill": self.fill.tolist(),
            "frequency": [None if f is None else [[k, v] for k, v in f.items()] for f in self.frequency],
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "components": self.components.tolist(),
            "error_mean": self.error_mean,
            "error_std": self.error_std,
        }


@dataclass(frozen=True)
class Profile:
    features: list[ColumnProfile]  # in the schema's column order
    outputs: list[ColumnProfile]  # probability columns, then "prediction"
    classes: list[str]
    positive_index: int | None
    decision_threshold: float | None
    multivariate: Multivariate | None
    calibration: tuple[np.ndarray, np.ndarray] | None  # isotonic map (score -> P(positive)) of held-out data
    reference_rows: int
    held_out_rows: int

    def feature(self, name: str) -> ColumnProfile:
        for column in self.features:
            if column.name == name:
                return column
        raise KeyError(name)

    def calibrate(self, score: np.ndarray) -> np.ndarray:
        """Calibrated P(positive) of positive-class scores (the scores themselves without a map)."""
        if self.calibration is None:
            return score
        x, y = self.calibration
        return np.interp(score, x, y)

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        d = check_profile(data)
        mv = d.get("multivariate")
        cal = d.get("calibration")
        return cls(
            features=[_column(c) for c in d["features"]],
            outputs=[_column(c) for c in d["outputs"]],
            classes=list(d["classes"]),
            positive_index=d["positive_index"],
            decision_threshold=d["decision_threshold"],
            multivariate=None
            if mv is None
            else Multivariate(
                fill=np.asarray(mv["fill"], dtype=float),
                frequency=[None if f is None else {int(k): float(v) for k, v in f} for f in mv["frequency"]],
                center=np.asarray(mv["center"], dtype=float),
                scale=np.asarray(mv["scale"], dtype=float),
                components=np.asarray(mv["components"], dtype=float).reshape(-1, len(mv["center"])),
                error_mean=float(mv["error_mean"]),
                error_std=float(mv["error_std"]),
            ),
            calibration=None if cal is None else (np.asarray(cal["x"], float), np.asarray(cal["y"], float)),
            reference_rows=int(d["reference_rows"]),
            held_out_rows=int(d["held_out_rows"]),
        )


def _column(c: Mapping[str, Any]) -> ColumnProfile:
    return ColumnProfile(
        name=c["name"],
        kind=c["kind"],
        values=np.asarray(c["values"], dtype=np.float64),
        counts=np.asarray(c["counts"], dtype=np.float64),
        exact=c["exact"],
        n=c["n"],
        missing=c["missing"],
        n_unique=c["n_unique"],
        mean=c["mean"],
        std=c["std"],
        min=c["min"],
        max=c["max"],
        labels=c["labels"],
    )


# --------------------------------------------------------------------------- building


def column_profile(
    name: str, kind: str, column: np.ndarray, labels: list[str] | None = None
) -> ColumnProfile:
    """The profile of one encoded column (NaN is missing)."""
    column = np.asarray(column, dtype=np.float64)
    present = column[np.isfinite(column)]
    values, counts = np.unique(present, return_counts=True)
    exact = kind == "categorical" or len(values) <= MAX_EXACT_VALUES
    if not exact:
        # SKETCH_POINTS runs of consecutive sorted values, each kept as its mean and size: the
        # mean of the column is kept exactly, and the tails (which quantiles would cut short)
        # keep their weight in distances like Wasserstein's.
        ordered = np.sort(present)
        starts = (np.arange(SKETCH_POINTS) * len(ordered)) // SKETCH_POINTS
        counts = np.diff(np.append(starts, len(ordered)))
        values = np.add.reduceat(ordered, starts) / counts
    return ColumnProfile(
        name=name,
        kind=kind,
        values=values.astype(np.float64),
        counts=counts.astype(np.float64),
        exact=exact,
        n=len(present),
        missing=int(len(column) - len(present)),
        n_unique=len(np.unique(present)),
        mean=float(present.mean()) if len(present) else None,
        std=float(present.std()) if len(present) else None,
        min=float(present.min()) if len(present) else None,
        max=float(present.max()) if len(present) else None,
        labels=labels,
    )


def feature_columns(schema: FeatureSchema) -> list[tuple[str, str, list[str] | None]]:
    """(name, drift kind, code labels) of each model column."""
    out: list[tuple[str, str, list[str] | None]] = []
    for f in schema.features:
        if f.kind == "numeric":
            out.append((f.name, "numeric", None))
        elif f.kind == "boolean":
            out.append((f.name, "categorical", ["false", "true"]))
        else:
            out.append((f.name, "categorical", list(f.categories)))
    return out


def output_columns(classes: Sequence[str], positive_index: int | None) -> list[str]:
    """Names of the monitored output columns: the positive class's probability (binary) or each
    class's, then ``prediction``."""
    shown = [positive_index] if positive_index is not None else range(len(classes))
    return [f"probability_{classes[j]}" for j in shown] + ["prediction"]


def output_matrix(
    proba: np.ndarray, classes: Sequence[str], positive_index: int | None, threshold: float | None
) -> np.ndarray:
    """The output columns of ``output_columns`` for rows of probabilities (prediction as a class index)."""
    proba = np.asarray(proba, dtype=np.float64)
    if positive_index is not None:
        assert threshold is not None
        pred = np.where(proba[:, positive_index] >= threshold, positive_index, 1 - positive_index)
        return np.column_stack([proba[:, positive_index], pred.astype(np.float64)])
    return np.column_stack([proba, proba.argmax(axis=1).astype(np.float64)])


def build_profile(
    schema: FeatureSchema,
    X: np.ndarray,
    proba: np.ndarray,
    y_true: np.ndarray,
    classes: Sequence[str],
    positive: str | None,
    *,
    decision_threshold: float | None,
    monitored: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The reference profile of a version, as JSON: training rows ``X`` (encoded by ``schema``),
    held-out probabilities ``proba`` with their labels ``y_true``.

    ``monitored`` is the spec's ``[monitoring.features]``: a name there that is no feature of the
    model is refused here, before the version is written.
    """
    classes = [str(c) for c in classes]
    names = schema.names
    unknown = sorted(set(monitored or {}) - set(names))
    if unknown:
        raise SpecError(
            f"monitoring.features.{unknown[0]}: not a feature of this model; features: {', '.join(names)}",
            field=f"monitoring.features.{unknown[0]}",
        )
    features = [
        column_profile(name, kind, X[:, j], labels).to_dict()
        for j, (name, kind, labels) in enumerate(feature_columns(schema))
    ]
    positive_index = None if positive is None else classes.index(positive)
    threshold = decision_threshold if positive_index is not None else None
    outputs_X = output_matrix(proba, classes, positive_index, threshold)
    out_names = output_columns(classes, positive_index)
    outputs = [
        column_profile(name, "categorical" if name == "prediction" else "numeric", outputs_X[:, j],
                       classes if name == "prediction" else None).to_dict()
        for j, name in enumerate(out_names)
    ]  # fmt: skip
    calibration = None
    if positive_index is not None:
        y = (np.asarray(y_true).astype(str) == positive).astype(float)
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(proba[:, positive_index], y)
        calibration = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    return {
        "format": FORMAT,
        "reference": {"features": "training data", "outputs": "held-out data"},
        "reference_rows": len(X),
        "held_out_rows": len(proba),
        "classes": classes,
        "positive_index": positive_index,
        "decision_threshold": threshold,
        "features": features,
        "outputs": outputs,
        "multivariate": _one_blas_thread(_multivariate, schema, X, seed),
        "calibration": calibration,
    }


def profile_bytes(profile: Mapping[str, Any]) -> bytes:
    """The profile as compact JSON (it holds thousands of numbers); NaN and inf are refused."""
    return json_bytes(profile, compact=True)


@functools.cache
def _blas() -> ThreadpoolController:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finding the loaded libraries takes 10-40 ms: once a process


def _one_blas_thread(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` with BLAS on one thread. The PCA's matrices are a few columns wide: on
    more threads, waking BLAS's workers took 0.05-0.12 s of a 0.01-s job (measured on 2 busy
    cores after LightGBM's threads had run); the decomposition is the same, to rounding."""
    with _blas().limit(limits=1, user_api="blas"):
        return work(*args)


def _encode_for_pca(
    X: np.ndarray, frequency: Sequence[Mapping[int, float] | None], fill: np.ndarray
) -> np.ndarray:
    """Categorical codes replaced by their reference share (a code never seen there: 0), then
    missing values by ``fill``."""
    Z = np.array(X, dtype=np.float64, copy=True)
    for j, freq in enumerate(frequency):
        if freq is not None:
            present = np.isfinite(Z[:, j])
            codes = Z[present, j].astype(np.int64)
            lookup = np.zeros(max(max(freq, default=-1), int(codes.max(initial=-1))) + 1)
            for code, share in freq.items():
                lookup[code] = share
            Z[present, j] = lookup[codes]
    missing = ~np.isfinite(Z)
    if missing.any():
        Z[missing] = np.broadcast_to(fill, Z.shape)[missing]
    return Z


def _multivariate(schema: FeatureSchema, X: np.ndarray, seed: int) -> dict[str, Any] | None:
    """NannyML's data reconstruction check: categorical columns as their reference frequency,
    missing values as the column mean, standardised, PCA keeping 65% of the variance."""
    if X.shape[1] < 2 or len(X) < 10:
        return None
    rng = np.random.default_rng(seed)
    rows = X if len(X) <= PCA_MAX_ROWS else X[np.sort(rng.choice(len(X), PCA_MAX_ROWS, replace=False))]
    frequency: list[dict[int, float] | None] = []
    for j, f in enumerate(schema.features):
        if f.kind == "categorical":
            col = rows[:, j][np.isfinite(rows[:, j])]
            codes, counts = np.unique(col.astype(np.int64), return_counts=True)
            frequency.append(
                {int(c): float(n / max(len(col), 1)) for c, n in zip(codes, counts, strict=True)}
            )
        else:
            frequency.append(None)
    encoded = _encode_for_pca(rows, frequency, np.full(X.shape[1], np.nan))  # missing stays NaN
    with np.errstate(all="ignore"):
        fill = np.array(
            [col[np.isfinite(col)].mean() if np.isfinite(col).any() else 0.0 for col in encoded.T]
        )
    Z = _encode_for_pca(rows, frequency, fill)
    center = Z.mean(axis=0)
    scale = Z.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Zs = (Z - center) / scale
    pca = PCA(n_components=PCA_VARIANCE, svd_solver="full", random_state=seed).fit(Zs)
    components = pca.components_
    recon = (Zs @ components.T) @ components
    errors = np.linalg.norm(Zs - recon, axis=1)
    return {
        "fill": fill.tolist(),
        "frequency": [None if f is None else [[k, v] for k, v in f.items()] for f in frequency],
        "center": center.tolist(),
        "scale": scale.tolist(),
        "components": components.tolist(),
        "error_mean": float(errors.mean()),
        "error_std": float(errors.std()),
    }


# --------------------------------------------------------------------------- checking


def check_profile(data: Any, name: str = PROFILE_JSON) -> dict[str, Any]:
    """``data`` if it is a profile this code can use, else an ``ArtifactError`` naming the field."""

    def fail(where: str, problem: str) -> ArtifactError:
        return ArtifactError(f"{name}: {where} {problem}", field=where)

    if not isinstance(data, dict):
        raise fail("profile", "must be an object")
    _check_header(data, fail)
    for part in ("features", "outputs"):
        columns = data[part]
        if not isinstance(columns, list):
            raise fail(part, "must be a list")
        for i, column in enumerate(columns):
            _check_column(column, f"{part}[{i}]", fail)
    _check_multivariate(data.get("multivariate"), len(data["features"]), fail)
    cal = data.get("calibration")
    if cal is not None and (
        not isinstance(cal, dict)
        or not isinstance(cal.get("x"), list)
        or not isinstance(cal.get("y"), list)
        or len(cal["x"]) != len(cal["y"])
        or not cal["x"]
    ):
        raise fail("calibration", "must hold x and y lists of equal, non-zero length")
    return data


_Fail = Callable[[str, str], ArtifactError]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_header(data: dict[str, Any], fail: _Fail) -> None:
    """The format, sizes and classes."""
    for key in ("format", "reference_rows", "held_out_rows", "classes", "features", "outputs"):
        if key not in data:
            raise fail(key, "is missing")
    if data["format"] != FORMAT:
        raise fail("format", f"is {data['format']!r}; this assay reads format {FORMAT}")
    for key in ("reference_rows", "held_out_rows"):
        if not _count(data[key]):
            raise fail(key, "must be a count")
    classes = data["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise fail("classes", "must be a list of at least two class names")
    pi = data.get("positive_index")
    if pi is not None and (not isinstance(pi, int) or isinstance(pi, bool) or not 0 <= pi < len(classes)):
        raise fail("positive_index", "must be a class index or null")


def _check_column(c: Any, where: str, fail: _Fail) -> None:
    if not isinstance(c, dict) or c.get("kind") not in KINDS or not isinstance(c.get("name"), str):
        raise fail(where, "must be a column with a name and a kind (numeric or categorical)")
    values, counts = c.get("values"), c.get("counts")
    if not isinstance(values, list) or not isinstance(counts, list) or len(values) != len(counts):
        raise fail(where, "values and counts must be lists of equal length")
    if not all(_finite(v) for v in values) or not all(_finite(v) and v >= 0 for v in counts):
        raise fail(where, "values and counts must be finite numbers (counts not negative)")
    for key in ("n", "missing", "n_unique"):
        if not _count(c.get(key)):
            raise fail(f"{where}.{key}", "must be a count")
    if not isinstance(c.get("exact"), bool):
        raise fail(f"{where}.exact", "must be true or false")
    for key in ("mean", "std", "min", "max"):
        if c.get(key) is not None and not _finite(c.get(key)):
            raise fail(f"{where}.{key}", "must be a number or null")
    labels = c.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(s, str) for s in labels)):
        raise fail(f"{where}.labels", "must be a list of names or null")


def _check_multivariate(mv: Any, d: int, fail: _Fail) -> None:
    if mv is None:
        return
    if not isinstance(mv, dict) or any(
        not isinstance(mv.get(k), list) or len(mv[k]) != d for k in ("fill", "center", "scale", "frequency")
    ):
        raise fail("multivariate", f"must hold fill, center, scale and frequency for {d} columns")
    comps = mv.get("components")
    if not isinstance(comps, list) or not all(isinstance(r, list) and len(r) == d for r in comps):
        raise fail("multivariate.components", f"must be rows of {d} numbers")
    if not _finite(mv.get("error_mean")) or not _finite(mv.get("error_std")):
        raise fail("multivariate", "error_mean and error_std must be numbers")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
