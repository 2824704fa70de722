"""Fairness by group: how one decision rule treats each group of a sensitive attribute.

For one yes/no decision (flag the class, or not) this module reports, per group,
the count, selection rate, TPR, FPR, FNR and precision (Fairlearn's metric
definitions) and the group's calibration (Brier score and reliability curve of
the score behind the decision); across groups, Fairlearn's disparity summaries
(``method="between_groups"``, ``agg="worst_case"``) with bootstrap confidence
intervals. Training calls it at the decision threshold and at every named
operating point, per sensitive attribute and per intersection of attributes.

Groups smaller than ``min_group_size`` are listed but left out of the
differences and ratios (their rates are noise), and named in
``excluded_groups``; ``all_groups`` keeps the summaries over every group, as
Fairlearn computes them on the raw columns.

Intervals come from a bootstrap stratified by group: each group's rows are
resampled within the group, so group sizes stay fixed and no group vanishes
from a resample (see ``_intervals`` for which statistic is resampled). Every statistic here is a function of each group's four
confusion counts, so resampling a group's rows is exactly drawing those counts
from a multinomial, which costs nothing per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from assay.modelling.statistics import calibration_curve, groups_as_strings, num, ratio

# Fairlearn's four summaries, then the two rates equalized odds is made of.
FAIRLEARN_SUMMARIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
)
SUMMARIES = (*FAIRLEARN_SUMMARIES, "true_positive_rate_difference", "false_positive_rate_difference")
GROUP_RATES = ("selection_rate", "tpr", "fpr", "fnr", "precision")
INTERSECTION = " & "


@dataclass(frozen=True)
class FairnessOptions:
    """How groups are compared: the smallest group compared, and the bootstrap behind intervals."""

    min_group_size: int = 1
    bootstrap: int = 0  # resamples; 0 gives no intervals
    confidence: float = 0.95
    seed: int = 0


def intersect(columns: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """One attribute from several, e.g. ``sex & race`` with groups like ``Female & Black``."""
    names = list(columns)
    labels = [groups_as_strings(columns[c]) for c in names]
    joined = pd.Series(labels[0], dtype=object)
    for more in labels[1:]:
        joined = joined + INTERSECTION + pd.Series(more, dtype=object)
    return INTERSECTION.join(names), joined.to_numpy(dtype=object)


def _cells(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's confusion counts as a (groups, 4) array of tp, fp, tn, fn."""
    cell = np.select([y & pred, ~y & pred, ~y & ~pred], [0, 1, 2], 3)
    return np.bincount(codes * 4 + cell, minlength=n_groups * 4).reshape(n_groups, 4).astype(float)


def _group_rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates from counts shaped (..., groups, 4); NaN where a rate is undefined."""
    tp, fp, tn, fn = np.moveaxis(cells, -1, 0)
    return {
        "selection_rate": ratio(tp + fp, tp + fp + tn + fn),
        "tpr": ratio(tp, tp + fn),
        "fpr": ratio(fp, fp + tn),
        "fnr": ratio(fn, tp + fn),
        "precision": ratio(tp, tp + fp),
    }


def summaries(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Fairlearn's disparities over the groups of ``cells`` (..., groups, 4), vectorised over leading axes.

    As in Fairlearn, a group without positives (negatives) counts as TPR (FPR) 0, and a
    ratio whose largest rate is 0 is undefined (NaN).
    """
    rates = _summary_rates(cells)
    selection, tpr, fpr = rates["selection_rate"], rates["tpr"], rates["fpr"]

    def difference(r: np.ndarray) -> np.ndarray:
        return r.max(axis=-1) - r.min(axis=-1)

    def quotient(r: np.ndarray) -> np.ndarray:
        return ratio(r.min(axis=-1), r.max(axis=-1))

    return {
        "demographic_parity_difference": difference(selection),
        "demographic_parity_ratio": quotient(selection),
        "equalized_odds_difference": np.maximum(difference(tpr), difference(fpr)),
        # The worse of the two ratios that are defined.
        "equalized_odds_ratio": np.fmin(quotient(tpr), quotient(fpr)),
        "true_positive_rate_difference": difference(tpr),
        "false_positive_rate_difference": difference(fpr),
    }


def _summary_rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """The rates the summaries compare, with Fairlearn's 0 for an undefined TPR or FPR."""
    rates = _group_rates(cells)
    return {
        "selection_rate": rates["selection_rate"],
        "tpr": np.nan_to_num(rates["tpr"]),
        "fpr": np.nan_to_num(rates["fpr"]),
    }


