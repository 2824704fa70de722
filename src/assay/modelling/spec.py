"""The model spec: what a model is trained from and how it is judged, read from TOML.

A spec names the model, its data (files, id and label columns, features and
their kinds, sensitive attributes, held-out data), its candidates and the
metric that picks the winner, its promotion gates and its operating points.
Every key is checked: an unknown key or a wrong type is an error naming the
file and the key, never a silent default.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from assay.errors import SpecError
from assay.modelling.candidates import CANDIDATES as FAMILIES
from assay.registry.versions import check_name

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

    shards: int = 1  # models, each trained on the rows whose seeded id hash falls in its shard
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


def load_spec(path: str | Path) -> ModelSpec:
    """Read and check a spec file; data paths are taken relative to the spec's folder."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    return parse_spec(raw, source=str(path), base=path.parent)


def parse_spec(raw: Mapping[str, Any], *, source: str = "<spec>", base: Path | None = None) -> ModelSpec:
    """Check every key of a parsed spec and build the ``ModelSpec``; errors name ``source`` and the key."""
    r = _Reader(source)
    r.keys(raw, "", {*_SECTIONS, "name", "description", "seed"})
    name = r.get(raw, "name", str, required=True)
    try:
        check_name(name)
    except Exception as exc:
        raise SpecError(f"{source}: name: {exc}", field="name") from exc
    features = _features(r, r.table(raw, "features"))
    return ModelSpec(
        name=name,
        data=_data(r, r.table(raw, "data", required=True), base),
        features=features,
        training=_training(r, r.table(raw, "training")),
        gates=_gates(r, r.table(raw, "gates")),
        operating_points=_operating_points(r, r.table(raw, "operating_points")),
        monitoring=_monitoring(r, r.table(raw, "monitoring")),
        retraining=_retraining(r, r.table(raw, "retraining")),
        card=_card(r, r.table(raw, "card")),
        fairness=_fairness(r, r.table(raw, "fairness"), features.sensitive),
        description=r.get(raw, "description", str, default=""),
        seed=r.get(raw, "seed", int, default=0),
        source=source,
    )


_SECTIONS = (
    "data",
    "features",
    "training",
    "gates",
    "operating_points",
    "monitoring",
    "retraining",
    "card",
    "fairness",
)


def _data(r: _Reader, d: Mapping[str, Any], base: Path | None) -> DataSpec:
    r.keys(
        d,
        "data.",
        {"train", "test", "test_size", "header", "columns", "sep", "id", "label", "positive", "campaign"},
    )
    data = DataSpec(
        train=[_resolve(p, base) for p in r.paths(d, "data.train", required=True)],
        test=[_resolve(p, base) for p in r.paths(d, "data.test")],
        test_size=r.get(d, "data.test_size", float, default=0.25),
        header=r.get(d, "data.header", bool, default=True),
        columns=r.strings(d, "data.columns"),
        sep=r.get(d, "data.sep", str, default=None),
        id=r.get(d, "data.id", str, required=True),
        label=r.get(d, "data.label", str, required=True),
        positive=_str_or_none(r.get(d, "data.positive", (str, bool, int), default=None)),
        campaign=r.get(d, "data.campaign", str, default=None),
    )
    if not 0.0 < data.test_size < 1.0:
        raise r.fail("data.test_size", f"must be between 0 and 1; got {data.test_size}")
    if not data.header and not data.columns:
        raise r.fail("data.columns", "data.header = false needs data.columns (the column names)")
    return data


def _features(r: _Reader, f: Mapping[str, Any]) -> FeatureSpec:
    r.keys(f, "features.", {"include", "exclude", "kinds", "sensitive"})
    kinds = r.table(f, "features.kinds")
    for col, kind in kinds.items():
        if kind not in KIND_NAMES:
            raise r.fail(f"features.kinds.{col}", f"must be one of {', '.join(KIND_NAMES)}; got {kind!r}")
    return FeatureSpec(
        include=r.strings(f, "features.include"),
        exclude=r.strings(f, "features.exclude"),
        kinds=dict(kinds),
        sensitive=r.strings(f, "features.sensitive"),
    )


