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

import hashlib
import itertools
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
)
from sklearn.model_selection import ParameterSampler, StratifiedKFold, train_test_split

import assay
from assay.engines.engine import Engine, LocalEngine
from assay.errors import DataError, GateFailed, SpecError
from assay.modelling import evaluation, mitigation
from assay.modelling.assessment import assess_held_out, operating_point_classes, sensitive_groups
from assay.modelling.candidates import CANDIDATES, check_params
from assay.modelling.compilation import compile_for_serving
from assay.modelling.datasets import (
    LabelledData,
    check_held_out,
    check_labels,
    feature_kinds,
    fingerprint,
    read_labelled,
)
from assay.modelling.profile import PROFILE_JSON, build_profile, profile_bytes
from assay.modelling.reports import model_card
from assay.modelling.spec import ModelSpec
from assay.modelling.timing import fast_enough, serving_cost
from assay.registry.artifacts import library_versions, save_model
from assay.registry.ensemble import ShardedModel, save_sharded
from assay.registry.files import write_file, write_json
from assay.registry.gates import summarize
from assay.registry.records import check_card, check_evaluation, check_lineage, check_schema, check_summary
from assay.registry.schema import FeatureSchema
from assay.registry.versions import Registry, VersionRecord

Progress = Callable[[str], None]
# Search trials handed to the engine at once: enough to keep a cluster's cores busy, few
# enough that a time budget does not wait on trials it will drop.
_SEARCH_WAVE = 16


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
        return float(f1_score(y, pred, average="binary" if k == 2 else "macro", zero_division=0))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(y, pred))
    return float(accuracy_score(y, pred))


@dataclass
class CandidateResult:
    candidate: str
    params: dict[str, Any]
    fold_scores: list[float]
    fit_times: list[float]
    serving: dict[str, Any] | None = None  # timing.serving_cost of the first fold's model

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
            **({"serving": self.serving} if self.serving is not None else {}),
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
    prior_score: float | None = None  # the metric of predicting the class frequencies


# A candidate within this much of the prior's score has learnt nothing the class
# frequencies do not already say (a constant model scores exactly the prior).
NO_BETTER_MARGIN = 0.005


def no_better_than_prior(score: float, prior: float | None) -> bool:
    return prior is not None and score <= prior + NO_BETTER_MARGIN


