"""Performance in production: measured where labels exist, estimated where they do not yet.

``realized`` scores a window's labelled rows with the training code itself
(``modelling.evaluation.evaluate`` and the registry's ``summarize``), so a window's ROC-AUC,
PR-AUC, precision, recall, Brier score and fairness mean exactly what the version's held-out
statistics mean; it adds precision and recall at each of the model's operating points.

``estimated`` is confidence-based performance estimation (CBPE, as NannyML does it) for binary
models: the held-out scores' isotonic calibration (stored in the profile) turns each score into
P(positive), and the expected confusion matrix, expected ROC-AUC and expected average precision
follow from weighting every row as a positive with that probability and as a negative with its
complement. The estimate assumes that P(label | features) is what it was on held-out data, i.e.
no concept drift, only shifts of the features; ``ASSUMPTION`` says so wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from assay.modelling import evaluation
from assay.modelling.profile import Profile
from assay.registry.gates import summarize
from assay.registry.loaded import LoadedModel

ASSUMPTION = (
    "Estimated from the scores alone (confidence-based performance estimation): valid only while "
    "P(label | features) is unchanged, i.e. no concept drift; it cannot see the world change under "
    "the model, only the inputs move."
)


def labelled_rows(ids: Sequence[str | None], labels: Mapping[str, str]) -> tuple[np.ndarray, list[str]]:
    """Row indices with a label (the last score of an item that was scored more than once)."""
    last: dict[str, int] = {}
    for i, item_id in enumerate(ids):
        if item_id is not None and item_id in labels:
            last[item_id] = i
    rows = np.array(sorted(last.values()), dtype=np.int64)
    return rows, [labels[str(ids[i])] for i in rows]


def realized(
    loaded: LoadedModel,
    X: np.ndarray,
    proba: np.ndarray,
    y_true: Sequence[str],
    *,
    sensitive: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The training statistics of labelled rows (None without any)."""
    if not len(y_true):
        return None
    classes, positive = loaded.classes, loaded.positive
    groups = {}
    for name in sensitive:
        if name in loaded.schema.names:
            j = loaded.schema.names.index(name)
            groups[name] = np.array(_decoded_column(loaded, X, j), dtype=object)
    thresholds = {positive: loaded.decision_threshold()} if positive is not None else None
    ev = evaluation.evaluate(
        np.asarray(y_true),
        proba,
        classes,
        positive=positive,
        sensitive=groups or None,
        decision_thresholds=thresholds,
    )
    summary = summarize(ev, positive)
    points: dict[str, dict[str, Any]] = {}
    for name, op in sorted(loaded.operating_points.items()):
        table = ev["thresholds"].get(op["class"])
        t = op.get("threshold")
        if table is None or t is None:  # the query had no answer on held-out data: no threshold
            points[name] = {"threshold": None, "precision": None, "recall": None}
            continue
        row = int(np.searchsorted(np.asarray(table["threshold"], dtype=float), t, side="left"))
        if row < len(table["threshold"]):
            points[name] = {
                "threshold": t,
                "precision": table["precision"][row],
                "recall": table["recall"][row],
            }
        else:  # nothing scores that high: nothing flagged
            points[name] = {
                "threshold": t,
                "precision": None,
                "recall": 0.0 if ev["counts"][op["class"]] else None,
            }
    return {
        "n": ev["n"],
        "counts": ev["counts"],
        "metrics": {k: v for k, v in summary.items() if k != "fairness"},
        "fairness": summary.get("fairness") or {},
        "operating_points": points,
        "calibration": ev["calibration"]["curve"],
    }


def _decoded_column(loaded: LoadedModel, X: np.ndarray, j: int) -> list[Any]:
    """Column ``j`` as the values clients send (what fairness groups are named by)."""
    feature = loaded.schema.features[j]
    column = X[:, j]
    out: list[Any] = []
    for v in column.tolist():
        if v != v:  # NaN: missing
            out.append(None)
        elif feature.kind == "boolean":
            out.append(str(bool(v)))
        elif feature.kind == "categorical":
            out.append(feature.categories[int(v)])
        else:
            out.append(v)
    return out


def estimated(profile: Profile, proba: np.ndarray) -> dict[str, Any] | None:
    """CBPE estimates of a window's binary performance at the decision threshold (None: multiclass,
    or no rows)."""
    pi = profile.positive_index
    if pi is None or profile.decision_threshold is None or not len(proba):
        return None
    score = proba[:, pi]
    p = np.clip(profile.calibrate(score), 0.0, 1.0)
    flagged = score >= profile.decision_threshold
    tp = float(p[flagged].sum())
    fp = float((1 - p[flagged]).sum())
    fn = float(p[~flagged].sum())
    tn = float((1 - p[~flagged]).sum())
    n = len(score)
    precision = tp / (tp + fp) if tp + fp > 0 else None
    recall = tp / (tp + fn) if tp + fn > 0 else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else None
    y = np.r_[np.ones(n), np.zeros(n)]
    weights = np.r_[p, 1 - p]
    both = weights[:n].sum() > 0 and weights[n:].sum() > 0
    scores = np.r_[score, score]
    return {
        "n": n,
        "metrics": {
            "roc_auc": float(roc_auc_score(y, scores, sample_weight=weights)) if both else None,
            "pr_auc": float(average_precision_score(y, scores, sample_weight=weights)) if both else None,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "accuracy": (tp + tn) / n,
            "positive_rate": float(p.mean()),
        },
        "assumption": ASSUMPTION,
    }