def _training(r: _Reader, t: Mapping[str, Any]) -> TrainingSpec:
    r.keys(
        t,
        "training.",
        {
            "candidates",
            "metric",
            "folds",
            "search_budget_s",
            "search_trials",
            "params",
            "unlearning",
            "max_predict_us",
        },
    )
    training = TrainingSpec(
        candidates=r.strings(t, "training.candidates") or list(CANDIDATES),
        metric=r.get(t, "training.metric", str, default="average_precision"),
        folds=r.get(t, "training.folds", int, default=5),
        search_budget_s=r.get(t, "training.search_budget_s", float, default=0.0),
        search_trials=r.get(t, "training.search_trials", int, default=20),
        params=_candidate_params(r, r.table(t, "training.params")),
        unlearning=_unlearning(r, t),
        max_predict_us=r.get(t, "training.max_predict_us", float, default=None),
    )
    for c in training.candidates:
        if c not in CANDIDATES:
            raise r.fail("training.candidates", f"unknown candidate {c!r}; known: {', '.join(CANDIDATES)}")
    if training.metric not in METRICS:
        raise r.fail("training.metric", f"must be one of {', '.join(METRICS)}; got {training.metric!r}")
    if training.folds < 2:
        raise r.fail("training.folds", "must be at least 2")
    if training.search_budget_s < 0:
        raise r.fail("training.search_budget_s", "may not be negative")
    if training.max_predict_us is not None and not training.max_predict_us > 0:
        raise r.fail("training.max_predict_us", "must be a positive number of microseconds")
    if training.search_trials < 1:
        raise r.fail("training.search_trials", "must be at least 1")
    if training.unlearning is not None and training.candidates != ["lightgbm"]:
        # Slices continue a model from its checkpoint, which LightGBM does (init_model).
        raise r.fail("training.unlearning", 'sharded training needs training.candidates = ["lightgbm"]')
    return training


def _gates(r: _Reader, g: Mapping[str, Any]) -> GateSpec:
    r.keys(g, "gates.", {"minimum", "max_regression", "fairness"})
    return GateSpec(
        minimum=r.numbers(g, "gates.minimum", GATE_STATS),
        max_regression=r.numbers(g, "gates.max_regression", GATE_STATS),
        fairness=r.numbers(g, "gates.fairness", FAIRNESS_STATS),
    )


def _operating_points(r: _Reader, ops: Mapping[str, Any]) -> dict[str, OperatingPointSpec]:
    """Each point is a query string, or ``{ query = "...", class = "..." }`` to name the class it flags."""
    from assay.modelling.queries import parse_threshold_query

    points = {}
    for op_name, value in ops.items():
        key = f"operating_points.{op_name}"
        if isinstance(value, dict):
            r.keys(value, f"{key}.", {"query", "class"})
            query = r.get(value, f"{key}.query", str, required=True)
            cls = _str_or_none(r.get(value, f"{key}.class", (str, bool, int), default=None))
        elif isinstance(value, str):
            query, cls = value, None
        else:
            raise r.fail(key, 'must be a query string or a table { query = "...", class = "..." }')
        try:
            parse_threshold_query(query)
        except Exception as exc:
            raise r.fail(key, str(exc)) from exc
        points[op_name] = OperatingPointSpec(query, cls)
    return points


def _card(r: _Reader, c: Mapping[str, Any]) -> CardSpec:
    """``[card]``: free text for the model card's sections; ``out_of_scope`` is a list of uses."""
    texts = [f.name for f in fields(CardSpec) if f.name != "out_of_scope"]
    r.keys(c, "card.", {*texts, "out_of_scope"})
    values = {name: r.get(c, f"card.{name}", str, default="") for name in texts}
    return CardSpec(**values, out_of_scope=r.strings(c, "card.out_of_scope"))


