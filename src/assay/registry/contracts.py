"""What each JSON record of a registry version is: the typed contracts its readers use.

A version carries ``card.json`` (the model card's facts), ``evaluation.json`` (the held-out
statistics), the ``summary`` gates read, the ``lineage`` and the feature schema
(``schema.json``). The ``TypedDict`` definitions here (``CardRecord``, ``EvaluationRecord``,
``SummaryRecord``, ``LineageRecord``, ``SchemaRecord`` and their parts) and the vocabularies
they draw on are what the scorer, ``assay show``, the API and the promotion gates read;
``registry.records`` checks parsed JSON against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["numeric", "boolean", "categorical"]
KINDS: tuple[str, ...] = ("numeric", "boolean", "categorical")
Task = Literal["binary", "multiclass"]
TASKS: tuple[str, ...] = ("binary", "multiclass")
# What serves a version's probabilities: a compiled form, LightGBM as trained (one booster or
# shards), or the estimator itself (the reference).
RUNTIMES: tuple[str, ...] = ("lightgbm-text", "linear-json", "lightgbm", "lightgbm-shards", "reference")

# Statistics of one confusion matrix (evaluation's threshold table columns and per-class stats).
COUNT_STATS: tuple[str, ...] = ("tp", "fp", "tn", "fn")
RATE_STATS: tuple[str, ...] = (
    "precision",
    "recall",
    "f1",
    "accuracy",
    "match_rate",
    "filter_rate",
    "fpr",
    "tnr",
    "npv",
)
AUC_STATS: tuple[str, ...] = ("roc_auc", "pr_auc")
# The headline numbers of a summary, which promotion gates compare.
SUMMARY_STATS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "brier")
FAIRNESS_STATS: tuple[str, ...] = ("demographic_parity_difference", "equalized_odds_difference")
GATE_KINDS: tuple[str, ...] = ("minimum", "max_regression", "fairness")
# Fairness mitigation as a card records it: the method, and what per-group thresholds equalise.
MITIGATION_METHODS: tuple[str, ...] = ("thresholds", "reweighing")
# What per-group thresholds equalise, and the disparity (a fairness block's summary) each one removes.
CONSTRAINT_STAT: dict[str, str] = {
    "equalized_odds": "equalized_odds_difference",
    "true_positive_rate_parity": "true_positive_rate_difference",
    "demographic_parity": "demographic_parity_difference",
}
MITIGATION_CONSTRAINTS: tuple[str, ...] = tuple(CONSTRAINT_STAT)
# Beside accuracy, what each side of a mitigation trade-off reports (Fairlearn's summaries).
MITIGATION_STATS: tuple[str, ...] = (
    "demographic_parity_difference",
    "true_positive_rate_difference",
    "equalized_odds_difference",
    "demographic_parity_ratio",
    "equalized_odds_ratio",
)


class FeatureRecord(TypedDict):
    name: str
    kind: Kind
    nullable: bool
    categories: NotRequired[list[str]]  # categorical features only, in code order


class SchemaRecord(TypedDict):
    features: list[FeatureRecord]


# Per-class statistics: RATE_STATS and AUC_STATS (number in [0, 1] or None) and COUNT_STATS.
ClassStats = dict[str, float | int | None]
# A threshold table: "threshold" plus every COUNT_STATS and RATE_STATS column, equally long.
ThresholdTable = dict[str, list[float | int | None]]
# One row of a threshold table: what a threshold query answers.
ThresholdRow = dict[str, float | int | None]


class ConfusionMatrix(TypedDict):
    labels: list[str]
    matrix: list[list[int]]


class CalibrationCurve(TypedDict):
    prob_pred: list[float]
    prob_true: list[float]
    count: list[int]


class Calibration(TypedDict):
    brier: float
    curve: dict[str, CalibrationCurve]


class GroupStats(TypedDict):
    count: int
    selection_rate: float | None
    tpr: float | None
    fpr: float | None
    precision: float | None
    # Versions trained before fairness grew calibration and group sizes lack these:
    fnr: NotRequired[float | None]
    brier: NotRequired[float | None]
    calibration: NotRequired[CalibrationCurve]
    compared: NotRequired[bool]  # False: below min_group_size, left out of the summaries


class Fairness(TypedDict):
    groups: dict[str, GroupStats]
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    equalized_odds_ratio: float | None
    # Versions trained before group sizes and intervals lack these:
    true_positive_rate_difference: NotRequired[float | None]
    false_positive_rate_difference: NotRequired[float | None]
    excluded_groups: NotRequired[list[str]]
    min_group_size: NotRequired[int]
    all_groups: NotRequired[dict[str, float | None]]  # the four Fairlearn summaries over every group
    intervals: NotRequired[dict[str, list[float] | None]]  # stat -> [low, high] (bootstrap)
    confidence: NotRequired[float]
    bootstrap: NotRequired[int]


class RocCurve(TypedDict):
    fpr: list[float]
    tpr: list[float]


class PrCurve(TypedDict):
    precision: list[float]
    recall: list[float]


class EvaluationRecord(TypedDict):
    task: Task
    classes: list[str]
    positive: str | None  # binary tasks only
    decision_threshold: float | None  # binary tasks only
    n: int
    counts: dict[str, int]
    confusion_matrix: ConfusionMatrix
    accuracy: float
    log_loss: NotRequired[float]  # versions trained before it was reported lack it
    per_class: dict[str, ClassStats]
    micro: ClassStats
    macro: ClassStats
    # The classes a task is about (binary: the positive one; multiclass: each) key these:
    thresholds: dict[str, ThresholdTable]
    calibration: Calibration
    fairness: dict[str, dict[str, Fairness]]  # attribute -> class -> fairness
    roc_curve: dict[str, RocCurve | None]
    pr_curve: dict[str, PrCurve | None]


class SummaryRecord(TypedDict):
    roc_auc: float | None
    pr_auc: float | None
    f1: float | None
    precision: float | None
    recall: float | None
    accuracy: float | None
    brier: float | None
    fairness: dict[str, float]  # FAIRNESS_STATS: the worst over attributes and classes


class LineageSearch(TypedDict):
    trials: int
    max_trials: int
    cut_short: bool
    budget_s: float


class ImportedFrom(TypedDict):
    model: str
    version: int
    created_at: str
    bundle_sha256: str


class LabelSnapshot(TypedDict):
    """The labels a retrained version learnt from (``assay.retraining``)."""

    fingerprint: str  # sha256 over every training row's (id, label)
    retrained_from: str  # the production version whose spec was re-run
    base_train: list[str]  # the spec's own training files, before the labels were added
    base_campaign: str | None  # the spec's own data.campaign, whose labels the rows already carry
    rows: int  # training rows
    campaigns: dict[str, int]  # resolved labels used, per review campaign
    api: int  # labels received through the label API or `assay labels load`
    relabelled: int  # training-file rows whose label a later label replaced
    added: int  # rows added from the prediction log
    held_out: int  # labels left out because their item is in the held-out data
    without_features: int  # labels left out because no features of their item were found


class Sources(TypedDict):
    train: list[str]
    test: list[str]


Params = dict[str, str | int | float | bool | None]


class Inference(TypedDict):
    runtime: str  # COMPILED_RUNTIMES: what serves the version's probabilities
    max_abs_diff: float | None  # compiled vs the estimator's own, on the held-out rows
    reason: str | None  # why the reference (the estimator itself) serves, when it does


class ServingCost(TypedDict):
    runtime: str
    predict_us: float  # one row, as the server predicts it
    batch_us: float  # 1,000 rows


class LineageRecord(TypedDict):
    data_fingerprint: str
    spec_hash: str
    seed: int
    sources: Sources
    train_rows: int
    test_rows: int
    task: Task
    params: Params
    refit_s: float
    libraries: dict[str, str]
    assay: str
    python: str
    training_seconds: float
    search: NotRequired[LineageSearch]
    imported_from: NotRequired[ImportedFrom]
    unlearning: NotRequired[dict[str, Any]]  # shards, exclusions honoured, the request a version forgot
    labels: NotRequired[LabelSnapshot]
    inference: NotRequired[Inference]  # versions trained before compiled inference lack it


OperatingPoint = TypedDict("OperatingPoint", {"query": str, "class": str, "answer": ThresholdRow | None})


class Importance(TypedDict):
    feature: str
    importance: float
    std: float


class Candidate(TypedDict):
    candidate: str
    params: Params
    fold_scores: list[float]
    fit_times: list[float]
    mean_score: float
    mean_fit_time: float
    serving: NotRequired[ServingCost]  # versions trained before serving costs were measured lack it


class Trial(TypedDict):
    params: Params
    mean_score: float


class Search(TypedDict):
    budget_s: float
    max_trials: NotRequired[int]  # versions trained before the trial cap lack it and cut_short
    trials: int
    cut_short: NotRequired[bool]
    elapsed_s: float
    best_params: Params
    history: list[Trial]


class MitigationSide(TypedDict):
    """One side of a trade-off on the held-out rows: a decision's accuracy and disparities."""

    accuracy: float
    selection_rate: NotRequired[float]  # flag decisions only (a multiclass decision picks a class)
    # Each of MITIGATION_STATS, None where undefined; a multiclass side gives the worst class's.
    demographic_parity_difference: float | None
    true_positive_rate_difference: float | None
    equalized_odds_difference: float | None
    demographic_parity_ratio: float | None
    equalized_odds_ratio: float | None


