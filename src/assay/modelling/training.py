"""Training: from a spec to one registry version.

Checks the spec's hyperparameters, reads the data once, fingerprints it,
compares the candidates by stratified cross-validation (score and fit time per
fold), optionally searches hyperparameters (a seeded number of trials, bounded
in time), refits the winner on all training data, evaluates it on held-out data
and publishes the version: safe artifact, schema, evaluation, model card.
Everything random is seeded from the spec, so the same spec on the same data
gives the same metrics (unless a search's time budget cuts it short).
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from lightgbm.basic import LightGBMError, _ConfigAliases
from scipy.stats import loguniform, randint, uniform
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
)
from sklearn.model_selection import ParameterSampler, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import assay
from assay.errors import DataError, GateFailed, SpecError
from assay.modelling import evaluation
from assay.modelling.datasets import (
    LabelledData,
    check_held_out,
    check_labels,
    feature_kinds,
    fingerprint,
    read_labelled,
)
from assay.modelling.reports import model_card
from assay.modelling.spec import ModelSpec
from assay.registry.artifacts import save_model, write_json
from assay.registry.gates import summarize
from assay.registry.schema import FeatureSchema
from assay.registry.versions import Registry, VersionRecord

Progress = Callable[[str], None]

# Defaults chosen for tabular assessment data of a few thousand to a few million rows:
# shallow trees, a modest learning rate and row/column subsampling generalise well on
# imbalanced labels such as "reverted" without any search.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 2000},
    "lightgbm": {
        "n_estimators": 500,
        "learning_rate": 0.02,
        "num_leaves": 15,
        "min_child_samples": 40,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.7,
        "reg_lambda": 1.0,
    },
    "hist_gradient_boosting": {
        "max_iter": 300,
        "learning_rate": 0.03,
        "max_leaf_nodes": 8,
        "min_samples_leaf": 60,
        "l2_regularization": 1.0,
    },
    "random_forest": {"n_estimators": 300, "min_samples_leaf": 3, "max_features": "sqrt"},
}

SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": loguniform(1e-3, 1e2)},
    "lightgbm": {
        "n_estimators": randint(100, 1000),
        "learning_rate": loguniform(0.005, 0.2),
        "num_leaves": randint(4, 64),
        "min_child_samples": randint(5, 150),
        "subsample": uniform(0.5, 0.5),
        "colsample_bytree": uniform(0.4, 0.6),
        "reg_lambda": loguniform(1e-3, 10),
    },
    "hist_gradient_boosting": {
        "max_iter": randint(100, 800),
        "learning_rate": loguniform(0.005, 0.2),
        "max_leaf_nodes": randint(4, 64),
        "min_samples_leaf": randint(5, 150),
        "l2_regularization": loguniform(1e-3, 10),
    },
    "random_forest": {
        "n_estimators": randint(100, 500),
        "min_samples_leaf": randint(1, 30),
        "max_features": uniform(0.1, 0.9),
    },
}


def _model(name: str, params: dict[str, Any], seed: int, categorical: list[int]) -> ClassifierMixin:
    """A candidate's bare model: assay's settings, overridden by ``params``, and the seed."""
    if name == "lightgbm":
        # LightGBM documents deterministic=True as reproducible only with a fixed histogram
        # layout, so assay fixes one: column-wise, unless the spec asks for row-wise.
        layout = {} if params.get("force_row_wise") else {"force_col_wise": True}
        settings = {"n_jobs": os.cpu_count() or 1, "deterministic": True, **layout, "verbose": -1}
        return LGBMClassifier(**{**settings, **params}, random_state=seed)
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            **{"early_stopping": False, **params}, categorical_features=categorical or None, random_state=seed
        )
    if name == "random_forest":
        return RandomForestClassifier(**{"n_jobs": os.cpu_count() or 1, **params}, random_state=seed)
    if name == "logistic_regression":
        return LogisticRegression(**params, random_state=seed)
    raise ValueError(name)


def build_estimator(name: str, params: dict[str, Any], schema: FeatureSchema, seed: int) -> ClassifierMixin:
    """An unfitted candidate taking the schema's encoded matrix (categorical codes, NaN = missing)."""
    cat = schema.categorical_indices
    model = _model(name, {**DEFAULT_PARAMS[name], **params}, seed, cat)
    if name != "logistic_regression":
        return model
    num = [i for i in range(len(schema.features)) if i not in cat]
    parts = [
        (
            "numeric",
            Pipeline(
                [
                    ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                    ("scale", StandardScaler()),
                ]
            ),
            num,
        )
    ]
    if cat:
        parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), cat))
    return Pipeline([("columns", ColumnTransformer(parts)), ("model", model)])


