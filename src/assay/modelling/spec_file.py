"""The spec file: TOML read and checked, section by section, into a ``ModelSpec``.

``load_spec`` reads a file, ``parse_spec`` a parsed mapping; each section has its
reader here, which checks every key of the section (an unknown key or a wrong type
is an error naming the file and the key, never a silent default) and the values'
ranges and agreement with one another (``SpecReader`` gives the typed access).
Data paths are taken relative to the spec's folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from assay.errors import SpecError
from assay.modelling.spec import (
    CANDIDATES,
    CONSTRAINTS,
    DRIFT_TESTS,
    FAIRNESS_STATS,
    GATE_STATS,
    KIND_NAMES,
    METRICS,
    MITIGATIONS,
    MONITOR_METRICS,
    P_VALUE_TESTS,
    CardSpec,
    DataSpec,
    FairnessSpec,
    FeatureMonitorSpec,
    FeatureSpec,
    GateSpec,
    ModelSpec,
    MonitoringSpec,
    OperatingPointSpec,
    RetrainingSpec,
    TrainingSpec,
    UnlearningSpec,
    parse_duration,
)
from assay.modelling.spec_reader import SpecReader
from assay.registry.versions import check_name


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
    r = SpecReader(source)
    r.keys(raw, "", {*_SECTIONS, "name", "description", "seed"})
    name = r.get(raw, "name", str, required=True)
    try:
        check_name(name)
    except Exception as exc:
        raise SpecError(f"{source}: name: {exc}", field="name") from exc
    features = _features(r, r.table(raw, "features"))
    spec = ModelSpec(
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
    if spec.training.unlearning is not None and spec.fairness.mitigation != "none":
        # Mitigation refits or wraps the model after the shards are trained: forgetting could not
        # retrain only the shards that held an item and still equal a training from scratch.
        raise r.fail(
            "fairness.mitigation",
            "cannot be combined with [training.unlearning] (forgetting could not stay exact); remove one",
        )
    return spec


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


def _data(r: SpecReader, d: Mapping[str, Any], base: Path | None) -> DataSpec:
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


def _features(r: SpecReader, f: Mapping[str, Any]) -> FeatureSpec:
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


def _training(r: SpecReader, t: Mapping[str, Any]) -> TrainingSpec:
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


def _gates(r: SpecReader, g: Mapping[str, Any]) -> GateSpec:
    r.keys(g, "gates.", {"minimum", "max_regression", "fairness"})
    return GateSpec(
        minimum=r.numbers(g, "gates.minimum", GATE_STATS),
        max_regression=r.numbers(g, "gates.max_regression", GATE_STATS),
        fairness=r.numbers(g, "gates.fairness", FAIRNESS_STATS),
    )


def _operating_points(r: SpecReader, ops: Mapping[str, Any]) -> dict[str, OperatingPointSpec]:
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


def _card(r: SpecReader, c: Mapping[str, Any]) -> CardSpec:
    """``[card]``: free text for the model card's sections; ``out_of_scope`` is a list of uses."""
    texts = [f.name for f in fields(CardSpec) if f.name != "out_of_scope"]
    r.keys(c, "card.", {*texts, "out_of_scope"})
    values = {name: r.get(c, f"card.{name}", str, default="") for name in texts}
    return CardSpec(**values, out_of_scope=r.strings(c, "card.out_of_scope"))


def _fairness(r: SpecReader, f: Mapping[str, Any], sensitive: list[str]) -> FairnessSpec:
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


def _monitoring(r: SpecReader, m: Mapping[str, Any]) -> MonitoringSpec:
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
        spec.features[name] = _feature_monitor(r, f"monitoring.features.{name}", t)
    return spec


def _feature_monitor(r: SpecReader, key: str, t: Any) -> FeatureMonitorSpec:
    """``[monitoring.features.<name>]``: the drift test of one feature and its threshold."""
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
    return FeatureMonitorSpec(test, threshold)


# Past this, shards are too small to learn from and forgetting gains nothing more.
MAX_SHARDS = 256
MAX_SLICES = 64


def _unlearning(r: SpecReader, training: Mapping[str, Any]) -> UnlearningSpec | None:
    """``[training.unlearning]``, or None when the spec has no such table."""
    if "unlearning" not in training:
        return None
    u = r.table(training, "training.unlearning")
    r.keys(u, "training.unlearning.", {"shards", "slices", "curve"})
    shards = r.get(u, "training.unlearning.shards", (int, str), default="auto")
    slices = r.get(u, "training.unlearning.slices", int, default=1)
    if shards != "auto" and (isinstance(shards, bool | str) or not 1 <= shards <= MAX_SHARDS):
        raise r.fail(
            "training.unlearning.shards", f'must be "auto" or between 1 and {MAX_SHARDS}; got {shards!r}'
        )
    if not 1 <= slices <= MAX_SLICES:
        raise r.fail("training.unlearning.slices", f"must be between 1 and {MAX_SLICES}; got {slices}")
    return UnlearningSpec(shards, slices, r.get(u, "training.unlearning.curve", bool, default=True))


def _retraining(r: SpecReader, t: Mapping[str, Any]) -> RetrainingSpec:
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


def _candidate_params(r: SpecReader, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
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
