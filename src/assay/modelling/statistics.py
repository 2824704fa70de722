"""Numeric helpers the evaluation and fairness statistics share.

Every statistic assay records is plain JSON: a rate that is undefined (a
division by zero) becomes NaN here and ``None`` in the record, never a number
that looks real. The reliability curve lives here because both the whole test
set and each fairness group get one, binned the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

CALIBRATION_BINS = 10
MISSING_GROUP = "(missing)"


def ratio(num: Any, den: Any) -> np.ndarray:
    """num / den with NaN (later None) where den is 0: the statistic is undefined there."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def num(value: Any) -> float | None:
    """A JSON-safe float: None for NaN/inf/None."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def json_list(values: np.ndarray) -> list[Any]:
    """A numpy vector as a list of Python numbers with None in place of NaN."""
    out = values.tolist()
    if values.dtype.kind == "f":
        for i in np.flatnonzero(~np.isfinite(values)):
            out[i] = None
    return out


def groups_as_strings(groups: np.ndarray) -> np.ndarray:
    """Group labels as strings, missing values named ``(missing)`` so they form a group of their own."""
    series = pd.Series(np.asarray(groups, dtype=object), dtype=object)
    missing = series.isna().to_numpy()
    out = series.astype(str).to_numpy(dtype=object)
    out[missing] = MISSING_GROUP
    return out


def calibration_curve(y: np.ndarray, score: np.ndarray) -> dict[str, list[Any]]:
    """Reliability diagram points, binned exactly like sklearn's calibration_curve(strategy="uniform")."""
    score = np.clip(score, 0.0, 1.0)
    bins = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    ids = np.searchsorted(bins[1:-1], score)
    total = np.bincount(ids, minlength=CALIBRATION_BINS)
    sums = np.bincount(ids, weights=score, minlength=CALIBRATION_BINS)
    hits = np.bincount(ids, weights=y.astype(float), minlength=CALIBRATION_BINS)
    used = total > 0
    return {
        "prob_pred": json_list(sums[used] / total[used]),
        "prob_true": json_list(hits[used] / total[used]),
        "count": total[used].astype(int).tolist(),
    }
