"""Evaluation statistics a product team can act on.

This module owns everything assay says about how good a model is on held-out
data: ORES-style per-class statistics, the full threshold table (which
``queries`` answers ``maximum recall @ precision >= 0.9`` from), calibration,
fairness by group (Fairlearn's definitions), permutation feature importance, and the
headline summary that gates and listings read.

Everything here is a pure function over numpy arrays, and every result is plain
JSON (dicts, lists, str, int, float, None): no numpy scalars and no NaN; a
statistic that is undefined (precision with nothing flagged, ROC-AUC with one
class present) is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from assay.errors import DataError

# Statistics derived from one confusion matrix, in the order the threshold
# table lists them. Counts come first so a table row reads left to right.
COUNTS = ("tp", "fp", "tn", "fn")
RATES = ("precision", "recall", "f1", "accuracy", "match_rate", "filter_rate", "fpr", "tnr", "npv")
QUERYABLE_STATS = RATES + COUNTS
DEFAULT_THRESHOLD = 0.5
CURVE_POINTS = 200
CALIBRATION_BINS = 10
MISSING_GROUP = "(missing)"


# --------------------------------------------------------------------------- helpers


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN (later None) where den is 0: the statistic is undefined there."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Every rate in RATES from confusion counts; works elementwise on arrays of thresholds."""
    n = tp + fp + tn + fn
    flagged = tp + fp
    match_rate = _ratio(flagged, n)
    return {
        "precision": _ratio(tp, flagged),
        "recall": _ratio(tp, tp + fn),
        # 2tp / (2tp + fp + fn) is sklearn's F1 and stays defined when precision is not.
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, n),
        "match_rate": match_rate,
        "filter_rate": 1.0 - match_rate,
        "fpr": _ratio(fp, fp + tn),
        "tnr": _ratio(tn, fp + tn),
        "npv": _ratio(tn, tn + fn),
    }


def _num(value: Any) -> float | None:
    """A JSON-safe float: None for NaN/inf/None."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _json_list(values: np.ndarray) -> list[Any]:
    """A numpy vector as a list of Python numbers with None in place of NaN."""
    out = values.tolist()
    if values.dtype.kind == "f":
        for i in np.flatnonzero(~np.isfinite(values)):
            out[i] = None
    return out


def _roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    # ROC-AUC needs both outcomes present; sklearn would raise otherwise.
    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None


def _pr_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    # Average precision is undefined without positives (sklearn warns and returns 0).
    return float(average_precision_score(y, score)) if y.any() else None


def _downsample(*columns: np.ndarray, points: int = CURVE_POINTS) -> list[list[float]]:
    """Keep at most ``points`` evenly spaced rows (always the first and last) for plotting."""
    n = len(columns[0])
    keep = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int)) if n else np.arange(0)
    return [_json_list(np.asarray(c, dtype=float)[keep]) for c in columns]


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _groups_as_strings(groups: np.ndarray) -> np.ndarray:
    series = pd.Series(np.asarray(groups, dtype=object), dtype=object)
    missing = series.isna().to_numpy()
    out = series.astype(str).to_numpy(dtype=object)
    out[missing] = MISSING_GROUP
    return out


# --------------------------------------------------------------------------- threshold table


def threshold_table(y_true_binary: np.ndarray, score: np.ndarray) -> dict[str, list[Any]]:
    """Confusion counts and every rate at each distinct score value, ascending.

    An item is flagged when ``score >= threshold``. Column-oriented (parallel
    lists) to keep JSON small. O(n log n): one sort, then cumulative sums.
    """
    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true_binary and score must be 1-d of equal length, got {y.shape} and {s.shape}")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or infinity", field="score")
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    n, positives = len(s), int(y.sum())
    # Index of the first occurrence of each distinct value in sorted order: every
    # item from there on has score >= that value, so is flagged at that threshold.
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) if n else np.arange(0)
    positives_below = np.r_[0, np.cumsum(y_sorted)][starts]
    tp = positives - positives_below
    fp = (n - starts) - tp
    fn = positives - tp
    tn = (n - positives) - fp
    table: dict[str, list[Any]] = {"threshold": _json_list(s_sorted[starts])}
    for name, column in zip(COUNTS, (tp, fp, tn, fn), strict=True):
        table[name] = column.astype(int).tolist()
    for name, column in _rates(tp, fp, tn, fn).items():
        table[name] = _json_list(column)
    return table


# --------------------------------------------------------------------------- fairness


def fairness(y_true_binary: np.ndarray, y_pred_binary: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Per-group selection rate, TPR, FPR, precision and Fairlearn's disparity summaries.

    The summaries reproduce ``fairlearn.metrics`` exactly (method="between_groups",
    agg="worst_case"), including its convention that a group with no positives
    (negatives) has TPR (FPR) 0. The per-group table shows those as None instead,
    so a reader can see the rate was undefined rather than zero.
    """
    y = np.asarray(y_true_binary).astype(bool)
    pred = np.asarray(y_pred_binary).astype(bool)
    labels = _groups_as_strings(groups)
    if not (len(y) == len(pred) == len(labels)) or len(y) == 0:
        raise ValueError("fairness needs non-empty y_true, y_pred and groups of equal length")
    names, codes = np.unique(labels, return_inverse=True)

    def per_group(mask: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=mask.astype(float), minlength=len(names))

    count = per_group(np.ones_like(y))
    positives, flagged = per_group(y), per_group(pred)
    tp, fp = per_group(y & pred), per_group(~y & pred)
    negatives = count - positives
    selection = _ratio(flagged, count)
    tpr, fpr, precision = _ratio(tp, positives), _ratio(fp, negatives), _ratio(tp, flagged)
    tpr_fl, fpr_fl = np.nan_to_num(tpr), np.nan_to_num(fpr)

    def difference(rates: np.ndarray) -> float:
        return float(rates.max() - rates.min())

    def ratio(rates: np.ndarray) -> float:
        # min/max; NaN (-> None) when every group's rate is 0, as in Fairlearn.
        return float(_ratio(rates.min(), rates.max()))

    eo_ratios = [r for r in (ratio(tpr_fl), ratio(fpr_fl)) if not np.isnan(r)]
    return {
        "groups": {
            str(name): {
                "count": int(count[i]),
                "selection_rate": _num(selection[i]),
                "tpr": _num(tpr[i]),
                "fpr": _num(fpr[i]),
                "precision": _num(precision[i]),
            }
            for i, name in enumerate(names)
        },
        "demographic_parity_difference": _num(difference(selection)),
        "demographic_parity_ratio": _num(ratio(selection)),
        "equalized_odds_difference": _num(max(difference(tpr_fl), difference(fpr_fl))),
        "equalized_odds_ratio": _num(min(eo_ratios)) if eo_ratios else None,
    }


# --------------------------------------------------------------------------- evaluate


def _check_inputs(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], positive: str | None
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(str)
    p = np.asarray(proba, dtype=float)
    if y.ndim != 1 or p.ndim != 2 or p.shape != (len(y), len(classes)):
        raise ValueError(f"expected y_true (n,) and proba (n, {len(classes)}), got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise DataError("cannot evaluate on zero rows")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be at least two distinct names, got {classes}")
    if positive is not None and (positive not in classes or len(classes) != 2):
        raise ValueError(f"positive={positive!r} needs exactly two classes including it, got {classes}")
    if positive is None and len(classes) == 2:
        raise ValueError("a two-class task needs positive= (the class the score is about)")
    unknown = sorted(set(np.unique(y)) - set(classes))
    if unknown:
        raise DataError(f"labels not among the model's classes {classes}: {unknown[:10]}", field="y_true")
    if not np.isfinite(p).all():
        raise DataError("probabilities contain NaN or infinity", field="proba")
    return y, p