def prior_score(y: np.ndarray, *, folds: int, metric: str, seed: int) -> float:
    """The selection metric of predicting each fold's class frequencies, on the candidates' folds."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    k = int(y.max()) + 1
    scores = []
    for tr, va in splitter.split(np.zeros(len(y)), y):
        frequencies = np.bincount(y[tr], minlength=k) / len(tr)
        scores.append(metric_score(metric, y[va], np.tile(frequencies, (len(va), 1))))
    return float(np.mean(scores))


def cross_validate(
    trials: Sequence[tuple[str, dict[str, Any]]],
    schema: FeatureSchema,
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int,
    metric: str,
    seed: int,
    progress: Progress,
    engine: Engine,
    deadline: float = math.inf,
    measure: bool = False,
) -> list[CandidateResult]:
    """Stratified k-fold scores and fit times of each (candidate, params), every fold a call of
    ``engine``; a trial whose folds did not all finish before ``deadline`` (monotonic) has fewer.
    ``measure``: each trial's first fold model also has its serving cost measured (``timing``)."""
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y))
    k = int(y.max()) + 1
    calls = [
        (name, params, seed, metric, k, tr, va, measure and f == 0)
        for name, params in trials
        for f, (tr, va) in enumerate(splits)
    ]

    def done(i: int, outcome: tuple[float, float]) -> None:
        name, fold = trials[i // folds][0], i % folds + 1
        progress(f"  {name}: fold {fold}/{folds} {metric}={outcome[0]:.4f} fit {outcome[1]:.2f}s")

    outcomes = engine.map(
        fit_fold, calls, shared={"X": X, "y": y, "schema": schema}, deadline=deadline, done=done
    )
    results = []
    for t, (name, params) in enumerate(trials):
        result = CandidateResult(name, {**CANDIDATES[name].defaults, **params}, [], [])
        for outcome in outcomes[t * folds : (t + 1) * folds]:
            if outcome is None:
                break
            result.fold_scores.append(outcome[0])
            result.fit_times.append(outcome[1])
            result.serving = result.serving or (outcome[2] if len(outcome) > 2 else None)
        results.append(result)
    return results


def fit_fold(
    name: str,
    params: dict[str, Any],
    seed: int,
    metric: str,
    k: int,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    measure: bool = False,
    *,
    X: np.ndarray,
    y: np.ndarray,
    schema: FeatureSchema,
) -> tuple[float, float, dict[str, Any] | None]:
    """One cross-validation fold: fit on ``train_rows``, score ``valid_rows``; (score, fit seconds,
    the model's serving cost when ``measure``)."""
    candidate = CANDIDATES[name]
    estimator = candidate.estimator(params, schema, seed)
    started = time.perf_counter()
    candidate.fit(estimator, X[train_rows], y[train_rows], schema)
    fit_s = time.perf_counter() - started
    score = metric_score(metric, y[valid_rows], _full_proba(estimator, X[valid_rows], k))
    return score, fit_s, serving_cost(estimator, X[valid_rows])[0] if measure else None


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
    engine: Engine,
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
    sampler = ParameterSampler(
        CANDIDATES[best.candidate].search_space, n_iter=t.search_trials, random_state=spec.seed
    )
    fixed = t.params.get(best.candidate, {})  # the spec's own choices are not searched
    history: list[dict[str, Any]] = []
    sampled = iter(sampler)
    cut_short = False
    # Trials go to the engine a wave at a time (an engine with many cores runs a wave's folds
    # side by side); the trials that count are those before the first the budget cut short.
    while not cut_short and (wave := list(itertools.islice(sampled, _SEARCH_WAVE))):
        trials = cross_validate(
            [(best.candidate, {**params, **fixed}) for params in wave],
            schema,
            X,
            y,
            folds=t.folds,
            metric=t.metric,
            seed=spec.seed,
            progress=lambda _m: None,
            engine=engine,
            deadline=deadline,
        )
        for trial in trials:
            if len(trial.fold_scores) < t.folds:
                cut_short = True
                break
            history.append({"params": _jsonable(trial.params), "mean_score": trial.mean_score})
            progress(f"  search trial {len(history)}/{t.search_trials}: {t.metric}={trial.mean_score:.4f}")
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


class Exclusion(Protocol):
    """The items no model may learn from any more (forgotten on request)."""

    through: int  # the last deletion request it includes (0: none)

    def mask(self, ids: np.ndarray) -> np.ndarray:
        """True for each id in ``ids`` (strings) that must be left out."""
        ...


@dataclass
class Refitted:
    """The winner fitted on all training rows, and what the card and lineage say of unlearning."""

    estimator: Any  # a fitted estimator, or a ShardedModel
    card: dict[str, Any]  # the card's "unlearning" section
    lineage: dict[str, Any]  # the lineage's "unlearning" section (exclusions are added to it)


Refit = Callable[["ModelSpec", "Prepared", "CandidateResult", Progress], Refitted]
"""Fits the winner on all training rows; sharded (SISA) training is one (``assay.unlearning``)."""


@dataclass
class Prepared:
    """The data one training run works on: read, checked and encoded once."""

    schema: FeatureSchema
    classes: list[str]
    positive: str | None
    X: np.ndarray
    y: np.ndarray  # class indices
    X_test: np.ndarray
    y_test: np.ndarray  # class names
    test_frame: pd.DataFrame
    fingerprint: str  # of what was trained on: the files, less the rows left out
    source_fingerprint: str  # of the files as read
    ids: np.ndarray  # training rows' item ids (strings), in row order
    excluded_rows: int = 0  # rows left out because their items were forgotten
    exclusions_through: int = 0
    train_sensitive: dict[str, np.ndarray] = field(default_factory=dict)  # groups of each training row


@dataclass
class Assessment:
    """What held-out data says of the refitted winner."""

    proba: np.ndarray
    evaluation: dict[str, Any]
    importance: list[dict[str, Any]]
    operating_points: dict[str, dict[str, Any]]
    # operating point -> attribute -> fairness of flagging its class at its threshold
    fairness_at: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)  # held-out groups by attribute
    mitigation: dict[str, Any] | None = None  # what mitigation did, beside the unmitigated model


