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
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from assay.errors import DataError
from assay.modelling.fairness import FairnessOptions, group_fairness
from assay.modelling.statistics import calibration_curve, json_list, num, ratio

# Statistics derived from one confusion matrix, in the order the threshold
# table lists them. Counts come first so a table row reads left to right.
COUNTS = ("tp", "fp", "tn", "fn")
RATES = ("precision", "recall", "f1", "accuracy", "match_rate", "filter_rate", "fpr", "tnr", "npv")
QUERYABLE_STATS = RATES + COUNTS
DEFAULT_THRESHOLD = 0.5
CURVE_POINTS = 200


# --------------------------------------------------------------------------- helpers


def _rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Every rate in RATES from confusion counts; works elementwise on arrays of thresholds."""
    n = tp + fp + tn + fn
    flagged = tp + fp
    match_rate = ratio(flagged, n)
    return {
        "precision": ratio(tp, flagged),
        "recall": ratio(tp, tp + fn),
        # 2tp / (2tp + fp + fn) is sklearn's F1 and stays defined when precision is not.
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": ratio(tp + tn, n),
        "match_rate": match_rate,
        "filter_rate": 1.0 - match_rate,
        "fpr": ratio(fp, fp + tn),
        "tnr": ratio(tn, fp + tn),
        "npv": ratio(tn, tn + fn),
    }


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
    return [json_list(np.asarray(c, dtype=float)[keep]) for c in columns]


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


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
    table: dict[str, list[Any]] = {"threshold": json_list(s_sorted[starts])}
    for name, column in zip(COUNTS, (tp, fp, tn, fn), strict=True):
        table[name] = column.astype(int).tolist()
    for name, column in _rates(tp, fp, tn, fn).items():
        table[name] = json_list(column)
    return table


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
    stats: dict[str, Any] = {name: num(value) for name, value in rates.items()}
    stats.update(roc_auc=_roc_auc(y, score), pr_auc=_pr_auc(y, score), **counts)
    return stats


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
    fairness_options: FairnessOptions | None = None,
) -> dict[str, Any]:
    """Everything assay reports about predictions ``proba`` against labels ``y_true``.

    Binary tasks (``positive`` set) flag the positive class when its probability
    is >= ``decision_thresholds[positive]`` (default 0.5); multiclass tasks
    predict the argmax, and decision thresholds do not apply to them.
    """
    classes = [str(c) for c in classes]
    y, p = _check_inputs(y_true, proba, classes, positive)
    threshold = _decision_threshold(positive, decision_thresholds)
    if positive is not None and threshold is not None:
        pos = classes.index(positive)
        pred_idx = np.where(p[:, pos] >= threshold, pos, 1 - pos)
    else:
        pred_idx = p.argmax(axis=1)
    # Vectorised label -> column index (labels were checked to be among classes).
    order = np.argsort(classes)
    true_idx = order[np.searchsorted(np.array(classes)[order], y)]
    k = len(classes)
    indicator = true_idx[:, None] == np.arange(k)[None, :]
    predicted = pred_idx[:, None] == np.arange(k)[None, :]
    per_class = {c: _class_stats(indicator[:, i], predicted[:, i], p[:, i]) for i, c in enumerate(classes)}
    # Binary tasks are about the positive class; multiclass tasks about every class.
    columns = {c: classes.index(c) for c in ([positive] if positive is not None else classes)}
    matrix = np.bincount(true_idx * k + pred_idx, minlength=k * k).reshape(k, k)
    return {
        "task": "binary" if positive is not None else "multiclass",
        "classes": classes,
        "positive": positive,
        "decision_threshold": threshold,
        "n": len(y),
        "counts": {c: int(indicator[:, i].sum()) for i, c in enumerate(classes)},
        "confusion_matrix": {"labels": classes, "matrix": matrix.tolist()},
        "accuracy": float(np.mean(pred_idx == true_idx)),
        "log_loss": float(log_loss(true_idx, p, labels=list(range(k)))),
        "per_class": per_class,
        **_averages(per_class, indicator, p, classes),
        "thresholds": {c: threshold_table(indicator[:, i], p[:, i]) for c, i in columns.items()},
        "calibration": {
            "brier": _brier(indicator, p, positive, classes),
            "curve": {c: calibration_curve(indicator[:, i], p[:, i]) for c, i in columns.items()},
        },
        "fairness": _fairness(sensitive, indicator, predicted, p, columns, fairness_options),
        **_curves_by_class(indicator, p, columns),
    }


def _decision_threshold(positive: str | None, decision_thresholds: dict[str, float] | None) -> float | None:
    """The positive class's threshold (default 0.5); None for a multiclass task, which takes the argmax."""
    unknown = set(decision_thresholds or {}) - ({positive} if positive is not None else set())
    if unknown:
        raise ValueError(
            f"decision thresholds are only for the positive class of a binary task, got {sorted(unknown)}"
        )
    if positive is None:
        return None
    return float((decision_thresholds or {}).get(positive, DEFAULT_THRESHOLD))


