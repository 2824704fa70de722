"""Candidate model families: one description each, the only place a family is defined.

A ``Candidate`` says how to build the family's estimator (assay's settings,
the spec's hyperparameters, the seed), its default hyperparameters, the space a
search draws from, the parameters assay sets itself (so a spec may not), and
how to fit it. Adding a family means adding one entry to ``CANDIDATES``;
specs, hyperparameter checks, cross-validation and the search all read it.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

import numpy as np
from lightgbm import LGBMClassifier
from lightgbm.basic import LightGBMError, _ConfigAliases
from scipy.stats import loguniform, randint, uniform
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from assay.errors import SpecError
from assay.registry.schema import FeatureSchema

_SEED = "it is set from the spec's seed"
MIN_LEAF_ROWS = 5
ROWS_PER_LEAF = 50
_KINDS = "it is set from features.kinds"


# The threads of the fits in this context (``thread_limit``); None: every core.
_THREADS: ContextVar[int | None] = ContextVar("assay_fit_threads", default=None)


@contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Fit and predict on ``threads`` threads while the block runs: estimators built inside get
    it as their ``n_jobs`` (LightGBM, random forest), and every thread pool a library starts
    without being told a number (OpenMP in HistGradientBoosting, BLAS) is held to it."""
    from threadpoolctl import threadpool_limits

    token = _THREADS.set(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        _THREADS.reset(token)


def fit_threads() -> int:
    """The threads a fit may use here: ``thread_limit``'s, else every core."""
    return _THREADS.get() or os.cpu_count() or 1


def _plain_fit(
    estimator: ClassifierMixin, X: np.ndarray, y: np.ndarray, schema: FeatureSchema, **fit_params: Any
) -> Any:
    return estimator.fit(X, y, **fit_params)


@dataclass(frozen=True)
class Candidate:
    """One model family: how to build, configure, search and fit it."""

    name: str
    # (hyperparameters, seed, categorical column indices, threads) -> the bare estimator
    factory: Callable[[dict[str, Any], int, list[int], int], ClassifierMixin]
    defaults: dict[str, Any]
    search_space: dict[str, Any]
    # parameter name -> which part of the spec sets it instead
    reserved: dict[str, str] = field(default_factory=lambda: {"random_state": _SEED})
    # (estimator, X, y, schema, **fit params such as sample_weight) -> the fitted estimator
    fit: Callable[..., Any] = _plain_fit
    # the estimator takes the schema's matrix as is (trees); else it is wrapped in preprocessing
    takes_codes: bool = True
    # names the estimator accepts beyond its get_params() (LightGBM takes any library parameter)
    extra_params: Callable[[], set[str]] = set
    # defaults that are a number of rows per leaf: they shrink with small data (see defaults_for)
    leaf_params: tuple[str, ...] = ()

    def defaults_for(self, n_rows: int) -> dict[str, Any]:
        """The defaults, with each leaf size cut to a 50th of ``n_rows`` (at least 5) when that is smaller.

        The defaults suit thousands of rows; on a hundred, a leaf of 60 rows allows at most one
        split, and boosting such trees gives a model that predicts the class frequencies.
        """
        leaf = max(MIN_LEAF_ROWS, n_rows // ROWS_PER_LEAF)
        return {k: min(v, leaf) if k in self.leaf_params else v for k, v in self.defaults.items()}

    def model(
        self,
        params: dict[str, Any],
        seed: int,
        categorical: list[int] | None = None,
        threads: int | None = None,
    ) -> ClassifierMixin:
        """The bare estimator with ``params`` over assay's settings (no defaults merged), using
        ``threads`` threads where the library takes a number (default: ``thread_limit``'s, else
        every core)."""
        threads = threads or fit_threads()
        return self.factory(params, seed, categorical or [], threads)

    def estimator(
        self, params: dict[str, Any], schema: FeatureSchema, seed: int, threads: int | None = None
    ) -> ClassifierMixin:
        """An unfitted estimator taking the schema's encoded matrix (categorical codes, NaN = missing).

        ``threads``: what it may use (``assay.engines.engine``'s decision); libraries that take no
        number (OpenMP in HistGradientBoosting, BLAS) are held to it by ``thread_limit``.
        """
        cat = schema.categorical_indices
        model = self.model({**self.defaults, **params}, seed, cat, threads)
        if self.takes_codes:
            return model
        num = [i for i in range(len(schema.features)) if i not in cat]
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="median", add_indicator=True)), ("scale", StandardScaler())]
        )
        parts: list[tuple[str, Any, list[int]]] = [("numeric", numeric, num)]
        if cat:
            parts.append(("categorical", OneHotEncoder(handle_unknown="ignore"), cat))
        return Pipeline([("columns", ColumnTransformer(parts)), ("model", model)])

    def fit_weighted(
        self,
        estimator: ClassifierMixin,
        X: np.ndarray,
        y: np.ndarray,
        schema: FeatureSchema,
        weights: np.ndarray,
    ) -> Any:
        """Fit with a weight per row (a preprocessing pipeline hands them to its model step)."""
        key = "model__sample_weight" if isinstance(estimator, Pipeline) else "sample_weight"
        return self.fit(estimator, X, y, schema, **{key: weights})

    def param_names(self) -> list[str]:
        """Hyperparameters a spec may set for this family."""
        names = set(self.model({}, 0).get_params()) | self.extra_params()
        return sorted(names - self.reserved.keys())

    def refusal(self, params: dict[str, Any], seed: int, *, fit: bool) -> str | None:
        """Why the estimator refuses ``params``, in its own words; None when it takes them."""
        model = self.model(params, seed)
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