class MitigationAtPoint(TypedDict):
    """The trade-off at one named operating point."""

    threshold_before: float  # the point's threshold without mitigation
    threshold_after: NotRequired[float]  # reweighing: the point's threshold on the reweighed model
    thresholds: NotRequired[dict[str, float]]  # per-group thresholds: each group's at the point
    fallback_threshold: NotRequired[float]  # per-group thresholds: an item of no known group's
    before: MitigationSide
    after: MitigationSide
    accuracy_lost: float
    disparity_removed: NotRequired[float]  # absent when a side's disparity is undefined


class Mitigation(TypedDict):
    """What ``[fairness] mitigation`` did, beside the model it would have published without it."""

    method: Literal["thresholds", "reweighing"]
    attribute: str  # one of the card's sensitive columns
    constraint: Literal["equalized_odds", "true_positive_rate_parity", "demographic_parity"]
    before: MitigationSide  # at the decision
    after: MitigationSide
    accuracy_lost: float
    disparity_removed: NotRequired[float]
    thresholds: NotRequired[dict[str, float]]  # per-group thresholds only: each group's, for the decision
    # Versions trained before the scorer applied group thresholds lack these two (they serve the
    # plain decision, with one operating point per group):
    fallback_threshold: NotRequired[float]  # per-group thresholds: an item of no known group's
    operating_points: NotRequired[dict[str, MitigationAtPoint]]