# Which rates each summary is taken over (equalized odds: the worse of two).
_SUMMARY_OVER = {
    "demographic_parity_difference": ("selection_rate",),
    "demographic_parity_ratio": ("selection_rate",),
    "equalized_odds_difference": ("tpr", "fpr"),
    "equalized_odds_ratio": ("tpr", "fpr"),
    "true_positive_rate_difference": ("tpr",),
    "false_positive_rate_difference": ("fpr",),
}


def _intervals(cells: np.ndarray, options: FairnessOptions) -> dict[str, list[float] | None]:
    """Bootstrap intervals of every summary, resampling rows within each group.

    A summary is a largest-minus-smallest (or smallest-over-largest) over groups; redoing that
    maximum in every resample biases the interval upwards (sampling noise alone makes groups
    differ), so it would miss a true disparity of zero. Instead each resample measures the
    pair of groups (and the rate) that make the summary on the data, signed, and the
    percentile interval is clipped to the summary's range.
    """
    rng = np.random.default_rng(options.seed)
    sizes = cells.sum(axis=1).astype(int)
    draws = np.stack(
        [rng.multinomial(n, c / n, size=options.bootstrap) for n, c in zip(sizes, cells, strict=True)],
        axis=1,
    ).astype(float)
    point, resampled = _summary_rates(cells), _summary_rates(draws)
    tail = (1.0 - options.confidence) / 2.0
    out: dict[str, list[float] | None] = {}
    for stat, over in _SUMMARY_OVER.items():
        is_ratio = stat.endswith("_ratio")
        values = [_pair_values(point[r], resampled[r], is_ratio) for r in over]
        # The rate that decides the summary: the largest difference, or the smallest defined ratio.
        decided = [v for v in values if v is not None]
        if not decided:
            out[stat] = None
            continue
        samples = (min if is_ratio else max)(decided, key=lambda v: v[0])[1]
        samples = samples[np.isfinite(samples)]
        if not samples.size:
            out[stat] = None
            continue
        low, high = np.quantile(samples, [tail, 1.0 - tail])
        out[stat] = [float(np.clip(low, 0.0, 1.0)), float(np.clip(high, 0.0, 1.0))]
    return out


def _pair_values(point: np.ndarray, resampled: np.ndarray, is_ratio: bool) -> tuple[float, np.ndarray] | None:
    """(the summary on the data, its value in each resample) for the groups that make it."""
    top, bottom = int(np.argmax(point)), int(np.argmin(point))
    if is_ratio:
        estimate = float(ratio(point[bottom], point[top]))
        return None if np.isnan(estimate) else (estimate, ratio(resampled[:, bottom], resampled[:, top]))
    return float(point[top] - point[bottom]), resampled[:, top] - resampled[:, bottom]


def group_fairness(
    y: np.ndarray, pred: np.ndarray, score: np.ndarray, groups: np.ndarray, options: FairnessOptions
) -> dict[str, Any]:
    """How the decision ``pred`` (from probabilities ``score``) treats each group, against truth ``y``."""
    y, pred, score = np.asarray(y).astype(bool), np.asarray(pred).astype(bool), np.asarray(score, float)
    labels = groups_as_strings(groups)
    if not (len(y) == len(pred) == len(score) == len(labels)) or len(y) == 0:
        raise ValueError("fairness needs non-empty y_true, y_pred, scores and groups of equal length")
    names, codes = np.unique(labels, return_inverse=True)
    cells = _cells(y, pred, codes, len(names))
    counts = cells.sum(axis=1)
    compared = counts >= options.min_group_size
    rates = _group_rates(cells)
    squared = np.bincount(codes, weights=(score - y) ** 2, minlength=len(names))
    block: dict[str, Any] = {
        "groups": {
            str(name): {
                "count": int(counts[i]),
                **{stat: num(rates[stat][i]) for stat in GROUP_RATES},
                "brier": num(squared[i] / counts[i]),
                "calibration": calibration_curve(y[codes == i], score[codes == i]),
                "compared": bool(compared[i]),
            }
            for i, name in enumerate(names)
        },
        "excluded_groups": [str(g) for g in names[~compared]],
        "min_group_size": options.min_group_size,
    }
    kept = cells[compared]
    if kept.size:
        block.update({stat: num(v) for stat, v in summaries(kept).items()})
    else:  # every group is too small to compare
        block.update(dict.fromkeys(SUMMARIES))
    block["all_groups"] = {
        stat: num(v) for stat, v in summaries(cells).items() if stat in FAIRLEARN_SUMMARIES
    }
    block["intervals"] = _intervals(kept, options) if options.bootstrap and kept.size else {}
    block["confidence"] = options.confidence
    block["bootstrap"] = options.bootstrap if kept.size else 0
    return block