def _lightgbm(params: dict[str, Any], seed: int, categorical: list[int], threads: int) -> ClassifierMixin:
    # LightGBM documents deterministic=True as reproducible only with a fixed histogram
    # layout, so assay fixes one: column-wise, unless the spec asks for row-wise.
    layout = {} if params.get("force_row_wise") else {"force_col_wise": True}
    settings = {"n_jobs": threads, "deterministic": True, **layout, "verbose": -1}
    return LGBMClassifier(**{**settings, **params}, random_state=seed)


def _lightgbm_fit(
    estimator: ClassifierMixin, X: np.ndarray, y: np.ndarray, schema: FeatureSchema, **fit_params: Any
) -> Any:
    # LightGBM takes categorical columns at fit time, not in the constructor.
    return estimator.fit(X, y, categorical_feature=schema.categorical_indices or "auto", **fit_params)


def _forest_fit(
    estimator: ClassifierMixin, X: np.ndarray, y: np.ndarray, schema: FeatureSchema, **fit_params: Any
) -> Any:
    # Trees grow on every thread given, but a forest's predict_proba adds its trees' votes in
    # the order its threads finish: the same forest would score differently in the last bit
    # from run to run (and ties between rows would break differently in every ranking metric).
    # Scored on one thread, the sum has one order. (Serving uses the compiled trees anyway.)
    fitted = estimator.fit(X, y, **fit_params)
    model = fitted.steps[-1][1] if isinstance(fitted, Pipeline) else fitted
    model.set_params(n_jobs=1)
    return fitted


def _lightgbm_params() -> set[str]:
    # LGBMClassifier hands any LightGBM parameter, or an alias of one, to the library;
    # this is the library's own list, the one it warns "Unknown parameter" against.
    return {a for aliases in _ConfigAliases._get_all_param_aliases().values() for a in aliases}


