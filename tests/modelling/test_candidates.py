"""Candidate families: the threads a fit is given reach the library, and never change the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from assay.modelling.candidates import CANDIDATES, thread_limit
from assay.registry.schema import FeatureSchema

SMALL = {
    "lightgbm": {"n_estimators": 60},
    "hist_gradient_boosting": {"max_iter": 40},
    "random_forest": {"n_estimators": 20},
}


def _data() -> tuple[FeatureSchema, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"a": rng.normal(size=3000), "b": rng.normal(size=3000), "c": rng.choice(list("pqr"), 3000)}
    )
    schema = FeatureSchema.learn(frame, {"a": "numeric", "b": "numeric", "c": "categorical"}, source="t")
    X = schema.encode_frame(frame, source="t")
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=3000) > 0).astype(int)
    return schema, X, y


def test_the_threads_given_are_the_libraries_thread_counts() -> None:
    schema, _, _ = _data()
    assert CANDIDATES["lightgbm"].estimator({}, schema, 0, threads=1).get_params()["n_jobs"] == 1
    assert CANDIDATES["random_forest"].estimator({}, schema, 0, threads=3).get_params()["n_jobs"] == 3
    with thread_limit(1):  # OpenMP (HistGradientBoosting) and BLAS take no number: they are held
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        # An estimator built inside (a refit, a shard) takes the limit as its own number.
        assert CANDIDATES["lightgbm"].estimator({}, schema, 0).get_params()["n_jobs"] == 1


@pytest.mark.parametrize(
    "name", ["lightgbm", "hist_gradient_boosting", "random_forest", "logistic_regression"]
)
def test_one_thread_or_two_give_the_same_model(name: str) -> None:
    schema, X, y = _data()
    candidate = CANDIDATES[name]
    probabilities = []
    for threads in (1, 2):
        with thread_limit(threads):
            fitted = candidate.fit(candidate.estimator(SMALL.get(name, {}), schema, 7), X, y, schema)
            probabilities.append(fitted.predict_proba(X))
    assert np.array_equal(probabilities[0], probabilities[1])


def test_the_forests_leaf_size_shrinks_with_small_data():
    """A 10-row leaf suits thousands of rows; a hundred-row fold gets the 5-row floor."""
    forest = CANDIDATES["random_forest"]
    assert forest.defaults_for(100_000)["min_samples_leaf"] == forest.defaults["min_samples_leaf"] == 10
    assert forest.defaults_for(100)["min_samples_leaf"] == 5
    assert forest.defaults_for(400)["min_samples_leaf"] == 8
