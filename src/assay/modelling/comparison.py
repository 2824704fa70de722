"""Champion against challenger: two versions scored on the same rows, every statistic side by side.

``compare_versions`` scores both versions on one set of labelled rows (by default the newer
version's held-out data, ``held_out_rows``; or a file, ``file_rows``; or the labelled items of the
prediction log, which monitoring builds) and reports each version's statistics on those rows with
paired uncertainty (``significance``): bootstrap intervals of the differences in ROC-AUC, PR-AUC
and Brier score, McNemar's test at the decision threshold and at each operating point both
versions define (each at its own threshold), and the corrected repeated cross-validation t-test
when both versions were cross-validated on the same folds (same data, seed and fold count).
Promotion gates read these numbers (``Comparison.to_dict``), never summaries measured on
different held-out sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from assay.errors import AssayError, DataError, InvalidInput
from assay.modelling import evaluation
from assay.modelling.datasets import read_labelled
from assay.modelling.preparation import CampaignLabels, prepare
from assay.modelling.significance import (
    DEFAULT_RESAMPLES,
    WeightedStat,
    bootstrap_difference,
    corrected_t_test,
    macro,
    mcnemar,
    weighted_average_precision,
    weighted_roc_auc,
)
from assay.modelling.spec import ModelSpec
from assay.registry.contracts import VersionRecord
from assay.registry.gates import summarize
from assay.registry.loaded import LoadedModel
from assay.registry.versions import Registry

# Statistics whose paired difference gets a bootstrap interval (Brier: lower is better).
BOOTSTRAPPED = ("roc_auc", "pr_auc", "brier")
SIDE_BY_SIDE = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "brier")


@dataclass
class Rows:
    """Labelled rows both versions are scored on: raw columns, labels as class names, and what they are."""

    frame: pd.DataFrame
    labels: np.ndarray
    source: str


def spec_of(record: VersionRecord) -> ModelSpec:
    return ModelSpec.from_dict(record.spec, source=f"the spec of {record.ref}")


def held_out_rows(record: VersionRecord, campaign_labels: CampaignLabels | None = None) -> Rows:
    """``record``'s held-out data as its spec defines it, read as the files are now (its test
    files, or the same seeded split of its training data)."""
    spec = spec_of(record)
    data = prepare(spec, campaign_labels, lambda _m: None)
    what = (
        ", ".join(spec.data.test)
        if spec.data.test
        else f"the seeded held-out split of {', '.join(spec.data.train)}"
    )
    return Rows(
        data.test_frame, np.asarray(data.y_test, dtype=str), f"held-out data of {record.ref} ({what})"
    )


def training_ids(record: VersionRecord, campaign_labels: CampaignLabels | None = None) -> set[str] | None:
    """The items ``record`` trained on, or None when its files changed since (a retrained
    version's label snapshot never does)."""
    data = prepare(spec_of(record), campaign_labels, lambda _m: None)
    return set(data.ids.tolist()) if data.fingerprint == record.data_fingerprint else None


def unseen_by(
    rows: Rows, record: VersionRecord, id_column: str, campaign_labels: CampaignLabels | None
) -> Rows:
    """``rows`` less the items ``record`` trained on: an older version's training data may hold
    items of a newer version's held-out split, and would be judged on items it has learnt."""
    try:
        trained = training_ids(record, campaign_labels)
        why = "its training files changed since"
    except AssayError as exc:
        trained, why = None, exc.message
    if trained is None:
        return Rows(
            rows.frame, rows.labels, f"{rows.source}; which rows {record.ref} trained on is unknown: {why}"
        )
    keep = ~rows.frame[id_column].astype(str).isin(trained).to_numpy()
    if keep.all():
        return rows
    source = f"{rows.source}, less {int((~keep).sum())} rows {record.ref} trained on"
    return Rows(rows.frame[keep].reset_index(drop=True), rows.labels[keep], source)


def file_rows(record: VersionRecord, path: str | Path) -> Rows:
    """A labelled file in the layout ``record``'s spec reads (its columns, header, id and label)."""
    data = read_labelled(spec_of(record), [str(path)])
    return Rows(data.frame, np.asarray(data.labels, dtype=str), str(path))


def version_proba(loaded: LoadedModel, frame: pd.DataFrame, *, source: str) -> np.ndarray:
    """``loaded``'s class probabilities for raw rows (unseen categories count as missing)."""
    X = loaded.schema.encode_frame(frame, source=source)
    return np.asarray(loaded.predictor.predict_proba(X), dtype=float)


@dataclass
class Comparison:
    """Versions ``a`` and ``b`` on the same rows; every difference is ``b - a``."""

    a: str
    b: str
    source: str
    n: int
    counts: dict[str, int]
    stats: dict[str, dict[str, Any]]
    operating_points: list[dict[str, Any]]
    agreement: float
    cross_validation: dict[str, Any]
    fairness: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "source": self.source,
            "n": self.n,
            "counts": self.counts,
            "stats": self.stats,
            "operating_points": self.operating_points,
            "agreement": self.agreement,
            "cross_validation": self.cross_validation,
            "fairness": self.fairness,
        }

    def verdict(self) -> str:
        """One line: is ``b`` better, worse, or not distinguishable from ``a`` on these rows."""
        better = [s for s in BOOTSTRAPPED if _direction(s, self.stats[s]) > 0]
        worse = [s for s in BOOTSTRAPPED if _direction(s, self.stats[s]) < 0]
        if worse:
            return f"{self.b} is significantly worse than {self.a} on {', '.join(worse)}"
        if better:
            return f"{self.b} is significantly better than {self.a} on {', '.join(better)}"
        return f"{self.b} and {self.a} are not distinguishable on these rows"