def _averages(
    per_class: dict[str, dict[str, Any]], indicator: np.ndarray, p: np.ndarray, classes: list[str]
) -> dict[str, dict[str, Any]]:
    """Micro and macro averages of the one-vs-rest statistics.

    Micro: every rate from the one-vs-rest counts summed over classes, i.e. over all n * k
    (item, class) decisions, as sklearn's average="micro" does for precision/recall/F1. With one
    predicted class per item that makes precision = recall = F1 = accuracy, accuracy the share
    of correct (item, class) decisions (1 - 2 * errors / (n * k)), match rate the share of
    (item, class) pairs flagged (1 / k) and filter rate its complement. (The share of items
    classified correctly is the evaluation's own ``accuracy``.)
    """
    totals = [float(sum(per_class[c][count] for c in classes)) for count in COUNTS]
    micro_rates = _rates(*(np.array(total) for total in totals))
    micro = {name: num(micro_rates[name]) for name in RATES}
    # Micro ROC/PR AUC: sklearn's average="micro", i.e. over the flattened indicator matrix.
    micro["roc_auc"] = _roc_auc(indicator.ravel(), p.ravel())
    micro["pr_auc"] = _pr_auc(indicator.ravel(), p.ravel())
    # Macro: the unweighted mean of the per-class values that are defined.
    macro = {
        name: _mean_defined([per_class[c][name] for c in classes]) for name in (*RATES, "roc_auc", "pr_auc")
    }
    return {"micro": micro, "macro": macro}


def _brier(indicator: np.ndarray, p: np.ndarray, positive: str | None, classes: list[str]) -> float:
    if positive is not None:
        pos = classes.index(positive)
        return float(brier_score_loss(indicator[:, pos], p[:, pos]))
    return float(np.mean(np.sum((p - indicator) ** 2, axis=1)))


def _fairness(
    sensitive: dict[str, np.ndarray] | None,
    indicator: np.ndarray,
    predicted: np.ndarray,
    p: np.ndarray,
    columns: dict[str, int],
    options: FairnessOptions | None,
) -> dict[str, dict[str, Any]]:
    """Fairness of the decision, by sensitive attribute and by each class the task is about."""
    out = {}
    for attribute, groups in (sensitive or {}).items():
        if len(groups) != len(p):
            raise ValueError(f"sensitive attribute {attribute!r} has {len(groups)} rows, expected {len(p)}")
        out[str(attribute)] = {
            c: group_fairness(indicator[:, i], predicted[:, i], p[:, i], groups, options or FairnessOptions())
            for c, i in columns.items()
        }
    return out


def _curves_by_class(indicator: np.ndarray, p: np.ndarray, columns: dict[str, int]) -> dict[str, Any]:
    roc, pr = {}, {}
    for c, i in columns.items():
        roc[c], pr[c] = _curves(indicator[:, i], p[:, i])
    return {"roc_curve": roc, "pr_curve": pr}


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
    done: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Mean and std drop in ROC-AUC when each column is shuffled, most important first.

    Model-agnostic: only ``predict_proba`` is called. Runs on a seeded subsample
    of at most ``max_rows`` rows so the cost is bounded on big test sets.
    ``done`` is called with each feature's name once it is measured (progress lines).
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
            _put_column(work, j, original[rng.permutation(len(original))])
            score = _auc_score(y, np.asarray(predict_proba(work)), classes, positive)
            drops.append(baseline - (score if score is not None else baseline))
        _put_column(work, j, original)
        results.append(
            {"feature": str(name), "importance": float(np.mean(drops)), "std": float(np.std(drops))}
        )
        if done is not None:
            done(str(name))
    # Stable sort keeps the caller's feature order among equal importances.
    return sorted(results, key=lambda r: -r["importance"])


def _put_column(work: Any, j: int, values: np.ndarray) -> None:
    """Column ``j`` of the working copy (a frame or a matrix) becomes ``values``, in place."""
    if isinstance(work, pd.DataFrame):
        work.isetitem(j, values)
    else:
        work[:, j] = values