def _fairness(r: _Reader, f: Mapping[str, Any], sensitive: list[str]) -> FairnessSpec:
    r.keys(f, "fairness.", {fl.name for fl in fields(FairnessSpec)})
    intersections = r.get(f, "fairness.intersections", list, default=[])
    if not all(isinstance(i, list) and all(isinstance(c, str) for c in i) for i in intersections):
        raise r.fail("fairness.intersections", 'must be a list of lists of columns, e.g. [["sex", "race"]]')
    spec = FairnessSpec(
        min_group_size=r.get(f, "fairness.min_group_size", int, default=FairnessSpec.min_group_size),
        bootstrap=r.get(f, "fairness.bootstrap", int, default=FairnessSpec.bootstrap),
        confidence=r.get(f, "fairness.confidence", float, default=FairnessSpec.confidence),
        intersections=[list(i) for i in intersections],
        mitigation=r.get(f, "fairness.mitigation", str, default="none"),
        attribute=r.get(f, "fairness.attribute", str, default=""),
        constraint=r.get(f, "fairness.constraint", str, default=FairnessSpec.constraint),
    )
    if spec.min_group_size < 1:
        raise r.fail("fairness.min_group_size", "must be at least 1")
    if not 0 <= spec.bootstrap <= 10_000:
        raise r.fail("fairness.bootstrap", f"must be from 0 to 10000 resamples; got {spec.bootstrap}")
    if not 0.5 <= spec.confidence < 1.0:
        raise r.fail("fairness.confidence", f"must be at least 0.5 and below 1; got {spec.confidence}")
    for i, columns in enumerate(spec.intersections):
        if len(columns) < 2 or len(set(columns)) != len(columns) or not set(columns) <= set(sensitive):
            raise r.fail(
                f"fairness.intersections[{i}]",
                f"must list two or more distinct columns of features.sensitive ({', '.join(sensitive)})",
            )
    if spec.mitigation not in MITIGATIONS:
        raise r.fail(
            "fairness.mitigation", f"must be one of {', '.join(MITIGATIONS)}; got {spec.mitigation!r}"
        )
    if spec.constraint not in CONSTRAINTS:
        raise r.fail(
            "fairness.constraint", f"must be one of {', '.join(CONSTRAINTS)}; got {spec.constraint!r}"
        )
    if spec.mitigation != "none" and not sensitive:
        raise r.fail("fairness.mitigation", "needs a features.sensitive column to mitigate for")
    if spec.attribute and spec.attribute not in sensitive:
        raise r.fail("fairness.attribute", f"must be one of features.sensitive ({', '.join(sensitive)})")
    return spec


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


def _monitoring(r: _Reader, m: Mapping[str, Any]) -> MonitoringSpec:
    """``[monitoring]``: windows, drift rule and alerting; per-feature tests under ``features``."""
    r.keys(
        m,
        "monitoring.",
        {
            "window",
            "min_rows",
            "drift_share",
            "alert_after",
            "performance_metric",
            "performance_drop",
            "features",
        },
    )
    window = r.get(m, "monitoring.window", (str, int), default="1d")
    if isinstance(window, int) and window < 1:
        raise r.fail("monitoring.window", "a window of rows needs at least 1 row")
    if isinstance(window, str):
        try:
            parse_duration(window)
        except ValueError as exc:
            raise r.fail("monitoring.window", str(exc)) from None
    spec = MonitoringSpec(
        window=window,
        min_rows=r.get(m, "monitoring.min_rows", int, default=MonitoringSpec.min_rows),
        drift_share=r.get(m, "monitoring.drift_share", float, default=0.5),
        alert_after=r.get(m, "monitoring.alert_after", int, default=3),
        performance_metric=r.get(m, "monitoring.performance_metric", str, default="roc_auc"),
        performance_drop=r.get(m, "monitoring.performance_drop", float, default=0.05),
    )
    if spec.min_rows < 1:
        raise r.fail("monitoring.min_rows", "must be at least 1")
    if not 0.0 < spec.drift_share <= 1.0:
        raise r.fail("monitoring.drift_share", f"must be in (0, 1]; got {spec.drift_share}")
    if spec.alert_after < 1:
        raise r.fail("monitoring.alert_after", "must be at least 1")
    if spec.performance_metric not in MONITOR_METRICS:
        raise r.fail("monitoring.performance_metric", f"must be one of {', '.join(MONITOR_METRICS)}")
    if spec.performance_drop < 0:
        raise r.fail("monitoring.performance_drop", "may not be negative")
    for name, t in r.table(m, "monitoring.features").items():
        key = f"monitoring.features.{name}"
        if not isinstance(t, dict):
            raise r.fail(key, f'must be a table like {{ test = "psi", threshold = 0.2 }}; got {t!r}')
        r.keys(t, f"{key}.", {"test", "threshold"})
        test = r.get(t, f"{key}.test", str, default="auto")
        if test not in DRIFT_TESTS:
            raise r.fail(f"{key}.test", f"must be one of {', '.join(DRIFT_TESTS)}; got {test!r}")
        threshold = r.get(t, f"{key}.threshold", float, default=None)
        if threshold is not None:
            if test == "auto":
                raise r.fail(f"{key}.threshold", "name the test the threshold is for (test = ...)")
            if threshold <= 0 or (test in P_VALUE_TESTS and threshold >= 1):
                raise r.fail(f"{key}.threshold", f"out of range for {test}: {threshold}")
        spec.features[name] = FeatureMonitorSpec(test, threshold)
    return spec


