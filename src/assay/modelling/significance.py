"""Paired significance: is one model better than another on the same items, or only luckier?

Three tests, each for the situation it is valid in:

- ``bootstrap_difference``: the two models score the same rows; the rows are resampled with
  replacement, both statistics are computed on every resample, and the spread of their
  difference gives a percentile confidence interval (pairing cancels the variation the
  rows share). ROC-AUC and PR-AUC (average precision, scikit-learn's definition) are computed
  from resample weights over one sort of the scores, so thousands of resamples cost seconds.
- ``mcnemar``: both models' right/wrong decisions at an operating point on the same rows; only
  the rows they disagree on carry information (exact two-sided binomial test).
- ``corrected_t_test``: Nadeau and Bengio's corrected resampled t-test for two models
  cross-validated on the same folds; the plain paired t-test ignores that the folds' training
  sets overlap and finds differences that are not there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# A statistic over a batch of resamples: (labels, scores, weights (B, n)) -> (B,) values.
WeightedStat = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
DEFAULT_RESAMPLES = 2000
_BATCH_CELLS = 4_000_000  # resample weights held at once (B x n float64: 32 MB)


def _grouped(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, highest score first: (B, groups) each."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = y[order].astype(bool)
    positive = np.where(pos, w, 0)
    return np.add.reduceat(positive, starts, axis=1), np.add.reduceat(w - positive, starts, axis=1)


def weighted_roc_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of binary ``y`` by ``score`` under each row of ``weights``; NaN without both classes.

    The probability that a positive outranks a negative, ties counting half: what
    ``sklearn.metrics.roc_auc_score`` gives with ``sample_weight``.
    """
    p, n = (g.astype(np.float64) for g in _grouped(y, score, np.atleast_2d(weights)))
    total_p, total_n = p.sum(axis=1), n.sum(axis=1)
    below = total_n[:, None] - np.cumsum(n, axis=1)  # negatives scored lower than each group
    wins = (p * (below + 0.5 * n)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((total_p > 0) & (total_n > 0), wins / (total_p * total_n), np.nan)


def weighted_average_precision(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (the area under the precision-recall curve as scikit-learn sums it:
    each threshold's precision times the recall it adds) under each row of ``weights``."""
    p, n = (g.astype(np.float64) for g in _grouped(y, score, np.atleast_2d(weights)))
    tp, fp = np.cumsum(p, axis=1), np.cumsum(n, axis=1)
    total_p = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return np.where(total_p > 0, (p * precision).sum(axis=1) / total_p, np.nan)


def macro(stat: WeightedStat) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``stat`` one class against the rest, averaged over the classes where it is defined.

    Takes class indices and a (n, k) probability matrix instead of binary labels and scores.
    """

    def averaged(y: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
        per_class = np.stack([stat(y == c, proba[:, c], weights) for c in range(proba.shape[1])])
        with np.errstate(invalid="ignore"):
            defined = ~np.isnan(per_class)
            return np.where(defined.any(axis=0), np.nansum(per_class, axis=0) / defined.sum(axis=0), np.nan)

    return averaged


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n`` rows is drawn in each of ``resamples`` bootstrap resamples (int32:
    the counts are exact, and half the memory of floats is half the time of the sums over them)."""
    draws = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(np.int32)


@dataclass(frozen=True)
class Difference:
    """``b - a`` on the rows, with its bootstrap percentile interval and two-sided p-value."""

    a: float
    b: float
    difference: float
    low: float
    high: float
    confidence: float
    p_value: float
    resamples: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "ci": [self.low, self.high],
            "confidence": self.confidence,
            "p_value": self.p_value,
            "resamples": self.resamples,
            "significant": self.significant,
        }


def bootstrap_difference(
    stat: WeightedStat,
    y: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """The paired bootstrap of ``stat(b) - stat(a)``: both on the same resamples of the rows.

    Resamples where the statistic is undefined (a single class drawn) are left out.
    """
    n = len(y)
    full = np.ones((1, n))
    a, b = float(stat(y, score_a, full)[0]), float(stat(y, score_b, full)[0])
    batch = max(1, min(resamples, _BATCH_CELLS // max(n, 1)))
    rng = np.random.default_rng(seed)  # one stream: the resamples do not depend on the batch size
    diffs = []
    for start in range(0, resamples, batch):
        weights = resample_weights(n, min(batch, resamples - start), rng)
        diffs.append(stat(y, score_b, weights) - stat(y, score_a, weights))
    d = np.concatenate(diffs)
    d = d[~np.isnan(d)]
    if not d.size or np.isnan(a) or np.isnan(b):
        nan = float("nan")
        return Difference(a, b, b - a, nan, nan, confidence, nan, 0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    # Two-sided: how often the resampled difference lands on the other side of zero.
    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))
    return Difference(a, b, b - a, float(low), float(high), confidence, float(p), int(d.size))


@dataclass(frozen=True)
class McNemar:
    """Rows only ``a`` gets right, rows only ``b`` gets right, and the exact two-sided p-value."""

    only_a: int
    only_b: int
    p_value: float

    def to_dict(self) -> dict[str, float | int]:
        return {"only_a_right": self.only_a, "only_b_right": self.only_b, "p_value": self.p_value}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's test of two models' decisions on the same rows (exact binomial on the discordant)."""
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(correct_b & ~correct_a))
    discordant = only_a + only_b
    from scipy import stats  # imported when a test runs: the command line starts without scipy

    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return McNemar(only_a, only_b, p)


@dataclass(frozen=True)
class CorrectedT:
    """Nadeau-Bengio corrected resampled t-test of per-fold score differences ``b - a``."""

    mean_difference: float
    t: float
    df: int
    p_value: float
    folds: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "mean_difference": self.mean_difference,
            "t": self.t,
            "df": self.df,
            "p_value": self.p_value,
            "folds": self.folds,
        }


def corrected_t_test(scores_a: np.ndarray, scores_b: np.ndarray, test_to_train: float) -> CorrectedT:
    """The corrected resampled t-test (Nadeau & Bengio 2003) over ``J`` paired fold scores.

    ``test_to_train`` is n_test / n_train of one fold (1 / (k - 1) for k-fold cross-validation);
    the variance of the mean difference is (1/J + n_test/n_train) times the folds' variance
    instead of 1/J. With ``test_to_train = 0`` it is the plain paired t-test.
    """
    d = np.asarray(scores_b, dtype=float) - np.asarray(scores_a, dtype=float)
    j = d.size
    if j < 2:
        raise ValueError("the corrected t-test needs at least two paired folds")
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var == 0:
        t = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
        return CorrectedT(mean, t, j - 1, 1.0 if mean == 0 else 0.0, j)
    t = mean / np.sqrt((1 / j + test_to_train) * var)
    from scipy import stats

    p = 2 * float(stats.t.sf(abs(t), df=j - 1))
    return CorrectedT(mean, float(t), j - 1, p, j)