def check_params(spec: ModelSpec) -> None:
    """Refuse the spec's hyperparameters before any data is read or anything written.

    Each key must be one of the estimator's parameters and a value the estimator's
    own validation takes (an error names ``training.params.<candidate>.<key>``);
    then the candidate's whole set is fitted on a few rows, since some values only
    conflict with each other.
    """
    for name, params in spec.training.params.items():
        where = f"training.params.{name}"
        reserved = _set_by_assay(name)
        known = _param_names(name)
        for key, value in params.items():
            key_field = f"{where}.{key}"
            if key in reserved:
                raise SpecError(
                    f"{spec.source}: {key_field}: not settable here; {reserved[key]}", field=key_field
                )
            if key not in known:
                close = get_close_matches(key, known, n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise SpecError(
                    f"{spec.source}: {key_field}: unknown hyperparameter of {name}{hint}", field=key_field
                )
            # LightGBM declares no constraints up front: it checks its values when fitting.
            problem = _refusal(name, {key: value}, spec.seed, fit=name == "lightgbm")
            if problem:
                raise SpecError(f"{spec.source}: {key_field}: {problem}", field=key_field)
        problem = _refusal(name, {**DEFAULT_PARAMS[name], **params}, spec.seed, fit=True)
        if problem:
            raise SpecError(
                f"{spec.source}: {where}: these hyperparameters do not work together: {problem}", field=where
            )


def _set_by_assay(name: str) -> dict[str, str]:
    """Parameter names assay sets from other parts of the spec, and which part."""
    seed, kinds = "it is set from the spec's seed", "it is set from features.kinds"
    if name == "lightgbm":
        return {
            **dict.fromkeys(_ConfigAliases.get("seed"), seed),
            **dict.fromkeys(_ConfigAliases.get("categorical_feature"), kinds),
        }
    if name == "hist_gradient_boosting":
        return {"random_state": seed, "categorical_features": kinds}
    return {"random_state": seed}


def _param_names(name: str) -> list[str]:
    names = set(_model(name, {}, 0, []).get_params())
    if name == "lightgbm":
        # LGBMClassifier hands any LightGBM parameter, or an alias of one, to the library;
        # this is the library's own list, the one it warns "Unknown parameter" against.
        names.update(a for aliases in _ConfigAliases._get_all_param_aliases().values() for a in aliases)
    return sorted(names - _set_by_assay(name).keys())


def _refusal(name: str, params: dict[str, Any], seed: int, *, fit: bool) -> str | None:
    """Why the candidate's estimator refuses ``params``, in its own words; None when it takes them."""
    model = _model(name, params, seed, [])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # about the probe's few rows, not about the spec
            if fit:
                # A few rows of two features: enough for the estimator to check its parameters.
                model.fit(np.random.default_rng(0).normal(size=(40, 2)), np.arange(40) % 2)
            else:
                model._validate_params()  # scikit-learn's declared constraints, without fitting
    except (ValueError, TypeError, LightGBMError) as exc:
        # LightGBM's messages end with the C++ file and line that checked the value.
        return re.sub(r"\s+at \S+, line \d+\s*\.?\s*$", "", str(exc).strip())
    return None


def _fit(estimator: ClassifierMixin, X: np.ndarray, y: np.ndarray, schema: FeatureSchema) -> ClassifierMixin:
    if isinstance(estimator, LGBMClassifier):
        # LightGBM takes categorical columns at fit time, not in the constructor.
        return estimator.fit(X, y, categorical_feature=schema.categorical_indices or "auto")
    return estimator.fit(X, y)


def metric_score(metric: str, y: np.ndarray, proba: np.ndarray) -> float:
    """The spec's selection metric, larger is better (log loss is negated)."""
    k = proba.shape[1]
    if metric == "log_loss":
        return -float(log_loss(y, proba, labels=list(range(k))))
    if metric in ("average_precision", "roc_auc"):
        if k == 2:
            fn = average_precision_score if metric == "average_precision" else roc_auc_score
            return float(fn(y == 1, proba[:, 1]))
        onehot = np.eye(k)[y]
        if metric == "roc_auc":
            return float(roc_auc_score(onehot, proba, average="macro"))
        return float(average_precision_score(onehot, proba, average="macro"))
    pred = proba.argmax(axis=1)
    if metric == "f1":
        return float(f1_score(y, pred, average="binary" if k == 2 else "macro"))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(y, pred))
    return float(accuracy_score(y, pred))


