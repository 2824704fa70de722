"""The fast predictor: single rows through FastConfig, big forests' batches block by block,
both computing the compiled model's own probabilities."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import pytest

from assay.modelling.candidates import CANDIDATES
from assay.modelling.compilation import compile_estimator
from assay.registry.schema import FeatureSchema
from assay.serving import predictor as predictor_module
from assay.serving.predictor import BLOCK_MIN_ROWS, fast_predict, tree_blocks


def _fitted(family: str, params: dict[str, Any], n_classes: int = 2) -> tuple[Any, Any, np.ndarray]:
    """(fitted estimator, its compiled predictor, held-out rows with missing values)."""
    rng = np.random.default_rng(3)
    n = 1500
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.random(n) < 0.4})
    frame.loc[rng.random(n) < 0.1, "a"] = np.nan
    schema = FeatureSchema.learn(frame, {"a": "numeric", "b": "numeric", "c": "boolean"}, source="t")
    X = schema.encode_frame(frame, source="t")
    signal = np.nan_to_num(X[:, 0]) + X[:, 1] + X[:, 2] + rng.normal(size=n)
    y = (signal > 0.5).astype(int) + (n_classes == 3) * (signal > 1.5)
    candidate = CANDIDATES[family]
    estimator = candidate.fit(candidate.estimator(params, schema, 0), X[:1000], y[:1000], schema)
    predictor = compile_estimator(estimator, X[1000:]).predictor
    assert predictor is not None
    return estimator, predictor, X[1000:]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_forest_in_blocks_of_trees_gives_the_whole_forests_probabilities(monkeypatch, n_classes):
    monkeypatch.setattr(predictor_module, "BLOCK_NODES", 2_000)  # a few trees per block
    forest, predictor, X = _fitted("random_forest", {"n_estimators": 40, "min_samples_leaf": 1}, n_classes)
    fast = fast_predict(predictor)
    blocks = fast.blocks  # type: ignore[attr-defined]
    assert blocks is not None and len(blocks) > 2
    # The blocks cover every tree once, in order.
    assert blocks[0][0] == 0 and sum(count for _, count in blocks) == 40
    assert all(start == prev + count for (prev, count), (start, _) in pairwise(blocks))
    rows = X[: BLOCK_MIN_ROWS + 50]
    whole = predictor.predict_proba(rows)
    blocked = fast(rows)
    assert blocked.shape == whole.shape == (len(rows), n_classes)
    # Float64 sums in another order: equal to rounding, and to the estimator within the compiled bound.
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-14)
    np.testing.assert_allclose(blocked, forest.predict_proba(rows), rtol=0, atol=1e-12)
    # Fewer rows than a block pays for, and single rows, take the whole model.
    np.testing.assert_array_equal(fast(rows[: BLOCK_MIN_ROWS - 1]), whole[: BLOCK_MIN_ROWS - 1])
    np.testing.assert_allclose(fast(rows[5:6]), whole[5:6], rtol=0, atol=1e-15)


def test_threads_predicting_a_forests_blocks_at_once_each_get_the_whole_forest(monkeypatch):
    # A server splits big batches over its threads, and serves requests side by side.
    monkeypatch.setattr(predictor_module, "BLOCK_NODES", 2_000)
    _, predictor, X = _fitted("random_forest", {"n_estimators": 40, "min_samples_leaf": 1})
    fast = fast_predict(predictor)
    assert fast.blocks is not None  # type: ignore[attr-defined]
    batches = [X[k : k + BLOCK_MIN_ROWS + 40] for k in range(0, 200, 50)]
    alone = [fast(rows) for rows in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(fast, batches * 25))
    for k, proba in enumerate(together):
        np.testing.assert_array_equal(proba, alone[k % len(batches)])


def test_single_rows_scored_while_a_batch_is_predicted_in_blocks_get_the_whole_forest(monkeypatch):
    # Single rows read the iteration range LightGBM keeps in the booster; a batch's blocks used to
    # set it on the same booster (88% of the rows below came back wrong).
    monkeypatch.setattr(predictor_module, "BLOCK_NODES", 2_000)
    _, predictor, X = _fitted("random_forest", {"n_estimators": 40, "min_samples_leaf": 1})
    fast = fast_predict(predictor)
    rows = [X[k : k + 1] for k in range(100)]
    alone = [fast(row) for row in rows]
    done = threading.Event()

    def batches() -> None:
        while not done.is_set():
            fast(X[: BLOCK_MIN_ROWS + 40])

    worker = threading.Thread(target=batches)
    worker.start()
    try:
        together = [fast(row) for _ in range(20) for row in rows]
    finally:
        done.set()
        worker.join()
    for k, proba in enumerate(together):
        np.testing.assert_array_equal(proba, alone[k % len(rows)])


def test_a_forest_that_fits_one_block_is_predicted_whole():
    _, predictor, _ = _fitted("random_forest", {"n_estimators": 5})
    assert tree_blocks(predictor.booster) is None
    assert fast_predict(predictor).blocks is None  # type: ignore[attr-defined]


def test_boosted_models_are_never_split(monkeypatch):
    """Blocks add raw scores: only an averaged forest's probabilities are a plain sum of them."""
    monkeypatch.setattr(predictor_module, "BLOCK_NODES", 10)
    _, boosted, _ = _fitted("hist_gradient_boosting", {"max_iter": 20})
    assert not boosted.average
    assert fast_predict(boosted).blocks is None  # type: ignore[attr-defined]