class CardFeature(TypedDict):
    name: str
    kind: Kind


GateLimits = dict[str, dict[str, float]]  # GATE_KINDS -> stat -> limit


class CardRecord(TypedDict):
    model: str
    version: int
    created_at: str
    description: str
    task: Task
    classes: list[str]
    positive: str | None
    candidate: str
    params: Params
    metric: str
    evaluation: EvaluationRecord
    importance: list[Importance]
    comparison: list[Candidate]
    search: Search | None
    operating_points: dict[str, OperatingPoint]
    lineage: LineageRecord
    features: list[CardFeature]
    sensitive: list[str]
    decision_threshold: float
    gates: GateLimits
    unlearning: NotRequired[dict[str, Any]]  # fast unlearning or not, its accuracy cost, the shard curve
    # Versions trained before these were recorded lack them:
    fairness_at_operating_points: NotRequired[dict[str, dict[str, Fairness]]]  # point -> attribute -> block
    prior_score: NotRequired[float]  # the selection metric of predicting the class frequencies
    details: NotRequired[dict[str, str | list[str]]]  # the spec's [card]: owner, licence, intended use...
    mitigation: NotRequired[Mitigation]  # the fairness mitigation chosen, and its trade-off


@dataclass(frozen=True)
class VersionRecord:
    """One registry version as stored (no artifact loaded)."""

    model: str
    version: int
    created_at: datetime
    candidate: str
    spec: dict[str, Any]
    spec_hash: str
    data_fingerprint: str
    summary: dict[str, Any]  # a SummaryRecord (gates read it by statistic names they compute)
    lineage: LineageRecord
    manifest: dict[str, str]
    directory: Path

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "candidate": self.candidate,
            "spec": self.spec,
            "spec_hash": self.spec_hash,
            "data_fingerprint": self.data_fingerprint,
            "summary": self.summary,
            "lineage": self.lineage,
        }
