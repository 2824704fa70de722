"""Drift: does a window of logged rows still look like the version's reference profile?

Per column (each feature, and each monitored output: the probabilities and the prediction) one
test decides, by default the one Evidently's ``DataDriftPreset`` picks, reproduced here on the
profile (``default_test``):

* reference of at most 1,000 (non-missing) rows: two-sample Kolmogorov-Smirnov for numeric
  columns with more than 5 distinct values (drift when p <= 0.05), chi-square for categorical
  ones and numeric ones with 3 to 5 values (p < 0.05), the two-proportion z-test when there are
  at most 2 values (p < 0.05);
* larger references: the Wasserstein distance divided by the reference's standard deviation for
  numeric columns with more than 5 values, the Jensen-Shannon distance otherwise (drift at or
  above 0.1).

The number of distinct values is counted over reference and window together and missing values
are left out, as Evidently does; the data set drifts when at least ``drift_share`` (0.5) of the
features drift. A spec may name another test and threshold per feature (``[monitoring.features]``),
PSI among them; ``psi=True`` adds every column's PSI beside its decision. Binning follows
Evidently too: Sturges bins over reference and window together for numeric columns with more than
20 reference values, one bin per value otherwise. The statistics are scipy's and numpy's.

The multivariate check is NannyML's data reconstruction error: the mean distance of the window's
rows to their reconstruction through the reference PCA, against the reference's mean plus or minus
three standard errors for a window of that size (at most 100,000 of its rows, evenly spread).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance
from scipy.special import rel_entr

from assay.modelling.profile import ColumnProfile, Profile
from assay.modelling.spec import P_VALUE_TESTS, FeatureMonitorSpec

DEFAULT_THRESHOLDS = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
SMALL_REFERENCE = 1000  # Evidently's boundary between p-value tests and distances
MULTIVARIATE_SIGMAS = 3.0
MULTIVARIATE_MAX_ROWS = 100_000


@dataclass(frozen=True)
class Current:
    """A window's column: its non-missing values, distinct and counted once for every test."""

    raw: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    missing: int

    @classmethod
    def of(cls, column: np.ndarray) -> Current:
        column = np.asarray(column, dtype=np.float64)
        finite = np.isfinite(column)
        raw = column if finite.all() else column[finite]
        values, counts = np.unique(raw, return_counts=True)
        return cls(raw, values, counts.astype(np.float64), int(len(column) - len(raw)))

    @property
    def n(self) -> int:
        return len(self.raw)


@dataclass
class ColumnDrift:
    column: str
    test: str
    statistic: float | None  # a p-value (ks, chisquare, z) or a distance; None when not judged
    threshold: float
    drift: bool | None  # None: the window had no value in this column, or too few rows
    n: int
    missing_share: float | None
    reference_missing_share: float | None
    mean: float | None
    reference_mean: float | None
    psi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class WindowDrift:
    n: int
    judged: bool
    features: list[ColumnDrift]
    outputs: list[ColumnDrift]
    drifted: int
    share: float | None
    dataset_drift: bool | None
    drift_share: float
    multivariate: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        return [c.column for c in self.features if c.drift]

    @property
    def output_drift(self) -> bool | None:
        decided = [c.drift for c in self.outputs if c.drift is not None]
        return any(decided) if decided else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "judged": self.judged,
            "drifted": self.drifted,
            "share": self.share,
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drifted_features": self.drifted_features,
            "output_drift": self.output_drift,
            "features": [c.to_dict() for c in self.features],
            "outputs": [c.to_dict() for c in self.outputs],
            "multivariate": self.multivariate,
        }


# --------------------------------------------------------------------------- choosing


def distinct_together(ref: ColumnProfile, cur: Current) -> int:
    """Distinct non-missing values in reference and window together (a sketch has more than 5000)."""
    if not ref.exact:
        return ref.n_unique + len(cur.values)
    return len(np.union1d(ref.values, cur.values))


def default_test(ref: ColumnProfile, cur: Current) -> str:
    """The test Evidently's default rule picks for this column."""
    n_values = distinct_together(ref, cur)
    numeric = ref.kind == "numeric" and n_values > 5
    if ref.n <= SMALL_REFERENCE:
        if numeric:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    return "wasserstein" if numeric else "jensenshannon"


# --------------------------------------------------------------------------- tests


def binned(ref: ColumnProfile, cur: Current, *, fill_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reference and window shares per bin, binned as Evidently bins (see the module docstring)."""
    if ref.kind == "numeric" and ref.n_unique > 20:
        assert ref.min is not None and ref.max is not None
        lo, hi = min(ref.min, float(cur.values[0])), max(ref.max, float(cur.values[-1]))
        # numpy's "sturges" rule over the combined column, from its size and range alone.
        size = ref.n + cur.n
        if hi > lo:
            width = (hi - lo) / (np.log2(size) + 1.0)
            edges = np.linspace(lo, hi, int(np.ceil((hi - lo) / width)) + 1)
        else:
            edges = np.linspace(lo - 0.5, hi + 0.5, 2)
        r = np.histogram(ref.values, edges, weights=ref.counts)[0] / ref.n
        c = np.histogram(cur.values, edges, weights=cur.counts)[0] / cur.n
    else:
        keys = np.union1d(ref.values, cur.values)
        r = np.zeros(len(keys))
        c = np.zeros(len(keys))
        r[np.searchsorted(keys, ref.values)] = ref.counts / ref.n
        c[np.searchsorted(keys, cur.values)] = cur.counts / cur.n
    if fill_zeroes:
        r, c = _fill_zeroes(r), _fill_zeroes(c)
    return r, c


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    """Evidently's stand-in for an empty bin (so that logarithms stay finite)."""
    smallest = shares[shares != 0].min()
    return np.where(shares == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001, shares)


def psi(ref: ColumnProfile, cur: Current) -> float:
    """Population stability index: sum of (r - c) ln(r / c) over the bins."""
    r, c = binned(ref, cur, fill_zeroes=True)
    return float(np.sum(rel_entr(r, c) + rel_entr(c, r)))


def statistic(test: str, ref: ColumnProfile, cur: Current) -> float:
    """The test's p-value or distance for this column."""
    if test == "ks":
        return float(stats.ks_2samp(ref.samples, cur.raw).pvalue)
    if test == "chisquare":
        keys = np.union1d(ref.values, cur.values)
        expected = np.zeros(len(keys))
        observed = np.zeros(len(keys))
        expected[np.searchsorted(keys, ref.values)] = ref.counts * (cur.n / ref.n)
        observed[np.searchsorted(keys, cur.values)] = cur.counts
        with np.errstate(divide="ignore", invalid="ignore"):  # a value new in the window: p = 0
            p = stats.chisquare(observed, expected).pvalue
        return float(p) if np.isfinite(p) else 0.0
    if test == "z":
        keys = np.union1d(ref.values, cur.values)
        if len(keys) == 1:
            return 1.0
        # The two-proportion z-test is the 2x2 chi-square test without continuity correction.
        first = keys[0]
        r_first = float(ref.counts[ref.values == first].sum())
        c_first = float(cur.counts[cur.values == first].sum())
        table = np.array([[r_first, ref.n - r_first], [c_first, cur.n - c_first]])
        return float(stats.chi2_contingency(table, correction=False).pvalue)
    if test == "wasserstein":
        norm = max(ref.std or 0.0, 0.001)
        return float(stats.wasserstein_distance(ref.values, cur.values, ref.counts, cur.counts) / norm)
    if test == "jensenshannon":
        r, c = binned(ref, cur, fill_zeroes=False)
        return float(distance.jensenshannon(r, c))
    if test == "psi":
        return psi(ref, cur)
    raise ValueError(f"unknown drift test {test!r}")


def is_drift(test: str, value: float, threshold: float) -> bool:
    if test == "ks":
        return value <= threshold
    if test in P_VALUE_TESTS:
        return value < threshold
    return value >= threshold


def column_drift(
    ref: ColumnProfile,
    column: np.ndarray,
    *,
    spec: FeatureMonitorSpec | None = None,
    judge: bool = True,
    with_psi: bool = False,
) -> ColumnDrift:
    """One column of a window against its reference."""
    cur = Current.of(column)
    total = cur.n + cur.missing
    ref_total = ref.n + ref.missing
    chosen = spec.test if spec is not None else "auto"
    test = default_test(ref, cur) if chosen == "auto" and cur.n else chosen
    threshold = (spec.threshold if spec is not None else None) or DEFAULT_THRESHOLDS.get(test, 0.1)
    result = ColumnDrift(
        column=ref.name,
        test=test,
        statistic=None,
        threshold=threshold,
        drift=None,
        n=cur.n,
        missing_share=cur.missing / total if total else None,
        reference_missing_share=ref.missing / ref_total if ref_total else None,
        mean=float(cur.raw.mean()) if cur.n else None,
        reference_mean=ref.mean,
    )
    if not cur.n or not ref.n:
        return result
    if with_psi:
        result.psi = psi(ref, cur)
    if judge:
        value = statistic(test, ref, cur) if test != "psi" or result.psi is None else result.psi
        result.statistic = value if math.isfinite(value) else None
        result.drift = is_drift(test, value, threshold) if math.isfinite(value) else None
    return result


def multivariate(profile: Profile, X: np.ndarray) -> dict[str, Any] | None:
    """NannyML-style reconstruction error of the window against the reference band."""
    mv = profile.multivariate
    if mv is None or not len(X):
        return None
    if len(X) > MULTIVARIATE_MAX_ROWS:
        # Rows spread evenly over the window: the mean error of 100,000 rows is known to within a
        # few thousandths of its spread, and the band below is drawn for the rows used.
        X = X[np.linspace(0, len(X) - 1, MULTIVARIATE_MAX_ROWS).astype(np.int64)]
    error = float(mv.errors(X).mean())
    band = MULTIVARIATE_SIGMAS * mv.error_std / math.sqrt(len(X))
    lower, upper = mv.error_mean - band, mv.error_mean + band
    return {
        "error": error,
        "reference": mv.error_mean,
        "lower": lower,
        "upper": upper,
        "drift": not lower <= error <= upper,
    }


def window_drift(
    profile: Profile,
    X: np.ndarray,
    outputs: np.ndarray,
    *,
    features: Mapping[str, FeatureMonitorSpec] | None = None,
    drift_share: float = 0.5,
    min_rows: int = 1,
    with_psi: bool = False,
) -> WindowDrift:
    """Every feature and output column of one window, and the data set's verdict."""
    n = len(X)
    judge = n >= min_rows and n > 0
    spec = features or {}
    feats = [
        column_drift(ref, X[:, j], spec=spec.get(ref.name), judge=judge, with_psi=with_psi)
        for j, ref in enumerate(profile.features)
    ]
    outs = [
        column_drift(ref, outputs[:, j], judge=judge, with_psi=with_psi)
        for j, ref in enumerate(profile.outputs)
    ]
    decided = [c for c in feats if c.drift is not None]
    drifted = sum(1 for c in decided if c.drift)
    share = drifted / len(decided) if decided else None
    return WindowDrift(
        n=n,
        judged=judge and bool(decided),
        features=feats,
        outputs=outs,
        drifted=drifted,
        share=share,
        dataset_drift=None if share is None else share >= drift_share,
        drift_share=drift_share,
        multivariate=multivariate(profile, X) if judge else None,
    )
