"""The model spec: what a model is trained from and how it is judged.

A spec names the model, its data (files, id and label columns, features and
their kinds, sensitive attributes, held-out data), its candidates and the
metric that picks the winner, its promotion gates and its operating points.
This module holds its dataclasses, the values each key may take, and the form
a version stores it in (``ModelSpec.to_dict``, whose hash names the spec's
meaning); ``spec_file`` reads and checks a TOML file into one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from assay.modelling.candidates import CANDIDATES as FAMILIES

CANDIDATES: tuple[str, ...] = tuple(FAMILIES)
METRICS: tuple[str, ...] = ("average_precision", "roc_auc", "log_loss", "f1", "accuracy", "balanced_accuracy")
GATE_STATS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "brier")
FAIRNESS_STATS: tuple[str, ...] = (
    "demographic_parity_difference",
    "equalized_odds_difference",
)
KIND_NAMES: tuple[str, ...] = ("numeric", "boolean", "categorical")
# Drift tests a spec may name per feature ([monitoring.features.<name>]); "auto" is Evidently's rule.
DRIFT_TESTS: tuple[str, ...] = ("auto", "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi")
# Tests that give a p-value (drift below the threshold) rather than a distance (drift at or above it).
P_VALUE_TESTS: tuple[str, ...] = ("ks", "chisquare", "z")
MONITOR_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy")


@dataclass
class DataSpec:
    train: list[str]
    test: list[str] = field(default_factory=list)
    test_size: float = 0.25
    header: bool = True
    columns: list[str] = field(default_factory=list)
    sep: str | None = None
    id: str = "id"
    label: str = "label"
    positive: str | None = None
    campaign: str | None = None  # take labels from this review campaign's resolved labels


@dataclass
class FeatureSpec:
    include: list[str] = field(default_factory=list)  # empty: every column but id, label and sensitive
    exclude: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)


@dataclass
class UnlearningSpec:
    """``[training.unlearning]``: sharded (SISA) training, so that forgetting retrains only part of it."""

    # Models, each trained on the rows whose seeded id hash falls in its shard; "auto": sized
    # from the training rows (assay.unlearning.sharding.auto_shards).
    shards: int | str = "auto"
    slices: int = 1  # each shard trained in this many steps, checkpointed after each
    curve: bool = True  # also measure held-out accuracy against shard count for the card


@dataclass
class TrainingSpec:
    candidates: list[str] = field(default_factory=lambda: list(CANDIDATES))
    metric: str = "average_precision"
    folds: int = 5
    search_budget_s: float = 0.0  # > 0: search hyperparameters, for at most this long
    search_trials: int = 20  # the search's seeded trials; the budget may cut them short
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    unlearning: UnlearningSpec | None = None  # None: one model, forgetting retrains it in full
    # A candidate whose one-row predict (as served) takes longer than this many µs cannot win.
    max_predict_us: float | None = None


@dataclass
class GateSpec:
    minimum: dict[str, float] = field(default_factory=dict)  # stat -> lowest allowed value
    max_regression: dict[str, float] = field(default_factory=dict)  # stat -> largest allowed drop vs holder
    fairness: dict[str, float] = field(default_factory=dict)  # fairness stat -> largest allowed value


@dataclass
class FeatureMonitorSpec:
    test: str = "auto"  # one of DRIFT_TESTS
    threshold: float | None = None  # None: the test's default (0.05 for p-values, 0.1 for distances)


@dataclass
class MonitoringSpec:
    """How a served model is watched (read by ``assay.monitoring``; training checks feature names)."""

    window: str | int = "1d"  # a duration ("30m", "6h", "1d", "7d") or a number of rows
    # A window with fewer rows is reported but never judged: with a large reference, Evidently's
    # distances flag sampling noise in small windows (about 0.1 at a hundred rows).
    min_rows: int = 500
    drift_share: float = 0.5  # the data set drifts when at least this share of its features drift
    alert_after: int = 3  # consecutive drifting windows before a monitor alerts (and clean ones to clear)
    performance_metric: str = "roc_auc"  # labelled and estimated performance are judged on this
    performance_drop: float = 0.05  # a window this far below the held-out value is a drifting one
    features: dict[str, FeatureMonitorSpec] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> MonitoringSpec:
        """The section as a version stores it (``ModelSpec.to_dict``); absent means the defaults."""
        raw = dict(raw or {})
        features = {k: FeatureMonitorSpec(**v) for k, v in (raw.pop("features", None) or {}).items()}
        return cls(**raw, features=features)


@dataclass(frozen=True)
class OperatingPointSpec:
    """A named threshold: the query that picks it and the class it flags (None: the positive class)."""

    query: str
    cls: str | None = None

    def to_json(self) -> str | dict[str, str]:
        # A point without a class is written as its query, as specs wrote it before classes could be named.
        return self.query if self.cls is None else {"query": self.query, "class": self.cls}

    @classmethod
    def all_from_json(cls, points: Mapping[str, Any]) -> dict[str, OperatingPointSpec]:
        """Points as ``ModelSpec.to_dict`` stores them (``to_json``), by name."""
        return {
            n: cls(p) if isinstance(p, str) else cls(p["query"], p.get("class")) for n, p in points.items()
        }


@dataclass
class CardSpec:
    """``[card]``: what only people can say about a model (Mitchell et al. 2019, "Model Cards")."""

    owner: str = ""
    licence: str = ""
    contact: str = ""
    intended_use: str = ""
    out_of_scope: list[str] = field(default_factory=list)
    factors: str = ""
    evaluation_data: str = ""
    training_data: str = ""
    ethical_considerations: str = ""
    caveats: str = ""


@dataclass
class FairnessSpec:
    """``[fairness]``: how groups are compared, and the mitigation chosen (if any)."""

    min_group_size: int = 30  # smaller groups are listed but left out of the differences
    bootstrap: int = 500  # resamples behind each confidence interval (0: none)
    confidence: float = 0.95
    intersections: list[list[str]] = field(default_factory=list)  # e.g. [["sex", "race"]]
    mitigation: str = "none"  # one of MITIGATIONS
    attribute: str = ""  # the sensitive attribute mitigation equalises (default: the first)
    constraint: str = "equalized_odds"  # what per-group thresholds equalise (one of CONSTRAINTS)


MITIGATIONS: tuple[str, ...] = ("none", "thresholds", "reweighing")
CONSTRAINTS: tuple[str, ...] = ("equalized_odds", "true_positive_rate_parity", "demographic_parity")


@dataclass
class RetrainingSpec:
    """What ``assay retrain`` refuses to learn from (read by ``assay.retraining``)."""

    min_rows: int = 0  # fewer training rows than this: refused
    min_share: float = 0.5  # fewer than this share of the production version's training rows: refused


@dataclass
class ModelSpec:
    name: str
    data: DataSpec
    features: FeatureSpec = field(default_factory=FeatureSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    gates: GateSpec = field(default_factory=GateSpec)
    operating_points: dict[str, OperatingPointSpec] = field(default_factory=dict)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    retraining: RetrainingSpec = field(default_factory=RetrainingSpec)
    card: CardSpec = field(default_factory=CardSpec)
    fairness: FairnessSpec = field(default_factory=FairnessSpec)
    description: str = ""
    seed: int = 0
    source: str = "<spec>"  # the file it came from, for messages

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source")
        if self.training.unlearning is None:
            # A spec without [training.unlearning] keeps the hash it had before the section existed.
            out["training"].pop("unlearning")
        out["operating_points"] = {n: p.to_json() for n, p in self.operating_points.items()}
        # A spec without one of the later sections means what it meant before the section
        # existed, so its hash stays the same.
        for section, default in (
            ("monitoring", MonitoringSpec()),
            ("card", CardSpec()),
            ("fairness", FairnessSpec()),
            ("retraining", RetrainingSpec()),
        ):
            if getattr(self, section) == default:
                out.pop(section)
        if self.training.max_predict_us is None:
            out["training"].pop("max_predict_us")  # the hash a spec had before the bound existed
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<spec>") -> ModelSpec:
        """The spec a version stored (``to_dict``), e.g. to train it again; keys an older version
        did not record take their defaults."""
        training = dict(raw.get("training", {}))
        unlearning = training.pop("unlearning", None)
        return cls(
            name=raw["name"],
            data=DataSpec(**raw["data"]),
            features=FeatureSpec(**raw.get("features", {})),
            training=TrainingSpec(
                **training, unlearning=UnlearningSpec(**unlearning) if unlearning is not None else None
            ),
            gates=GateSpec(**raw.get("gates", {})),
            operating_points=OperatingPointSpec.all_from_json(raw.get("operating_points", {})),
            monitoring=MonitoringSpec.from_dict(raw.get("monitoring")),
            retraining=RetrainingSpec(**raw.get("retraining", {})),
            card=CardSpec(**raw.get("card", {})),
            fairness=FairnessSpec(**raw.get("fairness", {})),
            description=raw.get("description", ""),
            seed=raw.get("seed", 0),
            source=source,
        )

    @property
    def hash(self) -> str:
        """Content hash of the spec's meaning (not of the file's bytes or comments)."""
        return hashlib.sha256(orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``90s``, ``30m``, ``6h``, ``1d`` or ``2w``; ValueError naming the form."""
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        seconds = float(value) * _DURATION_UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(
            f"{text!r} is not a duration like 30m, 6h, 1d or 2w (or give a number of rows)"
        ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds
