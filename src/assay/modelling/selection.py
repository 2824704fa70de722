"""Choosing the candidate: stratified cross-validation, the prior baseline and the hyperparameter search.

``compare`` cross-validates every candidate of the spec (score and fit time per fold,
and the serving cost of each candidate's first fold model), flags a candidate no
better than predicting the class frequencies (``prior_score``), keeps the best one
fast enough to serve, and, when the spec asks, searches hyperparameters around it
(a seeded number of trials, bounded in time). Every fold is a call of an ``Engine``,
so a cluster runs them side by side with the same results as this process.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    roc_auc_score,
)
from sklearn.model_selection import ParameterSampler, StratifiedKFold

from assay.engines.engine import Engine, LocalEngine
from assay.modelling.assessment import full_proba
from assay.modelling.candidates import CANDIDATES, thread_limit
from assay.modelling.preparation import Prepared
from assay.modelling.progress import Progress, RunProgress, run_progress
from assay.modelling.spec import ModelSpec, TrainingSpec
from assay.modelling.timing import fast_enough, serving_cost
from assay.registry.schema import FeatureSchema

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
    """One candidate (with its parameters) under cross-validation: a score and fit time per fold."""

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
            "params": jsonable(self.params),
            "fold_scores": self.fold_scores,
            "fit_times": self.fit_times,
            "mean_score": self.mean_score,
            "mean_fit_time": self.mean_fit_time,
            **({"serving": self.serving} if self.serving is not None else {}),
        }


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
    progress: RunProgress | None,
    engine: Engine,
    deadline: float = math.inf,
    measure: bool = False,
) -> list[CandidateResult]:
    """Stratified k-fold scores and fit times of each (candidate, params), every fold a call of
    ``engine`` fitting on ``engine.fit_threads`` threads; a trial whose folds did not all finish
    before ``deadline`` (monotonic) has fewer. Each finished fold is a step of ``progress``'s
    current stage. ``measure``: each trial's first fold model also has its serving cost measured
    (``timing``)."""
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y))
    k = int(y.max()) + 1
    calls = [
        (name, params, seed, metric, k, tr, va, measure and f == 0, engine.fit_threads)
        for name, params in trials
        for f, (tr, va) in enumerate(splits)
    ]

    def done(i: int, outcome: tuple[float, float]) -> None:
        name, fold = trials[i // folds][0], i % folds + 1
        if progress is not None:
            progress.step(f"{name} {fold}/{folds}: {metric}={outcome[0]:.4f}, fit {outcome[1]:.2f}s")

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
    threads: int = 1,
    *,
    X: np.ndarray,
    y: np.ndarray,
    schema: FeatureSchema,
) -> tuple[float, float, dict[str, Any] | None]:
    """One cross-validation fold on ``threads`` threads: fit on ``train_rows``, score ``valid_rows``;
    (score, fit seconds, the model's serving cost when ``measure``)."""
    candidate = CANDIDATES[name]
    with thread_limit(threads):
        estimator = candidate.estimator(params, schema, seed)
        started = time.perf_counter()
        candidate.fit(estimator, X[train_rows], y[train_rows], schema)
        fit_s = time.perf_counter() - started
        score = metric_score(metric, y[valid_rows], full_proba(estimator, X[valid_rows], k))
    return score, fit_s, serving_cost(estimator, X[valid_rows])[0] if measure else None


def search(
    best: CandidateResult,
    schema: FeatureSchema,
    X: np.ndarray,
    y: np.ndarray,
    *,
    spec: ModelSpec,
    progress: RunProgress,
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
    progress.stage("search fold", t.search_trials * t.folds)
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
            progress=progress,
            engine=engine,
            deadline=deadline,
        )
        for trial in trials:
            if len(trial.fold_scores) < t.folds:
                cut_short = True
                break
            history.append({"params": jsonable(trial.params), "mean_score": trial.mean_score})
            progress(f"  search trial {len(history)}/{t.search_trials}: {t.metric}={trial.mean_score:.4f}")
            if trial.mean_score > best.mean_score:
                best = trial
    elapsed = time.monotonic() - started
    progress(
        f"search: {len(history)} of {t.search_trials} trials in {elapsed:.1f}s"
        + (f", cut short by the {t.search_budget_s:g}s budget" if cut_short else "")
        + f"; best {t.metric}={best.mean_score:.4f}"
    )
    return best, _search_record(t, best, history, cut_short=cut_short, elapsed=elapsed)


def _search_record(
    t: TrainingSpec, best: CandidateResult, history: list[dict[str, Any]], *, cut_short: bool, elapsed: float
) -> dict[str, Any]:
    """What the card says of the search: its bounds, what it tried and what it kept."""
    return {
        "budget_s": t.search_budget_s,
        "max_trials": t.search_trials,
        "trials": len(history),
        "cut_short": cut_short,
        "elapsed_s": round(elapsed, 3),
        "best_params": jsonable(best.params),
        "history": history,
    }


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
    run = run_progress(say)
    t = spec.training
    fold_rows = len(data.X) * (t.folds - 1) // t.folds
    run(
        f"cross-validating {', '.join(t.candidates)} ({t.folds} folds each, {engine.name} engine, "
        f"{engine.fit_threads} thread(s) per fit)"
    )
    run.stage("fold", len(t.candidates) * t.folds)
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
        progress=run,
        engine=engine,
        measure=True,
    )
    for result in comparison:
        if prior is not None and no_better_than_prior(result.mean_score, prior):
            run(
                f"warning: {result.candidate} scores {t.metric}={result.mean_score:.4f}, no better than "
                f"predicting the class frequencies ({prior:.4f}): it has learnt nothing from the features"
            )
    winner = max(fast_enough(comparison, t.max_predict_us, spec.source), key=lambda r: r.mean_score)
    run(f"best candidate: {winner.candidate} ({t.metric}={winner.mean_score:.4f})")
    search_info = None
    if t.search_budget_s > 0:
        run(
            f"searching {winner.candidate} hyperparameters: {t.search_trials} trials, "
            f"at most {t.search_budget_s:g}s"
        )
        winner, search_info = search(
            winner, data.schema, data.X, data.y, spec=spec, progress=run, engine=engine
        )
    return comparison, winner, search_info


def jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as JSON writes them (NumPy scalars, which searches sample, as Python's)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