# Defaults chosen for tabular assessment data of a few thousand to a few million rows:
# shallow trees, a modest learning rate and row/column subsampling generalise well on
# imbalanced labels such as "reverted" without any search.
CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate(
            name="logistic_regression",
            factory=lambda p, seed, cat, threads: LogisticRegression(**p, random_state=seed),
            defaults={"C": 1.0, "max_iter": 2000},
            search_space={"C": loguniform(1e-3, 1e2)},
            takes_codes=False,
        ),
        Candidate(
            name="lightgbm",
            factory=_lightgbm,
            defaults={
                "n_estimators": 500,
                "learning_rate": 0.02,
                "num_leaves": 15,
                "min_child_samples": 40,
                "subsample": 0.8,
                "subsample_freq": 1,
                "colsample_bytree": 0.7,
                "reg_lambda": 1.0,
            },
            search_space={
                "n_estimators": randint(100, 1000),
                "learning_rate": loguniform(0.005, 0.2),
                "num_leaves": randint(4, 64),
                "min_child_samples": randint(5, 150),
                "subsample": uniform(0.5, 0.5),
                "colsample_bytree": uniform(0.4, 0.6),
                "reg_lambda": loguniform(1e-3, 10),
            },
            reserved={
                **dict.fromkeys(_ConfigAliases.get("seed"), _SEED),
                **dict.fromkeys(_ConfigAliases.get("categorical_feature"), _KINDS),
            },
            fit=_lightgbm_fit,
            extra_params=_lightgbm_params,
            leaf_params=("min_child_samples",),
        ),
        Candidate(
            name="hist_gradient_boosting",
            factory=lambda p, seed, cat, threads: HistGradientBoostingClassifier(
                **{"early_stopping": False, **p}, categorical_features=cat or None, random_state=seed
            ),
            defaults={
                "max_iter": 300,
                "learning_rate": 0.03,
                "max_leaf_nodes": 8,
                "min_samples_leaf": 60,
                "l2_regularization": 1.0,
            },
            search_space={
                "max_iter": randint(100, 800),
                "learning_rate": loguniform(0.005, 0.2),
                "max_leaf_nodes": randint(4, 64),
                "min_samples_leaf": randint(5, 150),
                "l2_regularization": loguniform(1e-3, 10),
            },
            reserved={"random_state": _SEED, "categorical_features": _KINDS},
            leaf_params=("min_samples_leaf",),
        ),
        Candidate(
            name="random_forest",
            factory=lambda p, seed, cat, threads: RandomForestClassifier(
                **{"n_jobs": threads, **p}, random_state=seed
            ),
            fit=_forest_fit,
            # Leaves of 10 rows, not 3: 5-fold CV on editquality (15k rows, 6% positive), average
            # precision 0.337 -> 0.356, better in 5 of 5 folds, ROC AUC and log loss better too; on
            # a noisy synthetic table (15k rows, 10% flipped labels) 0.804 -> 0.801 (2 of 5 folds
            # better). Half the nodes: one row predicts ~25% faster.
            defaults={"n_estimators": 300, "min_samples_leaf": 10, "max_features": "sqrt"},
            search_space={
                "n_estimators": randint(100, 500),
                "min_samples_leaf": randint(1, 30),
                "max_features": uniform(0.1, 0.9),
            },
            leaf_params=("min_samples_leaf",),
        ),
    )
}


def check_params(source: str, params_by_candidate: dict[str, dict[str, Any]], seed: int) -> None:
    """Refuse a spec's hyperparameters before any data is read or anything written.

    Each key must be one of the estimator's parameters and a value the estimator's
    own validation takes (an error names ``training.params.<candidate>.<key>``);
    then the candidate's whole set is fitted on a few rows, since some values only
    conflict with each other.
    """
    for name, params in params_by_candidate.items():
        candidate = CANDIDATES[name]
        where = f"training.params.{name}"
        known = candidate.param_names()
        for key, value in params.items():
            key_field = f"{where}.{key}"
            if key in candidate.reserved:
                raise SpecError(
                    f"{source}: {key_field}: not settable here; {candidate.reserved[key]}", field=key_field
                )
            if key not in known:
                close = get_close_matches(key, known, n=3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise SpecError(
                    f"{source}: {key_field}: unknown hyperparameter of {name}{hint}", field=key_field
                )
            # LightGBM declares no constraints up front: it checks its values when fitting.
            problem = candidate.refusal({key: value}, seed, fit=name == "lightgbm")
            if problem:
                raise SpecError(f"{source}: {key_field}: {problem}", field=key_field)
        problem = candidate.refusal({**candidate.defaults, **params}, seed, fit=True)
        if problem:
            raise SpecError(
                f"{source}: {where}: these hyperparameters do not work together: {problem}", field=where
            )