@dataclass
class CandidateResult:
    candidate: str
    params: dict[str, Any]
    fold_scores: list[float]
    fit_times: list[float]

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def mean_fit_time(self) -> float:
        return float(np.mean(self.fit_times))

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "params": _jsonable(self.params),
            "fold_scores": self.fold_scores,
            "fit_times": self.fit_times,
            "mean_score": self.mean_score,
            "mean_fit_time": self.mean_fit_time,
        }


@dataclass
class TrainResult:
    record: VersionRecord
    comparison: list[CandidateResult]
    winner: CandidateResult
    evaluation: dict[str, Any]
    promoted: bool
    search: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)


def cross_validate(
    name: str,
    params: dict[str, Any],
    schema: FeatureSchema,
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int,
    metric: str,
    seed: int,
    progress: Progress,
    deadline: float = math.inf,
) -> CandidateResult:
    """Stratified k-fold scores and fit times; fewer than ``folds`` if ``deadline`` (monotonic) passes first."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    result = CandidateResult(name, {**DEFAULT_PARAMS[name], **params}, [], [])
    for i, (tr, va) in enumerate(splitter.split(X, y), start=1):
        if time.monotonic() >= deadline:
            break
        estimator = build_estimator(name, params, schema, seed)
        started = time.perf_counter()
        _fit(estimator, X[tr], y[tr], schema)
        result.fit_times.append(time.perf_counter() - started)
        result.fold_scores.append(
            metric_score(metric, y[va], _full_proba(estimator, X[va], int(y.max()) + 1))
        )
        progress(
            f"  {name}: fold {i}/{folds} {metric}={result.fold_scores[-1]:.4f} fit {result.fit_times[-1]:.2f}s"
        )
    return result


def _full_proba(estimator: Any, X: np.ndarray, k: int) -> np.ndarray:
    """Probabilities with a column for every class, even one missing from a fold's training part."""
    proba = estimator.predict_proba(X)
    if proba.shape[1] == k:
        return proba
    full = np.zeros((len(X), k))
    full[:, estimator.classes_] = proba
    return full


def search(
    best: CandidateResult,
    schema: FeatureSchema,
    X: np.ndarray,
    y: np.ndarray,
    *,
    spec: ModelSpec,
    progress: Progress,
) -> tuple[CandidateResult, dict[str, Any]]:
    """Seeded random search around the winning candidate: ``search_trials`` trials at most.

    ``search_budget_s`` bounds the time: the deadline is checked before every fold, so
    the search overshoots it by one fold at most, and a trial it interrupts is
    discarded. The trials that count are thus always the first N of the same seeded
    sequence: when the budget does not cut the search short, the result does not
    depend on the machine's speed.
    """
    t = spec.training
    started = time.monotonic()
    deadline = started + t.search_budget_s
    sampler = ParameterSampler(SEARCH_SPACES[best.candidate], n_iter=t.search_trials, random_state=spec.seed)
    fixed = t.params.get(best.candidate, {})
    history: list[dict[str, Any]] = []
    cut_short = False
    for i, sampled in enumerate(sampler, start=1):
        trial = cross_validate(
            best.candidate,
            {**sampled, **fixed},  # the spec's explicit choices are not searched
            schema,
            X,
            y,
            folds=t.folds,
            metric=t.metric,
            seed=spec.seed,
            progress=lambda _m: None,
            deadline=deadline,
        )
        if len(trial.fold_scores) < t.folds:
            cut_short = True
            break
        history.append({"params": _jsonable(trial.params), "mean_score": trial.mean_score})
        progress(f"  search trial {i}/{t.search_trials}: {t.metric}={trial.mean_score:.4f}")
        if trial.mean_score > best.mean_score:
            best = trial
    elapsed = time.monotonic() - started
    progress(
        f"search: {len(history)} of {t.search_trials} trials in {elapsed:.1f}s"
        + (f", cut short by the {t.search_budget_s:g}s budget" if cut_short else "")
        + f"; best {t.metric}={best.mean_score:.4f}"
    )
    info = {
        "budget_s": t.search_budget_s,
        "max_trials": t.search_trials,
        "trials": len(history),
        "cut_short": cut_short,
        "elapsed_s": round(elapsed, 3),
        "best_params": _jsonable(best.params),
        "history": history,
    }
    return best, info


