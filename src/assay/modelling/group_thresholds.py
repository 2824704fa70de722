"""Per-group thresholds: the post-processing mitigation's search, and its rule for every item.

One threshold per group of a sensitive attribute, chosen on out-of-fold scores of
the training data so that the groups' rates agree: selection rates
(``demographic_parity``), TPRs (``true_positive_rate_parity``) or TPRs and FPRs
(``equalized_odds``). Each group is matched to the rates the whole population has
at a *reference* threshold; that reference is the threshold an item of no known
group gets (the fallback), so it is flagged as the population is.

* The decision's thresholds (``fit_group_thresholds``) try ``REFERENCE_POINTS``
  references and keep, among those whose disparity is within ``DISPARITY_SLACK``
  of the smallest, the most accurate.
* A named operating point's thresholds (``thresholds_at``) take the point's own
  threshold as the reference: each group gets the rates the population has there.

Fairlearn's ``ThresholdOptimizer`` reaches parity with randomised decisions; these
thresholds are deterministic (the same item always gets the same decision), so
they come close to parity rather than onto it, and the tests hold them to
ThresholdOptimizer's result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.modelling.fairness import FairnessOptions, group_fairness
from assay.registry.contracts import CONSTRAINT_STAT

# How many reference points the threshold search tries, and how much worse than the most
# equal choice (in the constraint's disparity) a more accurate one may be.
REFERENCE_POINTS = 100
DISPARITY_SLACK = 0.01
_ABOVE_ALL = 1.0 + 1e-9  # a threshold no probability reaches: flag nobody


@dataclass(frozen=True)
class GroupThresholds:
    """Each group's threshold, and the reference threshold an item of no known group gets."""

    thresholds: dict[str, float]
    fallback: float

    def apply(self, score: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Flag each item at its group's threshold (a group not fitted gets the fallback)."""
        limits = np.array([self.thresholds.get(str(g), self.fallback) for g in groups], dtype=float)
        return np.asarray(score, dtype=float) >= limits


class _Rates:
    """Each group's rates at every threshold it could take, and the population's, in one pass each."""

    def __init__(self, y: np.ndarray, score: np.ndarray, groups: np.ndarray) -> None:
        self.y, self.score = np.asarray(y, bool), np.asarray(score, float)
        self.groups = np.asarray(groups, dtype=str)
        self.names = [str(g) for g in np.unique(self.groups)]
        self.candidates = {g: np.unique(np.r_[self.score[self.groups == g], _ABOVE_ALL]) for g in self.names}
        self.per_group = {
            g: rates_by_threshold(self.y[self.groups == g], self.score[self.groups == g], self.candidates[g])
            for g in self.names
        }

    def matched(self, reference: float, constraint: str) -> tuple[dict[str, float], float]:
        """Each group's threshold nearest the population's rates at ``reference``; correct decisions."""
        overall = rates_by_threshold(self.y, self.score, np.array([reference]))
        target = {k: float(overall[k][0]) for k in ("selection_rate", "tpr", "fpr")}
        chosen = {g: _nearest(target, self.per_group[g], constraint) for g in self.names}
        correct = sum(float(self.per_group[g]["correct"][i]) for g, i in chosen.items())
        return {g: float(self.candidates[g][i]) for g, i in chosen.items()}, correct


def rates_by_threshold(y: np.ndarray, score: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Selection rate, TPR, FPR and correct decisions of flagging ``score >= t`` for each t."""
    order = np.sort(score)
    flagged = len(score) - np.searchsorted(order, thresholds, side="left")
    positives_sorted = np.sort(score[y])
    tp = len(positives_sorted) - np.searchsorted(positives_sorted, thresholds, side="left")
    fp = flagged - tp
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return {
        "selection_rate": flagged / max(len(score), 1),
        "tpr": tp / n_pos if n_pos else np.zeros(len(thresholds)),
        "fpr": fp / n_neg if n_neg else np.zeros(len(thresholds)),
        "correct": tp + (n_neg - fp),
    }


def _nearest(target: dict[str, float], rates: dict[str, np.ndarray], constraint: str) -> int:
    """The index of the group threshold whose rates are nearest the target (ties: more correct)."""
    if constraint == "demographic_parity":
        distance = np.abs(rates["selection_rate"] - target["selection_rate"])
    elif constraint == "true_positive_rate_parity":
        distance = np.abs(rates["tpr"] - target["tpr"])
    else:
        distance = np.maximum(np.abs(rates["tpr"] - target["tpr"]), np.abs(rates["fpr"] - target["fpr"]))
    best = np.flatnonzero(distance <= distance.min() + 1e-12)
    return int(best[np.argmax(rates["correct"][best])])


def fit_group_thresholds(
    y: np.ndarray, score: np.ndarray, groups: np.ndarray, constraint: str
) -> GroupThresholds:
    """Per-group thresholds that bring the groups' rates together, as accurately as that allows.

    Of the reference points whose disparity is within ``DISPARITY_SLACK`` of the smallest,
    the one with the most correct decisions wins; its reference is the fallback.
    """
    rates = _Rates(y, score, groups)
    grid = np.unique(np.r_[np.quantile(rates.score, np.linspace(0, 1, REFERENCE_POINTS)), _ABOVE_ALL])
    choices = []
    for reference in grid.tolist():
        thresholds, correct = rates.matched(reference, constraint)
        flagged = GroupThresholds(thresholds, reference).apply(rates.score, rates.groups)
        block = group_fairness(rates.y, flagged, rates.score, rates.groups, FairnessOptions())
        choices.append((block[CONSTRAINT_STAT[constraint]] or 0.0, correct, thresholds, reference))
    fairest = min(c[0] for c in choices)
    eligible = [c for c in choices if c[0] <= fairest + DISPARITY_SLACK]
    _, _, thresholds, reference = max(eligible, key=lambda c: c[1])
    return GroupThresholds(thresholds, float(reference))


def thresholds_at(
    y: np.ndarray, score: np.ndarray, groups: np.ndarray, constraint: str, reference: float
) -> GroupThresholds:
    """Per-group thresholds that give each group the population's rates at ``reference``."""
    thresholds, _ = _Rates(y, score, groups).matched(reference, constraint)
    return GroupThresholds(thresholds, float(reference))