def train(
    spec: ModelSpec,
    registry: Registry,
    *,
    progress: Progress | None = None,
    actor: str = "assay train",
    campaign_labels: CampaignLabels | None = None,
    exclusion: Exclusion | None = None,
    refit: Refit | None = None,
    lineage_extra: dict[str, Any] | None = None,
    engine: Engine | None = None,
) -> TrainResult:
    """Train ``spec`` and publish one version; nothing is written if any step fails.

    A spec whose labels come from a review campaign needs ``campaign_labels``; the items in
    ``exclusion`` are left out of training and held-out data; ``refit`` fits the winner (a
    spec with ``[training.unlearning]`` needs the sharded one). The caller supplies them so
    that modelling never reaches up into the review or unlearning domains.
    ``lineage_extra`` adds records to the version's lineage (a retraining run's label snapshot).
    ``engine`` runs the cross-validation folds and the search's trials (default: this
    process); every engine gives the same metrics and model for the same spec and data.
    """
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    check_params(spec.source, spec.training.params, spec.seed)
    if spec.training.unlearning is not None and refit is None:
        raise SpecError(
            f"{spec.source}: training.unlearning needs sharded training", field="training.unlearning"
        )
    data = prepare(spec, campaign_labels, say, exclusion)
    operating_point_classes(spec, data.classes, data.positive)  # refuse an unclear point before any fit
    mitigation.check_mitigation(spec, data.positive)
    t = spec.training
    prior = prior_score(data.y, folds=t.folds, metric=t.metric, seed=spec.seed)
    comparison, winner, search_info = compare(spec, data, say, engine, prior=prior)
    record, ev = register(
        spec,
        registry,
        data,
        (refit or plain_refit),
        winner,
        comparison,
        search_info,
        started=started,
        say=say,
        lineage_extra=lineage_extra,
        prior=prior,
    )
    promoted = _promote_first(spec, registry, record, actor, say)
    return TrainResult(record, comparison, winner, ev, promoted, search_info, prior_score=prior)


def plain_refit(spec: ModelSpec, data: Prepared, winner: CandidateResult, say: Progress) -> Refitted:
    """The winner as one model on all training rows; forgetting any of them retrains it in full."""
    candidate = CANDIDATES[winner.candidate]
    estimator = candidate.fit(
        candidate.estimator(winner.params, data.schema, spec.seed), data.X, data.y, data.schema
    )
    note = "one model: forgetting an example retrains it in full"
    return Refitted(estimator, {"fast": False, "note": note}, {"shards": 1, "slices": 1})


def register(
    spec: ModelSpec,
    registry: Registry,
    data: Prepared,
    refit: Refit,
    winner: CandidateResult,
    comparison: list[CandidateResult],
    search_info: dict[str, Any] | None,
    *,
    started: float,
    say: Progress,
    lineage_extra: dict[str, Any] | None = None,
    prior: float | None = None,
    importance: list[dict[str, Any]] | None = None,
) -> tuple[VersionRecord, dict[str, Any]]:
    """Refit the chosen candidate, assess it on held-out data and publish it: (record, evaluation).

    ``importance``, when given, is kept instead of measured again (a replacement that forgot a
    few rows keeps its predecessor's: permutation importance costs many predictions)."""
    say(f"refitting {winner.candidate} on all {len(data.X)} training rows")
    refit_started = time.perf_counter()
    refitted = refit(spec, data, winner, say)
    refit_s = time.perf_counter() - refit_started
    assessment = assess(spec, data, refitted.estimator, say, importance)
    estimator = refitted.estimator
    if spec.fairness.mitigation != "none":
        estimator, assessment = mitigation.mitigate(
            spec, data, winner, estimator, assessment, lambda model: assess(spec, data, model, say), say
        )
    compilation = compile_for_serving(estimator, data.X_test, say)
    lineage = _lineage(spec, data, winner, search_info, refit_s=refit_s, started=started)
    lineage["inference"] = compilation.lineage()
    lineage["unlearning"] = {
        **refitted.lineage,
        "excluded_rows": data.excluded_rows,
        "source_fingerprint": data.source_fingerprint,
        "exclusions_through": data.exclusions_through,
    }
    lineage.update(lineage_extra or {})
    facts = _facts(spec, data, winner, comparison, search_info, assessment, lineage)
    facts["unlearning"] = refitted.card
    if prior is not None:
        facts["prior_score"] = prior
    record = publish(spec, registry, data, estimator, assessment, facts, say, compilation.stored())
    return record, assessment.evaluation