CampaignLabels = Callable[[str], pd.DataFrame]
"""Reads a review campaign's resolved labels (``id`` and ``label`` columns) by campaign name."""


def train(
    spec: ModelSpec,
    registry: Registry,
    *,
    progress: Progress | None = None,
    actor: str = "assay train",
    campaign_labels: CampaignLabels | None = None,
) -> TrainResult:
    """Train ``spec`` and publish one version; nothing is written if any step fails.

    A spec whose labels come from a review campaign needs ``campaign_labels``;
    the caller supplies it so that modelling never reaches up into the review domain.
    """
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    check_params(spec)
    d = spec.data
    say(f"reading {', '.join(d.train)}")
    labels = None
    if d.campaign:
        if campaign_labels is None:
            raise SpecError(f"data.campaign: {d.campaign!r} needs a campaign label source to train from")
        labels = campaign_labels(d.campaign)[["id", "label"]]
        say(f"{len(labels)} resolved labels from campaign {d.campaign!r}")
    train_data = read_labelled(spec, d.train, labels)
    classes, positive = check_labels(train_data.labels, d.positive, source=train_data.source)
    kinds = feature_kinds(spec, train_data.frame, source=train_data.source)
    if d.test:
        test_data = read_labelled(spec, d.test)
        check_held_out(spec, train_data, test_data, classes)
        overlap = np.intersect1d(train_data.ids, test_data.ids)
        if overlap.size:
            # Real data sets do this (editquality has one such edit); it inflates held-out
            # numbers a little, so say so rather than refuse.
            say(
                f"warning: {overlap.size} item id(s) are in both training and held-out data, e.g. {overlap[0]!r}"
            )
    else:
        train_data, test_data = _split(train_data, spec)
    data_fp = fingerprint(d.train + d.test, labels)

    schema = FeatureSchema.learn(train_data.frame, kinds, source=train_data.source)
    X = schema.encode_frame(train_data.frame, source=train_data.source)
    X_test = schema.encode_frame(test_data.frame, source=test_data.source)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in train_data.labels])
    y_test_names = test_data.labels
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < spec.training.folds:
        rare = classes[int(counts.argmin())]
        raise DataError(
            f"{train_data.source}: class {rare!r} has {counts.min()} rows, fewer than training.folds={spec.training.folds}"
        )
    say(
        f"{len(X)} training rows, {len(X_test)} held-out rows, {len(schema.features)} features, classes {classes}"
    )

    comparison = []
    for name in spec.training.candidates:
        say(f"cross-validating {name} ({spec.training.folds} folds)")
        comparison.append(
            cross_validate(
                name,
                spec.training.params.get(name, {}),
                schema,
                X,
                y,
                folds=spec.training.folds,
                metric=spec.training.metric,
                seed=spec.seed,
                progress=say,
            )
        )
    winner = max(comparison, key=lambda r: r.mean_score)
    say(f"best candidate: {winner.candidate} ({spec.training.metric}={winner.mean_score:.4f})")
    search_info = None
    if spec.training.search_budget_s > 0:
        say(
            f"searching {winner.candidate} hyperparameters: {spec.training.search_trials} trials, "
            f"at most {spec.training.search_budget_s:g}s"
        )
        winner, search_info = search(winner, schema, X, y, spec=spec, progress=say)

    say(f"refitting {winner.candidate} on all {len(X)} training rows")
    refit_started = time.perf_counter()
    estimator = _fit(build_estimator(winner.candidate, winner.params, schema, spec.seed), X, y, schema)
    refit_s = time.perf_counter() - refit_started
    proba = _full_proba(estimator, X_test, len(classes))
    sensitive = {
        a: test_data.frame[a].astype(str).where(test_data.frame[a].notna(), "(missing)").to_numpy()
        for a in spec.features.sensitive
    }
    say("evaluating on held-out data")
    ev = evaluation.evaluate(y_test_names, proba, classes, positive=positive, sensitive=sensitive or None)
    importance = evaluation.permutation_importance(
        lambda m: _full_proba(estimator, m, len(classes)),
        X_test,
        y_test_names,
        classes,
        schema.names,
        positive=positive,
        seed=spec.seed,
    )
    operating_points = {}
    for op_name, query in spec.operating_points.items():
        cls = positive or classes[-1]
        answer = evaluation.answer_threshold_query(ev["thresholds"][cls], query)
        operating_points[op_name] = {"query": query, "class": cls, "answer": answer}

    lineage = {
        "data_fingerprint": data_fp,
        "spec_hash": spec.hash,
        "seed": spec.seed,
        "sources": {"train": d.train, "test": d.test},
        "train_rows": len(X),
        "test_rows": len(X_test),
        "task": "binary" if positive is not None else "multiclass",
        "params": _jsonable(winner.params),
        "refit_s": round(refit_s, 3),
        "libraries": _library_versions(),
        "assay": assay.__version__,
        "python": platform.python_version(),
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    if search_info:
        lineage["search"] = {k: search_info[k] for k in ("trials", "max_trials", "cut_short", "budget_s")}
    summary = summarize(ev, positive)
    facts = {
        "model": spec.name,
        "description": spec.description,
        "task": lineage["task"],
        "classes": classes,
        "positive": positive,
        "candidate": winner.candidate,
        "params": _jsonable(winner.params),
        "metric": spec.training.metric,
        "evaluation": ev,
        "importance": importance,
        "comparison": [c.to_dict() for c in comparison],
        "search": search_info,
        "operating_points": operating_points,
        "lineage": lineage,
        "features": [{"name": f.name, "kind": f.kind} for f in schema.features],
        "sensitive": spec.features.sensitive,
        "decision_threshold": 0.5,
        "gates": spec.to_dict()["gates"],
    }

    staging = registry.staging_dir(spec.name)
    try:
        reference = _reference_row(X, schema)
        save_model(estimator, staging, reference)
        write_json(staging / "schema.json", schema.to_dict())
        write_json(staging / "evaluation.json", ev)
        version = registry.next_version(spec.name)
        facts.update(version=version, created_at=pd.Timestamp.now(tz="UTC").isoformat())
        write_json(staging / "card.json", facts)
        (staging / "card.html").write_text(model_card(facts), encoding="utf-8")
        record = registry.add(
            name=spec.name,
            task=lineage["task"],
            staging=staging,
            candidate=winner.candidate,
            spec=spec.to_dict(),
            spec_hash=spec.hash,
            data_fingerprint=data_fp,
            summary=summary,
            lineage=lineage,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"registered {record.ref}")
    registry.set_alias(
        spec.name, "candidate", record.version, actor=actor, reason="newly trained", forced=False, gates=[]
    )
    promoted = False
    if "production" not in registry.aliases(spec.name):
        try:
            registry.promote(spec.name, record.version, actor=actor, reason="first version of the model")
            promoted = True
            say(f"{record.ref} is the first version: promoted to production")
        except GateFailed as exc:
            say(f"not promoted to production: {exc.message}")
    return TrainResult(record, comparison, winner, ev, promoted, search_info)


def _split(data: LabelledData, spec: ModelSpec) -> tuple[LabelledData, LabelledData]:
    idx = np.arange(len(data.labels))
    try:
        tr, te = train_test_split(
            idx, test_size=spec.data.test_size, stratify=data.labels, random_state=spec.seed
        )
    except ValueError as exc:
        raise DataError(f"{data.source}: cannot make a stratified held-out split: {exc}") from exc
    tr, te = np.sort(tr), np.sort(te)

    def part(rows: np.ndarray, suffix: str) -> LabelledData:
        frame = data.frame.iloc[rows].reset_index(drop=True)
        return LabelledData(frame, data.ids[rows], data.labels[rows], f"{data.source} ({suffix})")

    return part(tr, "training split"), part(te, "held-out split")


def _reference_row(X: np.ndarray, schema: FeatureSchema) -> np.ndarray:
    """A typical row (median, or most common code) that occlusion explanations compare against."""
    ref = np.empty(X.shape[1])
    for j, f in enumerate(schema.features):
        col = X[:, j][~np.isnan(X[:, j])]
        if col.size == 0:
            ref[j] = np.nan
        elif f.kind == "numeric":
            ref[j] = float(np.median(col))
        else:
            values, counts = np.unique(col, return_counts=True)
            ref[j] = float(values[counts.argmax()])
    return ref


def _library_versions() -> dict[str, str]:
    import lightgbm
    import sklearn
    import skops

    return {
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
        "skops": skops.__version__,
    }


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