# Past this, shards are too small to learn from and forgetting gains nothing more.
MAX_SHARDS = 256
MAX_SLICES = 64


def _unlearning(r: _Reader, training: Mapping[str, Any]) -> UnlearningSpec | None:
    """``[training.unlearning]``, or None when the spec has no such table."""
    if "unlearning" not in training:
        return None
    u = r.table(training, "training.unlearning")
    r.keys(u, "training.unlearning.", {"shards", "slices", "curve"})
    shards = r.get(u, "training.unlearning.shards", int, default=1)
    slices = r.get(u, "training.unlearning.slices", int, default=1)
    if not 1 <= shards <= MAX_SHARDS:
        raise r.fail("training.unlearning.shards", f"must be between 1 and {MAX_SHARDS}; got {shards}")
    if not 1 <= slices <= MAX_SLICES:
        raise r.fail("training.unlearning.slices", f"must be between 1 and {MAX_SLICES}; got {slices}")
    return UnlearningSpec(shards, slices, r.get(u, "training.unlearning.curve", bool, default=True))


def _retraining(r: _Reader, t: Mapping[str, Any]) -> RetrainingSpec:
    """``[retraining]``: the floors below which a retraining run refuses its data."""
    r.keys(t, "retraining.", {"min_rows", "min_share"})
    spec = RetrainingSpec(
        min_rows=r.get(t, "retraining.min_rows", int, default=0),
        min_share=r.get(t, "retraining.min_share", float, default=RetrainingSpec.min_share),
    )
    if spec.min_rows < 0:
        raise r.fail("retraining.min_rows", "may not be negative")
    if not 0.0 <= spec.min_share <= 1.0:
        raise r.fail("retraining.min_share", f"must be in [0, 1]; got {spec.min_share}")
    return spec


def _candidate_params(r: _Reader, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``training.params``: one table of hyperparameters per known candidate (names are checked in training)."""
    out = {}
    for c in params:
        if c not in CANDIDATES:
            raise r.fail(f"training.params.{c}", f"unknown candidate; known: {', '.join(CANDIDATES)}")
        out[c] = dict(r.table(params, f"training.params.{c}"))
    return out


def _resolve(p: str, base: Path | None) -> str:
    path = Path(p).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return str(path)


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


class _Reader:
    """Typed access to a parsed TOML mapping with errors that name the file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.source}: {key}: {message}", field=key)

    def keys(self, table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{prefix}{key}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")

    def get(
        self, table: Mapping[str, Any], key: str, kind: Any, *, required: bool = False, default: Any = None
    ) -> Any:
        short = key.rsplit(".", 1)[-1]
        if short not in table:
            if required:
                raise self.fail(key, "missing (required)")
            return default
        value = table[short]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool):
            raise self.fail(key, f"must be an integer; got {value!r}")
        if not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
            raise self.fail(key, f"must be {names}; got {type(value).__name__} {value!r}")
        return value

    def table(self, table: Mapping[str, Any], key: str, *, required: bool = False) -> dict[str, Any]:
        value = self.get(table, key, object, required=required, default={})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table; got {type(value).__name__} {value!r}")
        return value

    def strings(self, table: Mapping[str, Any], key: str) -> list[str]:
        value = self.get(table, key, list, default=[])
        if not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return list(value)

    def paths(self, table: Mapping[str, Any], key: str, *, required: bool = False) -> list[str]:
        value = self.get(table, key, (str, list), required=required, default=[])
        paths = [value] if isinstance(value, str) else value
        if not all(isinstance(v, str) for v in paths) or (required and not paths):
            raise self.fail(key, "must be a path or a non-empty list of paths")
        return list(paths)

    def numbers(self, table: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, float]:
        out = {}
        for stat, value in self.table(table, key).items():
            if stat not in allowed:
                raise self.fail(f"{key}.{stat}", f"unknown statistic; allowed: {', '.join(allowed)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"{key}.{stat}", f"must be a number; got {value!r}")
            out[stat] = float(value)
        return out