def prepare(
    spec: ModelSpec, campaign_labels: CampaignLabels | None, say: Progress, exclusion: Exclusion | None = None
) -> Prepared:
    """Read the training and held-out data (or split it), leave out forgotten items, check the
    labels, learn and apply the schema."""
    d = spec.data
    say(f"reading {', '.join(d.train)}")
    labels = None
    if d.campaign:
        if campaign_labels is None:
            raise SpecError(f"data.campaign: {d.campaign!r} needs a campaign label source to train from")
        labels = campaign_labels(d.campaign)[["id", "label"]]
        say(f"{len(labels)} resolved labels from campaign {d.campaign!r}")
    train_data = read_labelled(spec, d.train, labels)
    excluded = 0
    if exclusion is not None:
        train_data, excluded = _without(train_data, exclusion)
    classes, positive = check_labels(train_data.labels, d.positive, source=train_data.source)
    kinds = feature_kinds(spec, train_data.frame, source=train_data.source)
    if d.test:
        test_data = read_labelled(spec, d.test)
        if exclusion is not None:
            test_data, excluded_test = _without(test_data, exclusion)
            excluded += excluded_test
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

    schema = FeatureSchema.learn(train_data.frame, kinds, source=train_data.source)
    source_fingerprint = fingerprint(d.train + d.test, labels)
    index = {c: i for i, c in enumerate(classes)}
    data = Prepared(
        schema=schema,
        classes=classes,
        positive=positive,
        X=schema.encode_frame(train_data.frame, source=train_data.source),
        y=np.array([index[v] for v in train_data.labels]),
        X_test=schema.encode_frame(test_data.frame, source=test_data.source),
        y_test=test_data.labels,
        test_frame=test_data.frame,
        fingerprint=_excluded_fingerprint(source_fingerprint, exclusion, excluded),
        source_fingerprint=source_fingerprint,
        ids=train_data.ids.astype(str),
        excluded_rows=excluded,
        exclusions_through=exclusion.through if exclusion is not None else 0,
        train_sensitive=sensitive_groups(spec, train_data.frame),
    )
    if excluded:
        say(f"{excluded} row(s) left out: their items were forgotten")
    counts = np.bincount(data.y, minlength=len(classes))
    if counts.min() < spec.training.folds:
        rare = classes[int(counts.argmin())]
        raise DataError(
            f"{train_data.source}: class {rare!r} has {counts.min()} rows, fewer than training.folds={spec.training.folds}"
        )
    say(
        f"{len(data.X)} training rows, {len(data.X_test)} held-out rows, {len(schema.features)} features, "
        f"classes {classes}"
    )
    return data