def _class_stats(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """One-vs-rest statistics for one class at its decision, ORES's set plus counts."""
    counts = {
        "tp": int(np.sum(y & pred)),
        "fp": int(np.sum(~y & pred)),
        "tn": int(np.sum(~y & ~pred)),
        "fn": int(np.sum(y & ~pred)),
    }
    rates = _rates(*(np.array(float(counts[c])) for c in COUNTS))
    stats: dict[str, Any] = {name: _num(value) for name, value in rates.items()}
    stats.update(roc_auc=_roc_auc(y, score), pr_auc=_pr_auc(y, score), **counts)
    return stats


def _calibration_curve(y: np.ndarray, score: np.ndarray) -> dict[str, list[Any]]:
    """Reliability diagram points, binned exactly like sklearn's calibration_curve(strategy="uniform")."""
    score = np.clip(score, 0.0, 1.0)
    bins = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    ids = np.searchsorted(bins[1:-1], score)
    total = np.bincount(ids, minlength=CALIBRATION_BINS)
    sums = np.bincount(ids, weights=score, minlength=CALIBRATION_BINS)
    hits = np.bincount(ids, weights=y.astype(float), minlength=CALIBRATION_BINS)
    used = total > 0
    return {
        "prob_pred": _json_list(sums[used] / total[used]),
        "prob_true": _json_list(hits[used] / total[used]),
        "count": total[used].astype(int).tolist(),
    }


def _curves(y: np.ndarray, score: np.ndarray) -> tuple[dict | None, dict | None]:
    roc = None
    if _roc_auc(y, score) is not None:
        fpr, tpr, _ = roc_curve(y, score)
        fpr_l, tpr_l = _downsample(fpr, tpr)
        roc = {"fpr": fpr_l, "tpr": tpr_l}
    pr = None
    if y.any():
        precision, recall, _ = precision_recall_curve(y, score)
        precision_l, recall_l = _downsample(precision, recall)
        pr = {"precision": precision_l, "recall": recall_l}
    return roc, pr


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    *,
    positive: str | None,
    sensitive: dict[str, np.ndarray] | None = None,
    decision_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything assay reports about predictions ``proba`` against labels ``y_true``.

    Binary tasks (``positive`` set) flag the positive class when its probability
    is >= ``decision_thresholds[positive]`` (default 0.5); multiclass tasks
    predict the argmax, and decision thresholds do not apply to them.
    """
    classes = [str(c) for c in classes]
    y, p = _check_inputs(y_true, proba, classes, positive)
    binary = positive is not None
    decision_thresholds = dict(decision_thresholds or {})
    unknown = set(decision_thresholds) - ({positive} if binary else set())
    if unknown:
        raise ValueError(
            f"decision thresholds are only for the positive class of a binary task, got {sorted(unknown)}"
        )
    threshold = None
    if positive is not None:
        threshold = float(decision_thresholds.get(positive, DEFAULT_THRESHOLD))
        pos = classes.index(positive)
        pred_idx = np.where(p[:, pos] >= threshold, pos, 1 - pos)
    else:
        pred_idx = p.argmax(axis=1)
    # Vectorised label -> column index (labels were checked to be among classes).
    order = np.argsort(classes)
    true_idx = order[np.searchsorted(np.array(classes)[order], y)]
    k = len(classes)
    matrix = np.bincount(true_idx * k + pred_idx, minlength=k * k).reshape(k, k)
    indicator = true_idx[:, None] == np.arange(k)[None, :]
    predicted = pred_idx[:, None] == np.arange(k)[None, :]

    per_class = {c: _class_stats(indicator[:, i], predicted[:, i], p[:, i]) for i, c in enumerate(classes)}
    # Micro: every rate from the one-vs-rest counts summed over classes, i.e. over all n * k
    # (item, class) decisions, as sklearn's average="micro" does for precision/recall/F1. With one
    # predicted class per item that makes precision = recall = F1 = accuracy, accuracy the share
    # of correct (item, class) decisions (1 - 2 * errors / (n * k)), match rate the share of
    # (item, class) pairs flagged (1 / k) and filter rate its complement.
    totals = [float(sum(per_class[c][count] for c in classes)) for count in COUNTS]
    micro_rates = _rates(*(np.array(total) for total in totals))
    micro = {name: _num(micro_rates[name]) for name in RATES}
    # Micro ROC/PR AUC: sklearn's average="micro", i.e. over the flattened indicator matrix.
    micro["roc_auc"] = _roc_auc(indicator.ravel(), p.ravel())
    micro["pr_auc"] = _pr_auc(indicator.ravel(), p.ravel())
    # Macro: the unweighted mean of the per-class values that are defined.
    macro = {
        name: _mean_defined([per_class[c][name] for c in classes]) for name in (*RATES, "roc_auc", "pr_auc")
    }

    # Binary tasks are about the positive class; multiclass tasks about every class.
    focus = [positive] if positive is not None else classes
    columns = {c: classes.index(c) for c in focus}
    roc, pr = {}, {}
    for c, i in columns.items():
        roc[c], pr[c] = _curves(indicator[:, i], p[:, i])
    if binary:
        brier = float(brier_score_loss(indicator[:, pos], p[:, pos]))
    else:
        brier = float(np.mean(np.sum((p - indicator) ** 2, axis=1)))

    fairness_by_attribute: dict[str, dict[str, Any]] = {}
    for attribute, groups in (sensitive or {}).items():
        if len(groups) != len(y):
            raise ValueError(f"sensitive attribute {attribute!r} has {len(groups)} rows, expected {len(y)}")
        fairness_by_attribute[str(attribute)] = {
            c: fairness(indicator[:, i], predicted[:, i], groups) for c, i in columns.items()
        }

    return {
        "task": "binary" if binary else "multiclass",
        "classes": classes,
        "positive": positive,
        "decision_threshold": threshold,
        "n": len(y),
        "counts": {c: int(indicator[:, i].sum()) for i, c in enumerate(classes)},
        "confusion_matrix": {"labels": classes, "matrix": matrix.tolist()},
        "accuracy": float(np.mean(pred_idx == true_idx)),
        "per_class": per_class,
        "micro": micro,
        "macro": macro,
        "thresholds": {c: threshold_table(indicator[:, i], p[:, i]) for c, i in columns.items()},
        "calibration": {
            "brier": brier,
            "curve": {c: _calibration_curve(indicator[:, i], p[:, i]) for c, i in columns.items()},
        },
        "fairness": fairness_by_attribute,
        "roc_curve": roc,
        "pr_curve": pr,
    }


# --------------------------------------------------------------------------- importance


def _auc_score(y: np.ndarray, proba: np.ndarray, classes: list[str], positive: str | None) -> float | None:
    """ROC-AUC of the positive class (binary) or macro one-vs-rest ROC-AUC over defined classes."""
    focus = [positive] if positive is not None else classes
    return _mean_defined([_roc_auc(y == c, proba[:, classes.index(c)]) for c in focus])


def permutation_importance(
    predict_proba: Callable[[Any], np.ndarray],
    X: np.ndarray | pd.DataFrame,
    y_true: np.ndarray,
    classes: list[str],
    feature_names: list[str],
    *,
    positive: str | None,
    seed: int,
    n_repeats: int = 3,
    max_rows: int = 5000,
) -> list[dict[str, Any]]:
    """Mean and std drop in ROC-AUC when each column is shuffled, most important first.

    Model-agnostic: only ``predict_proba`` is called. Runs on a seeded subsample
    of at most ``max_rows`` rows so the cost is bounded on big test sets.
    """
    classes = [str(c) for c in classes]
    y = np.asarray(y_true).astype(str)
    if X.shape[1] != len(feature_names) or X.shape[0] != len(y):
        raise ValueError(f"X is {X.shape}, expected ({len(y)}, {len(feature_names)})")
    rng = np.random.default_rng(seed)
    rows = (
        np.sort(rng.choice(len(y), size=max_rows, replace=False)) if len(y) > max_rows else np.arange(len(y))
    )
    frame = isinstance(X, pd.DataFrame)
    # Work on one private copy and put each column back after shuffling it,
    # rather than copying the whole matrix for every (feature, repeat).
    work: Any = (
        X.iloc[rows].reset_index(drop=True) if isinstance(X, pd.DataFrame) else np.array(X[rows], copy=True)
    )
    y = y[rows]
    baseline = _auc_score(y, np.asarray(predict_proba(work)), classes, positive)
    if baseline is None:
        raise DataError(
            "permutation importance needs both outcomes of some class in the sample", field="y_true"
        )

    results = []
    for j, name in enumerate(feature_names):
        original = work.iloc[:, j].to_numpy(copy=True) if frame else work[:, j].copy()
        drops = []
        for _ in range(n_repeats):
            shuffled = original[rng.permutation(len(original))]
            if frame:
                work.isetitem(j, shuffled)
            else:
                work[:, j] = shuffled
            score = _auc_score(y, np.asarray(predict_proba(work)), classes, positive)
            drops.append(baseline - (score if score is not None else baseline))
        if frame:
            work.isetitem(j, original)
        else:
            work[:, j] = original
        results.append(
            {"feature": str(name), "importance": float(np.mean(drops)), "std": float(np.std(drops))}
        )
    # Stable sort keeps the caller's feature order among equal importances.
    return sorted(results, key=lambda r: -r["importance"])