def _direction(stat: str, row: dict[str, Any]) -> int:
    """+1 when ``b`` is significantly better on ``stat``, -1 when significantly worse, else 0."""
    if not row.get("significant"):
        return 0
    sign = 1 if row["difference"] > 0 else -1
    return -sign if stat == "brier" else sign


def compare_versions(
    registry: Registry,
    a: VersionRecord,
    b: VersionRecord,
    rows: Rows,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Score ``a`` and ``b`` on ``rows`` and compare them with paired statistics."""
    if a.model != b.model:
        raise InvalidInput(f"compare two versions of one model, not {a.ref} and {b.ref}", field="model")
    la, lb = registry.load(a), registry.load(b)
    if sorted(la.classes) != sorted(lb.classes) or la.positive != lb.positive:
        raise InvalidInput(f"{a.ref} and {b.ref} predict different classes: {la.classes} vs {lb.classes}")
    classes, positive = la.classes, la.positive
    unknown = sorted(set(rows.labels.tolist()) - set(classes))
    if unknown:
        raise DataError(f"{rows.source}: label values the models do not predict: {', '.join(unknown[:5])}")
    if len(rows.labels) == 0:
        raise DataError(f"{rows.source}: no labelled rows to compare on")
    pa = version_proba(la, rows.frame, source=rows.source)
    pb = version_proba(lb, rows.frame, source=rows.source)[:, [lb.classes.index(c) for c in classes]]
    y = rows.labels
    ev_a = _evaluate(la, classes, y, pa, rows.frame)
    ev_b = _evaluate(lb, classes, y, pb, rows.frame)
    sum_a, sum_b = summarize(ev_a, positive), summarize(ev_b, positive)
    stats = {s: {"a": sum_a.get(s), "b": sum_b.get(s)} for s in SIDE_BY_SIDE}
    y_idx = pd.Categorical(y, categories=classes).codes.astype(np.int64)
    for stat, fn in _bootstrap_stats(positive is not None).items():
        score_a, score_b = _scores_for(pa, pb, classes, positive)
        target = y_idx == classes.index(positive) if positive is not None else y_idx
        diff = bootstrap_difference(fn, target, score_a, score_b, resamples=resamples, seed=seed)
        stats[stat].update({k: v for k, v in diff.to_dict().items() if k not in ("a", "b")})
    decisions_a, decisions_b = _decisions(la, classes, pa), _decisions(lb, classes, pb)
    return Comparison(
        a=a.ref,
        b=b.ref,
        source=rows.source,
        n=len(y),
        counts={c: int(np.sum(y == c)) for c in classes},
        stats=stats,
        operating_points=_operating_points(la, lb, y_idx, pa, pb, classes),
        agreement=float(np.mean(decisions_a == decisions_b)),
        cross_validation=cross_validation(registry, a, b),
        fairness={"a": sum_a.get("fairness", {}), "b": sum_b.get("fairness", {})},
    )


def _evaluate(
    loaded: LoadedModel, classes: list[str], y: np.ndarray, proba: np.ndarray, frame: pd.DataFrame
) -> dict[str, Any]:
    """The training statistics of ``loaded`` on the rows (``proba`` in the order of ``classes``)."""
    sensitive = {
        a: frame[a].astype(str).where(frame[a].notna(), "(missing)").to_numpy()
        for a in loaded.record.spec.get("features", {}).get("sensitive", [])
        if a in frame.columns
    }
    thresholds = {loaded.positive: loaded.decision_threshold()} if loaded.positive is not None else None
    return evaluation.evaluate(
        y,
        proba,
        classes,
        positive=loaded.positive,
        sensitive=sensitive or None,
        decision_thresholds=thresholds,
    )


def _bootstrap_stats(binary: bool) -> dict[str, WeightedStat]:
    def brier(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
        loss = (score - y) ** 2 if binary else ((score - np.eye(score.shape[1])[y]) ** 2).sum(axis=1)
        return np.atleast_2d(weights) @ loss / np.atleast_2d(weights).sum(axis=1)

    if binary:
        return {"roc_auc": weighted_roc_auc, "pr_auc": weighted_average_precision, "brier": brier}
    return {"roc_auc": macro(weighted_roc_auc), "pr_auc": macro(weighted_average_precision), "brier": brier}


def _scores_for(
    pa: np.ndarray, pb: np.ndarray, classes: list[str], positive: str | None
) -> tuple[np.ndarray, np.ndarray]:
    if positive is None:
        return pa, pb
    i = classes.index(positive)
    return pa[:, i], pb[:, i]


def _decisions(loaded: LoadedModel, classes: list[str], proba: np.ndarray) -> np.ndarray:
    """Each row's decided class index: the positive class at the decision threshold, else the argmax."""
    if loaded.positive is None:
        return proba.argmax(axis=1)
    pos = classes.index(loaded.positive)
    return np.where(proba[:, pos] >= loaded.decision_threshold(), pos, 1 - pos)


def _operating_points(
    la: LoadedModel, lb: LoadedModel, y: np.ndarray, pa: np.ndarray, pb: np.ndarray, classes: list[str]
) -> list[dict[str, Any]]:
    """McNemar at the decision threshold and at each operating point both versions answer,
    each version at its own threshold (that is how each would decide in production)."""
    points: list[tuple[str, float | None, float | None]] = [
        ("decision", la.decision_threshold(), lb.decision_threshold())
    ]
    if la.positive is None:
        points = [("decision", None, None)]
    else:
        for name, op in la.operating_points.items():
            other = lb.operating_points.get(name)
            if other is not None and op["threshold"] is not None and other["threshold"] is not None:
                points.append((name, float(op["threshold"]), float(other["threshold"])))
    out = []
    for name, ta, tb in points:
        if ta is None or tb is None or la.positive is None:
            decided_a, decided_b, truth = pa.argmax(axis=1), pb.argmax(axis=1), y
        else:
            pos = classes.index(la.positive)
            decided_a, decided_b, truth = pa[:, pos] >= ta, pb[:, pos] >= tb, y == pos
        test = mcnemar(decided_a == truth, decided_b == truth)
        out.append(
            {
                "name": name,
                "threshold": {"a": ta, "b": tb},
                "a": _rates(decided_a, truth, binary=la.positive is not None),
                "b": _rates(decided_b, truth, binary=la.positive is not None),
                "mcnemar": test.to_dict(),
            }
        )
    return out


def _rates(decided: np.ndarray, truth: np.ndarray, *, binary: bool) -> dict[str, float | None]:
    accuracy = float(np.mean(decided == truth))
    if not binary:
        return {"accuracy": accuracy}
    flagged, positives = int(decided.sum()), int(truth.sum())
    hits = int(np.sum(decided & truth))
    return {
        "precision": hits / flagged if flagged else None,
        "recall": hits / positives if positives else None,
        "accuracy": accuracy,
    }


def fold_scores(card: dict[str, Any]) -> list[float] | None:
    """The chosen configuration's cross-validation scores, as training recorded them (None when a
    search picked hyperparameters no recorded candidate had)."""
    for entry in card.get("comparison") or []:
        if entry["candidate"] == card["candidate"] and entry["params"] == card["params"]:
            return [float(s) for s in entry["fold_scores"]]
    return None


def cross_validation(registry: Registry, a: VersionRecord, b: VersionRecord) -> dict[str, Any]:
    """Both versions' per-fold scores, and the corrected t-test when their folds were the same."""
    card_a, card_b = registry.card(a), registry.card(b)
    scores_a, scores_b = fold_scores(dict(card_a)), fold_scores(dict(card_b))
    folds_a = a.spec.get("training", {}).get("folds")
    out: dict[str, Any] = {"metric": card_b["metric"], "a": scores_a, "b": scores_b, "test": None}
    why = None
    if scores_a is None or scores_b is None:
        why = "a version's chosen hyperparameters came from a search: no per-fold scores of them"
    elif a.data_fingerprint != b.data_fingerprint:
        why = "the versions were trained on different data, so their folds differ"
    elif (a.spec.get("seed"), folds_a) != (b.spec.get("seed"), b.spec.get("training", {}).get("folds")):
        why = "the versions split their data with different seeds or fold counts"
    elif card_a["metric"] != card_b["metric"] or len(scores_a) != len(scores_b):
        why = "the versions were cross-validated on different metrics"
    if why is None and scores_a is not None and scores_b is not None:
        # k-fold: each fold tests on 1/k of the rows and trains on the other (k-1)/k.
        out["test"] = corrected_t_test(
            np.array(scores_a), np.array(scores_b), 1 / (len(scores_a) - 1)
        ).to_dict()
    out["why_not"] = why
    return out