def compare(
    spec: ModelSpec,
    data: Prepared,
    say: Progress,
    engine: Engine | None = None,
    *,
    prior: float | None = None,
) -> tuple[list[CandidateResult], CandidateResult, dict[str, Any] | None]:
    """Cross-validate every candidate, keep the best, and search around it when the spec asks.

    Each candidate starts from defaults fitted to the size of the folds' training parts (a
    leaf of 60 rows leaves no split to make in a hundred rows); the spec's own parameters win.
    A candidate that scores no better than ``prior`` (predicting the class frequencies) is flagged.
    """
    engine = engine or LocalEngine()
    t = spec.training
    fold_rows = len(data.X) * (t.folds - 1) // t.folds
    say(f"cross-validating {', '.join(t.candidates)} ({t.folds} folds each, {engine.name} engine)")
    comparison = cross_validate(
        [
            (name, {**CANDIDATES[name].defaults_for(fold_rows), **t.params.get(name, {})})
            for name in t.candidates
        ],
        data.schema,
        data.X,
        data.y,
        folds=t.folds,
        metric=t.metric,
        seed=spec.seed,
        progress=say,
        engine=engine,
        measure=True,
    )
    for result in comparison:
        if prior is not None and no_better_than_prior(result.mean_score, prior):
            say(
                f"warning: {result.candidate} scores {t.metric}={result.mean_score:.4f}, no better than "
                f"predicting the class frequencies ({prior:.4f}): it has learnt nothing from the features"
            )
    winner = max(fast_enough(comparison, t.max_predict_us, spec.source), key=lambda r: r.mean_score)
    say(f"best candidate: {winner.candidate} ({t.metric}={winner.mean_score:.4f})")
    search_info = None
    if t.search_budget_s > 0:
        say(
            f"searching {winner.candidate} hyperparameters: {t.search_trials} trials, "
            f"at most {t.search_budget_s:g}s"
        )
        winner, search_info = search(
            winner, data.schema, data.X, data.y, spec=spec, progress=say, engine=engine
        )
    return comparison, winner, search_info


def assess(
    spec: ModelSpec,
    data: Prepared,
    estimator: Any,
    say: Progress,
    importance: list[dict[str, Any]] | None = None,
) -> Assessment:
    """Held-out statistics, fairness, permutation importance (unless ``importance`` is given)
    and the spec's operating points."""
    k = len(data.classes)
    proba = _full_proba(estimator, data.X_test, k)
    ev, operating_points, fairness_at, sensitive = assess_held_out(
        spec, data.classes, data.positive, proba, data.y_test, data.test_frame, say
    )
    importance = (
        importance
        if importance is not None
        else evaluation.permutation_importance(
            lambda m: _full_proba(estimator, m, k),
            data.X_test,
            data.y_test,
            data.classes,
            data.schema.names,
            positive=data.positive,
            seed=spec.seed,
        )
    )
    return Assessment(proba, ev, importance, operating_points, fairness_at, sensitive)


def _lineage(
    spec: ModelSpec,
    data: Prepared,
    winner: CandidateResult,
    search_info: dict[str, Any] | None,
    *,
    refit_s: float,
    started: float,
) -> dict[str, Any]:
    lineage = {
        "data_fingerprint": data.fingerprint,
        "spec_hash": spec.hash,
        "seed": spec.seed,
        "sources": {"train": spec.data.train, "test": spec.data.test},
        "train_rows": len(data.X),
        "test_rows": len(data.X_test),
        "task": "binary" if data.positive is not None else "multiclass",
        "params": _jsonable(winner.params),
        "refit_s": round(refit_s, 3),
        "libraries": library_versions(),
        "assay": assay.__version__,
        "python": platform.python_version(),
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    if search_info:
        lineage["search"] = {k: search_info[k] for k in ("trials", "max_trials", "cut_short", "budget_s")}
    return lineage


def _facts(
    spec: ModelSpec,
    data: Prepared,
    winner: CandidateResult,
    comparison: list[CandidateResult],
    search_info: dict[str, Any] | None,
    assessment: Assessment,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """What the model card says (``card.json``), less the version and time the registry adds."""
    return {
        "model": spec.name,
        "description": spec.description,
        "task": lineage["task"],
        "classes": data.classes,
        "positive": data.positive,
        "candidate": winner.candidate,
        "params": _jsonable(winner.params),
        "metric": spec.training.metric,
        "evaluation": assessment.evaluation,
        "importance": assessment.importance,
        "comparison": [c.to_dict() for c in comparison],
        "search": search_info,
        "operating_points": assessment.operating_points,
        "fairness_at_operating_points": assessment.fairness_at,
        "details": asdict(spec.card),
        **({"mitigation": assessment.mitigation} if assessment.mitigation else {}),
        "lineage": lineage,
        "features": [{"name": f.name, "kind": f.kind} for f in data.schema.features],
        "sensitive": spec.features.sensitive,
        "decision_threshold": 0.5,
        "gates": spec.to_dict()["gates"],
    }


def publish(
    spec: ModelSpec,
    registry: Registry,
    data: Prepared,
    estimator: Any,
    assessment: Assessment,
    facts: dict[str, Any],
    say: Progress,
    compiled: tuple[dict[str, Any], bytes] | None = None,
) -> VersionRecord:
    """Write the version's files and register it; every record is checked before a byte is written.

    ``compiled`` is the form the version is served by (``compilation.Compilation.stored``)."""
    ev, lineage = assessment.evaluation, facts["lineage"]
    summary = summarize(ev, data.positive)
    # Every record is held to the contract the registry loads it by.
    check_evaluation(ev)
    check_summary(summary)
    check_lineage(lineage)
    schema_record = check_schema(data.schema.to_dict())

    def render_card(version: int, staging: Path) -> None:
        # Called once the store has given the version its number, so the card names that number.
        facts.update(version=version, created_at=pd.Timestamp.now(tz="UTC").isoformat())
        write_json(staging / "card.json", check_card(facts))
        write_file(staging / "card.html", model_card(facts).encode("utf-8"))

    with registry.staging(spec.name) as staging:
        reference = reference_row(data.X, data.schema)
        if isinstance(estimator, ShardedModel):
            save_sharded(estimator, staging, reference)
        else:
            save_model(estimator, staging, reference, compiled)
        write_json(staging / "schema.json", schema_record)
        write_json(staging / "evaluation.json", ev)
        # The reference monitoring compares served traffic with (training rows, held-out scores).
        profile = build_profile(
            data.schema, data.X, assessment.proba, data.y_test, data.classes, data.positive,
            decision_threshold=facts["decision_threshold"], monitored=spec.monitoring.features, seed=spec.seed,
        )  # fmt: skip
        write_file(staging / PROFILE_JSON, profile_bytes(profile))
        record = registry.add(
            name=spec.name,
            task=lineage["task"],
            staging=staging,
            candidate=facts["candidate"],
            spec=spec.to_dict(),
            spec_hash=spec.hash,
            data_fingerprint=data.fingerprint,
            summary=summary,
            lineage=lineage,
            render=render_card,
        )
    say(f"registered {record.ref}")
    return record


def _promote_first(
    spec: ModelSpec, registry: Registry, record: VersionRecord, actor: str, say: Progress
) -> bool:
    """Alias the new version ``candidate``; the first version of a model also becomes production."""
    registry.set_alias(
        spec.name, "candidate", record.version, actor=actor, reason="newly trained", forced=False, gates=[]
    )
    if "production" in registry.aliases(spec.name):
        return False
    try:
        registry.promote(spec.name, record.version, actor=actor, reason="first version of the model")
    except GateFailed as exc:
        say(f"not promoted to production: {exc.message}")
        return False
    say(f"{record.ref} is the first version: promoted to production")
    return True


def _excluded_fingerprint(source: str, exclusion: Exclusion | None, excluded: int) -> str:
    """The data's fingerprint: the files', or, when rows were left out, one that says so."""
    if not excluded or exclusion is None:
        return source
    return hashlib.sha256(f"{source}:excluded:{exclusion.through}:{excluded}".encode()).hexdigest()


def _without(data: LabelledData, exclusion: Exclusion) -> tuple[LabelledData, int]:
    """``data`` less the rows of forgotten items, and how many went."""
    drop = exclusion.mask(data.ids.astype(str))
    n = int(drop.sum())
    if not n:
        return data, 0
    keep = ~drop
    frame = data.frame[keep].reset_index(drop=True)
    return LabelledData(frame, data.ids[keep], data.labels[keep], data.source), n


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


def reference_row(X: np.ndarray, schema: FeatureSchema) -> np.ndarray:
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


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
